//! The DNS server's subscription to each region's control state feed: the region's healthy
//! capacity per model becomes its control report (a region with no capacity for a name's models
//! stops answering it). When a control loop is unreachable its last good report keeps standing
//! (static stability; the DNS server's own probes still catch a dead region) and
//! `meridian_state_feed_staleness_seconds{region}` grows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::feed::{FeedState, FEED_PATH};
use tokio::task::JoinHandle;

use crate::state::DnsState;

/// Keeps one subscription per region with a control loop, following config reloads.
pub async fn supervise(state: Arc<DnsState>) {
    let mut tasks: HashMap<(String, SocketAddr), JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: Vec<(String, SocketAddr)> = {
            let zones = state.zones.load();
            zones
                .snap
                .config
                .regions
                .iter()
                .filter_map(|r| Some((r.name.clone(), r.control.as_ref()?.address)))
                .collect()
        };
        crate::reconcile::reconcile(&mut tasks, &wanted, |(region, addr)| {
            tokio::spawn(follow(state.clone(), region.clone(), *addr))
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn follow(state: Arc<DnsState>, region: String, addr: SocketAddr) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap_or_default();
    let mut version = 0u64;
    let mut last: Option<HashMap<String, u32>> = None;
    loop {
        // Polls end well within the report's stale bound, so a quiet feed keeps its report fresh.
        let wait = {
            let zones = state.zones.load();
            let t = &zones.snap.config.control.telemetry;
            (t.interval.get() * t.stale_after_intervals / 3).clamp(Duration::from_millis(200), Duration::from_secs(10))
        };
        let url = format!("http://{addr}{FEED_PATH}?after={version}&wait={}ms", wait.as_millis());
        let answer = async {
            let r = client.get(&url).timeout(wait + Duration::from_secs(5)).send().await?;
            r.error_for_status()?.json::<FeedState>().await
        };
        match answer.await {
            Ok(s) => {
                version = s.version;
                let capacity: HashMap<String, u32> = s.capacity.into_iter().collect();
                state.report(&region, capacity.clone());
                last = Some(capacity);
                if let Some(h) = state.health.lock().unwrap_or_else(|p| p.into_inner()).get(&region) {
                    h.feed_answered(state.clock.now());
                }
            }
            Err(e) => {
                tracing::debug!(%region, %addr, "state feed unreachable, keeping its last report: {e}");
                if let Some(c) = &last {
                    state.report(&region, c.clone());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
