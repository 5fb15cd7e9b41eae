//! Model checks: versions, endpoints and their localities, discovery, routing rules, overrides.

use std::collections::{HashMap, HashSet};

use super::context::Ctx;
use super::policy;
use crate::schema::{Discovery, LlmRouting, Model, Route, Scale, Version};

pub(super) fn check(cx: &mut Ctx<'_>) {
    let cfg = cx.cfg;
    cx.unique(
        "model",
        cfg.models
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("models[{i}].name"), m.name.as_str())),
    );
    let mut ids: HashMap<String, (String, std::net::SocketAddr)> = HashMap::new();
    for (i, m) in cfg.models.iter().enumerate() {
        let at = format!("models[{i}]");
        cx.name(format!("{at}.name"), "model name", &m.name);
        versions(cx, &at, m, &mut ids);
        routes(cx, &at, m);
        if let Some(h) = &m.health_check {
            policy::health_check(cx, &format!("{at}.health_check"), h);
        }
        if let Some(o) = &m.outlier_detection {
            policy::outlier(cx, &format!("{at}.outlier_detection"), o);
        }
        if let Some(r) = &m.retries {
            policy::retries(cx, &format!("{at}.retries"), r);
        }
        if let Some(t) = &m.timeouts {
            policy::timeouts(cx, &format!("{at}.timeouts"), t);
        }
        if let Some(l) = &m.limits {
            policy::limits(cx, &format!("{at}.limits"), l);
        }
        if let Some(l) = &m.llm {
            llm(cx, &format!("{at}.llm"), l);
        }
    }
    // A LoRA adapter is asked for by naming it as the model: names must not collide.
    let mut named: HashMap<&str, String> = cfg
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), format!("models[{i}].name")))
        .collect();
    for (i, m) in cfg.models.iter().enumerate() {
        for (j, a) in m.llm.iter().flat_map(|l| l.adapters.iter().enumerate()) {
            let path = format!("models[{i}].llm.adapters[{j}]");
            match named.get(a.as_str()) {
                Some(first) => cx.err(
                    path,
                    format!("adapter `{a}` is already a model or adapter name at {first}"),
                ),
                None => {
                    named.insert(a, path);
                }
            }
        }
    }
}

fn llm(cx: &mut Ctx<'_>, at: &str, l: &LlmRouting) {
    for (field, v) in [("block_tokens", l.block_tokens), ("bytes_per_token", l.bytes_per_token)] {
        if v == 0 {
            cx.err(format!("{at}.{field}"), "must be at least 1");
        }
    }
    if l.index_blocks < 64 {
        cx.err(
            format!("{at}.index_blocks"),
            format!("{} is below the 64 blocks an index needs", l.index_blocks),
        );
    }
    if l.max_blocks == 0 {
        cx.err(format!("{at}.max_blocks"), "must be at least 1");
    }
    if !(0.0..=1.0).contains(&l.prefix_threshold) {
        cx.err(
            format!("{at}.prefix_threshold"),
            format!("{} is outside 0..=1", l.prefix_threshold),
        );
    }
    let w = &l.weights;
    let weights = [
        ("prefix", w.prefix),
        ("queue", w.queue),
        ("kv_cache", w.kv_cache),
        ("lora", w.lora),
        ("load", w.load),
    ];
    for (field, v) in weights {
        if !(v >= 0.0 && v.is_finite()) {
            cx.err(
                format!("{at}.weights.{field}"),
                format!("weight {v} must be a number of 0 or more"),
            );
        }
    }
    if weights.iter().all(|(_, v)| *v == 0.0) {
        cx.err(format!("{at}.weights"), "at least one weight must be above 0");
    }
    for (j, a) in l.adapters.iter().enumerate() {
        cx.name(format!("{at}.adapters[{j}]"), "adapter name", a);
    }
    if let Some(t) = &l.token_limit {
        if t.tokens_per_minute == 0 {
            cx.err(format!("{at}.token_limit.tokens_per_minute"), "must be at least 1");
        }
        if t.burst == Some(0) {
            cx.err(format!("{at}.token_limit.burst"), "must be at least 1");
        }
        if http::HeaderName::from_bytes(t.tenant_header.as_bytes()).is_err() {
            cx.err(
                format!("{at}.token_limit.tenant_header"),
                format!("`{}` is not a header name", t.tenant_header),
            );
        }
    }
}

