//! Meridian's operator-facing config.
//!
//! One YAML file describes the whole system: regions, models and routing, DNS, control and
//! observability. This crate owns its schema ([`schema`]), loading with precise errors
//! ([`load_file`]: every problem as `FILE:LINE:COL: field.path: message`, all at once), the JSON
//! Schema for editors ([`json_schema`]) and the compiled, immutable [`Snapshot`] that the gateway, DNS
//! server and control loop consume instead of raw YAML.

pub mod admin_auth;
pub mod build;
pub mod error;
pub mod feed;
mod load;
pub mod names;
pub mod pem;
pub mod schema;
pub mod snapshot;
pub mod source;
mod typecheck;
pub mod units;
mod validate;
pub mod watch;
pub mod write;

pub use error::{ConfigErrors, Diagnostic};
pub use load::{load_file, load_str, Loaded};
pub use pem::{certs as read_cert_chain, key as read_private_key, PemError};
pub use schema::Config;
pub use snapshot::Snapshot;
pub use watch::ConfigFile;
pub use write::to_yaml;

/// The JSON Schema of the config file, for editors that validate YAML as it is typed.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Config);
    serde_json::to_value(schema).unwrap_or_default()
}
