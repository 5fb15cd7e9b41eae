//! Scale from zero end to end, over a fake Kubernetes API (tests/common/kube.rs) that serves the
//! version's EndpointSlices and its Deployment's scale subresource and records every PATCH: a
//! request to a version at zero replicas is held by the gateway, control is asked once and scales
//! the Deployment to 1, a sim backend started on that signal (and published in the slice) serves
//! the held requests; concurrency sizes the replicas (ceil(in flight / target)); a quiet
//! `scale_down_delay` takes the version back to zero; a request whose activation deadline passes
//! gets 503 with Retry-After.

mod common;

use std::time::Duration;

use common::kube::{self, kubeconfig, FakeApi};
use common::*;
use meridian_config::schema::Scale;
use serde_json::Value;

const API: &str = "127.115.0.9:6443";
const POD: &str = "127.115.1.1";

/// The llm-v1 Service's slice: no endpoint at zero replicas, the pod once it runs.
fn slice(running: bool) -> Value {
    let pod = kube::slice_endpoint(POD, "llm-v1-0", "n1", "r-a", true);
    kube::slice("llm-v1", if running { vec![pod] } else { vec![] })
}

fn patches_of(api: &FakeApi, deployment: &str) -> Vec<u32> {
    let all = api.patches.lock().unwrap();
    all.iter().filter(|(d, _)| d == deployment).map(|(_, n)| *n).collect()
}

#[test]
fn a_version_at_zero_is_woken_not_failed_and_scales_with_its_load() {
    let dir = scratch("scale");
    let mut w = World::new(115);
    let gw = w.gateway("r", &["r-a"]);
    w.kube_control("r");
    let kube = |service: &str| Some(meridian_config::build::kube("ml", Some(service), &[], 8000));
    w.version("llm", "v1").discovery = kube("llm-v1");
    w.version("llm", "v1").scale = Some(Scale {
        max: 3,
        target_concurrency: 10,
        scale_down_delay: ms(2000),
        activation_timeout: ms(30_000),
        ..Scale::default()
    });
    w.version("cold", "v1").discovery = kube("cold-v1");
    w.version("cold", "v1").scale = Some(Scale {
        activation_timeout: ms(1500),
        ..Scale::default()
    });
    let cfg = w.write(&dir);
    std::fs::write(dir.join("kubeconfig.yaml"), kubeconfig(&format!("http://{API}"))).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = FakeApi::new();
    api.put("nodes", kube::node("n1", "r-a", true, false), true);
    api.put("slices", slice(false), true);
    api.set_replicas("llm-v1", 0);
    api.set_replicas("cold-v1", 0);
    rt.spawn(api.clone().serve(API));
    let _control = start(
        "control",
        &["control", "--config", cfg.to_str().unwrap(), "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );
    let (public, admin) = (gw.public.clone(), gw.admin.clone());
    let _gw = gateway(&cfg, "r", Some("r-a"), &admin, &public);
    wait_until("the gateway follows control", Duration::from_secs(20), || {
        metric_sum(&scrape(&admin), "meridian_state_feed_version", &[]) >= 1.0
    });

    // Three requests at zero replicas: held, not failed; one scale-up is asked for.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let public = public.clone();
            std::thread::spawn(move || infer(&client(), &public, "/v2/models/llm/infer", &[]))
        })
        .collect();
    wait_until("three requests held", Duration::from_secs(20), || {
        metric_sum(&scrape(&admin), "meridian_activation_held", &["model_name=\"llm\""]) == 3.0
    });
    let signals = scrape(&admin);
    for family in ["meridian_version_concurrency", "meridian_model_concurrency"] {
        assert_eq!(
            metric_sum(&signals, family, &["model_name=\"llm\""]),
            3.0,
            "{family}: held requests are demand"
        );
    }
    wait_until("control scales llm-v1 up", Duration::from_secs(20), || {
        !patches_of(&api, "llm-v1").is_empty()
    });
    assert_eq!(
        patches_of(&api, "llm-v1"),
        [1],
        "one scale-up, to one replica, however many wait"
    );

    // The pod starts (a sim backend) and its Service's slice lists it: the held requests are served.
    let _pod = sim(&format!("{POD}:8000"), "llm-v1-0", "llm", "v1", &["--latency", "2s"]);
    api.put("slices", slice(true), true);
    for h in held {
        let a = h.join().unwrap();
        assert_eq!((a.status, a.served_by.as_str()), (200, "llm-v1-0"), "{:?}", a.body);
    }

    // 25 requests in flight at a target of 10 each: three replicas.
    let burst: Vec<_> = (0..25)
        .map(|_| {
            let public = public.clone();
            std::thread::spawn(move || infer(&client(), &public, "/v2/models/llm/infer", &[]).status)
        })
        .collect();
    wait_until("sized to three replicas", Duration::from_secs(20), || {
        patches_of(&api, "llm-v1").contains(&3)
    });
    for b in burst {
        assert_eq!(b.join().unwrap(), 200);
    }
    // Quiet for the scale-down delay: back to zero.
    wait_until("scaled to zero when idle", Duration::from_secs(20), || {
        patches_of(&api, "llm-v1").last() == Some(&0)
    });

    // A version that never gets a ready endpoint: woken, and 503 with Retry-After at its deadline.
    let r = client()
        .post(format!("http://{public}/v2/models/cold/infer"))
        .body(r#"{"inputs":[]}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("scaling up from zero"),
        "{body}"
    );
    assert_eq!(patches_of(&api, "cold-v1"), [1], "the cold version was asked to wake");
    let gw_metrics = scrape(&admin);
    assert_eq!(
        metric_sum(
            &gw_metrics,
            "meridian_activation_failed_total",
            &["model_name=\"cold\"", "reason=\"activation_timeout\""]
        ),
        1.0
    );
    assert_promtool_accepts("the gateway's metrics", &gw_metrics);
}
