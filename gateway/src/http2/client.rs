//! HTTP/2 connections to backends (cleartext, prior knowledge: how gRPC model servers listen) for
//! our own upstream leg, on the h2 crate. Each worker thread keeps one multiplexed connection per
//! backend address, its requests sharing it as streams, as any gRPC client's would; the
//! connection is driven by a task of its own and retired once idle past `idle_timeout`: by the
//! next request to its backend, or by the thread's sweep ([`crate::pool_sweep`]). Retiring drops
//! the pool's handle, and once no request holds one either, h2 ends the connection (GOAWAY, then
//! close); a request still streaming on it keeps it until the request ends.
//!
//! A request goes out whole: its head, and its body queued behind it with the end of the stream,
//! in one step. Its response is then awaited whatever became of the upload, so a backend that
//! answers before reading the body (a gRPC status by path alone) and then resets the stream with
//! `NO_ERROR`, as RFC 9113 8.1 allows, is heard: the client "MUST NOT discard" that response.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream};
use meridian_gateway_core::clock::{nanos, Nanos};
use tokio::net::TcpStream;

use crate::http1::client::{ConnectError, ExchangeError};

/// How much of one response a backend may send ahead of the gateway's reading it: hyper's client
/// default, not HTTP/2's 64 KiB, which would hold a large tensor or a long token stream to 64 KiB
/// per round trip to a backend in another zone.
const STREAM_WINDOW: u32 = 2 << 20;
/// The same for all the connection's responses together (hyper's default too).
const CONNECTION_WINDOW: u32 = 5 << 20;

/// A thread's connection to one backend, and when it has idled past its idle timeout (a request
/// going out on it moves that on).
struct Shared {
    send: SendRequest<Bytes>,
    expires: Nanos,
}

thread_local! {
    /// foldhash: keys are backend addresses from the config, not chosen by clients.
    static POOL: RefCell<foldhash::HashMap<SocketAddr, Shared>> = RefCell::default();
}

/// A handle on a backend connection for one request.
pub struct Conn {
    send: SendRequest<Bytes>,
    addr: SocketAddr,
    reused: bool,
}

/// The thread's connection to `addr` unless it idled past its idle timeout by `now`, else a new one
/// within `connect_timeout`; either is kept until `idle_timeout` past `now`.
pub async fn checkout(
    addr: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    now: Nanos,
) -> Result<Conn, ConnectError> {
    let shared = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let fresh = pool.get(&addr).is_some_and(|s| now <= s.expires);
        if !fresh {
            // Dropping the last handle of an idle connection ends it (GOAWAY, then close).
            pool.remove(&addr);
            return None;
        }
        let s = pool.get_mut(&addr)?;
        s.expires = now.saturating_add(nanos(idle_timeout));
        Some(s.send.clone())
    });
    match shared {
        Some(send) => Ok(Conn {
            send,
            addr,
            reused: true,
        }),
        None => connect(addr, connect_timeout, idle_timeout, now).await,
    }
}

/// A new connection to `addr` within `timeout`, which becomes the thread's shared one, kept until
/// `idle_timeout` past `now`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    idle_timeout: Duration,
    now: Nanos,
) -> Result<Conn, ConnectError> {
    let io = |source| ConnectError::Io { addr, source };
    let handshake = async {
        let stream = TcpStream::connect(addr).await.map_err(io)?;
        let _ = stream.set_nodelay(true);
        h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(stream)
            .await
            .map_err(|e| io(h2_io(e)))
    };
    let (send, connection) = match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r?,
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "backend HTTP/2 connection ended");
        }
    });
    POOL.with(|pool| {
        let shared = Shared {
            send: send.clone(),
            expires: now.saturating_add(nanos(idle_timeout)),
        };
        pool.borrow_mut().insert(addr, shared);
    });
    Ok(Conn {
        send,
        addr,
        reused: false,
    })
}

impl Conn {
    /// Whether the connection served requests before this one.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends `head` with `body` (the whole of it) and waits up to `first_byte` for the response
    /// head. [`ExchangeError::Closed`] and [`ExchangeError::Refused`] mean the backend did not
    /// process the request: it may go again.
    pub async fn exchange(
        &mut self,
        head: http::Request<()>,
        body: &Bytes,
        first_byte: Duration,
    ) -> Result<http::Response<RecvStream>, ExchangeError> {
        let answer = tokio::time::timeout(first_byte, async {
            let response = self.send_whole(head, body).await?;
            response.await.map_err(|e| self.failed(e))
        })
        .await;
        // Past the timeout the stream's handles are gone, which resets it (CANCEL).
        answer.unwrap_or(Err(ExchangeError::Timeout))
    }

    /// Opens the stream and queues the head and the body with the end of the stream.
    async fn send_whole(&mut self, head: http::Request<()>, body: &Bytes) -> Result<ResponseFuture, ExchangeError> {
        let ready = std::future::poll_fn(|cx| self.send.poll_ready(cx)).await;
        ready.map_err(|e| self.failed(e))?;
        let (response, mut stream) = self
            .send
            .send_request(head, body.is_empty())
            .map_err(|e| self.failed(e))?;
        if !body.is_empty() {
            // Queued whole; the connection sends it as the backend's window allows. An error here
            // is the stream already reset by the backend: its response, if it sent one, stands.
            let _ = stream.send_data(body.clone(), true);
        }
        Ok(response)
    }

    /// What an h2 error before the response head means for the request; a connection that failed
    /// is no longer the thread's shared one.
    fn failed(&self, e: h2::Error) -> ExchangeError {
        if e.reason() == Some(Reason::REFUSED_STREAM) || e.is_go_away() && e.is_remote() {
            // Refused, or past the backend's last stream when it went away: not processed.
            return ExchangeError::Refused;
        }
        if e.is_io() || e.is_go_away() {
            forget(self.addr);
        }
        if e.is_reset() || e.is_io() || e.is_go_away() {
            ExchangeError::Closed
        } else {
            ExchangeError::Malformed
        }
    }
}

/// Retires this thread's connections that idled past their idle timeout by `now`; returns how many
/// stay.
pub fn sweep(now: Nanos) -> usize {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.retain(|_, s| now <= s.expires);
        pool.len()
    })
}

/// Drops the thread's shared connection to `addr`: the next request connects afresh.
fn forget(addr: SocketAddr) {
    POOL.with(|pool| {
        pool.borrow_mut().remove(&addr);
    });
}

/// An h2 handshake error as the I/O error it is (or stands for).
fn h2_io(e: h2::Error) -> std::io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| std::io::Error::other("h2 handshake"))
    } else {
        std::io::Error::other(e)
    }
}
