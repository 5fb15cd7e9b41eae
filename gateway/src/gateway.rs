//! A gateway process's parts, made once at start: the routing state (the table and the endpoint
//! state it points into), the services around it, and from them each consumer (the proxy, health
//! checks, the admin API, the background tasks), handed only what it uses. This is the one place
//! that sees all of them.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::ConfigFile;
use meridian_gateway_core::budget::RetryBudget;
use meridian_gateway_core::clock::Clock;
use meridian_gateway_core::endpoint::Registry;

use crate::accesslog::AccessLog;
use crate::admin::AdminApi;
use crate::exposition::Exposition;
use crate::feed::FeedView;
use crate::health::Checker;
use crate::metrics::Metrics;
use crate::outliers::OutlierInterval;
use crate::proxy::Proxy;
use crate::reloader::{self, Reloader};
use crate::routes::{Builder, Routing};
use crate::shadow::Mirror;
use crate::signals::Signals;
use crate::status::StatusSource;
use crate::telemetry::Telemetry;

/// Every long-lived part of one gateway process: the request path's parts (held by the proxy
/// service, which every other task borrows from) plus what only the process around it uses.
pub struct Gateway {
    /// What the request path reads and writes.
    pub proxy: Proxy,
    /// Config and certificate reloads.
    pub reloader: Arc<Reloader>,
    /// The Prometheus exposition (its gauges are registered once).
    pub exposition: Arc<Exposition>,
    /// The status page's sources.
    pub status: Arc<StatusSource>,
}

/// The one region with a gateway, when `region` is not given.
fn region_of(snap: &meridian_config::Snapshot, region: Option<&str>) -> anyhow::Result<String> {
    if let Some(r) = region {
        return Ok(r.to_string());
    }
    let with: Vec<_> = snap
        .config
        .regions
        .iter()
        .filter(|r| r.gateway.is_some())
        .map(|r| r.name.clone())
        .collect();
    match with.as_slice() {
        [one] => Ok(one.clone()),
        _ => anyhow::bail!(
            "pass --region: the config has gateways in {} regions ({})",
            with.len(),
            with.join(", ")
        ),
    }
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
        let region = region_of(&snap, region)?;
        let registry = Registry::default();
        let metrics = Arc::new(Metrics::default());
        let telemetry = Telemetry::start(&snap.config.observability.tracing)?.map(Arc::new);
        let builder = Builder {
            region: &region,
            zone,
            registry: &registry,
            metrics: &metrics,
        };
        let first = builder.build(snap.clone(), 1, None, None)?;
        let routing = Arc::new(Routing {
            routes: ArcSwap::from_pointee(first),
            registry,
            detector: Default::default(),
            clock,
        });
        let feed = Arc::new(FeedView::default());
        let budget = Arc::new(RetryBudget::default());
        let exposition = Arc::new(Exposition::new(
            routing.clone(),
            metrics.clone(),
            feed.clone(),
            budget.clone(),
        ));
        let status = Arc::new(StatusSource::new(metrics.clone(), feed.clone(), routing.clock.now()));
        let reloader = Arc::new(Reloader::new(reloader::Parts {
            file,
            loaded: snap,
            region,
            zone: zone.map(str::to_string),
            routing: routing.clone(),
            metrics: metrics.clone(),
            feed,
        }));
        let mirror = Mirror {
            client: reqwest::Client::new(),
            routing: routing.clone(),
        };
        let proxy = Proxy {
            routing,
            budget,
            metrics,
            access_log: Arc::new(AccessLog::stdout()),
            telemetry,
            lifecycle: Arc::default(),
            mirror: Arc::new(mirror),
            waker: Default::default(),
        };
        Ok(Gateway {
            proxy,
            reloader,
            exposition,
            status,
        })
    }

    /// The active health checker.
    pub fn checker(&self) -> Checker {
        Checker {
            routing: self.proxy.routing.clone(),
            lifecycle: self.proxy.lifecycle.clone(),
        }
    }

    /// The outlier detection interval.
    pub fn outliers(&self) -> OutlierInterval {
        OutlierInterval {
            routing: self.proxy.routing.clone(),
            metrics: self.proxy.metrics.clone(),
        }
    }

    /// The signal watcher.
    pub fn signals(&self) -> Signals {
        Signals {
            lifecycle: self.proxy.lifecycle.clone(),
            routing: self.proxy.routing.clone(),
        }
    }

    /// The admin API.
    pub fn admin(&self) -> AdminApi {
        AdminApi {
            routing: self.proxy.routing.clone(),
            reloader: self.reloader.clone(),
            lifecycle: self.proxy.lifecycle.clone(),
            exposition: self.exposition.clone(),
            status: self.status.clone(),
        }
    }
}
