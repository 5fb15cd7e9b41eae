//! HTTP/2 as the gateway's own upstream leg speaks it to cleartext backends (gRPC model servers,
//! versions with `upstream.h2`), on the h2 crate: the pool of multiplexed connections and one
//! request's exchange ([`client`]). Clients' HTTP/2 connections stay pingora's; what a request is
//! and where it goes is decided by the same stages as on every other path ([`crate::proxy`]).

pub mod client;
