//! Semantic checks beyond the types: references, uniqueness, weights, addresses, files.
//!
//! Each check records `(field path, message)` and carries on, so the operator sees every problem in
//! one run. The loader turns paths into file positions.

mod canary;
mod context;
mod dns;
mod models;
mod policy;
mod regions;
mod tls;

use std::path::Path;

use crate::schema::Config;
use context::{check_http_url, Ctx};

/// Runs every semantic check; an empty result means the config is valid.
pub(crate) fn validate(config: &Config, base_dir: &Path) -> Vec<(String, String)> {
    let mut cx = Ctx::new(config, base_dir);
    regions::check(&mut cx);
    policy::check(&mut cx, "gateway", &config.gateway);
    models::check(&mut cx);
    dns::check(&mut cx);
    canary::check(&mut cx);
    observability(&mut cx);
    kserve(&mut cx);
    cx.errors
}

fn kserve(cx: &mut Ctx<'_>) {
    let Some(k) = &cx.cfg.control.kserve else {
        return;
    };
    if k.namespaces.is_empty() {
        cx.err("control.kserve.namespaces", "name at least one namespace to watch");
    }
    for (i, ns) in k.namespaces.iter().enumerate() {
        cx.name(format!("control.kserve.namespaces[{i}]"), "namespace", ns);
    }
}

fn observability(cx: &mut Ctx<'_>) {
    let t = &cx.cfg.observability.tracing;
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        cx.err(
            "observability.tracing.sampling_ratio",
            format!("{} is not a ratio between 0 and 1", t.sampling_ratio),
        );
    }
    if let Some(url) = &t.otlp_endpoint {
        check_http_url(cx, "observability.tracing.otlp_endpoint".into(), url);
    }
}
