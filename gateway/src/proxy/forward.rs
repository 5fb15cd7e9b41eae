//! What a request's headers become on the way to the backend, on either upstream leg: hop-by-hop
//! headers (RFC 9110 7.6.1) end at the gateway, the standard ones and any the client's
//! `Connection` header names, keeping `TE: trailers` (gRPC needs it end to end); and the forwarding
//! headers are appended to what the client sent, so backends see the whole chain and the scheme
//! the client used: X-Forwarded-For/-Proto (de facto) and Forwarded (RFC 7239).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use meridian_gateway_core::head::RequestHead;

use crate::http1::framing::lists;

/// The standard hop-by-hop headers, besides those `Connection` names and a `TE` other than
/// `trailers`.
const HOP: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
    b"upgrade",
    b"trailer",
];

/// Which of a request's fields end at the gateway.
pub(super) struct HopByHop<'h, H> {
    head: &'h H,
    /// Whether the request has a `Connection` field (which may name more).
    connection: bool,
}

impl<'h, H: RequestHead> HopByHop<'h, H> {
    /// The hop-by-hop fields of `head`.
    pub fn of(head: &'h H) -> Self {
        let connection = head.contains(&http::header::CONNECTION);
        HopByHop { head, connection }
    }

    /// Whether the field `name` (lowercase) with `value` stops here.
    pub fn drops(&self, name: &[u8], value: &[u8]) -> bool {
        if name == b"te" {
            return value != b"trailers";
        }
        HOP.contains(&name)
            || (self.connection
                && self
                    .head
                    .get_all(&http::header::CONNECTION)
                    .any(|named| lists(named, name)))
    }
}

/// The forwarding headers' new values.
pub(super) struct Forwarding {
    /// `X-Forwarded-For`, the client appended (absent without a client address).
    pub xff: Option<HeaderValue>,
    /// `Forwarded`, this hop appended (likewise).
    pub forwarded: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    pub proto: HeaderValue,
}

/// The forwarding headers for a request from `client` over TLS (`tls`) or not.
pub(super) fn forwarding(head: &impl RequestHead, client: Option<IpAddr>, tls: bool) -> Forwarding {
    let proto = if tls { "https" } else { "http" };
    let mut out = Forwarding {
        xff: None,
        forwarded: None,
        proto: HeaderValue::from_static(proto),
    };
    let Some(ip) = client else { return out };
    let first_hop = !head.contains(&X_FORWARDED_FOR) && !head.contains(&http::header::FORWARDED);
    if first_hop {
        // The usual case (the gateway is the first proxy): a keep-alive client's requests come
        // from one address, so the values are made once per address and thread, not per request.
        if let Some((xff, fwd)) = FIRST_HOP.with(|c| c.borrow().get(&(ip, tls)).cloned()) {
            out.xff = Some(xff);
            out.forwarded = Some(fwd);
            return out;
        }
    }
    let ip_text = ip.to_string();
    let appended = |name: &HeaderName, this: &str| {
        let mut v = String::with_capacity(64);
        if let Some(prev) = head.get_str(name) {
            v.push_str(prev);
            v.push_str(", ");
        }
        v.push_str(this);
        HeaderValue::try_from(v).ok()
    };
    out.xff = appended(&X_FORWARDED_FOR, &ip_text);
    let mut this = String::with_capacity(48);
    let _ = match ip {
        IpAddr::V4(_) => write!(this, "for={ip_text};proto={proto}"),
        IpAddr::V6(_) => write!(this, "for=\"[{ip_text}]\";proto={proto}"),
    };
    out.forwarded = appended(&http::header::FORWARDED, &this);
    if let (true, Some(xff), Some(fwd)) = (first_hop, &out.xff, &out.forwarded) {
        FIRST_HOP.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= FIRST_HOP_CACHE {
                c.clear();
            }
            c.insert((ip, tls), (xff.clone(), fwd.clone()));
        });
    }
    out
}

/// Client addresses whose first-hop forwarding headers a thread keeps, at most (then it starts
/// over: a bound, not an eviction policy; clients reuse connections, so hits dominate anyway).
const FIRST_HOP_CACHE: usize = 1024;

