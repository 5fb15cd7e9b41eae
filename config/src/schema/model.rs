//! Models, their versions and endpoints (static or discovered), and the routing rules that pick a
//! version.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Balancer, HealthCheck, Limits, LlmRouting, OutlierDetection, PriorityClass, Retries, Scale, Timeouts};

/// A model served behind the gateway, e.g. `sklearn-iris`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Model name as clients send it in paths (`/v2/models/{name}/infer`) or the OpenAI `model` field.
    pub name: String,
    /// Versions of the model, each with its own endpoints.
    pub versions: Vec<Version>,
    /// Ordered routing rules; the first that matches picks the version. A model with one version
    /// needs none; a model with several needs a last rule without `match`.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Overrides the gateway's health checks for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Overrides the gateway's outlier detection for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Overrides the gateway's retries for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Overrides the gateway's timeouts for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Overrides the gateway's limits for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// How requests are spread over a locality level's endpoints.
    #[serde(default, skip_serializing_if = "is_default")]
    pub balancer: Balancer,
    /// LLM-aware routing of the model's OpenAI-style requests (prefix-cache affinity, the model
    /// servers' queues, KV cache and LoRA adapters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmRouting>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One version of a model and where it runs.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// Version name, e.g. `v1`; clients pin it with `/versions/{name}` or `x-model-version`.
    pub name: String,
    /// Static endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Endpoints discovered at run time by the control loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// How the gateway talks to this version's endpoints.
    #[serde(default)]
    pub upstream: Upstream,
    /// Scaling by the region's control loop, from zero included; absent: not scaled by Meridian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
}

/// A static backend endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Stable id for the admin API and metrics; defaults to the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Backend socket address (REST: KServe V1, Open Inference Protocol, OpenAI; health checks).
    pub address: SocketAddr,
    /// Port on the same host where the endpoint serves gRPC (KServe's 8081, Triton's 8001): the
    /// model's gRPC calls go there over HTTP/2, REST to `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// Region the endpoint runs in.
    pub region: String,
    /// Zone the endpoint runs in; must belong to `region`.
    pub zone: String,
    /// Relative weight inside its locality level, 1..=1000.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// URL of its Prometheus metrics (Triton or vLLM) for GPU headroom; default `http://<address>/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// A run-time source of endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Discovery {
    /// Kubernetes EndpointSlices of a Service, or Pods by label selector.
    Kubernetes(KubeDiscovery),
}

/// Kubernetes discovery of one version's endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeDiscovery {
    /// Namespace to watch.
    pub namespace: String,
    /// Service whose EndpointSlices hold the endpoints; exclusive with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Pod labels that select the endpoints; exclusive with `service`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Target port number of the endpoints (REST); a slice port (or container port) named
    /// `port_name` wins.
    pub port: u16,
    /// Target port of their gRPC service, when they serve one; a port named `grpc_port_name` wins.
    /// Set, the version takes gRPC calls (over HTTP/2 to that port) beside REST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// Name of the REST port in the EndpointSlice or pod spec.
    #[serde(default = "default_http_port_name")]
    pub port_name: String,
    /// Name of the gRPC port in the EndpointSlice or pod spec.
    #[serde(default = "default_grpc_port_name")]
    pub grpc_port_name: String,
}

fn default_http_port_name() -> String {
    "http".into()
}

fn default_grpc_port_name() -> String {
    "grpc".into()
}

impl Version {
    /// Whether the version takes gRPC calls: its upstream speaks HTTP/2, or its endpoints have a
    /// gRPC port.
    pub fn serves_grpc(&self) -> bool {
        let discovered = matches!(&self.discovery, Some(Discovery::Kubernetes(k)) if k.grpc_port.is_some());
        self.upstream.h2 || discovered || self.endpoints.iter().any(|e| e.grpc_port.is_some())
    }
}

/// How the gateway connects to a version's endpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// Speak HTTP/2 to the endpoints (required for gRPC).
    pub h2: bool,
    /// TLS to the endpoints; absent for plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// TLS from the gateway to backends.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA bundle (PEM) to verify backends against; the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Server name to send and verify; the endpoint's IP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A routing rule: requests that match go to one version or a weighted split.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Rule name, for metrics, logs and canary plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, all of which must hold; absent matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<RouteMatch>,
    /// Send every matching request to this version; exclusive with `split`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Weighted split across versions, weights summing to 100; exclusive with `version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<WeightedVersion>,
    /// What keeps a client on one version of a split; the client address when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyKey>,
    /// Mirror a share of this rule's traffic to another version; responses are discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    /// Priority class of requests on this rule that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityClass>,
}

/// Conditions of a routing rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

/// One header condition: exactly one of `exact`, `prefix`, `regex`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    pub name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A version and its share of a split.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedVersion {
    /// Version name.
    pub version: String,
    /// Percent of the rule's traffic, 0..=100.
    pub weight: u32,
}

/// Where a split's sticky key comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum StickyKey {
    /// A request header, e.g. `x-user-id`.
    Header(String),
    /// A cookie, e.g. `session`.
    Cookie(String),
}

/// Mirrored traffic.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// Version that receives the copies.
    pub version: String,
    /// Percent of the rule's requests copied, 0..=100.
    pub percent: f64,
}
