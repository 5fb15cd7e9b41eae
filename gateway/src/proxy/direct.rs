//! The direct upstream leg: for a plain-HTTP/1 backend and a request whose whole body is small and
//! known (the common inference call), the gateway sends the request itself on a keep-alive
//! connection of its own ([`crate::pool`], hyper's HTTP/1 client) instead of through pingora's
//! upstream client, which writes the header and the body in separate sends and re-reads each reused
//! connection's peer address. pingora still owns the downstream side (listeners, TLS, HTTP/1 and
//! h2, the response writer).
//!
//! Every rule of the other leg holds, through the same functions: the pick and the deadline
//! ([`Proxy::next_try`]), outcomes and retries ([`Proxy::response_status`], `record`, `may_retry`),
//! the forwarded and hop-by-hop headers, trace propagation, timeouts (connect, first byte, whole
//! request), shadow capture and accounting. A failure before any response byte on a connection
//! that served before is the backend having closed it while idle: the request goes again once on a
//! fresh connection to the same endpoint, as pingora does, without blaming the endpoint.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Full};
use meridian_config::schema::RetryOn;
use meridian_gateway_core::classify::Api;
use meridian_gateway_core::outlier::Outcome;
use meridian_gateway_core::prefix::PEEK_LIMIT;
use meridian_gateway_core::reply::Reply;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::context::Ctx;
use super::{forward, Proxy};
use crate::pool;

/// What one try came to before any response byte went to the client.
enum Tried {
    /// The response to deliver, and the connection it came on.
    Answered(
        Box<http::Response<hyper::body::Incoming>>,
        pool::Sender,
        std::net::SocketAddr,
    ),
    /// Go on with the next try.
    Again,
    /// Give up with this answer.
    Refuse(Reply),
}

