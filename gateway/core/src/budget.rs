//! The retry budget (Envoy's retry_budget): retries in flight may be at most a percent of active
//! requests, with a floor, so retries cannot multiply load on a struggling fleet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Active requests and active retries, shared by every request of a gateway.
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicU64,
    retries: AtomicU64,
}

/// Counts one active request until dropped.
#[derive(Debug)]
pub struct Active(Arc<RetryBudget>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one retry in flight until dropped.
#[derive(Debug)]
pub struct RetryToken(Arc<RetryBudget>);

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    /// Marks a request active.
    pub fn request(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// Takes a retry if the budget allows: retries in flight stay under `percent` of active
    /// requests, or under `min_concurrent`, whichever is larger.
    pub fn try_retry(self: &Arc<Self>, percent: f64, min_concurrent: u32) -> Option<RetryToken> {
        let active = self.active.load(Ordering::Relaxed) as f64;
        let allowed = ((active * percent / 100.0) as u64).max(u64::from(min_concurrent));
        let prev = self.retries.fetch_add(1, Ordering::Relaxed);
        if prev < allowed {
            Some(RetryToken(self.clone()))
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }

    /// Retries in flight now.
    pub fn in_flight(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_then_percent() {
        let b = Arc::new(RetryBudget::default());
        let _reqs: Vec<_> = (0..5).map(|_| b.request()).collect();
        let t: Vec<_> = (0..3).filter_map(|_| b.try_retry(20.0, 3)).collect();
        assert_eq!(t.len(), 3);
        assert!(
            b.try_retry(20.0, 3).is_none(),
            "5 active x 20% = 1 < floor 3, and 3 are out"
        );
        drop(t);
        let _more: Vec<_> = (0..95).map(|_| b.request()).collect();
        let t: Vec<_> = (0..30).filter_map(|_| b.try_retry(20.0, 3)).collect();
        assert_eq!(t.len(), 20, "100 active x 20%");
    }
}
