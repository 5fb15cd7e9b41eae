//! The gateway's shared state: the current routing table and everything that outlives it
//! (endpoint states, outlier detector, retry budget), plus reload.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::{ConfigErrors, ConfigFile};
use parking_lot::Mutex;

use crate::accesslog::AccessLog;
use crate::budget::RetryBudget;
use crate::clock::Clock;
use crate::endpoint::{flags, Registry};
use crate::metrics::Metrics;
use crate::outlier::Detector;
use crate::routes::{Carry, Routes};

/// Everything the proxy, the admin API and the background tasks share.
pub struct Gateway {
    /// Config file, re-read on reload.
    pub config: ConfigFile,
    /// Region this gateway serves.
    pub region: String,
    /// Zone this gateway runs in, when known.
    pub zone: Option<String>,
    /// The current routing table; readers load it without locking.
    pub routes: ArcSwap<Routes>,
    /// The config as loaded, before canary weights from control rewrite its rules.
    config_snap: ArcSwap<meridian_config::Snapshot>,
    /// Endpoint states, by address.
    pub registry: Registry,
    /// Outlier detection.
    pub detector: Detector,
    /// Retry budget.
    pub budget: Arc<RetryBudget>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Successful reloads since start.
    pub reloads_ok: AtomicU64,
    /// Rejected reloads since start.
    pub reloads_failed: AtomicU64,
    /// Why the last reload was rejected, if it was.
    pub last_reload_error: Mutex<Option<String>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Certificate resolvers of the TLS listeners, by listener name, swapped on reload.
    pub tls: Mutex<Vec<(String, Arc<crate::tls::SniResolver>)>>,
    /// Access log sink.
    pub access_log: AccessLog,
    /// Trace export, when configured (read at start).
    pub telemetry: Option<crate::telemetry::Telemetry>,
    /// HTTP client for mirrored requests.
    pub shadow_client: reqwest::Client,
    /// Set once the first active health check round finished.
    pub ready: AtomicBool,
    /// Requests in progress, for a graceful stop.
    pub drain: Arc<crate::drain::Drain>,
    /// (path, modified, size) of the listeners' certificate and key files as last seen, so
    /// certificates renewed on disk (cert-manager, a mounted Secret) load without a config change.
    tls_files: Mutex<Vec<(std::path::PathBuf, Option<std::time::SystemTime>, u64)>>,
    /// The last good state from the region's control loop (kept while control is unreachable).
    pub feed: arc_swap::ArcSwapOption<meridian_config::feed::FeedState>,
    /// When the feed last answered, Unix milliseconds (0: never).
    pub feed_ok_at: AtomicU64,
    reload_lock: Mutex<()>,
}

/// A reload that did not take effect.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is invalid.
    Invalid(ConfigErrors),
    /// The file is valid but does not fit this gateway (its region is gone, say).
    Unfit(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(e) => write!(f, "{e}"),
            ReloadError::Unfit(e) => f.write_str(e),
        }
    }
}

impl Gateway {
    /// Loads the config and builds the first routing table.
    pub fn start(
        path: &Path,
        region: Option<&str>,
        zone: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Gateway> {
        let config = ConfigFile::new(path);
        let snap = config.load().map_err(|e| {
            anyhow::anyhow!(
                "invalid config:
{e}"
            )
        })?;
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
        let registry = Registry::default();
        let metrics = Metrics::new();
        let telemetry = crate::telemetry::Telemetry::start(&snap.config.observability.tracing)?;
        let snap = Arc::new(snap);
        let config_snap = ArcSwap::new(snap.clone());
        let routes =
            Routes::build(snap, 1, &region, zone, &registry, &metrics, Carry::default()).map_err(anyhow::Error::msg)?;
        Ok(Gateway {
            config,
            region,
            zone: zone.map(str::to_string),
            routes: ArcSwap::from_pointee(routes),
            config_snap,
            registry,
            detector: Detector::default(),
            budget: Arc::new(RetryBudget::default()),
            clock,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            metrics,
            tls: Mutex::new(Vec::new()),
            access_log: AccessLog::stdout(),
            telemetry,
            shadow_client: reqwest::Client::new(),
            ready: AtomicBool::new(false),
            drain: Arc::default(),
            tls_files: Mutex::new(Vec::new()),
            feed: arc_swap::ArcSwapOption::empty(),
            feed_ok_at: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
        })
    }

    /// Swaps in the TLS listeners' certificates of a new config (listeners themselves need a restart).
    fn reload_certificates(&self, routes: &Routes) {
        let Some(gw) = routes.gateway_spec() else {
            return;
        };
        for (name, resolver) in self.tls.lock().iter() {
            let Some(tls) = gw
                .listeners
                .iter()
                .find(|l| &l.name == name)
                .and_then(|l| l.tls.as_ref())
            else {
                continue;
            };
            match crate::tls::CertSet::load(tls, &routes.snap.base_dir) {
                Ok(set) => resolver.certs.store(Arc::new(set)),
                Err(e) => {
                    tracing::error!(listener = %name, "certificates not reloaded, the previous ones keep serving: {e}")
                }
            }
        }
    }

    /// Reloads the TLS listeners' certificates when one of their files changed on disk since the
    /// last look (the first look only records them). A file that does not load leaves the
    /// previous certificates serving.
    pub fn reload_changed_certificates(&self) {
        let routes = self.routes.load_full();
        let Some(gw) = routes.gateway_spec() else {
            return;
        };
        let now: Vec<_> = gw
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.certificates.iter().flat_map(|c| [&c.cert, &c.key]))
            .map(|p| {
                let path = routes.snap.base_dir.join(p);
                let meta = std::fs::metadata(&path).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                (path, modified, meta.map_or(0, |m| m.len()))
            })
            .collect();
        let changed = {
            let mut seen = self.tls_files.lock();
            let changed = !seen.is_empty() && *seen != now;
            *seen = now;
            changed
        };
        if changed {
            tracing::info!("certificate files changed on disk: reloading them");
            self.reload_certificates(&routes);
        }
    }

