//! X25519 key pairs used in the DH ratchet, and the one Diffie-Hellman function of the
//! end-to-end layer, which refuses non-contributory results.

use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::E2eError;
use crate::identity::X25519Public;

/// `DH(secret, public)`, refused when the result is all zeros (the peer sent a low-order
/// point, which would make the output independent of our secret).
pub(crate) fn diffie_hellman(
    secret: &StaticSecret,
    public: &X25519Public,
) -> Result<Zeroizing<[u8; 32]>, E2eError> {
    let shared = secret.diffie_hellman(&PublicKey::from(public.0));
    if !shared.was_contributory() {
        return Err(E2eError::NonContributory);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// Our current ratchet key pair (`DHs` in the Double Ratchet specification).
pub(crate) struct RatchetKeyPair {
    secret: StaticSecret,
    public: X25519Public,
}

impl std::fmt::Debug for RatchetKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatchetKeyPair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl RatchetKeyPair {
    pub(crate) fn generate(rng: &mut impl CryptoRngCore) -> RatchetKeyPair {
        RatchetKeyPair::from_secret(StaticSecret::random_from_rng(rng))
    }

    pub(crate) fn from_secret(secret: StaticSecret) -> RatchetKeyPair {
        let public = X25519Public(PublicKey::from(&secret).to_bytes());
        RatchetKeyPair { secret, public }
    }

    pub(crate) fn from_secret_bytes(bytes: &[u8; 32]) -> RatchetKeyPair {
        RatchetKeyPair::from_secret(StaticSecret::from(*bytes))
    }

    pub(crate) fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub(crate) fn public(&self) -> X25519Public {
        self.public
    }

    pub(crate) fn diffie_hellman(
        &self,
        public: &X25519Public,
    ) -> Result<Zeroizing<[u8; 32]>, E2eError> {
        diffie_hellman(&self.secret, public)
    }

    /// A second copy, for decrypting on a copy of the state. Not `Clone`, so that copies
    /// are made only where a transaction needs them.
    pub(crate) fn duplicate(&self) -> RatchetKeyPair {
        RatchetKeyPair {
            secret: StaticSecret::from(*self.to_secret_bytes()),
            public: self.public,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_order_points_are_refused() {
        let ours = RatchetKeyPair::from_secret_bytes(&[7; 32]);
        // 0 and 1 are low-order points on Curve25519.
        let mut one = [0u8; 32];
        one[0] = 1;
        for point in [[0u8; 32], one] {
            assert_eq!(
                ours.diffie_hellman(&X25519Public(point)),
                Err(E2eError::NonContributory)
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let ours = RatchetKeyPair::from_secret_bytes(&[7; 32]);
        assert!(format!("{ours:?}").contains("redacted"));
        assert!(!format!("{ours:?}").contains("0707"));
    }
}
