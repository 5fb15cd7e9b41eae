//! The `dns` section: the authoritative server, its zones and static records, GSLB names and their
//! policies, CIDR maps and probes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Admin;
use crate::units::Duration;

/// The authoritative DNS server with global server load balancing.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Addresses served over both UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// The DNS server's admin listener (health, metrics, region view).
    #[serde(default = "default_dns_admin")]
    pub admin: Admin,
    /// Zones this server is authoritative for.
    pub zones: Vec<Zone>,
    /// Names answered by policy with regional gateway addresses.
    #[serde(default)]
    pub gslb: Vec<GslbName>,
    /// Client subnets mapped to regions for the `nearest` policy; prefixes must not overlap.
    #[serde(default)]
    pub cidr_map: Vec<CidrRegion>,
    /// Active probes of each region's gateway.
    #[serde(default)]
    pub probe: Probe,
    /// Largest UDP answer when the client's EDNS buffer is larger (RFC 9715 suggests 1232).
    #[serde(default = "default_udp_payload")]
    pub max_udp_payload: u16,
    /// Response-rate limiting of UDP answers, so the server cannot be used as a reflector.
    #[serde(default)]
    pub rrl: ResponseRateLimit,
    /// Limits on DNS over TCP, which RRL never limits.
    #[serde(default)]
    pub tcp: TcpLimits,
    /// DNS Cookies (RFC 7873, server cookies as RFC 9018): a client that returns a valid server
    /// cookie has proved its address and is exempt from response-rate limiting.
    #[serde(default)]
    pub cookies: Cookies,
}

/// DNS Cookies: the server answers every client cookie with a server cookie (RFC 9018's
/// interoperable format, SipHash-2-4 over the client cookie, a timestamp and the client address)
/// and accepts it back for an hour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Cookies {
    /// Cookies on (the default).
    pub enabled: bool,
    /// The 128-bit SipHash key as 32 hex digits, shared by every server behind one anycast
    /// address so each accepts the others' cookies; a random key per process when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies {
            enabled: true,
            secret: None,
        }
    }
}

impl Cookies {
    /// The key `secret` names, when it is 32 hex digits.
    pub fn key(&self) -> Option<[u8; 16]> {
        let hex = self.secret.as_deref()?.as_bytes();
        if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut key = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            key[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(key)
    }
}

/// Limits on DNS over TCP (Knot's `tcp-max-clients` and `tcp-idle-timeout`, NSD's
/// `tcp-count` and `tcp-timeout`): connections over a cap are closed at accept, and a connection
/// that sends no query for `idle_timeout` is closed, so no client can hold the server's sockets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TcpLimits {
    /// Open connections from one client address at most.
    pub max_per_client: u32,
    /// Open connections at most, all clients together.
    pub max_connections: u32,
    /// A connection with no query (or a query not finished) for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_per_client: 16,
            max_connections: 1024,
            idle_timeout: Duration::secs(10),
        }
    }
}

/// Response-rate limiting with NSD's and Knot's semantics: a token bucket per client prefix and
/// answer (name, type, response code), refilled at `responses_per_second`; a response past it is
/// dropped, except every `slip`-th, which goes out truncated (TC) so a real resolver retries over
/// TCP, which is never limited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseRateLimit {
    /// Limiting on (the default).
    pub enabled: bool,
    /// Responses a second per client prefix and answer (NSD's default, 200).
    pub responses_per_second: u32,
    /// Every this-many limited responses one goes out truncated; 0 drops them all, 1 truncates all.
    pub slip: u32,
    /// Prefix length that groups IPv4 clients.
    pub ipv4_prefix: u8,
    /// Prefix length that groups IPv6 clients.
    pub ipv6_prefix: u8,
    /// Clients never limited (monitoring, your own resolvers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub whitelist: Vec<IpNet>,
}

impl Default for ResponseRateLimit {
    fn default() -> Self {
        ResponseRateLimit {
            enabled: true,
            responses_per_second: 200,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            whitelist: Vec::new(),
        }
    }
}

fn default_dns_admin() -> Admin {
    Admin::at(SocketAddr::from(([127, 0, 0, 1], 9953)))
}

