//! The gateway's routing table: one compiled config snapshot plus, for every model, its admission
//! state and, for every version, its endpoints grouped by locality as seen from this gateway, the
//! metric series its requests count into and its upstream TLS. Built off the request path on each
//! (re)load and swapped whole through arc-swap.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::feed::FeedState;
use meridian_config::snapshot::{EndpointSpec, ModelEntry, ModelId, VersionId};
use meridian_config::Snapshot;
use meridian_gateway_core::activation::Activator;
use meridian_gateway_core::admission::Admission;
use meridian_gateway_core::clock::Clock;
use meridian_gateway_core::cluster::{Cluster, Origin};
use meridian_gateway_core::endpoint::Registry;
use meridian_gateway_core::llm::limit::TokenLimits;
use meridian_gateway_core::outlier::Detector;

use prometheus::IntCounter;

use crate::metrics::{Metrics, VersionSeries, OUTCOMES};
use crate::upstream_tls::{UpstreamTls, UpstreamTlsError};

/// The current routing table and the endpoint state that outlives any one table: what every
/// part that routes requests, checks endpoints or reports on them reads.
pub struct Routing {
    /// The current table; readers load it without locking, reloads swap it whole.
    pub routes: ArcSwap<Routes>,
    /// Endpoint states by address (load, latency, health, ejections), kept across tables.
    pub registry: Registry,
    /// Outlier detection's ejection decisions.
    pub detector: Detector,
    /// Time.
    pub clock: Arc<dyn Clock>,
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
    /// Models, by [`ModelId`] (the snapshot's order).
    pub models: Vec<ModelRoute>,
    /// The largest [`held_body`] of any model: our HTTP/1 front hands longer bodies to pingora
    /// before reading them.
    pub held_body_max: u64,
}

/// The largest body of a model's requests held whole on our upstream leg (for retries, and so the
/// LLM-aware pick sees the whole prompt): its `retries.buffer_body` or, for LLM routing, its
/// `llm.max_prompt` (the larger), within its request body limit.
pub fn held_body(entry: &ModelEntry) -> u64 {
    let policy = &entry.policy;
    let prompt = entry.llm.as_ref().map_or(0, |l| l.max_prompt.bytes());
    let held = policy.retries.buffer_body.bytes().max(prompt);
    held.min(policy.limits.max_request_body.bytes())
}

/// One model's part of the table.
#[derive(Debug)]
pub struct ModelRoute {
    /// Admission control, carried over from the previous table while the model's limits stay the
    /// same (so a reload neither forgets admitted requests nor the queue).
    pub admission: Arc<Admission>,
    /// Per-tenant token buckets, for a model with a token limit (carried over like `admission`).
    pub tokens: Option<Arc<TokenLimits>>,
    /// Versions, by [`VersionId`].
    pub versions: Vec<VersionRoute>,
}

/// One model version's part of the table.
#[derive(Debug)]
pub struct VersionRoute {
    /// Its endpoints by locality, and the pick.
    pub cluster: Arc<Cluster>,
    /// The metric series its requests touch.
    pub series: VersionSeries,
    /// TLS to its backends (`None`: plaintext).
    pub tls: Option<Arc<UpstreamTls>>,
    /// `meridian_upstream_attempts_total` of each endpoint, by outcome (success, server error,
    /// gateway failure), resolved here so a try does no label lookup.
    pub attempts: foldhash::HashMap<SocketAddr, [IntCounter; 3]>,
    /// The hold for requests while it has no ready endpoint, for a version that scales from zero
    /// (carried over like admission while its scale settings stay the same).
    pub activator: Option<Arc<Activator>>,
}

/// Why a table could not be built for this gateway from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The gateway's region is gone from the config.
    #[error("region `{0}` is not in the config")]
    UnknownRegion(String),
    /// The region has no gateway section.
    #[error("region `{0}` has no gateway section")]
    NoGateway(String),
    /// The gateway's zone is not one of its region's.
    #[error("zone `{zone}` is not a zone of region `{region}`")]
    ZoneNotInRegion {
        /// The zone asked for.
        zone: String,
        /// The gateway's region.
        region: String,
    },
    /// A version's upstream CA does not load.
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsError),
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

    /// A model's config entry and its part of the table.
    pub fn model(&self, m: ModelId) -> (&ModelEntry, &ModelRoute) {
        (&self.snap.models[m], &self.models[m])
    }

    /// A version's part of the table.
    pub fn version(&self, m: ModelId, v: VersionId) -> &VersionRoute {
        &self.models[m].versions[v]
    }

    /// Every version's part of the table, with its model and version index.
    pub fn versions(&self) -> impl Iterator<Item = (ModelId, VersionId, &VersionRoute)> {
        self.models
            .iter()
            .enumerate()
            .flat_map(|(m, model)| model.versions.iter().enumerate().map(move |(v, route)| (m, v, route)))
    }

    /// Sends on the requests held for versions that now have an endpoint ready (called after
    /// anything that can make one ready: a new table, the control feed, a health check).
    pub fn release_ready(&self) {
        for (_, _, route) in self.versions() {
            if let Some(a) = &route.activator {
                if route.cluster.endpoints().any(|e| e.available()) {
                    a.release();
                }
            }
        }
    }

    /// The address of every endpoint in the table (the registry keeps these and forgets the rest).
    pub fn addresses(&self) -> HashSet<SocketAddr> {
        self.versions()
            .flat_map(|(_, _, route)| route.cluster.endpoints().map(|e| e.address))
            .collect()
    }
}

