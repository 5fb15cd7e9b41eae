//! Live reload end to end: under load, invalid files, SIGHUP and file changes.

mod common;

use std::time::Duration;

use common::*;

fn config(prefix: &str, v1_weight: u32, extra_model: bool) -> String {
    let extra = if extra_model {
        format!("  - name: extra\n    versions:\n      - {{ name: v1, endpoints: [{{ address: {prefix}.3.1:8000, region: r, zone: r-a }}] }}\n")
    } else {
        String::new()
    };
    format!(
        "
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners: [{{ name: public, address: {prefix}.0.1:8080 }}]
      admin: {{ address: {prefix}.0.1:9901 }}
gateway:
  health_check: {{ interval: 200ms }}
models:
  - name: m
    versions:
      - {{ name: v1, endpoints: [{{ address: {prefix}.1.1:8000, region: r, zone: r-a }}, {{ address: {prefix}.1.2:8000, region: r, zone: r-a }}] }}
      - {{ name: v2, endpoints: [{{ address: {prefix}.2.1:8000, region: r, zone: r-a }}] }}
    routes:
      - split: [{{ version: v1, weight: {v1_weight} }}, {{ version: v2, weight: {} }}]
{extra}",
        100 - v1_weight
    )
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
    let p = "127.40";
    let dir = scratch("reload-load");
    let cfg = dir.join("meridian.yaml");
    write_config(&cfg, &config(p, 90, false));
    let _sims = [
        sim("127.40.1.1:8000", "a", "m", "v1", &["--latency", "2ms"]),
        sim("127.40.1.2:8000", "b", "m", "v1", &["--latency", "2ms"]),
        sim("127.40.2.1:8000", "c", "m", "v2", &["--latency", "2ms"]),
    ];
    let (public, admin) = ("127.40.0.1:8080", "127.40.0.1:9901");
    let _gw = gateway(&cfg, "r", None, admin, public);
    let load = Load::start(public, "/v2/models/m/infer", 4);
    let start = generation(admin);
    for i in 0..100u32 {
        write_config(&cfg, &config(p, 50 + (i % 2) * 40, false));
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
    let p = "127.41";
    let dir = scratch("reload-invalid");
    let cfg = dir.join("meridian.yaml");
    write_config(&cfg, &config(p, 100, false));
    let _sims = [
        sim("127.41.1.1:8000", "a", "m", "v1", &[]),
        sim("127.41.1.2:8000", "b", "m", "v1", &[]),
        sim("127.41.2.1:8000", "c", "m", "v2", &[]),
        sim("127.41.3.1:8000", "x", "extra", "v1", &[]),
    ];
    let (public, admin) = ("127.41.0.1:8080", "127.41.0.1:9901");
    let gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    let before = generation(admin);

    // Weights that do not sum to 100: rejected with file, line, column and path.
    write_config(&cfg, &config(p, 90, false).replace("weight: 10 }", "weight: 5 }"));
    let (status, body) = admin_post(admin, "/reload");
    assert_eq!(status, 400);
    let line = body["errors"][0].as_str().unwrap().to_string();
    assert!(
        line.ends_with("models[0].routes[0].split: weights sum to 95, must be 100"),
        "{line}"
    );
    assert!(line.starts_with(&format!("{}:16:9: ", cfg.display())), "{line}");
    assert_eq!(generation(admin), before, "the old config keeps serving");
    for _ in 0..20 {
        let a = infer(&c, public, "/v2/models/m/infer", &[]);
        assert_eq!((a.status, a.version.as_str()), (200, "v1"), "still the old 100/0 split");
    }

    // A config without this gateway's region: rejected too.
    write_config(
        &cfg,
        &config(p, 100, false)
            .replace("- name: r\n", "- name: q\n")
            .replace("region: r,", "region: q,"),
    );
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
    write_config(&cfg, &config(p, 100, true));
    gw.signal("HUP");
    wait_until("SIGHUP reload", Duration::from_secs(10), || {
        infer(&c, public, "/v2/models/extra/infer", &[]).status == 200
    });

    // Changing the file alone is enough: the watcher reloads it.
    let g = generation(admin);
    write_config(&cfg, &config(p, 100, false));
    wait_until("file watch reload", Duration::from_secs(10), || generation(admin) > g);
    assert_eq!(infer(&c, public, "/v2/models/extra/infer", &[]).status, 404);
}
