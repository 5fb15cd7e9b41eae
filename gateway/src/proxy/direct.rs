//! Our own upstream leg: for a plain-HTTP/1 backend and a request whose whole body is small and
//! known (the common inference call), the gateway sends the request on a keep-alive connection of
//! its own ([`crate::http1::client`]: header and body in one write, the connection driven by this
//! task) instead of through pingora's upstream client. A cleartext HTTP/2 backend (gRPC, or a
//! version with `upstream.h2`) gets the same on a multiplexed connection of the worker thread's
//! ([`super::direct_h2`]). It serves both kinds of client connection ([`Downstream`]): our own
//! HTTP/1 path and pingora's sessions (HTTP/2 clients, and HTTP/1 requests left to pingora).
//!
//! Every rule of pingora's leg holds, through the same functions: the pick and the deadline
//! ([`Proxy::next_try`]), outcomes and retries ([`Proxy::response_status`], `record`, `may_retry`),
//! the forwarded and hop-by-hop headers, trace propagation, timeouts (connect, first byte, whole
//! request, idle between body reads), shadow capture and accounting. A failure before any response
//! byte on a connection that served before is the backend having closed it while idle: the request
//! goes again once on a fresh connection to the same endpoint, as pingora does, without blaming the
//! endpoint.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use meridian_config::schema::RetryOn;
use meridian_gateway_core::head::RequestHead;
use meridian_gateway_core::outlier::Outcome;
use meridian_gateway_core::reply::Reply;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorType};

use super::context::Ctx;
use super::downstream::Downstream;
use super::forward::UpstreamHead;
use super::Proxy;
use crate::http1::client::{self, BodyError, Conn, ExchangeError, ResponseHead};
use crate::http1::framing::Decoder;
use crate::routes::Routes;
use meridian_gateway_core::classify::Api;
use meridian_gateway_core::decide::Routed;

/// What one try came to.
pub(super) enum Tried {
    /// A response went to the client (whole, or until this error).
    Done(pingora::Result<()>),
    /// No response byte went to the client: go on with the next try.
    Again,
    /// No response byte went to the client: give up with this answer.
    Refuse(Reply),
}

/// Trace context fields the try writes itself when tracing is on.
const TRACE_FIELDS: [&str; 2] = ["traceparent", "tracestate"];

impl Proxy {
    /// Serves a routed, admitted request whose whole body is `body`. `Err` leaves the answer to the
    /// caller's failure path, with the gateway's own reply in `ctx.refusal` when no response byte
    /// was sent.
    pub async fn direct(&self, d: &mut impl Downstream, ctx: &mut Ctx, body: Bytes) -> pingora::Result<()> {
        ctx.bytes_in += body.len();
        let prompt = super::prompt::of(ctx, d.head(), Some(&body));
        if let Some(f) = ctx.flight.as_mut() {
            f.prompt = prompt;
            if let Some(copy) = f.shadow.as_mut() {
                copy.add(&body);
            }
        }
        let h2 = ctx.routed().is_some_and(|(routes, routed)| speaks_h2(routes, routed));
        loop {
            let left = match self.next_try(d.head().method(), ctx) {
                Ok(left) => left,
                Err(reply) => return Err(refuse(ctx, reply)),
            };
            let tried = if h2 {
                self.try_h2(d, ctx, &body, left).await
            } else {
                self.try_h1(d, ctx, &body, left).await
            };
            match tried {
                Tried::Done(served) => return served,
                Tried::Again => continue,
                Tried::Refuse(reply) => return Err(refuse(ctx, reply)),
            }
        }
    }

