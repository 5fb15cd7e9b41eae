//! The upstream leg of a try (pingora's `upstream_peer` and `upstream_request_filter`): the pick
//! within what is left of the request's deadline, the peer with its TLS and timeouts, and the
//! request as the backend sees it (hop-by-hop headers stripped, forwarding headers appended, the
//! try's trace context injected).

use std::time::Duration;

use meridian_gateway_core::reply::Reply;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::context::Ctx;
use super::Proxy;

impl Proxy {
    /// Picks the endpoint of the next try and builds its peer.
    pub(super) fn peer(&self, session: &Session, ctx: &mut Ctx) -> pingora::Result<Box<HttpPeer>> {
        let Some((routes, routed)) = ctx.routed() else {
            return Err(Error::explain(ErrorType::InternalError, "no routing table"));
        };
        let routes = routes.clone();
        let (entry, version) = (
            &routes.snap.models[routed.model],
            routes.version(routed.model, routed.version),
        );
        let now = self.routing.clock.now();
        let policy = &entry.policy;
        // Whole-request deadline: each retry gets only what is left of it.
        let left = policy
            .timeouts
            .request
            .get()
            .saturating_sub(Duration::from_nanos(now.saturating_sub(ctx.started)));
        if left.is_zero() {
            ctx.refusal = Some(Reply::error(504, "request timed out"));
            return Err(Error::explain(ErrorType::HTTPStatus(504), "request deadline passed"));
        }
        let Some(pick) = version
            .cluster
            .pick(self.routing.registry.epoch(), now, &mut rand::rng(), &ctx.tried)
        else {
            let msg = format!(
                "no healthy endpoint for model {} version {}",
                entry.name, entry.versions[routed.version].name
            );
            let err = Error::explain(ErrorType::HTTPStatus(503), msg.clone());
            ctx.refusal = Some(Reply::error(503, msg));
            return Err(err);
        };
        let address = pick.endpoint.address;
        self.start_attempt(session, ctx, pick, now);
        let mut peer = match &version.tls {
            None => HttpPeer::new(address, false, String::new()),
            Some(tls) => {
                let mut p = HttpPeer::new(address, true, tls.name_for(address.ip()));
                p.options.ca = tls.ca.clone();
                p
            }
        };
        let t = &policy.timeouts;
        peer.options.connection_timeout = Some(t.connect.get());
        peer.options.read_timeout = Some(t.first_byte.get().min(left));
        peer.options.write_timeout = Some(t.idle.get());
        peer.options.idle_timeout = Some(t.idle.get());
        if entry.versions[routed.version].upstream.h2 {
            peer.options.set_http_version(2, 2);
            // Multiplex: gRPC streams share connections as they would from any gRPC client.
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }

    /// The request as the backend gets it.
    pub(super) fn upstream_request(
        &self,
        session: &Session,
        req: &mut RequestHeader,
        ctx: &Ctx,
    ) -> pingora::Result<()> {
        strip_hop_by_hop(req);
        if let (Some(t), Some(span)) = (&self.telemetry, ctx.attempt.as_ref().and_then(|a| a.span.as_ref())) {
            t.inject(span, req);
        }
        // X-Forwarded-For/-Proto (de facto) and Forwarded (RFC 7239), appended to what the client
        // sent, so backends see the whole chain and the scheme the client used.
        let proto = if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            "https"
        } else {
            "http"
        };
        if let Some(ip) = super::client_ip(session) {
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
