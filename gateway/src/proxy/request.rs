//! A request's arrival: the decision from its head (and, for APIs that name the model in the body,
//! a bounded peek at the body first), then admission. What is decided is the core's
//! ([`meridian_gateway_core::decide`]); this stage reads, waits and answers.
//!
//! [`Proxy::env`], [`Proxy::open`] and [`Proxy::settle`] serve both kinds of connection;
//! [`Proxy::arrive`] is pingora's `request_filter`, which peeks by reading pingora's body stream.
//! Our own HTTP/1 path ([`crate::http1`]) has the whole body in its buffer and peeks there.

use std::sync::Arc;

use meridian_gateway_core::admission::class_label;
use meridian_gateway_core::classify::Api;
use meridian_gateway_core::decide::{decide, Decision, Env, Refusal, Routed};
use meridian_gateway_core::peek::{BodyPeek, Named, Step};
use meridian_gateway_core::prefix::PEEK_LIMIT;
use meridian_gateway_core::reply::Reply;
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
        self.open(session, ctx, routes.clone());
        let env = self.env(session.client_ip());
        let mut decided = decide(&routes.snap, &**session.req_header(), None, &env);
        if let Ok(Decision::ReadBody(peek)) = decided {
            // The bytes read are replayed to the backend from pingora's retry buffer.
            session.as_mut().enable_retry_buffering();
            match read_model(session, peek).await? {
                Ok(named) => decided = decide(&routes.snap, &**session.req_header(), Some(&named), &env),
                Err(reply) => {
                    // Read what the client is still sending, so it can read our answer (bounded).
                    drain_body(session, routes.snap.config.gateway.limits.max_request_body.bytes()).await;
                    session.set_keepalive(None);
                    super::reply::send(session, &reply).await?;
                    return Ok(true);
                }
            }
        }
        let Some(routed) = self.settle(session, ctx, decided).await? else {
            return Ok(true);
        };
        // After a body peek, pingora's replay buffer holds what the peek read, and no more than
        // its fixed size.
        let peeked = matches!(routed.api, Api::OpenAi | Api::Grpc);
        let cap = if peeked { PEEK_LIMIT as u64 } else { u64::MAX };
        if direct_leg_fits(&routes, routed, declared_length(session), cap) {
            let body = super::direct::read_whole_body(session, peeked).await?;
            self.direct(session, ctx, body).await?;
            return Ok(true);
        }
        session.as_mut().enable_retry_buffering();
        Ok(false)
    }
}

/// Whether a routed request goes out on our own upstream leg: a plain HTTP/1 backend, and a body
/// of known length (`declared`; `None`: unknown) that may be held whole ([`held_body`]) and that the
/// calling front can hold (`cap`).
pub fn direct_leg_fits(routes: &Routes, routed: Routed, declared: Option<u64>, cap: u64) -> bool {
    let entry = &routes.snap.models[routed.model];
    let h2 = entry.versions[routed.version].upstream.h2 || routed.api == Api::Grpc;
    if h2 || routes.version(routed.model, routed.version).tls.is_some() {
        return false;
    }
    declared.is_some_and(|n| n <= held_body(entry).min(cap))
}

/// The body length a pingora session's request declares: `None` when it streams one of unknown
/// length, or asks for what our upstream leg does not do (`Expect`, an upgrade).
fn declared_length(session: &mut Session) -> Option<u64> {
    let req = session.req_header();
    let h = &req.headers;
    if h.contains_key(http::header::EXPECT)
        || h.contains_key(http::header::UPGRADE)
        || h.contains_key(http::header::TRANSFER_ENCODING)
    {
        return None;
    }
    match h.get(http::header::CONTENT_LENGTH) {
        Some(v) => v.to_str().ok().and_then(|v| v.parse::<u64>().ok()),
        // HTTP/1 without a length has no body; HTTP/2 may stream one until END_STREAM.
        None if req.version == http::Version::HTTP_2 => session.as_mut().is_body_empty().then_some(0),
        None => Some(0),
    }
}

/// Reads the request body (bounded by what pingora can replay) until the body names its model.
async fn read_model(session: &mut Session, peek: BodyPeek) -> pingora::Result<Result<Named, Reply>> {
    let mut read: Vec<u8> = Vec::new();
    let mut ended = false;
    loop {
        match peek.step(&read, ended, PEEK_LIMIT, session.as_ref().retry_buffer_truncated()) {
            Step::Named(named) => return Ok(Ok(named)),
            Step::Refuse(reply) => return Ok(Err(reply)),
            Step::ReadMore => {}
        }
        match session.as_mut().read_request_body().await? {
            Some(chunk) => read.extend_from_slice(&chunk),
            None => ended = true,
        }
    }
}
