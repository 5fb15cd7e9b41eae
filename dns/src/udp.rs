//! The UDP fast path: each worker thread owns a `SO_REUSEPORT` socket and receives, answers and sends
//! in one blocking loop, with no event loop and no per-packet task, channel or thread hop
//! (hickory-server's UDP path costs three of those per query; see benches/README.md). Parsing and encoding are hickory-proto's; the answer
//! is [`reply`](crate::reply::reply), shared with the TCP path, which stays on hickory-server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::LowerName;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::reply::reply;
use crate::rrl::{slipped, Verdict};
use crate::state::DnsState;
use meridian_config::schema::GslbPolicy;

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
            let Some(out) = respond(state, query, src, Some(&mut cache)) else {
                continue;
            };
            match zones
                .rrl
                .as_ref()
                .map_or(Verdict::Send, |r| r.judge(src.ip(), query, &out, now))
            {
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

/// Encoded replies to questions whose answer depends on the question alone (static records,
/// negative answers, REFUSED: everything but GSLB names), keyed by the query's bytes after its ID
/// and valid for one zone set. A hit costs a hash lookup and a copy instead of a parse, a lookup
/// and an encode; NSD and Knot precompile answers for the same reason. One per worker, no locks.
#[derive(Default)]
pub struct ReplyCache {
    /// The zone set and region health the entries were computed from.
    basis: (usize, usize),
    map: HashMap<Box<[u8]>, Cached>,
}

struct Cached {
    bytes: Vec<u8>,
    qtype: usize,
    rcode: usize,
    /// GSLB answer counters to count on each hit (the regions that answered).
    answered: Vec<prometheus::IntCounter>,
}

/// Entries kept at most; past it the cache starts over (random names cannot grow it unbounded).
const CACHE_ENTRIES: usize = 16_384;

impl ReplyCache {
    fn hit(&mut self, state: &DnsState, basis: (usize, usize), packet: &[u8]) -> Option<Vec<u8>> {
        if self.basis != basis {
            self.map.clear();
            self.basis = basis;
            return None;
        }
        let c = self.map.get(packet.get(2..)?)?;
        state.metrics.query(c.qtype, c.rcode, 0);
        for counter in &c.answered {
            counter.inc();
        }
        let mut out = c.bytes.clone();
        out[..2].copy_from_slice(&packet[..2]);
        Some(out)
    }

    fn keep(&mut self, packet: &[u8], bytes: &[u8], qtype: usize, rcode: usize, answered: Vec<prometheus::IntCounter>) {
        if self.map.len() >= CACHE_ENTRIES {
            self.map.clear();
        }
        let cached = Cached {
            bytes: bytes.to_vec(),
            qtype,
            rcode,
            answered,
        };
        self.map.insert(packet[2..].into(), cached);
    }
}

/// The datagram to send back for `packet`, or `None` to drop it (responses, unreadable headers).
pub fn respond(
    state: &DnsState,
    packet: &[u8],
    src: SocketAddr,
    mut cache: Option<&mut ReplyCache>,
) -> Option<Vec<u8>> {
    let zones = state.zones.load();
    // Entries hold for one zone set and one view of region health (GSLB answers follow it).
    let basis = (
        Arc::as_ptr(&zones) as usize,
        Arc::as_ptr(&state.health_now.load()) as usize,
    );
    if let Some(out) = cache.as_mut().and_then(|c| c.hit(state, basis, packet)) {
        return Some(out);
    }
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
    // GSLB answers by `failover` and `all-healthy` depend on region health alone (part of the
    // cache's basis); `nearest` and `weighted` look at the client, so they are built per query.
    let gslb = question
        .as_ref()
        .and_then(|(n, _)| zones.zone_of(n).and_then(|z| z.gslb.get(n)));
    let client_blind = gslb.is_none_or(|g| matches!(g.policy.kind, GslbPolicy::Failover | GslbPolicy::AllHealthy));
    // A CNAME may lead into a GSLB name of any policy; those answers are built per query too.
    let cname = r
        .answer
        .answers
        .iter()
        .any(|rec| rec.record_type() == hickory_proto::rr::RecordType::CNAME);
    let answered: Vec<prometheus::IntCounter> = match gslb {
        Some(g) => r
            .answer
            .regions
            .iter()
            .filter_map(|i| g.answer_counters.get(*i).cloned())
            .collect(),
        None => Vec::new(),
    };
    let client_independent = client_blind && !cname && (gslb.is_some() || r.answer.regions.is_empty());
    let mut msg = Message::new(r.metadata.id, MessageType::Response, r.metadata.op_code);
    msg.metadata = r.metadata;
    msg.queries = req.queries;
    msg.answers = r.answer.answers;
    msg.authorities = r.answer.authority;
    if let Some(e) = r.edns {
        msg.set_edns(e);
    }
    let qtype = question.as_ref().map_or(11, |(_, t)| crate::metrics::qtype_index(*t));
    let rcode = crate::metrics::rcode_index(msg.metadata.response_code);
    let mut bytes = msg.to_vec().ok()?;
    if bytes.len() > limit {
        // Too big for the client's buffer: the question alone with TC, so it retries over TCP.
        msg.answers.clear();
        msg.authorities.clear();
        msg.metadata.truncation = true;
        bytes = msg.to_vec().ok()?;
    }
    if let Some(c) = cache.filter(|_| client_independent) {
        c.keep(packet, &bytes, qtype, rcode, answered);
    }
    Some(bytes)
}
