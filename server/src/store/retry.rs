//! Retry dedup: what a send whose `(sender device, message id)` was stored before gets.
//!
//! Every store keeps, for each accepted message id, its seq, its recipient and a digest
//! of its ciphertext, and answers a send with a known id through [`answer_retry`]: the
//! same bytes to the same recipient are a retry and get the first seq back; anything
//! else reuses an id and is refused (docs/protocol.md, "Retries").

use parley_protocol::ids::Seq;

use super::EnqueueOutcome;

/// What a store keeps of a ciphertext for retry dedup: the first 16 bytes of its
/// SHA-256.
pub type CiphertextDigest = [u8; 16];

/// The digest [`answer_retry`] compares.
pub fn ciphertext_digest(ciphertext: &[u8]) -> CiphertextDigest {
    let full = <sha2::Sha256 as sha2::Digest>::digest(ciphertext);
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

/// An earlier send with the same `(sender device, message id)`, as the store kept it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EarlierSend {
    /// Where it was queued.
    pub seq: Seq,
    /// Whether it went to the same recipient device; `None` when the store did not keep
    /// the recipient (SQLite rows from before schema 4).
    pub same_recipient: Option<bool>,
    /// Whether its ciphertext had the same digest; `None` when not kept (same rows).
    pub same_bytes: Option<bool>,
}

/// The answer to a send whose id was used before: `Duplicate` for a retry, `IdReused`
/// when the recipient or the bytes differ. Rows that kept neither are taken as retries.
pub fn answer_retry(earlier: EarlierSend) -> EnqueueOutcome {
    if earlier.same_recipient == Some(false) || earlier.same_bytes == Some(false) {
        EnqueueOutcome::IdReused
    } else {
        EnqueueOutcome::Duplicate(earlier.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_gets_its_seq_and_a_reused_id_is_refused() {
        let earlier = EarlierSend {
            seq: Seq(7),
            same_recipient: Some(true),
            same_bytes: Some(true),
        };
        assert_eq!(answer_retry(earlier), EnqueueOutcome::Duplicate(Seq(7)));
        for (same_recipient, same_bytes) in [(Some(false), Some(true)), (Some(true), Some(false))] {
            let reused = EarlierSend {
                same_recipient,
                same_bytes,
                ..earlier
            };
            assert_eq!(answer_retry(reused), EnqueueOutcome::IdReused);
        }
        let old_row = EarlierSend {
            same_recipient: None,
            same_bytes: None,
            ..earlier
        };
        assert_eq!(answer_retry(old_row), EnqueueOutcome::Duplicate(Seq(7)));
    }

    #[test]
    fn digests_differ_for_different_bytes() {
        assert_ne!(ciphertext_digest(b"a"), ciphertext_digest(b"b"));
        assert_eq!(ciphertext_digest(b"a"), ciphertext_digest(b"a"));
    }
}
