//! The state feed: what a region's control loop knows about its endpoints, served over HTTP with
//! long-poll by version (`GET /v1/state?after=V&wait=10s`). Gateways merge it into their routing
//! table (discovered endpoints, readiness, GPU headroom, drains); DNS servers read each region's
//! healthy capacity per model. Consumers keep their last good state when control is unreachable.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Path of the state feed on control's listener.
pub const FEED_PATH: &str = "/v1/state";

/// One version of a region's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedState {
    /// Grows with every change; 0 before the first collection.
    pub version: u64,
    /// Region this control loop watches.
    pub region: String,
    /// Every endpoint of the region's models that control knows of.
    pub endpoints: Vec<FeedEndpoint>,
    /// Endpoints able to serve, per model: ready, not drained, not faulted.
    pub capacity: BTreeMap<String, u32>,
    /// Weights of the canary plans this control loop runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<CanaryWeight>,
    /// Models control discovered (KServe InferenceServices), beside the config's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<DiscoveredModel>,
}

/// A model control found in the cluster rather than the config: its versions, and how its traffic
/// splits between them (their endpoints come on the feed like any discovered endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredModel {
    /// Model name.
    pub name: String,
    /// Versions with their share of traffic in percent (one version: 100).
    pub versions: Vec<(String, u32)>,
    /// Header that keeps a client on one version of a split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
}

impl DiscoveredModel {
    /// The model as a config entry: its versions (no endpoints of their own) and, with more than
    /// one, a split rule.
    pub fn to_model(&self) -> crate::schema::Model {
        let mut m = crate::build::model(&self.name);
        m.versions = self.versions.iter().map(|(v, _)| crate::build::version(v)).collect();
        if self.versions.len() > 1 {
            let weights: Vec<(&str, u32)> = self.versions.iter().map(|(v, w)| (v.as_str(), *w)).collect();
            m.routes = vec![crate::build::split(&weights, self.sticky_header.as_deref())];
        }
        m
    }
}

/// Adds the discovered `models` the config does not name itself; whether any was added.
pub fn apply_models(config: &mut crate::Config, models: &[DiscoveredModel]) -> bool {
    let mut changed = false;
    for d in models {
        if !config.models.iter().any(|m| m.name == d.name) {
            config.models.push(d.to_model());
            changed = true;
        }
    }
    changed
}

/// One endpoint as control sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedEndpoint {
    /// Stable id (the config's, or `namespace/pod` when discovered).
    pub id: String,
    /// Address the gateway connects to.
    pub address: SocketAddr,
    /// Its gRPC port on the same host, when it serves gRPC there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// Model served.
    pub model: String,
    /// Version served.
    pub version: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Ready to serve (its readiness check passes, or Kubernetes says ready and serving).
    pub ready: bool,
    /// GPU headroom 0..=1; absent when telemetry is missing or stale (unknown, not idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<f64>,
    /// What its model server reports of itself (queue, KV cache, LoRA adapters), for LLM-aware
    /// routing; absent when its telemetry is missing or stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerReport>,
    /// Drained by control: its GPU reported a fault (XID, ECC) or its node is cordoned.
    pub drained: bool,
    /// Why it is drained or not ready, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A model server's report of itself, as the LLM-aware pick reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    /// Requests queued.
    pub waiting: u32,
    /// Requests running.
    pub running: u32,
    /// KV-cache use, 0..=1.
    pub kv_usage: f64,
    /// LoRA adapters it can hold at once (0: no LoRA report).
    #[serde(default)]
    pub max_lora: u32,
    /// LoRA adapters loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora_running: Vec<String>,
    /// LoRA adapters requests wait for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora_waiting: Vec<String>,
    /// Tokens its KV cache holds, when it says (`vllm:cache_config_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_tokens: Option<u64>,
}

impl FeedEndpoint {
    /// Whether the endpoint counts as capacity.
    pub fn serving(&self) -> bool {
        self.ready && !self.drained
    }
}