    /// Whether the file on disk differs from what was last read.
    pub fn file_changed(&self) -> bool {
        self.config.changed()
    }

    /// Re-reads the config file and swaps in a new routing table; on any error the current table
    /// keeps serving. Returns the new generation.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock();
        let built = self.config.load().map_err(ReloadError::Invalid).and_then(|snap| {
            let snap = Arc::new(snap);
            let routes = self.build(snap.clone()).map_err(ReloadError::Unfit)?;
            Ok((snap, routes))
        });
        match built {
            Ok((snap, routes)) => {
                self.config_snap.store(snap);
                self.install(Ok(routes), true)
            }
            Err(e) => self.install(Err(e), true),
        }
    }

    /// A new table from `snap` and the current feed, carrying state over from the current table.
    fn build(&self, snap: Arc<meridian_config::Snapshot>) -> Result<Routes, String> {
        let current = self.routes.load_full();
        let feed = self.feed.load_full();
        // Canary plans run by control move their rules' weights: compile the config so rewritten.
        let snap = match feed.as_deref().filter(|f| !f.canaries.is_empty()) {
            Some(f) => {
                let mut config = snap.config.clone();
                meridian_config::feed::apply_canaries(&mut config, &f.canaries);
                Arc::new(meridian_config::Snapshot::compile(meridian_config::Loaded {
                    config,
                    file: snap.file.clone(),
                    base_dir: snap.base_dir.clone(),
                }))
            }
            None => snap,
        };
        Routes::build(
            snap,
            current.generation + 1,
            &self.region,
            self.zone.as_deref(),
            &self.registry,
            &self.metrics,
            Carry {
                prev: Some(&current),
                feed: feed.as_deref(),
            },
        )
    }

    /// Takes in a new state from control: rebuilds the table when its endpoints changed (the
    /// same config, more or fewer endpoints), then sets readiness, drains and GPU headroom.
    pub fn apply_feed(&self, state: meridian_config::feed::FeedState) {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.feed_ok_at.store(unix_ms, Ordering::Relaxed);
        let state = Arc::new(state);
        let prev = self.feed.swap(Some(state.clone()));
        if !prev.is_some_and(|p| p.same_membership(&state) && p.canaries == state.canaries) {
            let _one_at_a_time = self.reload_lock.lock();
            let snap = self.config_snap.load_full();
            let _ = self.install(self.build(snap).map_err(ReloadError::Unfit), false);
        }
        for e in &state.endpoints {
            let Some(ep) = self.registry.by_address(e.address) else {
                continue;
            };
            ep.set_headroom(e.headroom.unwrap_or(1.0));
            self.registry.set_flag(&ep, flags::NOT_READY, !e.ready);
            self.registry.set_flag(&ep, flags::CONTROL_DRAINED, e.drained);
        }
    }

    /// Swaps in a built table; `config` tells a config reload (counted as one) from a feed change.
    fn install(&self, result: Result<Routes, ReloadError>, config: bool) -> Result<u64, ReloadError> {
        match result {
            Ok(routes) if !config => {
                let keep = routes
                    .clusters
                    .iter()
                    .flatten()
                    .flat_map(|c| c.endpoints().map(|e| e.address))
                    .collect();
                let generation = routes.generation;
                self.routes.store(Arc::new(routes));
                self.registry.retain(&keep);
                tracing::info!(generation, "endpoints from control changed; routing table rebuilt");
                Ok(generation)
            }
            Ok(routes) => {
                let generation = routes.generation;
                let keep = routes
                    .clusters
                    .iter()
                    .flatten()
                    .flat_map(|c| c.endpoints().map(|e| e.address))
                    .collect();
                self.reload_certificates(&routes);
                self.routes.store(Arc::new(routes));
                self.registry.retain(&keep);
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.metrics.reloads.with_label_values(&["success"]).inc();
                *self.last_reload_error.lock() = None;
                tracing::info!(generation, "config reloaded");
                Ok(generation)
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                *self.last_reload_error.lock() = Some(e.to_string());
                tracing::error!("config reload rejected, the previous config keeps serving:\n{e}");
                Err(e)
            }
        }
    }
}
