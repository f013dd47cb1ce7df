//! Retry dedup: what a send whose `(sender device, message id)` was stored before gets,
//! and what a store keeps to answer it without knowing who the message went to.
//!
//! For each accepted message id a store keeps, in its `sent` table, only:
//!
//! | column | value |
//! |---|---|
//! | sender, message id | the key a retry is looked up by |
//! | digest | first 16 bytes of `SHA-256(DOMAIN ‖ recipient account ‖ recipient device (u64 BE) ‖ ciphertext)` |
//! | sealed seq | the seq, XORed with bytes 16..24 of that hash |
//! | time | acceptance time, to the minute ([`dedup_time`]) |
//!
//! Neither the recipient nor the seq (a per-recipient counter, which would point at
//! its recipient) can be read back from a row: only a send carrying the same recipient
//! and the same bytes matches the digest and unseals the seq. Such a send is a retry and
//! gets the first seq; the same id with anything else reuses an id and is refused
//! (docs/protocol.md, "Retries"). Rows live for the dedup window
//! (`--dedup-window`), not the envelope retention.

use parley_protocol::ids::{DeviceAddress, Seq};
use sha2::{Digest, Sha256};

use super::{EnqueueOutcome, NewEnvelope};

/// Separates this hash from every other SHA-256 of a ciphertext.
const DOMAIN: &[u8] = b"parley retry dedup v1\0";

/// The same for a send to every device, whose key covers all its copies.
const FAN_OUT_DOMAIN: &[u8] = b"parley retry dedup fan-out v1\0";

/// How precisely a dedup entry keeps its time: the sweep needs no more (it runs every
/// `--sweep-interval`, 60 s by default).
pub const DEDUP_TIME_GRANULARITY_MS: u64 = 60_000;

/// What a store keeps of one send for retry dedup (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryKey {
    digest: [u8; 16],
    mask: u64,
}

impl RetryKey {
    /// The key of a send of `ciphertext` to `to`.
    pub fn of(to: &DeviceAddress, ciphertext: &[u8]) -> RetryKey {
        let mut hash = Sha256::new();
        hash.update(DOMAIN);
        hash.update(to.account.as_bytes());
        hash.update(u64::from(to.device.0).to_be_bytes());
        hash.update(ciphertext);
        RetryKey::from_hash(hash)
    }

    /// The key of `envelope`: of its one copy for a send to one device, of every copy (the
    /// recipients and the bytes, in order) for a send to every device.
    pub fn of_envelope(envelope: &NewEnvelope) -> RetryKey {
        let Some(fan_out) = &envelope.fan_out else {
            return RetryKey::of(&envelope.to, &envelope.ciphertext);
        };
        let mut hash = Sha256::new();
        hash.update(FAN_OUT_DOMAIN);
        let copies = fan_out
            .copies
            .iter()
            .map(|c| (&c.to, c.ciphertext.as_slice()));
        for (to, ciphertext) in
            std::iter::once((&envelope.to, envelope.ciphertext.as_slice())).chain(copies)
        {
            hash.update(to.account.as_bytes());
            hash.update(u64::from(to.device.0).to_be_bytes());
            hash.update(
                u64::try_from(ciphertext.len())
                    .unwrap_or(u64::MAX)
                    .to_be_bytes(),
            );
            hash.update(ciphertext);
        }
        RetryKey::from_hash(hash)
    }

    fn from_hash(hash: Sha256) -> RetryKey {
        let full = hash.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        let mut mask = [0u8; 8];
        mask.copy_from_slice(&full[16..24]);
        RetryKey {
            digest,
            mask: u64::from_be_bytes(mask),
        }
    }

    /// The digest a store keeps (and compares).
    pub fn digest(&self) -> &[u8; 16] {
        &self.digest
    }

    /// `seq` as a store keeps it: readable only with this key.
    pub fn seal(&self, seq: Seq) -> i64 {
        i64::from_be_bytes((seq.0 ^ self.mask).to_be_bytes())
    }

    fn unseal(&self, sealed: i64) -> Seq {
        Seq(u64::from_be_bytes(sealed.to_be_bytes()) ^ self.mask)
    }

