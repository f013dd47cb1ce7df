//! Symmetric-key ratchet chains (`KDF_CK`).
//!
//! ```text
//! mk  = HMAC-SHA256(ck, 0x01)
//! ck' = HMAC-SHA256(ck, 0x02)
//! ```
//!
//! A chain key knows its position (`index`): the counter of the message key it yields next.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::message_key::MessageKey;
use super::E2eError;

const MESSAGE_KEY_SEED: u8 = 0x01;
const CHAIN_KEY_SEED: u8 = 0x02;

/// A sending or receiving chain key at a position.
pub(crate) struct ChainKey {
    key: Zeroizing<[u8; 32]>,
    index: u32,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("index", &self.index)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ChainKey {
    pub(crate) fn new(key: &[u8; 32], index: u32) -> ChainKey {
        ChainKey {
            key: Zeroizing::new(*key),
            index,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The counter of the next message key.
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// Derives the message key at `index` and moves the chain one step. The old chain key
    /// is overwritten (and zeroized by `Zeroizing`'s assignment).
    pub(crate) fn step(&mut self) -> Result<MessageKey, E2eError> {
        let next_index = self.index.checked_add(1).ok_or(E2eError::ChainExhausted)?;
        let (message, chain) = kdf_ck(&self.key);
        let key = MessageKey::new(&message, self.index);
        self.key = chain;
        self.index = next_index;
        Ok(key)
    }

    pub(crate) fn duplicate(&self) -> ChainKey {
        ChainKey::new(&self.key, self.index)
    }
}

fn hmac(key: &[u8; 32], byte: u8) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) {
        mac.update(&[byte]);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// `KDF_CK` on bytes: `(message key, next chain key)`.
pub(crate) fn kdf_ck(chain_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    (
        hmac(chain_key, MESSAGE_KEY_SEED),
        hmac(chain_key, CHAIN_KEY_SEED),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_counter_is_refused_without_panicking() {
        let mut chain = ChainKey::new(&[1; 32], u32::MAX);
        assert_eq!(chain.step().err(), Some(E2eError::ChainExhausted));
        assert_eq!(chain.index(), u32::MAX);
    }

    #[test]
    fn steps_are_deterministic_and_distinct() {
        let mut a = ChainKey::new(&[1; 32], 0);
        let mut b = a.duplicate();
        let (k1, k2) = (a.step().unwrap(), a.step().unwrap());
        assert_eq!(k1.as_bytes(), b.step().unwrap().as_bytes());
        assert_ne!(k1.as_bytes(), k2.as_bytes());
        assert_eq!(a.index(), 2);
    }
}
