//! GSLB answer selection (Route 53 failover / weighted / latency-like / multivalue, k8gb).
//!
//! - `failover`: the first healthy region in the name's order.
//! - `weighted`: one healthy region by weight, chosen by weighted rendezvous hashing of the client's
//!   subnet (/24 for IPv4, /56 for IPv6), so a client does not flap and a region going down moves
//!   only its own clients.
//! - `nearest`: the client's subnet (ECS, else the resolver's address) is placed by the CIDR map; the
//!   mapped region answers if healthy, else the healthy region nearest to it by great-circle
//!   distance; an unplaced client gets the first healthy region in order.
//! - `all-healthy`: every healthy region, up to `max_answers`.
//!
//! When no candidate is healthy: fail open (answer as if all were healthy) or fail closed (no
//! address). The ECS scope prefix says how much of the client subnet the answer depended on
//! (RFC 7871): 0 when it did not depend on it at all.

use std::net::IpAddr;

use meridian_config::schema::{AllDown, GeoPoint, GslbPolicy};

use crate::geo::{distance_km, CidrMap};

/// What the answer core knows of one candidate region.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Region index (into the config's regions).
    pub region: usize,
    /// Whether the region is up, as probes and control reports see it.
    pub healthy: bool,
    /// Weight for the `weighted` policy.
    pub weight: u32,
    /// Where the region is.
    pub location: Option<GeoPoint>,
}

/// What is known of the client.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    /// The resolver's address.
    pub resolver: IpAddr,
    /// The EDNS Client Subnet address and source prefix length, when the query carried one.
    pub subnet: Option<(IpAddr, u8)>,
}

/// The decision for one query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Regions to answer with, in order; empty means NODATA.
    pub regions: Vec<usize>,
    /// ECS scope prefix length to return.
    pub scope: u8,
    /// Whether every candidate was down and the answer failed open.
    pub failed_open: bool,
}

/// A GSLB name's policy settings.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The policy.
    pub kind: GslbPolicy,
    /// Behaviour when all candidates are down.
    pub when_all_down: AllDown,
    /// Most regions in an `all-healthy` answer.
    pub max_answers: usize,
}

/// Chooses the answering regions.
pub fn decide(policy: &Policy, candidates: &[Candidate], client: &Client, cidrs: &CidrMap) -> Decision {
    let any_healthy = candidates.iter().any(|c| c.healthy);
    let failed_open = !any_healthy && policy.when_all_down == AllDown::FailOpen;
    if !any_healthy && !failed_open {
        return Decision {
            regions: Vec::new(),
            scope: 0,
            failed_open: false,
        };
    }
    let up = |c: &&Candidate| c.healthy || failed_open;
    let (regions, scope) = match policy.kind {
        GslbPolicy::Failover => (candidates.iter().find(up).map(|c| c.region).into_iter().collect(), 0),
        GslbPolicy::AllHealthy => (
            candidates
                .iter()
                .filter(up)
                .take(policy.max_answers.max(1))
                .map(|c| c.region)
                .collect(),
            0,
        ),
        GslbPolicy::Weighted => {
            let (key, scope) = subnet_key(client);
            let best = candidates
                .iter()
                .filter(up)
                .filter(|c| c.weight > 0)
                .map(|c| (score(&key, c.region, c.weight), c.region))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, r)| r);
            (best.into_iter().collect(), scope)
        }
        GslbPolicy::Nearest => nearest(candidates, client, cidrs, &up),
    };
    Decision {
        regions,
        scope,
        failed_open,
    }
}

fn nearest(
    candidates: &[Candidate],
    client: &Client,
    cidrs: &CidrMap,
    up: &dyn Fn(&&Candidate) -> bool,
) -> (Vec<usize>, u8) {
    // Only the source prefix's bits of an ECS address mean anything (RFC 7871 section 6).
    let ip = client.subnet.map_or(client.resolver, |(ip, source)| {
        ipnet::IpNet::new(ip, source).map_or(ip, |n| n.network())
    });
    let Some((home, prefix)) = cidrs.lookup(ip) else {
        // Unplaced: the first healthy region in order, and the answer does not depend on the subnet.
        return (candidates.iter().find(up).map(|c| c.region).into_iter().collect(), 0);
    };
    // The answer holds for the whole matched prefix, which is its scope (it may be longer than the
    // source prefix: the answer is then valid for that narrower range only).
    let scope = prefix;
    if let Some(c) = candidates.iter().find(|c| c.region == home && up(c)) {
        return (vec![c.region], scope);
    }
    let from = candidates.iter().find(|c| c.region == home).and_then(|c| c.location);
    let best = candidates.iter().filter(up).min_by(|a, b| {
        let d = |c: &Candidate| match (from, c.location) {
            (Some(f), Some(l)) => distance_km(f, l),
            _ => f64::INFINITY,
        };
        d(a).total_cmp(&d(b))
    });
    (best.map(|c| c.region).into_iter().collect(), scope)
}

/// The client's subnet as hashing key, and the ECS scope it implies.
fn subnet_key(client: &Client) -> (Vec<u8>, u8) {
    let ip = client.subnet.map_or(client.resolver, |(ip, _)| ip);
    match ip {
        IpAddr::V4(v4) => (v4.octets()[..3].to_vec(), 24),
        IpAddr::V6(v6) => (v6.octets()[..7].to_vec(), 56),
    }
}

