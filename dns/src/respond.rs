//! One DNS message in, its reply's bytes out, for both transports: parsed and encoded with
//! hickory-proto, answered by [`reply`]. UDP replies keep to the client's EDNS buffer (TC past
//! it); TCP replies may be as large as a message can be. Replies that depend on the question alone
//! are kept in a per-worker [`ReplyCache`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsCode;
use hickory_proto::rr::LowerName;
use meridian_config::schema::GslbPolicy;

use crate::metrics::protocol_index;
use crate::reply::reply;
use crate::state::DnsState;

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

/// A reply's bytes, and whether its query proved its source address (a valid DNS cookie).
pub struct Response {
    /// The encoded message.
    pub bytes: Vec<u8>,
    /// The query brought back a valid server cookie, so RRL lets this through.
    pub verified: bool,
}

impl Response {
    fn plain(bytes: Vec<u8>) -> Response {
        Response { bytes, verified: false }
    }
}

/// The message to send back for `packet` (over TCP when `tcp`), or `None` to drop it (responses,
/// unreadable headers).
pub fn respond(
    state: &DnsState,
    packet: &[u8],
    src: SocketAddr,
    tcp: bool,
    mut cache: Option<&mut ReplyCache>,
) -> Option<Response> {
    let zones = state.zones.load();
    // Entries hold for one zone set and one view of region health (GSLB answers follow it).
    let basis = (
        Arc::as_ptr(&zones) as usize,
        Arc::as_ptr(&state.health_now.load()) as usize,
    );
    if let Some(out) = cache.as_mut().and_then(|c| c.hit(state, basis, packet)) {
        return Some(Response::plain(out));
    }
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            // A readable query header gets FORMERR; anything shorter, or a response, is dropped.
            if packet.len() < 12 || packet[2] & 0x80 != 0 {
                return None;
            }
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            state.metrics.query(11, 1, protocol_index(tcp));
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok()
                .map(Response::plain);
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
        tcp,
    );
    let limit = if tcp {
        usize::from(u16::MAX)
    } else {
        usize::from(r.edns.as_ref().map_or(512, |e| e.max_payload()))
    };
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
    // A cookie answer carries a server cookie made for this client.
    let cookie = r
        .edns
        .as_ref()
        .is_some_and(|e| e.options().get(EdnsCode::Cookie).is_some());
    let client_independent = client_blind && !cname && !cookie && (gslb.is_some() || r.answer.regions.is_empty());
    let verified = r.verified;
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
    Some(Response { bytes, verified })
}
