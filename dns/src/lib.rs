//! Meridian's authoritative DNS with global server load balancing.
//!
//! The functional core — [`gslb`] (which regions answer a GSLB name), [`geo`] (client placement),
//! [`zones`] (compiled zone data) and [`answer`] (one query to one answer: static records, GSLB names,
//! NXDOMAIN vs NODATA, REFUSED) — is plain Rust without I/O and is tested for every policy and health
//! combination. The shell serves it over UDP ([`udp`]) and TCP ([`tcp`]), both through [`respond`]
//! (hickory-proto parses and encodes), and runs region probes
//! ([`probe`]), reloads ([`state`]) and the admin API ([`admin`]).

pub mod admin;
pub mod answer;
pub mod cookie;
pub mod feed;
pub mod geo;
pub mod gslb;
pub mod metrics;
pub mod probe;
pub mod reconcile;
pub mod reply;
pub mod respond;
pub mod rrl;
pub mod server;
pub mod state;
pub mod status;
pub mod tcp;
pub mod udp;
pub mod zones;

pub use server::run;