fn score(key: &[u8], region: usize, weight: u32) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, region as u64);
    let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
    -u.ln() / f64::from(weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(health: &[bool]) -> Vec<Candidate> {
        let locs = [
            GeoPoint { lat: 38.9, lon: -77.0 },
            GeoPoint { lat: 53.3, lon: -6.3 },
            GeoPoint { lat: 1.3, lon: 103.8 },
        ];
        health
            .iter()
            .enumerate()
            .map(|(i, h)| Candidate {
                region: i,
                healthy: *h,
                weight: [70, 30, 0][i % 3],
                location: Some(locs[i % 3]),
            })
            .collect()
    }

    fn policy(kind: GslbPolicy) -> Policy {
        Policy {
            kind,
            when_all_down: AllDown::FailOpen,
            max_answers: 8,
        }
    }

    fn client(ip: &str) -> Client {
        Client {
            resolver: ip.parse().unwrap(),
            subnet: None,
        }
    }

    fn map() -> CidrMap {
        CidrMap::new(vec![
            ("10.1.0.0/16".parse().unwrap(), 0),
            ("10.2.0.0/16".parse().unwrap(), 1),
            ("10.3.0.0/16".parse().unwrap(), 2),
        ])
    }

    #[test]
    fn failover_takes_the_first_healthy_in_order() {
        let p = policy(GslbPolicy::Failover);
        let c = client("192.0.2.1");
        assert_eq!(decide(&p, &cands(&[true, true, true]), &c, &map()).regions, vec![0]);
        assert_eq!(decide(&p, &cands(&[false, true, true]), &c, &map()).regions, vec![1]);
        assert_eq!(decide(&p, &cands(&[false, false, true]), &c, &map()).regions, vec![2]);
        assert_eq!(decide(&p, &cands(&[true, false, true]), &c, &map()).scope, 0);
    }

    #[test]
    fn all_down_fails_open_or_closed() {
        let c = client("192.0.2.1");
        let d = decide(
            &policy(GslbPolicy::AllHealthy),
            &cands(&[false, false, false]),
            &c,
            &map(),
        );
        assert_eq!((d.regions, d.failed_open), (vec![0, 1, 2], true));
        let closed = Policy {
            when_all_down: AllDown::FailClosed,
            ..policy(GslbPolicy::Failover)
        };
        let d = decide(&closed, &cands(&[false, false, false]), &c, &map());
        assert_eq!((d.regions, d.failed_open), (vec![], false));
    }

    #[test]
    fn all_healthy_caps_the_answer() {
        let p = Policy {
            max_answers: 2,
            ..policy(GslbPolicy::AllHealthy)
        };
        assert_eq!(
            decide(&p, &cands(&[true, true, true]), &client("192.0.2.1"), &map()).regions,
            vec![0, 1]
        );
        assert_eq!(
            decide(&p, &cands(&[true, false, true]), &client("192.0.2.1"), &map()).regions,
            vec![0, 2]
        );
    }

    #[test]
    fn weighted_is_stable_per_subnet_and_follows_weights() {
        let p = policy(GslbPolicy::Weighted);
        let all = cands(&[true, true, true]);
        let mut first = 0;
        for i in 0..2000u32 {
            let net = format!("{}.{}.{}", 11 + i / 65536, (i / 256) % 256, i % 256);
            let ip = format!("{net}.7");
            let d = decide(&p, &all, &client(&ip), &map());
            assert_eq!(d.scope, 24);
            let again = decide(&p, &all, &client(&format!("{net}.200")), &map());
            assert_eq!(d.regions, again.regions, "same /24, same answer");
            assert_ne!(d.regions, vec![2], "weight 0 never answers");
            first += usize::from(d.regions == vec![0]);
        }
        assert!((1300..=1500).contains(&first), "70% of 2000: {first}");
        // Region 0 down: its clients move to region 1; region 1's clients stay.
        let down = cands(&[false, true, true]);
        for i in 0..500u32 {
            let ip = format!("11.{}.{}.1", i / 256, i % 256);
            if decide(&p, &all, &client(&ip), &map()).regions == vec![1] {
                assert_eq!(decide(&p, &down, &client(&ip), &map()).regions, vec![1]);
            }
        }
    }

    #[test]
    fn nearest_uses_ecs_then_resolver_then_distance() {
        let p = policy(GslbPolicy::Nearest);
        let all = cands(&[true, true, true]);
        // Resolver address placed by the map.
        let d = decide(&p, &all, &client("10.2.9.9"), &map());
        assert_eq!((d.regions, d.scope), (vec![1], 16));
        // ECS beats the resolver address, and the scope never exceeds the source prefix.
        let ecs = Client {
            resolver: "10.2.9.9".parse().unwrap(),
            subnet: Some(("10.3.4.0".parse().unwrap(), 12)),
        };
        let d = decide(&p, &all, &ecs, &map());
        assert_eq!(
            d.regions,
            vec![0],
            "10.3.4.0/12 means 10.0.0.0/12: unplaced, so the first healthy region"
        );
        let ecs = Client {
            resolver: "10.2.9.9".parse().unwrap(),
            subnet: Some(("10.3.4.0".parse().unwrap(), 24)),
        };
        assert_eq!(
            decide(&p, &all, &ecs, &map()),
            Decision {
                regions: vec![2],
                scope: 16,
                failed_open: false
            }
        );
        // The mapped region is down: the nearest healthy one (Dublin is nearer to DC than Singapore).
        let d = decide(&p, &cands(&[false, true, true]), &client("10.1.0.1"), &map());
        assert_eq!(d.regions, vec![1]);
        // Unplaced client: first healthy in order, scope 0.
        let d = decide(&p, &cands(&[false, true, true]), &client("192.0.2.1"), &map());
        assert_eq!((d.regions, d.scope), (vec![1], 0));
    }
}
