//! Meridian's L7 inference gateway.
//!
//! A functional core — [`classify`] (which API, model and version), [`select`] (version selection),
//! [`locality`] and [`cluster`] (priority levels and the power-of-two-choices pick), [`outlier`]
//! (ejection), [`budget`] (retry budget) — that is plain Rust with an injectable clock and RNG, and a
//! thin shell that adapts it to pingora.

pub mod accesslog;
pub mod admin;
pub mod admission;
pub mod budget;
pub mod classify;
pub mod clock;
pub mod cluster;
pub mod drain;
pub mod endpoint;
pub mod errors;
pub mod feed;
pub mod grpc;
pub mod health;
pub mod locality;
pub mod metrics;
pub mod openai;
pub mod outlier;
pub mod proxy;
pub mod routes;
pub mod select;
pub mod server;
pub mod shadow;
pub mod signals;
pub mod slowclient;
pub mod state;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod upstream_tls;

pub use server::{run, Options};
