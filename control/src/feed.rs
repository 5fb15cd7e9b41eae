//! The state feed's publishing side: the current [`FeedState`] behind a watch channel, served with
//! long-poll by version so subscribers hear of a change at once and otherwise hold one request.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use meridian_config::feed::{CanaryWeight, DiscoveredModel, FeedEndpoint, FeedState};
use serde::Deserialize;
use tokio::sync::watch;

/// The published state.
pub struct Feed {
    tx: watch::Sender<Arc<FeedState>>,
}

impl Feed {
    /// An empty feed (version 0) for `region`.
    pub fn new(region: &str) -> Feed {
        Feed {
            tx: watch::Sender::new(Arc::new(FeedState {
                region: region.to_string(),
                ..FeedState::default()
            })),
        }
    }

    /// The current state.
    pub fn current(&self) -> Arc<FeedState> {
        self.tx.borrow().clone()
    }

    /// Publishes `endpoints`, canary weights and discovered models as a new version if anything
    /// changed; returns the current version.
    pub fn publish(
        &self,
        endpoints: Vec<FeedEndpoint>,
        canaries: Vec<CanaryWeight>,
        models: Vec<DiscoveredModel>,
    ) -> u64 {
        let cur = self.current();
        if cur.version > 0 && cur.endpoints == endpoints && cur.canaries == canaries && cur.models == models {
            return cur.version;
        }
        let next = FeedState {
            version: cur.version + 1,
            region: cur.region.clone(),
            capacity: FeedState::capacity_of(&endpoints),
            endpoints,
            canaries,
            models,
        };
        let v = next.version;
        self.tx.send_replace(Arc::new(next));
        v
    }

    /// Waits until the version passes `after` or `wait` ends; returns the state then.
    pub async fn wait_past(&self, after: u64, wait: Duration) -> Arc<FeedState> {
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.version > after)).await;
        self.current()
    }
}

/// Query of a feed request.
#[derive(Deserialize)]
pub struct Poll {
    /// The version the subscriber has; the answer waits for a newer one.
    #[serde(default)]
    after: u64,
    /// Longest wait, e.g. `10s` (at most 60 s).
    #[serde(default)]
    wait: Option<String>,
}

/// `GET /v1/state?after=V&wait=10s`.
pub async fn serve_poll(State(feed): State<Arc<Feed>>, Query(p): Query<Poll>) -> Json<FeedState> {
    let wait = p
        .wait
        .and_then(|w| humantime_like(&w))
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_secs(60));
    Json((*feed.wait_past(p.after, wait).await).clone())
}

/// Parses `10s`, `500ms` or plain seconds.
fn humantime_like(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    s.strip_suffix('s').unwrap_or(s).parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, ready: bool) -> FeedEndpoint {
        FeedEndpoint {
            id: id.into(),
            address: "127.0.0.1:1".parse().unwrap(),
            grpc_port: None,
            model: "m".into(),
            version: "v1".into(),
            region: "r".into(),
            zone: "z".into(),
            ready,
            headroom: None,
            server: None,
            drained: false,
            reason: None,
        }
    }

    #[tokio::test]
    async fn versions_move_only_on_change_and_wake_waiters() {
        let feed = Arc::new(Feed::new("r"));
        assert_eq!(feed.publish(vec![ep("a", true)], vec![], vec![]), 1);
        assert_eq!(
            feed.publish(vec![ep("a", true)], vec![], vec![]),
            1,
            "same state, same version"
        );
        assert_eq!(feed.current().capacity["m"], 1);
        // A subscriber at version 1 waits; a change wakes it with version 2.
        let waiter = tokio::spawn({
            let feed = feed.clone();
            async move { feed.wait_past(1, Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(feed.publish(vec![ep("a", false)], vec![], vec![]), 2);
        let s = waiter.await.unwrap();
        assert_eq!((s.version, s.capacity["m"]), (2, 0));
        // Behind already: answered at once.
        assert_eq!(feed.wait_past(0, Duration::from_secs(60)).await.version, 2);
        assert_eq!(humantime_like("10s"), Some(Duration::from_secs(10)));
        assert_eq!(humantime_like("250ms"), Some(Duration::from_millis(250)));
    }
}
