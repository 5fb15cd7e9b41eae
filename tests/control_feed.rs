//! The control loop end to end: a real `meridian control` probes and scrapes real sim backends and
//! serves the state feed; a real gateway applies it (readiness, GPU-fault drains) and a real DNS
//! server stops answering with a region whose control reports no capacity. With control killed,
//! both keep serving on the last state and say how stale it is.

mod common;

use std::time::Duration;

use common::*;
use meridian_config::schema::GslbPolicy;
use serde_json::json;

/// Region r (two zones, a control loop) fails over to q, whose "gateway" is probed at its one
/// backend; DNS answers api.meridian.test by failover over r and q for model llm.
struct Plan {
    world: World,
    r: Gw,
    q: Gw,
    control: String,
    dns: DnsAt,
    s1: String,
    s2: String,
    q1: String,
}

fn plan() -> Plan {
    let mut w = World::new(102);
    let r = w.gateway("r", &["r-a", "r-b"]);
    w.region_of("r").failover = vec!["q".into()];
    w.announce("r");
    let control = w.control("r");
    let q = w.gateway("q", &["q-a"]);
    w.announce("q");
    w.config.gateway.health_check.enabled = false;
    w.config.gateway.retries.attempts = 0;
    let s1 = w.backend("llm", "v1", "s1", "r", "r-a");
    let s2 = w.backend("llm", "v1", "s2", "r", "r-b");
    let q1 = w.backend("llm", "v1", "q1", "q", "q-a");
    w.gateway_of("q").health_url = Some(format!("http://{q1}/v2/health/ready"));
    let dns = w.dns_probing(ms(200), ms(500));
    let d = w.dns_mut();
    let mut api = gslb("api.meridian.test", GslbPolicy::Failover, &["r", "q"]);
    api.models = vec!["llm".into()];
    d.gslb.push(api);
    Plan {
        world: w,
        r,
        q,
        control,
        dns,
        s1,
        s2,
        q1,
    }
}

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
    let p = plan();
    let cfg = p.world.write(&dir);
    let cfg_s = cfg.to_str().unwrap();
    let _s1 = sim(&p.s1, "s1", "llm", "v1", &[]);
    let _s2 = sim(&p.s2, "s2", "llm", "v1", &[]);
    let _q1 = sim(&p.q1, "q1", "llm", "v1", &[]);
    let mut control = start(
        "control",
        &["control", "--config", cfg_s, "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );
    let (public, admin) = (p.r.public.as_str(), p.r.admin.as_str());
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);
    let _dns = dns_server(&cfg, &dir);
    let (dns, dns_admin) = (p.dns.listen.as_str(), p.dns.admin.as_str());
    let (r_ip, q_ip) = (p.r.ip.as_str(), p.q.ip.as_str());

    // The feed reaches the gateway: its version shows in the metrics.
    wait_until("gateway applied the feed", Duration::from_secs(20), || {
        metric_sum(&scrape(admin), "meridian_state_feed_version", &[]) >= 1.0
    });
    let feed: serde_json::Value = client()
        .get(format!("http://{}/v1/state", p.control))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(feed["region"], "r");
    assert_eq!(feed["capacity"]["llm"], 2, "{feed}");
    let control_metrics = scrape(&p.control);
    assert!(metric_sum(&control_metrics, "meridian_control_state_version", &[]) >= 1.0);
    assert_eq!(
        metric_sum(&control_metrics, "meridian_control_endpoints", &["state=\"serving\""]),
        2.0
    );
    assert_promtool_accepts("control's metrics", &control_metrics);
    wait_until("DNS answers with region r", Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == [r_ip]
    });

    // s1's GPU gets busy: control's headroom for it drops and the gateway scales its cost by it.
    sim_control(&p.s1, json!({"gpu_busy": 0.7}));
    wait_until("s1 headroom from control", Duration::from_secs(20), || {
        let h = endpoint_flags(admin, "s1").1;
        h > 0.0 && h < 0.5
    });
    let idle = endpoint_flags(admin, "s2").1;
    assert!(
        idle > 0.7,
        "an idle GPU (weights in memory only) keeps most headroom: {idle}"
    );
    sim_control(&p.s1, json!({"gpu_busy": null}));

    // s2's GPU reports an XID error: control drains it, the gateway takes it out of rotation
    // (its own health checks are off: this is control's doing), traffic stays on s1.
    sim_control(&p.s2, json!({"gpu_xid": 79}));
    wait_until("s2 drained by control", Duration::from_secs(20), || {
        !endpoint_flags(admin, "s2").0
    });
    let c = client();
    for _ in 0..20 {
        let a = infer(&c, public, "/v2/models/llm/infer", &[("x-user-id", "u")]);
        assert_eq!((a.status, a.served_by.as_str()), (200, "s1"));
    }
    // s1 stops being ready as well: region r has no capacity for llm, DNS fails over to q.
    sim_control(&p.s1, json!({"ready": false}));
    wait_until("DNS fails over to q", Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == [q_ip]
    });
    assert!(!endpoint_flags(admin, "s1").0, "s1 not ready per control");
    // Recovery: both come back, and so does region r.
    sim_control(&p.s1, json!({"ready": true}));
    sim_control(&p.s2, json!({"gpu_xid": 0}));
    wait_until("both endpoints back", Duration::from_secs(20), || {
        endpoint_flags(admin, "s1").0 && endpoint_flags(admin, "s2").0
    });
    wait_until("DNS back on region r", Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == [r_ip]
    });

    // Control dies: the gateway keeps serving on the last state, and its staleness grows.
    control.kill();
    wait_until("staleness shows", Duration::from_secs(20), || {
        metric_sum(&scrape(admin), "meridian_state_feed_staleness_seconds", &[]) > 1.0
    });
    for _ in 0..10 {
        assert_eq!(infer(&c, public, "/v2/models/llm/infer", &[]).status, 200);
    }
    assert_eq!(dig_a(dns, "api.meridian.test"), [r_ip], "DNS keeps the last report");
    let dns_metrics = scrape(dns_admin);
    assert!(metric_sum(&dns_metrics, "meridian_state_feed_staleness_seconds", &["region=\"r\""]) > 0.0);
    assert_promtool_accepts("the DNS server's metrics", &dns_metrics);
    assert_promtool_accepts("the gateway's metrics", &scrape(admin));
}

