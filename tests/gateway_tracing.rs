//! Traces over OTLP from a real gateway to a real OTLP/gRPC receiver (the collector's own service
//! definition from opentelemetry-proto): the server span continues the client's trace, each
//! upstream attempt is a client span under it (the retry visible), the backend receives the
//! attempt's traceparent, and requests keep succeeding when the collector is gone.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use meridian_config::schema::OtlpProtocol;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Two zones with one backend each; traces exported over `protocol` to a collector on this
/// test's host `.0.9`; returns the world, its gateway, the backends and the collector's address.
fn world(net: u8, protocol: OtlpProtocol, port: u16) -> (World, Gw, [String; 2], String) {
    let mut w = World::new(net);
    let gw = w.gateway("r", &["r-a", "r-b"]);
    w.config.gateway.health_check.enabled = false;
    w.config.gateway.outlier_detection.enabled = false;
    let backends = [("a1", "r-a"), ("b1", "r-b")].map(|(id, z)| w.backend("llm", "v1", id, "r", z));
    let collector = format!("127.{net}.0.9:{port}");
    let t = &mut w.config.observability.tracing;
    t.otlp_endpoint = Some(format!("http://{collector}"));
    (t.protocol, t.sampling_ratio, t.service_name) = (protocol, 1.0, "edge-test".into());
    (w, gw, backends, collector)
}

/// Spans received, with their resource's service.name.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                got.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    fn trace(&self, trace_id: &[u8]) -> Vec<Span> {
        let got = self.0.lock().unwrap();
        got.iter()
            .filter(|(_, s)| s.trace_id == trace_id)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

fn str_attr<'a>(s: &'a Span, key: &str) -> &'a str {
    match attr(s, key) {
        Some(Any::StringValue(v)) => v,
        other => panic!("{key}: {other:?} on {s:?}"),
    }
}

fn int_attr(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(Any::IntValue(v)) => Some(*v),
        _ => None,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn spans_per_request_and_attempt_with_propagation() {
    let dir = scratch("tracing");
    let (w, gw, backends, collector_at) = world(100, OtlpProtocol::Grpc, 4317);
    let cfg = w.write(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::default();
    let server = rt.spawn({
        let svc = TraceServiceServer::new(collector.clone());
        async move {
            let listener = tokio::net::TcpListener::bind(collector_at).await.unwrap();
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        }
    });
    // The zone-local endpoint answers 503, so every request is retried on the other zone's.
    let _a = sim(
        &backends[0],
        "a1",
        "llm",
        "v1",
        &["--error-rate", "1", "--error-status", "503"],
    );
    let _b = sim(&backends[1], "b1", "llm", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);
    let c = client();

    let (trace_id, parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let a = infer(
        &c,
        public,
        "/v2/models/llm/infer",
        &[("traceparent", &format!("00-{trace_id}-{parent}-01"))],
    );
    assert_eq!((a.status, a.served_by.as_str()), (200, "b1"), "{:?}", a.body);
    let seen = a.body["headers"]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<_> = seen.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id, "01"), "{seen}");
    assert_ne!(
        parts[2], parent,
        "the backend sees the attempt's span, not the client's"
    );

    let tid = hex(trace_id);
    wait_until("three spans of the trace exported", Duration::from_secs(20), || {
        collector.trace(&tid).len() >= 3
    });
    let spans = collector.trace(&tid);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server_span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("server span");
    assert_eq!(server_span.parent_span_id, hex(parent));
    assert_eq!(server_span.name, "POST /v2/models/{model}/infer");
    assert_eq!(str_attr(server_span, "ml.model.name"), "llm");
    assert_eq!(str_attr(server_span, "ml.model.version"), "v1");
    assert_eq!(str_attr(server_span, "http.route"), "/v2/models/{model}/infer");
    assert_eq!(str_attr(server_span, "http.request.method"), "POST");
    assert_eq!(str_attr(server_span, "meridian.endpoint"), "b1");
    assert_eq!(int_attr(server_span, "http.response.status_code"), Some(200));
    assert_eq!(int_attr(server_span, "meridian.retries"), Some(1));
    let mut attempts: Vec<_> = spans.iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2);
    for s in &attempts {
        assert_eq!(
            s.parent_span_id, server_span.span_id,
            "attempts are children of the request"
        );
    }
    assert_eq!(str_attr(attempts[0], "meridian.endpoint"), "a1");
    assert_eq!(str_attr(attempts[0], "meridian.locality"), "zone");
    assert_eq!(int_attr(attempts[0], "http.response.status_code"), Some(503));
    assert_eq!(int_attr(attempts[0], "http.request.resend_count"), None);
    assert_eq!(str_attr(attempts[1], "meridian.endpoint"), "b1");
    assert_eq!(int_attr(attempts[1], "http.response.status_code"), Some(200));
    assert_eq!(int_attr(attempts[1], "http.request.resend_count"), Some(1));
    assert_eq!(
        attempts[1].span_id,
        hex(parts[2]),
        "the backend's traceparent names the attempt"
    );
    assert!(collector.0.lock().unwrap().iter().all(|(svc, _)| svc == "edge-test"));

    // Without a traceparent the request starts a trace of its own.
    let a = infer(&c, public, "/v2/models/llm/infer", &[]);
    assert_eq!(a.status, 200);
    let own = a.body["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .to_string();
    let tid = hex(&own);
    wait_until("a new root trace", Duration::from_secs(20), || {
        collector.trace(&tid).iter().any(|s| s.kind == SpanKind::Server as i32)
    });
    assert!(collector
        .trace(&tid)
        .iter()
        .any(|s| s.kind == SpanKind::Server as i32 && s.parent_span_id.is_empty()));

    // The collector goes away: requests do not notice.
    server.abort();
    let _ = rt.block_on(server);
    for _ in 0..50 {
        assert_eq!(infer(&c, public, "/v2/models/llm/infer", &[]).status, 200);
    }
}

/// OTLP over HTTP (protobuf, `/v1/traces`): a hyper server decoding the collector's messages.
#[test]
fn spans_over_otlp_http() {
    use http_body_util::BodyExt;
    use prost::Message;
    let dir = scratch("tracing-http");
    let (w, gw, backends, collector_at) = world(101, OtlpProtocol::Http, 4318);
    let cfg = w.write(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    rt.spawn({
        let (got, paths) = (got.clone(), paths.clone());
        async move {
            let listener = tokio::net::TcpListener::bind(collector_at).await.unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (got, paths) = (got.clone(), paths.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (got, paths) = (got.clone(), paths.clone());
                        async move {
                            paths.lock().unwrap().push(req.uri().path().to_string());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let msg = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in msg.resource_spans {
                                for ss in rs.scope_spans {
                                    got.lock()
                                        .unwrap()
                                        .extend(ss.spans.into_iter().map(|s| (String::new(), s)));
                                }
                            }
                            let out = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(out)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    });
    let _a = sim(&backends[0], "a1", "llm", "v1", &[]);
    let _b = sim(&backends[1], "b1", "llm", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let a = infer(
        &client(),
        public,
        "/v2/models/llm/infer",
        &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
    );
    assert_eq!(a.status, 200);
    let collector = Collector(got);
    wait_until("spans over OTLP/HTTP", Duration::from_secs(20), || {
        collector.trace(&hex(trace_id)).len() >= 2
    });
    assert!(paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));
    let spans = collector.trace(&hex(trace_id));
    assert!(spans
        .iter()
        .any(|s| s.kind == SpanKind::Server as i32 && str_attr(s, "ml.model.name") == "llm"));
}
