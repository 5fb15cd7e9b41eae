//! Meridian's L7 inference gateway: the pingora shell around `meridian-gateway-core`.
//!
//! Where to start reading:
//! - [`proxy`]: the request path, one file per stage pingora calls (its module doc has the table);
//!   every decision on it comes from the core crate (`meridian_gateway_core::decide`, the pick,
//!   outlier detection, admission).
//!   The same stages also run behind our own HTTP/1 front (`proxy`'s `h1`), built on [`http1`]
//!   (request heads, backend connections and body framing on httparse), which carries the common
//!   inference call and hands the rest to pingora; [`listener`] decides which serves a connection.
//! - [`routes`]: the routing table a request reads (arc-swapped whole), and [`reloader`], which
//!   builds and installs it from the config file and the control loop's [`feed`].
//! - [`gateway`]: the process's parts made once at start, each consumer handed only what it uses;
//!   [`server`] wires them into pingora's server, listeners and background services.
//!
//! Off the request path: [`health`] (active checks), [`tasks`] (outlier interval, reload triggers,
//! the admin listener, graceful stop), [`admin`], [`subscription`] (the state feed), [`exposition`]
//! (Prometheus text over [`metrics`]' families), [`telemetry`] and [`accesslog`], [`shadow`],
//! [`tls`]/[`certs`]/[`upstream_tls`], [`lifecycle`] and [`signals`], and [`pool_sweep`] (idle
//! backend connections of our own upstream legs let go on a timer).
//!
//! What may import what: nothing here is imported by the core; [`metrics`], [`feed`], [`lifecycle`],
//! [`tls`] and [`upstream_tls`] import no other module of this crate but each other's leaves;
//! [`routes`] builds on those; [`reloader`] on [`routes`]; the services on [`reloader`] and
//! [`routes`]; only [`gateway`] and [`server`] see everything.

pub mod accesslog;
pub mod admin;
pub mod certs;
pub mod explain;
pub mod exposition;
pub mod feed;
pub mod gateway;
pub mod health;
pub mod http1;
pub mod http2;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod outliers;
pub mod pool_sweep;
pub mod proxy;
pub mod reloader;
pub mod routes;
pub mod server;
pub mod shadow;
pub mod signals;
pub mod status;
pub mod subscription;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod upstream_tls;
pub mod wake;

pub use server::{run, Options};
