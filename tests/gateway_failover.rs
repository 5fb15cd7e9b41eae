//! Gateway failover end to end: locality spill, panic mode, outlier ejection and return, and a
//! backend killed under load.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;

fn tally(c: &reqwest::blocking::Client, public: &str, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let a = infer(c, public, "/v2/models/m/infer", &[]);
        assert_eq!(a.status, 200, "{:?}", a.body);
        *out.entry(a.served_by).or_default() += 1;
    }
    out
}

fn healthy_is<'a>(admin: &'a str, id: &str, want: bool) -> impl FnMut() -> bool + 'a {
    let id = id.to_string();
    move || endpoint(admin, &id)["healthy"] == want
}

#[test]
fn zone_then_region_then_failover_region_then_panic() {
    let dir = scratch("locality");
    let mut w = World::new(30);
    let gw = w.gateway("us", &["us-a", "us-b"]);
    w.region_of("us").failover = vec!["eu".into()];
    w.region("eu", &["eu-a"]);
    let hc = &mut w.config.gateway.health_check;
    (hc.interval, hc.timeout, hc.healthy_threshold, hc.unhealthy_threshold) = (ms(100), secs(1), 1, 1);
    w.config.gateway.outlier_detection.enabled = false;
    let addrs = [
        ("a1", w.backend("m", "v1", "a1", "us", "us-a")),
        ("a2", w.backend("m", "v1", "a2", "us", "us-a")),
        ("b1", w.backend("m", "v1", "b1", "us", "us-b")),
        ("e1", w.backend("m", "v1", "e1", "eu", "eu-a")),
    ];
    let cfg = w.write(&dir);
    let _sims: Vec<_> = addrs.iter().map(|(id, a)| sim(a, id, "m", "v1", &[])).collect();
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "us", Some("us-a"), admin, public);
    let c = client();
    let unready = |i: usize, down: bool| {
        sim_control(&addrs[i].1, json!({"ready": !down}));
        wait_until(
            "health to follow",
            Duration::from_secs(10),
            healthy_is(admin, addrs[i].0, !down),
        );
    };

    // Everything healthy: the gateway's own zone takes all traffic.
    let t = tally(&c, public, 200);
    assert_eq!(t.get("a1").unwrap_or(&0) + t.get("a2").unwrap_or(&0), 200, "{t:?}");

    // Half the zone down: zone health 50% x 1.4 = 70%, so 30% spills to the other zone.
    unready(0, true);
    let t = tally(&c, public, 2000);
    assert_eq!(t.get("a1"), None, "{t:?}");
    let spilled = *t.get("b1").unwrap_or(&0);
    assert!(
        (500..=700).contains(&spilled),
        "expected ~600 of 2000 in us-b (sd 20): {t:?}"
    );

    // The whole zone down: the rest of the region takes everything.
    unready(1, true);
    assert_eq!(tally(&c, public, 100).get("b1"), Some(&100));

    // The whole region down: the failover region takes everything.
    unready(2, true);
    assert_eq!(tally(&c, public, 100).get("e1"), Some(&100));

    // Nothing healthy anywhere: panic mode spreads over the zone's endpoints, healthy or not.
    unready(3, true);
    let t = tally(&c, public, 200);
    assert_eq!(t.get("a1").unwrap_or(&0) + t.get("a2").unwrap_or(&0), 200, "{t:?}");
    assert!(endpoints(admin).iter().any(|e| e["panic"] == true));

    // Recovery: back to the zone.
    for i in 0..4 {
        unready(i, false);
    }
    let t = tally(&c, public, 200);
    assert_eq!(t.get("a1").unwrap_or(&0) + t.get("a2").unwrap_or(&0), 200, "{t:?}");
}

