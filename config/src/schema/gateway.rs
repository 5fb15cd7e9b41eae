//! Listeners, TLS and admin settings, and the traffic policy every model gets unless it overrides a
//! section (locality, health checks, outlier detection, retries, timeouts, limits).

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

use crate::units::{ByteSize, Duration};

/// A public listener of a region's gateway.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Listener name, unique within the region; appears in metrics and logs.
    pub name: String,
    /// Socket address to bind, e.g. `0.0.0.0:443`.
    pub address: SocketAddr,
    /// HTTP versions spoken: plain `http1` and `h2c` (prior knowledge), or with `tls` set, `http1` and
    /// `h2` negotiated by ALPN. Absent: both versions the transport allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Protocol>,
    /// TLS termination; absent for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

impl Listener {
    /// Whether the listener speaks `p`, defaults resolved (HTTP/1.1 and h2 with TLS, HTTP/1.1
    /// and h2c without).
    pub fn speaks(&self, p: Protocol) -> bool {
        if self.protocols.is_empty() {
            return p == Protocol::Http1
                || p == if self.tls.is_some() {
                    Protocol::H2
                } else {
                    Protocol::H2c
                };
        }
        self.protocols.contains(&p)
    }
}

/// An HTTP version a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

/// TLS termination settings of a listener.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates, chosen by the client's SNI name; the first one is the default.
    pub certificates: Vec<Certificate>,
    /// CA bundle (PEM) to verify client certificates against; set for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Lowest TLS version accepted.
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

/// A certificate chain and key served for some SNI names.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// SNI names this certificate answers, e.g. `api.example.com` or `*.example.com`.
    pub server_names: Vec<String>,
    /// PEM certificate chain, relative to the config file's folder.
    pub cert: PathBuf,
    /// PEM private key, relative to the config file's folder.
    pub key: PathBuf,
}

/// An admin listener.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address to bind; loopback by default. Any non-loopback address requires a token.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// Bearer token required from non-loopback clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Host names it answers to besides IP addresses and `localhost` (an ingress name, a
    /// Service's DNS name): any other `Host` is refused, so a web page cannot reach it through
    /// DNS rebinding from the operator's browser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl Admin {
    /// Listening on `address` with no token and no host names.
    pub fn at(address: SocketAddr) -> Admin {
        Admin {
            address,
            token: None,
            hosts: Vec::new(),
        }
    }
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

impl Default for Admin {
    fn default() -> Self {
        Admin::at(default_admin_address())
    }
}

/// A secret string; printed as `<redacted>` wherever the config is shown.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret's value, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

thread_local! {
    static REVEAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with secrets serialized in full on this thread (writing a config file, which must
/// carry them); everywhere else they serialize as `<redacted>`.
pub(crate) fn with_secrets_revealed<T>(f: impl FnOnce() -> T) -> T {
    /// Resets the flag however `f` ends.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            REVEAL.set(false);
        }
    }
    REVEAL.set(true);
    let _reset = Reset;
    f()
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if REVEAL.get() {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str("<redacted>")
        }
    }
}

/// Traffic policy: the gateway-wide defaults that each model may override section by section.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayPolicy {
    /// Locality-aware balancing.
    pub locality: Locality,
    /// Active health checks.
    pub health_check: HealthCheck,
    /// Passive outlier detection.
    pub outlier_detection: OutlierDetection,
    /// Retries and the retry budget.
    pub retries: Retries,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Size limits, concurrency limits, queueing and priority shedding.
    pub limits: Limits,
}

/// Locality-aware balancing (Envoy priority levels, Istio localityLbSetting).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Locality {
    /// A level's health is its healthy share times this factor, capped at 100%; traffic spills to the
    /// next level as health drops below 100%.
    pub overprovisioning_factor: f64,
    /// Percent healthy below which a level balances across all its endpoints, healthy or not.
    pub panic_threshold: f64,
}

impl Default for Locality {
    fn default() -> Self {
        Locality {
            overprovisioning_factor: 1.4,
            panic_threshold: 50.0,
        }
    }
}

/// Active HTTP health checks of each endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Whether to run active checks at all.
    pub enabled: bool,
    /// Path of the HTTP GET; a 2xx answer passes.
    pub path: String,
    /// Time between checks of one endpoint.
    pub interval: Duration,
    /// Time a check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            path: "/v2/health/ready".into(),
            interval: Duration::secs(5),
            timeout: Duration::secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Passive outlier detection (Envoy semantics; defaults from the seed DestinationRule).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Whether outlier detection ejects endpoints.
    pub enabled: bool,
    /// Consecutive 5xx answers that eject an endpoint; 0 turns the check off.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (502, 503, 504, connect failures, resets) that eject; 0 is off.
    pub consecutive_gateway_failure: u32,
    /// How often success-rate ejection runs and ejection times are reconsidered.
    pub interval: Duration,
    /// Ejection time is this times the number of times the endpoint was ejected.
    pub base_ejection_time: Duration,
    /// Cap on one ejection's time.
    pub max_ejection_time: Duration,
    /// Never eject more than this percent of a version's endpoints.
    pub max_ejection_percent: f64,
    /// Success-rate ejection each interval.
    pub success_rate: SuccessRate,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_5xx: 3,
            consecutive_gateway_failure: 5,
            interval: Duration::secs(10),
            base_ejection_time: Duration::secs(30),
            max_ejection_time: Duration::secs(300),
            max_ejection_percent: 50.0,
            success_rate: SuccessRate::default(),
        }
    }
}

