//! The UDP fast path: each worker thread owns a `SO_REUSEPORT` socket and receives, answers and sends in
//! one task, with no per-packet task, channel or thread hop (hickory-server's UDP path costs three
//! of those per query; see benches/README.md). Parsing and encoding are hickory-proto's; the answer
//! is [`reply`](crate::reply::reply), shared with the TCP path, which stays on hickory-server.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::LowerName;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::reply::reply;
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

/// Runs a worker on its own thread with its own single-threaded runtime: the batch buffers never move
/// between threads, and a worker never waits on another.
pub fn spawn_worker(socket: std::net::UdpSocket, state: Arc<DnsState>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("dns-udp".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("dns udp worker: {e}");
                return;
            }
        };
        rt.block_on(async move {
            match UdpSocket::from_std(socket) {
                Ok(s) => serve(s, state).await,
                Err(e) => tracing::error!("dns udp worker: {e}"),
            }
        });
    })
}

/// Datagrams taken from the kernel per wake-up (and answered per `sendmmsg`).
const BATCH: usize = 32;
/// Largest query read; EDNS queries are small, and a larger datagram is not a query we answer.
const MAX_QUERY: usize = 4096;

/// Serves one socket until the task is aborted: `recvmmsg` a batch, answer each, `sendmmsg` the
/// answers, as NSD and Knot do, so a busy server makes two system calls per batch, not per query.
pub async fn serve(socket: UdpSocket, state: Arc<DnsState>) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut rx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    loop {
        let received = socket
            .async_io(Interest::READABLE, || {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                    bufs.iter_mut().map(|b| [IoSliceMut::new(&mut b[..])]).collect();
                let got = recvmmsg(fd, &mut rx, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                    .map_err(std::io::Error::from)?;
                Ok(got
                    .map(|m| (m.bytes, m.address.and_then(|a| to_std(&a))))
                    .collect::<Vec<_>>())
            })
            .await;
        let Ok(received) = received else { continue };
        let replies: Vec<(Vec<u8>, SocketAddr)> = received
            .iter()
            .enumerate()
            .filter_map(|(i, (n, src))| {
                let src = (*src)?;
                respond(&state, &bufs[i][..(*n).min(MAX_QUERY)], src).map(|out| (out, src))
            })
            .collect();
        if replies.is_empty() {
            continue;
        }
        let addrs: Vec<Option<SockaddrStorage>> =
            replies.iter().map(|(_, a)| Some(SockaddrStorage::from(*a))).collect();
        let slices: Vec<[IoSlice<'_>; 1]> = replies.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let sent = socket
            .try_io(Interest::WRITABLE, || {
                sendmmsg(fd, &mut tx, slices.iter(), &addrs, [], MsgFlags::MSG_DONTWAIT)
                    .map(|r| r.count())
                    .map_err(std::io::Error::from)
            })
            .unwrap_or(0);
        // Whatever the kernel did not take at once goes out one by one, waiting for room.
        for (out, dst) in replies.iter().skip(sent) {
            let _ = socket.send_to(out, dst).await;
        }
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// The datagram to send back for `packet`, or `None` to drop it (responses, unreadable headers).
pub fn respond(state: &DnsState, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            // A readable query header gets FORMERR; anything shorter, or a response, is dropped.
            if packet.len() < 12 || packet[2] & 0x80 != 0 {
                return None;
            }
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            state.metrics.query(11, 1, 0);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let zones = state.zones.load();
    let question = match req.queries.as_slice() {
        [q] => Some((LowerName::new(q.name()), q.query_type())),
        _ => None,
    };
    let r = reply(
        state,
        &zones,
        &req.metadata,
        question.as_ref().map(|(n, t)| (n, *t)),
        req.edns.as_ref(),
        src.ip(),
        false,
    );
    let limit = usize::from(r.edns.as_ref().map_or(512, |e| e.max_payload()));
    let mut msg = Message::new(r.metadata.id, MessageType::Response, r.metadata.op_code);
    msg.metadata = r.metadata;
    msg.queries = req.queries;
    msg.answers = r.answer.answers;
    msg.authorities = r.answer.authority;
    if let Some(e) = r.edns {
        msg.set_edns(e);
    }
    let bytes = msg.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // Too big for the client's buffer: the question alone with TC, so it retries over TCP.
    msg.answers.clear();
    msg.authorities.clear();
    msg.metadata.truncation = true;
    msg.to_vec().ok()
}
