//! Active health checks: an HTTP GET per endpoint every interval, verified over TLS as the proxy
//! would; what a result does to the endpoint (thresholds, ejections ended) is decided by
//! [`meridian_gateway_core::health::apply`]. The gateway turns ready once every endpoint has one
//! result.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::schema::HealthCheck;
use meridian_gateway_core::endpoint::{flags, EndpointState};
use tokio::task::JoinHandle;

use crate::lifecycle::Lifecycle;
use crate::routes::Routing;
use crate::upstream_tls::UpstreamTls;

/// What the health checks read and write.
pub struct Checker {
    /// Which endpoints exist and their check settings; the states results land in, and the
    /// detector whose ejections a passing check ends.
    pub routing: Arc<Routing>,
    /// Marked checked once every endpoint has a first result.
    pub lifecycle: Arc<Lifecycle>,
}

/// The health check policy and upstream TLS of the first model version that has this endpoint.
fn settings_for(routing: &Routing, ep: &EndpointState) -> Option<(HealthCheck, Option<Arc<UpstreamTls>>)> {
    let routes = routing.routes.load();
    let found = routes.versions().find_map(|(m, _, version)| {
        version
            .cluster
            .endpoints()
            .any(|e| e.address == ep.address)
            .then(|| (routes.snap.models[m].policy.health_check.clone(), version.tls.clone()))
    });
    found
}

/// A TLS checker for one endpoint, verifying it as the proxy does (same anchors, same server
/// name); returns the client and the URL base.
fn tls_checker(t: &UpstreamTls, addr: SocketAddr) -> (reqwest::Client, String) {
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

async fn check_once(client: &reqwest::Client, base: &str, hc: &HealthCheck) -> bool {
    let url = format!("{base}{}", hc.path);
    match client.get(url).timeout(hc.timeout.get()).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

async fn watch_endpoint(checker: Arc<Checker>, ep: Arc<EndpointState>, plain: reqwest::Client) {
    // Rebuilt only when a reload changes the endpoint's TLS settings.
    let mut tls_client: Option<(Arc<UpstreamTls>, reqwest::Client, String)> = None;
    let plain_base = format!("http://{}", ep.address);
    loop {
        let Some((hc, tls)) = settings_for(&checker.routing, &ep) else {
            return;
        };
        if !hc.enabled {
            ep.mark_checked();
            checker.routing.registry.set_flag(&ep, flags::UNHEALTHY, false);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let (client, base) = match tls {
            None => (&plain, plain_base.as_str()),
            Some(t) => {
                if !tls_client.as_ref().is_some_and(|(cur, _, _)| Arc::ptr_eq(cur, &t)) {
                    let (c, base) = tls_checker(&t, ep.address);
                    tls_client = Some((t, c, base));
                }
                let (_, c, base) = tls_client.as_ref().expect("set above");
                (c, base.as_str())
            }
        };
        let passed = check_once(client, base, &hc).await;
        if meridian_gateway_core::health::apply(&checker.routing.registry, &checker.routing.detector, &ep, passed, &hc)
        {
            tracing::info!(endpoint = %ep.id, passed, "health changed");
            checker.routing.routes.load().release_ready();
        }
        tokio::time::sleep(hc.interval.get()).await;
    }
}

impl Checker {
    /// Keeps one checking task per endpoint in the current routing table, following reloads, and
    /// marks the gateway ready once every endpoint has been checked once.
    pub async fn supervise(self: Arc<Self>) {
        // One connection per endpoint: each is checked by its own task, one request at a time.
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build();
        let client = client.unwrap_or_default();
        let mut tasks: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
        loop {
            let current = self.routing.registry.all();
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
                    .or_insert_with(|| tokio::spawn(watch_endpoint(self.clone(), ep.clone(), client.clone())));
            }
            if !self.lifecycle.checked() && current.iter().all(|e| e.checked_once()) {
                self.lifecycle.mark_checked();
                tracing::info!(endpoints = current.len(), "first health round done; ready");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
