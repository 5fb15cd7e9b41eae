//! A request's arrival (pingora's `request_filter`): the decision from its head, and for APIs that
//! name the model in the body, a bounded peek at the body first; then admission. What is decided is
//! the core's ([`meridian_gateway_core::decide`]); this stage reads, waits and answers.

use meridian_gateway_core::admission::class_label;
use meridian_gateway_core::decide::{decide, Decision, Env};
use meridian_gateway_core::peek::{BodyPeek, Named, Step};
use meridian_gateway_core::reply::Reply;
use pingora::proxy::Session;
use rand::Rng;

use super::body::drain_body;
use super::context::{Ctx, Flight, Labels};
use super::reply::send;
use super::Proxy;
use crate::shadow::ShadowCopy;

impl Proxy {
    /// Decides, peeks and admits; `Ok(true)` when the gateway answered the request itself.
    pub(super) async fn arrive(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.started = self.routing.clock.now();
        let client = super::client_ip(session);
        if let Some(t) = &self.telemetry {
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            ctx.trace = Some(t.server_span(session.req_header(), client, tls));
        }
        if self.lifecycle.draining() {
            // Stopping: this connection's last response, so the client's pool moves on cleanly.
            session.set_keepalive(None);
        }
        let routes = self.routing.routes.load_full();
        ctx.routes = Some(routes.clone());
        let env = Env {
            ready: self.lifecycle.checked(),
            client,
            shadow_draw: rand::rng().random(),
        };
        let mut decided = decide(&routes.snap, session.req_header(), None, &env);
        if let Ok(Decision::ReadBody(peek)) = decided {
            // The bytes read are replayed to the backend from pingora's retry buffer.
            session.as_mut().enable_retry_buffering();
            match read_model(session, peek).await? {
                Ok(named) => decided = decide(&routes.snap, session.req_header(), Some(&named), &env),
                Err(reply) => {
                    // Read what the client is still sending, so it can read our answer (bounded).
                    drain_body(session, routes.snap.config.gateway.limits.max_request_body.bytes()).await;
                    session.set_keepalive(None);
                    send(session, &reply).await?;
                    return Ok(true);
                }
            }
        }
        let routed = match decided {
            Ok(Decision::Route(routed)) => routed,
            Ok(Decision::Answer(reply)) => {
                send(session, &reply).await?;
                return Ok(true);
            }
            Ok(Decision::ReadBody(_)) => {
                send(session, &Reply::error(500, "internal error: the body was read twice")).await?;
                return Ok(true);
            }
            Err(refusal) => {
                ctx.labels = Labels {
                    model: refusal.model,
                    version: refusal.version,
                };
                send(session, &refusal.reply).await?;
                return Ok(true);
            }
        };
        ctx.labels = Labels {
            model: Some(routed.model),
            version: Some(routed.version),
        };
        let (entry, model) = routes.model(routed.model);
        let slot = match model.admission.admit(routed.class, tokio::time::sleep).await {
            Ok(slot) => slot,
            Err(shed) => {
                let class = class_label(routed.class);
                self.metrics
                    .shed
                    .with_label_values(&[&*entry.name, class, shed.status().1])
                    .inc();
                send(session, &shed.reply(&entry.name, routed.class)).await?;
                return Ok(true);
            }
        };
        let replay = entry.policy.retries.buffer_body.bytes() as usize;
        let shadow = routed.shadow.map(|v| ShadowCopy::new(v, replay));
        ctx.flight = Some(Flight::new(routed, shadow, slot, self.budget.request()));
        if self.takes_direct_leg(session, ctx) {
            self.direct(session, ctx).await?;
            return Ok(true);
        }
        session.as_mut().enable_retry_buffering();
        Ok(false)
    }
}

/// Reads the request body (bounded by what pingora can replay) until the body names its model.
async fn read_model(session: &mut Session, peek: BodyPeek) -> pingora::Result<Result<Named, Reply>> {
    let mut read: Vec<u8> = Vec::new();
    let mut ended = false;
    loop {
        match peek.step(&read, ended, session.as_ref().retry_buffer_truncated()) {
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
