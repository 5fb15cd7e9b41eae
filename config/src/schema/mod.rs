//! The operator-facing config schema: one YAML file that every Meridian process reads.
//!
//! These are the serde types exactly as operators write them. Every struct denies unknown fields so a
//! typo is an error with a position instead of a silently ignored setting, and every default is the
//! anchor default named in ARCHITECTURE.md section 3.

mod control;
mod dns;
mod gateway;
mod llm;
mod model;
mod observability;
mod region;
mod scale;

pub use control::*;
pub use dns::*;
pub use gateway::*;
pub use llm::*;
pub use model::*;
pub use observability::*;
pub use region::*;
pub use scale::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole Meridian config: regions, models and their routing, DNS, control and observability.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Regions with their zones, location and failover order, and the per-region gateway, DNS answer
    /// addresses and control loop address.
    pub regions: Vec<Region>,
    /// Traffic policy shared by every model unless a model overrides a section.
    #[serde(default)]
    pub gateway: GatewayPolicy,
    /// Models, their versions and endpoints, and how requests pick a version.
    #[serde(default)]
    pub models: Vec<Model>,
    /// The authoritative DNS server and its global load-balancing names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Where the control loops read cluster and GPU health from.
    #[serde(default)]
    pub control: Control,
    /// Progressive canary plans run by the control loop.
    #[serde(default)]
    pub canaries: Vec<CanaryPlan>,
    /// Access logs and traces.
    #[serde(default)]
    pub observability: Observability,
}