    /// The answer to this send, whose id an earlier send used and stored as
    /// `(earlier_digest, sealed_seq)`: `Duplicate` with the first seq for a retry (same
    /// recipient, same bytes), `IdReused` otherwise.
    pub fn answer(&self, earlier_digest: &[u8], sealed_seq: i64) -> EnqueueOutcome {
        if earlier_digest == self.digest.as_slice() {
            EnqueueOutcome::Duplicate(self.unseal(sealed_seq))
        } else {
            EnqueueOutcome::IdReused
        }
    }
}

/// The time a dedup entry keeps of a send accepted at `now_ms`: the start of its minute.
/// The dedup window counts from there, so an entry may go up to a minute early; a retry
/// then is a new send (protocol.md, "Retries").
pub fn dedup_time(now_ms: u64) -> u64 {
    now_ms - now_ms % DEDUP_TIME_GRANULARITY_MS
}

#[cfg(test)]
mod tests {
    use parley_protocol::ids::{AccountId, DeviceId};

    use super::*;

    fn to(byte: u8, device: u32) -> DeviceAddress {
        DeviceAddress {
            account: AccountId::from_slice(&[byte; 32]).expect("32 bytes"),
            device: DeviceId(device),
        }
    }

    #[test]
    fn a_retry_gets_its_seq_and_a_reused_id_is_refused() {
        let first = RetryKey::of(&to(1, 1), b"one");
        let sealed = first.seal(Seq(7));
        assert_eq!(
            first.answer(first.digest(), sealed),
            EnqueueOutcome::Duplicate(Seq(7))
        );
        for other in [
            RetryKey::of(&to(1, 1), b"two"),
            RetryKey::of(&to(2, 1), b"one"),
            RetryKey::of(&to(1, 2), b"one"),
        ] {
            assert_ne!(other.digest(), first.digest());
            assert_eq!(
                other.answer(first.digest(), sealed),
                EnqueueOutcome::IdReused
            );
        }
    }

    #[test]
    fn a_row_shows_neither_the_seq_nor_the_recipient() {
        let key = RetryKey::of(&to(1, 1), b"one");
        assert_ne!(key.seal(Seq(7)), 7);
        assert_ne!(key.seal(Seq(7)), key.seal(Seq(8)));
        // Known answer: a change would leave every stored entry unanswerable (change
        // DOMAIN, with a migration, instead).
        assert_eq!(hex(key.digest()), "bf8a2e30bd7683283c622e970203bf26");
        assert_eq!(
            u64::from_be_bytes(key.seal(Seq(7)).to_be_bytes()),
            0xad6b_d948_cb9e_7426 ^ 7
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_send_to_every_device_is_keyed_by_all_its_copies() {
        use crate::store::{EnvelopeCopy, FanOut};
        let envelope = |second: &[u8]| NewEnvelope {
            from: to(9, 1),
            to: to(1, 1),
            id: parley_protocol::ids::MessageId::from_slice(&[3; 16]).expect("16 bytes"),
            ciphertext: b"one".to_vec(),
            now_ms: 0,
            category: None,
            receipt: false,
            fan_out: Some(FanOut {
                to_version: 2,
                own_version: 0,
                copies: vec![EnvelopeCopy {
                    to: to(1, 2),
                    ciphertext: second.to_vec(),
                }],
            }),
        };
        let key = RetryKey::of_envelope(&envelope(b"two"));
        assert_eq!(key, RetryKey::of_envelope(&envelope(b"two")));
        assert_ne!(key, RetryKey::of_envelope(&envelope(b"other")));
        assert_ne!(
            key,
            RetryKey::of(&to(1, 1), b"one"),
            "not the first copy's key"
        );
        let single = NewEnvelope {
            fan_out: None,
            ..envelope(b"two")
        };
        assert_eq!(
            RetryKey::of_envelope(&single),
            RetryKey::of(&to(1, 1), b"one")
        );
    }

    #[test]
    fn dedup_times_are_kept_to_the_minute() {
        assert_eq!(dedup_time(59_999), 0);
        assert_eq!(dedup_time(60_000), 60_000);
        assert_eq!(dedup_time(60_001), 60_000);
    }
}
