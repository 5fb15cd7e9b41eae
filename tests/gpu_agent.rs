//! `meridian gpu-agent` as a real process. On a machine without an NVIDIA driver (CI) it must say
//! so in both its views and keep running; where NVML loads, it lists the GPUs.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn gpu_agent_reports_nvml_state_and_keeps_running() {
    let dir = scratch("gpu-agent");
    let addr = "127.103.0.1:9400";
    let mut agent = start(
        "gpu-agent",
        &["gpu-agent", "--listen", addr, "--interval", "200ms"],
        &dir.join("agent.log"),
        "listening on",
    );
    let c = client();
    let mut view = serde_json::Value::Null;
    wait_until("a first reading (or NVML's absence)", Duration::from_secs(20), || {
        view = c.get(format!("http://{addr}/gpus")).send().unwrap().json().unwrap();
        view["updated_unix"].as_u64().unwrap_or(0) > 0
    });
    let metrics = scrape(addr);
    assert_promtool_accepts("gpu-agent metrics", &metrics);
    if view["nvml_available"] == true {
        let gpus = view["gpus"].as_array().unwrap();
        assert!(!gpus.is_empty(), "{view}");
        assert!(gpus[0]["memory_total_bytes"].as_u64().unwrap() > 0, "{view}");
        assert_eq!(metric_sum(&metrics, "meridian_gpu_nvml_available", &[]), 1.0);
        println!("NVML readings: {view}");
    } else {
        assert!(view["error"].as_str().unwrap().contains("NVML"), "{view}");
        assert_eq!(view["gpus"], serde_json::json!([]));
        assert_eq!(metric_sum(&metrics, "meridian_gpu_nvml_available", &[]), 0.0);
    }
    // Still up and answering.
    assert!(agent.child.try_wait().unwrap().is_none(), "the agent exited");
    assert_eq!(c.get(format!("http://{addr}/healthz")).send().unwrap().status(), 200);
}
