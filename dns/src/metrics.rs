//! Prometheus metrics of the DNS server: queries by type and response code, GSLB answers by name and
//! region, and region health as this server sees it. Labels are bounded: query types outside a
//! fixed set count as `other`, names are the configured GSLB names.

use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The DNS server's metric families.
pub struct DnsMetrics {
    registry: Registry,
    /// `meridian_dns_queries_total{qtype,rcode,protocol}`.
    pub queries: IntCounterVec,
    table: Vec<prometheus::IntCounter>,
    /// `meridian_dns_gslb_answers_total{name,region}`.
    pub answers: IntCounterVec,
    /// `meridian_dns_config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `meridian_dns_rrl_limited_total{action}`: UDP responses limited, dropped or slipped.
    pub rrl: IntCounterVec,
    /// `meridian_dns_tcp_refused_total{reason}`: TCP connections closed at accept (per_client, total).
    pub tcp_refused: IntCounterVec,
    /// `meridian_dns_tcp_connections`: TCP connections open now.
    pub tcp_open: prometheus::IntGauge,
    region_healthy: GaugeVec,
    feed_staleness: GaugeVec,
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
        let rrl = c(
            "meridian_dns_rrl_limited_total",
            "UDP responses over the response-rate limit, by action (dropped, slipped: sent truncated)",
            &["action"],
        );
        let tcp_refused = c(
            "meridian_dns_tcp_refused_total",
            "TCP connections closed at accept, by the cap they were over (per_client, total)",
            &["reason"],
        );
        let tcp_open = prometheus::IntGauge::new("meridian_dns_tcp_connections", "DNS TCP connections open now")
            .expect("static metric definition");
        registry
            .register(Box::new(tcp_open.clone()))
            .expect("metric registered once");
        let region_healthy = GaugeVec::new(
            Opts::new("meridian_dns_region_healthy", "1 when the region may answer GSLB names"),
            &["region"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(region_healthy.clone()))
            .expect("metric registered once");
        let feed_staleness = GaugeVec::new(
            Opts::new(
                "meridian_state_feed_staleness_seconds",
                "Seconds since the region's control state feed last answered (regions whose feed answered)",
            ),
            &["region"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(feed_staleness.clone()))
            .expect("metric registered once");
        // Every (type, rcode, transport) series resolved up front: the query path only increments.
        let table = QTYPES
            .iter()
            .flat_map(|q| {
                RCODES
                    .iter()
                    .flat_map(move |r| PROTOCOLS.iter().map(move |p| (*q, *r, *p)))
            })
            .map(|(q, r, p)| queries.with_label_values(&[q, r, p]))
            .collect();
        DnsMetrics {
            registry,
            queries,
            table,
            answers,
            reloads,
            rrl,
            tcp_refused,
            tcp_open,
            region_healthy,
            feed_staleness,
        }
    }

    /// Counts one query, without a label lookup.
    pub fn query(&self, qtype: usize, rcode: usize, protocol: usize) {
        if let Some(c) = self
            .table
            .get((qtype * RCODES.len() + rcode) * PROTOCOLS.len() + protocol)
        {
            c.inc();
        }
    }

    /// Prometheus text, with region health and feed staleness (seconds, by region) read now.
    pub fn render(&self, regions: &[(String, bool)], staleness: &[(String, f64)]) -> String {
        self.feed_staleness.reset();
        for (name, s) in staleness {
            self.feed_staleness.with_label_values(&[name]).set(*s);
        }
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

/// Query type labels; anything else counts as `other`.
const QTYPES: [&str; 12] = [
    "A", "AAAA", "CNAME", "MX", "NS", "SOA", "TXT", "SRV", "CAA", "HTTPS", "ANY", "other",
];
/// Response code labels (standard mnemonics).
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];
const PROTOCOLS: [&str; 2] = ["udp", "tcp"];

/// Index of a query type in [`QTYPES`].
pub fn qtype_index(t: hickory_proto::rr::RecordType) -> usize {
    use hickory_proto::rr::RecordType as T;
    match t {
        T::A => 0,
        T::AAAA => 1,
        T::CNAME => 2,
        T::MX => 3,
        T::NS => 4,
        T::SOA => 5,
        T::TXT => 6,
        T::SRV => 7,
        T::CAA => 8,
        T::HTTPS => 9,
        T::ANY => 10,
        _ => 11,
    }
}

/// Index of a response code in [`RCODES`].
pub fn rcode_index(c: hickory_proto::op::ResponseCode) -> usize {
    use hickory_proto::op::ResponseCode as R;
    match c {
        R::NoError => 0,
        R::FormErr => 1,
        R::ServFail => 2,
        R::NXDomain => 3,
        R::NotImp => 4,
        R::Refused => 5,
        _ => 6,
    }
}

/// Index of a transport: 0 UDP, 1 TCP.
pub fn protocol_index(tcp: bool) -> usize {
    usize::from(tcp)
}
