//! Active probes of each region's gateway: HTTP GET of its health URL every interval; consecutive
//! failures past the threshold take the region out of GSLB answers, consecutive passes bring it
//! back. Each region has its own task, so a slow region never delays answers or other probes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::state::{DnsState, RegionHealth};

/// The URL probed for a region: its `health_url`, else `http://<admin>/readyz`.
fn url_of(state: &DnsState, region: &str) -> Option<String> {
    let zones = state.zones.load();
    let r = zones.snap.config.regions.iter().find(|r| r.name == region)?;
    let gw = r.gateway.as_ref()?;
    Some(
        gw.health_url
            .clone()
            .unwrap_or_else(|| format!("http://{}/readyz", gw.admin.address)),
    )
}

async fn probe_region(state: Arc<DnsState>, region: String, health: Arc<RegionHealth>, client: reqwest::Client) {
    loop {
        let p = state.dns_setting(|d| d.probe.clone());
        let Some(url) = url_of(&state, &region) else { return };
        let outcome = match client.get(&url).timeout(p.timeout.get()).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url} answered {}", r.status())),
            Err(e) => Err(format!(
                "{url}: {}",
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.to_string()
                }
            )),
        };
        let streak = {
            let mut s = health.streak.lock().unwrap_or_else(|p| p.into_inner());
            *s = match (&outcome, *s) {
                (Ok(()), n) if n > 0 => n + 1,
                (Ok(()), _) => 1,
                (Err(_), n) if n < 0 => n - 1,
                (Err(_), _) => -1,
            };
            *s
        };
        let was = health.healthy.load(Ordering::Relaxed);
        let now = if was {
            -streak < p.unhealthy_threshold as i32
        } else {
            streak >= p.healthy_threshold as i32
        };
        *health.reason.lock().unwrap_or_else(|p| p.into_inner()) = match &outcome {
            Ok(()) => format!("probe {url} passed ({streak} in a row)"),
            Err(e) => format!("probe failed ({} in a row): {e}", -streak),
        };
        if now != was {
            health.healthy.store(now, Ordering::Relaxed);
            state.refresh_health();
            tracing::warn!(region, healthy = now, "region health changed");
        }
        tokio::time::sleep(p.interval.get()).await;
    }
}

/// Keeps one probe task per region with a gateway, following reloads.
pub async fn supervise(state: Arc<DnsState>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap_or_default();
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: Vec<String> = {
            let zones = state.zones.load();
            zones
                .snap
                .config
                .regions
                .iter()
                .filter(|r| r.gateway.is_some())
                .map(|r| r.name.clone())
                .collect()
        };
        crate::reconcile::reconcile(&mut tasks, &wanted, |name| {
            let health = state
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.clone())
                .or_default()
                .clone();
            tokio::spawn(probe_region(state.clone(), name.clone(), health, client.clone()))
        });
        // Also ages control reports out of the query path's view.
        state.refresh_health();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
