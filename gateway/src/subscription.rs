//! The gateway's subscription to its region's control loop (the state feed): long-polls
//! `GET /v1/state?after=V` and hands each new state to [`Reloader::apply_feed`]. When control is
//! unreachable the last good state keeps applying (static stability) and
//! `meridian_state_feed_staleness_seconds` grows; static endpoints never depended on it.

use std::sync::Arc;
use std::time::Duration;

use meridian_config::feed::{FeedState, FEED_PATH};

use crate::reloader::Reloader;
use crate::routes::Routing;

/// How long control may hold a poll open.
const WAIT: &str = "10s";

/// Follows the feed until the task is aborted.
pub async fn subscribe(routing: Arc<Routing>, reloader: Arc<Reloader>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap_or_default();
    let mut version = 0u64;
    let mut failing = false;
    loop {
        let addr = {
            let routes = routing.routes.load();
            routes.region().control.as_ref().map(|c| c.address)
        };
        let Some(addr) = addr else {
            // No control loop for this region (yet): static endpoints only.
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        };
        let url = format!("http://{addr}{FEED_PATH}?after={version}&wait={WAIT}");
        let answer = async {
            let r = client.get(&url).timeout(Duration::from_secs(15)).send().await?;
            r.error_for_status()?.json::<FeedState>().await
        };
        match answer.await {
            Ok(state) => {
                if failing {
                    tracing::info!(%addr, version = state.version, "state feed reachable again");
                    failing = false;
                }
                // A restarted control loop counts from 1 again: follow it down as well as up.
                version = state.version;
                reloader.apply_feed(state);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(%addr, "state feed unreachable, keeping the last good state: {e}");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
