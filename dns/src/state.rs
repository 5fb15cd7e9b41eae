//! The DNS server's shared state: the compiled zones (swapped on reload) and each region's health,
//! which outlives reloads so a region's probe history is not reset by a config change.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use meridian_config::{ConfigErrors, ConfigFile};

use crate::answer::Health;
use crate::metrics::DnsMetrics;
use crate::zones::ZoneSet;

/// One region's health as this server sees it.
#[derive(Debug)]
pub struct RegionHealth {
    /// Whether GSLB answers may use the region.
    pub healthy: AtomicBool,
    /// Consecutive probe passes (positive) or failures (negative).
    pub streak: Mutex<i32>,
    /// Why the region is in its state (last probe outcome).
    pub reason: Mutex<String>,
    /// The latest control report: when it came and healthy endpoints per model.
    pub report: Mutex<Option<(Instant, HashMap<String, u32>)>>,
    /// When the region's control state feed last answered this server.
    pub feed_ok: Mutex<Option<Instant>>,
}

impl Default for RegionHealth {
    fn default() -> Self {
        RegionHealth {
            healthy: AtomicBool::new(true),
            streak: Mutex::new(0),
            reason: Mutex::new("not probed yet".into()),
            report: Mutex::new(None),
            feed_ok: Mutex::new(None),
        }
    }
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
    serial: AtomicU32,
    /// Makes each recompute-and-publish of `health_now` whole: without it a probe's refresh,
    /// computed before a control report landed, could overwrite the report's refresh.
    refresh: Mutex<()>,
}

/// A SOA serial from the clock (seconds since 2020), so it also moves across restarts.
fn clock_serial() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(now.saturating_sub(1_577_836_800)).unwrap_or(u32::MAX)
}

impl DnsState {
    /// Loads the config and compiles the first zone set.
    pub fn start(path: &Path) -> anyhow::Result<DnsState> {
        let config = ConfigFile::new(path);
        let snap = config.load().map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
        let serial = clock_serial();
        let metrics = DnsMetrics::new();
        let zones = ZoneSet::build(Arc::new(snap), serial, &metrics).map_err(anyhow::Error::msg)?;
        let state = DnsState {
            config,
            by_index: ArcSwap::from_pointee(Vec::new()),
            health_now: ArcSwap::from_pointee(Health::default()),
            zones: ArcSwap::from_pointee(zones),
            health: Mutex::new(HashMap::new()),
            metrics,
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
        Health {
            probes: regions.iter().map(|h| h.healthy.load(Ordering::Relaxed)).collect(),
            capacity: regions
                .iter()
                .map(|h| {
                    let r = h.report.lock().unwrap_or_else(|p| p.into_inner());
                    r.as_ref()
                        .filter(|(at, _)| at.elapsed() <= stale)
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
                *h.report.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), capacity));
                drop(map);
                self.refresh_health();
                true
            }
            None => false,
        }
    }

    /// Re-reads the config; on any error the current zones keep answering. The SOA serial moves.
    pub fn reload(&self) -> Result<u32, String> {
        let result = self
            .config
            .load()
            .map_err(|e: ConfigErrors| e.to_string())
            .and_then(|snap| {
                let serial = clock_serial().max(self.serial.load(Ordering::Relaxed) + 1);
                ZoneSet::build(Arc::new(snap), serial, &self.metrics).map(|z| (z, serial))
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
