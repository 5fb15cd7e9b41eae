//! Active health checks: an HTTP GET per endpoint every interval; consecutive failures past the
//! unhealthy threshold take it out, consecutive passes past the healthy threshold bring it back, and
//! a pass ends an outlier ejection early (Envoy's default).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::schema::HealthCheck;
use tokio::task::JoinHandle;

use crate::endpoint::{flags, EndpointState};
use crate::state::Gateway;
use crate::upstream_tls::UpstreamTls;

/// The health check settings that apply to `ep`: those of the first model that uses it.
/// The health check policy and upstream TLS of the first model version that has this endpoint.
fn settings_for(gw: &Gateway, ep: &EndpointState) -> Option<(HealthCheck, Option<Arc<UpstreamTls>>)> {
    let routes = gw.routes.load();
    routes.clusters.iter().enumerate().find_map(|(m, versions)| {
        let v = versions
            .iter()
            .position(|c| c.endpoints().any(|e| e.address == ep.address))?;
        Some((
            routes.snap.models[m].policy.health_check.clone(),
            routes.upstream_tls[m][v].clone(),
        ))
    })
}

/// A TLS checker for one endpoint, verifying it as the proxy does (same anchors, same server
/// name); returns the client and the URL base.
fn checker(t: &UpstreamTls, addr: SocketAddr) -> (reqwest::Client, String) {
    let mut b = reqwest::Client::builder().pool_max_idle_per_host(1);
    if !t.ca_der.is_empty() {
        b = b.tls_built_in_root_certs(false);
        for der in &t.ca_der {
            if let Ok(c) = reqwest::Certificate::from_der(der) {
                b = b.add_root_certificate(c);
            }
        }
    }
    let base = match &t.server_name {
        Some(name) => {
            b = b.resolve(name, addr);
            format!("https://{name}:{}", addr.port())
        }
        None => format!("https://{addr}"),
    };
    (b.build().unwrap_or_default(), base)
}

/// Applies one check result with the thresholds; returns true when availability changed.
pub fn apply(gw: &Gateway, ep: &EndpointState, passed: bool, hc: &HealthCheck) -> bool {
    let first = !ep.checked.swap(true, Ordering::AcqRel);
    let streak = {
        let mut s = ep.check_streak.lock();
        *s = match (passed, *s) {
            (true, n) if n > 0 => n + 1,
            (true, _) => 1,
            (false, n) if n < 0 => n - 1,
            (false, _) => -1,
        };
        *s
    };
    let unhealthy = ep.flags() & flags::UNHEALTHY != 0;
    let mut changed = false;
    if passed {
        if ep.flags() & flags::EJECTED != 0 {
            gw.detector.uneject(&gw.registry, ep);
            changed = true;
        }
        if unhealthy && (first || streak >= hc.healthy_threshold as i32) {
            changed |= gw.registry.set_flag(ep, flags::UNHEALTHY, false);
        }
    } else if !unhealthy && (first || -streak >= hc.unhealthy_threshold as i32) {
        changed |= gw.registry.set_flag(ep, flags::UNHEALTHY, true);
    }
    if changed {
        tracing::info!(endpoint = %ep.id, passed, "health changed");
    }
    changed
}

async fn check_once(client: &reqwest::Client, base: &str, hc: &HealthCheck) -> bool {
    let url = format!("{base}{}", hc.path);
    match client.get(url).timeout(hc.timeout.get()).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

async fn watch_endpoint(gw: Arc<Gateway>, ep: Arc<EndpointState>, plain: reqwest::Client) {
    // Rebuilt only when a reload changes the endpoint's TLS settings.
    let mut tls_client: Option<(Arc<UpstreamTls>, reqwest::Client, String)> = None;
    let plain_base = format!("http://{}", ep.address);
    loop {
        let Some((hc, tls)) = settings_for(&gw, &ep) else {
            return;
        };
        if !hc.enabled {
            ep.checked.store(true, Ordering::Release);
            gw.registry.set_flag(&ep, flags::UNHEALTHY, false);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let (client, base) = match tls {
            None => (&plain, plain_base.as_str()),
            Some(t) => {
                if !tls_client.as_ref().is_some_and(|(cur, _, _)| Arc::ptr_eq(cur, &t)) {
                    let (c, base) = checker(&t, ep.address);
                    tls_client = Some((t, c, base));
                }
                let (_, c, base) = tls_client.as_ref().expect("set above");
                (c, base.as_str())
            }
        };
        let passed = check_once(client, base, &hc).await;
        apply(&gw, &ep, passed, &hc);
        tokio::time::sleep(hc.interval.get()).await;
    }
}

/// Keeps one checking task per endpoint in the current routing table, following reloads, and marks
/// the gateway ready once every endpoint has been checked once.
pub async fn supervise(gw: Arc<Gateway>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap_or_default();
    let mut tasks: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
    loop {
        let current = gw.registry.all();
        tasks.retain(|addr, h| {
            let keep = current.iter().any(|e| e.address == *addr);
            if !keep {
                h.abort();
            }
            keep
        });
        for ep in &current {
            tasks
                .entry(ep.address)
                .or_insert_with(|| tokio::spawn(watch_endpoint(gw.clone(), ep.clone(), client.clone())));
        }
        if !gw.ready.load(Ordering::Relaxed) && current.iter().all(|e| e.checked.load(Ordering::Acquire)) {
            gw.ready.store(true, Ordering::Release);
            tracing::info!(endpoints = current.len(), "first health round done; ready");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
