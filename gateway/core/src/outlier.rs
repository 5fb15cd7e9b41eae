//! Passive outlier detection with Envoy's semantics.
//!
//! - Inline: consecutive 5xx and consecutive gateway failures (502/503/504, connect failures,
//!   resets, timeouts) eject at once.
//! - Each interval: success-rate ejection (below mean - factor x stdev, among endpoints with enough
//!   volume, when enough endpoints qualify), ejections that ran their time end, and the ejection
//!   multiplier of endpoints that stayed in decreases.
//! - Ejection time = base x times ejected, capped at max; never more than max ejection percent of a
//!   cluster's endpoints out at once (at least one may always go).
//!
//! Time comes in as an argument, so the whole timeline is unit-tested with a fake clock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use meridian_config::schema::OutlierDetection;
use parking_lot::Mutex;

use crate::clock::{nanos, Nanos};
use crate::endpoint::{flags, EndpointState, Registry};

/// What one attempt at an endpoint came to, as outlier detection counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with a non-5xx status.
    Success,
    /// A 5xx that is not a gateway failure (500, 501, 505, ...).
    ServerError,
    /// 502, 503, 504, or a connect failure, reset or timeout.
    GatewayFailure,
}

impl Outcome {
    /// The outcome of an HTTP status from the endpoint.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            502..=504 => Outcome::GatewayFailure,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Consecutive 5xx.
    Consecutive5xx,
    /// Consecutive gateway failures.
    ConsecutiveGatewayFailure,
    /// Success rate below the cluster's.
    SuccessRate,
}

impl Reason {
    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Reason::SuccessRate => "success_rate",
        }
    }
}

/// The detector: counters live in each endpoint; this serializes ejection decisions (writers only;
/// the request path's pick never waits on it).
#[derive(Debug, Default)]
pub struct Detector {
    decide: Mutex<()>,
}

