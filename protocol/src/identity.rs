//! Account identities: an Ed25519 signing key (the account id) and an X25519 identity DH
//! key signed by it.
//!
//! The secret half ([`IdentityKeyPair`]) never leaves the device: it is zeroized on drop,
//! its `Debug` is redacted, and it has no `Clone` or `Serialize`. The public half
//! ([`IdentityPublic`]) travels in registrations and prekey bundles and verifies itself.

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fixed_bytes::fixed_bytes;
use crate::ids::AccountId;
use crate::signature::{self, BadSignature, Signature, SignatureDomain, Transcript};

fixed_bytes!(
    /// An X25519 public key (Montgomery u-coordinate).
    X25519Public,
    32
);

/// The public identity of an account.
///
/// `dh_signature` is by `account` over
/// `"parley/v1/identity-dh" || 0x00 || account (32) || dh (32)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityPublic {
    /// The Ed25519 identity key, which is also the account id.
    pub account: AccountId,
    /// The X25519 identity DH key used in session setup.
    pub dh: X25519Public,
    /// The identity key's signature over `dh`.
    pub dh_signature: Signature,
}

impl IdentityPublic {
    /// The transcript `dh_signature` covers.
    pub fn dh_transcript(account: &AccountId, dh: &X25519Public) -> Transcript {
        Transcript::new(SignatureDomain::IdentityDh)
            .fixed(account.as_bytes())
            .fixed(dh.as_bytes())
    }

    /// Checks that the account key vouches for the DH key.
    pub fn verify(&self) -> Result<(), BadSignature> {
        signature::verify(
            &self.account,
            &Self::dh_transcript(&self.account, &self.dh),
            &self.dh_signature,
        )
    }
}

/// The secret identity of an account.
pub struct IdentityKeyPair {
    signing: ed25519_dalek::SigningKey,
    dh: x25519_dalek::StaticSecret,
}

impl std::fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("account", &self.account_id())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl IdentityKeyPair {
    /// Generates a new identity.
    pub fn generate(rng: &mut impl CryptoRngCore) -> IdentityKeyPair {
        IdentityKeyPair {
            signing: ed25519_dalek::SigningKey::generate(rng),
            dh: x25519_dalek::StaticSecret::random_from_rng(rng),
        }
    }

    /// Restores an identity from [`IdentityKeyPair::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8; 64]) -> IdentityKeyPair {
        let mut signing = [0u8; 32];
        let mut dh = [0u8; 32];
        signing.copy_from_slice(&bytes[..32]);
        dh.copy_from_slice(&bytes[32..]);
        let pair = IdentityKeyPair {
            signing: ed25519_dalek::SigningKey::from_bytes(&signing),
            dh: x25519_dalek::StaticSecret::from(dh),
        };
        zeroize::Zeroize::zeroize(&mut signing);
        zeroize::Zeroize::zeroize(&mut dh);
        pair
    }

    /// The secret seed of both keys (`ed25519 seed || x25519 scalar`), for the client's
    /// own key store only.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(self.signing.as_bytes());
        out[32..].copy_from_slice(self.dh.as_bytes());
        out
    }

    /// The account id (Ed25519 public key).
    pub fn account_id(&self) -> AccountId {
        AccountId(self.signing.verifying_key().to_bytes())
    }

    /// The public identity, with the DH key signed.
    pub fn public(&self) -> IdentityPublic {
        let account = self.account_id();
        let dh = X25519Public(x25519_dalek::PublicKey::from(&self.dh).to_bytes());
        let dh_signature = self.sign(&IdentityPublic::dh_transcript(&account, &dh));
        IdentityPublic {
            account,
            dh,
            dh_signature,
        }
    }

    /// Signs a domain-separated transcript.
    pub fn sign(&self, transcript: &Transcript) -> Signature {
        signature::sign(&self.signing, transcript)
    }

    /// The X25519 identity secret, for session setup.
    pub fn dh_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.dh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn public_identity_verifies_and_detects_substitution() {
        let alice = IdentityKeyPair::generate(&mut OsRng);
        let mallory = IdentityKeyPair::generate(&mut OsRng);
        let public = alice.public();
        assert_eq!(public.verify(), Ok(()));
        let substituted = IdentityPublic {
            dh: mallory.public().dh,
            ..public.clone()
        };
        assert_eq!(substituted.verify(), Err(BadSignature));
    }

    #[test]
    fn secret_bytes_round_trip() {
        let alice = IdentityKeyPair::generate(&mut OsRng);
        let restored = IdentityKeyPair::from_secret_bytes(&alice.to_secret_bytes());
        assert_eq!(alice.public(), restored.public());
        assert!(!format!("{alice:?}").contains(&hex_of(&alice.to_secret_bytes()[..8])));
    }

    fn hex_of(bytes: &[u8]) -> String {
        crate::fixed_bytes::to_hex(bytes)
    }
}
