//! Process signals, replacing pingora's default watcher so a stop starts with a drain window:
//! readiness turns false and responses close their connections while the listeners still accept,
//! so clients' keep-alive pools leave before the sockets close instead of racing a closing one.
//!
//! - SIGTERM: drain window (`shutdown_delay`), then listeners close and requests in progress
//!   get `shutdown_grace` to finish.
//! - SIGQUIT: graceful upgrade; the window is pingora's own while the new process takes the sockets.
//! - SIGINT: immediate stop.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::lifecycle::Lifecycle;
use crate::routes::Routing;

/// The gateway's signal watcher.
pub struct Signals {
    /// Started on SIGTERM and SIGQUIT.
    pub lifecycle: Arc<Lifecycle>,
    /// Where the drain window (`shutdown_delay`) is read from.
    pub routing: Arc<Routing>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => {
                self.lifecycle.begin();
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                self.lifecycle.begin();
                let delay = {
                    let routes = self.routing.routes.load();
                    routes.gateway_spec()
                        .map_or(std::time::Duration::ZERO, |g| g.shutdown_delay.get())
                };
                tracing::info!(?delay, "SIGTERM: draining connections before closing the listeners");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => ShutdownSignal::GracefulTerminate,
                    _ = int.recv() => ShutdownSignal::FastShutdown,
                }
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
