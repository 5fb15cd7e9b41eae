//! A request's arrival: the decision from its head (and, for APIs that name the model in the body,
//! a bounded peek at the body first), then admission. What is decided is the core's
//! ([`meridian_gateway_core::decide`]); this stage reads, waits and answers.
//!
//! [`Proxy::env`], [`Proxy::open`] and [`Proxy::settle`] serve both kinds of connection.
//! [`Proxy::read_decision`] decides a request on pingora's server session, peeking by reading its
//! body stream into the replay buffer; both pingora's `request_filter` ([`Proxy::arrive`]) and our
//! own HTTP/2 front ([`super::h2`]) start with it. Our own HTTP/1 path ([`crate::http1`]) has the
//! whole body in its buffer and peeks there.

use std::sync::Arc;

use meridian_gateway_core::admission::class_label;
use meridian_gateway_core::decide::{decide, Decision, Env, Refusal, Routed};
use meridian_gateway_core::peek::{BodyPeek, Named, Step};
use meridian_gateway_core::prefix::PEEK_LIMIT;
use meridian_gateway_core::reply::Reply;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use rand::Rng;

use super::body::drain_body;
use super::context::{Ctx, Flight, Labels};
use super::downstream::Downstream;
use super::Proxy;
use crate::routes::{held_body, Routes};
use crate::shadow::ShadowCopy;

impl Proxy {
    /// What the decision needs beyond the request and the table.
    pub fn env(&self, client: Option<std::net::IpAddr>) -> Env {
        Env {
            ready: self.lifecycle.checked(),
            client,
            shadow_draw: rand::rng().random(),
        }
    }

    /// Starts accounting for a request: its arrival time, its server span, the table it uses from
    /// start to end, and a closing connection while the gateway drains.
    pub fn open(&self, d: &mut impl Downstream, ctx: &mut Ctx, routes: Arc<Routes>) {
        ctx.started = self.routing.clock.now();
        if let Some(t) = &self.telemetry {
            ctx.trace = Some(t.server_span(d.head(), d.client_ip(), d.tls()));
        }
        if self.lifecycle.draining() {
            // Stopping: this connection's last response, so the client's pool moves on cleanly.
            d.close();
        }
        ctx.routes = Some(routes);
    }

    /// Acts on a decision: answers what the gateway answers itself (or refuses), and admits a
    /// routed request. `Some` when the request holds its slot and goes upstream.
    pub async fn settle(
        &self,
        d: &mut impl Downstream,
        ctx: &mut Ctx,
        decided: Result<Decision, Refusal>,
    ) -> pingora::Result<Option<Routed>> {
        let routed = match decided {
            Ok(Decision::Route(routed)) => routed,
            Ok(Decision::Answer(reply)) => {
                d.reply(&reply).await?;
                return Ok(None);
            }
            Ok(Decision::ReadBody(_)) => {
                d.reply(&Reply::error(500, "internal error: the body was read twice"))
                    .await?;
                return Ok(None);
            }
            Err(refusal) => {
                ctx.labels = Labels {
                    model: refusal.model,
                    version: refusal.version,
                };
                d.reply(&refusal.reply).await?;
                return Ok(None);
            }
        };
        ctx.labels = Labels {
            model: Some(routed.model),
            version: Some(routed.version),
        };
        let Some(routes) = ctx.routes.clone() else {
            d.reply(&Reply::error(500, "internal error: no routing table")).await?;
            return Ok(None);
        };
        match self.open_account(&routes, routed, d.head()) {
            Ok(account) => ctx.llm = account,
            Err(reply) => {
                d.reply(&reply).await?;
                return Ok(None);
            }
        }
        let (entry, model) = routes.model(routed.model);
        let slot = match model.admission.admit(routed.class, tokio::time::sleep).await {
            Ok(slot) => slot,
            Err(shed) => {
                let class = class_label(routed.class);
                self.metrics
                    .shed
                    .with_label_values(&[&*entry.name, class, shed.status().1])
                    .inc();
                d.reply(&shed.reply(&entry.name, routed.class)).await?;
                return Ok(None);
            }
        };
        let routed = match self.activate(ctx, routed).await {
            Ok(routed) => routed,
            Err(reply) => {
                d.reply(&reply).await?;
                return Ok(None);
            }
        };
        let replay = entry.policy.retries.buffer_body.bytes() as usize;
        let shadow = routed.shadow.map(|v| ShadowCopy::new(v, replay));
        let active = self.budget.request(entry.policy.retries.budget_percent);
        ctx.flight = Some(Flight::new(routed, shadow, slot, active));
        Ok(Some(routed))
    }

