//! Response-rate limiting of UDP answers (NSD's and Knot's RRL): an authoritative server answers
//! anyone at full size, so a spoofed flood would make it a reflector. Each answer is keyed by the
//! client's prefix (`/24` IPv4, `/56` IPv6 by default) and the answer itself (query name, type and
//! response code), a token bucket per key refilled at `responses_per_second`; past it a response is
//! dropped, except every `slip`-th, which goes out as the bare question with TC set, so a real
//! resolver behind the prefix retries over TCP (never limited) while a spoofed victim gets a
//! fraction of the flood at a fraction of its size. Whitelisted prefixes are never limited.
//!
//! No I/O: the UDP path asks [`Rrl::judge`] about each reply it built and sends what it says.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use meridian_clock::Nanos;
use meridian_config::schema::ResponseRateLimit;
use meridian_ratelimit::TokenLimits;

/// What to do with a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Send the question alone with TC.
    Slip,
    /// Send nothing.
    Drop,
}

/// The limiter of one zone set.
#[derive(Debug)]
pub struct Rrl {
    buckets: TokenLimits,
    slip: u64,
    v4: u8,
    v6: u8,
    whitelist: Vec<IpNet>,
    limited: AtomicU64,
}

impl Rrl {
    /// The limiter `cfg` asks for; `None` when it is off.
    pub fn new(cfg: &ResponseRateLimit) -> Option<Rrl> {
        let rate = u64::from(cfg.responses_per_second.max(1));
        cfg.enabled.then(|| Rrl {
            buckets: TokenLimits::new(rate * 60, rate),
            slip: u64::from(cfg.slip),
            v4: cfg.ipv4_prefix.min(32),
            v6: cfg.ipv6_prefix.min(128),
            whitelist: cfg.whitelist.clone(),
            limited: AtomicU64::new(0),
        })
    }

    /// What to do with `reply` to `query` from `client` at `now`.
    pub fn judge(&self, client: IpAddr, query: &[u8], reply: &[u8], now: Nanos) -> Verdict {
        if self.whitelist.iter().any(|n| n.contains(&client)) {
            return Verdict::Send;
        }
        if self.buckets.take(self.key(client, query, reply), now) {
            return Verdict::Send;
        }
        let n = self.limited.fetch_add(1, Ordering::Relaxed) + 1;
        if self.slip > 0 && n.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// The bucket of a client's prefix and an answer: name (as sent, case folded), type, rcode.
    fn key(&self, client: IpAddr, query: &[u8], reply: &[u8]) -> u64 {
        let prefix = match client {
            IpAddr::V4(a) => IpNet::new(IpAddr::V4(a), self.v4),
            IpAddr::V6(a) => IpNet::new(IpAddr::V6(a), self.v6),
        }
        .map(|n| n.trunc())
        .ok();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        match prefix {
            Some(IpNet::V4(n)) => h.update(&n.network().octets()),
            Some(IpNet::V6(n)) => h.update(&n.network().octets()),
            None => {}
        }
        if let Some(q) = question(query) {
            h.update(&q.to_ascii_lowercase());
        }
        h.update(&[reply.get(3).map_or(0, |b| b & 0x0f)]);
        h.digest()
    }
}

/// The question section of a query (name, type, class), when it has exactly one.
pub fn question(query: &[u8]) -> Option<&[u8]> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None; // no compression in a question
        }
        at += 1 + len;
    }
    query.get(12..at + 4)
}

/// The slipped form of `reply`: its header with TC set and no records, and the question.
pub fn slipped(query: &[u8], reply: &[u8]) -> Option<Vec<u8>> {
    let q = question(query)?;
    let mut out = Vec::with_capacity(12 + q.len());
    out.extend_from_slice(reply.get(..12)?);
    out[2] |= 0x02; // TC
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(q);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn rrl(rate: u32, slip: u32, whitelist: &[&str]) -> Rrl {
        Rrl::new(&ResponseRateLimit {
            responses_per_second: rate,
            slip,
            whitelist: whitelist.iter().map(|n| n.parse().unwrap()).collect(),
            ..ResponseRateLimit::default()
        })
        .unwrap()
    }

    #[test]
    fn a_flood_from_one_prefix_is_limited_with_every_nth_slipped() {
        let r = rrl(10, 2, &[]);
        let q = query("api.example.com.");
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let verdicts: Vec<_> = (0..30).map(|_| r.judge(a, &q, &q, 0)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Send).count(), 10);
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Slip).count(),
            10,
            "every 2nd of 20"
        );
        // The same /24, another host: the same bucket. Another prefix, or another name: their own.
        assert_ne!(r.judge("192.0.2.200".parse().unwrap(), &q, &q, 0), Verdict::Send);
        assert_eq!(r.judge("198.51.100.1".parse().unwrap(), &q, &q, 0), Verdict::Send);
        assert_eq!(r.judge(a, &query("other.example.com."), &q, 0), Verdict::Send);
        // A second later the bucket has refilled.
        assert_eq!(r.judge(a, &q, &q, 1_000_000_000), Verdict::Send);
    }

    #[test]
    fn whitelisted_and_off_are_never_limited_and_slip_zero_drops() {
        let r = rrl(1, 0, &["192.0.2.0/24"]);
        let q = query("api.example.com.");
        assert!((0..50).all(|_| r.judge("192.0.2.9".parse().unwrap(), &q, &q, 0) == Verdict::Send));
        let far: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(r.judge(far, &q, &q, 0), Verdict::Send);
        assert!((0..20).all(|_| r.judge(far, &q, &q, 0) == Verdict::Drop));
        let off = ResponseRateLimit {
            enabled: false,
            ..ResponseRateLimit::default()
        };
        assert!(Rrl::new(&off).is_none());
    }

    #[test]
    fn a_slipped_reply_is_the_question_with_tc() {
        let q = query("api.example.com.");
        let mut reply = Message::from_vec(&q).unwrap();
        reply.metadata.message_type = hickory_proto::op::MessageType::Response;
        let s = slipped(&q, &reply.to_vec().unwrap()).unwrap();
        let m = Message::from_vec(&s).unwrap();
        assert!(m.metadata.truncation);
        assert_eq!((m.queries.len(), m.answers.len()), (1, 0));
        assert_eq!(m.queries[0].name().to_ascii(), "api.example.com.");
        assert!(question(&q[..14]).is_none(), "a cut query has no question");
    }
}
