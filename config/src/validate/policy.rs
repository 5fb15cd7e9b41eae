//! Checks of a traffic policy, shared by the gateway defaults and each model's overrides.

use super::context::Ctx;
use crate::schema::{GatewayPolicy, HealthCheck, Limits, OutlierDetection, Retries, Timeouts};

/// Checks the gateway-wide policy at `at`.
pub(super) fn check(cx: &mut Ctx<'_>, at: &str, p: &GatewayPolicy) {
    if p.locality.overprovisioning_factor < 1.0 {
        cx.err(
            format!("{at}.locality.overprovisioning_factor"),
            format!(
                "{} is below 1.0; the factor only ever adds headroom",
                p.locality.overprovisioning_factor
            ),
        );
    }
    cx.percent(format!("{at}.locality.panic_threshold"), p.locality.panic_threshold);
    health_check(cx, &format!("{at}.health_check"), &p.health_check);
    outlier(cx, &format!("{at}.outlier_detection"), &p.outlier_detection);
    retries(cx, &format!("{at}.retries"), &p.retries);
    timeouts(cx, &format!("{at}.timeouts"), &p.timeouts);
    limits(cx, &format!("{at}.limits"), &p.limits);
}

pub(super) fn health_check(cx: &mut Ctx<'_>, at: &str, h: &HealthCheck) {
    if !h.path.starts_with('/') {
        cx.err(format!("{at}.path"), format!("`{}` must start with /", h.path));
    }
    positive(cx, at, "interval", h.interval);
    positive(cx, at, "timeout", h.timeout);
    at_least_one(cx, at, "healthy_threshold", h.healthy_threshold);
    at_least_one(cx, at, "unhealthy_threshold", h.unhealthy_threshold);
}

pub(super) fn outlier(cx: &mut Ctx<'_>, at: &str, o: &OutlierDetection) {
    positive(cx, at, "interval", o.interval);
    positive(cx, at, "base_ejection_time", o.base_ejection_time);
    if o.max_ejection_time < o.base_ejection_time {
        cx.err(
            format!("{at}.max_ejection_time"),
            format!(
                "{} is shorter than base_ejection_time {}",
                o.max_ejection_time, o.base_ejection_time
            ),
        );
    }
    cx.percent(format!("{at}.max_ejection_percent"), o.max_ejection_percent);
    if o.success_rate.stdev_factor <= 0.0 {
        cx.err(format!("{at}.success_rate.stdev_factor"), "must be greater than 0");
    }
}

pub(super) fn retries(cx: &mut Ctx<'_>, at: &str, r: &Retries) {
    cx.percent(format!("{at}.budget_percent"), r.budget_percent);
    if r.attempts > 10 {
        cx.err(
            format!("{at}.attempts"),
            format!(
                "{} retries is more than 10; retries multiply load on a struggling fleet",
                r.attempts
            ),
        );
    }
}

pub(super) fn timeouts(cx: &mut Ctx<'_>, at: &str, t: &Timeouts) {
    for (name, d) in [
        ("connect", t.connect),
        ("first_byte", t.first_byte),
        ("request", t.request),
        ("stream", t.stream),
        ("idle", t.idle),
        ("client_header", t.client_header),
        ("keepalive", t.keepalive),
    ] {
        positive(cx, at, name, d);
    }
}

pub(super) fn limits(cx: &mut Ctx<'_>, at: &str, l: &Limits) {
    at_least_one(cx, at, "per_endpoint_concurrency", l.per_endpoint_concurrency);
    if l.per_model_concurrency == Some(0) {
        cx.err(format!("{at}.per_model_concurrency"), "must be at least 1");
    }
    if l.max_request_headers.bytes() < 1024 {
        cx.err(format!("{at}.max_request_headers"), "must be at least 1KiB");
    }
    positive(cx, &format!("{at}.queue"), "timeout", l.queue.timeout);
    cx.percent(format!("{at}.shed_sheddable_at"), l.shed_sheddable_at);
    if l.priority_header.parse::<http::HeaderName>().is_err() {
        cx.err(
            format!("{at}.priority_header"),
            format!("`{}` is not a valid header name", l.priority_header),
        );
    }
}

fn positive(cx: &mut Ctx<'_>, at: &str, field: &str, d: crate::units::Duration) {
    if d.get().is_zero() {
        cx.err(format!("{at}.{field}"), "must be longer than 0s");
    }
}

fn at_least_one(cx: &mut Ctx<'_>, at: &str, field: &str, n: u32) {
    if n == 0 {
        cx.err(format!("{at}.{field}"), "must be at least 1");
    }
}
