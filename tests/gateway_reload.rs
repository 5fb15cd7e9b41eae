//! Live reload end to end: under load, invalid files, SIGHUP and file changes.

mod common;

use std::time::Duration;

use common::*;

/// One gateway; model m with v1 (two backends) and v2 (one), split `v1_weight`/rest; with
/// `extra_model`, a second model on its own backend. The hosts are the same on every call for
/// the same `net`, so a test rewrites its file with other weights and the same backends.
fn world(net: u8, v1_weight: u32, extra_model: bool) -> (World, Gw, Vec<String>) {
    let mut w = World::new(net);
    let gw = w.gateway("r", &["r-a"]);
    w.config.gateway.health_check.interval = ms(200);
    let mut backends: Vec<String> = [("a", "v1"), ("b", "v1"), ("c", "v2")]
        .iter()
        .map(|(id, v)| w.backend("m", v, id, "r", "r-a"))
        .collect();
    w.route("m", split(&[("v1", v1_weight), ("v2", 100 - v1_weight)], None));
    let x = w.addrs.host(1) + ":8000";
    if extra_model {
        w.endpoint_at("extra", "v1", "x", &x, "r", "r-a");
    }
    backends.push(x);
    (w, gw, backends)
}

fn generation(admin: &str) -> u64 {
    let v: serde_json::Value = client()
        .get(format!("http://{admin}/config"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["generation"].as_u64().unwrap()
}

#[test]
fn a_hundred_reloads_under_load_fail_no_request() {
    let dir = scratch("reload-load");
    let (w, gw, at) = world(40, 90, false);
    let cfg = w.write(&dir);
    let _sims = [
        sim(&at[0], "a", "m", "v1", &["--latency", "2ms"]),
        sim(&at[1], "b", "m", "v1", &["--latency", "2ms"]),
        sim(&at[2], "c", "m", "v2", &["--latency", "2ms"]),
    ];
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let load = Load::start(public, "/v2/models/m/infer", 4);
    let start = generation(admin);
    for i in 0..100u32 {
        world(40, 50 + (i % 2) * 40, false).0.rewrite(&cfg);
        let (status, body) = admin_post(admin, "/reload");
        assert_eq!(status, 200, "{body}");
        // Let requests flow on each generation before the next swap.
        load.wait_for_more(20, "requests between reloads");
    }
    load.wait_for_more(100, "load continues after the reloads");
    let (ok, failed) = load.stop();
    println!("100 reloads under load: {failed} failed of {}", ok + failed);
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across 100 reloads",
        ok + failed
    );
    assert!(
        generation(admin) >= start + 100,
        "every reload took effect (the file watcher may add more)"
    );
}

#[test]
fn invalid_reloads_are_rejected_and_the_old_config_keeps_serving() {
    let dir = scratch("reload-invalid");
    let (w, addrs, backends) = world(41, 100, false);
    let cfg = w.write(&dir);
    let _sims = [
        sim(&backends[0], "a", "m", "v1", &[]),
        sim(&backends[1], "b", "m", "v1", &[]),
        sim(&backends[2], "c", "m", "v2", &[]),
        sim(&backends[3], "x", "extra", "v1", &[]),
    ];
    let (public, admin) = (addrs.public.as_str(), addrs.admin.as_str());
    let gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    let before = generation(admin);

    // Weights that do not sum to 100: rejected with file, line, column and path (the split's key).
    let text = meridian_config::to_yaml(&world(41, 90, false).0.config);
    let bad = text.replacen("weight: 10\n", "weight: 5\n", 1);
    assert_ne!(bad, text);
    let (at_line, at_col) = bad
        .lines()
        .enumerate()
        .find_map(|(i, l)| Some((i + 1, l.find("split:")? + 1)))
        .unwrap();
    write_config(&cfg, &bad);
    let (status, body) = admin_post(admin, "/reload");
    assert_eq!(status, 400);
    let line = body["errors"][0].as_str().unwrap().to_string();
    assert!(
        line.ends_with("models[0].routes[0].split: weights sum to 95, must be 100"),
        "{line}"
    );
    assert!(
        line.starts_with(&format!("{}:{at_line}:{at_col}: ", cfg.display())),
        "{line}"
    );
    assert_eq!(generation(admin), before, "the old config keeps serving");
    for _ in 0..20 {
        let a = infer(&c, public, "/v2/models/m/infer", &[]);
        assert_eq!((a.status, a.version.as_str()), (200, "v1"), "still the old 100/0 split");
    }

    // A config without this gateway's region: rejected too.
    let mut moved = world(41, 100, false).0;
    moved.config.regions[0].name = "q".into();
    for e in moved
        .config
        .models
        .iter_mut()
        .flat_map(|m| &mut m.versions)
        .flat_map(|v| &mut v.endpoints)
    {
        e.region = "q".into();
    }
    moved.rewrite(&cfg);
    let (status, body) = admin_post(admin, "/reload");
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("region `r` is not in the config"),
        "{body}"
    );

    // SIGHUP reloads a fixed file: the new model becomes routable.
    world(41, 100, true).0.rewrite(&cfg);
    gw.signal("HUP");
    wait_until("SIGHUP reload", Duration::from_secs(10), || {
        infer(&c, public, "/v2/models/extra/infer", &[]).status == 200
    });

    // Changing the file alone is enough: the watcher reloads it.
    let g = generation(admin);
    world(41, 100, false).0.rewrite(&cfg);
    wait_until("file watch reload", Duration::from_secs(10), || generation(admin) > g);
    assert_eq!(infer(&c, public, "/v2/models/extra/infer", &[]).status, 404);
}
