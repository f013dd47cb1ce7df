//! The post-quantum share of session setup: ML-KEM-768 (FIPS 203, RustCrypto `ml-kem`).
//!
//! The responder publishes a signed encapsulation key
//! ([`SignedKemPrekey`](crate::prekeys::SignedKemPrekey)) and keeps the decapsulation key
//! as a [`KemPrekeySecret`]. The initiator encapsulates to it; the 32-byte shared secret
//! joins the X25519 outputs in the handshake KDF.
//!
//! [`check_encapsulation_key`] is FIPS 203's input check on an encapsulation key (§7.2):
//! the relay refuses a registration or upload carrying a key that fails it (such an
//! account could never be written to), and [`encapsulate`] refuses it too.
//!
//! The decapsulation key is held in its 2400-byte FIPS 203 encoding inside a zeroizing
//! buffer and parsed only for the duration of one decapsulation (the `ml-kem` types are not
//! zeroized without a feature this workspace does not enable).

use ml_kem::kem::{Decapsulate, Encapsulate};
use ml_kem::{EncodedSizeUser, KemCore, MlKem768};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::limits::{KEM_CIPHERTEXT_BYTES, KEM_SECRET_KEY_BYTES};
use super::E2eError;
use crate::identity::IdentityKeyPair;
use crate::ids::PrekeyId;
use crate::limits::KEM_PUBLIC_KEY_BYTES;
use crate::prekeys::SignedKemPrekey;

type DecapsulationKey = <MlKem768 as KemCore>::DecapsulationKey;
type EncapsulationKey = <MlKem768 as KemCore>::EncapsulationKey;

/// The secret half of a KEM prekey, kept by its owner.
pub struct KemPrekeySecret {
    id: PrekeyId,
    secret: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
}

impl std::fmt::Debug for KemPrekeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KemPrekeySecret")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl KemPrekeySecret {
    /// Generates a new ML-KEM-768 key pair.
    pub fn generate(id: PrekeyId, rng: &mut impl CryptoRngCore) -> KemPrekeySecret {
        let (dk, ek) = MlKem768::generate(rng);
        KemPrekeySecret {
            id,
            secret: Zeroizing::new(dk.as_bytes().to_vec()),
            public: ek.as_bytes().to_vec(),
        }
    }

    /// Restores a KEM prekey from its [`KEM_SECRET_KEY_BYTES`]-byte encoding (which embeds
    /// the public key).
    pub fn from_secret_bytes(id: PrekeyId, bytes: &[u8]) -> Result<KemPrekeySecret, E2eError> {
        let dk = parse_decapsulation_key(bytes)?;
        let public = dk.encapsulation_key().as_bytes().to_vec();
        Ok(KemPrekeySecret {
            id,
            secret: Zeroizing::new(bytes.to_vec()),
            public,
        })
    }

    /// The secret encoding, for the owner's key store only.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.secret.clone()
    }

    /// The prekey's id.
    pub fn id(&self) -> PrekeyId {
        self.id
    }

    /// The encapsulation key, [`KEM_PUBLIC_KEY_BYTES`] bytes.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// This prekey published, signed by `identity`.
    pub fn signed_by(&self, identity: &IdentityKeyPair) -> SignedKemPrekey {
        SignedKemPrekey {
            id: self.id,
            public: self.public.clone(),
            signature: identity.sign(&SignedKemPrekey::transcript(self.id, &self.public)),
        }
    }

    /// Decapsulates `ciphertext` to the shared secret.
    pub(crate) fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>, E2eError> {
        let dk = parse_decapsulation_key(&self.secret)?;
        let ct = ml_kem::Ciphertext::<MlKem768>::try_from(ciphertext)
            .map_err(|_| E2eError::Malformed("kem ciphertext"))?;
        let shared = dk
            .decapsulate(&ct)
            .map_err(|()| E2eError::Malformed("kem ciphertext"))?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&shared);
        Ok(out)
    }
}

fn parse_decapsulation_key(bytes: &[u8]) -> Result<DecapsulationKey, E2eError> {
    if bytes.len() != KEM_SECRET_KEY_BYTES {
        return Err(E2eError::Malformed("kem secret key"));
    }
    let encoded = ml_kem::Encoded::<DecapsulationKey>::try_from(bytes)
        .map_err(|_| E2eError::Malformed("kem secret key"))?;
    Ok(DecapsulationKey::from_bytes(&encoded))
}

/// Why bytes are not an ML-KEM-768 encapsulation key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKemKey {
    /// Not [`KEM_PUBLIC_KEY_BYTES`] long (FIPS 203 §7.2, type check).
    #[error("an ML-KEM-768 encapsulation key is {KEM_PUBLIC_KEY_BYTES} bytes, not {0}")]
    Length(usize),
    /// A coefficient of `t̂` is not below q = 3329 (FIPS 203 §7.2, modulus check).
    #[error("an ML-KEM-768 encapsulation key has a coefficient not below q = 3329")]
    Modulus,
}

