//! `parley-server admin self-signed-cert`: a self-signed end-entity certificate and its
//! private key for trying `wss://` (clients trust it with `parley --ca-file`).
//!
//! The certificate says `CA:FALSE` and `serverAuth`, so rustls accepts it as the server's
//! own certificate (a CA certificate in that place, as the usual `openssl req -x509`
//! one-liner makes, is refused with `CaUsedAsEndEntity`). Not for production: it is
//! valid until 4096 and nobody vouches for it. Knows nothing of the listener; the files
//! it writes are what `--tls-cert` / `--tls-key` load.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// File name of the certificate written into the output directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key written into the output directory (mode 0600).
pub const KEY_FILE: &str = "key.pem";

/// The files written.
#[derive(Debug)]
pub struct Written {
    /// The certificate (PEM): `--tls-cert` on the server, `--ca-file` on clients.
    pub cert_file: PathBuf,
    /// The private key (PEM, 0600): `--tls-key` on the server.
    pub key_file: PathBuf,
}

/// Why no certificate was written.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// The caller named no host, or one that is not a DNS name or IP address.
    #[error("invalid --host: {0}")]
    InvalidHost(String),
    /// A file exists already; it is never overwritten.
    #[error("{0} exists already; remove it or choose another --out directory")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// rcgen refused (a bug or an unusable name).
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Writes a self-signed end-entity certificate for `hosts` (DNS names or IP addresses)
/// and its key into `out` (created if missing).
pub fn write(hosts: &[String], out: &Path) -> Result<Written, SelfSignedError> {
    if hosts.is_empty() {
        return Err(SelfSignedError::InvalidHost("give at least one".into()));
    }
    if let Some(bad) = hosts.iter().find(|h| h.is_empty() || h.contains("://")) {
        return Err(SelfSignedError::InvalidHost(format!(
            "{bad:?} is not a host name or IP address (example: --host localhost)"
        )));
    }
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hosts[0].clone());
    name.push(
        DnType::OrganizationName,
        "Parley self-signed test certificate",
    );
    params.distinguished_name = name;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;

    std::fs::create_dir_all(out).map_err(|source| SelfSignedError::Io {
        path: out.to_owned(),
        source,
    })?;
    let written = Written {
        cert_file: out.join(CERT_FILE),
        key_file: out.join(KEY_FILE),
    };
    for path in [&written.cert_file, &written.key_file] {
        if path.exists() {
            return Err(SelfSignedError::Exists(path.clone()));
        }
    }
    create_new(&written.key_file, 0o600, key.serialize_pem().as_bytes())?;
    create_new(&written.cert_file, 0o644, cert.pem().as_bytes())?;
    Ok(written)
}

/// Creates `path` (failing if it exists) with `mode` on Unix and writes `contents`.
fn create_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), SelfSignedError> {
    let io = |source| SelfSignedError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_an_end_entity_certificate_and_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let written = write(&["localhost".into(), "127.0.0.1".into()], &out).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_file(&written.cert_file).unwrap();
        // basicConstraints (2.5.29.19), critical, `cA` BOOLEAN FALSE.
        let ca_false = [
            0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x05, 0x30, 0x03, 0x01, 0x01,
            0x00,
        ];
        assert!(
            der.windows(ca_false.len()).any(|w| w == ca_false),
            "CA:FALSE"
        );
        assert!(crate::tls::acceptor(&written.cert_file, &written.key_file).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&written.key_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        assert!(matches!(
            write(&["localhost".into()], &out),
            Err(SelfSignedError::Exists(_))
        ));
    }

    #[test]
    fn a_url_is_not_a_host() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write(&["wss://localhost".into()], dir.path()),
            Err(SelfSignedError::InvalidHost(_))
        ));
        assert!(matches!(
            write(&[], dir.path()),
            Err(SelfSignedError::InvalidHost(_))
        ));
    }
}
