//! The control loop end to end: a real `meridian control` probes and scrapes real sim backends and
//! serves the state feed; a real gateway applies it (readiness, GPU-fault drains) and a real DNS
//! server stops answering with a region whose control reports no capacity. With control killed,
//! both keep serving on the last state and say how stale it is.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CONFIG: &str = "
regions:
  - name: r
    zones: [r-a, r-b]
    failover: [q]
    gateway:
      listeners: [{ name: public, address: 127.102.0.1:8080 }]
      admin: { address: 127.102.0.1:9901 }
      public_addresses: [127.102.0.1]
    control: { address: 127.102.0.3:9902 }
  - name: q
    zones: [q-a]
    gateway:
      listeners: [{ name: public, address: 127.102.9.1:8080 }]
      admin: { address: 127.102.9.1:9901 }
      public_addresses: [127.102.9.1]
      health_url: http://127.102.9.2:8000/v2/health/ready
gateway:
  health_check: { enabled: false }
  retries: { attempts: 0 }
models:
  - name: llm
    versions:
      - name: v1
        endpoints:
          - { id: s1, address: 127.102.1.1:8000, region: r, zone: r-a }
          - { id: s2, address: 127.102.1.2:8000, region: r, zone: r-b }
          - { id: q1, address: 127.102.9.2:8000, region: q, zone: q-a }
control:
  telemetry: { interval: 200ms, timeout: 500ms }
dns:
  listen: [127.102.0.53:5353]
  admin: { address: 127.102.0.53:9953 }
  probe: { interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 2 }
  zones:
    - name: meridian.test
      soa: { mname: ns1.meridian.test, rname: hostmaster.meridian.test }
      ns: [ns1.meridian.test]
      records: [{ name: ns1, type: A, value: 127.0.0.1 }]
  gslb:
    - { name: api.meridian.test, policy: failover, regions: [r, q], models: [llm] }
";

fn endpoint_flags(admin: &str, id: &str) -> (bool, f64) {
    let e = endpoint(admin, id);
    (
        e["available"].as_bool().unwrap(),
        e["headroom"].as_f64().unwrap_or(-1.0),
    )
}

#[test]
fn gateway_and_dns_follow_the_control_state_feed() {
    let dir = scratch("control");
    let cfg = dir.join("meridian.yaml");
    write_config(&cfg, CONFIG);
    let cfg_s = cfg.to_str().unwrap();
    let _s1 = sim("127.102.1.1:8000", "s1", "llm", "v1", &[]);
    let _s2 = sim("127.102.1.2:8000", "s2", "llm", "v1", &[]);
    let _q1 = sim("127.102.9.2:8000", "q1", "llm", "v1", &[]);
    let mut control = start(
        "control",
        &["control", "--config", cfg_s, "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );
    let (public, admin) = ("127.102.0.1:8080", "127.102.0.1:9901");
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);
    let _dns = start("dns", &["dns", "--config", cfg_s], &dir.join("dns.log"), "listening");
    let dns = "127.102.0.53:5353";
    let dns_admin = "127.102.0.53:9953";

    // The feed reaches the gateway: its version shows in the metrics.
    wait_until("gateway applied the feed", Duration::from_secs(20), || {
        metric_sum(&scrape(admin), "meridian_state_feed_version", &[]) >= 1.0
    });
    let feed: serde_json::Value = client()
        .get("http://127.102.0.3:9902/v1/state")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(feed["region"], "r");
    assert_eq!(feed["capacity"]["llm"], 2, "{feed}");
    let control_metrics = scrape("127.102.0.3:9902");
    assert!(metric_sum(&control_metrics, "meridian_control_state_version", &[]) >= 1.0);
    assert_eq!(
        metric_sum(&control_metrics, "meridian_control_endpoints", &["state=\"serving\""]),
        2.0
    );
    assert_promtool_accepts("control's metrics", &control_metrics);
    wait_until("DNS answers with region r", Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == ["127.102.0.1"]
    });

    // s1's GPU gets busy: control's headroom for it drops and the gateway scales its cost by it.
    sim_control("127.102.1.1:8000", json!({"gpu_busy": 0.7}));
    wait_until("s1 headroom from control", Duration::from_secs(20), || {
        let h = endpoint_flags(admin, "s1").1;
        h > 0.0 && h < 0.5
    });
    let idle = endpoint_flags(admin, "s2").1;
    assert!(
        idle > 0.7,
        "an idle GPU (weights in memory only) keeps most headroom: {idle}"
    );
    sim_control("127.102.1.1:8000", json!({"gpu_busy": null}));

    // s2's GPU reports an XID error: control drains it, the gateway takes it out of rotation
    // (its own health checks are off: this is control's doing), traffic stays on s1.
    sim_control("127.102.1.2:8000", json!({"gpu_xid": 79}));
    wait_until("s2 drained by control", Duration::from_secs(20), || {
        !endpoint_flags(admin, "s2").0
    });
    let c = client();
    for _ in 0..20 {
        let a = infer(&c, public, "/v2/models/llm/infer", &[("x-user-id", "u")]);
        assert_eq!((a.status, a.served_by.as_str()), (200, "s1"));
    }
    // s1 stops being ready as well: region r has no capacity for llm, DNS fails over to q.
    sim_control("127.102.1.1:8000", json!({"ready": false}));
    wait_until("DNS fails over to q", Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == ["127.102.9.1"]
    });
    assert!(!endpoint_flags(admin, "s1").0, "s1 not ready per control");
    // Recovery: both come back, and so does region r.
    sim_control("127.102.1.1:8000", json!({"ready": true}));
    sim_control("127.102.1.2:8000", json!({"gpu_xid": 0}));
    wait_until("both endpoints back", Duration::from_secs(20), || {
        endpoint_flags(admin, "s1").0 && endpoint_flags(admin, "s2").0
    });
    wait_until("DNS back on region r", Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == ["127.102.0.1"]
    });

    // Control dies: the gateway keeps serving on the last state, and its staleness grows.
    control.kill();
    wait_until("staleness shows", Duration::from_secs(20), || {
        metric_sum(&scrape(admin), "meridian_state_feed_staleness_seconds", &[]) > 1.0
    });
    for _ in 0..10 {
        assert_eq!(infer(&c, public, "/v2/models/llm/infer", &[]).status, 200);
    }
    assert_eq!(
        dig_a(dns, "api.meridian.test"),
        ["127.102.0.1"],
        "DNS keeps the last report"
    );
    let dns_metrics = scrape(dns_admin);
    assert!(metric_sum(&dns_metrics, "meridian_state_feed_staleness_seconds", &["region=\"r\""]) > 0.0);
    assert_promtool_accepts("the DNS server's metrics", &dns_metrics);
    assert_promtool_accepts("the gateway's metrics", &scrape(admin));
}
