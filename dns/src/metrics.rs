//! Prometheus metrics of the DNS server: queries by type and response code, GSLB answers by name and
//! region, and region health as this server sees it. Labels are bounded: query types outside a
//! fixed set count as `other`, names are the configured GSLB names.

use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The DNS server's metric families.
pub struct DnsMetrics {
    registry: Registry,
    /// `meridian_dns_queries_total{qtype,rcode,protocol}`.
    pub queries: IntCounterVec,
    /// `meridian_dns_gslb_answers_total{name,region}`.
    pub answers: IntCounterVec,
    /// `meridian_dns_config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    region_healthy: GaugeVec,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsMetrics {
    /// Registers the families.
    pub fn new() -> Self {
        let registry = Registry::new();
        let c = |name: &str, help: &str, labels: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry.register(Box::new(v.clone())).expect("metric registered once");
            v
        };
        let queries = c(
            "meridian_dns_queries_total",
            "DNS queries answered, by type, response code and transport",
            &["qtype", "rcode", "protocol"],
        );
        let answers = c(
            "meridian_dns_gslb_answers_total",
            "GSLB answers, by name and answering region",
            &["name", "region"],
        );
        let reloads = c(
            "meridian_dns_config_reloads_total",
            "DNS config reloads, by result",
            &["result"],
        );
        let region_healthy = GaugeVec::new(
            Opts::new("meridian_dns_region_healthy", "1 when the region may answer GSLB names"),
            &["region"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(region_healthy.clone()))
            .expect("metric registered once");
        DnsMetrics {
            registry,
            queries,
            answers,
            reloads,
            region_healthy,
        }
    }

    /// Prometheus text, with region health read now.
    pub fn render(&self, regions: &[(String, bool)]) -> String {
        self.region_healthy.reset();
        for (name, up) in regions {
            self.region_healthy
                .with_label_values(&[name])
                .set(f64::from(u8::from(*up)));
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A query type as a bounded label.
pub fn qtype_label(t: hickory_proto::rr::RecordType) -> &'static str {
    use hickory_proto::rr::RecordType as T;
    match t {
        T::A => "A",
        T::AAAA => "AAAA",
        T::CNAME => "CNAME",
        T::MX => "MX",
        T::NS => "NS",
        T::SOA => "SOA",
        T::TXT => "TXT",
        T::SRV => "SRV",
        T::CAA => "CAA",
        T::HTTPS => "HTTPS",
        T::ANY => "ANY",
        _ => "other",
    }
}

/// A response code as its standard mnemonic (NOERROR, NXDOMAIN, ...).
pub fn rcode_label(c: hickory_proto::op::ResponseCode) -> &'static str {
    use hickory_proto::op::ResponseCode as R;
    match c {
        R::NoError => "NOERROR",
        R::FormErr => "FORMERR",
        R::ServFail => "SERVFAIL",
        R::NXDomain => "NXDOMAIN",
        R::NotImp => "NOTIMP",
        R::Refused => "REFUSED",
        _ => "OTHER",
    }
}
