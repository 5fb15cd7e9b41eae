//! Kubernetes discovery end to end. There is no cluster here, so the test serves the Kubernetes
//! list and watch JSON API itself (Nodes, EndpointSlices, Pods; resourceVersions; chunked watch
//! streams; 410 Gone) and drives a real `meridian control`, through its kube-rs watchers, over
//! adds, readiness flips, a zone move, a dropped watch, an expired resourceVersion and deletions,
//! checking the state feed and a real gateway that routes to what was discovered.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::kube::{self, node, FakeApi};
use common::*;
use serde_json::{json, Value};

fn slice(a_zone: &str, b_ready: bool) -> Value {
    kube::slice(
        "llm-v1",
        vec![
            kube::slice_endpoint(PODS[0], "pod-a", "n1", a_zone, true),
            kube::slice_endpoint(PODS[1], "pod-b", "n2", "r-b", b_ready),
        ],
    )
}

fn pod(ready: bool) -> Value {
    kube::pod("pod-c", PODS[2], "n2", json!({"app": "llm", "track": "v2"}), ready)
}

/// The fake cluster's pod IPs (pod-a, pod-b behind the llm-v1 Service; pod-c picked by selector).
const PODS: [&str; 3] = ["127.106.1.1", "127.106.1.2", "127.106.1.3"];

/// A gateway and control loop for a model whose versions control discovers in Kubernetes: v1
/// from the llm-v1 Service's EndpointSlices, v2 from the pods its selector picks.
fn world() -> (World, Gw, String) {
    let mut w = World::new(106);
    let gw = w.gateway("r", &["r-a", "r-b"]);
    let control = w.kube_control("r");
    w.config.gateway.retries.attempts = 0;
    let kube = |service: Option<&str>, selector: &[(&str, &str)]| {
        Some(meridian_config::build::kube("ml", service, selector, 8000))
    };
    w.version("llm", "v1").discovery = kube(Some("llm-v1"), &[]);
    w.version("llm", "v2").discovery = kube(None, &[("app", "llm"), ("track", "v2")]);
    w.route("llm", pin("v1"));
    (w, gw, control)
}

/// The state feed's endpoints by id.
fn feed(control: &str) -> HashMap<String, Value> {
    let v: Value = client()
        .get(format!("http://{control}/v1/state"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn feed_has(control: &str, what: &str, f: impl Fn(&HashMap<String, Value>) -> bool) {
    wait_until(what, Duration::from_secs(30), || f(&feed(control)));
}

#[test]
fn kube_watchers_follow_the_cluster() {
    let dir = scratch("kube");
    let (w, gw, control_at) = world();
    let cfg = w.write(&dir);
    std::fs::write(
        dir.join("kubeconfig.yaml"),
        common::kube::kubeconfig("http://127.106.0.9:6443"),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = FakeApi::new();
    api.put("nodes", node("n1", "r-a", true, false), true);
    api.put("nodes", node("n2", "r-b", true, false), true);
    api.put("slices", slice("r-a", false), true);
    api.put("pods", pod(true), true);
    rt.spawn(api.clone().serve("127.106.0.9:6443"));
    let _a = sim(&format!("{}:8000", PODS[0]), "pod-a", "llm", "v1", &[]);
    let _b = sim(&format!("{}:8000", PODS[1]), "pod-b", "llm", "v1", &[]);
    let _c = sim(&format!("{}:8000", PODS[2]), "pod-c", "llm", "v2", &[]);
    let mut control = start(
        "control",
        &["control", "--config", cfg.to_str().unwrap(), "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );

    // Listed: the slice's ready endpoint, its not-ready one, and the selected pod (zone from its node).
    feed_has(&control_at, "discovered endpoints", |f| {
        f.get("ml/pod-a")
            .is_some_and(|e| e["ready"] == true && e["zone"] == "r-a")
            && f.get("ml/pod-b").is_some_and(|e| e["ready"] == false)
            && f.get("ml/pod-c")
                .is_some_and(|e| e["ready"] == true && e["zone"] == "r-b" && e["version"] == "v2")
    });
    assert_eq!(
        feed(&control_at)["ml/pod-b"]["reason"],
        "not ready in its EndpointSlice"
    );

    // A gateway routes to what control discovered.
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);
    wait_until("gateway knows pod-a", Duration::from_secs(20), || {
        endpoints(admin).iter().any(|e| e["id"] == "ml/pod-a")
    });
    let a = infer(&client(), public, "/v2/models/llm/versions/v1/infer", &[]);
    assert_eq!((a.status, a.served_by.as_str()), (200, "pod-a"), "{:?}", a.body);

    // Watched changes: a readiness flip and a zone move.
    api.put("slices", slice("r-a", true), true);
    feed_has(&control_at, "pod-b ready", |f| f["ml/pod-b"]["ready"] == true);
    api.put("slices", slice("r-b", true), true);
    feed_has(&control_at, "pod-a moved to r-b", |f| f["ml/pod-a"]["zone"] == "r-b");

    // A dropped watch resumes: later changes still arrive.
    api.cut_watches();
    api.put("pods", pod(false), true);
    feed_has(&control_at, "pod-c not ready after the watch dropped", |f| {
        f["ml/pod-c"]["ready"] == false
    });

    // An expired resourceVersion (410 Gone) makes the watcher relist: a change made without any
    // watch event (node n1 cordoned) becomes visible only that way.
    api.gone.lock().unwrap().push("nodes");
    api.put("nodes", node("n1", "r-a", true, true), false);
    api.cut_watches();
    feed_has(&control_at, "cordoned node drains pod-a", |f| {
        f["ml/pod-a"]["drained"] == true && f["ml/pod-a"]["reason"] == "node cordoned"
    });

    // Deletion.
    api.delete("pods", "pod-c");
    feed_has(&control_at, "pod-c gone", |f| !f.contains_key("ml/pod-c"));
    assert!(control.child.try_wait().unwrap().is_none(), "control survived it all");
    control.kill();
}
