//! gRPC through the gateway over HTTP/2 cleartext: real tonic servers behind it, a real tonic
//! client in front. Unary and server-streaming calls pass through with their statuses (trailers)
//! intact; the model is named by `x-model-name` or, for the KServe V2 service, read from the
//! request message; the gateway's own answers are gRPC statuses. The gateway's connection to an
//! HTTP/2 backend ends in order once idle past the idle timeout, never under a request.

mod common;

use std::time::Duration;

use common::*;
use meridian_config::schema::Protocol;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

// The KServe V2 messages this test uses (inference.GRPCInferenceService, grpc_predict_v2.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct ServerLiveRequest {}
#[derive(Clone, PartialEq, prost::Message)]
struct ServerLiveResponse {
    #[prost(bool, tag = "1")]
    live: bool,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ModelReadyRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ModelReadyResponse {
    #[prost(bool, tag = "1")]
    ready: bool,
}

/// A gRPC health server (tonic-health) standing in for a model server; `status` for "model".
/// It also answers KServe V2's ModelReady ([`V2Ready`]).
async fn backend(addr: &str, status: ServingStatus) -> HealthReporter {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("model", status).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(V2Ready(addr.to_string()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    reporter
}

/// KServe V2's `ModelReady` as a model server answers it: after reading the message, whose model
/// and version it echoes in the status message (with the backend's address), so a test sees
/// which backend the call reached and what it named. (Servers that answer before reading the
/// request: [`early_answerer`].)
#[derive(Clone)]
struct V2Ready(String);

impl tonic::server::NamedService for V2Ready {
    const NAME: &'static str = "inference.GRPCInferenceService";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for V2Ready {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let at = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != "/inference.GRPCInferenceService/ModelReady" {
                // Answered by path alone, without reading the body.
                return Ok(tonic::Status::unimplemented("").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(ReadyAnswer(at), req).await)
        })
    }
}

struct ReadyAnswer(String);

impl tonic::server::UnaryService<ModelReadyRequest> for ReadyAnswer {
    type Response = ModelReadyResponse;
    type Future = std::future::Ready<Result<tonic::Response<ModelReadyResponse>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<ModelReadyRequest>) -> Self::Future {
        let m = req.into_inner();
        let mut answer = tonic::Response::new(ModelReadyResponse { ready: true });
        let named = format!("{}/{}@{}", m.name, m.version, self.0);
        answer.metadata_mut().insert("x-ready-for", named.parse().unwrap());
        std::future::ready(Ok(answer))
    }
}

fn with_headers<T>(msg: T, headers: &[(&'static str, &'static str)]) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    for (k, v) in headers {
        r.metadata_mut().insert(*k, MetadataValue::from_static(v));
    }
    r
}

/// A gRPC client's channel to the gateway's public listener (HTTP/2 cleartext).
async fn channel(public: &str) -> Channel {
    Channel::from_shared(format!("http://{public}"))
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

/// A KServe V2 unary call: the answer and its metadata.
async fn v2_unary<Req, Resp>(ch: Channel, method: &str, msg: Req) -> Result<(Resp, MetadataMap), tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = format!("/inference.GRPCInferenceService/{method}").parse().unwrap();
    grpc.unary(tonic::Request::new(msg), path, tonic_prost::ProstCodec::default())
        .await
        .map(|r| {
            let (meta, msg, _) = r.into_parts();
            (msg, meta)
        })
}

