//! What a request's headers become on the way to the backend, on either upstream leg: hop-by-hop
//! headers (RFC 9110 7.6.1) end at the gateway, the standard ones and any the client's
//! `Connection` header names, keeping `TE: trailers` (gRPC needs it end to end); and the forwarding
//! headers are appended to what the client sent, so backends see the whole chain and the scheme
//! the client used: X-Forwarded-For/-Proto (de facto) and Forwarded (RFC 7239).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use meridian_gateway_core::head::{field_line, RequestHead};

use opentelemetry_sdk::trace::Span;

use crate::http1::framing::lists;
use crate::telemetry::Telemetry;

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
    let Some(ip) = client else {
        return Forwarding {
            xff: None,
            forwarded: None,
            proto: proto(tls),
        };
    };
    if first_hop(head) {
        // The usual case (the gateway is the first proxy): a keep-alive client's requests come
        // from one address, so the values are made once per address and thread, not per request.
        if let Some((xff, fwd)) = FIRST_HOP.with(|c| c.borrow().get(&(ip, tls)).cloned()) {
            return Forwarding {
                xff: Some(xff),
                forwarded: Some(fwd),
                proto: proto(tls),
            };
        }
        let out = appended(None, None, ip, tls);
        if let (Some(xff), Some(fwd)) = (&out.xff, &out.forwarded) {
            FIRST_HOP.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= FIRST_HOP_CACHE {
                    c.clear();
                }
                c.insert((ip, tls), (xff.clone(), fwd.clone()));
            });
        }
        return out;
    }
    let prev = |name| head.get_str(name);
    appended(prev(&X_FORWARDED_FOR), prev(&http::header::FORWARDED), ip, tls)
}

/// The forwarding fields of a first-hop request from `client` over TLS (`tls`) or not, as HTTP/1
/// field lines: the same for every such request of a client connection, so made once for it.
pub(super) fn first_hop_lines(client: IpAddr, tls: bool) -> Box<[u8]> {
    let mut out = Vec::with_capacity(128);
    write_forwarding(&mut out, appended(None, None, client, tls));
    out.into_boxed_slice()
}

/// Whether the request comes straight from its client: it has no forwarding fields.
fn first_hop(head: &impl RequestHead) -> bool {
    !head.contains(&X_FORWARDED_FOR) && !head.contains(&http::header::FORWARDED)
}

/// The scheme the client used.
fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

fn proto(tls: bool) -> HeaderValue {
    HeaderValue::from_static(scheme(tls))
}

/// The forwarding fields with this hop (`ip`, over TLS or not) appended to the values the request
/// came with.
fn appended(prev_xff: Option<&str>, prev_forwarded: Option<&str>, ip: IpAddr, tls: bool) -> Forwarding {
    let proto = proto(tls);
    let ip_text = ip.to_string();
    let append = |prev: Option<&str>, this: &str| {
        let mut v = String::with_capacity(64);
        if let Some(prev) = prev {
            v.push_str(prev);
            v.push_str(", ");
        }
        v.push_str(this);
        HeaderValue::try_from(v).ok()
    };
    let mut this = String::with_capacity(48);
    let p = scheme(tls);
    let _ = match ip {
        IpAddr::V4(_) => write!(this, "for={ip_text};proto={p}"),
        IpAddr::V6(_) => write!(this, "for=\"[{ip_text}]\";proto={p}"),
    };
    Forwarding {
        xff: append(prev_xff, &ip_text),
        forwarded: append(prev_forwarded, &this),
        proto,
    }
}

/// Appends the forwarding fields as HTTP/1 field lines.
fn write_forwarding(out: &mut Vec<u8>, f: Forwarding) {
    if let Some(v) = f.xff {
        field_line(out, b"x-forwarded-for", v.as_bytes());
    }
    if let Some(v) = f.forwarded {
        field_line(out, b"forwarded", v.as_bytes());
    }
    field_line(out, b"x-forwarded-proto", f.proto.as_bytes());
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
    /// bytes; fields named in `replaced` are left for the caller to write. `first_hop_at`: the
    /// client connection's forwarding lines for a request without forwarding fields
    /// ([`first_hop_lines`]), when it keeps them.
    pub fn start(
        head: &impl RequestHead,
        (client, tls, first_hop_at): (Option<IpAddr>, bool, Option<&[u8]>),
        body: usize,
        replaced: &[&str],
    ) -> Self {
        let hop = HopByHop::of(head);
        let mut r = UpstreamHead {
            out: Vec::with_capacity(512),
        };
        let (mut host, mut length, mut forwarded) = (false, false, false);
        head.write_http1(&mut r.out, |name, value| {
            host |= name == b"host";
            length |= name == b"content-length";
            let forwarding = forwarding_field(name);
            forwarded |= forwarding;
            !(hop.drops(name, value)
                || name == b"content-length"
                || forwarding
                || replaced.iter().any(|r| r.as_bytes() == name))
        });
        if !host {
            if let Some(a) = head.authority() {
                r.field(b"host", a.as_bytes());
            }
        }
        if body > 0 || length {
            r.field(b"content-length", itoa::Buffer::new().format(body).as_bytes());
        }
        match first_hop_at.filter(|_| !forwarded || first_hop(head)) {
            Some(lines) => r.out.extend_from_slice(lines),
            None => write_forwarding(&mut r.out, forwarding(head, client, tls)),
        }
        r
    }

    /// Adds a field.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        field_line(&mut self.out, name, value);
    }

    /// The head, ended by its blank line.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"\r\n");
        self.out
    }
}

/// Whether `name` (lowercase) is one of the forwarding fields, which each hop writes anew.
fn forwarding_field(name: &[u8]) -> bool {
    name == X_FORWARDED_FOR.as_str().as_bytes() || name == b"forwarded" || name == X_FORWARDED_PROTO.as_str().as_bytes()
}

/// Fields HTTP/2 carries otherwise: `Host` is the authority, and the stream frames the body.
const H2_OWN: [&[u8]; 2] = [b"host", b"transfer-encoding"];

/// The request our own HTTP/2 leg sends ([`super::direct_h2`]): the client's method and target,
/// with the authority it named (else the backend's address, `backend`); the client's fields less
/// the hop-by-hop ones and [`H2_OWN`]; the forwarding fields for `client` over TLS (`tls`) or not;
/// and with `trace` the try's trace context.
pub(super) fn h2_request(
    head: &impl RequestHead,
    (client, tls): (Option<IpAddr>, bool),
    backend: SocketAddr,
    trace: Option<(&Arc<Telemetry>, &Span)>,
) -> Result<http::Request<()>, http::Error> {
    let authority = head.authority().map_or_else(|| backend.to_string(), str::to_string);
    let target = match head.path_and_query() {
        "" => "/",
        t => t,
    };
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(target)
        .build()?;
    let mut req = http::Request::builder()
        .method(head.method().clone())
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(())?;
    let h = req.headers_mut();
    let hop = HopByHop::of(head);
    for (name, value) in head.fields() {
        if hop.drops(name, value) || H2_OWN.contains(&name) || forwarding_field(name) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    let f = forwarding(head, client, tls);
    if let Some(v) = f.xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    if let Some(v) = f.forwarded {
        h.insert(http::header::FORWARDED, v);
    }
    h.insert(X_FORWARDED_PROTO, f.proto);
    if let Some((tel, span)) = trace {
        tel.inject_fields(span, |name, value| {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                h.insert(n, v);
            }
        });
    }
    Ok(req)
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
        let wire = UpstreamHead::start(&parts, (client, tls, None), 0, &[]).finish();
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
