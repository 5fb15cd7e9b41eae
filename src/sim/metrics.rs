//! Triton- (`nv_*`) and vLLM-style (`vllm:*`) metrics that follow the simulator's load, so control
//! loops and tests can read GPU headroom from a backend exactly as they would from the real servers.

use std::sync::atomic::Ordering;

use prometheus::{Encoder, Gauge, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::llm::LlmSim;

/// The simulator's metric families.
pub struct SimMetrics {
    registry: Registry,
    pending: IntGauge,
    gpu_util: Gauge,
    mem_used: IntGauge,
    running: IntGauge,
    waiting: IntGauge,
    kv_cache: Gauge,
    xid: IntGauge,
    success: IntCounter,
    failure: IntCounter,
    llm: LlmMetrics,
}

/// The vLLM families of the LLM server model: cache config, LoRA adapters, token counters.
struct LlmMetrics {
    cache_config: IntGaugeVec,
    lora: IntGaugeVec,
    prompt: IntGauge,
    generation: IntGauge,
    cache_queries: IntGauge,
    cache_hits: IntGauge,
}

/// Simulated GPU memory: 80 GiB, like an H100.
const MEM_TOTAL: i64 = 80 << 30;

impl SimMetrics {
    /// Metric families labelled with the model and version.
    pub fn new(model: &str, version: &str) -> Self {
        let registry = Registry::new();
        let mv = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("model", model)
                .const_label("version", version)
        };
        let gpu = |name: &str, help: &str| Opts::new(name, help).const_label("gpu_uuid", "GPU-sim-0");
        let vllm = |name: &str, help: &str| Opts::new(name, help).const_label("model_name", model);
        let pending = IntGauge::with_opts(mv(
            "nv_inference_pending_request_count",
            "Requests waiting for execution",
        ))
        .expect("static metric definition");
        let gpu_util = Gauge::with_opts(gpu("nv_gpu_utilization", "GPU utilization rate, 0.0 - 1.0"))
            .expect("static metric definition");
        let mem_used = IntGauge::with_opts(gpu("nv_gpu_memory_used_bytes", "GPU used memory in bytes"))
            .expect("static metric definition");
        let mem_total = IntGauge::with_opts(gpu("nv_gpu_memory_total_bytes", "GPU total memory in bytes"))
            .expect("static metric definition");
        let running = IntGauge::with_opts(vllm("vllm:num_requests_running", "Requests running on the GPU"))
            .expect("static metric definition");
        let waiting = IntGauge::with_opts(vllm("vllm:num_requests_waiting", "Requests waiting to be processed"))
            .expect("static metric definition");
        let kv_cache = Gauge::with_opts(vllm("vllm:kv_cache_usage_perc", "KV-cache usage, 1 means 100 percent"))
            .expect("static metric definition");
        let success = IntCounter::with_opts(mv("nv_inference_request_success", "Successful inference requests"))
            .expect("static metric definition");
        let failure = IntCounter::with_opts(mv("nv_inference_request_failure", "Failed inference requests"))
            .expect("static metric definition");
        let xid = IntGauge::with_opts(
            Opts::new("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered").const_label("gpu", "0"),
        )
        .expect("static metric definition");
        for c in [&pending, &mem_used, &mem_total, &running, &waiting, &xid] {
            let _ = registry.register(Box::new(c.clone()));
        }
        let _ = registry.register(Box::new(gpu_util.clone()));
        let _ = registry.register(Box::new(kv_cache.clone()));
        let _ = registry.register(Box::new(success.clone()));
        let _ = registry.register(Box::new(failure.clone()));
        // Total memory never changes: set once; the registry keeps the gauge.
        mem_total.set(MEM_TOTAL);
        let vllm_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(vllm(name, help), labels).expect("static metric definition");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let vllm_total = |name: &str, help: &str| {
            // vLLM's token counters; exposed as gauges of the running totals (the names keep
            // `_total`, as vLLM's do).
            let g = IntGauge::with_opts(vllm(name, help)).expect("static metric definition");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let llm = LlmMetrics {
            cache_config: vllm_vec(
                "vllm:cache_config_info",
                "Information of the KV cache config",
                &["block_size", "num_gpu_blocks"],
            ),
            lora: vllm_vec(
                "vllm:lora_requests_info",
                "Running stats on LoRA requests",
                &["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
            ),
            prompt: vllm_total("vllm:prompt_tokens_total", "Prompt tokens processed"),
            generation: vllm_total("vllm:generation_tokens_total", "Generation tokens processed"),
            cache_queries: vllm_total(
                "vllm:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache",
            ),
            cache_hits: vllm_total(
                "vllm:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache",
            ),
        };
        SimMetrics {
            registry,
            pending,
            gpu_util,
            mem_used,
            running,
            waiting,
            kv_cache,
            xid,
            success,
            failure,
            llm,
        }
    }

    /// Counts an answered inference.
    pub fn count(&self, ok: bool) {
        if ok {
            self.success.inc()
        } else {
            self.failure.inc()
        }
    }

    /// Prometheus text for the current load.
    pub fn render(
        &self,
        (running, waiting): (u32, u32),
        capacity: u32,
        xid: u32,
        busy: Option<f64>,
        llm: &LlmSim,
    ) -> String {
        let waiting = waiting + llm.waiting.load(Ordering::Relaxed);
        let cfg = llm.config();
        let m = &self.llm;
        m.cache_config.reset();
        m.cache_config
            .with_label_values(&[&cfg.block_tokens.to_string(), &cfg.kv_blocks.to_string()])
            .set(1);
        m.lora.reset();
        m.lora
            .with_label_values(&[&cfg.lora_slots.to_string(), &llm.adapters().join(","), ""])
            .set(1);
        let total = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as i64;
        m.prompt.set(total(&llm.prompt_tokens));
        m.generation.set(total(&llm.generation_tokens));
        m.cache_queries.set(total(&llm.prompt_tokens));
        m.cache_hits.set(total(&llm.cached_tokens));
        self.xid.set(i64::from(xid));
        let util = busy.map_or(f64::from(running) / f64::from(capacity.max(1)), |b| b.clamp(0.0, 1.0));
        self.pending.set(i64::from(waiting));
        self.gpu_util.set(util);
        // Weights take 20 GiB; activations and KV cache grow with the batch.
        self.mem_used
            .set((20 << 30) + (util * 56.0 * (1u64 << 30) as f64) as i64);
        self.running.set(i64::from(running));
        self.waiting.set(i64::from(waiting));
        self.kv_cache.set((util * 0.95).min(1.0));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
