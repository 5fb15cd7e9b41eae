//! The pingora adapter: each request is classified, routed, balanced, retried and accounted by the
//! core; this file only moves data between pingora's callbacks and the core.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use meridian_config::schema::RetryOn;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use rand::Rng;

use crate::budget::{Active, RetryToken};
use crate::classify::{classify, Api, ClassifyError, Target};
use crate::clock::Nanos;
use crate::cluster::Pick;
use crate::endpoint::InFlight;
use crate::errors::Reply;
use crate::grpc::Call;
use crate::openai::Peek;
use crate::outlier::Outcome;
use crate::routes::Routes;
use crate::select::{select, SelectError};
use crate::state::Gateway;

/// The proxy service: stateless itself, everything lives in [`Gateway`].
pub struct Proxy {
    /// Shared gateway state.
    pub gw: Arc<Gateway>,
}

/// Per-request state carried across pingora's callbacks.
#[derive(Default)]
pub struct Ctx {
    /// The routing table this request uses from start to end, even if a reload swaps another in.
    routes: Option<Arc<Routes>>,
    model: usize,
    version: usize,
    /// The endpoint of the current attempt.
    pick: Option<Pick>,
    in_flight: Option<InFlight>,
    tried: Vec<SocketAddr>,
    attempt_started: Nanos,
    /// When the request arrived; the whole-request timeout counts from here across retries.
    started: Nanos,
    /// Outcome of the current attempt already fed to outlier detection.
    recorded: bool,
    _active: Option<Active>,
    _retry: Option<RetryToken>,
    /// Set when an upstream 503 is being retried, so the error is not reconsidered.
    retrying_503: bool,
    /// Message for the error the gateway answers with, when it answers one.
    error: Option<(u16, String)>,
    /// Version that gets a mirrored copy, and the body buffered for it.
    shadow: Option<Shadow>,
    /// Whether the request named a model the config knows (for metric labels).
    known_model: bool,
    /// Whether a version was selected.
    known_version: bool,
    /// Request body bytes seen.
    bytes_in: usize,
    /// The model concurrency slot this request holds, released when the request ends.
    _admitted: Option<crate::admission::Admitted>,
    /// Counts this request in for graceful shutdown until its last log line.
    _in_progress: Option<crate::drain::InProgress>,
    /// The request's server span, when tracing is on.
    trace: Option<opentelemetry::Context>,
    /// The current upstream attempt's client span, the status it got and its error, if any.
    attempt: Option<(opentelemetry_sdk::trace::Span, u16, Option<&'static str>)>,
}

/// A request being mirrored: the copy goes out once the client's request is complete.
struct Shadow {
    version: usize,
    body: Vec<bytes::Bytes>,
    size: usize,
    limit: usize,
    overflow: bool,
}

impl Proxy {
    /// Feeds one attempt's outcome to outlier detection, once.
    fn record(&self, ctx: &mut Ctx, outcome: Outcome) {
        if ctx.recorded {
            return;
        }
        ctx.recorded = true;
        let (Some(routes), Some(pick)) = (ctx.routes.as_ref(), ctx.pick.as_ref()) else {
            return;
        };
        let cfg = &routes.snap.models[ctx.model].policy.outlier_detection;
        let ep = &pick.endpoint;
        let m = &routes.snap.models[ctx.model];
        let label = match outcome {
            Outcome::Success => "success",
            Outcome::ServerError => "server_error",
            Outcome::GatewayFailure => "gateway_failure",
        };
        self.gw
            .metrics
            .attempts
            .with_label_values(&[&m.name, &m.versions[ctx.version].name, &ep.id, label])
            .inc();
        if let Some(reason) = self.gw.detector.record(ep, outcome, cfg) {
            let cluster = &routes.clusters[ctx.model][ctx.version];
            let members: Vec<_> = cluster.endpoints().collect();
            if self
                .gw
                .detector
                .eject(&self.gw.registry, &members, ep, self.gw.clock.now(), cfg)
            {
                tracing::warn!(endpoint = %ep.id, ?reason, "endpoint ejected");
                self.gw
                    .metrics
                    .ejections
                    .with_label_values(&[&ep.id, reason.label()])
                    .inc();
            }
        }
    }