impl FeedState {
    /// Capacity per model computed from the endpoints.
    pub fn capacity_of(endpoints: &[FeedEndpoint]) -> BTreeMap<String, u32> {
        let mut c = BTreeMap::new();
        for e in endpoints {
            *c.entry(e.model.clone()).or_insert(0) += u32::from(e.serving());
        }
        c
    }

    /// Whether two states differ in the set of endpoints a routing table is built from (so a
    /// gateway rebuilds its table only then, and otherwise only updates live flags).
    pub fn same_membership(&self, other: &FeedState) -> bool {
        // What a table is built from: identity, addresses, model, version and zone.
        type Member<'a> = (&'a str, SocketAddr, Option<u16>, &'a str, &'a str, &'a str);
        fn key(s: &FeedState) -> Vec<Member<'_>> {
            let mut k: Vec<_> = s
                .endpoints
                .iter()
                .map(|e| (&*e.id, e.address, e.grpc_port, &*e.model, &*e.version, &*e.zone))
                .collect();
            k.sort();
            k
        }
        key(self) == key(other)
    }
}

/// A canary plan's current weight, published by the control loop running it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryWeight {
    /// Plan name.
    pub plan: String,
    /// Model whose rule moves.
    pub model: String,
    /// The rule (by name; the rule without `match` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Version serving today.
    pub stable: String,
    /// Version rolling out.
    pub canary: String,
    /// Percent of the rule's traffic to the canary.
    pub weight: u32,
    /// Where the plan stands (for status pages; gateways route by `weight` alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<CanaryProgress>,
}

/// A canary plan's step and analyses, as its control loop reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryProgress {
    /// `progressing`, `paused`, `promoted`, `rolled_back` or `aborted`.
    pub phase: String,
    /// Index of the current step.
    pub step: usize,
    /// Steps in the plan.
    pub steps: usize,
    /// Failed analyses so far.
    pub failures: u32,
    /// The last analysis, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<String>,
    /// Why the plan ended as it did, or is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl FeedState {
    /// Whether two states give the same canary weights (progress aside): what a gateway's
    /// routing table depends on.
    pub fn same_canary_weights(&self, other: &FeedState) -> bool {
        let key = |s: &FeedState| -> Vec<(String, String, Option<String>, String, String, u32)> {
            s.canaries
                .iter()
                .map(|c| {
                    (
                        c.plan.clone(),
                        c.model.clone(),
                        c.route.clone(),
                        c.stable.clone(),
                        c.canary.clone(),
                        c.weight,
                    )
                })
                .collect()
        };
        key(self) == key(other)
    }
}

/// The rule of `model` a canary plan moves: the one named `route`, else the first without a
/// header match (what validation checks and what gateways rewrite).
pub fn canary_rule(model: &crate::schema::Model, route: Option<&str>) -> Option<usize> {
    match route {
        Some(name) => model.routes.iter().position(|r| r.name.as_deref() == Some(name)),
        None => model
            .routes
            .iter()
            .position(|r| r.matches.as_ref().is_none_or(|x| x.headers.is_empty())),
    }
}

/// Rewrites the rules canaries move so they split between stable and canary at the published
/// weights (stickiness unchanged); returns whether anything changed.
pub fn apply_canaries(config: &mut crate::Config, weights: &[CanaryWeight]) -> bool {
    use crate::schema::WeightedVersion;
    let mut changed = false;
    for w in weights {
        let Some(model) = config.models.iter_mut().find(|m| m.name == w.model) else {
            continue;
        };
        let Some(r) = canary_rule(model, w.route.as_deref()) else {
            continue;
        };
        let rule = &mut model.routes[r];
        let weight = w.weight.min(100);
        rule.version = None;
        rule.split = vec![
            WeightedVersion {
                version: w.stable.clone(),
                weight: 100 - weight,
            },
            WeightedVersion {
                version: w.canary.clone(),
                weight,
            },
        ];
        changed = true;
    }
    changed
}
