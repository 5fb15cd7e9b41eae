//! Prometheus metrics of a gateway, served on the admin listener's `/metrics`.
//!
//! Names and buckets are the ones operators' dashboards and alerts already use
//! (`inference_requests_total`, `inference_latency_seconds`). Label values come only from the config
//! (model, version, endpoint ids) or small fixed sets (status codes, outcomes), never from raw
//! request data: a request for a model the config does not know counts as `model_name="unknown"`.
//! The per-version series every request touches are resolved once per routing table, so the request
//! path does no label lookups for them. This file defines the families the request path counts into;
//! `exposition` adds the gauges read at scrape time and renders the text.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Latency buckets of `inference_latency_seconds` (ARCHITECTURE.md section 4).
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The `outcome` label values of `meridian_upstream_attempts_total`, in
/// [`meridian_gateway_core::outlier::Outcome`] order.
pub const OUTCOMES: [&str; 3] = ["success", "server_error", "gateway_failure"];

/// Label value for requests whose model the config does not know.
pub const UNKNOWN_MODEL: &str = "unknown";

/// Every metric family of a gateway.
pub struct Metrics {
    /// Where every family (these and the scrape-time gauges) is registered.
    pub(crate) registry: Registry,
    /// `inference_requests_total{model_name,model_version,status}`.
    pub requests: IntCounterVec,
    /// `inference_latency_seconds{model_name,model_version}`.
    pub latency: HistogramVec,
    /// `meridian_upstream_attempts_total{model_name,model_version,endpoint,outcome}`.
    pub attempts: IntCounterVec,
    /// `meridian_upstream_attempt_duration_seconds{model_name,model_version}`.
    pub attempt_latency: HistogramVec,
    /// `meridian_retries_total{model_name,reason}`.
    pub retries: IntCounterVec,
    /// `meridian_endpoint_ejections_total{endpoint,reason}`.
    pub ejections: IntCounterVec,
    /// `meridian_config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `meridian_shed_total{model_name,priority,reason}`.
    pub shed: IntCounterVec,
    /// `meridian_activation_held{model_name,model_version}`: requests held while their version
    /// scales up from zero (the KPA's and KEDA's signal of demand at zero).
    pub held: IntGaugeVec,
    /// `meridian_activation_failed_total{model_name,model_version,reason}`.
    pub not_woken: IntCounterVec,
    /// `meridian_access_log_dropped_total`.
    pub access_log_dropped: IntCounter,
    /// OpenTelemetry GenAI families of LLM requests.
    pub gen_ai: GenAiMetrics,
}

/// The OpenTelemetry GenAI semantic conventions' metrics in Prometheus form, for requests to models
/// with LLM routing: token usage from each response's `usage`, time to first token, time per output
/// token and request duration, by the model asked for (a model or adapter name from the config) and
/// the operation (`chat`, `text_completion`, `embeddings`). Buckets are the conventions' advice.
pub struct GenAiMetrics {
    /// `gen_ai_client_token_usage{gen_ai_request_model,gen_ai_operation_name,gen_ai_token_type}`.
    pub token_usage: HistogramVec,
    /// `gen_ai_server_time_to_first_token_seconds{gen_ai_request_model,gen_ai_operation_name}`.
    pub time_to_first_token: HistogramVec,
    /// `gen_ai_server_time_per_output_token_seconds{gen_ai_request_model,gen_ai_operation_name}`.
    pub time_per_output_token: HistogramVec,
    /// `gen_ai_server_request_duration_seconds{gen_ai_request_model,gen_ai_operation_name}`.
    pub request_duration: HistogramVec,
    /// `meridian_token_limited_total{model_name}`: requests refused by a tenant's token limit.
    pub token_limited: IntCounterVec,
}

impl GenAiMetrics {
    fn register(r: &Registry) -> GenAiMetrics {
        let labels = &["gen_ai_request_model", "gen_ai_operation_name"];
        let h = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                .expect("static metric definition");
            r.register(Box::new(h.clone())).expect("metric registered once");
            h
        };
        GenAiMetrics {
            token_usage: h(
                "gen_ai_client_token_usage",
                "Tokens used per request, by type (input, output)",
                &["gen_ai_request_model", "gen_ai_operation_name", "gen_ai_token_type"],
                &[
                    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
                ],
            ),
            time_to_first_token: h(
                "gen_ai_server_time_to_first_token_seconds",
                "Time from the request to the first response byte of the answer",
                labels,
                &[
                    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                ],
            ),
            time_per_output_token: h(
                "gen_ai_server_time_per_output_token_seconds",
                "Time per output token after the first",
                labels,
                &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5],
            ),
            request_duration: h(
                "gen_ai_server_request_duration_seconds",
                "Duration of LLM requests",
                labels,
                &[
                    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
                ],
            ),
            token_limited: counter(
                r,
                "meridian_token_limited_total",
                "Requests refused because their tenant used its tokens",
                &["model_name"],
            ),
        }
    }
}

