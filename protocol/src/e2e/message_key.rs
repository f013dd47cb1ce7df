//! Per-message keys and the AEAD.
//!
//! ```text
//! key (32) ‖ nonce (12) = HKDF-SHA256(salt = 0x00×32, ikm = mk,
//!                                     info = "parley/v1/message-keys", L = 44)
//! ciphertext = ChaCha20-Poly1305(key, nonce, plaintext, aad = AD)   (16-byte tag appended)
//! ```
//!
//! Each message key is used for exactly one message, so a derived nonce is safe. Encrypting
//! consumes the key; decrypting borrows it, because a failed decryption must leave a stored
//! skipped key in place.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::E2eError;

/// HKDF info of the message-key expansion.
pub(crate) const MESSAGE_KEYS_INFO: &[u8] = b"parley/v1/message-keys";

/// A message key and the counter it belongs to.
pub(crate) struct MessageKey {
    key: Zeroizing<[u8; 32]>,
    index: u32,
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageKey")
            .field("index", &self.index)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl MessageKey {
    pub(crate) fn new(key: &[u8; 32], index: u32) -> MessageKey {
        MessageKey {
            key: Zeroizing::new(*key),
            index,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// Encrypts one message and consumes the key.
    pub(crate) fn encrypt(
        self,
        associated_data: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, E2eError> {
        let (key, nonce) = aead_key_and_nonce(&self.key);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key[..]));
        let payload = Payload {
            msg: plaintext,
            aad: associated_data,
        };
        // ChaCha20-Poly1305 refuses only plaintexts over 256 GiB.
        cipher
            .encrypt(Nonce::from_slice(&nonce[..]), payload)
            .map_err(|_| E2eError::Limit("plaintext"))
    }

    /// Decrypts one message; the key stays usable if the tag does not verify.
    pub(crate) fn decrypt(
        &self,
        associated_data: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, E2eError> {
        let (key, nonce) = aead_key_and_nonce(&self.key);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key[..]));
        let payload = Payload {
            msg: ciphertext,
            aad: associated_data,
        };
        cipher
            .decrypt(Nonce::from_slice(&nonce[..]), payload)
            .map_err(|_| E2eError::AuthenticationFailed)
    }
}

/// Expands a message key into the AEAD key and nonce.
pub(crate) fn aead_key_and_nonce(
    message_key: &[u8; 32],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 12]>) {
    let mut okm = Zeroizing::new([0u8; 44]);
    let _ = Hkdf::<Sha256>::new(Some(&[0u8; 32]), message_key).expand(MESSAGE_KEYS_INFO, &mut *okm);
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = Zeroizing::new([0u8; 12]);
    key.copy_from_slice(&okm[..32]);
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_is_detected_and_the_key_survives() {
        let key = MessageKey::new(&[9; 32], 3);
        let ct = MessageKey::new(&[9; 32], 3)
            .encrypt(b"ad", b"hello")
            .unwrap();
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(
            key.decrypt(b"ad", &bad),
            Err(E2eError::AuthenticationFailed)
        );
        assert_eq!(
            key.decrypt(b"other ad", &ct),
            Err(E2eError::AuthenticationFailed)
        );
        assert_eq!(key.decrypt(b"ad", &ct).unwrap(), b"hello");
    }
}
