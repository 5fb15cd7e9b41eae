//! Our own HTTP/1 front ([`crate::http1`]'s pieces): one client connection, read a head, serve the
//! request through the same stages as pingora's callbacks ([`Proxy::env`], [`Proxy::open`],
//! [`Proxy::settle`], [`Proxy::direct`], [`Proxy::fail`], [`Proxy::finish`]), and again while the
//! connection lives (keep-alive, pipelined requests in order).
//!
//! Slow clients: the connection's first header block must arrive whole within
//! `timeouts.client_header` of the accept (HAProxy's `timeout http-request`), counted across reads,
//! not per read; past it the client gets a 408 with a KServe-style body and the connection closes.
//! Between requests a connection may idle for `timeouts.keepalive`; a graceful stop closes idle
//! ones at once and ends busy ones after their response (`Connection: close`).
//!
//! A request this path does not take ([`crate::http1::request::Parsed::Other`], a body too large
//! to hold, a version whose backend speaks HTTP/2 or TLS) is handed, with the connection and every
//! byte read so far, to pingora's HTTP session, which serves it and the rest of the connection;
//! an HTTP/2 preface goes the same way to our HTTP/2 front ([`super::Http2`]). Nothing has
//! happened to the request by then but a pure decision.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use meridian_gateway_core::decide::{decide, Decision};
use meridian_gateway_core::peek::Step;
use meridian_gateway_core::reply::Reply;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::time::Instant;

use super::exchange::Exchange;
use super::{direct_leg_fits, Ctx, Proxy};
use crate::http1;
use crate::http1::request::{self, Head, Parsed};
use crate::http1::rewind::Rewind;

/// Most bytes of a request header block this path reads; a longer one is pingora's to refuse.
const MAX_HEAD: usize = 64 * 1024;

/// A client connection's socket and buffers.
pub struct Connection {
    stream: Stream,
    buf: BytesMut,
    /// What is written next, in one write with whatever comes with it.
    pub out: Vec<u8>,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The forwarding fields of its first-hop requests ([`super::forward::first_hop_lines`]),
    /// made by its first request.
    pub first_hop: Option<Box<[u8]>>,
}

impl Connection {
    fn new(stream: Stream) -> Connection {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let tls = stream.get_ssl_digest().is_some();
        Connection {
            stream,
            buf: BytesMut::with_capacity(http1::READ_BUF),
            out: Vec::with_capacity(1024),
            client,
            tls,
            first_hop: None,
        }
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        http1::read_more(&mut self.stream, &mut self.buf).await
    }

    /// Writes what is buffered in `out`, then `data`, and empties `out`.
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let r = http1::write_all(&mut self.stream, &self.out, data).await;
        self.out.clear();
        r
    }

    /// The socket, with what was read and not yet served in front, for pingora.
    fn hand_over(self) -> Stream {
        Box::new(Rewind::new(self.buf.freeze(), self.stream))
    }
}

/// How a connection ended on our path.
pub enum Served {
    /// It is closed, or will be when dropped.
    Done,
    /// pingora serves it from here.
    Handoff(Stream),
    /// It is an HTTP/2 connection (the h2c preface, prior knowledge).
    Http2(Stream),
}

/// What reading a head came to.
enum Read {
    Head(Box<Head>),
    /// A request this path does not take.
    Other,
    /// Bytes that are no well-formed request: 400 and close.
    Malformed(&'static str),
    /// The client went away, idled out, or the gateway is stopping.
    Gone,
    /// The first header block did not arrive in time.
    Late,
}

/// What follows a request.
enum After {
    KeepAlive,
    Close,
    Handoff,
}

/// Our HTTP/1 path over the shared request stages.
pub struct Http1 {
    proxy: Proxy,
}

impl Http1 {
    /// The path over `proxy`'s stages and state.
    pub fn new(proxy: Proxy) -> Http1 {
        Http1 { proxy }
    }

    /// Serves a newly accepted connection.
    pub async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) -> Served {
        let timeouts = self.timeouts();
        let limit = timeouts.client_header.get();
        let mut c = Connection::new(stream);
        // One timer and one stop signal per connection, re-armed for each wait for a head: a
        // timer made per request costs the runtime's driver a wake-up (a syscall) each time.
        let mut waits = Waits {
            timer: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            stop: Box::pin(stopped(shutdown.clone())),
            first: true,
            keepalive: timeouts.keepalive.get(),
        };
        loop {
            let head = match read_head(&mut c, &mut waits).await {
                Read::Head(h) => h,
                Read::Other if c.buf.starts_with(request::H2_PREFACE) => return Served::Http2(c.hand_over()),
                Read::Other => return Served::Handoff(c.hand_over()),
                Read::Gone => return Served::Done,
                Read::Late => {
                    let _ = c.write(late(limit).as_bytes()).await;
                    return Served::Done;
                }
                Read::Malformed(why) => {
                    let reply = Reply::error(400, format!("malformed request: {why}"));
                    let _ = c.write(closing(&reply, "Bad Request").as_bytes()).await;
                    return Served::Done;
                }
            };
            waits.first = false;
            match self.request(&mut c, head, shutdown).await {
                After::KeepAlive => {}
                After::Close => return Served::Done,
                After::Handoff => return Served::Handoff(c.hand_over()),
            }
        }
    }

