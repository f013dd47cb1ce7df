//! Prekeys: what a device publishes so others can start a session with it while it is
//! offline.
//!
//! * a **signed prekey** (X25519), replaced now and then, the last resort when one-time
//!   prekeys run out;
//! * a **signed KEM prekey** (ML-KEM-768 encapsulation key) for the post-quantum share
//!   of session setup: optional in the frame types, but required by `register` and by
//!   every client starting a session, so an account without a valid one cannot be
//!   written to ([`SignedKemPrekey::check_key`]);
//! * **one-time prekeys** (X25519), each handed out by the server exactly once.
//!
//! Signed transcripts (see [`crate::signature`]):
//!
//! | key             | transcript                                                      |
//! |-----------------|-----------------------------------------------------------------|
//! | signed prekey   | `"parley/v1/signed-prekey" 0x00 ‖ id (u32 BE) ‖ public (32)`    |
//! | KEM prekey      | `"parley/v1/kem-prekey" 0x00 ‖ id (u32 BE) ‖ len (u32 BE) ‖ public` |

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::e2e::{check_encapsulation_key, InvalidKemKey};
use crate::identity::{IdentityKeyPair, IdentityPublic, X25519Public};
use crate::ids::{AccountId, DeviceId, PrekeyId};
use crate::limits::KEM_PUBLIC_KEY_BYTES;
use crate::signature::{self, BadSignature, Signature, SignatureDomain, Transcript};

/// A signed X25519 prekey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPrekey {
    /// Its id, chosen by the owner.
    pub id: PrekeyId,
    /// The public key.
    pub public: X25519Public,
    /// The owner's identity signature.
    pub signature: Signature,
}

impl SignedPrekey {
    /// The transcript the signature covers.
    pub fn transcript(id: PrekeyId, public: &X25519Public) -> Transcript {
        Transcript::new(SignatureDomain::SignedPrekey)
            .u32(id.0)
            .fixed(public.as_bytes())
    }

    /// Checks the owner's signature.
    pub fn verify(&self, owner: &AccountId) -> Result<(), BadSignature> {
        signature::verify(
            owner,
            &Self::transcript(self.id, &self.public),
            &self.signature,
        )
    }
}

/// A signed ML-KEM-768 prekey. The server checks the signature and that the key is one
/// an ML-KEM-768 implementation accepts ([`SignedKemPrekey::check_key`]); the length is
/// a decoding rule, like every fixed-size field's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKemPrekey {
    /// Its id, chosen by the owner.
    pub id: PrekeyId,
    /// The encapsulation key, exactly [`KEM_PUBLIC_KEY_BYTES`] bytes (another length does
    /// not decode).
    #[serde(with = "kem_public_bytes")]
    pub public: Vec<u8>,
    /// The owner's identity signature.
    pub signature: Signature,
}

impl SignedKemPrekey {
    /// The transcript the signature covers.
    pub fn transcript(id: PrekeyId, public: &[u8]) -> Transcript {
        Transcript::new(SignatureDomain::KemPrekey)
            .u32(id.0)
            .var(public)
    }

    /// Checks the length and the owner's signature.
    pub fn verify(&self, owner: &AccountId) -> Result<(), BadSignature> {
        if self.public.len() != KEM_PUBLIC_KEY_BYTES {
            return Err(BadSignature);
        }
        signature::verify(
            owner,
            &Self::transcript(self.id, &self.public),
            &self.signature,
        )
    }

    /// Checks that the key is an ML-KEM-768 encapsulation key (FIPS 203 §7.2: length and
    /// modulus check), so that peers can encapsulate to it.
    pub fn check_key(&self) -> Result<(), InvalidKemKey> {
        check_encapsulation_key(&self.public)
    }
}

/// The encoding of a KEM prekey's `public`: a `bin` of exactly [`KEM_PUBLIC_KEY_BYTES`]
/// bytes; another length is a decoding error, as for every fixed-size field.
mod kem_public_bytes {
    use super::KEM_PUBLIC_KEY_BYTES;

    pub fn serialize<S: serde::Serializer>(public: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(public)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        crate::fixed_bytes::deserialize_array::<D, KEM_PUBLIC_KEY_BYTES>(d).map(|a| a.to_vec())
    }
}

/// A one-time X25519 prekey. Unsigned, as in X3DH: the signed prekey and the identity
/// key already authenticate the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneTimePrekey {
    /// Its id, chosen by the owner.
    pub id: PrekeyId,
    /// The public key.
    pub public: X25519Public,
}

