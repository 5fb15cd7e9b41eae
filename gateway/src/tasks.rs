//! Background work of a gateway, off the request path: health checks, the outlier detection
//! interval, reload triggers (file change, SIGHUP) and the admin listener. Runs as a pingora
//! background service so it shares the server's lifecycle.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::outlier::Detector;
use crate::state::Gateway;

/// The background service.
pub struct Tasks {
    /// Shared gateway state.
    pub gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for Tasks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let gw = self.gw.clone();
        let handles = vec![
            tokio::spawn(crate::health::supervise(gw.clone())),
            tokio::spawn(outlier_interval(gw.clone())),
            tokio::spawn(watch_file(gw.clone())),
            tokio::spawn(on_sighup(gw.clone())),
            tokio::spawn(crate::admin::serve(gw.clone())),
        ];
        let _ = shutdown.changed().await;
        for h in handles {
            h.abort();
        }
    }
}

/// The outlier detection interval: ejections end, multipliers decay, success-rate ejection runs.
async fn outlier_interval(gw: Arc<Gateway>) {
    loop {
        let routes = gw.routes.load_full();
        let interval = routes
            .snap
            .models
            .iter()
            .map(|m| m.policy.outlier_detection.interval.get())
            .min()
            .unwrap_or(Duration::from_secs(10));
        tokio::time::sleep(interval).await;
        let now = gw.clock.now();
        let all = gw.registry.all();
        for ep in &all {
            gw.detector.tick_endpoint(&gw.registry, ep, now);
        }
        for (m, versions) in routes.clusters.iter().enumerate() {
            let cfg = &routes.snap.models[m].policy.outlier_detection;
            for c in versions {
                let members: Vec<_> = c.endpoints().collect();
                for e in gw.detector.tick_cluster(&gw.registry, &members, now, cfg) {
                    tracing::warn!(endpoint = %e.id, "endpoint ejected for its success rate");
                    gw.metrics.ejections.with_label_values(&[&e.id, "success_rate"]).inc();
                }
            }
        }
        for ep in &all {
            Detector::reset_interval(ep);
        }
    }
}

/// Reloads when the config file's content changes. Polling the content (not inotify) also follows
/// Kubernetes ConfigMap updates, which swap a symlink rather than write the file.
async fn watch_file(gw: Arc<Gateway>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if gw.file_changed() {
            let _ = gw.reload();
        }
    }
}

async fn on_sighup(gw: Arc<Gateway>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config");
        let _ = gw.reload();
    }
}
