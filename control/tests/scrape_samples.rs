//! Scrape parsing against exposition samples in the shape Triton, vLLM and the DCGM exporter
//! serve, through to the headroom verdict.

use meridian_control::headroom::{score, server_report, Scoring};
use meridian_control::scrape::signals;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn triton() {
    let s = signals(&fixture("triton.prom"), 10.0).unwrap();
    assert!(close(s.waiting, 8.0), "pending summed over models: {s:?}");
    assert!(close(s.gpu_util, 0.71), "busiest GPU: {s:?}");
    assert!(
        close(s.memory, (42949672960.0 + 25769803776.0) / (2.0 * 85899345920.0)),
        "{s:?}"
    );
    assert_eq!((s.kv_cache, s.gpu_errors), (None, None));
    let h = score(&s, 10.0, &Scoring::default());
    assert!(close(h.score, 1.0 - 0.71), "{h:?}");
    assert!(!h.faulted);
}

#[test]
fn vllm_names_with_colons() {
    let s = signals(&fixture("vllm.prom"), 10.0).unwrap();
    assert!(
        close(s.waiting, 3.0) && close(s.running, 12.0) && close(s.kv_cache, 0.875),
        "{s:?}"
    );
    let h = score(&s, 10.0, &Scoring::default());
    assert!(close(h.score, 0.125), "the full KV cache decides: {h:?}");
    // The LLM-aware pick's report: queue, KV cache and the latest LoRA sample's adapters.
    let r = server_report(&s, 10.0, &Scoring::default()).unwrap();
    assert_eq!((r.waiting, r.running, r.max_lora), (3, 12, 4));
    assert_eq!(
        (r.lora_running.as_slice(), r.lora_waiting.as_slice()),
        (
            &["sql-lora".to_string(), "chat-lora".into()][..],
            &["legal-lora".to_string()][..]
        )
    );
    assert!((r.kv_usage - 0.875).abs() < 1e-9);
    assert_eq!(
        r.kv_tokens,
        Some(29172 * 16),
        "cache_config_info: GPU blocks x block size"
    );
    assert_eq!(server_report(&s, 26.0, &Scoring::default()), None, "stale: no report");
}

#[test]
fn dcgm_xid_faults_the_gpu() {
    let s = signals(&fixture("dcgm.prom"), 10.0).unwrap();
    assert!(close(s.gpu_util, 0.93) && close(s.memory, 61440.0 / 81920.0), "{s:?}");
    assert!(close(s.gpu_errors, 79.0), "{s:?}");
    let h = score(&s, 10.0, &Scoring::default());
    assert!(h.faulted, "{h:?}");
    // Fifteen seconds later without a new scrape, the same telemetry is unknown, not idle.
    assert_eq!(score(&s, 26.0, &Scoring::default()).score, None);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(signals("this is { not metrics", 0.0).is_err());
    let empty = signals("", 0.0).unwrap();
    assert_eq!(empty.waiting, None);
}
