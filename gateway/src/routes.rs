//! The gateway's routing table: one compiled config snapshot plus, for every model version, its
//! endpoints grouped by locality as seen from this gateway. Built off the request path on each
//! (re)load and swapped whole through arc-swap.

use std::sync::Arc;

use meridian_config::feed::FeedState;
use meridian_config::snapshot::EndpointSpec;
use meridian_config::Snapshot;

use crate::admission::Admission;
use crate::cluster::{Cluster, Origin};
use crate::endpoint::Registry;
use crate::metrics::{Metrics, VersionSeries};

/// What a new table takes over from the running process: the table it replaces (admission state
/// survives) and the control loop's latest endpoints.
#[derive(Clone, Copy, Default)]
pub struct Carry<'a> {
    /// The table being replaced.
    pub prev: Option<&'a Routes>,
    /// The state feed's endpoints to merge.
    pub feed: Option<&'a FeedState>,
}

/// An immutable routing table.
#[derive(Debug)]
pub struct Routes {
    /// The config it was built from.
    pub snap: Arc<Snapshot>,
    /// Increases with every successful load.
    pub generation: u64,
    /// Where this gateway runs.
    pub origin: Origin,
    /// Clusters by model and version index.
    pub clusters: Vec<Vec<Arc<Cluster>>>,
    /// Metric series by model and version index.
    pub series: Vec<Vec<VersionSeries>>,
    /// Admission control by model index, carried over from the previous table while a model's
    /// limits stay the same (so a reload neither forgets admitted requests nor the queue).
    pub admission: Vec<Arc<Admission>>,
    /// TLS to backends by model and version index (`None`: plaintext).
    pub upstream_tls: Vec<Vec<Option<Arc<crate::upstream_tls::UpstreamTls>>>>,
}

impl Routes {
    /// This gateway's region as configured.
    pub fn region(&self) -> &meridian_config::schema::Region {
        &self.snap.config.regions[self.origin.region]
    }

    /// This gateway's own settings (listeners, admin, shutdown); `None` only for a table built for
    /// a region without a gateway section, which `build` refuses.
    pub fn gateway_spec(&self) -> Option<&meridian_config::schema::RegionGateway> {
        self.region().gateway.as_ref()
    }

    /// Builds the table for a gateway in `region` (and `zone`, when known).
    pub fn build(
        snap: Arc<Snapshot>,
        generation: u64,
        region: &str,
        zone: Option<&str>,
        registry: &Registry,
        metrics: &Metrics,
        carry: Carry<'_>,
    ) -> Result<Routes, String> {
        let Carry { prev, feed } = carry;
        let r = snap
            .region(region)
            .ok_or_else(|| format!("region `{region}` is not in the config"))?;
        if snap.config.regions[r].gateway.is_none() {
            return Err(format!("region `{region}` has no gateway section"));
        }
        let zone = match zone {
            Some(z) => match snap.zone(z) {
                Some(id) if snap.zones[id].region == r => Some(id),
                _ => return Err(format!("zone `{z}` is not a zone of region `{region}`")),
            },
            None => None,
        };
        let origin = Origin { region: r, zone };
        let clusters = snap
            .models
            .iter()
            .map(|m| {
                m.versions
                    .iter()
                    .map(|v| {
                        let merged = with_feed(&snap, &m.name, &v.name, &v.endpoints, feed);
                        let c = Cluster::build(&snap, origin, &merged, registry, &m.policy.locality);
                        Arc::new(c.with_max_in_flight(m.policy.limits.per_endpoint_concurrency))
                    })
                    .collect()
            })
            .collect();
        let series = snap
            .models
            .iter()
            .map(|m| {
                m.versions
                    .iter()
                    .map(|v| metrics.version_series(&m.name, &v.name))
                    .collect()
            })
            .collect();
        let admission = snap
            .models
            .iter()
            .map(|m| {
                let limits = &m.policy.limits;
                prev.and_then(|p| {
                    let i = p.snap.model(&m.name)?;
                    Some(p.admission[i].clone()).filter(|a| a.same_limits(limits))
                })
                .unwrap_or_else(|| Arc::new(Admission::new(limits)))
            })
            .collect();
        let upstream_tls = crate::upstream_tls::compile(&snap)?;
        Ok(Routes {
            snap,
            generation,
            origin,
            clusters,
            series,
            admission,
            upstream_tls,
        })
    }
}

/// A version's static endpoints plus those the state feed adds (discovered by control), unless
/// the same address is already configured. Endpoints in zones the config does not know are left
/// out: locality needs the zone.
fn with_feed(
    snap: &Snapshot,
    model: &str,
    version: &str,
    statics: &[EndpointSpec],
    feed: Option<&FeedState>,
) -> Vec<EndpointSpec> {
    let mut all = statics.to_vec();
    for e in feed.into_iter().flat_map(|f| &f.endpoints) {
        if e.model != model || e.version != version || all.iter().any(|s| s.address == e.address) {
            continue;
        }
        let (Some(region), Some(zone)) = (snap.region(&e.region), snap.zone(&e.zone)) else {
            continue;
        };
        all.push(EndpointSpec {
            id: e.id.as_str().into(),
            address: e.address,
            region,
            zone,
            weight: 1,
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_config::feed::FeedEndpoint;

    const CONFIG: &str = "
regions:
  - name: r
    zones: [r-a, r-b]
    gateway:
      listeners: [{ name: p, address: 127.0.0.1:1 }]
models:
  - name: m
    versions: [{ name: v1, endpoints: [{ id: s1, address: 127.0.0.1:10, region: r, zone: r-a }] }]
";

    fn feed_ep(id: &str, address: &str, zone: &str) -> FeedEndpoint {
        FeedEndpoint {
            id: id.into(),
            address: address.parse().unwrap(),
            model: "m".into(),
            version: "v1".into(),
            region: "r".into(),
            zone: zone.into(),
            ready: true,
            headroom: Some(0.5),
            drained: false,
            reason: None,
        }
    }

    #[test]
    fn endpoints_from_the_feed_join_their_version() {
        let loaded = meridian_config::load_str(CONFIG, "t.yaml", std::path::Path::new(".")).unwrap();
        let snap = Arc::new(Snapshot::compile(loaded));
        let feed = FeedState {
            version: 3,
            region: "r".into(),
            endpoints: vec![
                feed_ep("s1-dup", "127.0.0.1:10", "r-a"),
                feed_ep("k1", "127.0.0.1:11", "r-b"),
                feed_ep("lost", "127.0.0.1:12", "no-such-zone"),
            ],
            capacity: Default::default(),
            canaries: Vec::new(),
        };
        let (registry, metrics) = (Registry::default(), Metrics::new());
        let carry = Carry {
            prev: None,
            feed: Some(&feed),
        };
        let routes = Routes::build(snap, 1, "r", Some("r-a"), &registry, &metrics, carry).unwrap();
        let mut ids: Vec<_> = routes.clusters[0][0].endpoints().map(|e| e.id.to_string()).collect();
        ids.sort();
        // The configured address keeps its configured id; the discovered one joins in its zone's
        // level; one in an unknown zone is left out.
        assert_eq!(ids, ["k1", "s1"]);
        assert_eq!(routes.clusters[0][0].levels[1].members.len(), 1);
    }
}
