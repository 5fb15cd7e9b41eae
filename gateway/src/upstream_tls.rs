//! TLS from the gateway to backends (`upstream.tls` of a model version): the CA bundle they are
//! verified against and the server name sent and checked, loaded once per config load so the
//! request path only clones an `Arc`.

use std::sync::Arc;

use meridian_config::snapshot::{ModelId, VersionId};
use meridian_config::Snapshot;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::{parse_x509, WrappedX509};

/// One model version's upstream TLS settings.
pub struct UpstreamTls {
    /// Trust anchors in pingora's form; the system roots when absent.
    pub ca: Option<Arc<CaType>>,
    /// The same anchors for the health checker's client.
    pub ca_der: Vec<Vec<u8>>,
    /// Server name to send and verify; the endpoint's IP when absent.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("anchors", &self.ca_der.len())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A version's upstream CA that does not load.
#[derive(Debug, thiserror::Error)]
#[error("models.{model}.versions.{version}.upstream.tls.ca: {source}")]
pub struct UpstreamTlsError {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// What is wrong with the file.
    pub source: meridian_config::PemError,
}

impl UpstreamTls {
    /// The name a connection to `ip` sends as SNI and verifies the certificate against.
    pub fn name_for(&self, ip: std::net::IpAddr) -> String {
        self.server_name.clone().unwrap_or_else(|| ip.to_string())
    }

    /// The upstream TLS of version `v` of model `m`; `None` for a plaintext version.
    pub fn load(snap: &Snapshot, m: ModelId, v: VersionId) -> Result<Option<Arc<UpstreamTls>>, UpstreamTlsError> {
        let (model, version) = (&snap.config.models[m], &snap.config.models[m].versions[v]);
        let Some(t) = &version.upstream.tls else {
            return Ok(None);
        };
        let ca_der: Vec<Vec<u8>> = match &t.ca {
            Some(path) => meridian_config::read_cert_chain(&snap.base_dir.join(path))
                .map_err(|source| UpstreamTlsError {
                    model: model.name.clone(),
                    version: version.name.clone(),
                    source,
                })?
                .into_iter()
                .map(|c| c.as_ref().to_vec())
                .collect(),
            None => Vec::new(),
        };
        let ca = (!ca_der.is_empty()).then(|| {
            let anchors: Vec<WrappedX509> = ca_der.iter().map(|d| WrappedX509::new(d.clone(), parse_x509)).collect();
            Arc::<CaType>::from(anchors.into_boxed_slice())
        });
        Ok(Some(Arc::new(UpstreamTls {
            ca,
            ca_der,
            server_name: t.server_name.clone(),
        })))
    }
}