/// Success-rate outlier ejection: endpoints below mean - factor x stdev are ejected.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SuccessRate {
    /// Whether success-rate ejection runs.
    pub enabled: bool,
    /// Multiplier of the standard deviation.
    pub stdev_factor: f64,
    /// Fewest endpoints with enough volume for the statistic to be used.
    pub minimum_hosts: u32,
    /// Fewest requests in an interval for an endpoint to count.
    pub request_volume: u32,
}

impl Default for SuccessRate {
    fn default() -> Self {
        SuccessRate {
            enabled: true,
            stdev_factor: 1.9,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

/// Retries (Envoy router semantics) and the retry budget.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Retries after the first attempt; 0 turns retries off.
    pub attempts: u32,
    /// Conditions that allow a retry.
    pub on: Vec<RetryOn>,
    /// Retries in flight may be at most this percent of active requests (Envoy's retry budget),
    /// or, beyond that, draw on a balance each request adds this percent of a retry to (capped at
    /// this percent of 1,000 requests; Finagle's budget): a burst of failures after a healthy spell
    /// is retried whole, a fleet failing throughout sees at most this percent more requests...
    pub budget_percent: f64,
    /// ...and at least this many retries may always be in flight.
    pub min_concurrent: u32,
    /// Request bodies up to this size are held whole, so a retry can resend them (a model with LLM
    /// routing holds up to its `llm.max_prompt`, when larger); larger bodies stream and are never
    /// retried once sent. A body read for its model name (OpenAI-style) over HTTP/2 is held up to
    /// 64 KiB whatever this says.
    pub buffer_body: ByteSize,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 2,
            on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
                RetryOn::Unavailable,
            ],
            budget_percent: 20.0,
            min_concurrent: 3,
            buffer_body: ByteSize::kib(64),
        }
    }
}

/// A condition under which a request may be retried on another endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The TCP or TLS connection could not be made.
    ConnectFailure,
    /// The backend refused the HTTP/2 stream.
    RefusedStream,
    /// The connection was reset before any response byte arrived.
    Reset,
    /// The backend answered 503, declaring itself unavailable.
    Unavailable,
}

/// Timeouts of a request's life.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting to a backend.
    pub connect: Duration,
    /// From sending the request to the first response byte.
    pub first_byte: Duration,
    /// Whole unary request (504 beyond it).
    pub request: Duration,
    /// Whole streaming response (SSE, chunked token streams).
    pub stream: Duration,
    /// Idle time between bytes on an open connection.
    pub idle: Duration,
    /// Time a client has to send its request headers (slow-client protection).
    pub client_header: Duration,
    /// How long a client connection stays open with no request in progress: HTTP/1 between
    /// requests, HTTP/2 with no open stream (NGINX's `keepalive_timeout`, Envoy's `idle_timeout`).
    /// An idle connection holds a socket and buffers; closing it bounds what clients can hold.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::secs(1),
            first_byte: Duration::secs(30),
            request: Duration::secs(60),
            stream: Duration::secs(3600),
            idle: Duration::secs(60),
            client_header: Duration::secs(10),
            keepalive: Duration::secs(60),
        }
    }
}

/// Size and concurrency limits, the bounded wait queue and priority shedding.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request header block (431 beyond it).
    pub max_request_headers: ByteSize,
    /// Largest request body (413 beyond it).
    pub max_request_body: ByteSize,
    /// Concurrent requests per endpoint (the seed's http2MaxRequests).
    pub per_endpoint_concurrency: u32,
    /// Concurrent requests per model across its endpoints; absent means no model-wide limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_model_concurrency: Option<u32>,
    /// Requests beyond the limits wait here, up to a deadline.
    pub queue: Queue,
    /// Header that names a request's priority class.
    pub priority_header: String,
    /// Priority class of requests that name none.
    pub default_priority: PriorityClass,
    /// Share of the concurrency limit (percent) beyond which `sheddable` requests are shed; at
    /// 100 they are never shed early but queue last in line and are displaced first.
    pub shed_sheddable_at: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_headers: ByteSize::kib(64),
            max_request_body: ByteSize::mib(16),
            per_endpoint_concurrency: 1000,
            per_model_concurrency: None,
            queue: Queue::default(),
            priority_header: "x-priority".into(),
            default_priority: PriorityClass::Standard,
            shed_sheddable_at: 80.0,
        }
    }
}

/// The bounded wait queue in front of a full model.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// Most requests waiting; beyond it requests are shed with 429.
    pub size: u32,
    /// Longest wait; beyond it the request is answered 503 with Retry-After.
    pub timeout: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            size: 128,
            timeout: Duration::secs(1),
        }
    }
}

/// Request priority class; the lowest is shed first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PriorityClass {
    /// Shed first, once the model is past `shed_sheddable_at`.
    Sheddable,
    /// Queued when the model is full, shed when the queue is.
    #[default]
    Standard,
    /// Never shed for sheddable or standard traffic; first in the queue.
    Critical,
}
