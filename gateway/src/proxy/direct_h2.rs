//! Our own upstream leg to cleartext HTTP/2 backends (gRPC model servers, versions with
//! `upstream.h2`), for a request whose whole body is at hand: the request goes out as one stream
//! on the worker thread's multiplexed connection to the endpoint ([`crate::http2::client`]), and
//! the response streams back to the client with its trailers (gRPC's status).
//!
//! Why not pingora's HTTP/2 client: it uploads the body while it reads the response, and fails
//! the request when the upload fails, so a backend that answers before reading the body (a gRPC
//! status by path alone) and resets the stream with `NO_ERROR`, as RFC 9113 8.1 allows, is turned
//! into an "upstream error" when the reset wins the race. Here the response is kept.
//!
//! The rules of the HTTP/1 leg hold through the same functions ([`super::direct`]): the pick and
//! deadline, outcomes and retries (a refused stream goes again as `refused-stream`), timeouts,
//! forwarding and trace fields, accounting. A failure before any response byte on a connection
//! that served before goes again once on a fresh connection to the same endpoint.

use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use meridian_gateway_core::classify::Api;
use meridian_gateway_core::reply::Reply;

use super::context::Ctx;
use super::direct::{body_timeouts, read_failed, stalled, unless_gone, Tried};
use super::downstream::Downstream;
use super::forward::h2_request;
use super::Proxy;
use crate::http1::client::ExchangeError;
use crate::http2::client;

impl Proxy {
    /// One try over HTTP/2: the endpoint's connection, the request, the response.
    pub(super) async fn try_h2(&self, d: &mut impl Downstream, ctx: &mut Ctx, body: &Bytes, left: Duration) -> Tried {
        let Some((routes, routed)) = ctx.routed() else {
            return Tried::Refuse(Reply::error(500, "internal error: no routing table"));
        };
        let t = routes.snap.models[routed.model].policy.timeouts.clone();
        let grpc = routed.api == Api::Grpc;
        let Some((addr, now)) = ctx
            .attempt
            .as_ref()
            .map(|a| (a.pick.endpoint.upstream_address(grpc), a.started))
        else {
            return Tried::Refuse(Reply::error(500, "internal error: no attempt"));
        };
        let head = || {
            let span = self
                .telemetry
                .as_ref()
                .zip(ctx.attempt.as_ref().and_then(|a| a.span.as_ref()));
            h2_request(d.head(), (d.client_ip(), d.tls()), addr, span)
        };
        let Ok(request) = head() else {
            return Tried::Refuse(Reply::error(400, "the request cannot be sent over HTTP/2"));
        };
        let first_byte = t.first_byte.get().min(left);
        let mut conn = match client::checkout(addr, t.connect.get(), t.idle.get(), now).await {
            Ok(c) => c,
            Err(e) => return self.connect_failure(d, ctx, e.kind()),
        };
        let mut answer = conn.exchange(request, body, first_byte).await;
        if conn.reused() && answer.as_ref().err() == Some(&ExchangeError::Closed) {
            // The backend closed this connection while it idled: once more on a fresh one.
            conn = match client::connect(addr, t.connect.get(), t.idle.get(), self.routing.clock.now()).await {
                Ok(c) => c,
                Err(e) => return self.connect_failure(d, ctx, e.kind()),
            };
            let Ok(request) = head() else {
                return Tried::Refuse(Reply::error(400, "the request cannot be sent over HTTP/2"));
            };
            answer = conn.exchange(request, body, first_byte).await;
        }
        // The connection this try used is in the thread's pool: its sweep runs.
        crate::pool_sweep::watch(&self.routing.clock);
        match answer {
            Ok(resp) if self.response_status(d, resp.status().as_u16(), ctx) => Tried::Again,
            Ok(resp) => Tried::Done(self.deliver_h2(d, ctx, resp, left).await),
            Err(e) => self.exchange_failed(d, ctx, e),
        }
    }

    /// Streams the response to the client as it arrives, then its trailers, which end it.
    async fn deliver_h2(
        &self,
        d: &mut impl Downstream,
        ctx: &mut Ctx,
        resp: http::Response<RecvStream>,
        left: Duration,
    ) -> pingora::Result<()> {
        let (head, mut body) = resp.into_parts();
        let (read_timeout, _) = body_timeouts(ctx, left);
        let mut ended = body.is_end_stream();
        d.write_parts(head, ended).await?;
        while !ended {
            let data = match unless_gone(d, tokio::time::timeout(read_timeout, body.data())).await? {
                Err(_) => return Err(stalled(ctx)),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(read_failed(ctx, e)),
                Ok(Some(Ok(data))) => data,
            };
            // The window the piece took is the backend's to use again.
            let _ = body.flow_control().release_capacity(data.len());
            self.body_arrived(ctx, &data);
            ended = body.is_end_stream();
            d.write_body(data, ended).await?;
        }
        if ended {
            return Ok(());
        }
        match unless_gone(d, tokio::time::timeout(read_timeout, body.trailers())).await? {
            Err(_) => Err(stalled(ctx)),
            Ok(Err(e)) => Err(read_failed(ctx, e)),
            Ok(Ok(Some(trailers))) => d.write_trailers(trailers).await,
            Ok(Ok(None)) => d.write_body(Bytes::new(), true).await,
        }
    }
}