fn default_udp_payload() -> u16 {
    1232
}

/// An authoritative zone.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Zone apex, e.g. `meridian.test`.
    pub name: String,
    /// Default TTL of its static records.
    #[serde(default = "default_zone_ttl")]
    pub ttl: Duration,
    /// Start of authority.
    pub soa: Soa,
    /// Name servers of the zone (NS records at the apex).
    pub ns: Vec<String>,
    /// Static records.
    #[serde(default)]
    pub records: Vec<Record>,
}

fn default_zone_ttl() -> Duration {
    Duration::secs(300)
}

/// SOA fields; the serial is set by the server and moves on every reload.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Soa {
    /// Primary name server.
    pub mname: String,
    /// Responsible mailbox as a domain name, e.g. `hostmaster.meridian.test`.
    pub rname: String,
    /// Secondary refresh interval.
    #[serde(default = "soa_refresh")]
    pub refresh: Duration,
    /// Secondary retry interval.
    #[serde(default = "soa_retry")]
    pub retry: Duration,
    /// Secondary expiry.
    #[serde(default = "soa_expire")]
    pub expire: Duration,
    /// Negative-answer TTL (RFC 2308).
    #[serde(default = "soa_minimum")]
    pub minimum: Duration,
}

fn soa_refresh() -> Duration {
    Duration::secs(3600)
}
fn soa_retry() -> Duration {
    Duration::secs(600)
}
fn soa_expire() -> Duration {
    Duration::secs(604_800)
}
fn soa_minimum() -> Duration {
    Duration::secs(60)
}

/// A static record.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Owner name: `@` for the apex, a name relative to the zone, or a full name ending in the zone.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub kind: RecordType,
    /// Record data: an address for A/AAAA, a name for CNAME/NS, text for TXT, `preference host` for MX.
    pub value: String,
    /// TTL; the zone's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

/// Static record types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Alias.
    Cname,
    /// Text.
    Txt,
    /// Mail exchanger.
    Mx,
    /// Name server (delegation below the apex).
    Ns,
}

/// A name answered by policy with the gateway addresses of healthy regions.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GslbName {
    /// Full name inside one of the zones, e.g. `api.meridian.test`.
    pub name: String,
    /// How a region is chosen.
    pub policy: GslbPolicy,
    /// Candidate regions; for `failover`, in order. Every region with a gateway when absent.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Weights for the `weighted` policy, by region; equal when absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
    /// Answer TTL.
    #[serde(default = "default_gslb_ttl")]
    pub ttl: Duration,
    /// What to answer when every region is unhealthy.
    #[serde(default)]
    pub when_all_down: AllDown,
    /// Most regions in one `all-healthy` answer.
    #[serde(default = "default_max_answers")]
    pub max_answers: u32,
    /// Models whose healthy capacity (from control reports) keeps a region up; all when absent.
    #[serde(default)]
    pub models: Vec<String>,
}

fn default_gslb_ttl() -> Duration {
    Duration::secs(30)
}

fn default_max_answers() -> u32 {
    8
}

/// GSLB answer policy (Route 53 routing policies, k8gb strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GslbPolicy {
    /// The first healthy region in order.
    Failover,
    /// A healthy region by weight, stable per client subnet.
    Weighted,
    /// The healthy region nearest the client (ECS subnet or resolver address).
    Nearest,
    /// Every healthy region (multivalue), up to `max_answers`.
    AllHealthy,
}

/// Behaviour when every region of a name is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Answer as if every region were healthy (the checks may be what is broken).
    #[default]
    FailOpen,
    /// Answer with no addresses (NODATA).
    FailClosed,
}

/// A client subnet and the region that serves it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CidrRegion {
    /// Client prefix, e.g. `10.1.0.0/16`.
    #[schemars(with = "String")]
    pub cidr: IpNet,
    /// Region name.
    pub region: String,
}

/// Active probes of region gateways by the DNS server.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Probe {
    /// Time between probes of one region.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive passes that bring a region back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a region out.
    pub unhealthy_threshold: u32,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            interval: Duration::secs(5),
            timeout: Duration::secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}