    /// One try over HTTP/1: a connection, the request, the response.
    async fn try_h1(&self, d: &mut impl Downstream, ctx: &mut Ctx, body: &Bytes, left: Duration) -> Tried {
        let Some((routes, routed)) = ctx.routed() else {
            return Tried::Refuse(Reply::error(500, "internal error: no routing table"));
        };
        let t = routes.snap.models[routed.model].policy.timeouts.clone();
        let Some((addr, now)) = ctx.attempt.as_ref().map(|a| (a.pick.endpoint.address, a.started)) else {
            return Tried::Refuse(Reply::error(500, "internal error: no attempt"));
        };
        let head = self.request_head(d, ctx, body.len());
        let head_request = *d.head().method() == http::Method::HEAD;
        let first_byte = t.first_byte.get().min(left);
        // The try started a moment ago: its start is "now" for the pool's idle bookkeeping.
        let mut conn = match client::checkout(addr, t.connect.get(), now).await {
            Ok(c) => c,
            Err(e) => return self.connect_failure(d, ctx, e.kind()),
        };
        let mut answer = conn.exchange(&head, body, head_request, first_byte).await;
        if conn.reused() && answer.as_ref().err() == Some(&ExchangeError::Closed) {
            // The backend closed this idle connection: once more on a fresh one, same endpoint.
            conn = match client::connect(addr, t.connect.get()).await {
                Ok(c) => c,
                Err(e) => return self.connect_failure(d, ctx, e.kind()),
            };
            answer = conn.exchange(&head, body, head_request, first_byte).await;
        }
        match answer {
            Ok(resp) if self.response_status(d, resp.status, ctx) => Tried::Again,
            Ok(resp) => Tried::Done(self.deliver(d, ctx, resp, conn, left).await),
            Err(e) => self.exchange_failed(d, ctx, e),
        }
    }

    /// A try that got no response head: the endpoint's failure, retried when allowed.
    pub(super) fn exchange_failed(&self, d: &impl Downstream, ctx: &mut Ctx, e: ExchangeError) -> Tried {
        self.record(ctx, Outcome::GatewayFailure);
        let (kind, retry, reply) = match e {
            // Closed or reset before any response byte: the request can go elsewhere.
            ExchangeError::Closed => ("ConnectionClosed", Some(RetryOn::Reset), (502, "upstream error")),
            ExchangeError::Refused => ("H2Error", Some(RetryOn::RefusedStream), (502, "upstream error")),
            ExchangeError::Malformed => ("InvalidHTTPHeader", None, (502, "upstream error")),
            ExchangeError::Timeout => ("ReadTimedout", None, (504, "upstream timed out")),
        };
        set_error(ctx, kind);
        if retry.is_some_and(|why| self.may_retry(ctx, why, d)) {
            Tried::Again
        } else {
            Tried::Refuse(Reply::error(reply.0, reply.1))
        }
    }

    /// The current try's request head: forwarding fields and, when tracing, the try's context.
    fn request_head(&self, d: &impl Downstream, ctx: &Ctx, body: usize) -> Vec<u8> {
        let span = self
            .telemetry
            .as_ref()
            .zip(ctx.attempt.as_ref().and_then(|a| a.span.as_ref()));
        let replaced: &[&str] = if span.is_some() { &TRACE_FIELDS } else { &[] };
        let mut head = UpstreamHead::start(d.head(), (d.client_ip(), d.tls(), d.first_hop()), body, replaced);
        if let Some((tel, span)) = span {
            tel.inject_fields(span, |name, value| head.field(name.as_bytes(), value.as_bytes()));
        }
        head.finish()
    }

    /// A try that could not connect: the endpoint's failure, retried if allowed.
    pub(super) fn connect_failure(&self, d: &impl Downstream, ctx: &mut Ctx, kind: &'static str) -> Tried {
        self.record(ctx, Outcome::GatewayFailure);
        if let Some(a) = ctx.attempt.as_mut() {
            a.in_flight = None;
        }
        set_error(ctx, kind);
        if self.may_retry(ctx, RetryOn::ConnectFailure, d) {
            Tried::Again
        } else {
            Tried::Refuse(Reply::error(502, "upstream connect error"))
        }
    }

    /// Streams the response to the client as it arrives (token streams unbuffered), then returns
    /// the connection to the pool when the body ended whole and the backend keeps it open.
    async fn deliver(
        &self,
        d: &mut impl Downstream,
        ctx: &mut Ctx,
        head: ResponseHead,
        mut conn: Conn,
        left: Duration,
    ) -> pingora::Result<()> {
        let mut body = Decoder::new(head.framing);
        let (read_timeout, idle) = body_timeouts(ctx, left);
        d.write_head(&head, body.is_done()).await?;
        while !body.is_done() {
            match unless_gone(d, conn.body(&mut body, read_timeout)).await? {
                Ok(Some(data)) => {
                    self.body_arrived(ctx, &data);
                    d.write_body(data, body.is_done()).await?
                }
                Ok(None) => d.write_body(Bytes::new(), true).await?,
                Err(BodyError::Timeout) => return Err(stalled(ctx)),
                Err(e) => return Err(read_failed(ctx, e)),
            }
        }
        if head.keep_alive {
            client::checkin(conn, idle, self.routing.clock.now());
            crate::pool_sweep::watch(&self.routing.clock);
        }
        Ok(())
    }
}

