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

use crate::gateway::Gateway;
use crate::reloader::Reloader;

/// The background service: it starts each background part from the gateway's parts (each part
/// gets only what it uses) and ends the process after a graceful stop.
pub struct Tasks {
    /// The process's parts.
    pub gw: Arc<Gateway>,
    /// The server's execution phases: a graceful upgrade hands the admin listener over at once.
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for Tasks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let gw = &self.gw;
        let handles = vec![
            tokio::spawn(Arc::new(gw.checker()).supervise()),
            tokio::spawn(Arc::new(gw.outliers()).run()),
            tokio::spawn(watch_file(gw.reloader.clone())),
            tokio::spawn(on_sighup(gw.reloader.clone())),
            tokio::spawn(crate::subscription::subscribe(
                gw.proxy.routing.clone(),
                gw.reloader.clone(),
            )),
        ];
        let admin = tokio::spawn(crate::admin::serve(Arc::new(gw.admin())));
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
            let routes = self.gw.proxy.routing.routes.load();
            routes.gateway_spec().map_or(Duration::ZERO, |g| g.shutdown_grace.get())
        };
        tracing::info!(in_progress = self.gw.proxy.lifecycle.active(), ?grace, "draining");
        if self.gw.proxy.lifecycle.until_idle(grace).await {
            tracing::info!("drained: every request in progress finished");
        } else {
            tracing::warn!(
                in_progress = self.gw.proxy.lifecycle.active(),
                "grace period over: cutting the requests still in progress"
            );
        }
        for h in tasks {
            h.abort();
        }
        admin.abort();
        self.gw.proxy.access_log.flush(Duration::from_secs(2));
        if let Some(t) = &self.gw.proxy.telemetry {
            t.shutdown(Duration::from_secs(2));
        }
        std::process::exit(0);
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
