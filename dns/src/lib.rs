//! Meridian's authoritative DNS with global server load balancing.
//!
//! [`gslb`] is the answer core: given a GSLB name's policy, each region's health and addresses, and
//! what is known of the client (EDNS Client Subnet or the resolver's address), it decides which
//! regions answer and with which ECS scope. It is plain Rust with no I/O, tested for every policy and
//! health combination; the hickory-server adapter (issue 6) only moves packets to and from it.

pub mod geo;
pub mod gslb;
