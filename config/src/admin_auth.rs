//! Who may use an admin API (the gateway's, the DNS server's, control's): anyone on loopback;
//! from elsewhere, the read-only probes (`GET /healthz`, `/readyz`, `/metrics`, which kubelets and
//! Prometheus call and which reveal no secrets) and requests bearing the configured token. Beyond
//! the probes, the `Host` must be an IP address, `localhost` or one of the admin's `hosts`: a page
//! in the operator's browser that rebinds its own name to 127.0.0.1 (DNS rebinding) is refused
//! before the loopback exemption applies. One decision for every admin listener.

use std::net::IpAddr;

use crate::schema::Admin;

/// Paths anyone may read.
const OPEN: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What a refused request is told.
pub const REFUSAL: &str = "a bearer token is required off loopback";

/// Why an admin request was refused: its HTTP status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// 401 (no or a wrong token) or 403 (a foreign `Host`).
    pub status: u16,
    /// What the client is told.
    pub message: String,
}

/// Whether `req` from `peer` may use the admin API configured as `admin` (`None`: no admin
/// section, so no token and no extra host names).
pub fn check<B>(peer: IpAddr, req: &http::Request<B>, admin: Option<&Admin>) -> Result<(), Refused> {
    let (method, path) = (req.method().as_str(), req.uri().path());
    if method == "GET" && OPEN.contains(&path) {
        return Ok(());
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let hosts = admin.map_or(&[][..], |a| &a.hosts[..]);
    if let Some(h) = host.filter(|h| !host_allowed(h, hosts)) {
        return Err(Refused {
            status: 403,
            message: format!("Host `{h}` is not this admin API's (add it to the admin's hosts)"),
        });
    }
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = admin.and_then(|a| a.token.as_ref()).map(|t| t.expose());
    if allowed(peer, method, path, token, auth) {
        Ok(())
    } else {
        Err(Refused {
            status: 401,
            message: REFUSAL.into(),
        })
    }
}

/// Whether a `Host` value names this listener: an IP literal, `localhost`, or one of `hosts`
/// (case-insensitive), with or without a port.
pub fn host_allowed(host: &str, hosts: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|a| a.parse::<IpAddr>().is_ok()),
        None => host
            .rsplit_once(':')
            .map_or(host, |(n, port)| if port.parse::<u16>().is_ok() { n } else { host }),
    };
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a request from `peer` for `method path` with `authorization` may proceed when the
/// listener's token is `token` (the `Host` aside: see [`check`]).
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
    use super::*;

    #[test]
    fn foreign_host_names_are_refused_before_the_loopback_exemption() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let admin = Admin {
            hosts: vec!["gw-admin.internal".into()],
            ..Admin::default()
        };
        let req = |method: &str, path: &str, host: &str| {
            http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", host)
                .body(())
                .unwrap()
        };
        for ok in [
            "127.0.0.1:9901",
            "localhost:9901",
            "[::1]:9901",
            "10.0.0.7",
            "GW-ADMIN.internal:9901",
        ] {
            assert_eq!(check(lo, &req("POST", "/reload", ok), Some(&admin)), Ok(()), "{ok}");
        }
        let refused = check(lo, &req("POST", "/reload", "evil.example:9901"), Some(&admin)).unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(refused.message.contains("evil.example"));
        assert_eq!(
            check(lo, &req("GET", "/metrics", "evil.example"), Some(&admin)),
            Ok(()),
            "probes are open"
        );
        let far: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            check(far, &req("POST", "/reload", "10.0.0.7:9901"), None)
                .unwrap_err()
                .status,
            401
        );
    }

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
