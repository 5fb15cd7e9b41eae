//! TLS file checks: certificates and keys must exist and parse as PEM.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Ctx;
use crate::schema::ListenerTls;

pub(super) fn check_listener(cx: &mut Ctx<'_>, at: &str, t: &ListenerTls) {
    if t.certificates.is_empty() {
        cx.err(format!("{at}.certificates"), "TLS needs at least one certificate");
    }
    for (k, c) in t.certificates.iter().enumerate() {
        let cat = format!("{at}.certificates[{k}]");
        if c.server_names.is_empty() {
            cx.err(format!("{cat}.server_names"), "name at least one SNI name");
        }
        for (n, name) in c.server_names.iter().enumerate() {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if !crate::validate::dns::is_domain_name(bare) {
                cx.err(
                    format!("{cat}.server_names[{n}]"),
                    format!("`{name}` is not a DNS name"),
                );
            }
        }
        if let Err(e) = certs(&cx.base_dir.join(&c.cert)) {
            cx.err(format!("{cat}.cert"), e);
        }
        if let Err(e) = key(&cx.base_dir.join(&c.key)) {
            cx.err(format!("{cat}.key"), e);
        }
    }
    if let Some(ca) = &t.client_ca {
        if let Err(e) = certs(&cx.base_dir.join(ca)) {
            cx.err(format!("{at}.client_ca"), e);
        }
    }
}

/// Reads a PEM certificate chain; errors say what is wrong with the file.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

/// Reads a PEM private key; errors say what is wrong with the file.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| format!("{} holds no PEM private key: {e}", path.display()))
}
