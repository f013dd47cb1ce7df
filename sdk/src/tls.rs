//! Which certificates a client trusts when the server URL is `wss://`.
//!
//! By default the web PKI roots compiled in (`webpki-roots`), as a browser would. A
//! deployment with its own certificate authority (or a test with a generated
//! certificate) gives a PEM file of CA certificates instead; then only those are
//! trusted. `ws://` URLs ignore this.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::Connector;

use crate::error::SdkError;

/// The roots trusted for `wss://` servers.
#[derive(Clone, Default)]
pub struct TlsTrust(Option<Connector>);

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("TlsTrust(web PKI roots)"),
            Some(_) => f.write_str("TlsTrust(CA file)"),
        }
    }
}

impl TlsTrust {
    /// The web PKI roots compiled into the SDK.
    pub fn web_pki() -> TlsTrust {
        TlsTrust(None)
    }

    /// Only the CA certificates in the PEM file at `path`.
    pub fn ca_file(path: &Path) -> Result<TlsTrust, SdkError> {
        let invalid = |reason: String| {
            SdkError::InvalidInput(format!("CA file {}: {reason}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("no certificate in it".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsTrust(Some(Connector::Rustls(Arc::new(config)))))
    }

    /// The connector for `tokio-tungstenite` (`None`: its built-in roots).
    pub(crate) fn connector(&self) -> Option<Connector> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        assert!(matches!(
            TlsTrust::ca_file(&path),
            Err(SdkError::InvalidInput(_))
        ));
        std::fs::write(&path, "nothing here").unwrap();
        let err = TlsTrust::ca_file(&path).unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
