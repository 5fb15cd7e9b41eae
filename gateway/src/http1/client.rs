//! The gateway's own HTTP/1.1 client for plain-HTTP/1 backends: a request goes out as one write
//! (header block and whole body), the response head is read by httparse, and the body is taken out
//! of the same read buffer ([`super::framing`]). The connection is driven by the request's own task:
//! no driver task, no channel, no wake-up per request (what hyper's client costs).
//!
//! Keep-alive connections live in a pool per worker thread: the gateway runs pingora's per-thread
//! runtimes (no work stealing), so a connection and the requests on it stay on one thread and
//! checking one out or in takes no lock. Idle connections are swept once a second
//! ([`crate::pool_sweep`]): those past their idle timeout, and those the backend closed, are let go.
//! One the backend closed since the last sweep shows as a failure before any response byte, and the
//! caller sends the request again on a fresh connection ([`Conn::reused`]).
//!
//! Each connection keeps one timer for its reads, re-armed per request: moving a timer's expiry
//! later costs an atomic store, where a timer made per request would be registered with the
//! runtime's driver and wake it through its eventfd, one more syscall per request.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_gateway_core::clock::Nanos;
use smallvec::SmallVec;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::framing::{content_length, lists, Decoder, Framing, FramingError, Step};
use super::lines::{bytes, copy_kept, shared, status_line, Span};
use super::request::MAX_HEADERS;

/// Idle connections kept per backend and thread, at most: a bound for safety, not a tuning. A thread
/// holds no more idle connections to a backend than it had requests in flight there at once (which
/// `limits.per_endpoint_concurrency`, 1,000 by default, bounds), and the sweep closes each once idle
/// past its timeout. A cap below the concurrency closes and reopens connections for as long as it
/// lasts: NGINX's `keepalive 128` did, as 128 did here, at one new connection per 100 requests
/// from 32 HTTP/2 clients of 8 streams each (benches/README.md).
const MAX_IDLE: usize = 1024;

/// Most bytes of a response header block.
const MAX_HEAD: usize = 64 * 1024;

/// A connection to a backend, checked out for one request.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    addr: SocketAddr,
    reused: bool,
    timer: Pin<Box<Sleep>>,
}

struct Idle {
    conn: Conn,
    /// When it has idled past its idle timeout.
    expires: Nanos,
}

#[derive(Default)]
struct Pool {
    /// foldhash: std's SipHash costs more than the rest of a checkout (keys are backend addresses
    /// from the config, not chosen by clients).
    idle: foldhash::HashMap<SocketAddr, Vec<Idle>>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The backend refused or the connection failed.
    #[error("connecting to {addr}: {source}")]
    Io {
        /// The backend.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No answer within the connect timeout.
    #[error("connecting to {addr}: no answer within {timeout:?}")]
    Timeout {
        /// The backend.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },
}

impl ConnectError {
    /// pingora's name for the failure, so traces and logs read the same on both upstream legs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                "ConnectRefused"
            }
            ConnectError::Io { .. } => "ConnectError",
            ConnectError::Timeout { .. } => "ConnectTimedout",
        }
    }
}

/// Why a request got no response head (on either of our upstream legs, HTTP/1 or
/// [`crate::http2::client`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExchangeError {
    /// The connection closed or reset before any response byte: the request can go again.
    #[error("the connection closed before any response byte")]
    Closed,
    /// Bytes came that are not an HTTP/1 response head, or the connection broke within one.
    #[error("not an HTTP/1 response")]
    Malformed,
    /// No response head within the first-byte timeout.
    #[error("no response within the first-byte timeout")]
    Timeout,
    /// HTTP/2: the backend refused the stream (`REFUSED_STREAM`, or past its last stream when it
    /// went away) without processing it: the request can go again.
    #[error("the backend refused the stream")]
    Refused,
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Reading failed.
    #[error("reading the response body: {0}")]
    Io(#[from] std::io::Error),
    /// The body's framing is broken or it was cut short.
    #[error("response body: {0}")]
    Framing(#[from] FramingError),
    /// No body byte within the read timeout.
    #[error("the response body stalled")]
    Timeout,
}

/// A response's status line and fields, owned (the header block's bytes, not a parsed map).
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How its body is delimited (no body for `HEAD`, 204 and 304 whatever the fields say).
    pub framing: Framing,
    /// Whether the connection can carry another request once the body was read.
    pub keep_alive: bool,
    block: Bytes,
    /// The status line's length when it is reused as it came (`HTTP/1.1`, CRLF), else 0.
    status_line: u32,
    fields: SmallVec<[(Span, Span); 16]>,
}

