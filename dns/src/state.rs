//! The DNS server's shared state: the compiled zones (swapped on reload) and each region's health,
//! which outlives reloads so a region's probe history is not reset by a config change.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use meridian_clock::{Clock, Nanos};
use meridian_config::{ConfigErrors, ConfigFile};

use crate::answer::Health;
use crate::metrics::DnsMetrics;
use crate::zones::{ZoneError, ZoneSet};

/// One region's health as this server sees it.
#[derive(Debug)]
pub struct RegionHealth {
    /// Whether GSLB answers may use the region.
    pub healthy: AtomicBool,
    /// Consecutive probe passes (positive) or failures (negative).
    pub streak: Mutex<i32>,
    /// Why the region is in its state (last probe outcome).
    pub reason: Mutex<String>,
    /// The latest control report: when it came (clock reading) and healthy endpoints per model.
    pub report: Mutex<Option<(Nanos, HashMap<String, u32>)>>,
    /// Clock reading, plus one, of when the region's control state feed last answered (0: never).
    feed_ok: AtomicU64,
}

impl Default for RegionHealth {
    fn default() -> Self {
        RegionHealth {
            healthy: AtomicBool::new(true),
            streak: Mutex::new(0),
            reason: Mutex::new("not probed yet".into()),
            report: Mutex::new(None),
            feed_ok: AtomicU64::new(0),
        }
    }
}

impl RegionHealth {
    /// Records that the region's state feed answered at `now`.
    pub fn feed_answered(&self, now: Nanos) {
        self.feed_ok.store(now.saturating_add(1), Ordering::Relaxed);
    }

    /// Seconds since the feed last answered at `now`, or `None` before it ever did.
    pub fn feed_staleness(&self, now: Nanos) -> Option<f64> {
        match self.feed_ok.load(Ordering::Relaxed) {
            0 => None,
            at => Some(now.saturating_sub(at - 1) as f64 / 1e9),
        }
    }
}

/// A reload that did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The DNS section does not compile to zones.
    #[error(transparent)]
    Zones(#[from] ZoneError),
}

/// Everything the handler, probes and admin API share.
pub struct DnsState {
    /// The config file.
    pub config: ConfigFile,
    /// Current zones.
    pub zones: ArcSwap<ZoneSet>,
    /// Health by region name.
    pub health: Mutex<HashMap<String, Arc<RegionHealth>>>,
    /// Health in region-index order of the current zones.
    pub by_index: ArcSwap<Vec<Arc<RegionHealth>>>,
    /// [`Self::health`] as of the last change or tick, for the query path (no allocation per query).
    pub health_now: ArcSwap<Health>,
    /// Metrics.
    pub metrics: DnsMetrics,
    /// Time: report ages, feed staleness, SOA serials.
    pub clock: Arc<dyn Clock>,
    serial: AtomicU32,
    /// Makes each recompute-and-publish of `health_now` whole: without it a probe's refresh,
    /// computed before a control report landed, could overwrite the report's refresh.
    refresh: Mutex<()>,
}

/// A SOA serial from the wall clock (seconds since 2020), so it also moves across restarts.
fn clock_serial(clock: &dyn Clock) -> u32 {
    u32::try_from(clock.unix_secs().saturating_sub(1_577_836_800)).unwrap_or(u32::MAX)
}

impl DnsState {
    /// One setting of the current `dns` section (its default before there is one), read afresh
    /// so a reload applies to the next probe or connection.
    pub fn dns_setting<T: Default>(&self, pick: impl FnOnce(&meridian_config::schema::Dns) -> T) -> T {
        self.zones.load().snap.config.dns.as_ref().map(pick).unwrap_or_default()
    }

    /// Loads the config and compiles the first zone set.
    pub fn start(path: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<DnsState> {
        let config = ConfigFile::new(path);
        let snap = config.load().map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
        let serial = clock_serial(&*clock);
        let metrics = DnsMetrics::new();
        let zones = ZoneSet::build(Arc::new(snap), serial, &metrics)?;
        let state = DnsState {
            config,
            by_index: ArcSwap::from_pointee(Vec::new()),
            health_now: ArcSwap::from_pointee(Health::default()),
            zones: ArcSwap::from_pointee(zones),
            health: Mutex::new(HashMap::new()),
            metrics,
            clock,
            refresh: Mutex::new(()),
            serial: AtomicU32::new(serial),
        };
        state.index_health();
        Ok(state)
    }

    fn index_health(&self) {
        let zones = self.zones.load();
        let mut map = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let v: Vec<_> = zones
            .regions
            .iter()
            .map(|r| map.entry(r.name.to_string()).or_default().clone())
            .collect();
        self.by_index.store(Arc::new(v));
        drop(map);
        self.refresh_health();
    }

    /// Recomputes the query path's view of health (on probe changes, reports, reloads, and ticks
    /// that age reports out).
    pub fn refresh_health(&self) {
        let _whole = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        self.health_now.store(Arc::new(self.health()));
    }

    /// Health of each region of the current zones, by index: probes, and control reports younger
    /// than the control loop's stale bound (telemetry interval x stale_after_intervals).
    pub fn health(&self) -> Health {
        let zones = self.zones.load();
        let t = &zones.snap.config.control.telemetry;
        let stale = t.interval.get() * t.stale_after_intervals;
        let regions = self.by_index.load();
        let now = self.clock.now();
        Health {
            probes: regions.iter().map(|h| h.healthy.load(Ordering::Relaxed)).collect(),
            capacity: regions
                .iter()
                .map(|h| {
                    let r = h.report.lock().unwrap_or_else(|p| p.into_inner());
                    r.as_ref()
                        .filter(|(at, _)| now.saturating_sub(*at) <= meridian_clock::nanos(stale))
                        .map(|(_, c)| c.clone())
                })
                .collect(),
        }
    }

    /// Records a control loop's report of healthy endpoints per model in `region`.
    pub fn report(&self, region: &str, capacity: HashMap<String, u32>) -> bool {
        let map = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(region) {
            Some(h) => {
                *h.report.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.clock.now(), capacity));
                drop(map);
                self.refresh_health();
                true
            }
            None => false,
        }
    }

    /// Re-reads the config; on any error the current zones keep answering. The SOA serial moves.
    pub fn reload(&self) -> Result<u32, ReloadError> {
        let result = self.config.load().map_err(ReloadError::Invalid).and_then(|snap| {
            let serial = clock_serial(&*self.clock).max(self.serial.load(Ordering::Relaxed) + 1);
            let zones = ZoneSet::build(Arc::new(snap), serial, &self.metrics)?;
            Ok((zones, serial))
        });
        match result {
            Ok((zones, serial)) => {
                self.serial.store(serial, Ordering::Relaxed);
                self.zones.store(Arc::new(zones));
                self.index_health();
                self.metrics.reloads.with_label_values(&["success"]).inc();
                tracing::info!(serial, "dns config reloaded");
                Ok(serial)
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                tracing::error!("dns config reload rejected, the previous zones keep answering:\n{e}");
                Err(e)
            }
        }
    }

    /// The SOA serial in use.
    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Relaxed)
    }
}
