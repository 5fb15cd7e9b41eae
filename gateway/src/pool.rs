//! Keep-alive HTTP/1.1 connections to backends for the direct upstream leg ([`crate::proxy`]'s
//! `direct` stage), one pool per worker thread: the gateway runs pingora's per-thread runtimes (no
//! work stealing), so a connection's driver task, its idle slot and the requests on it stay on one
//! thread, and checking a connection out or in takes no lock.
//!
//! A connection is hyper's client connection (`hyper::client::conn::http1`): it writes a request's
//! header and small body in one vectored write and keeps the connection for the next request.
//! Idle connections older than the idle timeout, or closed by the backend, are dropped when met.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use meridian_gateway_core::clock::Nanos;

/// Idle connections kept per backend and thread, at most (NGINX's `keepalive` is per worker too).
const MAX_IDLE: usize = 128;

/// A connection's request side.
pub type Sender = SendRequest<Full<Bytes>>;

struct Idle {
    sender: Sender,
    since: Nanos,
}

/// Check-ins between sweeps of the whole pool for stale entries (backends that left the table
/// are never asked for again, so their idle connections would otherwise stay).
const SWEEP_EVERY: u32 = 4096;

#[derive(Default)]
struct Pool {
    idle: HashMap<SocketAddr, Vec<Idle>>,
    checkins: u32,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A connection checked out for one request.
pub struct Conn {
    /// Where requests go.
    pub sender: Sender,
    /// Whether it served a request before (a failure before any response byte may then be the
    /// backend having closed it while idle, not the backend failing).
    pub reused: bool,
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
    /// The HTTP/1 handshake failed.
    #[error("HTTP/1 handshake with {addr}: {source}")]
    Handshake {
        /// The backend.
        addr: SocketAddr,
        /// hyper's words.
        source: hyper::Error,
    },
}

impl ConnectError {
    /// pingora's name for the failure, so traces and logs read the same on both upstream legs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                "ConnectRefused"
            }
            ConnectError::Io { .. } | ConnectError::Handshake { .. } => "ConnectError",
            ConnectError::Timeout { .. } => "ConnectTimedout",
        }
    }
}

/// A connection to `addr`: an idle one of this thread, else a new one within `connect_timeout`.
/// `idle_timeout` retires idle connections older than it; `now` is the clock's reading.
pub async fn checkout(
    addr: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    now: Nanos,
) -> Result<Conn, ConnectError> {
    if let Some(sender) = take_idle(addr, idle_timeout, now) {
        return Ok(Conn { sender, reused: true });
    }
    connect(addr, connect_timeout)
        .await
        .map(|sender| Conn { sender, reused: false })
}

/// A new connection, never pooled before.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    // The connection's driver ends when the backend closes it or the sender is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Returns a connection whose response was read whole, for the next request to `addr`;
/// `idle_timeout` bounds how long any idle connection of this thread is kept.
pub fn checkin(addr: SocketAddr, sender: Sender, idle_timeout: Duration, now: Nanos) {
    if sender.is_closed() {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.checkins += 1;
        if pool.checkins >= SWEEP_EVERY {
            pool.checkins = 0;
            let oldest = now.saturating_sub(meridian_gateway_core::clock::nanos(idle_timeout));
            pool.idle.retain(|_, list| {
                list.retain(|i| i.since >= oldest && !i.sender.is_closed());
                !list.is_empty()
            });
        }
        let list = pool.idle.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push(Idle { sender, since: now });
        }
    });
}

/// The most recently used live idle connection to `addr`, dropping stale or closed ones on the way.
fn take_idle(addr: SocketAddr, idle_timeout: Duration, now: Nanos) -> Option<Sender> {
    let oldest = now.saturating_sub(meridian_gateway_core::clock::nanos(idle_timeout));
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.idle.get_mut(&addr)?;
        // Anything older than the idle timeout goes; the list is in check-in order.
        list.retain(|i| i.since >= oldest && !i.sender.is_closed());
        while let Some(i) = list.pop() {
            if i.sender.is_ready() {
                return Some(i.sender);
            }
        }
        None
    })
}
