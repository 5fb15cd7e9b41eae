//! Who may use an admin API (the gateway's, the DNS server's, control's): anyone on loopback;
//! from elsewhere, the read-only probes (`GET /healthz`, `/readyz`, `/metrics`, which kubelets and
//! Prometheus call and which reveal no secrets) and requests bearing the configured token. One
//! decision for every admin listener.

use std::net::IpAddr;

/// Paths anyone may read.
const OPEN: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What a refused request is told.
pub const REFUSAL: &str = "a bearer token is required off loopback";

/// [`allowed`] for an HTTP request (method, path and `Authorization` read from it).
pub fn permits<B>(peer: IpAddr, req: &http::Request<B>, token: Option<&str>) -> bool {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    allowed(peer, req.method().as_str(), req.uri().path(), token, auth)
}

/// Whether a request from `peer` for `method path` with `authorization` may proceed when the
/// listener's token is `token`.
pub fn allowed(peer: IpAddr, method: &str, path: &str, token: Option<&str>, authorization: Option<&str>) -> bool {
    if peer.is_loopback() || (method == "GET" && OPEN.contains(&path)) {
        return true;
    }
    let given = authorization.and_then(|v| v.strip_prefix("Bearer "));
    matches!((token, given), (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()))
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn loopback_probes_and_tokens() {
        let lo = "127.0.0.1".parse().unwrap();
        let far = "10.1.2.3".parse().unwrap();
        assert!(allowed(lo, "POST", "/reload", None, None));
        assert!(allowed(far, "GET", "/readyz", Some("t"), None));
        assert!(allowed(far, "GET", "/metrics", None, None));
        assert!(!allowed(far, "GET", "/config", Some("t"), None));
        assert!(
            !allowed(far, "POST", "/healthz", Some("t"), None),
            "only reads are open"
        );
        assert!(
            !allowed(far, "POST", "/reload", None, Some("Bearer t")),
            "no token configured: closed"
        );
        assert!(!allowed(far, "POST", "/reload", Some("t"), Some("Bearer x")));
        assert!(!allowed(far, "POST", "/reload", Some("t"), Some("t")));
        assert!(allowed(far, "POST", "/reload", Some("t"), Some("Bearer t")));
    }
}