/// A version's scaling: sane bounds, and a workload to scale.
fn scale(cx: &mut Ctx<'_>, at: &str, v: &Version, sc: &Scale) {
    if sc.max == 0 {
        cx.err(format!("{at}.max"), "max must be at least 1");
    }
    if sc.min > sc.max {
        cx.err(format!("{at}.min"), format!("min {} is above max {}", sc.min, sc.max));
    }
    if sc.target_concurrency == 0 {
        cx.err(
            format!("{at}.target_concurrency"),
            "target_concurrency must be at least 1",
        );
    }
    if sc.max_held == 0 {
        cx.err(format!("{at}.max_held"), "max_held must be at least 1");
    }
    if sc.activation_timeout.get().is_zero() {
        cx.err(
            format!("{at}.activation_timeout"),
            "activation_timeout must be above zero",
        );
    }
    if v.workload().is_none() {
        cx.err(
            format!("{at}.workload"),
            "name the workload to scale, or discover the version from a Kubernetes Service (its Deployment is scaled)",
        );
    }
}

fn versions(cx: &mut Ctx<'_>, at: &str, m: &Model, ids: &mut HashMap<String, (String, std::net::SocketAddr)>) {
    if m.versions.is_empty() {
        cx.err(format!("{at}.versions"), "a model needs at least one version");
    }
    cx.unique(
        "version",
        m.versions
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("{at}.versions[{j}].name"), v.name.as_str())),
    );
    for (j, v) in m.versions.iter().enumerate() {
        let vat = format!("{at}.versions[{j}]");
        cx.name(format!("{vat}.name"), "version name", &v.name);
        if v.endpoints.is_empty() && v.discovery.is_none() {
            cx.err(
                format!("{vat}.endpoints"),
                "a version needs static endpoints or a discovery source",
            );
        }
        if let Some(sc) = &v.scale {
            scale(cx, &format!("{vat}.scale"), v, sc);
        }
        let mut addrs = HashSet::new();
        for (k, e) in v.endpoints.iter().enumerate() {
            let eat = format!("{vat}.endpoints[{k}]");
            if !addrs.insert(e.address) {
                cx.err(
                    format!("{eat}.address"),
                    format!("endpoint {} is listed twice in this version", e.address),
                );
            }
            if let Some(region) = cx.region(format!("{eat}.region"), &e.region) {
                if !region.zones.contains(&e.zone) {
                    cx.err(
                        format!("{eat}.zone"),
                        format!(
                            "zone `{}` is not in region `{}` (zones: {})",
                            e.zone,
                            e.region,
                            region.zones.join(", ")
                        ),
                    );
                }
            }
            if !(1..=1000).contains(&e.weight) {
                cx.err(
                    format!("{eat}.weight"),
                    format!("weight {} is outside 1..=1000", e.weight),
                );
            }
            let id = e.id.clone().unwrap_or_else(|| e.address.to_string());
            match ids.get(&id) {
                Some((first, addr)) if *addr != e.address => {
                    cx.err(
                        format!("{eat}.id"),
                        format!("endpoint id `{id}` already names {addr} at {first}"),
                    );
                }
                Some(_) => {}
                None => {
                    ids.insert(id, (eat.clone(), e.address));
                }
            }
            if let Some(url) = &e.metrics_url {
                super::check_http_url(cx, format!("{eat}.metrics_url"), url);
            }
        }
        if let Some(Discovery::Kubernetes(k)) = &v.discovery {
            let dat = format!("{vat}.discovery.kubernetes");
            if k.namespace.is_empty() {
                cx.err(format!("{dat}.namespace"), "namespace is required");
            }
            match (&k.service, k.selector.is_empty()) {
                (Some(_), false) => cx.err(dat.clone(), "set `service` or `selector`, not both"),
                (None, true) => cx.err(dat.clone(), "set `service` or `selector`"),
                _ => {}
            }
            if k.port == 0 {
                cx.err(format!("{dat}.port"), "port must be 1..=65535");
            }
        }
        if let Some(ca) = v.upstream.tls.as_ref().and_then(|t| t.ca.as_ref()) {
            if let Err(e) = crate::pem::certs(&cx.base_dir.join(ca)) {
                cx.err(format!("{vat}.upstream.tls.ca"), e.to_string());
            }
        }
    }
}

