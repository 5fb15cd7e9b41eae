//! The upstream leg of a try (pingora's `upstream_peer` and `upstream_request_filter`): the pick
//! within what is left of the request's deadline, the peer with its TLS and timeouts, and the
//! request as the backend sees it (hop-by-hop headers stripped, forwarding headers appended, the
//! try's trace context injected).

use std::time::Duration;

use meridian_gateway_core::classify::Api;
use meridian_gateway_core::reply::Reply;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use meridian_gateway_core::llm_pick::Prompt;
use std::net::SocketAddr;

use meridian_config::snapshot::ModelEntry;
use meridian_gateway_core::clock::Nanos;
use meridian_gateway_core::cluster::{Cluster, Pick};
use meridian_gateway_core::decide::Routed;

use super::prompt::LlmPrompt;

use super::context::Ctx;
use super::downstream::Downstream;
use super::{forward, Proxy};

/// The endpoint for a request `routed` to `cluster` at (registry epoch, now), avoiding `tried`:
/// the LLM-aware pick when the model has LLM routing and the prompt is known, else the cluster's
/// balancer. The request path and `meridian explain` both pick here.
pub(crate) fn pick(
    entry: &ModelEntry,
    cluster: &Cluster,
    routed: &Routed,
    prompt: Option<&LlmPrompt>,
    (epoch, now): (u64, Nanos),
    tried: &[SocketAddr],
) -> Option<Pick> {
    let rng = &mut rand::rng();
    match (&entry.llm, prompt) {
        (Some(policy), Some(p)) => {
            let prompt = Prompt {
                chain: &p.chain,
                tokens: p.tokens,
                adapter: entry.adapter(routed.adapter),
            };
            cluster.pick_llm(epoch, now, rng, tried, &prompt, policy)
        }
        _ => cluster.pick(epoch, now, rng, tried),
    }
}

impl Proxy {
    /// Starts the next try: within what is left of the request's deadline, at an endpoint this
    /// request has not tried when another exists. Returns what is left of the deadline, or the
    /// gateway's answer when there is no next try (504 past the deadline, 503 without an endpoint).
    pub(super) fn next_try(&self, method: &http::Method, ctx: &mut Ctx) -> Result<Duration, Reply> {
        let now = self.routing.clock.now();
        let (pick, left) = self.pick_next(ctx, now)?;
        self.start_attempt(method, ctx, pick, now);
        Ok(left)
    }

    /// [`Proxy::next_try`]'s endpoint and what is left of the deadline at `now` (read off the
    /// request's own table, borrowed: no reference count touched per try).
    fn pick_next(&self, ctx: &Ctx, now: Nanos) -> Result<(Pick, Duration), Reply> {
        let Some((routes, routed)) = ctx.routed() else {
            return Err(Reply::error(500, "internal error: no routing table"));
        };
        let (entry, version) = (
            &routes.snap.models[routed.model],
            routes.version(routed.model, routed.version),
        );
        let left = entry
            .policy
            .timeouts
            .request
            .get()
            .saturating_sub(Duration::from_nanos(now.saturating_sub(ctx.started + ctx.held)));
        if left.is_zero() {
            return Err(Reply::error(504, "request timed out"));
        }
        let prompt = ctx.flight.as_ref().and_then(|f| f.prompt.as_ref());
        let at = (self.routing.registry.epoch(), now);
        match pick(entry, &version.cluster, &routed, prompt, at, &ctx.tried) {
            Some(pick) => Ok((pick, left)),
            None => {
                let msg = format!(
                    "no healthy endpoint for model {} version {}",
                    entry.name, entry.versions[routed.version].name
                );
                Err(Reply::error(503, msg))
            }
        }
    }

    /// Picks the endpoint of the next try and builds its peer (the pingora upstream leg).
    pub(super) fn peer(&self, session: &Session, ctx: &mut Ctx) -> pingora::Result<Box<HttpPeer>> {
        if ctx.flight.as_ref().is_some_and(|f| f.prompt.is_none()) {
            // The body is still streaming: the prompt is known by its declared length only.
            let prompt = super::prompt::of(ctx, &**session.req_header(), None);
            if let Some(f) = ctx.flight.as_mut() {
                f.prompt = prompt;
            }
        }
        let left = match self.next_try(&session.req_header().method, ctx) {
            Ok(left) => left,
            Err(reply) => {
                let err = Error::explain(
                    ErrorType::HTTPStatus(reply.status),
                    reply.message().unwrap_or("no next try").to_string(),
                );
                ctx.refusal = Some(reply);
                return Err(err);
            }
        };
        let (Some((routes, routed)), Some(attempt)) = (ctx.routed(), ctx.attempt.as_ref()) else {
            return Err(Error::explain(ErrorType::InternalError, "no attempt"));
        };
        let (entry, version) = (
            &routes.snap.models[routed.model],
            routes.version(routed.model, routed.version),
        );
        // gRPC goes to the endpoint's gRPC port over HTTP/2 when it has one; everything else to
        // its address, as the version's upstream says.
        let grpc = routed.api == Api::Grpc;
        let address = attempt.pick.endpoint.upstream_address(grpc);
        let mut peer = match &version.tls {
            None => HttpPeer::new(address, false, String::new()),
            Some(tls) => {
                let mut p = HttpPeer::new(address, true, tls.name_for(address.ip()));
                p.options.ca = tls.ca.clone();
                p
            }
        };
        let t = &entry.policy.timeouts;
        peer.options.connection_timeout = Some(t.connect.get());
        peer.options.read_timeout = Some(t.first_byte.get().min(left));
        peer.options.write_timeout = Some(t.idle.get());
        peer.options.idle_timeout = Some(t.idle.get());
        if super::direct::speaks_h2(routes, routed) {
            peer.options.set_http_version(2, 2);
            // Multiplex: gRPC streams share connections as they would from any gRPC client.
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }

    /// The request as the backend gets it (the pingora leg): forwarding headers and the try's
    /// trace context.
    pub(super) fn upstream_request(
        &self,
        session: &Session,
        req: &mut RequestHeader,
        ctx: &Ctx,
    ) -> pingora::Result<()> {
        if let (Some(t), Some(span)) = (&self.telemetry, ctx.attempt.as_ref().and_then(|a| a.span.as_ref())) {
            t.inject(span, req);
        }
        self.forward_headers(session, req)
    }

    /// Hop-by-hop headers stripped, forwarding headers appended ([`super::forward`]), through
    /// pingora's header API so the client's header case is kept.
    pub(super) fn forward_headers(&self, session: &Session, req: &mut RequestHeader) -> pingora::Result<()> {
        let parts: &http::request::Parts = req;
        let hop = forward::HopByHop::of(parts);
        let dropped: Vec<http::HeaderName> = parts
            .headers
            .iter()
            .filter(|(k, v)| hop.drops(k.as_str().as_bytes(), v.as_bytes()))
            .map(|(k, _)| k.clone())
            .collect();
        for name in dropped {
            req.remove_header(&name);
        }
        let f = forward::forwarding(&**req, session.client_ip(), session.tls());
        if let Some(v) = f.xff {
            req.insert_header("x-forwarded-for", v)?;
        }
        if let Some(v) = f.forwarded {
            req.insert_header("forwarded", v)?;
        }
        req.insert_header("x-forwarded-proto", f.proto)?;
        Ok(())
    }
}