    /// pingora's arrival: decides, peeks and admits; `Ok(true)` when the request was answered
    /// (by the gateway, or proxied whole on our own upstream leg).
    pub(super) async fn arrive(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let routes = self.routing.routes.load_full();
        let s = session.as_mut();
        // pingora keeps an HTTP/1.1 connection open with no limit between requests (its 60s is
        // replaced as each request is read); ours is the same on both fronts. A client's
        // `Connection: close` still wins, and a draining gateway closes after the response.
        let keepalive = routes.snap.config.gateway.timeouts.keepalive.get();
        s.set_keepalive(Some(keepalive.as_secs().max(1)));
        self.open(s, ctx, routes.clone());
        let arrival = self.read_decision(s, &routes).await?;
        let (cap, buffered) = (arrival.cap(), arrival.buffered);
        let Some(routed) = self.settle(s, ctx, arrival.decided).await? else {
            return Ok(true);
        };
        if direct_leg_fits(&routes, routed, arrival.declared, cap) {
            let body = super::direct::read_whole_body(s, buffered).await?;
            self.direct(s, ctx, body).await?;
            return Ok(true);
        }
        s.enable_retry_buffering();
        Ok(false)
    }

    /// Decides a pingora session's request: from its head, else from the body's first bytes
    /// (a peek), and for a routed one the body's length. Nothing is committed: what is read of the
    /// body stays in pingora's replay buffer, so pingora's own leg can still take the request
    /// whole (and decide it again the same way, from the buffer). A body that fails the peek is
    /// read out (bounded) and its refusal becomes the answer.
    pub(super) async fn read_decision(&self, s: &mut ServerSession, routes: &Routes) -> pingora::Result<Arrival> {
        let env = self.env(s.client_ip());
        let mut decided = decide(&routes.snap, &**s.req_header(), None, &env);
        let mut buffered = false;
        if let Ok(Decision::ReadBody(peek)) = decided {
            s.enable_retry_buffering();
            buffered = true;
            decided = match read_model(s, peek).await? {
                Ok(named) => decide(&routes.snap, &**s.req_header(), Some(&named), &env),
                Err(reply) => {
                    // Read what the client is still sending, so it can read our answer (bounded).
                    drain_body(s, routes.snap.config.gateway.limits.max_request_body.bytes()).await;
                    s.set_keepalive(None);
                    Ok(Decision::Answer(reply))
                }
            };
        }
        let mut declared = None;
        if let Ok(Decision::Route(routed)) = &decided {
            declared = match declared_length(s) {
                Length::Known(n) => Some(n),
                Length::StreamEnd if direct_leg_fits(routes, *routed, Some(0), u64::MAX) => {
                    if !buffered {
                        s.enable_retry_buffering();
                        buffered = true;
                    }
                    read_to_stream_end(s).await?
                }
                Length::StreamEnd | Length::Unknown => None,
            };
        }
        Ok(Arrival {
            decided,
            buffered,
            declared,
        })
    }
}

/// A request's decision, before anything is committed to it ([`Proxy::read_decision`]).
pub(super) struct Arrival {
    /// What the request comes to.
    pub decided: Result<Decision, Refusal>,
    /// Whether what was read of the body is in pingora's replay buffer (bounded by its fixed
    /// size), to be replayed to the backend.
    pub buffered: bool,
    /// The body's length, for a routed request whose length is known.
    pub declared: Option<u64>,
}

impl Arrival {
    /// The most body the calling front can hold for our own leg: the replay buffer's size once
    /// the body goes through it.
    pub fn cap(&self) -> u64 {
        if self.buffered {
            PEEK_LIMIT as u64
        } else {
            u64::MAX
        }
    }

