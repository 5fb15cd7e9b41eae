//! Answering one query from a [`ZoneSet`] and the regions' health: authoritative data, GSLB names,
//! NXDOMAIN vs NODATA with the SOA, REFUSED outside our zones. Pure: no sockets, so every case is
//! unit-tested.

use std::collections::HashMap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, RData, Record, RecordType};

use crate::gslb::{decide, Candidate, Client};
use crate::zones::{is_address, ZoneSet};

/// The answer to one question.
#[derive(Debug, Default)]
pub struct Answer {
    /// Response code.
    pub rcode: ResponseCode,
    /// Whether we are authoritative for the name (AA).
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section (the SOA of negative answers).
    pub authority: Vec<Record>,
    /// ECS scope prefix to return, when the answer came from GSLB.
    pub scope: Option<u8>,
    /// Regions that answered a GSLB name (for metrics).
    pub regions: Vec<usize>,
}

/// Region health as the answer core sees it, by region index.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Whether the region's gateway passes this server's probes.
    pub probes: Vec<bool>,
    /// The latest fresh control report of healthy endpoints per model, if any.
    pub capacity: Vec<Option<HashMap<String, u32>>>,
}

impl Health {
    /// Health from probes alone.
    pub fn probes(probes: &[bool]) -> Health {
        Health {
            probes: probes.to_vec(),
            capacity: Vec::new(),
        }
    }

    /// Whether `region` may answer for a name serving `models` (all models when empty): its probes
    /// pass, and a fresh control report, if there is one, shows healthy capacity for them.
    pub fn up(&self, region: usize, models: &[String]) -> bool {
        let probed = self.probes.get(region).copied().unwrap_or(false);
        let reported = match self.capacity.get(region) {
            Some(Some(c)) if models.is_empty() => c.values().any(|n| *n > 0),
            Some(Some(c)) => models.iter().any(|m| c.get(m).is_some_and(|n| *n > 0)),
            _ => true,
        };
        probed && reported
    }
}

/// Answers `name`/`qtype` given the regions' health. ANY gets one RRset, the first the name has
/// (RFC 8482's minimal answer: a full ANY answer is what reflection attacks ask for).
pub fn answer(zs: &ZoneSet, name: &LowerName, qtype: RecordType, health: &Health, client: &Client) -> Answer {
    let mut out = every_rrset(zs, name, qtype, health, client);
    if qtype == RecordType::ANY {
        if let Some(first) = out.answers.first().map(Record::record_type) {
            out.answers.retain(|r| r.record_type() == first);
        }
    }
    out
}

