//! One collection round of a region's control loop: for every endpoint of the region's models,
//! its readiness (the model's health check path) and its GPU telemetry (the endpoint's own
//! Prometheus metrics), turned into the endpoint list of the state feed. Telemetry that stops
//! arriving ages into "unknown" after `stale_after_intervals`; a GPU fault drains the endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_clock::Clock;

use meridian_config::feed::FeedEndpoint;
use meridian_config::schema::TelemetrySource;
use meridian_config::Snapshot;

use crate::headroom::{score, server_report, Scoring, Signals};

/// An endpoint to watch and where to look.
#[derive(Clone, Debug)]
pub struct Target {
    /// What the feed says about it, before this round's findings.
    pub endpoint: FeedEndpoint,
    /// Readiness URL.
    pub ready_url: String,
    /// Prometheus metrics URL.
    pub metrics_url: String,
    /// Readiness by Kubernetes (with why not), for discovered endpoints; both it and the
    /// readiness check must pass.
    pub kube_ready: Option<(bool, Option<String>)>,
}

/// The endpoints of `region`'s models in the config (static endpoints; discovery adds more).
/// With the `gpu-agent` source, telemetry comes from the agent on the endpoint's host.
pub fn static_targets(snap: &Snapshot, region: &str) -> Vec<Target> {
    let telemetry = &snap.config.control.telemetry;
    let mut out = Vec::new();
    for (m, model) in snap.config.models.iter().enumerate() {
        let health_path = &snap.models[m].policy.health_check.path;
        for v in &model.versions {
            for e in v.endpoints.iter().filter(|e| e.region == region) {
                out.push(Target {
                    endpoint: FeedEndpoint {
                        id: e.id.clone().unwrap_or_else(|| e.address.to_string()),
                        address: e.address,
                        grpc_port: e.grpc_port,
                        model: model.name.clone(),
                        version: v.name.clone(),
                        region: e.region.clone(),
                        zone: e.zone.clone(),
                        ready: false,
                        headroom: None,
                        server: None,
                        drained: false,
                        reason: None,
                    },
                    ready_url: format!("http://{}{health_path}", e.address),
                    kube_ready: None,
                    metrics_url: match telemetry.source {
                        TelemetrySource::GpuAgent => {
                            format!(
                                "http://{}/metrics",
                                SocketAddr::new(e.address.ip(), telemetry.agent_port)
                            )
                        }
                        _ => e
                            .metrics_url
                            .clone()
                            .unwrap_or_else(|| format!("http://{}/metrics", e.address)),
                    },
                });
            }
        }
    }
    out
}

/// Collects rounds, remembering each endpoint's last telemetry between them.
pub struct Collector {
    client: reqwest::Client,
    /// Telemetry ages count in this clock's monotonic seconds.
    clock: Arc<dyn Clock>,
    last: HashMap<String, Signals>,
}

impl Collector {
    /// A collector reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Collector {
        Collector {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(2)
                .build()
                .unwrap_or_default(),
            clock,
            last: HashMap::new(),
        }
    }
}

/// The outcome of one round.
pub struct Round {
    /// The endpoints, with this round's readiness, headroom and drains.
    pub endpoints: Vec<FeedEndpoint>,
    /// Scrapes that failed (unreachable, not Prometheus text).
    pub scrape_errors: u64,
}

impl Collector {
    /// Probes and scrapes every target once (concurrently, each bounded by `timeout`).
    pub async fn round(
        &mut self,
        targets: &[Target],
        source: TelemetrySource,
        timeout: Duration,
        scoring: &Scoring,
    ) -> Round {
        let probes = targets.iter().map(|t| {
            let client = self.client.clone();
            async move {
                let ready = matches!(
                    client.get(&t.ready_url).timeout(timeout).send().await,
                    Ok(r) if r.status().is_success()
                );
                let text = match source {
                    TelemetrySource::Metrics | TelemetrySource::GpuAgent => {
                        match client.get(&t.metrics_url).timeout(timeout).send().await {
                            Ok(r) if r.status().is_success() => r.text().await.ok(),
                            _ => None,
                        }
                    }
                    TelemetrySource::None => None,
                };
                (ready, text)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        let now = self.clock.now() as f64 / 1e9;
        let mut scrape_errors = 0;
        let endpoints = targets
            .iter()
            .zip(results)
            .map(|(t, (ready, text))| {
                let mut e = t.endpoint.clone();
                if let Some(text) = text {
                    match crate::scrape::signals(&text, now) {
                        Ok(s) => {
                            self.last.insert(e.id.clone(), s);
                        }
                        Err(_) => scrape_errors += 1,
                    }
                } else if source != TelemetrySource::None {
                    scrape_errors += 1;
                }
                let verdict = self.last.get(&e.id).map(|s| score(s, now, scoring));
                let faulted = verdict.is_some_and(|h| h.faulted);
                let (kube_ready, kube_why) = t.kube_ready.clone().unwrap_or((true, None));
                e.ready = ready && kube_ready;
                e.headroom = verdict.and_then(|h| h.score);
                e.server = self.last.get(&e.id).and_then(|s| server_report(s, now, scoring));
                // A node's drain (cordon, NoExecute taint) came with the target; a GPU fault adds one.
                e.reason = if faulted {
                    Some("GPU fault reported (XID/ECC)".into())
                } else if e.drained || !kube_ready {
                    kube_why
                } else if !ready {
                    Some("readiness check failing".into())
                } else {
                    None
                };
                e.drained |= faulted;
                e
            })
            .collect();
        Round {
            endpoints,
            scrape_errors,
        }
    }
}
