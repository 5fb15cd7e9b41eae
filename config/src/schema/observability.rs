//! The `observability` section: access logs and OTLP trace export.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Access logs and traces.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Observability {
    /// One line per request on stdout.
    pub access_log: AccessLog,
    /// OpenTelemetry traces over OTLP.
    pub tracing: Tracing,
}

/// Access log settings.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// Whether to write access logs.
    pub enabled: bool,
    /// `json` for log pipelines, `text` for people.
    pub format: LogFormat,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: true,
            format: LogFormat::Json,
        }
    }
}

/// Access log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// One human-readable line.
    Text,
}

/// Trace export settings; the standard `OTEL_*` environment variables override them.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// OTLP collector URL, e.g. `http://127.0.0.1:4317`; absent turns export off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport.
    pub protocol: OtlpProtocol,
    /// Share of traces sampled, 0..=1, when the client sent no sampling decision.
    pub sampling_ratio: f64,
    /// `service.name` resource attribute.
    pub service_name: String,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            otlp_endpoint: None,
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 1.0,
            service_name: "meridian".into(),
        }
    }
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC, port 4317.
    Grpc,
    /// OTLP/HTTP protobuf, port 4318.
    Http,
}
