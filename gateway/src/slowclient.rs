//! Slow-client (slowloris) protection: a connection's first request header block must arrive
//! whole within `timeouts.client_header` of the connection being accepted (HAProxy's `timeout
//! http-request`). pingora only bounds each single read, so a client dripping one byte per read
//! interval would hold a connection forever. Past the deadline the client gets a 408 with a
//! KServe-style body and the connection closes.
//!
//! The guard wraps the accepted stream and only looks for the blank line that ends the header
//! block; once it has passed, every read and write goes straight through. HTTP/2 connections
//! (ALPN h2) are left to the h2 stack's own limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::routes::Routing;

/// A pingora app that guards each new connection's first header block, then hands it to `inner`.
pub struct HeaderDeadline<A> {
    /// The proxy.
    pub inner: Arc<A>,
    /// Where the current `client_header` timeout is read from (it follows reloads).
    pub routing: Arc<Routing>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeaderDeadline<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.inner.process_new(stream, shutdown).await;
        }
        let limit = self
            .routing
            .routes
            .load()
            .snap
            .config
            .gateway
            .timeouts
            .client_header
            .get();
        let guarded: Stream = Box::new(Guarded::new(stream, limit));
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Where a guarded connection stands.
enum Phase {
    /// Reading the first header block: `matched` bytes of `\r\n\r\n` seen so far.
    Headers {
        deadline: Pin<Box<tokio::time::Sleep>>,
        matched: usize,
    },
    /// The deadline passed: writing the 408, `sent` bytes so far.
    Refusing { sent: usize },
    /// The header block arrived (or the 408 went out): pass-through.
    Open,
}

/// An accepted stream under the header deadline.
#[derive(Debug)]
pub struct Guarded {
    inner: Stream,
    phase: Phase,
    limit: Duration,
}

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Headers { .. } => "Headers",
            Phase::Refusing { .. } => "Refusing",
            Phase::Open => "Open",
        })
    }
}

impl Guarded {
    fn new(inner: Stream, limit: Duration) -> Guarded {
        Guarded {
            inner,
            phase: Phase::Headers {
                deadline: Box::pin(tokio::time::sleep(limit)),
                matched: 0,
            },
            limit,
        }
    }

    fn refusal(limit: Duration) -> String {
        let body = serde_json::json!({
            "error": format!("request headers were not received within {}", humantime::format_duration(limit))
        })
        .to_string();
        format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Advances a partial match of the blank line ending a header block over `bytes`; returns the new
/// match length (4 when the block ended).
fn scan(mut matched: usize, bytes: &[u8]) -> usize {
    const END: &[u8; 4] = b"\r\n\r\n";
    for &b in bytes {
        matched = if b == END[matched] {
            matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if matched == 4 {
            return 4;
        }
    }
    matched
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.phase {
                Phase::Open => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Headers { deadline, matched } => {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            *matched = scan(*matched, &buf.filled()[before..]);
                            if *matched == 4 {
                                this.phase = Phase::Open;
                            }
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if deadline.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                            this.phase = Phase::Refusing { sent: 0 };
                        }
                    }
                }
                Phase::Refusing { sent } => {
                    let reply = Guarded::refusal(this.limit);
                    while *sent < reply.len() {
                        match Pin::new(&mut this.inner).poll_write(cx, &reply.as_bytes()[*sent..]) {
                            Poll::Ready(Ok(n)) if n > 0 => *sent += n,
                            Poll::Pending => return Poll::Pending,
                            _ => break,
                        }
                    }
                    this.phase = Phase::Open;
                    // The end of the stream, as far as the HTTP reader is concerned.
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request headers not received in time (408 sent)",
                    )));
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::scan;

    #[test]
    fn finds_the_blank_line_across_reads() {
        assert_eq!(scan(0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 4);
        let m = scan(0, b"GET / HTTP/1.1\r\nHost: a\r");
        assert_eq!(m, 1);
        let m = scan(m, b"\n\r");
        assert_eq!(m, 3);
        assert_eq!(scan(m, b"\n"), 4);
        assert_eq!(scan(0, b"a\r\n\r\r\n\r\n"), 4);
        assert_eq!(scan(0, b"a\r\nb\r\n"), 2);
    }
}
