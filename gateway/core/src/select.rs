//! Version selection: explicit pin > header-match rules > weighted split, sticky by key.
//!
//! A split uses weighted rendezvous hashing: each version scores `-ln(u) / weight` where `u` is a
//! stable hash of (key, version) mapped to (0, 1], and the lowest score wins. Each version's share is
//! its weight, the same key always lands on the same version while the weights hold, and changing a
//! weight moves only keys into or out of the versions whose weight changed (the minimum movement),
//! for any number of versions. The hash (xxh3) is stable across processes, so every gateway replica
//! agrees.

use http::HeaderName;
use meridian_config::schema::PriorityClass;
use meridian_config::snapshot::{ModelEntry, RouteTarget, Sticky, VersionId};

use crate::head::RequestHead;
use crate::trace::{KeySource, PinSource, SplitScore, Trace};

/// Header that pins a version.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-model-version");

/// The outcome of version selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Version that serves the request.
    pub version: VersionId,
    /// Index of the rule that chose it; `None` for a pin.
    pub route: Option<usize>,
    /// Version that receives a mirrored copy, if this request is mirrored.
    pub shadow: Option<VersionId>,
    /// Priority class the rule gives requests that name none.
    pub priority: Option<PriorityClass>,
}

/// Why no version could be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectError {
    /// The pinned version does not exist (404).
    UnknownVersion(String),
    /// No rule matches and the model has several versions (404).
    NoRoute,
}

/// Selects the version of `model` for a request.
///
/// `path_version` is the version named in the path; it wins over the `x-model-version` header.
/// `client` is the fallback sticky key (the client address). `shadow_draw` is a uniform number in
/// [0, 1) that decides mirroring; callers pass a random one, tests a fixed one.
pub fn select(
    model: &ModelEntry,
    path_version: Option<&str>,
    headers: &impl RequestHead,
    client: &[u8],
    shadow_draw: f64,
) -> Result<Selection, SelectError> {
    select_traced(model, path_version, headers, client, shadow_draw, &mut ())
}

/// [`select`], reporting each step to `trace`.
pub fn select_traced(
    model: &ModelEntry,
    path_version: Option<&str>,
    headers: &impl RequestHead,
    client: &[u8],
    shadow_draw: f64,
    trace: &mut impl Trace,
) -> Result<Selection, SelectError> {
    let pin = match path_version {
        Some(v) => Some((v, PinSource::Path)),
        None => headers.get_str(&VERSION_HEADER).map(|v| (v, PinSource::Header)),
    };
    if let Some((pin, source)) = pin {
        let found = model.version(pin);
        trace.pin(pin, source, found.is_some());
        return match found {
            Some(version) => Ok(Selection {
                version,
                route: None,
                shadow: None,
                priority: None,
            }),
            None => Err(SelectError::UnknownVersion(pin.to_string())),
        };
    }
    for (i, route) in model.routes.iter().enumerate() {
        let matched = route.headers.iter().enumerate().all(|(c, cond)| {
            let ok = headers.get_all(&cond.name).any(|v| cond.test.test(v));
            trace.condition(i, c, ok);
            ok
        });
        trace.rule(i, matched);
        if !matched {
            continue;
        }
        let version = match &route.target {
            RouteTarget::Version(v) => *v,
            RouteTarget::Split(weights) => {
                let (source, key) = match sticky_key(route.sticky.as_ref(), headers) {
                    Some(key) => (key.0, key.1),
                    None => (KeySource::Client, client),
                };
                trace.sticky(i, source, key);
                rendezvous_traced(model, weights, key, trace)
            }
        };
        let shadow = route
            .shadow
            .and_then(|(v, pct)| (shadow_draw * 100.0 < pct && v != version).then_some(v));
        return Ok(Selection {
            version,
            route: Some(i),
            shadow,
            priority: route.priority,
        });
    }
    if model.versions.len() == 1 {
        return Ok(Selection {
            version: 0,
            route: None,
            shadow: None,
            priority: None,
        });
    }
    Err(SelectError::NoRoute)
}