/// What the server hands out to start a session with one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyBundle {
    /// The owner's identity.
    pub identity: IdentityPublic,
    /// The device these prekeys belong to.
    pub device: DeviceId,
    /// The current signed prekey.
    pub signed_prekey: SignedPrekey,
    /// The current signed KEM prekey, if the device published one.
    pub kem_prekey: Option<SignedKemPrekey>,
    /// A one-time prekey, removed from the server as it was handed out; `None` when the
    /// device has none left.
    pub one_time_prekey: Option<OneTimePrekey>,
}

impl PrekeyBundle {
    /// Verifies every signature in the bundle against its identity.
    pub fn verify(&self) -> Result<(), BadSignature> {
        self.identity.verify()?;
        self.signed_prekey.verify(&self.identity.account)?;
        if let Some(kem) = &self.kem_prekey {
            kem.verify(&self.identity.account)?;
        }
        Ok(())
    }
}

/// The secret half of an X25519 prekey, kept by its owner.
pub struct PrekeySecret {
    /// The prekey's id.
    pub id: PrekeyId,
    secret: x25519_dalek::StaticSecret,
}

impl std::fmt::Debug for PrekeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrekeySecret")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PrekeySecret {
    /// Generates a new prekey secret.
    pub fn generate(id: PrekeyId, rng: &mut impl CryptoRngCore) -> PrekeySecret {
        PrekeySecret {
            id,
            secret: x25519_dalek::StaticSecret::random_from_rng(rng),
        }
    }

    /// Restores a prekey secret from its 32 secret bytes.
    pub fn from_secret_bytes(id: PrekeyId, bytes: [u8; 32]) -> PrekeySecret {
        PrekeySecret {
            id,
            secret: x25519_dalek::StaticSecret::from(bytes),
        }
    }

    /// The secret bytes, for the owner's key store only.
    pub fn to_secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> X25519Public {
        X25519Public(x25519_dalek::PublicKey::from(&self.secret).to_bytes())
    }

    /// The secret, for session setup.
    pub fn secret(&self) -> &x25519_dalek::StaticSecret {
        &self.secret
    }

    /// This prekey published as the signed prekey of `identity`.
    pub fn signed_by(&self, identity: &IdentityKeyPair) -> SignedPrekey {
        let public = self.public();
        SignedPrekey {
            id: self.id,
            public,
            signature: identity.sign(&SignedPrekey::transcript(self.id, &public)),
        }
    }

    /// This prekey published as a one-time prekey.
    pub fn one_time(&self) -> OneTimePrekey {
        OneTimePrekey {
            id: self.id,
            public: self.public(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn bundle_verification_catches_a_foreign_signed_prekey() {
        let alice = IdentityKeyPair::generate(&mut OsRng);
        let mallory = IdentityKeyPair::generate(&mut OsRng);
        let spk = PrekeySecret::generate(PrekeyId(1), &mut OsRng);
        let mut bundle = PrekeyBundle {
            identity: alice.public(),
            device: DeviceId::PRIMARY,
            signed_prekey: spk.signed_by(&alice),
            kem_prekey: None,
            one_time_prekey: None,
        };
        assert_eq!(bundle.verify(), Ok(()));
        bundle.signed_prekey = spk.signed_by(&mallory);
        assert_eq!(bundle.verify(), Err(BadSignature));
    }

    #[test]
    fn a_kem_prekey_of_another_length_does_not_decode() {
        let alice = IdentityKeyPair::generate(&mut OsRng);
        for len in [0, KEM_PUBLIC_KEY_BYTES - 1, KEM_PUBLIC_KEY_BYTES + 1] {
            let public = vec![3u8; len];
            let kem = SignedKemPrekey {
                id: PrekeyId(1),
                signature: alice.sign(&SignedKemPrekey::transcript(PrekeyId(1), &public)),
                public,
            };
            let bytes = rmp_serde::to_vec_named(&kem).unwrap();
            assert!(
                rmp_serde::from_slice::<SignedKemPrekey>(&bytes).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn kem_prekey_of_wrong_length_is_refused() {
        let alice = IdentityKeyPair::generate(&mut OsRng);
        let public = vec![3u8; KEM_PUBLIC_KEY_BYTES - 1];
        let kem = SignedKemPrekey {
            id: PrekeyId(1),
            signature: alice.sign(&SignedKemPrekey::transcript(PrekeyId(1), &public)),
            public,
        };
        assert_eq!(kem.verify(&alice.account_id()), Err(BadSignature));
    }
}