/// FIPS 203 §7.2 input checks on an encapsulation key: the length (1184 bytes), and the
/// modulus check: the 1152-byte `ByteEncode12(t̂)` part must re-encode to itself after
/// `ByteDecode12` (which reduces every 12-bit coefficient mod q), that is every
/// coefficient is below q = 3329. The last 32 bytes (`ρ`) are any bytes.
pub fn check_encapsulation_key(public: &[u8]) -> Result<(), InvalidKemKey> {
    checked_encapsulation_key(public).map(|_| ())
}

/// The key, parsed, if it passes [`check_encapsulation_key`].
fn checked_encapsulation_key(public: &[u8]) -> Result<EncapsulationKey, InvalidKemKey> {
    let encoded = ml_kem::Encoded::<EncapsulationKey>::try_from(public)
        .map_err(|_| InvalidKemKey::Length(public.len()))?;
    let ek = EncapsulationKey::from_bytes(&encoded);
    if ek.as_bytes() == encoded {
        Ok(ek)
    } else {
        Err(InvalidKemKey::Modulus)
    }
}

/// Encapsulates a fresh shared secret to `public`: `(ciphertext, shared secret)`. A key
/// that fails [`check_encapsulation_key`] is refused.
pub(crate) fn encapsulate(
    public: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), E2eError> {
    let ek =
        checked_encapsulation_key(public).map_err(|_| E2eError::Malformed("kem public key"))?;
    let (ct, shared) = ek
        .encapsulate(rng)
        .map_err(|()| E2eError::Malformed("kem public key"))?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&shared);
    debug_assert_eq!(ct.len(), KEM_CIPHERTEXT_BYTES);
    Ok((ct.to_vec(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn encapsulation_round_trips_and_secret_bytes_restore() {
        let kem = KemPrekeySecret::generate(PrekeyId(5), &mut OsRng);
        let (ct, ss) = encapsulate(kem.public(), &mut OsRng).unwrap();
        assert_eq!(ct.len(), KEM_CIPHERTEXT_BYTES);
        assert_eq!(*kem.decapsulate(&ct).unwrap(), *ss);
        let restored =
            KemPrekeySecret::from_secret_bytes(PrekeyId(5), &kem.to_secret_bytes()).unwrap();
        assert_eq!(restored.public(), kem.public());
        assert_eq!(*restored.decapsulate(&ct).unwrap(), *ss);
        assert!(kem.decapsulate(&ct[1..]).is_err());
        assert!(KemPrekeySecret::from_secret_bytes(PrekeyId(5), &[0; 10]).is_err());
    }

    #[test]
    fn generated_keys_pass_the_encapsulation_key_check() {
        for id in 0..8 {
            let kem = KemPrekeySecret::generate(PrekeyId(id), &mut OsRng);
            assert_eq!(check_encapsulation_key(kem.public()), Ok(()));
        }
    }

    #[test]
    fn a_coefficient_of_q_or_more_fails_the_modulus_check_and_is_not_encapsulated_to() {
        let kem = KemPrekeySecret::generate(PrekeyId(1), &mut OsRng);
        // All 0xff: every coefficient is 0xfff = 4095.
        let ones = vec![0xff; KEM_PUBLIC_KEY_BYTES];
        assert_eq!(check_encapsulation_key(&ones), Err(InvalidKemKey::Modulus));
        assert!(encapsulate(&ones, &mut OsRng).is_err());
        // One coefficient of exactly q = 3329 = 0xd01 (the first, in bytes 0 and 1's low
        // nibble, little-endian 12-bit packing), the rest untouched.
        let mut one_bad = kem.public().to_vec();
        one_bad[0] = 0x01;
        one_bad[1] = (one_bad[1] & 0xf0) | 0x0d;
        assert_eq!(
            check_encapsulation_key(&one_bad),
            Err(InvalidKemKey::Modulus)
        );
        // q - 1 is fine.
        one_bad[0] = 0x00;
        assert_eq!(check_encapsulation_key(&one_bad), Ok(()));
        // ρ (the last 32 bytes) is not checked: any bytes.
        let mut rho = kem.public().to_vec();
        rho[KEM_PUBLIC_KEY_BYTES - 1] ^= 0xff;
        assert_eq!(check_encapsulation_key(&rho), Ok(()));
        assert_eq!(
            check_encapsulation_key(&ones[1..]),
            Err(InvalidKemKey::Length(KEM_PUBLIC_KEY_BYTES - 1))
        );
    }
}