impl Proxy {
    /// Whether the routed request takes the direct leg: a plain HTTP/1 backend, and a body of
    /// known length small enough to be held whole for retries (no `Expect`, no upgrade).
    pub(super) fn takes_direct_leg(&self, session: &mut Session, ctx: &Ctx) -> bool {
        let Some((routes, routed)) = ctx.routed() else {
            return false;
        };
        let entry = &routes.snap.models[routed.model];
        if entry.versions[routed.version].upstream.h2 || routes.version(routed.model, routed.version).tls.is_some() {
            return false;
        }
        let req = session.req_header();
        let h = &req.headers;
        if h.contains_key(header::EXPECT)
            || h.contains_key(header::UPGRADE)
            || h.contains_key(header::TRANSFER_ENCODING)
        {
            return false;
        }
        let length = match h.get(header::CONTENT_LENGTH) {
            Some(v) => match v.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => n,
                None => return false,
            },
            // HTTP/1 without a length has no body; HTTP/2 may stream one until END_STREAM.
            None if req.version == http::Version::HTTP_2 => return session.as_mut().is_body_empty(),
            None => 0,
        };
        let replayable = entry.policy.retries.buffer_body.bytes().min(PEEK_LIMIT as u64);
        length <= replayable
    }

    /// Serves the request on the direct leg. `Err` leaves the answer to `fail_to_proxy`, with the
    /// gateway's own reply in `ctx.refusal` when no response byte was sent.
    pub(super) async fn direct(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        let peeked = ctx
            .routed()
            .is_some_and(|(_, r)| matches!(r.api, Api::OpenAi | Api::Grpc));
        let body = read_whole_body(session, peeked).await?;
        ctx.bytes_in += body.len();
        if let Some(copy) = ctx.flight.as_mut().and_then(|f| f.shadow.as_mut()) {
            copy.add(&body);
        }
        loop {
            let left = match self.next_try(session, ctx) {
                Ok(left) => left,
                Err(reply) => return Err(refuse(ctx, reply)),
            };
            match self.send(session, ctx, &body, left).await {
                Tried::Answered(resp, sender, addr) => {
                    return self.deliver(session, ctx, *resp, (sender, addr), left).await
                }
                Tried::Again => continue,
                Tried::Refuse(reply) => return Err(refuse(ctx, reply)),
            }
        }
    }

    /// One try: a connection, the request, the response header.
    async fn send(&self, session: &Session, ctx: &mut Ctx, body: &Bytes, left: Duration) -> Tried {
        let Some((routes, routed)) = ctx.routed() else {
            return Tried::Refuse(Reply::error(500, "internal error: no routing table"));
        };
        let t = routes.snap.models[routed.model].policy.timeouts.clone();
        let Some(addr) = ctx.attempt.as_ref().map(|a| a.pick.endpoint.address) else {
            return Tried::Refuse(Reply::error(500, "internal error: no attempt"));
        };
        let request = match self.upstream_request_direct(session, ctx, body) {
            Ok(r) => r,
            Err(reply) => return Tried::Refuse(reply),
        };
        let first_byte = t.first_byte.get().min(left);
        // The try started a moment ago: its start is "now" for the pool's idle bookkeeping.
        let now = ctx.attempt.as_ref().map_or(0, |a| a.started);
        let mut conn = match pool::checkout(addr, t.connect.get(), t.idle.get(), now).await {
            Ok(c) => c,
            Err(e) => return self.connect_failure(session, ctx, e.kind()),
        };
        let mut answer = tokio::time::timeout(first_byte, conn.sender.send_request(request)).await;
        if conn.reused && matches!(&answer, Ok(Err(e)) if closed_before_answer(e)) {
            // The backend closed this idle connection: once more on a fresh one, same endpoint.
            conn.sender = match pool::connect(addr, t.connect.get()).await {
                Ok(s) => s,
                Err(e) => return self.connect_failure(session, ctx, e.kind()),
            };
            let request = match self.upstream_request_direct(session, ctx, body) {
                Ok(r) => r,
                Err(reply) => return Tried::Refuse(reply),
            };
            answer = tokio::time::timeout(first_byte, conn.sender.send_request(request)).await;
        }
        match answer {
            Ok(Ok(resp)) => {
                if self.response_status(session, resp.status().as_u16(), ctx) {
                    return Tried::Again;
                }
                Tried::Answered(Box::new(resp), conn.sender, addr)
            }
            Ok(Err(_)) => {
                // Closed or reset before any response byte: the request can go elsewhere.
                self.record(ctx, Outcome::GatewayFailure);
                set_error(ctx, "ConnectionClosed");
                if self.may_retry(ctx, RetryOn::Reset, session) {
                    Tried::Again
                } else {
                    Tried::Refuse(Reply::error(502, "upstream error"))
                }
            }
            Err(_) => {
                self.record(ctx, Outcome::GatewayFailure);
                set_error(ctx, "ReadTimedout");
                Tried::Refuse(Reply::error(504, "upstream timed out"))
            }
        }
    }

    /// The request of the current try as an HTTP/1.1 backend takes it: forwarding headers, the
    /// try's trace context, an origin-form target and, for an HTTP/2 request (which carries none),
    /// `Host` from its authority.
    fn upstream_request_direct(
        &self,
        session: &Session,
        ctx: &Ctx,
        body: &Bytes,
    ) -> Result<http::Request<Full<Bytes>>, Reply> {
        let mut parts = session.req_header().as_owned_parts();
        forward::apply(
            &mut parts.headers,
            super::client_ip(session),
            super::upstream::is_tls(session),
        );
        if let (Some(tel), Some(span)) = (&self.telemetry, ctx.attempt.as_ref().and_then(|a| a.span.as_ref())) {
            tel.inject_map(span, &mut parts.headers);
        }
        if !parts.headers.contains_key(header::HOST) {
            if let Some(host) = parts
                .uri
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, host);
            }
        }
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = path
                .parse()
                .map_err(|_| Reply::error(400, "the request target is not a valid path"))?;
        }
        parts.version = http::Version::HTTP_11;
        Ok(http::Request::from_parts(parts, Full::new(body.clone())))
    }

    /// A try that could not connect: the endpoint's failure, retried if allowed.
    fn connect_failure(&self, session: &Session, ctx: &mut Ctx, kind: &'static str) -> Tried {
        self.record(ctx, Outcome::GatewayFailure);
        if let Some(a) = ctx.attempt.as_mut() {
            a.in_flight = None;
        }
        set_error(ctx, kind);
        if self.may_retry(ctx, RetryOn::ConnectFailure, session) {
            Tried::Again
        } else {
            Tried::Refuse(Reply::error(502, "upstream connect error"))
        }
    }

    /// Streams the response to the client as it arrives (token streams unbuffered), then returns
    /// the connection to the pool when the body ended whole.
    async fn deliver(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        resp: http::Response<hyper::body::Incoming>,
        (sender, addr): (pool::Sender, std::net::SocketAddr),
        left: Duration,
    ) -> pingora::Result<()> {
        let (mut parts, mut body) = resp.into_parts();
        let h2 = session.req_header().version == http::Version::HTTP_2;
        let hop: Vec<_> = parts
            .headers
            .keys()
            .filter(|k| {
                // HTTP/2 frames its own body; a chunked coding header is invalid there.
                *k == header::CONNECTION
                    || *k == "keep-alive"
                    || *k == "proxy-connection"
                    || (h2 && *k == header::TRANSFER_ENCODING)
            })
            .cloned()
            .collect();
        for name in hop {
            parts.headers.remove(name);
        }
        let header = ResponseHeader::from(parts);
        let done = hyper::body::Body::is_end_stream(&body);
        session.write_response_header(Box::new(header), done).await?;
        let (read_timeout, idle) = ctx.routed().map_or((left, left), |(routes, routed)| {
            let t = &routes.snap.models[routed.model].policy.timeouts;
            (t.first_byte.get().min(left), t.idle.get())
        });
        if !done {
            loop {
                match tokio::time::timeout(read_timeout, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            let end = hyper::body::Body::is_end_stream(&body);
                            session.write_response_body(Some(data), end).await?;
                            if end {
                                break;
                            }
                        }
                    }
                    Ok(None) => {
                        session.write_response_body(None, true).await?;
                        break;
                    }
                    Ok(Some(Err(e))) => {
                        set_error(ctx, "ReadError");
                        return Err(Error::because(ErrorType::ReadError, "reading the upstream body", e));
                    }
                    Err(_) => {
                        set_error(ctx, "ReadTimedout");
                        return Err(Error::explain(ErrorType::ReadTimedout, "upstream body stalled"));
                    }
                }
            }
        }
        pool::checkin(addr, sender, idle, self.routing.clock.now());
        Ok(())
    }
}

