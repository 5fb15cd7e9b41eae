//! The outlier detection interval (Envoy's): every interval, ejections that ran their time end,
//! the ejection multiplier of endpoints that stayed in decays, and success-rate ejection runs per
//! cluster. The decisions are the core's ([`meridian_gateway_core::outlier::Detector`]); this task
//! only keeps time and counts ejections.

use std::sync::Arc;
use std::time::Duration;

use meridian_gateway_core::outlier::Detector;

use crate::metrics::Metrics;
use crate::routes::Routing;

/// What the outlier detection interval reads and writes.
pub struct OutlierInterval {
    /// Clusters and their outlier settings, endpoint states and the detector.
    pub routing: Arc<Routing>,
    /// `meridian_endpoint_ejections_total`.
    pub metrics: Arc<Metrics>,
}

impl OutlierInterval {
    /// Every interval: ejections end, multipliers decay, success-rate ejection runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            let routes = self.routing.routes.load_full();
            let interval = routes
                .snap
                .models
                .iter()
                .map(|m| m.policy.outlier_detection.interval.get())
                .min()
                .unwrap_or(Duration::from_secs(10));
            tokio::time::sleep(interval).await;
            let now = self.routing.clock.now();
            let all = self.routing.registry.all();
            for ep in &all {
                self.routing.detector.tick_endpoint(&self.routing.registry, ep, now);
            }
            for (m, _, version) in routes.versions() {
                let cfg = &routes.snap.models[m].policy.outlier_detection;
                let members: Vec<_> = version.cluster.endpoints().collect();
                for e in self
                    .routing
                    .detector
                    .tick_cluster(&self.routing.registry, &members, now, cfg)
                {
                    tracing::warn!(endpoint = %e.id, "endpoint ejected for its success rate");
                    self.metrics.ejections.with_label_values(&[&e.id, "success_rate"]).inc();
                }
            }
            for ep in &all {
                Detector::reset_interval(ep);
            }
        }
    }
}