    /// Whether the request is routed, and to pingora's upstream leg rather than our own
    /// ([`direct_leg_fits`]).
    pub fn proxied(&self, routes: &Routes) -> bool {
        match &self.decided {
            Ok(Decision::Route(routed)) => !direct_leg_fits(routes, *routed, self.declared, self.cap()),
            _ => false,
        }
    }
}

/// Whether a routed request goes out on our own upstream leg (HTTP/1, or HTTP/2 for gRPC and
/// versions with `upstream.h2`): a cleartext backend, and a body of known length (`declared`;
/// `None`: unknown) that may be held whole ([`held_body`]) and that the calling front can hold
/// (`cap`).
pub fn direct_leg_fits(routes: &Routes, routed: Routed, declared: Option<u64>, cap: u64) -> bool {
    if routes.version(routed.model, routed.version).tls.is_some() {
        return false;
    }
    let entry = &routes.snap.models[routed.model];
    declared.is_some_and(|n| n <= held_body(entry).min(cap))
}

/// What a pingora session's request says of its body's length.
enum Length {
    /// This many bytes (an HTTP/1 request without a length has none).
    Known(u64),
    /// An HTTP/2 body of no declared length: it ends with its stream.
    StreamEnd,
    /// A body our upstream leg does not take: it streams without a length over HTTP/1, or the
    /// request asks for what the leg does not do (`Expect`, an upgrade).
    Unknown,
}

fn declared_length(session: &mut ServerSession) -> Length {
    let req = session.req_header();
    let h = &req.headers;
    if h.contains_key(http::header::EXPECT)
        || h.contains_key(http::header::UPGRADE)
        || h.contains_key(http::header::TRANSFER_ENCODING)
    {
        return Length::Unknown;
    }
    match h.get(http::header::CONTENT_LENGTH) {
        Some(v) => match v.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(n) => Length::Known(n),
            None => Length::Unknown,
        },
        None if req.version == http::Version::HTTP_2 => match session.is_body_empty() {
            true => Length::Known(0),
            false => Length::StreamEnd,
        },
        None => Length::Known(0),
    }
}

/// Largest HTTP/2 DATA frame a client sends us (RFC 9113's default `SETTINGS_MAX_FRAME_SIZE`,
/// which pingora's server keeps): one body read returns at most this.
const H2_FRAME: usize = 16 * 1024;

/// Reads an HTTP/2 body of no declared length (a gRPC call's, whose one message usually comes
/// with the end of its stream) into pingora's replay buffer until its stream ends, while a next
/// read cannot overflow the buffer ([`PEEK_LIMIT`], its size): the body's length when it ended,
/// else `None` and what was read stays replayable for pingora's leg.
async fn read_to_stream_end(session: &mut ServerSession) -> pingora::Result<Option<u64>> {
    let mut read = session.get_retry_buffer().map_or(0, |b| b.len());
    loop {
        if session.is_body_done() {
            return Ok(Some(read as u64));
        }
        if read + H2_FRAME > PEEK_LIMIT {
            return Ok(None);
        }
        match session.read_request_body().await? {
            Some(chunk) => read += chunk.len(),
            None => return Ok(Some(read as u64)),
        }
    }
}

/// Reads the request body (bounded by what pingora can replay) until the body names its model.
/// What an earlier decision of the same request read is in the replay buffer, and the peek
/// starts from it.
async fn read_model(session: &mut ServerSession, peek: BodyPeek) -> pingora::Result<Result<Named, Reply>> {
    let mut read: Vec<u8> = session.get_retry_buffer().map_or_else(Vec::new, |b| b.to_vec());
    let mut ended = session.is_body_done();
    loop {
        match peek.step(&read, ended, PEEK_LIMIT, session.retry_buffer_truncated()) {
            Step::Named(named) => return Ok(Ok(named)),
            Step::Refuse(reply) => return Ok(Err(reply)),
            Step::ReadMore => {}
        }
        match session.read_request_body().await? {
            Some(chunk) => read.extend_from_slice(&chunk),
            None => ended = true,
        }
    }
}