impl ResponseHead {
    /// The fields that go on to the client: all but the hop-by-hop ones and the framing (the
    /// writer of each client protocol frames the body itself). `Content-Length` stays. Each value
    /// shares the head's buffer, so a header map holds it without a copy.
    pub fn end_to_end(&self) -> impl Iterator<Item = (&[u8], Bytes)> + '_ {
        self.fields
            .iter()
            .filter(|&&(n, _)| !is_hop_by_hop(bytes(&self.block, n)))
            .map(|&(n, v)| (bytes(&self.block, n), shared(&self.block, v)))
    }

    /// Appends to `out` this response as an HTTP/1.1 head to the client, less its framing and
    /// blank line: the status line (the backend's reason phrase kept, as NGINX and HAProxy do)
    /// and [`ResponseHead::end_to_end`]'s fields, as they came.
    pub fn write_http1(&self, out: &mut Vec<u8>) {
        let start = (0, self.status_line as usize);
        if start.1 == 0 {
            status_line(out, self.status);
        }
        copy_kept(
            &self.block,
            start,
            self.fields.iter().copied(),
            |name, _| !is_hop_by_hop(name),
            out,
        );
    }
}

/// Response fields that end at the gateway.
fn is_hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// A connection to `addr`: an idle one of this thread not past its idle timeout at `now` (the
/// clock's reading), else a new one within `connect_timeout`.
pub async fn checkout(addr: SocketAddr, connect_timeout: Duration, now: Nanos) -> Result<Conn, ConnectError> {
    if let Some(conn) = take_idle(addr, now) {
        return Ok(conn);
    }
    connect(addr, connect_timeout).await
}

/// A new connection, never pooled before.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(super::READ_BUF),
        addr,
        reused: false,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
    })
}

/// Returns a connection whose response was read whole, for the next request to its backend within
/// `idle_timeout` of `now`.
pub fn checkin(mut conn: Conn, idle_timeout: Duration, now: Nanos) {
    if !conn.buf.is_empty() {
        return; // bytes past the response: the backend is not speaking HTTP/1 as we think
    }
    conn.reused = true;
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.idle.entry(conn.addr).or_default();
        if list.len() < MAX_IDLE {
            let expires = now.saturating_add(meridian_gateway_core::clock::nanos(idle_timeout));
            list.push(Idle { conn, expires });
        }
    });
}

/// The most recently used idle connection to `addr`, dropping expired ones on the way.
fn take_idle(addr: SocketAddr, now: Nanos) -> Option<Conn> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.idle.get_mut(&addr)?;
        // The list is in check-in order: what expired is at the front.
        let stale = list.iter().take_while(|i| i.expires < now).count();
        list.drain(..stale);
        list.pop().map(|i| i.conn)
    })
}

/// Drops this thread's idle connections that expired by `now` or that their backend closed (or
/// wrote to unasked); returns how many stay.
pub fn sweep(now: Nanos) -> usize {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.idle.retain(|_, list| {
            list.retain(|i| i.expires >= now && i.conn.quiet());
            !list.is_empty()
        });
        pool.idle.values().map(Vec::len).sum()
    })
}

