//! OpenTelemetry traces over OTLP (gRPC or HTTP): a server span per request and a client span per
//! upstream attempt, so retries show as siblings; W3C `traceparent`/`tracestate` taken from the
//! client and passed to the backend. Spans leave through a batch processor with a bounded queue on
//! its own runtime thread: a slow or absent collector drops spans, never delays a request.
//!
//! Settings come from `observability.tracing`, overridden by the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME`). Without an endpoint tracing is off and costs
//! nothing per request. They are read at start: changing them needs a restart.

use std::net::IpAddr;
use std::time::Duration;

use meridian_config::schema::{OtlpProtocol, Tracing};
use meridian_gateway_core::head::RequestHead;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;

/// Spans queued for export at most; beyond it new spans are dropped.
const QUEUE: usize = 8192;

/// The process's tracer, when tracing is on.
pub struct Telemetry {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
    /// Runs the exporter; kept alive as long as the tracer.
    _runtime: tokio::runtime::Runtime,
}

/// Where spans go, resolved from the config and the environment.
#[derive(Debug, PartialEq)]
pub struct Export {
    /// Collector URL (for HTTP, the full `/v1/traces` URL).
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Share of new traces sampled (a client's sampled flag is followed).
    pub ratio: f64,
    /// `service.name`.
    pub service: String,
}

/// Resolves the export settings; `None` when no endpoint is configured anywhere.
pub fn resolve(cfg: &Tracing, env: impl Fn(&str) -> Option<String>) -> Option<Export> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .as_deref()
    {
        Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") => OtlpProtocol::Http,
        _ => cfg.protocol,
    };
    let with_path = |base: &str| match protocol {
        OtlpProtocol::Http if !base.trim_end_matches('/').ends_with("/v1/traces") => {
            format!("{}/v1/traces", base.trim_end_matches('/'))
        }
        _ => base.to_string(),
    };
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| with_path(&e)))
        .or_else(|| cfg.otlp_endpoint.as_deref().map(with_path))?;
    let ratio = env("OTEL_TRACES_SAMPLER_ARG")
        .and_then(|r| r.parse::<f64>().ok())
        .filter(|r| (0.0..=1.0).contains(r))
        .unwrap_or(cfg.sampling_ratio);
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| cfg.service_name.clone());
    Some(Export {
        endpoint,
        protocol,
        ratio,
        service,
    })
}

impl Telemetry {
    /// Starts the exporter; `Ok(None)` when tracing is off.
    pub fn start(cfg: &Tracing) -> anyhow::Result<Option<Telemetry>> {
        let Some(export) = resolve(cfg, |k| std::env::var(k).ok()) else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let provider = runtime.block_on(async {
            let builder = opentelemetry_otlp::SpanExporter::builder();
            let exporter = match export.protocol {
                OtlpProtocol::Grpc => builder
                    .with_tonic()
                    .with_endpoint(&export.endpoint)
                    .with_timeout(Duration::from_secs(5))
                    .build()?,
                OtlpProtocol::Http => builder
                    .with_http()
                    .with_endpoint(&export.endpoint)
                    .with_timeout(Duration::from_secs(5))
                    .build()?,
            };
            let batch = BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_scheduled_delay(Duration::from_millis(500))
                .build();
            let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                .with_batch_config(batch)
                .build();
            anyhow::Ok(
                SdkTracerProvider::builder()
                    .with_span_processor(processor)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(export.ratio))))
                    .with_resource(Resource::builder().with_service_name(export.service.clone()).build())
                    .build(),
            )
        })?;
        use opentelemetry::trace::TracerProvider as _;
        let tracer = provider.tracer("meridian-gateway");
        tracing::info!(endpoint = %export.endpoint, protocol = ?export.protocol, ratio = export.ratio, "exporting traces over OTLP");
        Ok(Some(Telemetry {
            tracer,
            provider,
            propagator: TraceContextPropagator::new(),
            _runtime: runtime,
        }))
    }

    /// Starts a request's server span, continuing the client's trace when it sent one.
    pub fn server_span(&self, req: &impl RequestHead, client: Option<IpAddr>, tls: bool) -> Context {
        let parent = self.propagator.extract(&Headers(req));
        let method = req.method().as_str().to_owned();
        let mut attrs = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", req.path().to_owned()),
            KeyValue::new("url.scheme", if tls { "https" } else { "http" }),
            KeyValue::new("network.protocol.version", protocol_version(req.version())),
        ];
        if let Some(ip) = client {
            attrs.push(KeyValue::new("client.address", ip.to_string()));
        }
        if let Some(ua) = req.get_str(&http::header::USER_AGENT) {
            attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// Starts the client span of one upstream attempt under the request's server span.
    pub fn attempt_span(
        &self,
        server: &Context,
        method: &str,
        endpoint: &str,
        addr: std::net::SocketAddr,
        resend: usize,
        locality: &str,
    ) -> Span {
        let mut attrs = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("server.address", addr.ip().to_string()),
            KeyValue::new("server.port", i64::from(addr.port())),
            KeyValue::new("meridian.endpoint", endpoint.to_owned()),
            KeyValue::new("meridian.locality", locality.to_owned()),
        ];
        if resend > 0 {
            attrs.push(KeyValue::new("http.request.resend_count", resend as i64));
        }
        self.tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Client)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, server)
    }

    /// Writes `traceparent`/`tracestate` for the attempt's span into the upstream request.
    pub fn inject(&self, attempt: &Span, req: &mut RequestHeader) {
        let cx = Context::new().with_remote_span_context(attempt.span_context().clone());
        self.propagator.inject_context(&cx, &mut HeadersMut(req));
    }

    /// [`Self::inject`] as fields handed to `field` (our own upstream leg writes its request head
    /// itself).
    pub fn inject_fields(&self, attempt: &Span, field: impl FnMut(&str, &str)) {
        let cx = Context::new().with_remote_span_context(attempt.span_context().clone());
        self.propagator.inject_context(&cx, &mut Fields(field));
    }

    /// Flushes what is queued (bounded), for a graceful stop.
    pub fn shutdown(&self, within: Duration) {
        let provider = self.provider.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = provider.shutdown();
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(within);
    }
}

