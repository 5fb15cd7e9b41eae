//! The simulator's knobs and load, shared by every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::llm::{LlmConfig, LlmSim};
use super::metrics::SimMetrics;
use super::SimArgs;

/// Failure and latency settings, changeable at run time through `POST /sim/control`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of inferences answered with `error_status`, 0..=1.
    pub error_rate: f64,
    /// Status of injected errors.
    pub error_status: u16,
    /// Inferences never answer (the connection stays open until the client gives up).
    pub hang: bool,
    /// Inferences close the connection without an answer.
    pub close: bool,
    /// Whether health and readiness say ready.
    pub ready: bool,
    /// Mean latency in milliseconds.
    pub latency_ms: f64,
    /// Uniform jitter in milliseconds.
    pub jitter_ms: f64,
    /// Token streams stop after their first event until this is set back to false (lets tests prove
    /// a proxy forwards a stream's first byte without waiting for the rest).
    pub stream_gate: bool,
    /// XID error code the simulated GPU reports (DCGM's `DCGM_FI_DEV_XID_ERRORS`); 0 is none.
    pub gpu_xid: u32,
    /// GPU load to report (0..=1) whatever the simulator's own load: utilization, KV cache and
    /// memory follow it (lets tests and demos show headroom-aware balancing).
    pub gpu_busy: Option<f64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_status: 500,
            hang: false,
            close: false,
            ready: true,
            latency_ms: 0.0,
            jitter_ms: 0.0,
            stream_gate: false,
            gpu_xid: 0,
            gpu_busy: None,
        }
    }
}

/// Everything a request handler needs.
pub struct SimState {
    /// Endpoint id echoed in answers.
    pub id: String,
    /// Model served.
    pub model: String,
    /// Version served.
    pub version: String,
    /// Batch slots.
    pub capacity: u32,
    /// Current faults.
    pub faults: RwLock<Faults>,
    /// Requests inside the server now.
    pub in_flight: AtomicU32,
    /// Inferences answered, by outcome.
    pub served: AtomicU64,
    /// Inferences answered with an injected error.
    pub failed: AtomicU64,
    /// Prometheus registry of the Triton- and vLLM-style metrics.
    pub metrics: SimMetrics,
    /// Open (true) unless `stream_gate` holds token streams after their first event.
    pub gate: tokio::sync::watch::Sender<bool>,
    /// The LLM server model (KV cache, prefill engine, LoRA slots) behind OpenAI-style requests.
    pub llm: LlmSim,
}

impl SimState {
    /// State from the command line.
    pub fn new(args: &SimArgs, addr: SocketAddr) -> Self {
        SimState {
            id: args.id.clone().unwrap_or_else(|| addr.to_string()),
            model: args.model.clone(),
            version: args.version.clone(),
            capacity: args.capacity.max(1),
            faults: RwLock::new(Faults {
                error_rate: args.error_rate,
                error_status: args.error_status,
                latency_ms: args.latency.as_secs_f64() * 1000.0,
                jitter_ms: args.jitter.as_secs_f64() * 1000.0,
                ..Faults::default()
            }),
            in_flight: AtomicU32::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            metrics: SimMetrics::new(&args.model, &args.version),
            gate: tokio::sync::watch::Sender::new(true),
            llm: LlmSim::new(LlmConfig {
                kv_blocks: args.kv_blocks.max(1),
                block_tokens: args.block_tokens.max(1),
                bytes_per_token: args.bytes_per_token.max(1),
                prefill_per_1k: args.prefill_per_1k_tokens,
                decode_per_token: args.decode_per_token.unwrap_or(args.latency),
                output_tokens: args.output_tokens.max(1),
                lora_slots: args.lora_slots.max(1),
                lora_load: args.lora_load,
            }),
        }
    }

    /// Requests running on the simulated GPU and waiting for a slot.
    pub fn load(&self) -> (u32, u32) {
        let n = self.in_flight.load(Ordering::Relaxed);
        (n.min(self.capacity), n.saturating_sub(self.capacity))
    }
}
