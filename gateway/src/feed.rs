//! The last good state from the region's control loop, and how old it is. The gateway keeps serving
//! it while control is unreachable (static stability); `meridian_state_feed_staleness_seconds`
//! says for how long. Filled by `subscription`, read by table builds and the exposition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use meridian_config::feed::FeedState;
use meridian_gateway_core::clock::Nanos;

/// The feed as last received.
#[derive(Debug, Default)]
pub struct FeedView {
    state: ArcSwapOption<FeedState>,
    /// Clock reading of the last answer, plus one (0: never answered).
    answered: AtomicU64,
}

impl FeedView {
    /// Records a state received at `now`; returns the one it replaces.
    pub fn record(&self, state: Arc<FeedState>, now: Nanos) -> Option<Arc<FeedState>> {
        self.answered.store(now.saturating_add(1), Ordering::Relaxed);
        self.state.swap(Some(state))
    }

    /// The last good state, if control ever answered.
    pub fn current(&self) -> Option<Arc<FeedState>> {
        self.state.load_full()
    }

    /// Seconds since control last answered at `now`, or `None` before it ever did.
    pub fn staleness(&self, now: Nanos) -> Option<f64> {
        match self.answered.load(Ordering::Relaxed) {
            0 => None,
            at => Some(now.saturating_sub(at - 1) as f64 / 1e9),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_counts_from_the_last_answer() {
        let v = FeedView::default();
        assert_eq!(v.staleness(5), None);
        let state = FeedState {
            version: 7,
            ..FeedState::default()
        };
        assert!(
            v.record(Arc::new(state.clone()), 0).is_none(),
            "the first answer, at time 0"
        );
        assert_eq!(v.staleness(2_500_000_000), Some(2.5));
        assert_eq!(v.record(Arc::new(state), 3_000_000_000).map(|p| p.version), Some(7));
        assert_eq!(v.staleness(3_000_000_000), Some(0.0));
    }
}
