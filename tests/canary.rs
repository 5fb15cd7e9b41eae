//! Progressive canaries end to end: a real control loop runs a plan against a real gateway's
//! metrics while clients send traffic. Healthy canary: the plan steps through its weights (an
//! operator pause and resume on the way) and promotes; failing canary: the first analysis rolls
//! it back, and a restarted control loop remembers that from its state file.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meridian_config::schema::{Analysis, CanaryPlan, CanaryStep};
use serde_json::Value;

/// One gateway and control loop; llm v1 (backend a) and v2 (b) split 100/0 sticky on x-user-id,
/// and a plan stepping v2 to 30% and 60%, a second each, while its success rate holds at 95%.
fn world(net: u8) -> (World, Gw, String, [String; 2]) {
    let mut w = World::new(net);
    let gw = w.gateway("r", &["r-a"]);
    let control = w.control("r");
    w.config.gateway.retries.attempts = 0;
    w.config.gateway.outlier_detection.enabled = false;
    let backends = [("a", "v1"), ("b", "v2")].map(|(id, v)| w.backend("llm", v, id, "r", "r-a"));
    w.route("llm", split(&[("v1", 100), ("v2", 0)], Some("x-user-id")));
    w.config.control.state_file = Some("canary-state.json".into());
    w.config.canaries.push(CanaryPlan {
        name: "llm-v2".into(),
        model: "llm".into(),
        route: None,
        stable: "v1".into(),
        canary: "v2".into(),
        steps: [30, 60].map(|weight| CanaryStep { weight, pause: secs(1) }).into(),
        analysis: Analysis {
            interval: ms(300),
            window: secs(5),
            min_requests: 10,
            success_rate: 0.95,
            ..Analysis::default()
        },
    });
    (w, gw, control, backends)
}

/// Clients with a new user id per request (the split is sticky on it), until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(public: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let worker = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let c = client();
                for n in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    infer(
                        &c,
                        public,
                        "/v2/models/llm/infer",
                        &[("x-user-id", &format!("user-{n}"))],
                    );
                }
            }
        });
        Traffic {
            stop,
            worker: Some(worker),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn plan(control: &str) -> Value {
    let v: Value = client()
        .get(format!("http://{control}/v1/canaries"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["canaries"][0].clone()
}

fn command(control: &str, cmd: &str) -> (u16, Value) {
    let r = client()
        .post(format!("http://{control}/v1/canaries/llm-v2/{cmd}"))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// Versions serving 40 fresh users.
fn versions_now(public: &str) -> Vec<String> {
    let c = client();
    let mut v: Vec<String> = (0..40)
        .map(|i| {
            infer(
                &c,
                public,
                "/v2/models/llm/infer",
                &[("x-user-id", &format!("probe-{i}"))],
            )
            .version
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn a_healthy_canary_steps_up_and_is_promoted() {
    let dir = scratch("canary-promote");
    let (w, gw, control, backends) = world(104);
    let cfg = w.write(&dir);
    let _a = sim(&backends[0], "a", "llm", "v1", &[]);
    let _b = sim(&backends[1], "b", "llm", "v2", &[]);
    let control = control.as_str();
    let _control = start(
        "control",
        &["control", "--config", cfg.to_str().unwrap(), "--region", "r"],
        &dir.join("control.log"),
        "listening on",
    );
    let (public, admin): (&'static str, &'static str) = (gw.public.leak(), gw.admin.leak());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let _traffic = Traffic::start(public);

    wait_until("the plan starts at 30%", Duration::from_secs(20), || {
        plan(control)["weight"] == 30
    });
    // The gateway's status page shows the plan where it stands.
    wait_until("the status page shows step 1 at 30%", Duration::from_secs(20), || {
        let cells = status_cells(admin);
        cells["canary/llm-v2/weight"][0] == "30%"
            && cells["canary/llm-v2/step"][0]
                .as_str()
                .is_some_and(|s| s.starts_with("1 of "))
    });
    // The gateway splits by the published weight: fresh users land on both versions.
    wait_until("traffic reaches the canary", Duration::from_secs(20), || {
        versions_now(public) == ["v1", "v2"]
    });
    // An operator holds the rollout, then lets it go on.
    let (status, p) = command(control, "pause");
    assert_eq!((status, p["phase"].as_str()), (200, Some("paused")), "{p}");
    let (status, p) = command(control, "resume");
    assert_eq!((status, p["phase"].as_str()), (200, Some("progressing")), "{p}");

    wait_until("promoted", Duration::from_secs(60), || {
        plan(control)["phase"] == "promoted"
    });
    wait_until("all traffic on v2", Duration::from_secs(20), || {
        versions_now(public) == ["v2"]
    });
    let m = scrape(control);
    assert_eq!(
        metric_sum(&m, "meridian_canary_promotions_total", &["plan=\"llm-v2\""]),
        1.0
    );
    assert_eq!(metric_sum(&m, "meridian_canary_weight", &["version=\"v2\""]), 100.0);
    assert_promtool_accepts("control's metrics with a canary", &m);
    let saved = std::fs::read_to_string(dir.join("canary-state.json")).unwrap();
    assert!(saved.contains("\"promoted\""), "{saved}");
    // A finished plan takes no more commands.
    assert_eq!(command(control, "abort").0, 409);
}

#[test]
fn a_failing_canary_is_rolled_back_and_stays_rolled_back_across_restarts() {
    let dir = scratch("canary-rollback");
    let (w, gw, control, backends) = world(105);
    let cfg = w.write(&dir);
    let _a = sim(&backends[0], "a", "llm", "v1", &[]);
    let _b = sim(
        &backends[1],
        "b",
        "llm",
        "v2",
        &["--error-rate", "1", "--error-status", "500"],
    );
    let control = control.as_str();
    let control_args = ["control", "--config", cfg.to_str().unwrap(), "--region", "r"];
    let mut first = start("control", &control_args, &dir.join("control.log"), "listening on");
    let (public, admin): (&'static str, &'static str) = (gw.public.leak(), gw.admin.leak());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let traffic = Traffic::start(public);

    wait_until("rolled back", Duration::from_secs(60), || {
        plan(control)["phase"] == "rolled_back"
    });
    let p = plan(control);
    assert!(p["reason"].as_str().unwrap().starts_with("success rate"), "{p}");
    assert_eq!(p["weight"], 0);
    wait_until("all traffic back on v1", Duration::from_secs(20), || {
        versions_now(public) == ["v1"]
    });
    // The gateway's status page shows the rollback and the analysis that caused it.
    wait_until("the status page shows the rollback", Duration::from_secs(20), || {
        let cells = status_cells(admin);
        cells["canary/llm-v2/phase"] == serde_json::json!(["rolled_back", "bad"])
            && cells["canary/llm-v2/weight"][0] == "0%"
            && cells["canary/llm-v2/analysis"][0]
                .as_str()
                .is_some_and(|a| a.contains("(1 failed)"))
    });
    assert_eq!(
        metric_sum(
            &scrape(control),
            "meridian_canary_rollbacks_total",
            &["plan=\"llm-v2\""]
        ),
        1.0
    );
    drop(traffic);

    // A new control process resumes from the state file: still rolled back, never restarted.
    first.kill();
    let _second = start("control", &control_args, &dir.join("control2.log"), "listening on");
    wait_until("progress restored", Duration::from_secs(20), || {
        plan(control)["phase"] == "rolled_back"
    });
    assert_eq!(plan(control)["weight"], 0);
    assert_eq!(versions_now(public), ["v1"]);
}