/// What the gateway's LLM-aware pick holds of an endpoint (admin `/endpoints`).
fn llm_of(admin: &str, id: &str) -> serde_json::Value {
    endpoint(admin, id)["llm"].clone()
}

#[test]
fn model_server_reports_reach_the_llm_aware_pick() {
    let dir = scratch("control-llm");
    let mut w = World::new(114);
    let r = w.gateway("r", &["r-a"]);
    w.control("r");
    w.config.gateway.health_check.enabled = false;
    let sims: Vec<String> = (0..3)
        .map(|i| w.backend("llama", "v1", &format!("l{i}"), "r", "r-a"))
        .collect();
    w.model("llama").llm = Some(meridian_config::schema::LlmRouting {
        adapters: vec!["sql-lora".into()],
        ..Default::default()
    });
    let cfg = w.write(&dir);
    let cfg_s = cfg.to_str().unwrap();
    // Each server's KV cache: 1000 blocks of 16 tokens, i.e. 250 of the gateway's 64-token blocks;
    // one LoRA slot.
    let server = ["--kv-blocks", "1000", "--block-tokens", "16", "--lora-slots", "1"];
    let _sims: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(i, a)| sim(a, &format!("l{i}"), "llama", "v1", &server))
        .collect();
    let _control = start(
        "control",
        &["control", "--config", cfg_s, "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );
    let (public, admin) = (r.public.as_str(), r.admin.as_str());
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);

    // The scraped vLLM metrics reach the pick: fresh reports, the index sized to the server's KV
    // cache (250 blocks, whole sets of 8: 256), the LoRA slots.
    wait_until(
        "fresh reports sized from cache_config_info",
        Duration::from_secs(20),
        || {
            (0..3).all(|i| {
                let l = llm_of(admin, &format!("l{i}"));
                l["freshness"] == "fresh" && l["index_blocks"] == 256 && l["lora"]["max"] == 1
            })
        },
    );

    // A request for the adapter loads it on one server; once control reports it loaded there,
    // every request for it goes there (each with a prompt of its own: no prefix affinity).
    let c = client();
    let chat = |q: usize| -> String {
        let body = json!({
            "model": "sql-lora",
            "messages": [{"role": "user", "content": format!("{q}: list the tables of the sales schema")}],
            "max_tokens": 1,
        });
        let a: serde_json::Value = c
            .post(format!("http://{public}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
            .json()
            .unwrap();
        a["served_by"].as_str().unwrap().to_string()
    };
    let home = chat(0);
    wait_until("the adapter reported loaded", Duration::from_secs(20), || {
        llm_of(admin, &home)["lora"]["running"] == json!(["sql-lora"])
    });
    let served: Vec<String> = (1..=12).map(chat).collect();
    assert!(served.iter().all(|s| *s == home), "LoRA affinity to {home}: {served:?}");
    assert_eq!(
        llm_of(admin, &home)["prompt_tokens_in_flight"],
        0,
        "prefill tokens released at each first byte"
    );
}
