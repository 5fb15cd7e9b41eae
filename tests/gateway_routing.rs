//! Gateway routing end to end: real gateway and sim backends on loopback.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use meridian_config::schema::{Route, Shadow};
use serde_json::json;

/// One gateway, model iris with v1 (a, b), v2 (c) and v3 (d); premium users to v2, then a
/// sticky split of `split_v2`% to v2; returns the world, the gateway and the four backends.
fn world(net: u8, split_v2: u32) -> (World, Gw, [String; 4]) {
    let mut w = World::new(net);
    let gw = w.gateway("r", &["r-a"]);
    let hc = &mut w.config.gateway.health_check;
    (hc.interval, hc.timeout) = (ms(200), secs(1));
    let backends =
        [("a", "v1"), ("b", "v1"), ("c", "v2"), ("d", "v3")].map(|(id, v)| w.backend("iris", v, id, "r", "r-a"));
    w.route("iris", header_rule("x-user-segment", "premium", "v2"));
    w.route(
        "iris",
        split(&[("v1", 100 - split_v2), ("v2", split_v2)], Some("x-user-id")),
    );
    (w, gw, backends)
}

fn start_sims(backends: &[String; 4]) -> Vec<Proc> {
    [("a", "v1"), ("b", "v1"), ("c", "v2"), ("d", "v3")]
        .iter()
        .zip(backends)
        .map(|((id, v), at)| sim(at, id, "iris", v, &[]))
        .collect()
}

#[test]
fn routing_pins_rules_split_stickiness_and_errors() {
    let dir = scratch("routing");
    let (w, gw, backends) = world(20, 10);
    let cfg = w.write(&dir);
    let _sims = start_sims(&backends);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();

    // Errors in KServe's shape.
    let a = infer(&c, public, "/v2/models/nope/infer", &[]);
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("model nope not found"))
    );
    let a = infer(&c, public, "/v2/models/iris/versions/v9/infer", &[]);
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("version v9 of model iris not found"))
    );
    let a = infer(&c, public, "/v2/models/iris/infer", &[("x-model-version", "v7")]);
    assert_eq!(a.status, 404);
    assert_eq!(infer(&c, public, "/nothing/here", &[]).status, 404);
    let r = c.get(format!("http://{public}/v2/models/iris/infer")).send().unwrap();
    assert_eq!(r.status(), 405);
    let models: serde_json::Value = c
        .get(format!("http://{public}/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models, json!({"models": ["iris"]}));

    // Pins: path beats header, header beats rules.
    assert_eq!(
        infer(
            &c,
            public,
            "/v2/models/iris/versions/v3/infer",
            &[("x-model-version", "v2")]
        )
        .version,
        "v3"
    );
    assert_eq!(
        infer(
            &c,
            public,
            "/v2/models/iris/infer",
            &[("x-model-version", "v3"), ("x-user-segment", "premium")]
        )
        .version,
        "v3"
    );
    // V1 protocol.
    let r = c
        .post(format!("http://{public}/v1/models/iris:predict"))
        .body(r#"{"instances":[[1,2,3,4]]}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Header rule.
    for _ in 0..20 {
        assert_eq!(
            infer(&c, public, "/v2/models/iris/infer", &[("x-user-segment", "premium")]).version,
            "v2"
        );
    }

    // 90/10 split over 4,000 distinct keys, within 5 binomial standard deviations (sd = 19).
    let n = 4000;
    let mut first: HashMap<String, String> = HashMap::new();
    for i in 0..n {
        let id = format!("user-{i}");
        let a = infer(&c, public, "/v2/models/iris/infer", &[("x-user-id", &id)]);
        assert_eq!(a.status, 200);
        first.insert(id, a.version);
    }
    let v2 = first.values().filter(|v| *v == "v2").count();
    assert!((305..=495).contains(&v2), "v2 got {v2} of {n}");
    // Sticky: the same key keeps its version.
    for i in 0..200 {
        let id = format!("user-{i}");
        assert_eq!(
            infer(&c, public, "/v2/models/iris/infer", &[("x-user-id", &id)]).version,
            first[&id]
        );
    }

    // Move the weight to 80/20 with a live reload: only ~10% of keys move, all from v1 to v2.
    world(20, 20).0.rewrite(&cfg);
    let (status, body) = admin_post(admin, "/reload");
    assert_eq!(status, 200, "{body}");
    let mut moved = 0;
    for (id, before) in &first {
        let after = infer(&c, public, "/v2/models/iris/infer", &[("x-user-id", id)]).version;
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
    let (mut w, gw, backends) = world(21, 0);
    w.config.gateway.timeouts.request = secs(2);
    w.model("iris").routes[1] = Route {
        version: Some("v1".into()),
        shadow: Some(Shadow {
            version: "v3".into(),
            percent: 50.0,
        }),
        ..Route::default()
    };
    let cfg = w.write(&dir);
    let _sims = start_sims(&backends);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    // The shadow backend hangs: if mirroring waited on it, every client request would hang too
    // (and fail at the client's 20 s bound).
    sim_control(&backends[3], json!({"hang": true}));
    for _ in 0..50 {
        let a = infer(&c, public, "/v2/models/iris/infer", &[]);
        assert_eq!((a.status, a.version.as_str()), (200, "v1"));
    }
    sim_control(&backends[3], json!({"hang": false}));
    let n = 600;
    for _ in 0..n {
        assert_eq!(infer(&c, public, "/v2/models/iris/infer", &[]).status, 200);
    }
    // 50% of 600 = 300, sd ~12: expect 240..=360 copies to arrive.
    wait_until("shadow copies arrive", Duration::from_secs(20), || {
        sim_state(&backends[3])["served"].as_u64().unwrap_or(0) >= 240
    });
    // The copies sent while the backend hung give up after the 2 s request timeout.
    wait_until("shadow copies settle", Duration::from_secs(20), || {
        endpoint(admin, "d")["in_flight"] == 0
    });
    let got = sim_state(&backends[3])["served"].as_u64().unwrap();
    assert!(got <= 360, "shadow got {got} of {n} at 50%");
}
