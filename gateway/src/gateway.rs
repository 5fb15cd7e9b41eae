//! A gateway process's parts, made once at start: the routing table, the long-lived endpoint state
//! it points into, and the services around them. This is the one place that sees all of them; each
//! consumer (the proxy, health checks, the admin API, the background tasks) is handed only what it
//! uses.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::ConfigFile;
use meridian_gateway_core::budget::RetryBudget;
use meridian_gateway_core::clock::Clock;
use meridian_gateway_core::endpoint::Registry;
use meridian_gateway_core::outlier::Detector;
use pingora::server::ExecutionPhase;
use tokio::sync::broadcast;

use crate::accesslog::AccessLog;
use crate::admin::AdminApi;
use crate::drain::Drain;
use crate::exposition::Exposition;
use crate::feed::FeedView;
use crate::health::Checker;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reloader::{self, Reloader};
use crate::routes::{Builder, SharedRoutes};
use crate::shadow::Mirror;
use crate::signals::Signals;
use crate::tasks::{OutlierInterval, Tasks};
use crate::telemetry::Telemetry;

/// Every long-lived part of one gateway process.
pub struct Gateway {
    /// The current routing table.
    pub routes: SharedRoutes,
    /// Endpoint states, by address, outliving any one table.
    pub registry: Arc<Registry>,
    /// Outlier detection.
    pub detector: Arc<Detector>,
    /// Retry budget.
    pub budget: Arc<RetryBudget>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// The control loop's last good state.
    pub feed: Arc<FeedView>,
    /// Config and certificate reloads.
    pub reloader: Arc<Reloader>,
    /// Access log sink.
    pub access_log: Arc<AccessLog>,
    /// Trace export, when configured (read at start).
    pub telemetry: Option<Arc<Telemetry>>,
    /// Requests in progress, for a graceful stop.
    pub drain: Arc<Drain>,
    /// Set once the first active health check round finished.
    pub ready: Arc<AtomicBool>,
    /// Mirrored requests.
    pub mirror: Arc<Mirror>,
    /// The Prometheus exposition (its gauges are registered once).
    pub exposition: Arc<Exposition>,
}

impl Gateway {
    /// Loads the config and builds the first routing table for `region` (optional when the config
    /// has one gateway region) and `zone`.
    pub fn start(
        path: &Path,
        region: Option<&str>,
        zone: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Gateway> {
        let file = ConfigFile::new(path);
        let snap = Arc::new(file.load().map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?);
        let region = match region {
            Some(r) => r.to_string(),
            None => {
                let with: Vec<_> = snap
                    .config
                    .regions
                    .iter()
                    .filter(|r| r.gateway.is_some())
                    .map(|r| r.name.clone())
                    .collect();
                match with.as_slice() {
                    [one] => one.clone(),
                    _ => anyhow::bail!(
                        "pass --region: the config has gateways in {} regions ({})",
                        with.len(),
                        with.join(", ")
                    ),
                }
            }
        };
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new());
        let telemetry = Telemetry::start(&snap.config.observability.tracing)?.map(Arc::new);
        let builder = Builder {
            region: &region,
            zone,
            registry: &registry,
            metrics: &metrics,
        };
        let routes: SharedRoutes = Arc::new(ArcSwap::from_pointee(builder.build(snap.clone(), 1, None, None)?));
        let feed = Arc::new(FeedView::default());
        let reloader = Arc::new(Reloader::new(reloader::Parts {
            file,
            loaded: snap,
            region,
            zone: zone.map(str::to_string),
            routes: routes.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            feed: feed.clone(),
            clock: clock.clone(),
        }));
        let mirror = Arc::new(Mirror {
            client: reqwest::Client::new(),
            registry: registry.clone(),
            clock: clock.clone(),
        });
        let budget = Arc::new(RetryBudget::default());
        let exposition = Arc::new(Exposition::new(
            routes.clone(),
            metrics.clone(),
            feed.clone(),
            budget.clone(),
            registry.clone(),
            clock.clone(),
        ));
        Ok(Gateway {
            routes,
            registry,
            detector: Arc::default(),
            budget,
            clock,
            metrics,
            feed,
            reloader,
            access_log: Arc::new(AccessLog::stdout()),
            telemetry,
            drain: Arc::default(),
            ready: Arc::default(),
            mirror,
            exposition,
        })
    }

    /// The proxy service.
    pub fn proxy(&self) -> Proxy {
        Proxy {
            routes: self.routes.clone(),
            registry: self.registry.clone(),
            detector: self.detector.clone(),
            budget: self.budget.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            access_log: self.access_log.clone(),
            telemetry: self.telemetry.clone(),
            drain: self.drain.clone(),
            ready: self.ready.clone(),
            mirror: self.mirror.clone(),
        }
    }

    /// The active health checker.
    pub fn checker(&self) -> Checker {
        Checker {
            routes: self.routes.clone(),
            registry: self.registry.clone(),
            detector: self.detector.clone(),
            ready: self.ready.clone(),
        }
    }

    /// The background tasks (health checks, outlier interval, reloads, the state feed, the admin
    /// listener) and the end of a graceful stop.
    pub fn tasks(&self, phases: broadcast::Receiver<ExecutionPhase>) -> Tasks {
        Tasks {
            routes: self.routes.clone(),
            checker: Arc::new(self.checker()),
            outliers: Arc::new(OutlierInterval {
                routes: self.routes.clone(),
                registry: self.registry.clone(),
                detector: self.detector.clone(),
                metrics: self.metrics.clone(),
                clock: self.clock.clone(),
            }),
            reloader: self.reloader.clone(),
            admin: Arc::new(self.admin()),
            drain: self.drain.clone(),
            access_log: self.access_log.clone(),
            telemetry: self.telemetry.clone(),
            phases: parking_lot::Mutex::new(Some(phases)),
        }
    }

    /// The signal watcher.
    pub fn signals(&self) -> Signals {
        Signals {
            drain: self.drain.clone(),
            routes: self.routes.clone(),
        }
    }

    /// The admin API.
    pub fn admin(&self) -> AdminApi {
        AdminApi {
            routes: self.routes.clone(),
            reloader: self.reloader.clone(),
            registry: self.registry.clone(),
            clock: self.clock.clone(),
            drain: self.drain.clone(),
            ready: self.ready.clone(),
            exposition: self.exposition.clone(),
        }
    }
}
