//! What a request's headers become on the way to the backend, on either upstream leg: hop-by-hop
//! headers (RFC 9110 7.6.1) end at the gateway, the standard ones and any the client's
//! `Connection` header names, keeping `TE: trailers` (gRPC needs it end to end); and the forwarding
//! headers are appended to what the client sent, so backends see the whole chain and the scheme
//! the client used: X-Forwarded-For/-Proto (de facto) and Forwarded (RFC 7239).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The standard hop-by-hop headers, besides those `Connection` names and a `TE` other than
/// `trailers`.
const HOP: [HeaderName; 6] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHORIZATION,
    http::header::UPGRADE,
    http::header::TRAILER,
];

/// The headers to remove from a request before it goes upstream: one pass over the request's
/// headers (cheaper than a lookup per hop-by-hop name), then the names `Connection` lists.
pub(super) fn hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    let mut connection = None;
    for (name, value) in headers {
        if name == http::header::TE {
            if value.as_bytes() != b"trailers" {
                out.push(http::header::TE);
            }
        } else if HOP.contains(name) && !out.contains(name) {
            if name == http::header::CONNECTION {
                connection = value.to_str().ok();
            }
            out.push(name.clone());
        }
    }
    if let Some(named) = connection {
        out.extend(
            named
                .split(',')
                .filter_map(|s| HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes()).ok()),
        );
    }
    out
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
pub(super) fn forwarding(headers: &HeaderMap, client: Option<IpAddr>, tls: bool) -> Forwarding {
    let proto = if tls { "https" } else { "http" };
    let mut out = Forwarding {
        xff: None,
        forwarded: None,
        proto: HeaderValue::from_static(proto),
    };
    let Some(ip) = client else { return out };
    let first_hop = !headers.contains_key("x-forwarded-for") && !headers.contains_key(http::header::FORWARDED);
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
    let appended = |name: &str, this: &str| {
        let mut v = String::with_capacity(64);
        if let Some(prev) = headers.get(name).and_then(|v| v.to_str().ok()) {
            v.push_str(prev);
            v.push_str(", ");
        }
        v.push_str(this);
        HeaderValue::try_from(v).ok()
    };
    out.xff = appended("x-forwarded-for", &ip_text);
    let mut this = String::with_capacity(48);
    let _ = match ip {
        IpAddr::V4(_) => write!(this, "for={ip_text};proto={proto}"),
        IpAddr::V6(_) => write!(this, "for=\"[{ip_text}]\";proto={proto}"),
    };
    out.forwarded = appended("forwarded", &this);
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
    static FIRST_HOP: std::cell::RefCell<std::collections::HashMap<(IpAddr, bool), (HeaderValue, HeaderValue)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Applies both to a header map (the direct leg's request, which keeps no header case).
pub(super) fn apply(headers: &mut HeaderMap, client: Option<IpAddr>, tls: bool) {
    for name in hop_by_hop(headers) {
        headers.remove(name);
    }
    let f = forwarding(headers, client, tls);
    if let Some(v) = f.xff {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Some(v) = f.forwarded {
        headers.insert(http::header::FORWARDED, v);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), f.proto);
}

#[cfg(test)]
mod tests {
    use super::*;

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
