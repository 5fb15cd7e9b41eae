//! The DNS view of a config snapshot: zones with their static records and GSLB names, compiled to
//! hickory records and hash maps so that a query is answered without parsing or scanning.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use meridian_config::names::{normalize, owner_name};
use meridian_config::schema::{GeoPoint, RecordType as CfgType};
use meridian_config::Snapshot;

use crate::geo::CidrMap;
use crate::gslb::Policy;
use crate::metrics::DnsMetrics;

/// Everything the DNS server answers from, for one config generation.
#[derive(Debug)]
pub struct ZoneSet {
    /// The config it came from.
    pub snap: Arc<Snapshot>,
    /// Zones, longest apex first so the most specific zone wins.
    pub zones: Vec<Zone>,
    /// Region data GSLB answers draw on, by region index.
    pub regions: Vec<RegionInfo>,
    /// Client subnets to regions.
    pub cidrs: CidrMap,
    /// Largest UDP payload we send.
    pub max_udp_payload: u16,
    /// Response-rate limiting of UDP answers (its buckets start over with each zone set).
    pub rrl: Option<crate::rrl::Rrl>,
    /// The DNS Cookies secret, when cookies are on.
    pub cookies: Option<[u8; 16]>,
}

/// What a GSLB answer needs of a region.
#[derive(Clone, Debug)]
pub struct RegionInfo {
    /// Region name.
    pub name: Arc<str>,
    /// Gateway public addresses.
    pub addresses: Vec<IpAddr>,
    /// Location for `nearest`.
    pub location: Option<GeoPoint>,
}

/// One authoritative zone.
#[derive(Debug)]
pub struct Zone {
    /// The apex.
    pub apex: LowerName,
    /// SOA record (its serial moves with every load).
    pub soa: Record,
    /// Negative-answer TTL (RFC 2308): min(SOA minimum, SOA TTL).
    pub negative_ttl: u32,
    /// Static records by owner.
    pub records: HashMap<LowerName, Vec<Record>>,
    /// Every name that exists in the zone, empty non-terminals included (NODATA, not NXDOMAIN).
    pub names: HashSet<LowerName>,
    /// GSLB names.
    pub gslb: HashMap<LowerName, GslbEntry>,
}

/// A GSLB name compiled.
#[derive(Clone, Debug)]
pub struct GslbEntry {
    /// Owner name.
    pub name: Name,
    /// Policy settings.
    pub policy: Policy,
    /// Candidate regions in order, with weights.
    pub candidates: Vec<(usize, u32)>,
    /// Answer TTL in seconds.
    pub ttl: u32,
    /// Models whose healthy capacity (from control reports) keeps a region up; all when empty.
    pub models: Vec<String>,
    /// `meridian_dns_gslb_answers_total` of this name, by region index, resolved up front.
    pub answer_counters: Vec<prometheus::IntCounter>,
}

/// Why a valid config's DNS section does not compile to zones (validation rules these out; the
/// DNS library has the last word).
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The config has no `dns` section.
    #[error("the config has no dns section")]
    NoDns,
    /// A name the DNS library refuses.
    #[error("{name}: {reason}")]
    BadName {
        /// The name as written.
        name: String,
        /// The library's words.
        reason: String,
    },
    /// Record data that does not parse as its type.
    #[error("bad {kind} record `{value}`")]
    BadRecord {
        /// The record type.
        kind: &'static str,
        /// The data as written.
        value: String,
    },
}

fn fqdn(n: &str) -> Result<Name, ZoneError> {
    Name::from_str(&format!("{}.", normalize(n))).map_err(|e| ZoneError::BadName {
        name: n.to_string(),
        reason: e.to_string(),
    })
}

fn bad(kind: &'static str, value: &str) -> ZoneError {
    ZoneError::BadRecord {
        kind,
        value: value.to_string(),
    }
}

fn secs(d: meridian_config::units::Duration) -> u32 {
    u32::try_from(d.get().as_secs()).unwrap_or(u32::MAX)
}

