//! Scaling of a version's workload by its region's control loop, from zero included: the gateway
//! holds requests while no endpoint is ready and asks control to wake the version; control sizes
//! replicas from the gateways' in-flight requests (Knative KPA's rule) and scales to zero after a
//! quiet `scale_down_delay`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Discovery, Version};
use crate::units::Duration;

/// How a version scales.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Scale {
    /// Fewest replicas; 0 lets an idle version scale to zero.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Requests in flight per replica that the sizing aims at (Knative's `target`).
    pub target_concurrency: u32,
    /// Quiet time (no request in flight or held) before replicas go down (to `min`, zero included).
    pub scale_down_delay: Duration,
    /// How long a request is held waiting for a ready endpoint before it gets 503.
    pub activation_timeout: Duration,
    /// Most requests held at once per gateway while the version has no ready endpoint; a full hold
    /// answers 429 (a higher priority class displaces the newest lower one).
    pub max_held: u32,
    /// What is scaled: absent, the Deployment named like the version's Kubernetes discovery Service,
    /// in its namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            min: 0,
            max: 1,
            target_concurrency: 10,
            scale_down_delay: Duration::secs(300),
            activation_timeout: Duration::secs(300),
            max_held: 100,
            workload: None,
        }
    }
}

/// A Kubernetes workload with a scale subresource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Its kind.
    #[serde(default)]
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Kinds of workload control scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    #[default]
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The resource's plural, as its API path names it.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
        }
    }
}

impl Version {
    /// The workload its `scale` scales: the one named, else the Deployment named like its
    /// Kubernetes discovery Service. `None` without `scale` or a workload to name.
    pub fn workload(&self) -> Option<Workload> {
        let scale = self.scale.as_ref()?;
        if let Some(w) = &scale.workload {
            return Some(w.clone());
        }
        let Discovery::Kubernetes(k) = self.discovery.as_ref()?;
        Some(Workload {
            kind: WorkloadKind::Deployment,
            namespace: k.namespace.clone(),
            name: k.service.clone()?,
        })
    }
}
