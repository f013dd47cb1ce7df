//! One sentence, saying what to do, for a server certificate the client refused.
//!
//! rustls reports a refused certificate as `invalid peer certificate: Other(OtherError(
//! CaUsedAsEndEntity))` and the like, wrapped by tokio-tungstenite in an I/O error; that
//! helps nobody who just made a test certificate. [`explain`] finds the rustls error
//! behind a failed WebSocket connect and turns it into advice naming the server, the
//! flag (`--ca-file`) and the command that makes a usable test certificate
//! (`parley-server admin self-signed-cert`). It knows nothing of connections or retries.

use rustls::CertificateError;
use tokio_tungstenite::tungstenite;

/// The advice for `error`, a failed connect to `url`, when a certificate was refused;
/// `None` for any other failure.
pub(crate) fn explain(url: &str, error: &tungstenite::Error) -> Option<String> {
    let rustls_error = match error {
        tungstenite::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        tungstenite::Error::Tls(tungstenite::error::TlsError::Rustls(e)) => e,
        _ => return None,
    };
    match rustls_error {
        rustls::Error::InvalidCertificate(e) => Some(advice(url, e)),
        _ => None,
    }
}

/// The sentence for certificate error `e` of the server at `url`.
fn advice(url: &str, e: &CertificateError) -> String {
    let host = host_of(url);
    let make = format!("`parley-server admin self-signed-cert --host {host} --out DIR`");
    match e {
        // webpki's `CaUsedAsEndEntity` reaches rustls only as an opaque `Other`; its
        // name is the stable part of that error's text.
        CertificateError::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            format!(
                "the server at {url} presents a CA certificate as its own, which TLS clients \
                 refuse: give the server an end-entity certificate (for a test, make one with \
                 {make}) and trust it here with --ca-file DIR/cert.pem"
            )
        }
        CertificateError::UnknownIssuer => format!(
            "the certificate of the server at {url} is not signed by any authority this \
             client trusts: if it is a test or private certificate, pass that certificate \
             (or the CA that signed it) with --ca-file FILE"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the certificate of the server at {url} is not made out for {host}: connect \
                 with a name the certificate lists, or give the server one that lists {host} \
                 (for a test, {make})"
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "the certificate of the server at {url} has expired: the server's operator must \
             renew it (or, if it should still be valid, check this computer's clock)"
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
            "the certificate of the server at {url} is not valid yet: check this computer's \
             clock, or ask the server's operator"
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "the certificate of the server at {url} is not made for TLS servers (it lacks \
                 the serverAuth purpose): give the server a server certificate (for a test, \
                 {make})"
            )
        }
        other => format!(
            "the certificate of the server at {url} was refused ({other}): ask the server's \
             operator for a valid certificate, or pass the one to trust with --ca-file FILE"
        ),
    }
}

/// The host part of a `ws(s)://host[:port][/path]` URL (`[…]` kept for IPv6).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;

    fn io(e: rustls::Error) -> tungstenite::Error {
        tungstenite::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[derive(Debug)]
    struct CaUsedAsEndEntity;
    impl std::fmt::Display for CaUsedAsEndEntity {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("CaUsedAsEndEntity")
        }
    }
    impl std::error::Error for CaUsedAsEndEntity {}

    #[test]
    fn each_certificate_error_gets_one_sentence_naming_the_server_and_what_to_do() {
        let url = "wss://chat.example:4433";
        let ca = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(CaUsedAsEndEntity),
        )));
        let cases = [
            (ca, "presents a CA certificate as its own"),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "--ca-file FILE",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "not made out for chat.example",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "has expired",
            ),
        ];
        for (error, expected) in cases {
            let text = explain(url, &io(error)).unwrap();
            assert!(text.contains(expected), "{text}");
            assert!(text.contains(url), "{text}");
            assert!(!text.contains("OtherError"), "{text}");
        }
        assert_eq!(explain(url, &tungstenite::Error::ConnectionClosed), None);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(explain(url, &tungstenite::Error::Io(refused)), None);
    }

    #[test]
    fn the_host_is_taken_from_the_url() {
        assert_eq!(host_of("wss://127.0.0.1:4433"), "127.0.0.1");
        assert_eq!(host_of("wss://localhost/path"), "localhost");
        assert_eq!(host_of("wss://[::1]:4433"), "[::1]");
        assert_eq!(host_of("wss://chat.example"), "chat.example");
    }
}