impl Conn {
    /// Whether an idle connection is still as it was left: open, nothing to read. A backend's close
    /// (or reset) makes the socket readable, which the runtime's driver has noted, so a quiet one
    /// costs no syscall.
    fn quiet(&self) -> bool {
        matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Whether it served a request before (a failure before any response byte may then be the
    /// backend having closed it while idle, not the backend failing).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends a request (its header block and whole body in one write) and reads the response
    /// head within `timeout`. `head_request`: the request's method is `HEAD` (no body follows).
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        head_request: bool,
        timeout: Duration,
    ) -> Result<ResponseHead, ExchangeError> {
        self.timer.as_mut().reset(Instant::now() + timeout);
        let exchange = send_and_read_head(&mut self.stream, &mut self.buf, head, body, head_request);
        tokio::select! {
            biased;
            r = exchange => r,
            () = self.timer.as_mut() => Err(ExchangeError::Timeout),
        }
    }

    /// The next piece of the response body (`None`: it ended), waiting at most `timeout` for
    /// each read.
    pub async fn body(&mut self, decoder: &mut Decoder, timeout: Duration) -> Result<Option<Bytes>, BodyError> {
        let mut eof = false;
        loop {
            match decoder.step(&mut self.buf, eof)? {
                Step::Data(data) => return Ok(Some(data)),
                Step::Done => return Ok(None),
                Step::NeedMore => {
                    self.timer.as_mut().reset(Instant::now() + timeout);
                    let read = tokio::select! {
                        biased;
                        r = super::read_more(&mut self.stream, &mut self.buf) => r,
                        () = self.timer.as_mut() => return Err(BodyError::Timeout),
                    };
                    match read {
                        Ok(0) => eof = true,
                        Ok(_) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// Sends a request and reads the response head off the connection's buffer.
async fn send_and_read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &[u8],
    body: &[u8],
    head_request: bool,
) -> Result<ResponseHead, ExchangeError> {
    super::write_all(stream, head, body)
        .await
        .map_err(|_| ExchangeError::Closed)?;
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf, head_request)? {
                return Ok(head);
            }
            if buf.len() > MAX_HEAD {
                return Err(ExchangeError::Malformed);
            }
        }
        let got_some = !buf.is_empty();
        match super::read_more(stream, buf).await {
            Ok(0) | Err(_) if !got_some => return Err(ExchangeError::Closed),
            Ok(0) | Err(_) => return Err(ExchangeError::Malformed),
            Ok(_) => {}
        }
    }
}

/// Parses a response head off the front of `buf`; `None` while it is incomplete. Interim (1xx)
/// responses are dropped on the way.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<ResponseHead>, ExchangeError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ExchangeError::Malformed),
        };
        let status = resp.code.ok_or(ExchangeError::Malformed)?;
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(ExchangeError::Malformed); // we never ask to switch protocols
            }
            let _ = buf.split_to(len);
            continue;
        }
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
        let mut length = None;
        let mut chunked = false;
        let mut other_coding = false;
        let mut keep_alive = resp.version == Some(1);
        let mut kept = SmallVec::new();
        for f in resp.headers.iter() {
            let name = f.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(content_length(f.value, length).ok_or(ExchangeError::Malformed)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = f.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                chunked = lists(last, b"chunked");
                other_coding = !chunked;
            } else if name.eq_ignore_ascii_case(b"connection") && lists(f.value, b"close") {
                keep_alive = false;
            }
            kept.push((span(name), span(f.value)));
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::EMPTY
        } else if chunked {
            Framing::Chunked
        } else if other_coding {
            Framing::Close
        } else {
            length.map_or(Framing::Close, Framing::Length)
        };
        if framing == Framing::Close {
            keep_alive = false;
        }
        let line = buf.iter().position(|&b| b == b'\n').map_or(0, |n| n + 1);
        let reused = buf.starts_with(b"HTTP/1.1 ") && buf[..line].ends_with(b"\r\n");
        let block = buf.split_to(len).freeze();
        return Ok(Some(ResponseHead {
            status,
            framing,
            keep_alive,
            block,
            status_line: if reused { line as u32 } else { 0 },
            fields: kept,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend that answers each request with the next of `answers`, written in one piece.
    async fn backend(answers: Vec<&'static [u8]>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for a in answers {
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(a).await.unwrap();
            }
        });
        addr
    }

    /// A connection to a [`backend`] answering with `answers`, and the tests' generous timeout.
    async fn connected(answers: Vec<&'static [u8]>) -> (Conn, Duration) {
        let t = Duration::from_secs(5);
        (connect(backend(answers).await, t).await.unwrap(), t)
    }

    async fn whole_body(conn: &mut Conn, framing: Framing) -> Vec<u8> {
        let mut d = Decoder::new(framing);
        let mut out = Vec::new();
        while let Some(b) = conn.body(&mut d, Duration::from_secs(5)).await.unwrap() {
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn heads_bodies_and_keep_alive() {
        let (mut c, t) = connected(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\nhello",
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.0 200 Fine\r\nConnection: close\r\n\r\nuntil the end",
        ]).await;
        let h = c.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", false, t).await.unwrap();
        assert_eq!((h.status, h.framing, h.keep_alive), (200, Framing::Length(5), true));
        let fields: Vec<_> = h.end_to_end().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        assert_eq!(
            fields,
            vec![
                (b"Content-Length".to_vec(), b"5".to_vec()),
                (b"X-A".to_vec(), b"1".to_vec())
            ]
        );
        let mut out = Vec::new();
        h.write_http1(&mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n");
        assert_eq!(whole_body(&mut c, h.framing).await, b"hello");
        let h = c.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", false, t).await.unwrap();
        assert_eq!((h.status, h.framing), (503, Framing::Chunked));
        // The backend's reason phrase stays; the framing is the client writer's.
        let mut out = Vec::new();
        h.write_http1(&mut out);
        assert_eq!(out, b"HTTP/1.1 503 Busy\r\n");
        assert_eq!(whole_body(&mut c, h.framing).await, b"abc");
        let h = c.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", false, t).await.unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        // An HTTP/1.0 status line is the client's HTTP/1.1 one, with the standard reason.
        let mut out = Vec::new();
        h.write_http1(&mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(whole_body(&mut c, h.framing).await, b"until the end");
        // The backend is gone: the next request fails before any byte, which a caller may retry.
        let e = c.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", false, t).await.unwrap_err();
        assert_eq!(e, ExchangeError::Closed);
    }

    #[tokio::test]
    async fn head_requests_and_bodiless_statuses_have_no_body() {
        let (mut c, t) = connected(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let h = c.exchange(b"HEAD / HTTP/1.1\r\n\r\n", b"", true, t).await.unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::EMPTY, true));
        let h = c.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", false, t).await.unwrap();
        assert_eq!((h.status, h.framing), (204, Framing::EMPTY));
    }

    #[tokio::test]
    async fn garbage_is_malformed_and_silence_times_out() {
        let (mut c, t) = connected(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await;
        let e = c.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", false, t).await.unwrap_err();
        assert_eq!(e, ExchangeError::Malformed);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = connect(l.local_addr().unwrap(), t).await.unwrap();
        let e = c
            .exchange(b"GET / HTTP/1.1\r\n\r\n", b"", false, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e, ExchangeError::Timeout);
    }
}
