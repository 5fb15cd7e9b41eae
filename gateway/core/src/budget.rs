//! The retry budget: retries cannot multiply load on a struggling fleet, yet a burst of failures
//! after a healthy spell (a backend killed with many requests in flight) is retried whole.
//!
//! Two allowances, either suffices:
//! - Envoy's `retry_budget`: retries in flight at most `percent` of active requests, with a floor
//!   (`min_concurrent`);
//! - Finagle's deposit budget: every request deposits `percent`/100 of a retry into a balance
//!   capped at `percent` of [`WINDOW`] requests, and a retry beyond the first allowance withdraws
//!   one. A sustained failure of everything is thus retried for at most `percent` of requests (plus
//!   the floor), while the eight requests in flight to a backend that just died draw on what the
//!   thousands before them deposited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Active requests and active retries, shared by every request of a gateway.
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicU64,
    retries: AtomicU64,
    /// Deposited retries, in thousandths.
    balance: AtomicU64,
}

/// Requests whose deposits the balance can hold.
pub const WINDOW: u64 = 1000;

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
    /// Marks a request active, depositing `percent`/100 of a retry.
    pub fn request(self: &Arc<Self>, percent: f64) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        let deposit = (percent.clamp(0.0, 100.0) * 10.0) as u64;
        let cap = deposit * WINDOW;
        let _ = self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            (b < cap).then(|| (b + deposit).min(cap))
        });
        Active(self.clone())
    }

    /// Takes a retry if the budget allows: retries in flight stay under `percent` of active
    /// requests, or under `min_concurrent`, whichever is larger; else one is withdrawn from the
    /// deposits.
    pub fn try_retry(self: &Arc<Self>, percent: f64, min_concurrent: u32) -> Option<RetryToken> {
        let active = self.active.load(Ordering::Relaxed) as f64;
        let allowed = ((active * percent / 100.0) as u64).max(u64::from(min_concurrent));
        let prev = self.retries.fetch_add(1, Ordering::Relaxed);
        let withdrawn = || {
            self.balance
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1000))
                .is_ok()
        };
        if prev < allowed || withdrawn() {
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
        // No deposits (0%): Envoy's in-flight rule alone.
        let _reqs: Vec<_> = (0..5).map(|_| b.request(0.0)).collect();
        let t: Vec<_> = (0..3).filter_map(|_| b.try_retry(20.0, 3)).collect();
        assert_eq!(t.len(), 3);
        assert!(
            b.try_retry(20.0, 3).is_none(),
            "5 active x 20% = 1 < floor 3, and 3 are out"
        );
        drop(t);
        let _more: Vec<_> = (0..95).map(|_| b.request(0.0)).collect();
        let t: Vec<_> = (0..30).filter_map(|_| b.try_retry(20.0, 3)).collect();
        assert_eq!(t.len(), 20, "100 active x 20%");
    }

    #[test]
    fn a_burst_after_a_healthy_spell_draws_on_deposits_and_a_storm_stays_bounded() {
        let b = Arc::new(RetryBudget::default());
        // 1,000 requests went well (deposits: 200 retries, the cap); 16 are in flight when their
        // backend dies: 8 fail at once, all retried (3 by the floor, 5 from deposits).
        drop((0..1000).map(|_| b.request(20.0)).collect::<Vec<_>>());
        let _in_flight: Vec<_> = (0..16).map(|_| b.request(20.0)).collect();
        let burst: Vec<_> = (0..8).filter_map(|_| b.try_retry(20.0, 3)).collect();
        assert_eq!(burst.len(), 8);
        drop(burst);
        // Everything fails from now on: retries stay within 20% of requests plus what is left.
        let b = Arc::new(RetryBudget::default());
        let mut retried = 0;
        for _ in 0..10_000 {
            let _r = b.request(20.0);
            retried += usize::from(b.try_retry(20.0, 0).is_some());
        }
        assert!(
            (1900..=2100).contains(&retried),
            "{retried} retries for 10,000 failed requests"
        );
    }
}
