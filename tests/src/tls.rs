//! TLS for tests: a self-signed certificate for `127.0.0.1` and `localhost`, generated
//! per test, and a client connector that trusts exactly that certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// A certificate and its key, written as PEM files.
#[derive(Debug)]
pub struct TestCertificate {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// The private key (PEM).
    pub key_file: PathBuf,
    der: CertificateDer<'static>,
}

impl TestCertificate {
    /// Generates a self-signed certificate for `127.0.0.1` and `localhost` and writes it
    /// to `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<TestCertificate> {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
        let cert_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&cert_file, certified.cert.pem())?;
        std::fs::write(&key_file, certified.key_pair.serialize_pem())?;
        Ok(TestCertificate {
            cert_file,
            key_file,
            der: certified.cert.der().clone(),
        })
    }

    /// A connector for `wss://` that trusts only this certificate.
    pub fn connector(&self) -> anyhow::Result<tokio_tungstenite::Connector> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    }
}
