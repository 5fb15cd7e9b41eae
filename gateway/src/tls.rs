//! TLS termination settings of a listener: certificates chosen by SNI (exact name, then a `*.`
//! wildcard, then the first certificate), swapped on config reload without dropping connections, and
//! client certificate verification when the listener names a client CA (mutual TLS).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::schema::ListenerTls;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert, RootCertStore, WebPkiClientVerifier};

/// Why a listener's certificates do not load.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rustls has no crypto provider (a build problem).
    #[error("no TLS crypto provider")]
    NoProvider,
    /// A certificate or key file is missing or not PEM.
    #[error(transparent)]
    File(#[from] meridian_config::PemError),
    /// The key does not load as a signing key.
    #[error("{}: {reason}", key.display())]
    BadKey {
        /// The key file.
        key: std::path::PathBuf,
        /// rustls's words.
        reason: String,
    },
}

/// Certificates of one listener.
#[derive(Debug, Default)]
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    /// Loads every certificate of `tls`, paths relative to `base`.
    pub fn load(tls: &ListenerTls, base: &Path) -> Result<CertSet, CertError> {
        pingora::tls::install_default_crypto_provider();
        let provider = CryptoProvider::get_default().ok_or(CertError::NoProvider)?;
        let mut set = CertSet::default();
        for c in &tls.certificates {
            let chain = meridian_config::read_cert_chain(&base.join(&c.cert))?;
            let key = meridian_config::read_private_key(&base.join(&c.key))?;
            let signer = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| CertError::BadKey {
                    key: c.key.clone(),
                    reason: e.to_string(),
                })?;
            let ck = Arc::new(CertifiedKey::new(chain, signer));
            set.default.get_or_insert_with(|| ck.clone());
            for name in &c.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => set.wildcard.insert(suffix.to_string(), ck.clone()),
                    None => set.exact.insert(name, ck.clone()),
                };
            }
        }
        Ok(set)
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = sni.and_then(|n| {
            let n = n.to_ascii_lowercase();
            self.exact
                .get(&n)
                .or_else(|| n.split_once('.').and_then(|(_, rest)| self.wildcard.get(rest)))
                .cloned()
        });
        found.or_else(|| self.default.clone())
    }
}

/// Chooses a listener's certificate by SNI from a set that reloads swap.
pub struct SniResolver {
    /// The current certificates.
    pub certs: ArcSwap<CertSet>,
    /// `min_version: "1.3"`: refuse clients that do not offer TLS 1.3. pingora's rustls acceptor
    /// fixes the versions to 1.2 and 1.3 (1.0 and 1.1 never complete); a client offering 1.3 gets
    /// it (rustls prefers it), so refusing hellos without 1.3 cipher suites leaves only 1.3.
    pub tls13_only: bool,
}

/// Whether a ClientHello offers a TLS 1.3 cipher suite (0x1301..=0x1305, RFC 8446 B.4).
fn offers_tls13(suites: impl IntoIterator<Item = u16>) -> bool {
    suites.into_iter().any(|s| (0x1301..=0x1305).contains(&s))
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.tls13_only && !offers_tls13(hello.cipher_suites().iter().map(|s| u16::from(*s))) {
            tracing::debug!("TLS client without TLS 1.3 refused (min_version 1.3)");
            return None;
        }
        self.certs.load().pick(hello.server_name())
    }
}

/// The pingora TLS settings of a listener, and its resolver (kept to swap certificates on reload).
pub fn settings(tls: &ListenerTls, base: &Path, h2: bool) -> anyhow::Result<(TlsSettings, Arc<SniResolver>)> {
    let resolver = Arc::new(SniResolver {
        certs: ArcSwap::from_pointee(CertSet::load(tls, base)?),
        tls13_only: tls.min_version == meridian_config::schema::TlsVersion::Tls13,
    });
    let callbacks: pingora::listeners::TlsAcceptCallbacks = Box::new(NoCallbacks);
    let mut s = TlsSettings::with_callbacks(callbacks)?;
    s.set_cert_resolver(resolver.clone());
    if let Some(ca) = &tls.client_ca {
        let mut roots = RootCertStore::empty();
        for cert in meridian_config::read_cert_chain(&base.join(ca))? {
            roots.add(cert)?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
        s.set_client_cert_verifier(verifier);
    }
    if h2 {
        s.enable_h2();
    }
    Ok((s, resolver))
}

/// No post-handshake work.
struct NoCallbacks;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}