    fn timeouts(&self) -> meridian_config::schema::Timeouts {
        self.proxy.routing.routes.load().snap.config.gateway.timeouts.clone()
    }

    /// Serves one request whose head is at the front of the read buffer.
    async fn request(&self, c: &mut Connection, head: Box<Head>, shutdown: &ShutdownWatch) -> After {
        let p = &self.proxy;
        let routes = p.routing.routes.load_full();
        if head.body > routes.held_body_max {
            return After::Handoff; // pingora streams it
        }
        let whole = head.len + head.body as usize;
        let env = p.env(c.client.map(|a| a.ip()));
        let mut decided = decide(&routes.snap, &head.over(&c.buf), None, &env);
        let mut close = head.close || *shutdown.borrow();
        if let Ok(Decision::ReadBody(peek)) = &decided {
            if c.buf.len() < whole && !read_to(c, whole, self.timeouts().idle.get()).await {
                return After::Close;
            }
            // The whole body is at hand, within the held bodies' bound.
            decided = match peek.step(&c.buf[head.len..whole], true, usize::MAX, false) {
                Step::Named(named) => decide(&routes.snap, &head.over(&c.buf), Some(&named), &env),
                Step::Refuse(reply) => {
                    close = true;
                    Ok(Decision::Answer(reply))
                }
                Step::ReadMore => return After::Handoff,
            };
        }
        if let Ok(Decision::Route(routed)) = &decided {
            if !direct_leg_fits(&routes, *routed, Some(head.body), u64::MAX) {
                return After::Handoff;
            }
        }
        // From here the request is ours.
        if c.buf.len() < whole && !read_to(c, whole, self.timeouts().idle.get()).await {
            return After::Close;
        }
        // Head and body leave the read buffer without a copy; the body is a slice of the same bytes.
        let request = c.buf.split_to(whole).freeze();
        let body = request.slice(head.len..);
        let mut ctx = Ctx::new(p.lifecycle.enter());
        let mut x = Exchange::new(c, head.over(&request), close);
        p.open(&mut x, &mut ctx, routes);
        let served = match p.settle(&mut x, &mut ctx, decided).await {
            Ok(Some(_)) => p.direct(&mut x, &mut ctx, body).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &served {
            p.fail(&mut x, &mut ctx, e).await;
        }
        p.finish(&x, &mut ctx);
        if x.closing() {
            After::Close
        } else {
            After::KeepAlive
        }
    }
}

/// What a connection waits on besides its socket while it waits for a head.
struct Waits<S> {
    /// The first head's deadline (from the accept), then the keep-alive deadline.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The gateway stopping.
    stop: Pin<Box<S>>,
    /// Whether the connection's first head is awaited.
    first: bool,
    /// How long the connection may idle between requests.
    keepalive: Duration,
}

/// Completes once the gateway stops.
async fn stopped(mut shutdown: ShutdownWatch) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Reads until a head is whole (or the bytes are not one this path takes). The first head must
/// be whole by the deadline the timer was made with; later ones wait up to the keep-alive, and a
/// connection idle between requests gives way to a graceful stop.
async fn read_head<S: Future<Output = ()>>(c: &mut Connection, waits: &mut Waits<S>) -> Read {
    if !waits.first {
        // Later than the last deadline: the timer only moves its expiry, it is not registered again.
        waits.timer.as_mut().reset(Instant::now() + waits.keepalive);
    }
    loop {
        if !c.buf.is_empty() {
            match request::parse(&mut c.buf) {
                Parsed::Head(h) => return Read::Head(h),
                Parsed::Other => return Read::Other,
                Parsed::Malformed(why) => return Read::Malformed(why),
                Parsed::Partial if c.buf.len() > MAX_HEAD => return Read::Other,
                Parsed::Partial => {}
            }
        }
        let idle = c.buf.is_empty() && !waits.first;
        let read = tokio::select! {
            biased;
            r = c.read() => r,
            () = waits.timer.as_mut() => return if waits.first { Read::Late } else { Read::Gone },
            () = waits.stop.as_mut(), if idle => return Read::Gone,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return Read::Gone;
        }
    }
}

/// Reads until the buffer holds `len` bytes, each read within `timeout`; false when the client
/// went away or stalled.
async fn read_to(c: &mut Connection, len: usize, timeout: Duration) -> bool {
    c.buf.reserve(len.saturating_sub(c.buf.len()));
    while c.buf.len() < len {
        match tokio::time::timeout(timeout, c.read()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

/// The answer to a client whose first header block did not arrive within `limit`.
fn late(limit: Duration) -> String {
    let reply = Reply::error(
        408,
        format!(
            "request headers were not received within {}",
            humantime::format_duration(limit)
        ),
    );
    closing(&reply, "Request Timeout")
}

/// `reply` as a whole HTTP/1.1 response that closes the connection (for a client the gateway
/// stops reading from).
fn closing(reply: &Reply, reason: &str) -> String {
    let body = reply.body();
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        reply.status,
        body.len()
    )
}