impl Detector {
    /// Records one attempt's outcome; returns the reason if the endpoint should be ejected now.
    pub fn record(&self, ep: &EndpointState, outcome: Outcome, cfg: &OutlierDetection) -> Option<Reason> {
        let c = &ep.outlier;
        c.requests.fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Success {
            c.successes.fetch_add(1, Ordering::Relaxed);
            c.consecutive_5xx.store(0, Ordering::Relaxed);
            c.consecutive_gateway.store(0, Ordering::Relaxed);
            return None;
        }
        let n5 = c.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let ng = if outcome == Outcome::GatewayFailure {
            c.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            c.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        if !cfg.enabled {
            return None;
        }
        if cfg.consecutive_gateway_failure > 0 && ng >= cfg.consecutive_gateway_failure {
            Some(Reason::ConsecutiveGatewayFailure)
        } else if cfg.consecutive_5xx > 0 && n5 >= cfg.consecutive_5xx {
            Some(Reason::Consecutive5xx)
        } else {
            None
        }
    }

    /// Ejects `ep` unless it is out already or the cluster is at its max ejection percent.
    pub fn eject(
        &self,
        registry: &Registry,
        cluster: &[&Arc<EndpointState>],
        ep: &EndpointState,
        now: Nanos,
        cfg: &OutlierDetection,
    ) -> bool {
        let _g = self.decide.lock();
        if ep.flags() & flags::EJECTED != 0 {
            return false;
        }
        let out = cluster.iter().filter(|e| e.flags() & flags::EJECTED != 0).count();
        let n = cluster.len().max(1);
        if out > 0 && (out as f64 * 100.0 / n as f64) >= cfg.max_ejection_percent {
            return false;
        }
        if out == 0 && cfg.max_ejection_percent <= 0.0 {
            return false;
        }
        let times = ep.outlier.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let base = nanos(cfg.base_ejection_time.get());
        let time = base
            .saturating_mul(u64::from(times))
            .min(nanos(cfg.max_ejection_time.get()).max(base));
        ep.outlier
            .ejected_until
            .store(now.saturating_add(time), Ordering::Relaxed);
        ep.outlier.total_ejections.fetch_add(1, Ordering::Relaxed);
        ep.outlier.consecutive_5xx.store(0, Ordering::Relaxed);
        ep.outlier.consecutive_gateway.store(0, Ordering::Relaxed);
        registry.set_flag(ep, flags::EJECTED, true);
        true
    }

    /// Ends an ejection early (a passing active health check).
    pub fn uneject(&self, registry: &Registry, ep: &EndpointState) {
        ep.outlier.ejected_until.store(0, Ordering::Relaxed);
        registry.set_flag(ep, flags::EJECTED, false);
    }

    /// The per-endpoint part of an interval: expired ejections end, the multiplier of endpoints that
    /// stayed in decreases. Call once per endpoint per interval.
    pub fn tick_endpoint(&self, registry: &Registry, ep: &EndpointState, now: Nanos) {
        let until = ep.outlier.ejected_until.load(Ordering::Relaxed);
        if ep.flags() & flags::EJECTED != 0 {
            if until <= now {
                self.uneject(registry, ep);
            }
        } else {
            let _ = ep
                .outlier
                .ejections
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// The per-cluster part of an interval: success-rate ejection. Returns who was ejected.
    pub fn tick_cluster(
        &self,
        registry: &Registry,
        cluster: &[&Arc<EndpointState>],
        now: Nanos,
        cfg: &OutlierDetection,
    ) -> Vec<Arc<EndpointState>> {
        let sr = &cfg.success_rate;
        if !cfg.enabled || !sr.enabled {
            return Vec::new();
        }
        let rates: Vec<(&Arc<EndpointState>, f64)> = cluster
            .iter()
            .filter(|e| e.flags() & flags::EJECTED == 0)
            .filter_map(|e| {
                let req = e.outlier.requests.load(Ordering::Relaxed);
                (req >= sr.request_volume && req > 0).then(|| {
                    (
                        *e,
                        f64::from(e.outlier.successes.load(Ordering::Relaxed)) / f64::from(req),
                    )
                })
            })
            .collect();
        if rates.len() < sr.minimum_hosts as usize || rates.is_empty() {
            return Vec::new();
        }
        let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let threshold = mean - sr.stdev_factor * var.sqrt();
        let mut ejected = Vec::new();
        for (e, r) in rates {
            if r < threshold && self.eject(registry, cluster, e, now, cfg) {
                ejected.push(e.clone());
            }
        }
        ejected
    }

    /// Starts a new interval's success-rate counts. Call once per endpoint after the cluster ticks.
    pub fn reset_interval(ep: &EndpointState) {
        ep.outlier.requests.store(0, Ordering::Relaxed);
        ep.outlier.successes.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_config::units::Duration;

    fn cluster(n: usize) -> (Registry, Vec<Arc<EndpointState>>) {
        let r = Registry::default();
        let eps = (0..n)
            .map(|i| r.get_or_create(&format!("e{i}").into(), format!("127.0.0.{}:1", i + 1).parse().unwrap()))
            .collect();
        (r, eps)
    }

    fn cfg() -> OutlierDetection {
        OutlierDetection::default()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn consecutive_5xx_ejects_and_success_resets() {
        let d = Detector::default();
        let (_, eps) = cluster(1);
        let c = cfg();
        assert_eq!(d.record(&eps[0], Outcome::ServerError, &c), None);
        assert_eq!(d.record(&eps[0], Outcome::ServerError, &c), None);
        assert_eq!(d.record(&eps[0], Outcome::Success, &c), None);
        assert_eq!(d.record(&eps[0], Outcome::ServerError, &c), None);
        assert_eq!(d.record(&eps[0], Outcome::ServerError, &c), None);
        assert_eq!(
            d.record(&eps[0], Outcome::ServerError, &c),
            Some(Reason::Consecutive5xx)
        );
    }

    #[test]
    fn gateway_failures_count_toward_both() {
        let d = Detector::default();
        let (_, eps) = cluster(1);
        let mut c = cfg();
        c.consecutive_5xx = 0;
        c.consecutive_gateway_failure = 2;
        assert_eq!(d.record(&eps[0], Outcome::GatewayFailure, &c), None);
        assert_eq!(
            d.record(&eps[0], Outcome::GatewayFailure, &c),
            Some(Reason::ConsecutiveGatewayFailure)
        );
        assert_eq!(Outcome::of_status(503), Outcome::GatewayFailure);
        assert_eq!(Outcome::of_status(500), Outcome::ServerError);
        assert_eq!(Outcome::of_status(404), Outcome::Success);
    }

    #[test]
    fn ejection_timeline_multiplies_caps_and_decays() {
        let d = Detector::default();
        let (r, eps) = cluster(2);
        let refs: Vec<_> = eps.iter().collect();
        let mut c = cfg();
        c.base_ejection_time = Duration::secs(30);
        c.max_ejection_time = Duration::secs(75);
        let e = &eps[0];
        let mut now = 100 * S;
        // First ejection: 30 s.
        assert!(d.eject(&r, &refs, e, now, &c));
        assert!(!e.available());
        d.tick_endpoint(&r, e, now + 29 * S);
        assert!(!e.available(), "still ejected at 29 s");
        now += 30 * S;
        d.tick_endpoint(&r, e, now);
        assert!(e.available(), "back at 30 s");
        // Second ejection right away: 60 s.
        assert!(d.eject(&r, &refs, e, now, &c));
        d.tick_endpoint(&r, e, now + 59 * S);
        assert!(!e.available());
        now += 60 * S;
        d.tick_endpoint(&r, e, now);
        assert!(e.available());
        // Third: 90 s capped at 75 s.
        assert!(d.eject(&r, &refs, e, now, &c));
        now += 75 * S;
        d.tick_endpoint(&r, e, now);
        assert!(e.available(), "capped at max_ejection_time");
        // Healthy intervals bring the multiplier down: 3 -> 1 after two ticks, so the next is 30 s.
        d.tick_endpoint(&r, e, now);
        d.tick_endpoint(&r, e, now);
        assert!(d.eject(&r, &refs, e, now, &c));
        assert_eq!(
            e.outlier.ejected_until.load(Ordering::Relaxed),
            now + 60 * S,
            "multiplier 2 after 2 decays"
        );
    }

    #[test]
    fn max_ejection_percent_is_honoured() {
        let d = Detector::default();
        let (r, eps) = cluster(4);
        let refs: Vec<_> = eps.iter().collect();
        let c = cfg(); // 50%
        assert!(d.eject(&r, &refs, &eps[0], 0, &c));
        assert!(d.eject(&r, &refs, &eps[1], 0, &c));
        assert!(!d.eject(&r, &refs, &eps[2], 0, &c), "a third would be 75% > 50%");
        // With 10% and 3 endpoints, one may still go.
        let (r, eps) = cluster(3);
        let refs: Vec<_> = eps.iter().collect();
        let mut c = cfg();
        c.max_ejection_percent = 10.0;
        assert!(d.eject(&r, &refs, &eps[0], 0, &c));
        assert!(!d.eject(&r, &refs, &eps[1], 0, &c));
    }

    #[test]
    fn success_rate_ejects_the_outlier() {
        let d = Detector::default();
        let (r, eps) = cluster(6);
        let refs: Vec<_> = eps.iter().collect();
        let c = cfg();
        for (i, e) in eps.iter().enumerate() {
            for k in 0..200 {
                let ok = if i == 5 { k % 2 == 0 } else { k % 50 != 0 };
                d.record(e, if ok { Outcome::Success } else { Outcome::ServerError }, &{
                    let mut c = c.clone();
                    c.consecutive_5xx = 0;
                    c.consecutive_gateway_failure = 0;
                    c
                });
            }
        }
        let out = d.tick_cluster(&r, &refs, 0, &c);
        assert_eq!(out.len(), 1);
        assert!(Arc::ptr_eq(&out[0], &eps[5]));
        // Below minimum hosts nothing happens.
        let (r, eps) = cluster(4);
        for e in &eps {
            for _ in 0..200 {
                d.record(e, Outcome::ServerError, &{
                    let mut c = c.clone();
                    c.consecutive_5xx = 0;
                    c.consecutive_gateway_failure = 0;
                    c
                });
            }
        }
        assert!(d.tick_cluster(&r, &eps.iter().collect::<Vec<_>>(), 0, &c).is_empty());
    }
}