fn routes(cx: &mut Ctx<'_>, at: &str, m: &Model) {
    let versions: HashSet<&str> = m.versions.iter().map(|v| v.name.as_str()).collect();
    let known = || {
        let mut v: Vec<_> = m.versions.iter().map(|v| v.name.as_str()).collect();
        v.sort_unstable();
        v.join(", ")
    };
    cx.unique(
        "route",
        m.routes
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.name.as_deref().map(|n| (format!("{at}.routes[{k}].name"), n))),
    );
    let mut catch_all: Option<usize> = None;
    for (k, r) in m.routes.iter().enumerate() {
        let rat = format!("{at}.routes[{k}]");
        if let Some(first) = catch_all {
            cx.err(
                rat.clone(),
                format!("unreachable: routes[{first}] has no `match` and takes every request before this rule"),
            );
        }
        if r.matches.as_ref().is_none_or(|mt| mt.headers.is_empty()) {
            catch_all.get_or_insert(k);
        }
        matches(cx, &rat, r);
        match (&r.version, r.split.is_empty()) {
            (Some(_), false) => cx.err(rat.clone(), "set `version` or `split`, not both"),
            (None, true) => cx.err(rat.clone(), "set `version` or `split`"),
            (Some(v), true) if !versions.contains(v.as_str()) => {
                cx.err(
                    format!("{rat}.version"),
                    format!("unknown version `{v}` of model `{}` (versions: {})", m.name, known()),
                );
            }
            _ => {}
        }
        if !r.split.is_empty() {
            let mut seen = HashSet::new();
            for (s, w) in r.split.iter().enumerate() {
                if !versions.contains(w.version.as_str()) {
                    cx.err(
                        format!("{rat}.split[{s}].version"),
                        format!(
                            "unknown version `{}` of model `{}` (versions: {})",
                            w.version,
                            m.name,
                            known()
                        ),
                    );
                } else if !seen.insert(w.version.as_str()) {
                    cx.err(
                        format!("{rat}.split[{s}].version"),
                        format!("version `{}` appears twice in this split", w.version),
                    );
                }
            }
            let sum: u64 = r.split.iter().map(|w| u64::from(w.weight)).sum();
            if sum != 100 {
                cx.err(format!("{rat}.split"), format!("weights sum to {sum}, must be 100"));
            }
        } else if r.sticky.is_some() {
            cx.err(format!("{rat}.sticky"), "`sticky` only applies to a `split`");
        }
        if let Some(sh) = &r.shadow {
            if !versions.contains(sh.version.as_str()) {
                cx.err(
                    format!("{rat}.shadow.version"),
                    format!(
                        "unknown version `{}` of model `{}` (versions: {})",
                        sh.version,
                        m.name,
                        known()
                    ),
                );
            }
            cx.percent(format!("{rat}.shadow.percent"), sh.percent);
        }
    }
    if m.versions.len() > 1 && catch_all.is_none() {
        cx.err(
            format!("{at}.routes"),
            format!(
                "model `{}` has {} versions but no rule without `match`; add a last rule that routes every other request",
                m.name,
                m.versions.len()
            ),
        );
    }
}

fn matches(cx: &mut Ctx<'_>, rat: &str, r: &Route) {
    let Some(mt) = &r.matches else { return };
    for (h, hm) in mt.headers.iter().enumerate() {
        let hat = format!("{rat}.match.headers[{h}]");
        if hm.name.parse::<http::HeaderName>().is_err() {
            cx.err(
                format!("{hat}.name"),
                format!("`{}` is not a valid header name", hm.name),
            );
        }
        let set = [hm.exact.is_some(), hm.prefix.is_some(), hm.regex.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            cx.err(hat.clone(), "set exactly one of `exact`, `prefix`, `regex`");
        }
        if let Some(re) = &hm.regex {
            if let Err(e) = regex::Regex::new(re) {
                let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                cx.err(format!("{hat}.regex"), format!("invalid regular expression: {first}"));
            }
        }
    }
}
