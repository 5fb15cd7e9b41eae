//! The request body on its way to the backend (pingora's `request_body_filter`): counted against
//! the model's limit as it streams (a body without a declared length is refused with 413 the moment
//! it passes), and captured for the mirrored copy. Also how the gateway reads out a body it refuses,
//! so the client reads the refusal instead of a reset.

use meridian_gateway_core::reply::Reply;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorType};

use super::context::Ctx;
use super::Proxy;

/// Most request body bytes read and dropped before refusing a request, so the client can read the
/// refusal; beyond it the connection is simply closed.
pub(super) const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

impl Proxy {
    /// Counts a body chunk against the limit and captures it for the shadow copy.
    pub(super) fn take_body_chunk(&self, body: &Option<bytes::Bytes>, ctx: &mut Ctx) -> pingora::Result<()> {
        ctx.bytes_in += body.as_ref().map_or(0, |b| b.len());
        let (Some(routes), Some(flight)) = (ctx.routes.as_ref(), ctx.flight.as_mut()) else {
            return Ok(());
        };
        let limit = routes.snap.models[flight.routed.model]
            .policy
            .limits
            .max_request_body
            .bytes();
        if ctx.bytes_in as u64 > limit {
            let msg = format!("request body is over the {limit} bytes allowed");
            let err = Error::explain(ErrorType::HTTPStatus(413), msg.clone());
            ctx.refusal = Some(Reply::error(413, msg));
            return Err(err);
        }
        if let (Some(copy), Some(chunk)) = (flight.shadow.as_mut(), body.as_ref()) {
            copy.add(chunk);
        }
        Ok(())
    }
}

/// Reads and drops the rest of the request body, up to `limit` bytes.
pub(super) async fn drain_body(session: &mut ServerSession, limit: u64) {
    let mut drained = 0u64;
    while drained <= limit {
        match session.read_request_body().await {
            Ok(Some(chunk)) => drained += chunk.len() as u64,
            _ => break,
        }
    }
}
