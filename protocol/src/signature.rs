//! Domain-separated Ed25519 signatures.
//!
//! Every signature in Parley is over a *transcript*: the domain's label, one zero byte,
//! then the domain's fields in a fixed order. Fixed-size fields are appended as they are;
//! variable-size fields are prefixed with their length as a big-endian `u32`. Integers are
//! big-endian. Because each label is distinct and none is a prefix of another followed by
//! a zero byte, a signature made for one purpose never verifies for another.
//!
//! Verification is strict (`verify_strict`): non-canonical `S`, small-order public keys
//! and small-order `R` are refused.

use ed25519_dalek::{Signer, VerifyingKey};

use crate::fixed_bytes::fixed_bytes;
use crate::ids::AccountId;

fixed_bytes!(
    /// An Ed25519 signature (`R || S`).
    Signature,
    64
);

/// What a signature is for. Each has its own label (see [`SignatureDomain::label`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureDomain {
    /// Answer to a server challenge on an existing account.
    Auth,
    /// Proof of possession of the identity key when creating an account.
    Register,
    /// The identity key vouching for the account's X25519 identity DH key.
    IdentityDh,
    /// The identity key vouching for a signed (X25519) prekey.
    SignedPrekey,
    /// The identity key vouching for a signed ML-KEM prekey.
    KemPrekey,
    /// A user's consent grant to a business.
    ConsentGrant,
    /// A user's revocation of consent.
    ConsentRevocation,
    /// The verification authority's business certificate.
    BusinessCertificate,
    /// A device's answer to a card action.
    CardAnswer,
    /// The account's list of its devices (ADR 0007).
    DeviceList,
}

impl SignatureDomain {
    /// The label that starts the domain's transcripts.
    pub const fn label(self) -> &'static [u8] {
        match self {
            SignatureDomain::Auth => b"parley/v1/auth",
            SignatureDomain::Register => b"parley/v1/register",
            SignatureDomain::IdentityDh => b"parley/v1/identity-dh",
            SignatureDomain::SignedPrekey => b"parley/v1/signed-prekey",
            SignatureDomain::KemPrekey => b"parley/v1/kem-prekey",
            SignatureDomain::ConsentGrant => b"parley/v1/consent-grant",
            SignatureDomain::ConsentRevocation => b"parley/v1/consent-revocation",
            SignatureDomain::BusinessCertificate => b"parley/v1/business-certificate",
            SignatureDomain::CardAnswer => b"parley/v1/card-answer",
            SignatureDomain::DeviceList => b"parley/v1/device-list",
        }
    }
}

/// The exact bytes a signature covers. Build it with the domain's fields in the order
/// the protocol document gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    bytes: Vec<u8>,
}

impl Transcript {
    /// Starts a transcript for `domain`: `label || 0x00`.
    pub fn new(domain: SignatureDomain) -> Transcript {
        let label = domain.label();
        let mut bytes = Vec::with_capacity(label.len() + 128);
        bytes.extend_from_slice(label);
        bytes.push(0);
        Transcript { bytes }
    }

    /// Appends a fixed-size field as is.
    pub fn fixed(mut self, field: &[u8]) -> Transcript {
        self.bytes.extend_from_slice(field);
        self
    }

    /// Appends a `u32`, big-endian.
    pub fn u32(self, value: u32) -> Transcript {
        self.fixed(&value.to_be_bytes())
    }

    /// Appends a `u64`, big-endian.
    pub fn u64(self, value: u64) -> Transcript {
        self.fixed(&value.to_be_bytes())
    }

    /// Appends a variable-size field: its length as a big-endian `u32`, then the bytes.
    /// Fields are bounded by the frame limit, far below `u32::MAX`; a longer field is
    /// truncated in the length prefix only in theory and cannot occur on the wire.
    pub fn var(self, field: &[u8]) -> Transcript {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        self.u32(len).fixed(field)
    }

    /// The bytes to sign.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A signature did not verify (or its key is not a valid, non-weak Ed25519 key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("signature verification failed")]
pub struct BadSignature;

/// Signs `transcript` with `key`.
pub fn sign(key: &ed25519_dalek::SigningKey, transcript: &Transcript) -> Signature {
    Signature(key.sign(transcript.as_bytes()).to_bytes())
}

/// Verifies `signature` by `signer` over `transcript`, strictly.
pub fn verify(
    signer: &AccountId,
    transcript: &Transcript,
    signature: &Signature,
) -> Result<(), BadSignature> {
    let key = VerifyingKey::from_bytes(signer.as_bytes()).map_err(|_| BadSignature)?;
    if key.is_weak() {
        return Err(BadSignature);
    }
    let signature = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
    key.verify_strict(transcript.as_bytes(), &signature)
        .map_err(|_| BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn a_signature_for_one_domain_does_not_verify_in_another() {
        let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let account = AccountId(key.verifying_key().to_bytes());
        let fields = [7u8; 32];
        let auth = Transcript::new(SignatureDomain::Auth).fixed(&fields);
        let register = Transcript::new(SignatureDomain::Register).fixed(&fields);
        let sig = sign(&key, &auth);
        assert_eq!(verify(&account, &auth, &sig), Ok(()));
        assert_eq!(verify(&account, &register, &sig), Err(BadSignature));
    }

    #[test]
    fn labels_are_distinct() {
        use SignatureDomain::*;
        let all = [
            Auth,
            Register,
            IdentityDh,
            SignedPrekey,
            KemPrekey,
            ConsentGrant,
            ConsentRevocation,
            BusinessCertificate,
            CardAnswer,
            DeviceList,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.label(), b.label());
            }
        }
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order) as a public key, with an all-zero signature.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let t = Transcript::new(SignatureDomain::Auth);
        assert_eq!(
            verify(&AccountId(identity), &t, &Signature([0; 64])),
            Err(BadSignature)
        );
        // Not a point at all.
        assert_eq!(
            verify(&AccountId([0xff; 32]), &t, &Signature([0; 64])),
            Err(BadSignature)
        );
    }
}