/// The sticky key's bytes from a header or a cookie, if the request carries it.
fn sticky_key<'h>(key: Option<&'h Sticky>, headers: &'h impl RequestHead) -> Option<(KeySource, &'h [u8])> {
    match key? {
        Sticky::Header(name) => headers
            .get(name)
            .map(|v| (KeySource::Header, v))
            .filter(|(_, v)| !v.is_empty()),
        Sticky::Cookie(name) => headers.get_all(&http::header::COOKIE).find_map(|h| {
            h.split(|b| *b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
                (k == name.as_bytes()).then_some((KeySource::Cookie, &v[1..]))
            })
        }),
    }
}

/// Weighted rendezvous choice among `weights` for `key`.
pub fn rendezvous(model: &ModelEntry, weights: &[(VersionId, u32)], key: &[u8]) -> VersionId {
    rendezvous_traced(model, weights, key, &mut ())
}

/// [`rendezvous`], reporting each version's score to `trace`.
fn rendezvous_traced(
    model: &ModelEntry,
    weights: &[(VersionId, u32)],
    key: &[u8],
    trace: &mut impl Trace,
) -> VersionId {
    let mut best = (f64::INFINITY, weights.first().map_or(0, |w| w.0));
    for &(v, w) in weights {
        if w == 0 {
            continue;
        }
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, model.versions[v].name_hash);
        // Top 53 bits to (0, 1]: never 0, so ln is finite.
        let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let score = -u.ln() / f64::from(w);
        trace.score(SplitScore {
            version: v,
            weight: w,
            hash: u,
            score,
        });
        if score < best.0 {
            best = (score, v);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Recording;
    use meridian_config::{load_str, Snapshot};
    use std::path::Path;

    const CFG: &str = "
regions: [{ name: r, zones: [z] }]
models:
  - name: m
    versions:
      - { name: v1, endpoints: [{ address: 127.0.0.1:1, region: r, zone: z }] }
      - { name: v2, endpoints: [{ address: 127.0.0.1:2, region: r, zone: z }] }
      - { name: v3, endpoints: [{ address: 127.0.0.1:3, region: r, zone: z }] }
    routes:
      - match: { headers: [{ name: x-user-segment, exact: premium }] }
        version: v2
      - match: { headers: [{ name: x-beta, prefix: yes }, { name: user-agent, regex: 'curl/.*' }] }
        version: v3
      - split: [{ version: v1, weight: 90 }, { version: v2, weight: 10 }]
        sticky: { cookie: uid }
        shadow: { version: v3, percent: 25 }
";

    fn snapshot(text: &str) -> Snapshot {
        Snapshot::compile(load_str(text, "t", Path::new(".")).unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> http::request::Parts {
        let (mut h, ()) = http::Request::new(()).into_parts();
        for (k, v) in pairs {
            h.headers
                .append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn pins_win_over_rules_and_path_wins_over_header() {
        let s = snapshot(CFG);
        let m = &s.models[0];
        let h = headers(&[("x-model-version", "v3"), ("x-user-segment", "premium")]);
        assert_eq!(select(m, None, &h, b"c", 0.9).unwrap().version, 2);
        assert_eq!(select(m, Some("v1"), &h, b"c", 0.9).unwrap().version, 0);
        assert_eq!(
            select(m, Some("v9"), &h, b"c", 0.9),
            Err(SelectError::UnknownVersion("v9".into()))
        );
    }

    #[test]
    fn header_rules_exact_prefix_regex() {
        let s = snapshot(CFG);
        let m = &s.models[0];
        let sel = select(m, None, &headers(&[("x-user-segment", "premium")]), b"c", 0.9).unwrap();
        assert_eq!((sel.version, sel.route), (1, Some(0)));
        let both = headers(&[("x-beta", "yes-please"), ("user-agent", "curl/8.0")]);
        assert_eq!(select(m, None, &both, b"c", 0.9).unwrap().version, 2);
        let half = headers(&[("x-beta", "yes-please"), ("user-agent", "Mozilla curl/8.0")]);
        assert_eq!(
            select(m, None, &half, b"c", 0.9).unwrap().route,
            Some(2),
            "regex is anchored"
        );
    }

    #[test]
    fn split_share_and_stickiness() {
        let s = snapshot(CFG);
        let m = &s.models[0];
        let n = 20_000;
        let mut v2 = 0;
        for i in 0..n {
            let h = headers(&[("cookie", &format!("a=1; uid=user-{i}"))]);
            let first = select(m, None, &h, b"c", 0.9).unwrap().version;
            assert_eq!(
                select(m, None, &h, b"other-client", 0.9).unwrap().version,
                first,
                "sticky on the cookie"
            );
            v2 += usize::from(first == 1);
        }
        // 10% of 20,000 = 2,000; binomial stdev ~42; 5 sigma.
        assert!((1790..=2210).contains(&v2), "v2 got {v2} of {n}");
    }

    #[test]
    fn a_weight_change_moves_only_the_minimum_share() {
        let s = snapshot(CFG);
        let m = &s.models[0];
        let (mut moved, n) = (0, 20_000);
        for i in 0..n {
            let key = format!("user-{i}");
            let before = rendezvous(m, &[(0, 90), (1, 10)], key.as_bytes());
            let after = rendezvous(m, &[(0, 80), (1, 20)], key.as_bytes());
            if before != after {
                assert_eq!(
                    (before, after),
                    (0, 1),
                    "keys only move towards the version that gained weight"
                );
                moved += 1;
            }
        }
        // The minimum is |80/20 - 90/10| = 10% of keys (the 1:9 -> 1:4 odds move 1/9 - ... ~ 10%).
        assert!((1790..=2210).contains(&moved), "moved {moved} of {n}");
        // Three versions: dropping one to 0 moves only its keys.
        for i in 0..2000 {
            let key = format!("k{i}");
            let before = rendezvous(m, &[(0, 40), (1, 30), (2, 30)], key.as_bytes());
            let after = rendezvous(m, &[(0, 40), (1, 30), (2, 0)], key.as_bytes());
            if before != 2 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn shadow_is_drawn_per_request() {
        let s = snapshot(CFG);
        let m = &s.models[0];
        let h = headers(&[("cookie", "uid=u1")]);
        let sel = select(m, None, &h, b"c", 0.10).unwrap();
        assert_eq!(sel.shadow, Some(2));
        assert_eq!(select(m, None, &h, b"c", 0.30).unwrap().shadow, None);
    }

    #[test]
    fn the_trace_reports_each_step_the_selection_took() {
        let s = snapshot(CFG);
        let m = &s.models[0];
        // Rules 0 and 1 fail (rule 1 on its second condition), rule 2 splits on the cookie.
        let h = headers(&[("x-beta", "yes"), ("user-agent", "wget"), ("cookie", "uid=u7")]);
        let mut seen = Recording::default();
        let sel = select_traced(m, None, &h, b"c", 0.9, &mut seen).unwrap();
        assert_eq!(sel, select(m, None, &h, b"c", 0.9).unwrap(), "tracing changes nothing");
        assert_eq!(seen.conditions, [(0, 0, false), (1, 0, true), (1, 1, false)]);
        assert_eq!(seen.rules, [(0, false), (1, false), (2, true)]);
        assert_eq!(seen.sticky, Some((2, KeySource::Cookie, b"u7".to_vec())));
        assert_eq!(seen.scores.len(), 2);
        let best = seen.scores.iter().min_by(|a, b| a.score.total_cmp(&b.score)).unwrap();
        assert_eq!(best.version, sel.version, "the lowest score is the version chosen");
        for sc in &seen.scores {
            assert!(sc.hash > 0.0 && sc.hash <= 1.0);
            assert!((sc.score - (-sc.hash.ln() / f64::from(sc.weight))).abs() < 1e-12);
        }
        // Without the cookie the client address is the key.
        let mut seen = Recording::default();
        select_traced(m, None, &headers(&[]), b"10.0.0.9", 0.9, &mut seen).unwrap();
        assert_eq!(seen.sticky, Some((2, KeySource::Client, b"10.0.0.9".to_vec())));
        // A pin from the header, unknown: reported, and no rule is tried.
        let mut seen = Recording::default();
        let h = headers(&[("x-model-version", "v9")]);
        assert!(select_traced(m, None, &h, b"c", 0.9, &mut seen).is_err());
        assert_eq!(seen.pin, Some(("v9".into(), PinSource::Header, false)));
        assert!(seen.rules.is_empty());
    }

    #[test]
    fn client_address_is_the_fallback_key() {
        let s = snapshot(CFG);
        let m = &s.models[0];
        let h = headers(&[]);
        let a = select(m, None, &h, b"10.0.0.1", 0.9).unwrap().version;
        for _ in 0..10 {
            assert_eq!(select(m, None, &h, b"10.0.0.1", 0.9).unwrap().version, a);
        }
    }
}
