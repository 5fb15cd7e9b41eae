//! KServe InferenceService discovery end to end: a real `meridian control` watches
//! InferenceServices on a fake Kubernetes API (tests/common/kube.rs) through kube's dynamic API and
//! publishes the model they stand for; a real gateway whose config names no model serves it, its
//! two predictor revisions (pods found by their Knative revision label, each a sim backend) split
//! 90/10 by `canaryTrafficPercent`, sticky per user; the rollout finishing moves everyone.

mod common;

use std::time::Duration;

use common::kube::{self, kubeconfig, FakeApi};
use common::*;
use meridian_config::schema::KServe;
use serde_json::{json, Value};

const API: &str = "127.117.0.9:6443";
const PODS: [&str; 2] = ["127.117.1.1", "127.117.1.2"];
const REVS: [&str; 2] = ["iris-predictor-00001", "iris-predictor-00002"];

/// The iris InferenceService: revision 2 ready, `canary` percent of traffic on it (none: rolled
/// out).
fn isvc(canary: Option<u32>) -> Value {
    let mut predictor = json!({"sklearn": {"storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}});
    let mut status = json!({"latestReadyRevision": REVS[1], "latestCreatedRevision": REVS[1]});
    match canary {
        Some(c) => {
            predictor["canaryTrafficPercent"] = json!(c);
            status["latestRolledoutRevision"] = json!(REVS[0]);
        }
        None => status["latestRolledoutRevision"] = json!(REVS[1]),
    }
    json!({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-iris"},
        "spec": {"predictor": predictor},
        "status": {"components": {"predictor": status}, "url": "http://iris.ml.example.com"}
    })
}

/// Which revision's pod served user `u` (by the sim's id).
fn served(c: &reqwest::blocking::Client, public: &str, u: &str) -> String {
    let a = infer(c, public, "/v2/models/iris/infer", &[("x-user-id", u)]);
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.served_by
}

#[test]
fn inference_services_are_models_with_their_canary_split() {
    let dir = scratch("kserve");
    let mut w = World::new(117);
    let gw = w.gateway("r", &["r-a"]);
    w.kube_control("r");
    w.config.control.kserve = Some(KServe {
        namespaces: vec!["ml".into()],
        port: 8080,
        grpc_port: None,
        sticky_header: "x-user-id".into(),
    });
    let cfg = w.write(&dir);
    std::fs::write(dir.join("kubeconfig.yaml"), kubeconfig(&format!("http://{API}"))).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = FakeApi::new();
    api.put("nodes", kube::node("n1", "r-a", true, false), true);
    for (i, rev) in REVS.iter().enumerate() {
        let labels = json!({ "serving.knative.dev/revision": rev, "serving.kserve.io/inferenceservice": "iris" });
        api.put(
            "pods",
            kube::pod(&format!("{rev}-deployment-0"), PODS[i], "n1", labels, true),
            true,
        );
    }
    api.put("isvcs", isvc(Some(10)), true);
    rt.spawn(api.clone().serve(API));
    let _sims: Vec<_> = (0..2)
        .map(|i| sim(&format!("{}:8080", PODS[i]), REVS[i], "iris", REVS[i], &[]))
        .collect();
    let _control = start(
        "control",
        &["control", "--config", cfg.to_str().unwrap(), "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", Some("r-a"), admin, public);
    wait_until(
        "the gateway serves iris from both revisions",
        Duration::from_secs(30),
        || {
            let eps = endpoints(admin);
            REVS.iter()
                .all(|r| eps.iter().any(|e| e["version"] == *r && e["available"] == true))
        },
    );

    // A 90/10 split, sticky: 400 users, each asking twice.
    let c = client();
    let mut canary = 0;
    for u in 0..400 {
        let user = format!("user-{u}");
        let first = served(&c, public, &user);
        assert_eq!(served(&c, public, &user), first, "{user} stays on one revision");
        canary += usize::from(first == REVS[1]);
    }
    assert!((20..=64).contains(&canary), "about 10% on the canary: {canary} of 400");
    // A version pin reaches a revision directly.
    let a = infer(
        &client(),
        public,
        "/v2/models/iris/infer",
        &[("x-model-version", REVS[0])],
    );
    assert_eq!((a.status, a.served_by.as_str()), (200, REVS[0]));

    // The rollout finishes (no canary percent, revision 2 rolled out): everyone on revision 2.
    api.put("isvcs", isvc(None), true);
    wait_until("revision 1 leaves the table", Duration::from_secs(30), || {
        endpoints(admin).iter().all(|e| e["version"] != REVS[0])
    });
    for u in 0..50 {
        assert_eq!(served(&c, public, &format!("user-{u}")), REVS[1]);
    }
}
