//! LLM-aware routing's parts, in process: which endpoint's KV cache likely holds a prompt's prefix
//! ([`blocks`], [`index`]), and what the model servers report of themselves and the prefill in
//! flight to them ([`state`]). These import nothing else of the crate; the pick that weighs them
//! against the gateway's own load is [`crate::llm_pick`]. Pure and lock-free like the rest of the
//! core: the shell hashes the prompt, calls the pick through
//! [`crate::cluster::Cluster::pick_llm`], and records what it sent. After the answer,
//! [`usage`] reads the tokens it reports and [`limit`] charges them to the tenant's token bucket.

pub mod blocks;
pub mod index;
pub use meridian_ratelimit as limit;
pub mod state;
pub mod usage;
