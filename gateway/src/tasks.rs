//! Background work of a gateway, off the request path: health checks, the outlier detection
//! interval, reload triggers (file change, SIGHUP) and the admin listener. Runs as a pingora
//! background service so it shares the server's lifecycle.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

use meridian_gateway_core::outlier::Detector;

use crate::accesslog::AccessLog;
use crate::admin::AdminApi;
use crate::drain::Drain;
use crate::health::Checker;
use crate::metrics::Metrics;
use crate::reloader::Reloader;
use crate::routes::Routing;
use crate::telemetry::Telemetry;

/// The background service.
pub struct Tasks {
    /// The current table.
    pub routing: Arc<Routing>,
    /// Active health checks.
    pub checker: Arc<Checker>,
    /// The outlier detection interval.
    pub outliers: Arc<OutlierInterval>,
    /// Config and certificate reloads, and the state feed's target.
    pub reloader: Arc<Reloader>,
    /// The admin API.
    pub admin: Arc<AdminApi>,
    /// Requests in progress, waited for at the end.
    pub drain: Arc<Drain>,
    /// Flushed at the end.
    pub access_log: Arc<AccessLog>,
    /// Flushed at the end.
    pub telemetry: Option<Arc<Telemetry>>,
    /// The server's execution phases: a graceful upgrade hands the admin listener over at once.
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

/// What the outlier detection interval reads and writes.
pub struct OutlierInterval {
    /// Clusters and their outlier settings, endpoint states and the detector.
    pub routing: Arc<Routing>,
    /// `meridian_endpoint_ejections_total`.
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for Tasks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let handles = vec![
            tokio::spawn(self.checker.clone().supervise()),
            tokio::spawn(self.outliers.clone().run()),
            tokio::spawn(watch_file(self.reloader.clone())),
            tokio::spawn(on_sighup(self.reloader.clone())),
            tokio::spawn(crate::subscription::subscribe(
                self.routing.clone(),
                self.reloader.clone(),
            )),
        ];
        let admin = tokio::spawn(crate::admin::serve(self.admin.clone()));
        let mut phases = self.phases.lock().take();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                phase = next_phase(&mut phases) => {
                    if matches!(phase, ExecutionPhase::GracefulUpgradeTransferringFds) {
                        tracing::info!("graceful upgrade: handing the listeners to the new process");
                        admin.abort();
                    }
                }
            }
        }
        self.stop(handles, admin).await;
    }
}

async fn next_phase(phases: &mut Option<broadcast::Receiver<ExecutionPhase>>) -> ExecutionPhase {
    loop {
        match phases {
            Some(rx) => match rx.recv().await {
                Ok(p) => return p,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => *phases = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}

impl Tasks {
    /// The end of a graceful stop: listeners are closed (pingora did that); requests in progress
    /// get the configured grace to finish, then the process exits without waiting out the rest.
    async fn stop(&self, tasks: Vec<tokio::task::JoinHandle<()>>, admin: tokio::task::JoinHandle<()>) {
        let grace = {
            let routes = self.routing.routes.load();
            routes.gateway_spec().map_or(Duration::ZERO, |g| g.shutdown_grace.get())
        };
        tracing::info!(in_progress = self.drain.active(), ?grace, "draining");
        if self.drain.until_idle(grace).await {
            tracing::info!("drained: every request in progress finished");
        } else {
            tracing::warn!(
                in_progress = self.drain.active(),
                "grace period over: cutting the requests still in progress"
            );
        }
        for h in tasks {
            h.abort();
        }
        admin.abort();
        self.access_log.flush(Duration::from_secs(2));
        if let Some(t) = &self.telemetry {
            t.shutdown(Duration::from_secs(2));
        }
        std::process::exit(0);
    }
}

impl OutlierInterval {
    /// Every interval: ejections end, multipliers decay, success-rate ejection runs.
    async fn run(self: Arc<Self>) {
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

/// Reloads when the config file's content changes. Polling the content (not inotify) also follows
/// Kubernetes ConfigMap updates, which swap a symlink rather than write the file.
async fn watch_file(reloader: Arc<Reloader>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if reloader.file_changed() {
            let _ = reloader.reload();
        }
        reloader.reload_changed_certificates();
    }
}

async fn on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config");
        let _ = reloader.reload();
    }
}
