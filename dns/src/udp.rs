//! The UDP fast path: each worker owns a `SO_REUSEPORT` socket and receives, answers and sends in
//! one task, with no per-packet task, channel or thread hop (hickory-server's UDP path costs three
//! of those per query; see benches/README.md). Parsing and encoding are hickory-proto's; the answer
//! is [`reply`](crate::reply::reply), shared with the TCP path, which stays on hickory-server.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::LowerName;
use tokio::net::UdpSocket;

use crate::reply::reply;
use crate::state::DnsState;

/// Binds one of several sockets sharing `addr` (the kernel spreads datagrams across them).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Serves one socket until the task is aborted.
pub async fn serve(socket: UdpSocket, state: Arc<DnsState>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, src)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(out) = respond(&state, &buf[..n], src) {
            let _ = socket.send_to(&out, src).await;
        }
    }
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
