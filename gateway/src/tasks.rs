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

use crate::outlier::Detector;
use crate::state::Gateway;

/// The background service.
pub struct Tasks {
    /// Shared gateway state.
    pub gw: Arc<Gateway>,
    /// The server's execution phases: a graceful upgrade hands the admin listener over at once.
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
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
            tokio::spawn(crate::feed::subscribe(gw.clone())),
        ];
        let admin = tokio::spawn(crate::admin::serve(gw.clone()));
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
        stop(&gw, handles, admin).await;
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

/// The end of a graceful stop: listeners are closed (pingora did that); requests in progress get
/// the configured grace to finish, then the process exits without waiting out the rest of it.
async fn stop(gw: &Gateway, tasks: Vec<tokio::task::JoinHandle<()>>, admin: tokio::task::JoinHandle<()>) {
    let grace = {
        let routes = gw.routes.load();
        routes.gateway_spec().map_or(Duration::ZERO, |g| g.shutdown_grace.get())
    };
    tracing::info!(in_progress = gw.drain.active(), ?grace, "draining");
    if gw.drain.until_idle(grace).await {
        tracing::info!("drained: every request in progress finished");
    } else {
        tracing::warn!(
            in_progress = gw.drain.active(),
            "grace period over: cutting the requests still in progress"
        );
    }
    for h in tasks {
        h.abort();
    }
    admin.abort();
    gw.access_log.flush(Duration::from_secs(2));
    if let Some(t) = &gw.telemetry {
        t.shutdown(Duration::from_secs(2));
    }
    std::process::exit(0);
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
        gw.reload_changed_certificates();
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