#[test]
fn grpc_unary_and_streaming_through_the_gateway() {
    let dir = scratch("grpc");
    let mut w = World::new(97);
    let gw = w.gateway("r", &["r-a"]);
    w.gateway_of("r").listeners[0].protocols = vec![Protocol::Http1, Protocol::H2c];
    w.config.gateway.health_check.enabled = false;
    w.config.gateway.retries.attempts = 0;
    let [g1, g2] = [("g1", "v1"), ("g2", "v2")].map(|(id, v)| {
        let at = w.backend_on("grpc-model", v, id, "r", "r-a", 50051);
        w.version("grpc-model", v).upstream.h2 = true;
        at
    });
    w.route("grpc-model", pin("v1"));
    // A model whose one endpoint does not answer (nothing listens on its port).
    w.endpoint_at("gone", "v1", "gone-0", &g1.replace(":50051", ":50059"), "r", "r-a");
    w.version("gone", "v1").upstream.h2 = true;
    let p1 = w.backend("plain", "v1", "p1", "r", "r-a");
    let cfg = w.write(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v1 = rt.block_on(backend(&g1, ServingStatus::Serving));
    let _v2 = rt.block_on(backend(&g2, ServingStatus::NotServing));
    let _sim = sim(&p1, "p1", "plain", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);

    rt.block_on(async {
        let ch = channel(public).await;
        let mut health = HealthClient::new(ch.clone());
        let check = |svc: &str| HealthCheckRequest { service: svc.into() };

        // Unary, routed by x-model-name: the v1 backend answers; the pin header picks v2.
        let r = health
            .check(with_headers(check("model"), &[("x-model-name", "grpc-model")]))
            .await
            .unwrap();
        assert_eq!(r.into_inner().status, Wire::Serving as i32);
        let r = health
            .check(with_headers(
                check("model"),
                &[("x-model-name", "grpc-model"), ("x-model-version", "v2")],
            ))
            .await
            .unwrap();
        assert_eq!(r.into_inner().status, Wire::NotServing as i32);

        // The backend's own error status (trailers-only) reaches the client intact.
        let e = health
            .check(with_headers(check("nope"), &[("x-model-name", "grpc-model")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        assert!(
            !e.message().contains("model"),
            "from the backend, not the gateway: {e:?}"
        );

        // Server streaming: the first update arrives while the stream stays open, then a later
        // change on the backend arrives on the same stream.
        let mut watch = health
            .watch(with_headers(check("model"), &[("x-model-name", "grpc-model")]))
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, Wire::Serving as i32);
        v1.set_service_status("model", ServingStatus::NotServing).await;
        let next = watch.message().await.unwrap().unwrap();
        assert_eq!(next.status, Wire::NotServing as i32);
        drop(watch);

        // The gateway's own answers are gRPC statuses with a message.
        let e = health.check(tonic::Request::new(check("model"))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("x-model-name"), "{e:?}");
        let e = health
            .check(with_headers(check("model"), &[("x-model-name", "ghost")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(e.message(), "model ghost not found");
        let e = health
            .check(with_headers(check("model"), &[("x-model-name", "plain")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
        // A failure's answer (here the endpoint's refused connection) is a status too, which
        // ends the stream rather than a reset (CANCELLED) that would lose it.
        let e = health
            .check(with_headers(check("model"), &[("x-model-name", "gone")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert_eq!(e.message(), "upstream connect error", "{e:?}");

        // KServe V2: ServerLive answered by the gateway; a model call routed by the model and
        // version named in its message: the v2 backend answers, having read the message intact
        // (counted under v2).
        let (live, _): (ServerLiveResponse, _) =
            v2_unary(ch.clone(), "ServerLive", ServerLiveRequest {}).await.unwrap();
        assert!(live.live);
        let msg = ModelReadyRequest {
            name: "grpc-model".into(),
            version: "v2".into(),
        };
        let (ready, meta) = v2_unary::<_, ModelReadyResponse>(ch.clone(), "ModelReady", msg)
            .await
            .unwrap();
        assert!(ready.ready);
        assert_eq!(meta.get("x-ready-for").unwrap(), format!("grpc-model/v2@{g2}").as_str());
        let msg = ModelReadyRequest {
            name: "ghost".into(),
            version: String::new(),
        };
        let e = v2_unary::<_, ModelReadyResponse>(ch, "ModelReady", msg)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    });

    let metrics = scrape(admin);
    let count = |version: &str| -> f64 {
        let v = format!("model_version=\"{version}\"");
        metric_sum(&metrics, "inference_requests_total", &["model_name=\"grpc-model\"", &v])
    };
    assert_eq!(count("v1"), 3.0, "{metrics}");
    assert_eq!(count("v2"), 2.0, "{metrics}");
    // The watch the client dropped while the backend held it open ended on the gateway too
    // (counted above), and as no error of the gateway's.
    let log = std::fs::read_to_string(cfg.with_extension("r.log")).unwrap();
    let watch_errors = log.lines().filter(|l| l.contains("ERROR") && l.contains("/Watch"));
    assert_eq!(watch_errors.count(), 0, "{log}");
}

#[test]
fn rest_and_grpc_of_one_model_reach_their_own_ports() {
    // A KServe-style pod: REST on 8080 (a sim backend), gRPC on 8081 (a tonic server), one
    // endpoint in the config with both.
    let dir = scratch("grpc-port");
    let mut w = World::new(116);
    let gw = w.gateway("r", &["r-a"]);
    w.gateway_of("r").listeners[0].protocols = vec![Protocol::Http1, Protocol::H2c];
    let rest = w.backend_on("iris", "v1", "iris-0", "r", "r-a", 8080);
    w.version("iris", "v1").endpoints[0].grpc_port = Some(8081);
    let grpc_at = rest.replace(":8080", ":8081");
    let cfg = w.write(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _grpc = rt.block_on(backend(&grpc_at, ServingStatus::Serving));
    let _rest = sim(&rest, "iris-0", "iris", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    // Ready means the REST health check passed: health checks use the REST address.
    let _gw = gateway(&cfg, "r", None, admin, public);

    let a = infer(&client(), public, "/v2/models/iris/infer", &[]);
    assert_eq!((a.status, a.served_by.as_str()), (200, "iris-0"), "{:?}", a.body);
    rt.block_on(async {
        let ch = channel(public).await;
        let r = HealthClient::new(ch)
            .check(with_headers(
                HealthCheckRequest {
                    service: "model".into(),
                },
                &[("x-model-name", "iris")],
            ))
            .await
            .unwrap();
        assert_eq!(r.into_inner().status, Wire::Serving as i32, "answered on the gRPC port");
    });
    let metrics = scrape(admin);
    assert_eq!(
        metric_sum(
            &metrics,
            "inference_requests_total",
            &["model_name=\"iris\"", "status=\"200\""]
        ),
        2.0,
        "{metrics}"
    );
}

/// A model server on raw HTTP/2 whose request window is 16 bytes, so no request body larger than
/// that can have arrived when it answers. A gRPC call is answered at once, by path alone, with a
/// trailers-only status; dropping the stream's handles then resets it with `NO_ERROR`, as RFC
/// 9113 8.1 has a server do when it answered before reading the whole request. Any other request
/// is read whole (its window released as it goes) and answered with the length it read, its body
/// held back `x-hold-ms` after its head. Returns each connection's end as it comes: `true` when
/// the client ended it in order (GOAWAY, then close).
async fn early_answerer(addr: &str) -> tokio::sync::mpsc::UnboundedReceiver<bool> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (ended, ends) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let ended = ended.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::Builder::new()
                    .initial_window_size(16)
                    .handshake::<_, bytes::Bytes>(tcp)
                    .await
                    .unwrap();
                let in_order = loop {
                    let (req, mut respond) = match conn.accept().await {
                        Some(Ok(stream)) => stream,
                        Some(Err(_)) => break false,
                        None => break true,
                    };
                    if req
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v == "application/grpc")
                    {
                        let status = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "12")
                            .header("grpc-message", "answered before the body")
                            .body(())
                            .unwrap();
                        respond.send_response(status, true).unwrap();
                        continue;
                    }
                    tokio::spawn(async move {
                        let hold = req
                            .headers()
                            .get("x-hold-ms")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(0);
                        let mut body = req.into_body();
                        let mut read = 0;
                        while let Some(data) = body.data().await {
                            let data = data.unwrap();
                            read += data.len();
                            let _ = body.flow_control().release_capacity(data.len());
                        }
                        let head = http::Response::builder().header("x-read-by", "h2").body(()).unwrap();
                        let mut out = respond.send_response(head, false).unwrap();
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                        out.send_data(format!("{{\"read\":{read}}}").into(), true).unwrap();
                    });
                };
                let _ = ended.send(in_order);
            });
        }
    });
    ends
}

#[test]
fn a_status_sent_before_the_request_body_is_read_reaches_the_client() {
    // The backend answers each gRPC call before taking its body (16 bytes of window for more),
    // then resets the stream with NO_ERROR: the client gets the backend's status, not the
    // gateway's "upstream error", however the reset and the upload race. A call routed by the
    // model its message names has its body read by the gateway before the call goes out, so
    // the upload is still waiting for window when the reset comes.
    const MODEL: &str = "a-model-that-answers-before-reading";
    let dir = scratch("grpc-early");
    let mut w = World::new(124);
    let gw = w.gateway("r", &["r-a"]);
    w.gateway_of("r").listeners[0].protocols = vec![Protocol::Http1, Protocol::H2c];
    w.config.gateway.health_check.enabled = false;
    w.config.gateway.retries.attempts = 0;
    let at = w.backend_on(MODEL, "v1", "e1", "r", "r-a", 50051);
    w.version(MODEL, "v1").upstream.h2 = true;
    let cfg = w.write(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ends = rt.block_on(early_answerer(&at));
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);

    rt.block_on(async {
        let ch = channel(public).await;
        let mut health = HealthClient::new(ch.clone());
        // Three calls: the first opens the gateway's connection to the backend, the others
        // share it.
        for _ in 0..3 {
            let e = health
                .check(with_headers(
                    HealthCheckRequest {
                        service: "m".repeat(200),
                    },
                    &[("x-model-name", MODEL)],
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
            assert_eq!(e.message(), "answered before the body", "{e:?}");
        }
        let msg = ModelReadyRequest {
            name: MODEL.into(),
            version: String::new(),
        };
        for _ in 0..3 {
            let e = v2_unary::<_, ModelReadyResponse>(ch.clone(), "ModelReady", msg.clone())
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
            assert_eq!(e.message(), "answered before the body", "{e:?}");
        }
    });

    // An HTTP/1 client's request to the same HTTP/2 backend: sent whole, however small the
    // backend's window, and the answer comes back with its fields.
    let body = "x".repeat(300);
    let r = client()
        .post(format!("http://{public}/v2/models/{MODEL}/infer"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-read-by"], "h2");
    assert_eq!(r.text().unwrap(), r#"{"read":300}"#);

    let metrics = scrape(admin);
    let served = metric_sum(
        &metrics,
        "inference_requests_total",
        &[&format!("model_name=\"{MODEL}\"")],
    );
    assert_eq!(served, 7.0, "{metrics}");
}

#[test]
fn an_idle_backend_connection_ends_in_order_and_never_under_a_request() {
    const MODEL: &str = "h2-model";
    let dir = scratch("grpc-idle");
    let mut w = World::new(126);
    let gw = w.gateway("r", &["r-a"]);
    w.config.gateway.health_check.enabled = false;
    w.config.gateway.timeouts.idle = secs(1);
    let at = w.backend_on(MODEL, "v1", "e1", "r", "r-a", 50051);
    w.version(MODEL, "v1").upstream.h2 = true;
    let cfg = w.write(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ends = rt.block_on(early_answerer(&at));
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let infer = |hold_ms: u64| {
        client()
            .post(format!("http://{public}/v2/models/{MODEL}/infer"))
            .header("x-hold-ms", hold_ms.to_string())
            .body("{}")
            .send()
            .unwrap()
    };
    let ended = |ends: &mut tokio::sync::mpsc::UnboundedReceiver<bool>| {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), ends.recv()).await })
            .expect("the gateway ends its idle connection to the backend")
            .unwrap()
    };

    // A response held 3 s, three times the idle timeout, on the connection's only stream: the
    // connection idles in the pool meanwhile, and is retired, but not under the request.
    let r = infer(3000);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), r#"{"read":2}"#);
    // Then, with no request to find it, it ends in order: GOAWAY, then close.
    assert!(ended(&mut ends), "the gateway closed its connection without a GOAWAY");
    assert!(ends.try_recv().is_err(), "one connection served the request");

    // The next request opens a fresh connection, unharmed.
    let r = infer(0);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), r#"{"read":2}"#);
    assert!(ended(&mut ends));
    let metrics = scrape(admin);
    let failures = metric_sum(
        &metrics,
        "meridian_upstream_attempts_total",
        &["outcome=\"gateway_failure\""],
    );
    assert_eq!(failures, 0.0, "{metrics}");
}
