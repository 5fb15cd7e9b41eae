//! The pingora adapter. Each callback of [`ProxyHttp`] is a thin delegate to the stage that owns it,
//! in the order pingora calls them for a request:
//!
//! | pingora callback | stage | file |
//! | --- | --- | --- |
//! | `request_filter` | decide (core), peek at the body, admit | [`request`] |
//! | `request_filter`, for a version scaled to zero | hold until an endpoint is ready | [`activate`] |
//! | `request_filter`, for cleartext backends and small known bodies | our own upstream leg, HTTP/1 or HTTP/2 | [`direct`], [`direct_h2`] |
//! | `upstream_peer` | pick the endpoint, build the peer | [`upstream`] |
//! | `upstream_request_filter` | the request as the backend sees it | [`upstream`] |
//! | `request_body_filter` | body limit, shadow capture | [`body`] |
//! | `upstream_response_filter`, `fail_to_connect`, `error_while_proxy` | the try's outcome, retries | [`attempt`] |
//! | `response_body_filter` | tokens of an LLM answer as it streams | [`tokens`] |
//! | `fail_to_proxy` | the gateway's answer when proxying failed | [`attempt`], [`reply`] |
//! | `logging` | metrics, trace, access log, shadow copy | [`account`] |
//!
//! Per-request state is [`context::Ctx`]. Decisions come from `meridian-gateway-core`; nothing here
//! decides where a request goes.
//!
//! The same stages serve our own HTTP/1 front ([`h1`], with [`exchange`] as its [`Downstream`]),
//! which takes every HTTP/1 connection first and serves the common inference call without pingora's
//! session, calling [`Proxy::env`], [`Proxy::open`], [`Proxy::settle`], [`Proxy::direct`],
//! [`Proxy::fail`] and [`Proxy::finish`] as pingora's callbacks do.

mod account;
mod activate;
mod attempt;
mod body;
mod context;
mod direct;
mod direct_h2;
mod downstream;
mod exchange;
mod forward;
mod h1;
mod h2;
pub(crate) mod prompt;
mod reply;
mod request;
mod tokens;
pub(crate) mod upstream;

use std::sync::Arc;

use async_trait::async_trait;
use meridian_gateway_core::budget::RetryBudget;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::Error;

pub use context::Ctx;
pub use downstream::Downstream;
pub use h1::{Http1, Served};
pub use h2::Http2;
pub use request::direct_leg_fits;

use crate::accesslog::AccessLog;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::routes::Routing;
use crate::shadow::Mirror;
use crate::telemetry::Telemetry;

/// The proxy service: what the request path reads and writes, and nothing else (each part an
/// `Arc`, so pingora's proxy and our HTTP/1 path each hold a copy).
#[derive(Clone)]
pub struct Proxy {
    /// The table, endpoint states, outlier detection and time.
    pub routing: Arc<Routing>,
    /// Retry budget.
    pub budget: Arc<RetryBudget>,
    /// Request-path metric families.
    pub metrics: Arc<Metrics>,
    /// Access log sink.
    pub access_log: Arc<AccessLog>,
    /// Trace export, when configured.
    pub telemetry: Option<Arc<Telemetry>>,
    /// Readiness (the V2 and gRPC answers), draining, requests in progress.
    pub lifecycle: Arc<Lifecycle>,
    /// Shadow traffic.
    pub mirror: Arc<Mirror>,
    /// Wake-ups of versions scaled to zero.
    pub waker: crate::wake::Waker,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.lifecycle.enter())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        self.arrive(session, ctx).await
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<Box<HttpPeer>> {
        self.peer(session, ctx)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.upstream_request(session, req, ctx)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.take_body_chunk(body, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.response_header(session, resp.status.as_u16(), ctx)
    }

    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, e: Box<Error>) -> Box<Error> {
        self.connect_failed(session, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(&peer.to_string(), session, e, ctx)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if ctx.refusal.as_ref().is_some_and(|r| r.status == 413) && session.response_written().is_none() {
            // The client may still be sending: read the rest (bounded) so it can read the answer
            // instead of hitting a reset.
            body::drain_body(session.as_mut(), body::DRAIN_LIMIT).await;
        }
        let status = self.fail(session.as_mut(), ctx, e).await;
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        if let (Some(acc), Some(data)) = (ctx.llm.as_mut(), body.as_ref()) {
            acc.sent(data, self.routing.clock.now());
        }
        Ok(None)
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        // A client that closed its stream (a cancelled gRPC watch) is no error of the gateway's:
        // its access log line stands for it.
        e.esource == pingora::ErrorSource::Downstream && e.etype == pingora::ErrorType::ConnectionClosed
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        self.finish(session.as_downstream(), ctx);
    }
}
