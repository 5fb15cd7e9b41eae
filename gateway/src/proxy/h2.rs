//! Our own HTTP/2 front: one client connection (ALPN `h2`, or cleartext with the h2c preface),
//! its streams accepted here and each served on a task of its own. A stream whose request the
//! gateway answers itself, or that goes out on our own upstream leg ([`super::direct_leg_fits`]),
//! is served through the same stages as pingora's callbacks and our HTTP/1 front
//! ([`Proxy::open`], [`Proxy::settle`], [`Proxy::direct`], [`Proxy::fail`], [`Proxy::finish`]) on
//! pingora's HTTP/2 server session. Every other stream (a TLS backend, a body too large to hold or
//! of unknown length) goes to pingora's proxy as it is, with what was read of its body in the
//! session's replay buffer, and pingora decides it again from there.
//!
//! Why: pingora boxes each stream's whole proxy future (its upstream states inline, about 8 KiB)
//! and copies it twice per stream, more than the h2 crate's own work per request; a stream served
//! here carries only our stages.
//!
//! The accept loop keeps pingora's connection handling: on a graceful stop, GOAWAY with the
//! highest stream id, then streams already opened are still served until the client's last one
//! ends; a client's malformed streams are refused one by one, up to a per-connection bound. A
//! connection with no open stream for `timeouts.keepalive` gets a GOAWAY naming the last stream
//! it served, and closes (Envoy's `idle_timeout`): nothing is in progress, so nothing is lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerApp;
use pingora::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use super::direct::read_whole_body;
use super::{Ctx, Proxy};

/// Malformed streams a connection may open before it is closed (pingora's own bound).
const MAX_MALFORMED: usize = 32;

/// Our HTTP/2 front over the shared request stages, with pingora's proxy `A` for the streams it
/// leaves to pingora.
pub struct Http2<A> {
    proxy: Proxy,
    pingora: Arc<A>,
}

impl<A: HttpServerApp + Send + Sync + 'static> Http2<A> {
    /// The front over `proxy`'s stages, handing streams it does not serve to `pingora`.
    pub fn new(proxy: Proxy, pingora: Arc<A>) -> Http2<A> {
        Http2 { proxy, pingora }
    }

    /// Serves an HTTP/2 connection until the client or a graceful stop ends it.
    pub async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let Ok(mut conn) = handshake(stream, self.pingora.h2_options()).await else {
            return; // not HTTP/2 after all, or the client went away
        };
        // A stop waits for the connection, not only its streams: a stream's last frames are
        // written by this loop after the stream's task has ended, and an exit before then
        // would cut them. After GOAWAY the connection closes once its streams are out.
        let _in_progress = self.proxy.lifecycle.enter();
        let keepalive = self
            .proxy
            .routing
            .routes
            .load()
            .snap
            .config
            .gateway
            .timeouts
            .keepalive
            .get();
        let streams = Arc::new(Streams::default());
        let mut stop = shutdown.clone();
        let mut stopping = false;
        let mut malformed = 0;
        loop {
            let accepted = if stopping {
                HttpSession::from_h2_conn(&mut conn, digest.clone()).await
            } else {
                tokio::select! {
                    // The stop first, so one that arrived with a stream is seen; accepting is
                    // cancel-safe and resumes on the next turn.
                    biased;
                    _ = stop.changed() => {
                        // GOAWAY with the highest stream id; h2 sends the real last id once the
                        // connection drains, and accepting drives it there.
                        conn.graceful_shutdown();
                        stopping = true;
                        continue;
                    }
                    accepted = HttpSession::from_h2_conn(&mut conn, digest.clone()) => accepted,
                    () = streams.idle_for(keepalive) => {
                        // No stream is open: the GOAWAY names the last one served, and the
                        // connection closes once it is written.
                        conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                        stopping = true;
                        continue;
                    }
                }
            };
            match accepted {
                // The client went away (often without GOAWAY), or the connection is done.
                Err(_) | Ok(None) => return,
                // pingora answered or reset the stream already.
                Ok(Some(H2Accept::Rejected)) => {
                    malformed += 1;
                    if malformed >= MAX_MALFORMED {
                        return;
                    }
                }
                Ok(Some(H2Accept::Session(session))) => {
                    // On this thread, beside the connection and its upstream pools. Boxed here,
                    // the stream's future is copied once; handed to the runtime unboxed, it
                    // would be moved whole through the task's construction.
                    let served =
                        self.clone()
                            .stream(ServerSession::new_http2(session), shutdown.clone(), streams.open());
                    tokio::spawn(Box::pin(served));
                }
            }
        }
    }

    /// Serves one stream, or hands it to pingora's proxy.
    async fn stream(self: Arc<Self>, mut s: ServerSession, shutdown: ShutdownWatch, _open: StreamOpen) {
        let p = &self.proxy;
        let arrived = p.routing.clock.now();
        // Counted in progress from here, so a graceful stop waits for a body being read.
        let mut ctx = Ctx::new(p.lifecycle.enter());
        let routes = p.routing.routes.load_full();
        let arrival = p.read_decision(&mut s, &routes).await;
        if arrival.as_ref().is_ok_and(|a| a.proxied(&routes)) {
            drop(ctx); // pingora's proxy counts it from here
            self.pingora.process_new_http(s, &shutdown).await;
            return;
        }
        // From here the request is ours.
        p.open(&mut s, &mut ctx, routes);
        ctx.started = arrived;
        let served = match arrival {
            Ok(arrival) => {
                let buffered = arrival.buffered;
                match p.settle(&mut s, &mut ctx, arrival.decided).await {
                    Ok(Some(_)) => match read_whole_body(&mut s, buffered).await {
                        Ok(body) => p.direct(&mut s, &mut ctx, body).await,
                        Err(e) => Err(e),
                    },
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &served {
            p.fail(&mut s, &mut ctx, e).await;
        }
        p.finish(&s, &mut ctx);
        if served.is_ok() {
            // Ends the stream if the response left it open; after a failure the stream is
            // dropped as pingora drops it (a reset, unless the answer ended it).
            let _ = s.finish().await;
        }
    }
}

/// The streams open on one connection, for its keep-alive: idle is when none is.
#[derive(Default)]
struct Streams {
    open: AtomicUsize,
    none_open: Notify,
}

/// Held by a stream's task, so its connection is not idle while the stream is served.
struct StreamOpen(Arc<Streams>);

impl Streams {
    fn open(self: &Arc<Self>) -> StreamOpen {
        self.open.fetch_add(1, Ordering::Relaxed);
        StreamOpen(self.clone())
    }

    /// Completes once no stream has been open for `keepalive`; a stream opening meanwhile
    /// cancels it (the accept loop makes a new one after each stream).
    async fn idle_for(&self, keepalive: Duration) {
        while self.open.load(Ordering::Acquire) != 0 {
            // A stream ending between the load and here leaves a permit: no wake-up is lost.
            self.none_open.notified().await;
        }
        tokio::time::sleep(keepalive).await;
    }
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_open.notify_one();
        }
    }
}