/// Every RRset of `name` that answers `qtype` (all of them for ANY).
fn every_rrset(zs: &ZoneSet, name: &LowerName, qtype: RecordType, health: &Health, client: &Client) -> Answer {
    let Some(zone) = zs.zone_of(name) else {
        return Answer {
            rcode: ResponseCode::Refused,
            ..Answer::default()
        };
    };
    let mut out = Answer {
        authoritative: true,
        ..Answer::default()
    };
    let negative = |mut soa: Record| {
        soa.ttl = zone.negative_ttl;
        soa
    };
    if let Some(g) = zone.gslb.get(name) {
        let candidates: Vec<Candidate> = g
            .candidates
            .iter()
            .map(|&(r, weight)| Candidate {
                region: r,
                healthy: health.up(r, &g.models),
                weight,
                location: zs.regions[r].location,
            })
            .collect();
        let d = decide(&g.policy, &candidates, client, &zs.cidrs);
        out.scope = Some(d.scope);
        if is_address(qtype) || qtype == RecordType::ANY {
            for &r in &d.regions {
                for ip in &zs.regions[r].addresses {
                    let data = match (ip, qtype) {
                        (std::net::IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                        (std::net::IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    out.answers.push(Record::from_rdata(g.name.clone(), g.ttl, data));
                }
            }
            out.regions = d.regions;
        }
        if out.answers.is_empty() {
            out.authority.push(negative(zone.soa.clone()));
        }
        return out;
    }
    if *name == zone.apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
        out.answers.push(zone.soa.clone());
    }
    if let Some(rs) = zone.records.get(name) {
        let cname: Vec<_> = rs
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .cloned()
            .collect();
        if !cname.is_empty() && qtype != RecordType::CNAME {
            // A CNAME answers every type; follow it once when the target is ours.
            out.answers.extend(cname.iter().cloned());
            if let Some(RData::CNAME(target)) = cname.first().map(|r| &r.data) {
                let inner = every_rrset(zs, &LowerName::new(&target.0), qtype, health, client);
                if inner.rcode == ResponseCode::NoError {
                    out.answers.extend(inner.answers);
                    out.scope = inner.scope.or(out.scope);
                }
            }
            return out;
        }
        out.answers.extend(
            rs.iter()
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                .cloned(),
        );
    }
    if out.answers.is_empty() {
        if !zone.names.contains(name) {
            out.rcode = ResponseCode::NXDomain;
        }
        out.authority.push(negative(zone.soa.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use meridian_config::{load_str, Snapshot};
    use std::str::FromStr;
    use std::sync::Arc;

    const CFG: &str = "
regions:
  - name: us
    zones: [us-a]
    location: { lat: 38.9, lon: -77.0 }
    gateway: { listeners: [{ name: p, address: 127.0.1.1:8080 }], admin: { address: 127.0.1.1:9901 }, public_addresses: [127.0.1.1, '::1'] }
  - name: eu
    zones: [eu-a]
    location: { lat: 53.3, lon: -6.3 }
    gateway: { listeners: [{ name: p, address: 127.0.2.1:8080 }], admin: { address: 127.0.2.1:9901 }, public_addresses: [127.0.2.1] }
dns:
  listen: [127.0.0.1:5353]
  zones:
    - name: meridian.test
      soa: { mname: ns1.meridian.test, rname: hostmaster.meridian.test, minimum: 60s }
      ns: [ns1.meridian.test]
      records:
        - { name: ns1, type: A, value: 127.0.0.1 }
        - { name: www, type: CNAME, value: api.meridian.test }
        - { name: a.b.c, type: TXT, value: deep }
  gslb:
    - { name: api.meridian.test, policy: failover, regions: [us, eu] }
  cidr_map:
    - { cidr: 10.2.0.0/16, region: eu }
";

    fn zs() -> ZoneSet {
        let snap = Snapshot::compile(load_str(CFG, "t", std::path::Path::new(".")).unwrap());
        ZoneSet::build(Arc::new(snap), 7, &crate::metrics::DnsMetrics::new()).unwrap()
    }

    fn q(zs: &ZoneSet, name: &str, t: RecordType, health: &[bool]) -> Answer {
        let client = Client {
            resolver: "192.0.2.1".parse().unwrap(),
            subnet: None,
        };
        answer(
            zs,
            &LowerName::new(&Name::from_str(name).unwrap()),
            t,
            &Health::probes(health),
            &client,
        )
    }

    #[test]
    fn static_records_soa_and_ns() {
        let z = zs();
        let a = q(&z, "ns1.meridian.test.", RecordType::A, &[true, true]);
        assert_eq!(
            (a.rcode, a.authoritative, a.answers.len()),
            (ResponseCode::NoError, true, 1)
        );
        let soa = q(&z, "meridian.test.", RecordType::SOA, &[true, true]);
        match &soa.answers[0].data {
            RData::SOA(s) => assert_eq!(s.serial, 7),
            other => panic!("{other:?}"),
        }
        assert_eq!(q(&z, "meridian.test.", RecordType::NS, &[true, true]).answers.len(), 1);
    }

    #[test]
    fn any_gets_one_rrset() {
        let z = zs();
        // The apex has SOA and NS: one of them. The GSLB name has A and AAAA: one of them.
        for name in ["meridian.test.", "api.meridian.test."] {
            let a = q(&z, name, RecordType::ANY, &[true, true]);
            assert!(!a.answers.is_empty(), "{name}");
            let first = a.answers[0].record_type();
            assert!(
                a.answers.iter().all(|r| r.record_type() == first),
                "{name}: {:?}",
                a.answers
            );
        }
        let gslb = q(&z, "api.meridian.test.", RecordType::ANY, &[true, true]);
        assert_eq!(gslb.answers.len(), 1, "us's IPv4 address alone, not its IPv6 one too");
    }

    #[test]
    fn nxdomain_nodata_and_refused() {
        let z = zs();
        let nx = q(&z, "nope.meridian.test.", RecordType::A, &[true, true]);
        assert_eq!(
            (nx.rcode, nx.authoritative, nx.authority.len()),
            (ResponseCode::NXDomain, true, 1)
        );
        assert_eq!(nx.authority[0].ttl, 60, "negative TTL from the SOA minimum");
        let nodata = q(&z, "ns1.meridian.test.", RecordType::MX, &[true, true]);
        assert_eq!(
            (nodata.rcode, nodata.answers.len(), nodata.authority.len()),
            (ResponseCode::NoError, 0, 1)
        );
        let ent = q(&z, "b.c.meridian.test.", RecordType::A, &[true, true]);
        assert_eq!(
            ent.rcode,
            ResponseCode::NoError,
            "an empty non-terminal is NODATA, not NXDOMAIN"
        );
        let unknown_type = q(&z, "ns1.meridian.test.", RecordType::CAA, &[true, true]);
        assert_eq!(
            (unknown_type.rcode, unknown_type.answers.len()),
            (ResponseCode::NoError, 0)
        );
        let refused = q(&z, "example.com.", RecordType::A, &[true, true]);
        assert_eq!((refused.rcode, refused.authoritative), (ResponseCode::Refused, false));
    }

    #[test]
    fn control_reports_take_a_region_out_for_its_models() {
        let z = zs();
        let client = Client {
            resolver: "192.0.2.1".parse().unwrap(),
            subnet: None,
        };
        let name = LowerName::new(&Name::from_str("api.meridian.test.").unwrap());
        let no_capacity = HashMap::from([("sklearn-iris".to_string(), 0)]);
        let h = Health {
            probes: vec![true, true],
            capacity: vec![Some(no_capacity), None],
        };
        let a = answer(&z, &name, RecordType::A, &h, &client);
        assert_eq!(a.regions, vec![1], "us passes probes but reports no healthy capacity");
        assert!(!h.up(0, &["sklearn-iris".into()]));
        assert!(
            !h.up(0, &["other".into()]),
            "a model the report does not list has no capacity there"
        );
        let some = HashMap::from([("sklearn-iris".to_string(), 2)]);
        let h = Health {
            probes: vec![true, true],
            capacity: vec![Some(some), None],
        };
        assert!(h.up(0, &[]) && h.up(0, &["sklearn-iris".into()]));
        assert!(
            !Health {
                probes: vec![false, true],
                capacity: vec![]
            }
            .up(0, &[]),
            "probes still count"
        );
    }

    #[test]
    fn gslb_answers_follow_health() {
        let z = zs();
        let a = q(&z, "api.meridian.test.", RecordType::A, &[true, true]);
        assert_eq!(&a.answers[0].data, &RData::A(A("127.0.1.1".parse().unwrap())));
        assert_eq!((a.regions, a.scope), (vec![0], Some(0)));
        let aaaa = q(&z, "api.meridian.test.", RecordType::AAAA, &[true, true]);
        assert_eq!(aaaa.answers.len(), 1);
        let failed_over = q(&z, "api.meridian.test.", RecordType::A, &[false, true]);
        assert_eq!(&failed_over.answers[0].data, &RData::A(A("127.0.2.1".parse().unwrap())));
        let no_v6 = q(&z, "api.meridian.test.", RecordType::AAAA, &[false, true]);
        assert_eq!(
            (no_v6.rcode, no_v6.answers.len(), no_v6.authority.len()),
            (ResponseCode::NoError, 0, 1)
        );
        let www = q(&z, "www.meridian.test.", RecordType::A, &[true, true]);
        assert_eq!(www.answers.len(), 2, "CNAME plus the GSLB answer it points to");
    }
}
