//! Active health check results with their thresholds: consecutive failures past the unhealthy
//! threshold take an endpoint out, consecutive passes past the healthy threshold bring it back, the
//! first result decides at once (a new endpoint is neither trusted nor doubted for a whole streak),
//! and a pass ends an outlier ejection early (Envoy's default). Sending the checks is the shell's.

use meridian_config::schema::HealthCheck;

use crate::endpoint::{flags, EndpointState, Registry};
use crate::outlier::Detector;

/// Applies one check result; returns true when the endpoint's availability changed.
pub fn apply(registry: &Registry, detector: &Detector, ep: &EndpointState, passed: bool, hc: &HealthCheck) -> bool {
    let (first, streak) = ep.record_check(passed);
    let unhealthy = ep.flags() & flags::UNHEALTHY != 0;
    let mut changed = false;
    if passed {
        if ep.flags() & flags::EJECTED != 0 {
            detector.uneject(registry, ep);
            changed = true;
        }
        if unhealthy && (first || streak >= hc.healthy_threshold as i32) {
            changed |= registry.set_flag(ep, flags::UNHEALTHY, false);
        }
    } else if !unhealthy && (first || -streak >= hc.unhealthy_threshold as i32) {
        changed |= registry.set_flag(ep, flags::UNHEALTHY, true);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_the_first_result() {
        let (r, d) = (Registry::default(), Detector::default());
        let ep = r.get_or_create(&"e".into(), "127.0.0.1:1".parse().unwrap());
        let hc = HealthCheck {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            ..HealthCheck::default()
        };
        assert!(apply(&r, &d, &ep, false, &hc), "the first failure counts at once");
        assert!(ep.checked_once() && !ep.available());
        assert!(!apply(&r, &d, &ep, true, &hc), "one pass is not two");
        assert!(apply(&r, &d, &ep, true, &hc));
        assert!(ep.available());
        assert!(!apply(&r, &d, &ep, false, &hc));
        assert!(!apply(&r, &d, &ep, false, &hc));
        assert!(apply(&r, &d, &ep, false, &hc), "the third failure in a row");
        r.set_flag(&ep, flags::UNHEALTHY, false);
        r.set_flag(&ep, flags::EJECTED, true);
        assert!(apply(&r, &d, &ep, true, &hc), "a pass ends an ejection");
        assert!(ep.available());
    }
}