/// The per-version series a request always touches, resolved ahead of time.
#[derive(Clone, Debug)]
pub struct VersionSeries {
    /// `inference_latency_seconds` of the version.
    pub latency: Histogram,
    /// `meridian_upstream_attempt_duration_seconds` of the version.
    pub attempt_latency: Histogram,
    /// `inference_requests_total` with status 200.
    pub ok: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
        .expect("static metric definition");
    registry.register(Box::new(h.clone())).expect("metric registered once");
    h
}

impl Default for Metrics {
    /// Registers every family.
    fn default() -> Self {
        let r = Registry::new();
        let mv = &["model_name", "model_version"];
        let dropped = IntCounter::new(
            "meridian_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind",
        )
        .expect("static metric definition");
        r.register(Box::new(dropped.clone())).expect("metric registered once");
        Metrics {
            requests: counter(
                &r,
                "inference_requests_total",
                "Inference requests answered, by model, version and HTTP status",
                &["model_name", "model_version", "status"],
            ),
            latency: histogram(
                &r,
                "inference_latency_seconds",
                "Inference request latency through the gateway",
                mv,
            ),
            attempts: counter(
                &r,
                "meridian_upstream_attempts_total",
                "Attempts at backend endpoints, by outcome",
                &["model_name", "model_version", "endpoint", "outcome"],
            ),
            attempt_latency: histogram(
                &r,
                "meridian_upstream_attempt_duration_seconds",
                "Time from sending to an endpoint to its response header",
                mv,
            ),
            retries: counter(
                &r,
                "meridian_retries_total",
                "Retries, by reason",
                &["model_name", "reason"],
            ),
            ejections: counter(
                &r,
                "meridian_endpoint_ejections_total",
                "Outlier ejections, by endpoint and reason",
                &["endpoint", "reason"],
            ),
            reloads: counter(
                &r,
                "meridian_config_reloads_total",
                "Config reloads, by result",
                &["result"],
            ),
            shed: counter(
                &r,
                "meridian_shed_total",
                "Requests refused by admission control, by priority class and reason",
                &["model_name", "priority", "reason"],
            ),
            held: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "meridian_activation_held",
                        "Requests held while their version has no ready endpoint (scaling up from zero)",
                    ),
                    mv,
                )
                .expect("static metric definition");
                r.register(Box::new(g.clone())).expect("metric registered once");
                g
            },
            not_woken: counter(
                &r,
                "meridian_activation_failed_total",
                "Held requests not sent: no endpoint ready within the activation timeout, or the hold full",
                &["model_name", "model_version", "reason"],
            ),
            access_log_dropped: dropped,
            gen_ai: GenAiMetrics::register(&r),
            registry: r,
        }
    }
}

impl Metrics {
    /// The series of one model version.
    pub fn version_series(&self, model: &str, version: &str) -> VersionSeries {
        VersionSeries {
            latency: self.latency.with_label_values(&[model, version]),
            attempt_latency: self.attempt_latency.with_label_values(&[model, version]),
            ok: self.requests.with_label_values(&[model, version, "200"]),
        }
    }

    /// Counts a finished request.
    pub fn request(&self, series: Option<&VersionSeries>, model: &str, version: &str, status: u16, seconds: f64) {
        match series {
            Some(s) => {
                s.latency.observe(seconds);
                if status == 200 {
                    s.ok.inc();
                } else {
                    self.requests
                        .with_label_values(&[model, version, status_label(status)])
                        .inc();
                }
            }
            None => self
                .requests
                .with_label_values(&[model, version, status_label(status)])
                .inc(),
        }
    }
}

/// A status code as a label without allocating for the common ones.
pub fn status_label(status: u16) -> &'static str {
    const CODES: [(u16, &str); 16] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (413, "413"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (501, "501"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    CODES.iter().find(|(c, _)| *c == status).map_or(
        match status {
            0 => "0",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        |(_, s)| s,
    )
}
