//! Gateway routing end to end: real gateway and sim backends on loopback.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;

fn config(split_v2: u32, shadow: &str) -> String {
    format!(
        "
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners: [{{ name: public, address: 127.20.0.1:8080 }}]
      admin: {{ address: 127.20.0.1:9901 }}
gateway:
  health_check: {{ interval: 200ms, timeout: 1s }}
models:
  - name: iris
    versions:
      - name: v1
        endpoints:
          - {{ id: a, address: 127.20.1.1:8000, region: r, zone: r-a }}
          - {{ id: b, address: 127.20.1.2:8000, region: r, zone: r-a }}
      - name: v2
        endpoints:
          - {{ id: c, address: 127.20.2.1:8000, region: r, zone: r-a }}
      - name: v3
        endpoints:
          - {{ id: d, address: 127.20.3.1:8000, region: r, zone: r-a }}
    routes:
      - match: {{ headers: [{{ name: x-user-segment, exact: premium }}] }}
        version: v2
      - split: [{{ version: v1, weight: {} }}, {{ version: v2, weight: {split_v2} }}]
        sticky: {{ header: x-user-id }}
        {shadow}
",
        100 - split_v2
    )
}

const PUBLIC: &str = "127.20.0.1:8080";
const ADMIN: &str = "127.20.0.1:9901";

#[test]
fn routing_pins_rules_split_stickiness_and_errors() {
    let dir = scratch("routing");
    let cfg = dir.join("meridian.yaml");
    write_config(&cfg, &config(10, ""));
    let _sims = [
        sim("127.20.1.1:8000", "a", "iris", "v1", &[]),
        sim("127.20.1.2:8000", "b", "iris", "v1", &[]),
        sim("127.20.2.1:8000", "c", "iris", "v2", &[]),
        sim("127.20.3.1:8000", "d", "iris", "v3", &[]),
    ];
    let _gw = gateway(&cfg, "r", None, ADMIN, PUBLIC);
    let c = client();

    // Errors in KServe's shape.
    let a = infer(&c, PUBLIC, "/v2/models/nope/infer", &[]);
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("model nope not found"))
    );
    let a = infer(&c, PUBLIC, "/v2/models/iris/versions/v9/infer", &[]);
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("version v9 of model iris not found"))
    );
    let a = infer(&c, PUBLIC, "/v2/models/iris/infer", &[("x-model-version", "v7")]);
    assert_eq!(a.status, 404);
    assert_eq!(infer(&c, PUBLIC, "/nothing/here", &[]).status, 404);
    let r = c.get(format!("http://{PUBLIC}/v2/models/iris/infer")).send().unwrap();
    assert_eq!(r.status(), 405);
    let models: serde_json::Value = c
        .get(format!("http://{PUBLIC}/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models, json!({"models": ["iris"]}));

    // Pins: path beats header, header beats rules.
    assert_eq!(
        infer(
            &c,
            PUBLIC,
            "/v2/models/iris/versions/v3/infer",
            &[("x-model-version", "v2")]
        )
        .version,
        "v3"
    );
    assert_eq!(
        infer(
            &c,
            PUBLIC,
            "/v2/models/iris/infer",
            &[("x-model-version", "v3"), ("x-user-segment", "premium")]
        )
        .version,
        "v3"
    );
    // V1 protocol.
    let r = c
        .post(format!("http://{PUBLIC}/v1/models/iris:predict"))
        .body(r#"{"instances":[[1,2,3,4]]}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Header rule.
    for _ in 0..20 {
        assert_eq!(
            infer(&c, PUBLIC, "/v2/models/iris/infer", &[("x-user-segment", "premium")]).version,
            "v2"
        );
    }

    // 90/10 split over 4,000 distinct keys, within 5 binomial standard deviations (sd = 19).
    let n = 4000;
    let mut first: HashMap<String, String> = HashMap::new();
    for i in 0..n {
        let id = format!("user-{i}");
        let a = infer(&c, PUBLIC, "/v2/models/iris/infer", &[("x-user-id", &id)]);
        assert_eq!(a.status, 200);
        first.insert(id, a.version);
    }
    let v2 = first.values().filter(|v| *v == "v2").count();
    assert!((305..=495).contains(&v2), "v2 got {v2} of {n}");
    // Sticky: the same key keeps its version.
    for i in 0..200 {
        let id = format!("user-{i}");
        assert_eq!(
            infer(&c, PUBLIC, "/v2/models/iris/infer", &[("x-user-id", &id)]).version,
            first[&id]
        );
    }

    // Move the weight to 80/20 with a live reload: only ~10% of keys move, all from v1 to v2.
    write_config(&cfg, &config(20, ""));
    let (status, body) = admin_post(ADMIN, "/reload");
    assert_eq!(status, 200, "{body}");
    let mut moved = 0;
    for (id, before) in &first {
        let after = infer(&c, PUBLIC, "/v2/models/iris/infer", &[("x-user-id", id)]).version;
        if &after != before {
            assert_eq!(
                (before.as_str(), after.as_str()),
                ("v1", "v2"),
                "keys only move to the version that gained"
            );
            moved += 1;
        }
    }
    assert!((305..=495).contains(&moved), "moved {moved} of {n}; the minimum is 10%");
}

#[test]
fn shadow_traffic_gets_its_share_and_never_delays_the_client() {
    let dir = scratch("shadow");
    let cfg = dir.join("meridian.yaml");
    let text = config(0, "shadow: { version: v3, percent: 50 }")
        .replace("127.20.", "127.21.")
        .replace(
            "split: [{ version: v1, weight: 100 }, { version: v2, weight: 0 }]",
            "version: v1",
        )
        .replace("sticky: { header: x-user-id }", "")
        .replace(
            "health_check: { interval: 200ms, timeout: 1s }",
            "health_check: { interval: 200ms, timeout: 1s }\n  timeouts: { request: 2s }",
        );
    write_config(&cfg, &text);
    let _sims = [
        sim("127.21.1.1:8000", "a", "iris", "v1", &[]),
        sim("127.21.1.2:8000", "b", "iris", "v1", &[]),
        sim("127.21.2.1:8000", "c", "iris", "v2", &[]),
        sim("127.21.3.1:8000", "d", "iris", "v3", &[]),
    ];
    let (public, admin) = ("127.21.0.1:8080", "127.21.0.1:9901");
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    // The shadow backend hangs: if mirroring waited on it, every client request would hang too
    // (and fail at the client's 20 s bound).
    sim_control("127.21.3.1:8000", json!({"hang": true}));
    for _ in 0..50 {
        let a = infer(&c, public, "/v2/models/iris/infer", &[]);
        assert_eq!((a.status, a.version.as_str()), (200, "v1"));
    }
    sim_control("127.21.3.1:8000", json!({"hang": false}));
    let n = 600;
    for _ in 0..n {
        assert_eq!(infer(&c, public, "/v2/models/iris/infer", &[]).status, 200);
    }
    // 50% of 600 = 300, sd ~12: expect 240..=360 copies to arrive.
    wait_until("shadow copies arrive", Duration::from_secs(20), || {
        sim_state("127.21.3.1:8000")["served"].as_u64().unwrap_or(0) >= 240
    });
    // The copies sent while the backend hung give up after the 2 s request timeout.
    wait_until("shadow copies settle", Duration::from_secs(20), || {
        endpoint(admin, "d")["in_flight"] == 0
    });
    let got = sim_state("127.21.3.1:8000")["served"].as_u64().unwrap();
    assert!(got <= 360, "shadow got {got} of {n} at 50%");
}
