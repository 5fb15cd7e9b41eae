//! Reloads: the config file re-read (file change, SIGHUP, admin `POST /reload`) or the control
//! loop's state changing, each compiled into a new routing table and swapped in whole. An invalid
//! file or a table that does not fit this gateway is rejected and the current table keeps serving;
//! counters and the last error say so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::feed::FeedState;
use meridian_config::{ConfigErrors, ConfigFile, Snapshot};
use meridian_gateway_core::endpoint::flags;
use meridian_gateway_core::llm::state::{Lora, ServerStats};
use parking_lot::Mutex;

use crate::certs::Certificates;
use crate::feed::FeedView;
use crate::metrics::Metrics;
use crate::routes::{BuildError, Builder, Routes, Routing};

/// A reload that did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The file is valid but does not fit this gateway (its region is gone, say).
    #[error(transparent)]
    Unfit(#[from] BuildError),
}

/// How reloads went, for the admin API.
#[derive(Clone, Debug, Default)]
pub struct ReloadStats {
    /// Successful reloads since start.
    pub ok: u64,
    /// Rejected reloads since start.
    pub failed: u64,
    /// Why the last reload was rejected, if it was (the newest of `recent`).
    pub last_error: Option<String>,
    /// The last reloads, newest first (at most [`RECENT_RELOADS`]).
    pub recent: Vec<ReloadEvent>,
}

/// How many reloads [`ReloadStats::recent`] keeps.
pub const RECENT_RELOADS: usize = 10;

/// One reload of the config file, for the status page.
#[derive(Clone, Debug)]
pub struct ReloadEvent {
    /// When, in Unix seconds.
    pub at: f64,
    /// The generation it installed (`None`: rejected).
    pub generation: Option<u64>,
    /// Why it was rejected.
    pub error: Option<String>,
}

/// Owns the config file, the snapshot as loaded, the reload counters and the listeners'
/// certificates; builds and installs routing tables.
pub struct Reloader {
    file: ConfigFile,
    region: String,
    zone: Option<String>,
    /// The config as loaded, before canary weights from control rewrite its rules.
    loaded: ArcSwap<Snapshot>,
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    feed: Arc<FeedView>,
    ok: AtomicU64,
    failed: AtomicU64,
    recent: Mutex<std::collections::VecDeque<ReloadEvent>>,
    started_at: f64,
    /// The TLS listeners' certificates.
    pub certificates: Certificates,
    /// One reload at a time (file watch, SIGHUP, admin and feed may race).
    one_at_a_time: Mutex<()>,
}

/// What a [`Reloader`] is made of.
pub struct Parts {
    /// The config file.
    pub file: ConfigFile,
    /// Its first load.
    pub loaded: Arc<Snapshot>,
    /// The gateway's region.
    pub region: String,
    /// Its zone, when known.
    pub zone: Option<String>,
    /// Where the current table lives, and the endpoint states it points into.
    pub routing: Arc<Routing>,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// The control loop's last state.
    pub feed: Arc<FeedView>,
}

impl Reloader {
    /// A reloader over the given parts; `parts.routes` already holds the first table.
    pub fn new(parts: Parts) -> Reloader {
        let started_at = parts.routing.clock.unix_f64();
        Reloader {
            file: parts.file,
            region: parts.region,
            zone: parts.zone,
            loaded: ArcSwap::new(parts.loaded),
            routing: parts.routing,
            metrics: parts.metrics,
            feed: parts.feed,
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            recent: Mutex::default(),
            started_at,
            certificates: Certificates::default(),
            one_at_a_time: Mutex::new(()),
        }
    }

    /// The gateway's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// When the gateway loaded its first config, in Unix seconds.
    pub fn started_at(&self) -> f64 {
        self.started_at
    }

    /// The gateway's zone, when known.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// How reloads went so far.
    pub fn stats(&self) -> ReloadStats {
        let recent = self.recent.lock();
        ReloadStats {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_error: recent.front().and_then(|e| e.error.clone()),
            recent: recent.iter().cloned().collect(),
        }
    }

    fn remember(&self, generation: Option<u64>, error: Option<String>) {
        let mut recent = self.recent.lock();
        recent.truncate(RECENT_RELOADS - 1);
        recent.push_front(ReloadEvent {
            at: self.routing.clock.unix_f64(),
            generation,
            error,
        });
    }

    /// Whether the file on disk differs from what was last read.
    pub fn file_changed(&self) -> bool {
        self.file.changed()
    }