impl Proxy {
    /// A piece of the response body arrived: the first one ends the prompt's prefill (a token
    /// stream's head may come before it); an LLM answer's tokens are counted as they pass.
    pub(super) fn body_arrived(&self, ctx: &mut Ctx, data: &Bytes) {
        if let Some(a) = ctx.attempt.as_mut() {
            a.prefill = None;
        }
        if let Some(acc) = ctx.llm.as_mut() {
            acc.sent(data, self.routing.clock.now());
        }
    }
}

/// Whether the request's version is served over HTTP/2 (gRPC always is).
pub(super) fn speaks_h2(routes: &Routes, routed: Routed) -> bool {
    routed.api == Api::Grpc || routes.snap.models[routed.model].versions[routed.version].upstream.h2
}

/// How long the response body may take to each piece (within what is left of the deadline), and
/// how long the connection may then idle in the pool.
pub(super) fn body_timeouts(ctx: &Ctx, left: Duration) -> (Duration, Duration) {
    ctx.routed().map_or((left, left), |(routes, routed)| {
        let t = &routes.snap.models[routed.model].policy.timeouts;
        (t.first_byte.get().min(left), t.idle.get())
    })
}

/// `piece` (what the backend sends next) unless the client goes first ([`Downstream::gone`]): a
/// stream the backend holds open with nothing to send (a gRPC watch) ends with its client.
pub(super) async fn unless_gone<T>(d: &mut impl Downstream, piece: impl Future<Output = T>) -> pingora::Result<T> {
    tokio::select! {
        biased;
        t = piece => Ok(t),
        () = d.gone() => {
            let mut e = Error::explain(ErrorType::ConnectionClosed, "the client closed its stream");
            e.as_down();
            Err(e)
        }
    }
}

/// The response body stopped coming within its timeout.
pub(super) fn stalled(ctx: &mut Ctx) -> Box<Error> {
    set_error(ctx, "ReadTimedout");
    Error::explain(ErrorType::ReadTimedout, "upstream body stalled")
}

/// Reading the response body failed.
pub(super) fn read_failed(ctx: &mut Ctx, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Box<Error> {
    set_error(ctx, "ReadError");
    Error::because(ErrorType::ReadError, "reading the upstream body", e)
}

/// The whole request body of a pingora session (bounded by the caller's eligibility check). After
/// a body peek, pingora's replay buffer holds what the peek read, and the rest joins it; otherwise
/// the chunks are taken as read (usually one, and no copy).
pub(super) async fn read_whole_body(session: &mut ServerSession, peeked: bool) -> pingora::Result<Bytes> {
    if peeked {
        while session.read_request_body().await?.is_some() {}
        return Ok(session.get_retry_buffer().unwrap_or_default());
    }
    let Some(first) = session.read_request_body().await? else {
        return Ok(Bytes::new());
    };
    let Some(second) = session.read_request_body().await? else {
        return Ok(first);
    };
    let mut all = bytes::BytesMut::from(&first[..]);
    all.extend_from_slice(&second);
    while let Some(more) = session.read_request_body().await? {
        all.extend_from_slice(&more);
    }
    Ok(all.freeze())
}

/// Notes the error type that ended the current try (for its trace span and the log).
pub(super) fn set_error(ctx: &mut Ctx, kind: &'static str) {
    if let Some(a) = ctx.attempt.as_mut() {
        a.error = Some(kind);
    }
}

/// Leaves `reply` for the failure path and returns the error that takes the request there.
fn refuse(ctx: &mut Ctx, reply: Reply) -> Box<Error> {
    let msg = reply.message().unwrap_or("refused").to_string();
    let status = reply.status;
    ctx.refusal = Some(reply);
    Error::explain(ErrorType::HTTPStatus(status), msg)
}