thread_local! {
    /// foldhash (seeded per process): a quarter of SipHash's cost for a client address.
    static FIRST_HOP: std::cell::RefCell<foldhash::HashMap<(IpAddr, bool), (HeaderValue, HeaderValue)>> =
        std::cell::RefCell::new(foldhash::HashMap::default());
}

/// The request head our own upstream leg sends ([`super::direct`]): the request line in origin
/// form, the client's fields less the hop-by-hop ones, `Host` (from an HTTP/2 request's authority
/// when it has no field), the body's length, and the forwarding fields; the caller may add fields
/// (the try's trace context) before [`UpstreamHead::finish`].
pub(super) struct UpstreamHead {
    out: Vec<u8>,
}

impl UpstreamHead {
    /// Starts the head of `head` from `client` over TLS (`tls`) or not, with a body of `body`
    /// bytes; fields named in `replaced` are left for the caller to write.
    pub fn start(head: &impl RequestHead, client: Option<IpAddr>, tls: bool, body: usize, replaced: &[&str]) -> Self {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(head.method().as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(head.path_and_query().as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let hop = HopByHop::of(head);
        let f = forwarding(head, client, tls);
        let mut r = UpstreamHead { out };
        let (mut host, mut length) = (false, false);
        for (name, value) in head.fields() {
            host |= name == b"host";
            length |= name == b"content-length";
            if hop.drops(name, value)
                || name == b"content-length"
                || name == X_FORWARDED_FOR.as_str().as_bytes()
                || name == b"forwarded"
                || name == X_FORWARDED_PROTO.as_str().as_bytes()
                || replaced.iter().any(|r| r.as_bytes() == name)
            {
                continue;
            }
            r.field(name, value);
        }
        if !host {
            if let Some(a) = head.authority() {
                r.field(b"host", a.as_bytes());
            }
        }
        if body > 0 || length {
            r.field(b"content-length", itoa::Buffer::new().format(body).as_bytes());
        }
        if let Some(v) = f.xff {
            r.field(b"x-forwarded-for", v.as_bytes());
        }
        if let Some(v) = f.forwarded {
            r.field(b"forwarded", v.as_bytes());
        }
        r.field(b"x-forwarded-proto", f.proto.as_bytes());
        r
    }

    /// Adds a field.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The head, ended by its blank line.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"\r\n");
        self.out
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    /// What the backend receives for a request with `h` from `client`: the written head parsed
    /// back.
    fn apply(h: &mut HeaderMap, client: Option<IpAddr>, tls: bool) {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.headers = std::mem::take(h);
        let wire = UpstreamHead::start(&parts, client, tls, 0, &[]).finish();
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut fields);
        assert!(req.parse(&wire).unwrap().is_complete());
        assert_eq!((req.method, req.path), (Some("GET"), Some("/")));
        *h = req
            .headers
            .iter()
            .map(|f| {
                (
                    HeaderName::from_bytes(f.name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(f.value).unwrap(),
                )
            })
            .collect();
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_end_here_and_the_chain_grows() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("x-forwarded-for", "192.0.2.7"),
            ("forwarded", "for=192.0.2.7;proto=https"),
            ("content-type", "application/json"),
        ]);
        apply(&mut h, Some("127.0.0.1".parse().unwrap()), false);
        for gone in ["connection", "x-hop", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-forwarded-for"], "192.0.2.7, 127.0.0.1");
        assert_eq!(h["forwarded"], "for=192.0.2.7;proto=https, for=127.0.0.1;proto=http");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["content-type"], "application/json");

        let mut h = map(&[("te", "trailers")]);
        apply(&mut h, Some("::1".parse().unwrap()), true);
        assert_eq!(h["te"], "trailers", "gRPC's TE stays");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
        assert_eq!(h["x-forwarded-proto"], "https");
        // The cached first-hop values are the same as made fresh, per address and scheme.
        for _ in 0..2 {
            let mut h = HeaderMap::new();
            apply(&mut h, Some("::1".parse().unwrap()), false);
            assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
            assert_eq!(h["x-forwarded-for"], "::1");
        }
    }
}