/// Builds tables for one gateway: where it runs, and the long-lived state tables point into.
#[derive(Clone, Copy)]
pub struct Builder<'a> {
    /// The gateway's region.
    pub region: &'a str,
    /// Its zone, when known.
    pub zone: Option<&'a str>,
    /// Endpoint states, shared across tables.
    pub registry: &'a Registry,
    /// Metric families the tables' series come from.
    pub metrics: &'a Metrics,
}

impl Builder<'_> {
    /// The table for `snap`, taking over admission state from `prev` and merging the endpoints the
    /// control loop's `feed` adds.
    pub fn build(
        &self,
        snap: Arc<Snapshot>,
        generation: u64,
        prev: Option<&Routes>,
        feed: Option<&FeedState>,
    ) -> Result<Routes, BuildError> {
        let region = self.region;
        let r = snap
            .region(region)
            .ok_or_else(|| BuildError::UnknownRegion(region.into()))?;
        if snap.config.regions[r].gateway.is_none() {
            return Err(BuildError::NoGateway(region.into()));
        }
        let zone = match self.zone {
            Some(z) => match snap.zone(z) {
                Some(id) if snap.zones[id].region == r => Some(id),
                _ => {
                    return Err(BuildError::ZoneNotInRegion {
                        zone: z.into(),
                        region: region.into(),
                    })
                }
            },
            None => None,
        };
        let origin = Origin { region: r, zone };
        let models = snap
            .models
            .iter()
            .enumerate()
            .map(|(m, entry)| {
                let limits = &entry.policy.limits;
                let admission = prev
                    .and_then(|p| {
                        let i = p.snap.model(&entry.name)?;
                        Some(p.models[i].admission.clone()).filter(|a| a.same_limits(limits))
                    })
                    .unwrap_or_else(|| Arc::new(Admission::new(limits)));
                let versions = entry
                    .versions
                    .iter()
                    .enumerate()
                    .map(|(v, version)| {
                        let merged = with_feed(&snap, &entry.name, &version.name, &version.endpoints, feed);
                        let c = Cluster::build(&snap, origin, &merged, self.registry, &entry.policy.locality);
                        let attempts = c
                            .endpoints()
                            .map(|e| {
                                let labels = |outcome| [&*entry.name, &*version.name, &*e.id, outcome];
                                let series = OUTCOMES.map(|o| self.metrics.attempts.with_label_values(&labels(o)));
                                (e.address, series)
                            })
                            .collect();
                        let activator = version.scale.as_ref().map(|sc| {
                            prev.and_then(|p| {
                                let m = p.snap.model(&entry.name)?;
                                let v = p.snap.models[m].version(&version.name)?;
                                p.models[m].versions[v].activator.clone()
                            })
                            .filter(|a| a.same_scale(sc))
                            .unwrap_or_else(|| Arc::new(Activator::new(sc)))
                        });
                        Ok(VersionRoute {
                            attempts,
                            activator,
                            cluster: Arc::new(cluster(c, entry, limits.per_endpoint_concurrency)),
                            series: self.metrics.version_series(&entry.name, &version.name),
                            tls: UpstreamTls::load(&snap, m, v)?,
                        })
                    })
                    .collect::<Result<_, BuildError>>()?;
                let tokens = entry.llm.as_ref().and_then(|l| l.token_limit.as_ref()).map(|t| {
                    let burst = t.burst.unwrap_or(t.tokens_per_minute);
                    prev.and_then(|p| p.snap.model(&entry.name).and_then(|i| p.models[i].tokens.clone()))
                        .filter(|b| b.same_limit(t.tokens_per_minute, burst))
                        .unwrap_or_else(|| Arc::new(TokenLimits::new(t.tokens_per_minute, burst)))
                });
                Ok(ModelRoute {
                    admission,
                    tokens,
                    versions,
                })
            })
            .collect::<Result<_, BuildError>>()?;
        let held_body_max = snap.models.iter().map(held_body).max().unwrap_or(0);
        Ok(Routes {
            snap,
            generation,
            origin,
            models,
            held_body_max,
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
            grpc_port: e.grpc_port,
            region,
            zone,
            weight: 1,
        });
    }
    all
}

/// A version's cluster with its model's balancer, LLM routing state and per-endpoint limit.
fn cluster(c: Cluster, entry: &ModelEntry, max_in_flight: u32) -> Cluster {
    let c = c.with_max_in_flight(max_in_flight).with_balancer(entry.balancer);
    match &entry.llm {
        Some(policy) => c.with_llm(policy),
        None => c,
    }
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
            grpc_port: None,
            model: "m".into(),
            version: "v1".into(),
            region: "r".into(),
            zone: zone.into(),
            ready: true,
            headroom: Some(0.5),
            server: None,
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
            ..FeedState::default()
        };
        let (registry, metrics) = (Registry::default(), Metrics::default());
        let builder = Builder {
            region: "r",
            zone: Some("r-a"),
            registry: &registry,
            metrics: &metrics,
        };
        let routes = builder.build(snap, 1, None, Some(&feed)).unwrap();
        let cluster = &routes.version(0, 0).cluster;
        let mut ids: Vec<_> = cluster.endpoints().map(|e| e.id.to_string()).collect();
        ids.sort();
        // The configured address keeps its configured id; the discovered one joins in its zone's
        // level; one in an unknown zone is left out.
        assert_eq!(ids, ["k1", "s1"]);
        assert_eq!(cluster.levels[1].members.len(), 1);
    }
}
