//! How many replicas a version should run: Knative KPA's rule on the gateways' concurrency
//! (requests in flight to the version plus those held for it), no I/O.
//!
//! - desired = ceil(concurrency / target_concurrency), within min..=max, and at least 1 while any
//!   request is in flight or held (a held request is demand at zero);
//! - scaling up is immediate: the newest desired count always counts, which is where the KPA's
//!   panic mode would take it (a burst at or past twice the current capacity); we do not wait for a
//!   stable window to go up, only to come down;
//! - scaling down waits: the recommendation is the highest desired count seen over the last
//!   `scale_down_delay` (the KPA's scale-down delay), so a version goes to `min` (zero included)
//!   only after that long without a request.

use std::collections::VecDeque;

use meridian_config::schema::Scale;

/// Replicas for `concurrency` under `scale`, before the scale-down delay.
pub fn desired(concurrency: f64, scale: &Scale) -> u32 {
    let target = f64::from(scale.target_concurrency.max(1));
    let mut n = (concurrency.max(0.0) / target).ceil() as u32;
    if concurrency > 0.0 {
        n = n.max(1);
    }
    n.clamp(scale.min, scale.max.max(scale.min))
}

/// One version's recent desired counts.
#[derive(Debug, Default)]
pub struct Sizer {
    /// (seconds, desired), oldest first.
    seen: VecDeque<(f64, u32)>,
}

impl Sizer {
    /// Notes the desired count at `now` (seconds, monotonic).
    pub fn observe(&mut self, now: f64, desired: u32) {
        self.seen.push_back((now, desired));
    }

    /// The replicas to run at `now`: the most desired over the last `delay` seconds.
    pub fn recommend(&mut self, now: f64, delay: f64) -> u32 {
        while self.seen.len() > 1 && self.seen.front().is_some_and(|&(t, _)| now - t > delay) {
            self.seen.pop_front();
        }
        self.seen.iter().map(|&(_, d)| d).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(min: u32, max: u32, target: u32) -> Scale {
        Scale {
            min,
            max,
            target_concurrency: target,
            ..Scale::default()
        }
    }

    #[test]
    fn desired_follows_concurrency_over_target_within_bounds() {
        let s = scale(0, 5, 10);
        assert_eq!(desired(0.0, &s), 0, "idle: zero");
        assert_eq!(desired(1.0, &s), 1, "one request wakes one replica");
        assert_eq!(desired(10.0, &s), 1);
        assert_eq!(desired(11.0, &s), 2);
        assert_eq!(desired(35.0, &s), 4);
        assert_eq!(desired(500.0, &s), 5, "at most max");
        assert_eq!(desired(0.0, &scale(2, 5, 10)), 2, "at least min");
    }

    #[test]
    fn up_at_once_down_after_the_delay() {
        let mut z = Sizer::default();
        z.observe(0.0, 3);
        assert_eq!(z.recommend(0.0, 60.0), 3);
        z.observe(10.0, 1);
        assert_eq!(z.recommend(10.0, 60.0), 3, "down waits");
        z.observe(20.0, 5);
        assert_eq!(z.recommend(20.0, 60.0), 5, "up at once");
        z.observe(75.0, 0);
        assert_eq!(z.recommend(75.0, 60.0), 5, "the 5 at 20 s is within the minute");
        z.observe(90.0, 0);
        assert_eq!(z.recommend(90.0, 60.0), 0, "a quiet minute: to zero");
    }
}
