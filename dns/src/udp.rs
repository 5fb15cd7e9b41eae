//! The UDP fast path: each worker thread owns a `SO_REUSEPORT` socket and receives, answers and sends
//! in one blocking loop, with no event loop and no per-packet task, channel or thread hop
//! (hickory-server's UDP path costs three of those per query; see benches/README.md). The reply to
//! each datagram is [`respond`], shared with the TCP path ([`crate::tcp`]).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;

use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::respond::{respond, ReplyCache};
use crate::rrl::{slipped, Verdict};
use crate::state::DnsState;

/// Binds one of several sockets sharing `addr` (the kernel spreads datagrams across them).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Runs a worker on its own thread, blocking in `recvmmsg` (NSD's and Knot's model): no event
/// loop, no readiness bookkeeping, the batch buffers never move between threads, and a worker
/// never waits on another.
pub fn spawn_worker(socket: std::net::UdpSocket, state: Arc<DnsState>) -> std::io::Result<std::thread::JoinHandle<()>> {
    socket.set_nonblocking(false)?;
    std::thread::Builder::new()
        .name("dns-udp".into())
        .spawn(move || serve(&socket, &state))
}

/// Datagrams taken from the kernel per wake-up (and answered per `sendmmsg`).
const BATCH: usize = 32;
/// Largest query read; EDNS queries are small, and a larger datagram is not a query we answer.
const MAX_QUERY: usize = 4096;

/// Serves one socket for the life of the process: `recvmmsg` waits for at least one datagram and
/// takes whatever else is queued (up to a batch), each is answered, and `sendmmsg` sends the
/// answers, so a busy server makes two system calls per batch, not per query.
pub fn serve(socket: &std::net::UdpSocket, state: &DnsState) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut rx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut cache = ReplyCache::default();
    let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        received.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(&mut b[..])]).collect();
            match recvmmsg(fd, &mut rx, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(got) => received.extend(got.map(|m| (m.bytes, m.address.and_then(|a| to_std(&a))))),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("dns udp receive: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            }
        }
        replies.clear();
        let zones = state.zones.load();
        let now = state.clock.now();
        for (i, (n, src)) in received.iter().enumerate() {
            let Some(src) = *src else { continue };
            let query = &bufs[i][..(*n).min(MAX_QUERY)];
            let Some(out) = respond(state, query, src, false, Some(&mut cache)) else {
                continue;
            };
            // A client that proved its address (a valid DNS cookie) is not limited.
            let verdict = match &zones.rrl {
                Some(r) if !out.verified => r.judge(src.ip(), query, &out.bytes, now),
                _ => Verdict::Send,
            };
            let out = out.bytes;
            match verdict {
                Verdict::Send => replies.push((out, src)),
                Verdict::Slip => {
                    state.metrics.rrl.with_label_values(&["slipped"]).inc();
                    if let Some(tc) = slipped(query, &out) {
                        replies.push((tc, src));
                    }
                }
                Verdict::Drop => state.metrics.rrl.with_label_values(&["dropped"]).inc(),
            }
        }
        let mut sent = 0;
        while sent < replies.len() {
            let rest = &replies[sent..];
            let addrs: Vec<Option<SockaddrStorage>> =
                rest.iter().map(|(_, a)| Some(SockaddrStorage::from(*a))).collect();
            let slices: Vec<[IoSlice<'_>; 1]> = rest.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
            match sendmmsg(fd, &mut tx, slices.iter(), &addrs, [], MsgFlags::empty()) {
                Ok(r) => sent += r.count().max(1),
                Err(nix::errno::Errno::EINTR) => {}
                // A reply that cannot go (an unreachable client) is dropped, as DNS over UDP may.
                Err(_) => sent += 1,
            }
        }
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}
