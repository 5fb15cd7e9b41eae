//! Reading the PEM files a config names (listener certificates and keys, client and upstream CAs):
//! shared by validation, which checks them at load time, and the gateway, which loads them.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What is wrong with a PEM file, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM certificates.
    #[error("{} is not a PEM certificate file: {reason}", path.display())]
    NotCertificates {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        reason: String,
    },
    /// The file parses but holds no certificate.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key.
    #[error("{} holds no PEM private key: {reason}", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.into(),
        source,
    })
}

/// Reads a PEM certificate chain.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let text = read(path)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::NotCertificates {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(PemError::NoCertificate { path: path.into() });
    }
    Ok(chain)
}

/// Reads a PEM private key.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| PemError::NoKey {
        path: path.into(),
        reason: e.to_string(),
    })
}
