//! Idempotency keys: a business names each message (`"fraud:tx-4711"`), and the key
//! decides the message id (and a card's id), so sending again with the same key is the
//! same message and the relay stores it once.
//!
//! ```text
//! message id = SHA-256("parley/v1/idempotency/message" ‖ 0x00 ‖ key)[0..16]
//! card id    = SHA-256("parley/v1/idempotency/card" ‖ 0x00 ‖ key)[0..16]
//! ```

use parley_protocol::e2e::content::CardId;
use parley_protocol::ids::MessageId;
use sha2::{Digest, Sha256};

fn derive(label: &[u8], key: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(label);
    h.update([0u8]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The message id for an idempotency key.
pub fn message_id(key: &str) -> MessageId {
    MessageId(derive(b"parley/v1/idempotency/message", key))
}

/// The card id for an idempotency key.
pub fn card_id(key: &str) -> CardId {
    CardId(derive(b"parley/v1/idempotency/card", key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_ids_other_key_other_ids() {
        assert_eq!(message_id("fraud:1"), message_id("fraud:1"));
        assert_ne!(message_id("fraud:1"), message_id("fraud:2"));
        assert_ne!(message_id("fraud:1").0, card_id("fraud:1").0);
    }
}
