//! Business certificates: the operator's verification authority vouching that an account
//! belongs to a named, verified business.
//!
//! `signature` is by the authority key over
//!
//! ```text
//! "parley/v1/business-certificate" 0x00 ‖ authority (32) ‖ account (32) ‖ serial u64
//!   ‖ var(legal_name) ‖ var(display_name) ‖ var(domain) ‖ categories u8
//!   ‖ issued_at_ms u64 ‖ expires_at_ms u64
//! ```
//!
//! Clients pin the authority key (on first contact, showing [`AuthorityKey::fingerprint`],
//! or from configuration) and show a badge only when [`SignedCertificate::verify`] passes
//! for the account they are talking to and the relay reports the certificate current.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::category::CategorySet;
use crate::fixed_bytes::fixed_bytes;
use crate::ids::AccountId;
use crate::limits::{MAX_DISPLAY_NAME_BYTES, MAX_DOMAIN_BYTES, MAX_LEGAL_NAME_BYTES};
use crate::signature::{self, Signature, SignatureDomain, Transcript};

/// Label hashed into an authority fingerprint.
pub const AUTHORITY_FINGERPRINT_LABEL: &[u8] = b"parley/v1/authority-fingerprint";

fixed_bytes!(
    /// The verification authority's Ed25519 public key.
    AuthorityKey,
    32
);

impl AuthorityKey {
    /// What people compare: the first 16 bytes of
    /// `SHA-256("parley/v1/authority-fingerprint" ‖ 0x00 ‖ key)`, as eight groups of four
    /// hex digits.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(AUTHORITY_FINGERPRINT_LABEL);
        h.update([0u8]);
        h.update(self.0);
        let digest = h.finalize();
        let hex = crate::to_hex(&digest[..16]);
        hex.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn as_account(&self) -> AccountId {
        AccountId(self.0)
    }
}

/// What the authority vouches for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessCertificate {
    /// The business's account (its identity key).
    pub account: AccountId,
    /// Issued by this authority: a reissue gets a higher serial.
    pub serial: u64,
    /// The registered legal name ("Acme Bank plc").
    pub legal_name: String,
    /// The name shown in chats ("Acme Bank").
    pub display_name: String,
    /// The domain the business proved control of ("acmebank.example").
    pub domain: String,
    /// The categories the business may send in.
    pub categories: CategorySet,
    /// Issue time, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// Expiry, ms since the Unix epoch; an expired certificate earns no badge.
    pub expires_at_ms: u64,
}

/// A certificate and the authority's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCertificate {
    /// The claims.
    pub certificate: BusinessCertificate,
    /// The authority's signature, see the module documentation.
    pub signature: Signature,
}

/// Why a certificate earns no badge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The signature is not the pinned authority's.
    #[error("the certificate is not signed by the pinned verification authority")]
    BadSignature,
    /// It names another account.
    #[error("the certificate belongs to another account")]
    WrongAccount,
    /// It is past its expiry (or not yet issued).
    #[error("the certificate is expired or not yet valid")]
    Expired,
    /// A field is empty, too long or contains control characters.
    #[error("the certificate's {0} is invalid")]
    Invalid(&'static str),
}

impl BusinessCertificate {
    /// Checks field lengths and content.
    pub fn validate(&self) -> Result<(), CertificateError> {
        check_text(&self.legal_name, MAX_LEGAL_NAME_BYTES, "legal name")?;
        check_text(&self.display_name, MAX_DISPLAY_NAME_BYTES, "display name")?;
        check_text(&self.domain, MAX_DOMAIN_BYTES, "domain")?;
        if !self
            .domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            || !self.domain.contains('.')
        {
            return Err(CertificateError::Invalid("domain"));
        }
        if self.categories.is_empty() {
            return Err(CertificateError::Invalid("categories"));
        }
        if self.expires_at_ms <= self.issued_at_ms {
            return Err(CertificateError::Invalid("validity period"));
        }
        Ok(())
    }

    /// The transcript the authority signs.
    pub fn transcript(&self, authority: &AuthorityKey) -> Transcript {
        Transcript::new(SignatureDomain::BusinessCertificate)
            .fixed(authority.as_bytes())
            .fixed(self.account.as_bytes())
            .u64(self.serial)
            .var(self.legal_name.as_bytes())
            .var(self.display_name.as_bytes())
            .var(self.domain.as_bytes())
            .fixed(&[self.categories.bits()])
            .u64(self.issued_at_ms)
            .u64(self.expires_at_ms)
    }

