//! The gateway's decisions, apart from any I/O.
//!
//! Start at [`decide`]: it turns a request's head (a [`head::RequestHead`]: pingora's parts or the
//! HTTP/1 path's parsed block, read in place) and, for APIs that name the model in the body, the
//! peeked model into a [`decide::Decision`]: route to a model version, answer here, or read the
//! body first. From there, a routed request's endpoint comes from [`cluster::Cluster::pick`] (locality
//! levels from [`locality`], power of two choices over [`endpoint`] states, or for LLM requests the
//! prefix-cache and model-server aware pick of [`llm_pick`] over [`llm`]'s state), its retries are bounded
//! by [`budget`], its outcome feeds [`outlier`], and its concurrency slot comes from [`admission`]. A
//! version scaled to zero holds its requests in [`activation`] until an endpoint is ready.
//!
//! What this crate may import: the config crate's compiled [`meridian_config::Snapshot`] and schema
//! types, the clock, and plain data crates (http types, serde, rand, arc-swap, parking_lot for
//! writer-side locks, tokio's `sync` one-shots). It never imports pingora, tokio I/O or timers,
//! prometheus or an HTTP client: time comes in as an argument (`now`), randomness as an `Rng` or a
//! drawn number, and timers as a future the caller makes. The Cargo manifest is the boundary the
//! compiler enforces; the pingora adapter in `meridian-gateway` moves bytes in and out of these
//! functions, and `meridian explain` runs the same ones.

pub mod activation;
pub mod admission;
pub mod budget;
pub mod classify;
pub mod cluster;
pub mod decide;
pub mod endpoint;
pub mod grpc;
pub mod head;
pub mod health;
pub mod llm;
pub mod llm_pick;
pub mod locality;
pub mod openai;
pub mod outlier;
pub mod peek;
pub mod prefix;
pub mod reply;
pub mod select;
pub mod trace;

pub use meridian_clock as clock;
