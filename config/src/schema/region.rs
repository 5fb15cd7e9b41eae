//! Regions: zones, location, failover order, and each region's gateway and control loop addresses.

use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Admin, Listener};
use crate::units::Duration;

/// One region: a set of zones, the gateway fleet that serves it and the control loop that watches it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Region name, e.g. `us-east`; referenced by endpoints, failover lists and GSLB names.
    pub name: String,
    /// Zone names in this region, e.g. `us-east-1a`; zone names are unique across all regions.
    pub zones: Vec<String>,
    /// Where the region is, for the DNS `nearest` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoPoint>,
    /// Regions to spill to, in order, when this region lacks healthy capacity (priority levels 2..n).
    #[serde(default)]
    pub failover: Vec<String>,
    /// This region's gateway fleet; absent for a region that only hosts backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<RegionGateway>,
    /// This region's control loop; absent when the region runs on static endpoints alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<RegionControl>,
}

/// A point on Earth in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    /// Latitude, -90..90.
    pub lat: f64,
    /// Longitude, -180..180.
    pub lon: f64,
}

/// The gateway fleet of one region.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionGateway {
    /// Public listeners.
    pub listeners: Vec<Listener>,
    /// The admin listener (health, metrics, config, endpoints, reload, drain).
    #[serde(default)]
    pub admin: Admin,
    /// Addresses DNS hands out for this region (A and AAAA answers of GSLB names).
    #[serde(default)]
    pub public_addresses: Vec<IpAddr>,
    /// URL the DNS server probes for this region's health; default `http://<admin address>/readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
    /// How long a stopping gateway (SIGTERM, or handing its sockets to a new process) lets requests
    /// in progress finish, token streams included; it exits as soon as the last one ends.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Duration,
    /// After SIGTERM the listeners stay open this long while readiness reports false and every
    /// response says `Connection: close`, so load balancers and clients' pools move away before the
    /// sockets close (Envoy's drain time; Kubernetes' endpoint propagation).
    #[serde(default = "default_shutdown_delay")]
    pub shutdown_delay: Duration,
}

fn default_shutdown_delay() -> Duration {
    Duration::secs(2)
}

fn default_shutdown_grace() -> Duration {
    Duration::secs(30)
}

/// Where a region's control loop serves its state feed.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionControl {
    /// Listen address of the state feed and the control admin API.
    pub address: SocketAddr,
}