    /// Whether another attempt is allowed for `why`; takes a retry from the budget if so.
    fn may_retry(&self, ctx: &mut Ctx, why: RetryOn, session: &Session) -> bool {
        let Some(routes) = ctx.routes.as_ref() else {
            return false;
        };
        let r = &routes.snap.models[ctx.model].policy.retries;
        let attempts = ctx.tried.len() as u32;
        if attempts > r.attempts || !r.on.contains(&why) || session.response_written().is_some() {
            return false;
        }
        if session.as_ref().retry_buffer_truncated() {
            return false; // the body streamed past the replay buffer; it cannot be sent again
        }
        match self.gw.budget.try_retry(r.budget_percent, r.min_concurrent) {
            Some(token) => {
                ctx._retry = Some(token);
                let reason = match why {
                    RetryOn::ConnectFailure => "connect-failure",
                    RetryOn::RefusedStream => "refused-stream",
                    RetryOn::Reset => "reset",
                    RetryOn::Unavailable => "unavailable",
                };
                self.gw
                    .metrics
                    .retries
                    .with_label_values(&[&routes.snap.models[ctx.model].name, reason])
                    .inc();
                true
            }
            None => false,
        }
    }

    fn answer_locally(&self, routes: &Routes, target: Target<'_>) -> Option<Reply> {
        use serde_json::json;
        match target {
            Target::ServerLive => Some(Reply::json(200, json!({"live": true}))),
            Target::ServerReady => {
                let ready = self.gw.ready.load(std::sync::atomic::Ordering::Relaxed);
                Some(Reply::json(if ready { 200 } else { 503 }, json!({"ready": ready})))
            }
            Target::ServerMetadata => Some(Reply::json(
                200,
                json!({"name": "meridian", "version": env!("CARGO_PKG_VERSION"), "extensions": []}),
            )),
            Target::ListModels => {
                let names: Vec<_> = routes.snap.models.iter().map(|m| m.name.as_ref()).collect();
                Some(Reply::json(200, json!({ "models": names })))
            }
            // Routed by the body's model before this point; never answered here.
            Target::OpenAi => Some(Reply::error(500, "internal error: unrouted OpenAI request")),
            Target::Model { .. } => None,
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _in_progress: Some(self.gw.drain.enter()),
            ..Ctx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.started = self.gw.clock.now();
        if let Some(t) = &self.gw.telemetry {
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            ctx.trace = Some(t.server_span(session.req_header(), client, tls));
        }
        if self.gw.drain.draining() {
            // Stopping: this connection's last response, so the client's pool moves on cleanly.
            session.set_keepalive(None);
        }
        let routes = self.gw.routes.load_full();
        let req = session.req_header();
        // 431 before anything else: the whole header block counts (the default limit is 64KiB).
        let header_limit = routes.snap.config.gateway.limits.max_request_headers.bytes() as usize;
        let header_bytes = req.uri.path_and_query().map_or(0, |p| p.as_str().len())
            + req
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if header_bytes > header_limit {
            ctx.routes = Some(routes.clone());
            let msg = format!("request headers are {header_bytes} bytes, more than the {header_limit} allowed");
            Reply::error(431, msg).send(session).await?;
            return Ok(true);
        }
        // gRPC calls: named by header, answered here, or named in their first message.
        let grpc = crate::grpc::is_grpc(&req.headers);
        let mut peeker: Option<(fn(&[u8]) -> Peek, Api)> = None;
        if grpc {
            match crate::grpc::classify(req.uri.path(), &req.headers) {
                Call::Model(_) => {}
                Call::InMessage => peeker = Some((crate::grpc::peek, Api::Grpc)),
                Call::ServerLive => {
                    crate::grpc::send_message(session, crate::grpc::bool_message(true)).await?;
                    return Ok(true);
                }
                Call::ServerReady => {
                    let ready = self.gw.ready.load(std::sync::atomic::Ordering::Relaxed);
                    crate::grpc::send_message(session, crate::grpc::bool_message(ready)).await?;
                    return Ok(true);
                }
                Call::Unroutable(why) => {
                    ctx.routes = Some(routes.clone());
                    Reply::error(400, why).send(session).await?;
                    return Ok(true);
                }
            }
        } else if matches!(classify(&req.method, req.uri.path()), Ok(Target::OpenAi)) {
            peeker = Some((crate::openai::peek, Api::OpenAi));
        }
        // OpenAI-style requests and V2 gRPC calls name their model in the body: peek at it
        // (bounded), then route them like any model. The bytes read are replayed to the backend
        // from pingora's retry buffer.
        let body_model = if let Some((peek, api)) = peeker {
            session.as_mut().enable_retry_buffering();
            match peek_model(session, peek).await? {
                Ok((m, v)) => Some((api, m, v)),
                Err(reply) => {
                    ctx.routes = Some(routes.clone());
                    // Read what the client is still sending, so it can read our answer (bounded).
                    drain_body(session, routes.snap.config.gateway.limits.max_request_body.bytes()).await;
                    session.set_keepalive(None);
                    reply.send(session).await?;
                    return Ok(true);
                }
            }
        } else {
            None
        };
        let req = session.req_header();
        let target = match &body_model {
            Some((api, m, v)) => Ok(Target::Model {
                api: *api,
                model: m.as_str(),
                version: v.as_deref(),
            }),
            None if grpc => match crate::grpc::classify(req.uri.path(), &req.headers) {
                Call::Model(m) => Ok(Target::Model {
                    api: Api::Grpc,
                    model: m,
                    version: None,
                }),
                _ => Err(ClassifyError::UnknownPath),
            },
            None => classify(&req.method, req.uri.path()),
        };
        let (reply, chosen) = match target {
            Err(ClassifyError::UnknownPath) => (
                Some(Reply::error(404, format!("no inference route for {}", req.uri.path()))),
                None,
            ),
            Err(ClassifyError::MethodNotAllowed) => (
                Some(Reply::error(405, format!("{} is not allowed here", req.method))),
                None,
            ),
            Ok(Target::Model { model, version, .. }) => match routes.snap.model(model) {
                None => (Some(Reply::error(404, format!("model {model} not found"))), None),
                Some(m) => {
                    ctx.known_model = true;
                    ctx.model = m;
                    let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
                    let key = match client {
                        Some(std::net::IpAddr::V4(ip)) => ip.octets().to_vec(),
                        Some(std::net::IpAddr::V6(ip)) => ip.octets().to_vec(),
                        None => Vec::new(),
                    };
                    let draw: f64 = rand::rng().random();
                    match select(&routes.snap.models[m], version, &req.headers, &key, draw) {
                        Ok(sel) => (None, Some((m, sel))),
                        Err(SelectError::UnknownVersion(v)) => (
                            Some(Reply::error(404, format!("version {v} of model {model} not found"))),
                            None,
                        ),
                        Err(SelectError::NoRoute) => (
                            Some(Reply::error(404, format!("no routing rule of model {model} matches"))),
                            None,
                        ),
                    }
                }
            },
            Ok(other) => (self.answer_locally(&routes, other), None),
        };
        ctx.routes = Some(routes.clone());
        if let Some(reply) = reply {
            reply.send(session).await?;
            return Ok(true);
        }
        if let Some((m, _)) = chosen {
            // 413 for a declared body over the model's limit; streamed bodies are counted as they come.
            let limit = routes.snap.models[m].policy.limits.max_request_body.bytes();
            let declared = session
                .req_header()
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if let Some(len) = declared.filter(|len| *len > limit) {
                ctx.routes = Some(routes.clone());
                Reply::error(
                    413,
                    format!("request body is {len} bytes, more than the {limit} allowed"),
                )
                .send(session)
                .await?;
                return Ok(true);
            }
        }
        if let Some((m, sel)) = chosen {
            ctx.model = m;
            ctx.version = sel.version;
            ctx.known_version = true;
            let version = &routes.snap.models[m].versions[sel.version];
            if grpc && !version.upstream.h2 {
                let msg = format!(
                    "model {} version {} is not served over HTTP/2, which gRPC needs (upstream.h2)",
                    routes.snap.models[m].name, version.name
                );
                Reply::error(501, msg).send(session).await?;
                return Ok(true);
            }
            ctx.shadow = sel.shadow.map(|version| Shadow {
                version,
                body: Vec::new(),
                size: 0,
                limit: routes.snap.models[m].policy.retries.buffer_body.bytes() as usize,
                overflow: false,
            });
            // Admission: the request's priority class from its header, else its rule, else the default.
            let limits = &routes.snap.models[m].policy.limits;
            let asked = session
                .req_header()
                .headers
                .get(limits.priority_header.as_str())
                .map(|v| v.as_bytes());
            let class = crate::admission::class_of(asked)
                .or(sel.priority)
                .unwrap_or(limits.default_priority);
            match routes.admission[m].admit(class).await {
                Ok(slot) => ctx._admitted = Some(slot),
                Err(shed) => {
                    let (status, reason) = shed.status();
                    let model = &routes.snap.models[m].name;
                    let class_label = format!("{class:?}").to_lowercase();
                    self.gw
                        .metrics
                        .shed
                        .with_label_values(&[&**model, class_label.as_str(), reason])
                        .inc();
                    let msg = match shed {
                        crate::admission::Shed::LowPriority => {
                            format!("model {model} is busy; {class_label} requests are shed first")
                        }
                        crate::admission::Shed::Displaced => {
                            format!(
                                "model {model} is busy; a higher-priority request took this one's place in the queue"
                            )
                        }
                        crate::admission::Shed::QueueFull => {
                            format!("model {model} is at its concurrency limit and its queue is full")
                        }
                        crate::admission::Shed::Deadline => {
                            format!("model {model} stayed at its concurrency limit past the queue deadline")
                        }
                    };
                    Reply::error(status, msg).send(session).await?;
                    return Ok(true);
                }
            }
        }

        ctx._active = Some(self.gw.budget.request());
        session.as_mut().enable_retry_buffering();
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<Box<HttpPeer>> {
        let Some(routes) = ctx.routes.clone() else {
            return Err(Error::explain(ErrorType::InternalError, "no routing table"));
        };
        let cluster = &routes.clusters[ctx.model][ctx.version];
        let now = self.gw.clock.now();
        let policy = &routes.snap.models[ctx.model].policy;
        // Whole-request deadline: each retry gets only what is left of it.
        let left = policy
            .timeouts
            .request
            .get()
            .saturating_sub(std::time::Duration::from_nanos(now.saturating_sub(ctx.started)));
        if left.is_zero() {
            ctx.error = Some((504, "request timed out".into()));
            return Err(Error::explain(ErrorType::HTTPStatus(504), "request deadline passed"));
        }
        let pick = cluster.pick(self.gw.registry.epoch(), now, &mut rand::rng(), &ctx.tried);
        let Some(pick) = pick else {
            let m = &routes.snap.models[ctx.model];
            let msg = format!(
                "no healthy endpoint for model {} version {}",
                m.name, m.versions[ctx.version].name
            );
            ctx.error = Some((503, msg.clone()));
            return Err(Error::explain(ErrorType::HTTPStatus(503), msg));
        };
        let ep = pick.endpoint.clone();
        ctx.in_flight = Some(ep.start());
        ctx.tried.push(ep.address);
        ctx.attempt_started = now;
        ctx.recorded = false;
        ctx.retrying_503 = false;
        if let (Some(t), Some(server)) = (&self.gw.telemetry, &ctx.trace) {
            end_attempt(ctx.attempt.take());
            let level = cluster.levels.get(pick.level).map_or("", |l| l.kind.label());
            let method = session.req_header().method.as_str();
            let resend = ctx.tried.len() - 1;
            ctx.attempt = Some((
                t.attempt_span(server, method, &ep.id, ep.address, resend, level),
                0,
                None,
            ));
        }
        ctx.pick = Some(pick);
        let upstream = &routes.snap.models[ctx.model].versions[ctx.version].upstream;
        let mut peer = match &routes.upstream_tls[ctx.model][ctx.version] {
            None => HttpPeer::new(ep.address, false, String::new()),
            Some(tls) => {
                let mut p = HttpPeer::new(ep.address, true, tls.name_for(ep.address.ip()));
                p.options.ca = tls.ca.clone();
                p
            }
        };
        let t = &policy.timeouts;
        peer.options.connection_timeout = Some(t.connect.get());
        peer.options.read_timeout = Some(t.first_byte.get().min(left));
        peer.options.write_timeout = Some(t.idle.get());
        peer.options.idle_timeout = Some(t.idle.get());
        if upstream.h2 {
            peer.options.set_http_version(2, 2);
            // Multiplex: gRPC streams share connections as they would from any gRPC client.
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        strip_hop_by_hop(req);
        if let (Some(t), Some((span, ..))) = (&self.gw.telemetry, &ctx.attempt) {
            t.inject(span, req);
        }
        // X-Forwarded-For/-Proto (de facto) and Forwarded (RFC 7239), appended to what the client
        // sent, so backends see the whole chain and the scheme the client used.
        let proto = if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            "https"
        } else {
            "http"
        };
        let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        if let Some(ip) = client {
            let xff = match req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.to_string(),
            };
            req.insert_header("x-forwarded-for", xff)?;
            let node = match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
            };
            let this = format!("for={node};proto={proto}");
            let fwd = match req.headers.get("forwarded").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {this}"),
                None => this,
            };
            req.insert_header("forwarded", fwd)?;
        }
        req.insert_header("x-forwarded-proto", proto)?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.bytes_in += body.as_ref().map_or(0, |b| b.len());
        if let Some(routes) = ctx.routes.as_ref() {
            let limit = routes.snap.models[ctx.model].policy.limits.max_request_body.bytes();
            if ctx.bytes_in as u64 > limit {
                let msg = format!("request body is over the {limit} bytes allowed");
                ctx.error = Some((413, msg.clone()));
                return Err(Error::explain(ErrorType::HTTPStatus(413), msg));
            }
        }
        if let (Some(sh), Some(chunk)) = (ctx.shadow.as_mut(), body.as_ref()) {
            sh.size += chunk.len();
            if sh.size > sh.limit {
                sh.overflow = true;
                sh.body.clear();
            } else if !sh.overflow {
                sh.body.push(chunk.clone());
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let status = resp.status.as_u16();
        if let Some(a) = ctx.attempt.as_mut() {
            a.1 = status;
        }
        let now = self.gw.clock.now();
        if let Some(p) = &ctx.pick {
            let rtt = now.saturating_sub(ctx.attempt_started);
            p.endpoint.observe_latency(now, rtt);
            if let Some(series) = ctx.routes.as_ref().map(|r| &r.series[ctx.model][ctx.version]) {
                series.attempt_latency.observe(rtt as f64 / 1e9);
            }
        }
        self.record(ctx, Outcome::of_status(status));
        if status == 503 && self.may_retry(ctx, RetryOn::Unavailable, session) && has_other(ctx) {
            ctx.retrying_503 = true;
            let mut e = Error::explain(ErrorType::HTTPStatus(503), "backend unavailable, retrying elsewhere");
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        self.record(ctx, Outcome::GatewayFailure);
        ctx.in_flight = None;
        if let Some(a) = ctx.attempt.as_mut() {
            a.2 = Some(e.etype().as_str());
        }
        let retry = self.may_retry(ctx, RetryOn::ConnectFailure, session);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("endpoint {peer}"));
        if ctx.retrying_503 {
            e.set_retry(true);
            return e;
        }
        if ctx.error.is_some() {
            // Our own refusal (a body over the limit): not the endpoint's failure, and final.
            e.set_retry(false);
            return e;
        }
        self.record(ctx, Outcome::GatewayFailure);
        if let Some(a) = ctx.attempt.as_mut() {
            a.2 = Some(e.etype().as_str());
        }
        let reset = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::H2Error
        ) && *e.esource() == ErrorSource::Upstream;
        let retry = reset && self.may_retry(ctx, RetryOn::Reset, session);
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (status, msg) = match (ctx.error.take(), e.etype()) {
            (Some(x), _) => x,
            (None, ErrorType::HTTPStatus(503)) if ctx.retrying_503 => (503, "every endpoint tried answered 503".into()),
            (None, ErrorType::HTTPStatus(c)) => (*c, format!("request failed with status {c}")),
            (None, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => (504, "upstream timed out".into()),
            (
                None,
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError,
            ) => (502, "upstream connect error".into()),
            (None, _) => match e.esource() {
                ErrorSource::Upstream => (502, "upstream error".into()),
                ErrorSource::Downstream => (0, String::new()),
                _ => (500, "internal error".into()),
            },
        };
        if status > 0 && session.response_written().is_none() {
            if status == 413 {
                // The client may still be sending: read the rest (bounded) so it can read the answer
                // instead of hitting a reset.
                drain_body(session, DRAIN_LIMIT).await;
            }
            // The connection is not reused after a failure: say so, or the client's pool would
            // send its next request into a closing connection.
            session.set_keepalive(None);
            let _ = Reply::error(status, msg).send(session).await;
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        ctx.in_flight = None;
        self.account(session, ctx);
        end_attempt(ctx.attempt.take());
        if let Some(server) = ctx.trace.take() {
            self.end_trace(session, ctx, &server);
        }
        if let (Some(sh), Some(routes)) = (ctx.shadow.take(), ctx.routes.as_ref()) {
            if !sh.overflow {
                crate::shadow::send(&self.gw, routes, ctx.model, sh.version, session.req_header(), sh.body);
            }
        }
    }
}

impl Proxy {
    /// Ends the request's server span with what the request came to.
    fn end_trace(&self, session: &Session, ctx: &Ctx, server: &opentelemetry::Context) {
        let req = session.req_header();
        let model = ctx
            .routes
            .as_ref()
            .and_then(|r| r.snap.models.get(ctx.model))
            .filter(|_| ctx.known_model);
        let version = model
            .filter(|_| ctx.known_version)
            .map(|m| &*m.versions[ctx.version].name);
        let route = model.map(|m| route_template(req.uri.path(), &m.name, version));
        let level = ctx.pick.as_ref().and_then(|p| {
            let r = ctx.routes.as_ref()?;
            r.clusters[ctx.model][ctx.version].levels.get(p.level)
        });
        let outcome = crate::telemetry::Outcome {
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            route: route.as_deref(),
            model: model.zip(version).map(|(m, v)| (&*m.name, v)),
            endpoint: ctx
                .pick
                .as_ref()
                .map(|p| (&*p.endpoint.id, level.map_or("", |l| l.kind.label()))),
            retries: ctx.tried.len().saturating_sub(1),
        };
        crate::telemetry::end_request(server, req.method.as_str(), &outcome);
    }

    /// Metrics and the access log line of a finished request.
    fn account(&self, session: &Session, ctx: &Ctx) {
        let Some(routes) = ctx.routes.as_ref() else { return };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let seconds = self.gw.clock.now().saturating_sub(ctx.started) as f64 / 1e9;
        let model = routes.snap.models.get(ctx.model).filter(|_| ctx.known_model);
        let model_name = model.map_or(crate::metrics::UNKNOWN_MODEL, |m| &m.name);
        let version = model
            .filter(|_| ctx.known_version)
            .map_or("", |m| &m.versions[ctx.version].name);
        let series = (ctx.known_version && ctx.pick.is_some()).then(|| &routes.series[ctx.model][ctx.version]);
        self.gw.metrics.request(series, model_name, version, status, seconds);
        let log = &routes.snap.config.observability.access_log;
        if !log.enabled {
            return;
        }
        let req = session.req_header();
        let level = ctx
            .pick
            .as_ref()
            .and_then(|p| routes.clusters[ctx.model][ctx.version].levels.get(p.level));
        // The trace this request's spans belong to; without tracing, the one the client named.
        let traced = ctx.trace.as_ref().map(|c| {
            use opentelemetry::trace::TraceContextExt;
            c.span().span_context().trace_id().to_string()
        });
        let entry = crate::accesslog::Entry {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            trace_id: traced.as_deref().or_else(|| {
                req.headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::accesslog::trace_id)
            }),
            client: session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
            method: req.method.as_str(),
            path: req.uri.path(),
            model: model.map_or("", |m| &m.name),
            version,
            endpoint: ctx.pick.as_ref().map_or("", |p| &p.endpoint.id),
            locality: level.map_or("", |l| l.kind.label()),
            status,
            duration_ms: seconds * 1e3,
            retries: ctx.tried.len().saturating_sub(1),
            bytes_in: ctx.bytes_in,
            bytes_out: session.body_bytes_sent(),
        };
        if !self.gw.access_log.write(&entry, log.format) {
            self.gw.metrics.access_log_dropped.inc();
        }
    }
}

/// Most request body bytes read and dropped before refusing a request, so the client can read the
/// refusal; beyond it the connection is simply closed.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads and drops the rest of the request body, up to `limit` bytes.
async fn drain_body(session: &mut Session, limit: u64) {
    let mut drained = 0u64;
    while drained <= limit {
        match session.as_mut().read_request_body().await {
            Ok(Some(chunk)) => drained += chunk.len() as u64,
            _ => break,
        }
    }
}

/// Reads the body until its `model` field shows, within [`crate::openai::PEEK_LIMIT`].
/// Reads the request body (bounded by what pingora can replay) until `peek` finds the model.
async fn peek_model(
    session: &mut Session,
    peek: fn(&[u8]) -> Peek,
) -> pingora::Result<Result<(String, Option<String>), Reply>> {
    use crate::openai::PEEK_LIMIT;
    let too_far = || Reply::error(400, "the model must be named within the first 64KiB of the body");
    let mut buf: Vec<u8> = Vec::new();
    let mut done = false;
    loop {
        // What was read must fit pingora's replay buffer, or the backend would not get it all.
        if buf.len() > PEEK_LIMIT || session.as_ref().retry_buffer_truncated() {
            return Ok(Err(too_far()));
        }
        match peek(&buf) {
            Peek::Model(m, v) => return Ok(Ok((m, v))),
            Peek::Invalid(e) => return Ok(Err(Reply::error(400, e))),
            Peek::NeedMore if done => {
                return Ok(Err(Reply::error(400, "the request body ended before naming its model")))
            }
            Peek::NeedMore => {}
        }
        match session.as_mut().read_request_body().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => done = true,
        }
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) end at the gateway: the standard ones and any the client's
/// `Connection` header names. `TE: trailers` stays, as gRPC needs it end to end.
fn strip_hop_by_hop(req: &mut RequestHeader) {
    const HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
        "trailer",
    ];
    if let Some(named) = req.headers.get("connection").and_then(|v| v.to_str().ok()) {
        let named: Vec<String> = named
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        for name in named {
            req.remove_header(name.as_str());
        }
    }
    for name in HOP {
        req.remove_header(name);
    }
    if req.headers.get("te").is_some_and(|v| v.as_bytes() != b"trailers") {
        req.remove_header("te");
    }
}

/// Ends an upstream attempt's client span, if tracing made one.
fn end_attempt(attempt: Option<(opentelemetry_sdk::trace::Span, u16, Option<&'static str>)>) {
    if let Some((span, status, error)) = attempt {
        crate::telemetry::end_attempt(span, status, error);
    }
}

/// `http.route` of a model request: its path with the model and version as placeholders
/// (`/v2/models/{model}/versions/{version}/infer`); other paths are fixed routes already.
fn route_template(path: &str, model: &str, version: Option<&str>) -> String {
    let mut route = path.replacen(&format!("/models/{model}"), "/models/{model}", 1);
    if let Some(v) = version {
        route = route.replacen(&format!("/versions/{v}"), "/versions/{version}", 1);
    }
    route
}

/// Whether the cluster has an endpoint this request has not tried.
fn has_other(ctx: &Ctx) -> bool {
    let Some(routes) = &ctx.routes else { return false };
    routes.clusters[ctx.model][ctx.version]
        .endpoints()
        .any(|e| e.available() && !ctx.tried.contains(&e.address))
}