    /// Signs the certificate with the authority's key, after validating it.
    pub fn sign(
        self,
        authority: &ed25519_dalek::SigningKey,
    ) -> Result<SignedCertificate, CertificateError> {
        self.validate()?;
        let key = AuthorityKey(authority.verifying_key().to_bytes());
        let signature = signature::sign(authority, &self.transcript(&key));
        Ok(SignedCertificate {
            certificate: self,
            signature,
        })
    }
}

impl SignedCertificate {
    /// Whether this certificate earns `account` a badge at `now_ms` under `authority`:
    /// well-formed, signed by the authority, for this account, and unexpired.
    pub fn verify(
        &self,
        authority: &AuthorityKey,
        account: &AccountId,
        now_ms: u64,
    ) -> Result<(), CertificateError> {
        self.verify_signature(authority)?;
        let c = &self.certificate;
        if &c.account != account {
            return Err(CertificateError::WrongAccount);
        }
        if now_ms < c.issued_at_ms || now_ms >= c.expires_at_ms {
            return Err(CertificateError::Expired);
        }
        Ok(())
    }

    /// Checks only form and signature (for listing certificates, expired or not).
    pub fn verify_signature(&self, authority: &AuthorityKey) -> Result<(), CertificateError> {
        self.certificate.validate()?;
        signature::verify(
            &authority.as_account(),
            &self.certificate.transcript(authority),
            &self.signature,
        )
        .map_err(|_| CertificateError::BadSignature)
    }
}

fn check_text(text: &str, max: usize, what: &'static str) -> Result<(), CertificateError> {
    if text.trim().is_empty() || text.len() > max || text.chars().any(char::is_control) {
        return Err(CertificateError::Invalid(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::business::Category;
    use rand_core::OsRng;

    fn certificate(account: AccountId) -> BusinessCertificate {
        BusinessCertificate {
            account,
            serial: 1,
            legal_name: "Acme Bank plc".into(),
            display_name: "Acme Bank".into(),
            domain: "acmebank.example".into(),
            categories: CategorySet::of([Category::SecurityAlert, Category::Transactional]),
            issued_at_ms: 1_000,
            expires_at_ms: 10_000,
        }
    }

    #[test]
    fn a_signed_certificate_verifies_only_for_its_account_authority_and_period() {
        let authority = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let key = AuthorityKey(authority.verifying_key().to_bytes());
        let account = AccountId([7; 32]);
        let signed = certificate(account).sign(&authority).unwrap();
        assert_eq!(signed.verify(&key, &account, 5_000), Ok(()));
        assert_eq!(
            signed.verify(&key, &AccountId([8; 32]), 5_000),
            Err(CertificateError::WrongAccount)
        );
        assert_eq!(
            signed.verify(&key, &account, 10_000),
            Err(CertificateError::Expired)
        );
        let other = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let other_key = AuthorityKey(other.verifying_key().to_bytes());
        assert_eq!(
            signed.verify(&other_key, &account, 5_000),
            Err(CertificateError::BadSignature)
        );
        let mut tampered = signed.clone();
        tampered.certificate.display_name = "Acme Bank Support".into();
        assert_eq!(
            tampered.verify(&key, &account, 5_000),
            Err(CertificateError::BadSignature)
        );
    }

    #[test]
    fn malformed_certificates_are_not_signed() {
        let authority = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let mut c = certificate(AccountId([7; 32]));
        c.domain = "not a domain".into();
        assert_eq!(
            c.clone().sign(&authority),
            Err(CertificateError::Invalid("domain"))
        );
        c.domain = "acme.example".into();
        c.display_name = "\u{7}".into();
        assert_eq!(
            c.sign(&authority),
            Err(CertificateError::Invalid("display name"))
        );
    }

    #[test]
    fn fingerprints_are_grouped_hex() {
        let fp = AuthorityKey([1; 32]).fingerprint();
        assert_eq!(fp.len(), 8 * 4 + 7);
        assert_ne!(fp, AuthorityKey([2; 32]).fingerprint());
    }
}
