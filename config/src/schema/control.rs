//! The `control` section: where control loops read cluster and GPU health, and the canary plans
//! they run.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// Where the control loops read cluster and GPU health from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    /// Kubernetes API access for discovery; in-cluster config when neither field is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubeAccess>,
    /// GPU telemetry.
    pub telemetry: Telemetry,
    /// File that keeps canary progress across control restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// KServe InferenceServices to serve as models (each one a model named like it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kserve: Option<KServe>,
}

/// Models from KServe InferenceServices (`serving.kserve.io/v1beta1`): each InferenceService is a
/// model named like it; each predictor revision with traffic a version (named like the revision),
/// its endpoints the revision's pods; a canary (`canaryTrafficPercent`) a sticky split between the
/// last rolled-out revision and the latest ready one. A model of the same name in `models` wins.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KServe {
    /// Namespaces whose InferenceServices are served.
    pub namespaces: Vec<String>,
    /// REST port of the predictor pods (KServe's container port).
    #[serde(default = "default_kserve_port")]
    pub port: u16,
    /// gRPC port of the predictor pods, when they serve one (KServe's 8081).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// Header whose value keeps a client on one side of a canary split.
    #[serde(default = "default_sticky_header")]
    pub sticky_header: String,
}

fn default_kserve_port() -> u16 {
    8080
}

fn default_sticky_header() -> String {
    "x-user-id".into()
}

/// Kubernetes API access.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KubeAccess {
    /// Kubeconfig file; in-cluster service account when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; the current one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// GPU telemetry collection.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// Where headroom comes from.
    pub source: TelemetrySource,
    /// Time between collections.
    pub interval: Duration,
    /// Time one collection may take.
    pub timeout: Duration,
    /// Port of `meridian gpu-agent` on each GPU node, for the `gpu-agent` source.
    pub agent_port: u16,
    /// Telemetry older than this many intervals is unknown, not idle.
    pub stale_after_intervals: u32,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            source: TelemetrySource::Metrics,
            interval: Duration::secs(5),
            timeout: Duration::secs(1),
            agent_port: 9400,
            stale_after_intervals: 3,
        }
    }
}

/// Source of GPU headroom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TelemetrySource {
    /// Scrape each endpoint's Prometheus metrics (Triton `nv_*`, vLLM `vllm:*`, DCGM `DCGM_FI_*`).
    Metrics,
    /// Ask `meridian gpu-agent` (NVML) on each GPU node.
    GpuAgent,
    /// No GPU telemetry; balance on latency and load alone.
    None,
}

/// A progressive canary: move a split's weight to a new version step by step, checking health.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// Plan name, unique.
    pub name: String,
    /// Model the plan moves traffic of.
    pub model: String,
    /// Name of the model's routing rule whose split is moved; the rule without `match` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Version that serves today.
    pub stable: String,
    /// Version being rolled out.
    pub canary: String,
    /// Weights given to the canary, in order, each held for its pause.
    pub steps: Vec<CanaryStep>,
    /// Checks that must pass for the plan to advance.
    #[serde(default)]
    pub analysis: Analysis,
}

/// One step of a canary plan.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Percent of traffic to the canary during this step.
    pub weight: u32,
    /// How long the step holds before the next analysis decides.
    pub pause: Duration,
}

/// Analysis of the canary's own metrics at each step.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// Time between evaluations.
    pub interval: Duration,
    /// Metrics window each evaluation looks at.
    pub window: Duration,
    /// Fewest canary requests in the window for a verdict; fewer waits.
    pub min_requests: u32,
    /// Lowest acceptable success ratio, 0..=1.
    pub success_rate: f64,
    /// Highest acceptable p99 latency; unchecked when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_latency: Option<Duration>,
    /// Failed evaluations tolerated before rolling back.
    pub failure_limit: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: Duration::secs(30),
            window: Duration::secs(60),
            min_requests: 100,
            success_rate: 0.99,
            p99_latency: None,
            failure_limit: 1,
        }
    }
}
