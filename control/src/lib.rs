//! Meridian's per-region control loop.
//!
//! [`headroom`] is the GPU-awareness core: it turns what a model server or GPU reports (Triton's
//! `nv_*`, vLLM's `vllm:*`, DCGM's `DCGM_FI_*`) into one headroom score per endpoint and a fault
//! flag, with stale telemetry treated as unknown rather than idle. [`scrape`] reads those metrics,
//! [`collect`] runs a round over a region's endpoints, [`feed`] publishes the result as the
//! versioned state feed gateways and DNS servers subscribe to, and [`server`] runs it all.
//! [`agent`] is `meridian gpu-agent`: per-GPU health from NVML ([`nvml`], behind [`gpu::GpuSource`]).

pub mod agent;
pub mod analysis;
pub mod canary;
pub mod collect;
pub mod discovery;
pub mod feed;
pub mod gpu;
pub mod headroom;
pub mod kserve;
pub mod nvml;
pub mod runner;
pub mod scale;
pub mod scaler;
pub mod scrape;
pub mod server;

pub use server::run;
