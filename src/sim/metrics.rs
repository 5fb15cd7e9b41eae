//! Triton- (`nv_*`) and vLLM-style (`vllm:*`) metrics that follow the simulator's load, so control
//! loops and tests can read GPU headroom from a backend exactly as they would from the real servers.

use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Opts, Registry, TextEncoder};

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
    pub fn render(&self, running: u32, waiting: u32, capacity: u32, xid: u32, busy: Option<f64>) -> String {
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
