//! The gateway's routing table: one compiled config snapshot plus, for every model version, its
//! endpoints grouped by locality as seen from this gateway. Built off the request path on each
//! (re)load and swapped whole through arc-swap.

use std::sync::Arc;

use meridian_config::Snapshot;

use crate::admission::Admission;
use crate::cluster::{Cluster, Origin};
use crate::endpoint::Registry;
use crate::metrics::{Metrics, VersionSeries};

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
    /// Builds the table for a gateway in `region` (and `zone`, when known).
    pub fn build(
        snap: Arc<Snapshot>,
        generation: u64,
        region: &str,
        zone: Option<&str>,
        registry: &Registry,
        metrics: &Metrics,
        prev: Option<&Routes>,
    ) -> Result<Routes, String> {
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
                        let c = Cluster::build(&snap, origin, &v.endpoints, registry, &m.policy.locality);
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