/// Ends an attempt's span with the status the backend answered (0: none arrived).
pub fn end_attempt(mut span: Span, status: u16, error: Option<&str>) {
    if status > 0 {
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
    }
    match error {
        Some(e) => {
            span.set_attribute(KeyValue::new("error.type", e.to_owned()));
            span.set_status(Status::error(e.to_owned()));
        }
        None if status >= 500 => {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(""));
        }
        None => {}
    }
    span.end();
}

/// What the server span learns by the end of the request.
pub struct Outcome<'a> {
    /// Final status sent to the client (0: the client went away first).
    pub status: u16,
    /// Route template for the span name and `http.route`, e.g. `/v2/models/{model}/infer`.
    pub route: Option<&'a str>,
    /// Model and version served.
    pub model: Option<(&'a str, &'a str)>,
    /// Endpoint and locality level of the last attempt.
    pub endpoint: Option<(&'a str, &'a str)>,
    /// Attempts beyond the first.
    pub retries: usize,
    /// What an LLM request asked for and used.
    pub gen_ai: Option<GenAi<'a>>,
}

/// The `gen_ai.*` attributes of an LLM request's server span.
pub struct GenAi<'a> {
    /// The model name asked for (a model's or an adapter's).
    pub model: &'a str,
    /// `chat`, `text_completion` or `embeddings`.
    pub operation: &'a str,
    /// Input and output tokens the answer reported.
    pub usage: Option<(u64, u64)>,
}

/// Ends the request's server span.
pub fn end_request(server: &Context, method: &str, o: &Outcome<'_>) {
    let span = server.span();
    if let Some(route) = o.route {
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new("http.route", route.to_owned()));
    }
    if o.status > 0 {
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(o.status)));
    }
    if let Some((model, version)) = o.model {
        span.set_attribute(KeyValue::new("ml.model.name", model.to_owned()));
        span.set_attribute(KeyValue::new("ml.model.version", version.to_owned()));
    }
    if let Some((endpoint, locality)) = o.endpoint {
        span.set_attribute(KeyValue::new("meridian.endpoint", endpoint.to_owned()));
        span.set_attribute(KeyValue::new("meridian.locality", locality.to_owned()));
    }
    span.set_attribute(KeyValue::new("meridian.retries", o.retries as i64));
    if let Some(g) = &o.gen_ai {
        span.set_attribute(KeyValue::new("gen_ai.request.model", g.model.to_owned()));
        span.set_attribute(KeyValue::new("gen_ai.operation.name", g.operation.to_owned()));
        if let Some((input, output)) = g.usage {
            span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", input as i64));
            span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", output as i64));
        }
    }
    // Server spans mark 5xx as errors; 4xx is the client's (HTTP semantic conventions).
    if o.status >= 500 {
        span.set_attribute(KeyValue::new("error.type", o.status.to_string()));
        span.set_status(Status::error(""));
    }
    span.end();
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

struct Headers<'a, H>(&'a H);

impl<H: RequestHead> Extractor for Headers<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.find(key).and_then(|v| std::str::from_utf8(v).ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .fields()
            .filter_map(|(k, _)| std::str::from_utf8(k).ok())
            .collect()
    }
}

struct HeadersMut<'a>(&'a mut RequestHeader);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        let _ = self.0.insert_header(key.to_owned(), value);
    }
}

struct Fields<F>(F);

impl<F: FnMut(&str, &str)> Injector for Fields<F> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes header-safe text; anything else is not sent.
        if http::HeaderValue::from_str(&value).is_ok() {
            (self.0)(key, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: Option<&str>, protocol: OtlpProtocol) -> Tracing {
        Tracing {
            otlp_endpoint: endpoint.map(str::to_owned),
            protocol,
            sampling_ratio: 0.25,
            service_name: "gw".into(),
        }
    }

    #[test]
    fn environment_overrides_the_config() {
        let none = |_: &str| None;
        assert_eq!(resolve(&cfg(None, OtlpProtocol::Grpc), none), None);
        let e = resolve(&cfg(Some("http://c:4318"), OtlpProtocol::Http), none).unwrap();
        assert_eq!(e.endpoint, "http://c:4318/v1/traces");
        assert_eq!((e.ratio, e.service.as_str()), (0.25, "gw"));
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://env:4318/".to_string()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_string()),
            "OTEL_TRACES_SAMPLER_ARG" => Some("0.5".to_string()),
            "OTEL_SERVICE_NAME" => Some("edge".to_string()),
            _ => None,
        };
        let e = resolve(&cfg(Some("http://c:4317"), OtlpProtocol::Grpc), env).unwrap();
        assert_eq!(
            e,
            Export {
                endpoint: "http://env:4318/v1/traces".into(),
                protocol: OtlpProtocol::Http,
                ratio: 0.5,
                service: "edge".into()
            }
        );
        let signal = |k: &str| (k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "http://t:1/x".to_string());
        assert_eq!(
            resolve(&cfg(None, OtlpProtocol::Http), signal).unwrap().endpoint,
            "http://t:1/x"
        );
    }
}
