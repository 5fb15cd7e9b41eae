//! GPU headroom from model-server and GPU telemetry (Gateway API Inference Extension scorers, Triton,
//! vLLM and DCGM metric names).
//!
//! Headroom is 1.0 for an idle endpoint and falls towards 0 as its queue, KV cache, GPU or memory fill
//! up; the gateway divides an endpoint's cost by it. The most constrained signal wins (a full KV
//! cache throttles an LLM server however idle its GPU looks). An XID or ECC error marks the GPU
//! faulted, and control drains its endpoints. Telemetry older than `stale_after` is unknown (`None`):
//! the gateway then balances on latency and load alone instead of trusting a stale "idle".

use meridian_config::feed::ServerReport;

/// One endpoint's latest telemetry; every field is optional because each server reports a subset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    /// Requests queued and not yet running: `nv_inference_pending_request_count`,
    /// `vllm:num_requests_waiting`.
    pub waiting: Option<f64>,
    /// Requests running: `vllm:num_requests_running`.
    pub running: Option<f64>,
    /// KV-cache usage, 0..=1: `vllm:kv_cache_usage_perc`.
    pub kv_cache: Option<f64>,
    /// GPU utilization, 0..=1: `nv_gpu_utilization`, `DCGM_FI_DEV_GPU_UTIL` / 100.
    pub gpu_util: Option<f64>,
    /// GPU memory used, 0..=1: `nv_gpu_memory_used_bytes / total`, `DCGM_FI_DEV_FB_USED / (USED + FREE)`.
    pub memory: Option<f64>,
    /// XID errors seen (`DCGM_FI_DEV_XID_ERRORS`) or uncorrected ECC errors (NVML).
    pub gpu_errors: Option<f64>,
    /// LoRA adapters: `vllm:lora_requests_info`'s labels.
    pub lora: Option<LoraSignals>,
    /// Tokens the KV cache holds: `vllm:cache_config_info`'s `num_gpu_blocks` x `block_size`.
    pub kv_tokens: Option<u64>,
    /// When the telemetry was collected, in seconds on the collector's monotonic clock.
    pub at: f64,
}

/// What a vLLM server says of its LoRA adapters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoraSignals {
    /// `max_lora`: adapters it can hold at once.
    pub max: u32,
    /// `running_lora_adapters`.
    pub running: Vec<String>,
    /// `waiting_lora_adapters`.
    pub waiting: Vec<String>,
}

/// Tuning of the score.
#[derive(Clone, Copy, Debug)]
pub struct Scoring {
    /// Queue depth at which the queue alone leaves no headroom.
    pub queue_full: f64,
    /// Telemetry older than this many seconds is unknown.
    pub stale_after: f64,
}

impl Default for Scoring {
    fn default() -> Self {
        // Default stale bound: 3 intervals of the default 5 s telemetry interval.
        Scoring {
            queue_full: 16.0,
            stale_after: 15.0,
        }
    }
}

/// The verdict on one endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Headroom {
    /// 0..=1, or `None` when telemetry is missing or stale.
    pub score: Option<f64>,
    /// The GPU reported a fault; its endpoints should be drained.
    pub faulted: bool,
}

/// Scores `s` at time `now` (same clock as `s.at`).
pub fn score(s: &Signals, now: f64, cfg: &Scoring) -> Headroom {
    let stale = now - s.at > cfg.stale_after;
    let faulted = !stale && s.gpu_errors.is_some_and(|e| e > 0.0);
    if stale {
        return Headroom {
            score: None,
            faulted: false,
        };
    }
    let ratios = [s.waiting.map(|w| w / cfg.queue_full), s.kv_cache, s.gpu_util, s.memory];
    let worst = ratios
        .iter()
        .flatten()
        .map(|r| r.clamp(0.0, 1.0))
        .fold(None, |acc: Option<f64>, r| Some(acc.map_or(r, |a| a.max(r))));
    Headroom {
        score: worst.map(|w| 1.0 - w),
        faulted,
    }
}

/// What the LLM-aware pick reads of a model server, from fresh telemetry that has a queue or KV
/// cache figure; `None` when it is stale or the server reports neither (not an LLM server).
pub fn server_report(s: &Signals, now: f64, cfg: &Scoring) -> Option<ServerReport> {
    if now - s.at > cfg.stale_after || (s.waiting.is_none() && s.kv_cache.is_none()) {
        return None;
    }
    let lora = s.lora.clone().unwrap_or_default();
    Some(ServerReport {
        waiting: s.waiting.unwrap_or(0.0).max(0.0) as u32,
        running: s.running.unwrap_or(0.0).max(0.0) as u32,
        kv_usage: s.kv_cache.unwrap_or(0.0).clamp(0.0, 1.0),
        max_lora: lora.max,
        lora_running: lora.running,
        lora_waiting: lora.waiting,
        kv_tokens: s.kv_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_constrained_signal_wins() {
        let s = Signals {
            waiting: Some(4.0),
            kv_cache: Some(0.9),
            gpu_util: Some(0.3),
            at: 100.0,
            ..Signals::default()
        };
        let h = score(&s, 101.0, &Scoring::default());
        assert!((h.score.unwrap() - 0.1).abs() < 1e-9, "{h:?}");
        assert!(!h.faulted);
        let idle = Signals {
            waiting: Some(0.0),
            gpu_util: Some(0.0),
            at: 100.0,
            ..Signals::default()
        };
        assert_eq!(score(&idle, 100.0, &Scoring::default()).score, Some(1.0));
        let flooded = Signals {
            waiting: Some(64.0),
            at: 100.0,
            ..Signals::default()
        };
        assert_eq!(score(&flooded, 100.0, &Scoring::default()).score, Some(0.0));
    }

    #[test]
    fn stale_is_unknown_not_idle() {
        let s = Signals {
            gpu_util: Some(0.0),
            gpu_errors: Some(3.0),
            at: 100.0,
            ..Signals::default()
        };
        assert_eq!(
            score(&s, 116.0, &Scoring::default()),
            Headroom {
                score: None,
                faulted: false
            }
        );
        assert_eq!(
            score(
                &Signals {
                    at: 100.0,
                    ..Signals::default()
                },
                100.0,
                &Scoring::default()
            )
            .score,
            None,
            "no signal at all is unknown"
        );
    }

    #[test]
    fn gpu_errors_fault_the_endpoint() {
        let s = Signals {
            gpu_util: Some(0.5),
            gpu_errors: Some(1.0),
            at: 100.0,
            ..Signals::default()
        };
        assert!(score(&s, 100.0, &Scoring::default()).faulted);
    }
}