    /// Reloads the listeners' certificates if their files changed on disk.
    pub fn reload_changed_certificates(&self) {
        self.certificates.reload_changed(&self.routing.routes.load());
    }

    /// Re-reads the config file and swaps in a new routing table; on any error the current table
    /// keeps serving. Returns the new generation.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let _one = self.one_at_a_time.lock();
        let built = self.file.load().map_err(ReloadError::Invalid).and_then(|snap| {
            let snap = Arc::new(snap);
            let routes = self.build(snap.clone())?;
            Ok((snap, routes))
        });
        match built {
            Ok((snap, routes)) => {
                self.loaded.store(snap);
                self.certificates.swap_in(&routes);
                let generation = self.install(routes);
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.remember(Some(generation), None);
                tracing::info!(generation, "config reloaded");
                Ok(generation)
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                self.remember(None, Some(e.to_string()));
                tracing::error!("config reload rejected, the previous config keeps serving:\n{e}");
                Err(e)
            }
        }
    }

    /// Takes in a new state from control: rebuilds the table when its endpoints or canary weights
    /// changed (the same config, more or fewer endpoints), then sets readiness, drains and GPU
    /// headroom.
    pub fn apply_feed(&self, state: FeedState) {
        let state = Arc::new(state);
        let prev = self.feed.record(state.clone(), self.routing.clock.now());
        let same =
            |p: &FeedState| p.same_membership(&state) && p.same_canary_weights(&state) && p.models == state.models;
        if !prev.is_some_and(|p| same(&p)) {
            let _one = self.one_at_a_time.lock();
            match self.build(self.loaded.load_full()) {
                Ok(routes) => {
                    let generation = self.install(routes);
                    tracing::info!(generation, "endpoints from control changed; routing table rebuilt");
                }
                Err(e) => tracing::error!("state from control not applied, the current table keeps serving: {e}"),
            }
        }
        for e in &state.endpoints {
            let Some(ep) = self.routing.registry.by_address(e.address) else {
                continue;
            };
            ep.set_headroom(e.headroom.unwrap_or(1.0));
            if let Some(llm) = ep.llm() {
                llm.report(e.server.as_ref().map(server_stats).as_ref());
            }
            self.routing.registry.set_flag(&ep, flags::NOT_READY, !e.ready);
            self.routing.registry.set_flag(&ep, flags::CONTROL_DRAINED, e.drained);
        }
        self.routing.routes.load().release_ready();
    }

    /// A new table from `snap` and the current feed, carrying state over from the current table.
    fn build(&self, snap: Arc<Snapshot>) -> Result<Routes, BuildError> {
        let current = self.routing.routes.load_full();
        let feed = self.feed.current();
        // Models control discovered join the config's, and canary plans run by control move their
        // rules' weights: compile the config so rewritten.
        let snap = match feed
            .as_deref()
            .filter(|f| !f.canaries.is_empty() || !f.models.is_empty())
        {
            Some(f) => {
                let mut config = snap.config.clone();
                meridian_config::feed::apply_models(&mut config, &f.models);
                meridian_config::feed::apply_canaries(&mut config, &f.canaries);
                Arc::new(Snapshot::compile(meridian_config::Loaded {
                    config,
                    file: snap.file.clone(),
                    base_dir: snap.base_dir.clone(),
                }))
            }
            None => snap,
        };
        let builder = Builder {
            region: &self.region,
            zone: self.zone.as_deref(),
            registry: &self.routing.registry,
            metrics: &self.metrics,
        };
        builder.build(snap, current.generation + 1, Some(&current), feed.as_deref())
    }

    /// Swaps in a built table and forgets endpoints no table uses any more; returns its generation.
    fn install(&self, routes: Routes) -> u64 {
        let generation = routes.generation;
        let keep = routes.addresses();
        let routes = Arc::new(routes);
        self.routing.routes.store(routes.clone());
        self.routing.registry.retain(&keep);
        routes.release_ready();
        generation
    }
}
/// The LLM-aware pick's view of a model server's report from control.
fn server_stats(r: &meridian_config::feed::ServerReport) -> ServerStats {
    ServerStats {
        waiting: r.waiting,
        running: r.running,
        kv_usage: r.kv_usage,
        lora: Lora {
            running: r.lora_running.iter().map(|a| a.as_str().into()).collect(),
            waiting: r.lora_waiting.iter().map(|a| a.as_str().into()).collect(),
            max: r.max_lora,
        },
        kv_tokens: r.kv_tokens,
    }
}
