//! What nodes tell each other on a device's subject, as compact MessagePack (an enum as
//! a one-entry map from its variant name, structs as arrays: no buffering when decoded).
//!
//! Every message is a hint: losing one delays a delivery until the next wake or resync,
//! never loses an envelope (the store is the truth).

use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId, Seq};
use serde::{Deserialize, Serialize};

use crate::store::policy::{category_code, category_from_code};
use crate::store::StoredEnvelope;

/// Largest ciphertext a wake carries; a bigger envelope is read from the store.
pub const WAKE_ENVELOPE_MAX_BYTES: usize = 8 * 1024;

/// A message on a device's subject.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceMessage {
    /// An envelope was committed for the device at `seq`; here it is when small.
    #[serde(rename = "w")]
    Wake {
        /// Its seq.
        seq: u64,
        /// The envelope, when at most [`WAKE_ENVELOPE_MAX_BYTES`].
        envelope: Option<WireEnvelope>,
    },
    /// Read the queue from the store (something was queued or purged without a hand-off).
    #[serde(rename = "r")]
    Resync,
    /// A connection of the device attached on `node`.
    #[serde(rename = "c")]
    Connected {
        /// The node holding it.
        node: String,
        /// When it authenticated, ms since the epoch.
        auth_time_ms: u64,
    },
    /// The device has this many one-time prekeys left.
    #[serde(rename = "p")]
    PrekeysLow {
        /// One-time prekeys left.
        remaining: u32,
    },
    /// The account removed the device: close its connection (4005).
    #[serde(rename = "x")]
    Removed,
}

/// A committed envelope as a wake carries it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEnvelope {
    #[serde(with = "serde_bytes")]
    from_account: Vec<u8>,
    from_device: u32,
    #[serde(with = "serde_bytes")]
    id: Vec<u8>,
    accepted_at_ms: u64,
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
    category: Option<i64>,
}

impl DeviceMessage {
    /// The wake for a committed envelope.
    pub fn wake(envelope: &StoredEnvelope) -> DeviceMessage {
        let carried =
            (envelope.ciphertext.len() <= WAKE_ENVELOPE_MAX_BYTES).then(|| WireEnvelope {
                from_account: envelope.from.account.as_bytes().to_vec(),
                from_device: envelope.from.device.0,
                id: envelope.id.as_bytes().to_vec(),
                accepted_at_ms: envelope.accepted_at_ms,
                ciphertext: envelope.ciphertext.clone(),
                category: envelope.category.map(category_code),
            });
        DeviceMessage::Wake {
            seq: envelope.seq.0,
            envelope: carried,
        }
    }

    /// Encodes for the bus.
    pub fn encode(&self) -> Vec<u8> {
        // Plain structs of integers, strings and bytes always encode.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Decodes a message from the bus; `None` for anything malformed (a hint less).
    pub fn decode(bytes: &[u8]) -> Option<DeviceMessage> {
        rmp_serde::from_slice(bytes).ok()
    }
}

impl WireEnvelope {
    /// The envelope at `seq`; `None` if a field is malformed.
    pub fn into_stored(self, seq: u64) -> Option<StoredEnvelope> {
        Some(StoredEnvelope {
            seq: Seq(seq),
            from: DeviceAddress {
                account: AccountId::from_slice(&self.from_account)?,
                device: DeviceId(self.from_device),
            },
            id: MessageId::from_slice(&self.id)?,
            accepted_at_ms: self.accepted_at_ms,
            ciphertext: self.ciphertext,
            category: match self.category {
                None => None,
                Some(code) => Some(category_from_code(code)?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::business::Category;

    fn envelope(size: usize) -> StoredEnvelope {
        StoredEnvelope {
            seq: Seq(9),
            from: DeviceAddress {
                account: AccountId([3; 32]),
                device: DeviceId(2),
            },
            id: MessageId([4; 16]),
            accepted_at_ms: 1234,
            ciphertext: vec![5; size],
            category: Some(Category::SecurityAlert),
        }
    }

    #[test]
    fn small_envelopes_ride_with_their_wake() {
        let message = DeviceMessage::wake(&envelope(200));
        let decoded = DeviceMessage::decode(&message.encode()).unwrap();
        let DeviceMessage::Wake {
            seq,
            envelope: Some(carried),
        } = decoded
        else {
            panic!("a wake with its envelope");
        };
        assert_eq!(carried.into_stored(seq), Some(envelope(200)));
        let big = DeviceMessage::wake(&envelope(WAKE_ENVELOPE_MAX_BYTES + 1));
        assert_eq!(
            big,
            DeviceMessage::Wake {
                seq: 9,
                envelope: None
            }
        );
    }

    #[test]
    fn other_messages_round_trip_and_garbage_is_ignored() {
        for message in [
            DeviceMessage::Resync,
            DeviceMessage::Connected {
                node: "n1".into(),
                auth_time_ms: 7,
            },
            DeviceMessage::PrekeysLow { remaining: 3 },
            DeviceMessage::Removed,
        ] {
            assert_eq!(DeviceMessage::decode(&message.encode()), Some(message));
        }
        assert_eq!(DeviceMessage::decode(b"\xff\x00garbage"), None);
    }
}