/// The whole request body (bounded by the eligibility check). After a body peek, pingora's
/// replay buffer holds what the peek read, and the rest joins it; otherwise the chunks are taken
/// as read (usually one, and no copy).
async fn read_whole_body(session: &mut Session, peeked: bool) -> pingora::Result<Bytes> {
    if peeked {
        while session.as_mut().read_request_body().await?.is_some() {}
        return Ok(session.as_ref().get_retry_buffer().unwrap_or_default());
    }
    let Some(first) = session.as_mut().read_request_body().await? else {
        return Ok(Bytes::new());
    };
    let Some(second) = session.as_mut().read_request_body().await? else {
        return Ok(first);
    };
    let mut all = bytes::BytesMut::from(&first[..]);
    all.extend_from_slice(&second);
    while let Some(more) = session.as_mut().read_request_body().await? {
        all.extend_from_slice(&more);
    }
    Ok(all.freeze())
}

/// Whether a send failed because the connection was gone before any answer (an idle keep-alive
/// connection the backend closed), not because the backend failed the request.
fn closed_before_answer(e: &hyper::Error) -> bool {
    e.is_canceled() || e.is_closed() || e.is_incomplete_message()
}

/// Notes the error type that ended the current try (for its trace span and the log).
fn set_error(ctx: &mut Ctx, kind: &'static str) {
    if let Some(a) = ctx.attempt.as_mut() {
        a.error = Some(kind);
    }
}

/// Leaves `reply` for `fail_to_proxy` and returns the error that takes the request there.
fn refuse(ctx: &mut Ctx, reply: Reply) -> Box<Error> {
    let msg = reply.message().unwrap_or("refused").to_string();
    let status = reply.status;
    ctx.refusal = Some(reply);
    Error::explain(ErrorType::HTTPStatus(status), msg)
}