impl ZoneSet {
    /// Compiles the DNS section of a validated config; `serial` is the SOA serial to publish.
    pub fn build(snap: Arc<Snapshot>, serial: u32, metrics: &DnsMetrics) -> Result<ZoneSet, ZoneError> {
        let dns = snap.config.dns.as_ref().ok_or(ZoneError::NoDns)?;
        let regions: Vec<RegionInfo> = snap
            .config
            .regions
            .iter()
            .map(|r| RegionInfo {
                name: r.name.as_str().into(),
                addresses: r
                    .gateway
                    .as_ref()
                    .map(|g| g.public_addresses.clone())
                    .unwrap_or_default(),
                location: r.location,
            })
            .collect();
        let cidrs = CidrMap::new(
            dns.cidr_map
                .iter()
                .filter_map(|c| Some((c.cidr.trunc(), snap.region(&c.region)?)))
                .collect(),
        );
        let mut zones = Vec::new();
        for z in &dns.zones {
            let apex_s = normalize(&z.name);
            let apex = fqdn(&apex_s)?;
            let ttl = secs(z.ttl);
            let soa = Record::from_rdata(
                apex.clone(),
                ttl,
                RData::SOA(SOA::new(
                    fqdn(&z.soa.mname)?,
                    fqdn(&z.soa.rname)?,
                    serial,
                    i32::try_from(secs(z.soa.refresh)).unwrap_or(i32::MAX),
                    i32::try_from(secs(z.soa.retry)).unwrap_or(i32::MAX),
                    i32::try_from(secs(z.soa.expire)).unwrap_or(i32::MAX),
                    secs(z.soa.minimum),
                )),
            );
            let mut records: HashMap<LowerName, Vec<Record>> = HashMap::new();
            for ns in &z.ns {
                records
                    .entry(LowerName::new(&apex))
                    .or_default()
                    .push(Record::from_rdata(apex.clone(), ttl, RData::NS(NS(fqdn(ns)?))));
            }
            for r in &z.records {
                let owner = fqdn(&owner_name(&r.name, &apex_s))?;
                let rttl = r.ttl.map_or(ttl, secs);
                let v = r.value.trim();
                let data = match r.kind {
                    CfgType::A => RData::A(A(v.parse().map_err(|_| bad("A", v))?)),
                    CfgType::Aaaa => RData::AAAA(AAAA(v.parse().map_err(|_| bad("AAAA", v))?)),
                    CfgType::Cname => RData::CNAME(CNAME(fqdn(v)?)),
                    CfgType::Ns => RData::NS(NS(fqdn(v)?)),
                    CfgType::Txt => RData::TXT(TXT::new(vec![v.to_string()])),
                    CfgType::Mx => {
                        let (pref, host) = v.split_once(char::is_whitespace).ok_or_else(|| bad("MX", v))?;
                        RData::MX(MX::new(pref.parse().map_err(|_| bad("MX", v))?, fqdn(host.trim())?))
                    }
                };
                records
                    .entry(LowerName::new(&owner))
                    .or_default()
                    .push(Record::from_rdata(owner, rttl, data));
            }
            let apex_lower = LowerName::new(&apex);
            let mut gslb = HashMap::new();
            for g in dns
                .gslb
                .iter()
                .filter(|g| meridian_config::names::in_zone(&normalize(&g.name), &apex_s))
            {
                let name = fqdn(&g.name)?;
                let order: Vec<usize> = if g.regions.is_empty() {
                    snap.config
                        .regions
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.gateway.is_some())
                        .map(|(i, _)| i)
                        .collect()
                } else {
                    g.regions.iter().filter_map(|r| snap.region(r)).collect()
                };
                let candidates = order
                    .into_iter()
                    .map(|i| {
                        (
                            i,
                            if g.weights.is_empty() {
                                1
                            } else {
                                g.weights.get(&*regions[i].name).copied().unwrap_or(0)
                            },
                        )
                    })
                    .collect();
                gslb.insert(
                    LowerName::new(&name),
                    GslbEntry {
                        name,
                        policy: Policy {
                            kind: g.policy,
                            when_all_down: g.when_all_down,
                            max_answers: g.max_answers as usize,
                        },
                        candidates,
                        ttl: secs(g.ttl),
                        models: g.models.clone(),
                        answer_counters: regions
                            .iter()
                            .map(|r| {
                                metrics
                                    .answers
                                    .with_label_values(&[&format!("{}.", normalize(&g.name)), &*r.name])
                            })
                            .collect(),
                    },
                );
            }
            // Every existing name and its ancestors up to the apex exist (empty non-terminals).
            let mut names = HashSet::new();
            for owner in records.keys().chain(gslb.keys()) {
                let mut n = owner.clone();
                loop {
                    names.insert(n.clone());
                    if n == apex_lower || n.num_labels() == 0 {
                        break;
                    }
                    n = n.base_name();
                }
            }
            names.insert(apex_lower.clone());
            let negative_ttl = secs(z.soa.minimum).min(ttl);
            zones.push(Zone {
                apex: apex_lower,
                soa,
                negative_ttl,
                records,
                names,
                gslb,
            });
        }
        zones.sort_by_key(|z| std::cmp::Reverse(z.apex.num_labels()));
        let max_udp_payload = dns.max_udp_payload;
        let rrl = crate::rrl::Rrl::new(&dns.rrl);
        let cookies = dns
            .cookies
            .enabled
            .then(|| dns.cookies.key().unwrap_or_else(crate::cookie::process_secret));
        Ok(ZoneSet {
            snap,
            zones,
            regions,
            cidrs,
            max_udp_payload,
            rrl,
            cookies,
        })
    }

    /// The most specific zone containing `name`.
    pub fn zone_of(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|z| z.apex.zone_of(name))
    }
}

/// Record types a GSLB name answers.
pub fn is_address(t: RecordType) -> bool {
    matches!(t, RecordType::A | RecordType::AAAA)
}
