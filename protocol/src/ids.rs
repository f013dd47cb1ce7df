//! Identifiers that appear on the wire. Each is a newtype, so an account can never be
//! passed where a device or a sequence number is expected.
//!
//! | type            | encoding (MessagePack)         | meaning                                  |
//! |-----------------|--------------------------------|------------------------------------------|
//! | `AccountId`     | bin 32                          | the account's Ed25519 identity public key|
//! | `DeviceId`      | uint (u32)                      | a device of an account; v1 uses `1`      |
//! | `DeviceAddress` | map `{account, device}`         | where envelopes go                       |
//! | `MessageId`     | bin 16                          | sender-chosen id of one envelope         |
//! | `Seq`           | uint (u64)                      | per-recipient-device server sequence     |
//! | `RequestId`     | uint (u32)                      | correlates a request with its reply      |
//! | `PrekeyId`      | uint (u32)                      | names a prekey of a device               |
//! | `ServerId`      | bin 32                          | random identity of one server deployment |
//! | `Nonce`         | bin 32                          | single-use authentication challenge      |
//! | `Handle`        | str                             | optional unique lookup name, no `@`      |

use serde::{Deserialize, Serialize};

use crate::fixed_bytes::fixed_bytes;
use crate::limits::{MAX_HANDLE_LEN, MIN_HANDLE_LEN};

fixed_bytes!(
    /// An account: its Ed25519 identity public key (compressed Edwards point).
    AccountId,
    32
);

fixed_bytes!(
    /// A sender-chosen message id. A retry carries the same id, and the server answers a
    /// retry with the result of the first attempt.
    MessageId,
    16
);

impl MessageId {
    /// A new id whose first 8 bytes are `unix_micros` (big-endian) and whose last 8 are
    /// random. Ids of one sender then sort in the order they were made, so the server's
    /// retry-dedup index gets each new entry next to the sender's previous one instead of
    /// on a random page (with fully random ids the server's store measured 35-43 %
    /// slower; docs/benchmarks.md). The server treats ids as opaque: any
    /// 16 bytes work, and uniqueness per sender comes from the random half.
    pub fn time_ordered(unix_micros: u64, rng: &mut impl rand_core::CryptoRngCore) -> MessageId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&unix_micros.to_be_bytes());
        rng.fill_bytes(&mut id[8..]);
        MessageId(id)
    }
}

fixed_bytes!(
    /// The random 32-byte identity of a server deployment, bound into every
    /// authentication signature so a signature for one server is useless at another.
    ServerId,
    32
);

fixed_bytes!(
    /// A single-use authentication challenge.
    Nonce,
    32
);

/// A device of an account. Every address carries one, so multi-device needs no wire change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl DeviceId {
    /// The device a registration creates.
    pub const PRIMARY: DeviceId = DeviceId(1);
}

/// Where an envelope goes, and who sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceAddress {
    /// The account.
    pub account: AccountId,
    /// The device of that account.
    pub device: DeviceId,
}

impl std::fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.account, self.device.0)
    }
}

/// A position in one recipient device's queue, assigned by the server in commit order:
/// increasing, starting at 1, never given twice, but not dense (after a server restart
/// a device's seqs may skip values). A cumulative ack of `n` covers every `seq <= n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

/// Correlates a client request with the server's reply. Chosen by the client; the server
/// echoes it and never interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u32);

/// Names one prekey of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrekeyId(pub u32);

/// An optional, unique, human-friendly account name: 3 to 32 characters of `a-z`, `0-9`
/// and `_`, starting with a letter. Input is case-insensitive and may start with `@`;
/// the stored and encoded form is lowercase without `@`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Handle(String);

/// Why a string is not a handle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Shorter than [`MIN_HANDLE_LEN`] or longer than [`MAX_HANDLE_LEN`].
    #[error("a handle has {MIN_HANDLE_LEN} to {MAX_HANDLE_LEN} characters")]
    Length,
    /// The first character is not a letter.
    #[error("a handle starts with a letter")]
    FirstCharacter,
    /// A character outside `a-z`, `0-9`, `_`.
    #[error("a handle may contain only letters a-z, digits and '_'")]
    Character,
}

impl Handle {
    /// Validates and normalizes `input` (case-folds ASCII, strips one leading `@`).
    pub fn parse(input: &str) -> Result<Handle, HandleError> {
        let name = input.strip_prefix('@').unwrap_or(input);
        if name.len() < MIN_HANDLE_LEN || name.len() > MAX_HANDLE_LEN {
            return Err(HandleError::Length);
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(HandleError::FirstCharacter);
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(HandleError::Character);
        }
        Ok(Handle(name.to_ascii_lowercase()))
    }

    /// The normalized name, without `@`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle(@{})", self.0)
    }
}

impl std::str::FromStr for Handle {
    type Err = HandleError;
    fn from_str(s: &str) -> Result<Handle, HandleError> {
        Handle::parse(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        let handle = Handle::parse(&raw).map_err(serde::de::Error::custom)?;
        // The wire form is already normalized; refuse anything else so that one handle
        // has exactly one encoding.
        if handle.0 != raw {
            return Err(serde::de::Error::custom("handle is not in normalized form"));
        }
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_normalized_and_validated() {
        assert_eq!(
            Handle::parse("@Alice_1").map(|h| h.0),
            Ok("alice_1".to_owned())
        );
        assert_eq!(Handle::parse("al"), Err(HandleError::Length));
        assert_eq!(Handle::parse(&"a".repeat(33)), Err(HandleError::Length));
        assert_eq!(Handle::parse("1abc"), Err(HandleError::FirstCharacter));
        assert_eq!(Handle::parse("ab-c"), Err(HandleError::Character));
        assert_eq!(Handle::parse("abc\u{200b}"), Err(HandleError::Character));
        assert_eq!(Handle::parse("@@abc"), Err(HandleError::FirstCharacter));
    }

    #[test]
    fn time_ordered_ids_sort_by_time_and_differ_within_one_microsecond() {
        let mut rng = rand_core::OsRng;
        let earlier = MessageId::time_ordered(1_700_000_000_000_000, &mut rng);
        let later = MessageId::time_ordered(1_700_000_000_000_001, &mut rng);
        assert!(earlier.as_bytes() < later.as_bytes());
        let same_time: std::collections::HashSet<[u8; 16]> = (0..1000)
            .map(|_| MessageId::time_ordered(7, &mut rng).0)
            .collect();
        assert_eq!(same_time.len(), 1000, "the random half keeps ids apart");
        assert_eq!(
            &later.as_bytes()[..8],
            &1_700_000_000_000_001u64.to_be_bytes()
        );
    }
}
