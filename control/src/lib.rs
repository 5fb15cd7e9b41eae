//! Meridian's per-region control loop.
//!
//! [`headroom`] is the GPU-awareness core: it turns what a model server or GPU reports (Triton's
//! `nv_*`, vLLM's `vllm:*`, DCGM's `DCGM_FI_*`) into one headroom score per endpoint and a fault
//! flag, with stale telemetry treated as unknown rather than idle. Discovery, the state feed and the
//! canary runner (issue 7) build on it.

pub mod headroom;