#[test]
fn outliers_are_ejected_within_max_percent_and_return() {
    let dir = scratch("outlier");
    let mut w = World::new(31);
    let gw = w.gateway("r", &["r-a"]);
    w.config.gateway.health_check.enabled = false;
    let od = &mut w.config.gateway.outlier_detection;
    (
        od.consecutive_5xx,
        od.interval,
        od.base_ejection_time,
        od.max_ejection_percent,
    ) = (3, ms(200), secs(3), 50.0);
    w.config.gateway.retries.attempts = 0;
    let addrs: Vec<String> = (1..=4)
        .map(|i| w.backend("m", "v1", &format!("o{i}"), "r", "r-a"))
        .collect();
    let cfg = w.write(&dir);
    let _sims: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| sim(a, &format!("o{}", i + 1), "m", "v1", &[]))
        .collect();
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    // Three of four backends start failing every request with 500.
    for a in &addrs[..3] {
        sim_control(a, json!({"error_rate": 1.0, "error_status": 500}));
    }
    let ejected = || endpoints(admin).iter().filter(|e| e["ejected"] == true).count();
    wait_until("two ejections", Duration::from_secs(20), || {
        for _ in 0..20 {
            infer(&c, public, "/v2/models/m/infer", &[]);
        }
        ejected() == 2
    });
    // Max ejection percent 50%: the third failing backend stays in, whatever it answers, however
    // long the failures go on (ejections expire and recur meanwhile: never more than two out).
    for _ in 0..10 {
        for _ in 0..10 {
            infer(&c, public, "/v2/models/m/infer", &[]);
        }
        assert!(ejected() <= 2, "never more than 50% of 4 endpoints out");
    }
    assert_eq!(
        endpoint(admin, "o4")["ejected"],
        false,
        "the good endpoint is never ejected"
    );
    // Ejected endpoints get no traffic: a request is checked against the endpoints ejected both
    // before and after it with no ejection in between (the same count), out all through it.
    let out_now = || -> HashMap<String, u64> {
        endpoints(admin)
            .iter()
            .filter(|e| e["ejected"] == true)
            .map(|e| (e["id"].as_str().unwrap().to_string(), e["ejections"].as_u64().unwrap()))
            .collect()
    };
    let (mut checked, mut out) = (0, Vec::new());
    for _ in 0..50 {
        let before = out_now();
        let a = infer(&c, public, "/v2/models/m/infer", &[]);
        let after = out_now();
        for (id, n) in &before {
            if after.get(id) == Some(n) {
                assert_ne!(&a.served_by, id, "ejected {id} got traffic");
                checked += 1;
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
        }
    }
    assert!(checked > 0, "no request went while an endpoint was ejected");
    // Backends recover; ejections end after the base ejection time and traffic returns.
    for a in &addrs[..3] {
        sim_control(a, json!({"error_rate": 0.0}));
    }
    wait_until("ejections end", Duration::from_secs(20), || ejected() == 0);
    wait_until("traffic returns to the ejected", Duration::from_secs(20), || {
        let t = tally_any(&c, public, 100);
        out.iter().all(|id| t.contains_key(id))
    });
}

fn tally_any(c: &reqwest::blocking::Client, public: &str, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let a = infer(c, public, "/v2/models/m/infer", &[]);
        *out.entry(a.served_by).or_default() += 1;
    }
    out
}

#[test]
fn a_backend_killed_under_load_loses_nothing() {
    // 16 closed-loop connections over two backends; one is killed mid-run. Every request that got
    // no response byte is replayed at the other one: none fails.
    let dir = scratch("kill");
    let mut w = World::new(32);
    let gw = w.gateway("r", &["r-a"]);
    let hc = &mut w.config.gateway.health_check;
    (hc.interval, hc.timeout) = (ms(200), ms(500));
    let [k1, k2] = ["k1", "k2"].map(|id| w.backend("m", "v1", id, "r", "r-a"));
    let cfg = w.write(&dir);
    let mut victim = sim(&k1, "k1", "m", "v1", &["--latency", "3ms"]);
    let _other = sim(&k2, "k2", "m", "v1", &["--latency", "3ms"]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let load = Load::start(public, "/v2/models/m/infer", 16);
    load.wait_for_more(2000, "load flowing");
    victim.kill();
    load.wait_for_more(4000, "more load after the kill");
    let (ok, failed) = load.stop();
    println!("kill under load: {failed} failed of {}", ok + failed);
    assert_eq!(failed, 0, "{failed} of {} failed", ok + failed);
    wait_until("the dead backend is marked unhealthy", Duration::from_secs(10), || {
        endpoint(admin, "k1")["healthy"] == false
    });
}

#[test]
fn a_hanging_backend_answers_504_within_the_timeouts() {
    let dir = scratch("timeout");
    let mut w = World::new(33);
    let gw = w.gateway("r", &["r-a"]);
    let t = &mut w.config.gateway.timeouts;
    (t.first_byte, t.request) = (ms(300), secs(1));
    w.config.gateway.retries.attempts = 0;
    let h1 = w.backend("m", "v1", "h1", "r", "r-a");
    let cfg = w.write(&dir);
    let _sim = sim(&h1, "h1", "m", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    sim_control(&h1, json!({"hang": true}));
    let a = infer(&client(), public, "/v2/models/m/infer", &[]);
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (504, Some("upstream timed out")),
        "{:?}",
        a.body
    );
}
