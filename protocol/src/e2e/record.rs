//! The session record: the one serialization of a session's secret state, for the SDK to
//! store. Nothing else in this crate serializes ratchet secrets.
//!
//! ```text
//! record = version (1 byte) = 0x01 ‖ MessagePack map (structs as maps with string keys)
//! ```
//!
//! | key                | MessagePack            | meaning                                        |
//! |--------------------|------------------------|------------------------------------------------|
//! | `role`             | uint: 1 init, 2 resp   | which side of the setup we were                |
//! | `local_identity`   | map `{account, dh, dh_signature}` | our public identity               |
//! | `remote_identity`  | same                   | the peer's identity, verified at setup         |
//! | `local`, `remote`  | map `{account, device}`| the two device addresses                       |
//! | `base_key`         | bin 32                 | the initiator's base key (names the setup)     |
//! | `pending_setup`    | map or nil             | initiator's setup, until the first reply       |
//! | `root_key`         | bin 32                 | RK                                             |
//! | `ratchet_key`      | bin 32                 | our ratchet secret DHs (X25519 scalar)         |
//! | `sending_chain`    | `{key: bin 32, index}` or nil | CKs and the next counter                |
//! | `awaiting_remote`  | bin 32 or nil          | peer's new ratchet key; exactly one of these two is set |
//! | `previous_counter` | uint                   | PN                                             |
//! | `receivers`        | array of `{ratchet_key, key, index}`, newest first | receiving chains   |
//! | `retired`          | array of bin 32, newest first | ratchet keys of forgotten receiving chains |
//! | `skipped`          | array of `{ratchet_key, index, key, stored_at_ms}`, oldest first | skipped keys |
//!
//! A record of another version is refused with [`E2eError::UnsupportedVersion`]; a
//! record that breaks a bound or an invariant with [`E2eError::Malformed`]. Encoding is
//! deterministic, so `to_record(from_record(r)) == r`. The returned buffer is zeroized on
//! drop; the SDK should encrypt it at rest.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::chain_key::ChainKey;
use super::limits::{MAX_RECEIVER_CHAINS, MAX_RETIRED_CHAINS, MAX_SKIPPED_KEYS};
use super::message::SessionSetup;
use super::message_key::MessageKey;
use super::ratchet::{DoubleRatchet, Sending};
use super::ratchet_key::RatchetKeyPair;
use super::receiver_chain::ReceiverChain;
use super::root_key::RootKey;
use super::session::{Role, Session};
use super::skipped_keys::{SkippedKey, SkippedKeys};
use super::E2eError;
use crate::identity::{IdentityPublic, X25519Public};
use crate::ids::{DeviceAddress, PrekeyId};

/// The version byte of records this implementation writes and reads.
pub const RECORD_VERSION: u8 = 1;

/// Largest record accepted: far above the largest legitimate one (about 200 KiB with
/// [`MAX_SKIPPED_KEYS`] keys), so hostile input cannot make us allocate much.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// 32 secret bytes inside the record, zeroized on drop.
struct Secret([u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::fixed_bytes::deserialize_array::<D, 32>(d).map(Secret)
    }
}

#[derive(Serialize, Deserialize)]
struct SetupRecord {
    identity: IdentityPublic,
    base_key: X25519Public,
    signed_prekey: PrekeyId,
    one_time_prekey: Option<PrekeyId>,
    kem_prekey: PrekeyId,
    #[serde(with = "serde_bytes")]
    kem_ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ChainRecord {
    key: Secret,
    index: u32,
}

#[derive(Serialize, Deserialize)]
struct ReceiverRecord {
    ratchet_key: X25519Public,
    key: Secret,
    index: u32,
}

#[derive(Serialize, Deserialize)]
struct SkippedRecord {
    ratchet_key: X25519Public,
    index: u32,
    key: Secret,
    stored_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct RecordV1 {
    role: u8,
    local_identity: IdentityPublic,
    remote_identity: IdentityPublic,
    local: DeviceAddress,
    remote: DeviceAddress,
    base_key: X25519Public,
    pending_setup: Option<SetupRecord>,
    root_key: Secret,
    ratchet_key: Secret,
    sending_chain: Option<ChainRecord>,
    awaiting_remote: Option<X25519Public>,
    previous_counter: u32,
    receivers: Vec<ReceiverRecord>,
    retired: Vec<X25519Public>,
    skipped: Vec<SkippedRecord>,
}

pub(crate) fn encode(session: &Session) -> Zeroizing<Vec<u8>> {
    let ratchet = &session.ratchet;
    let (sending_chain, awaiting_remote) = match &ratchet.sending {
        Sending::Active(chain) => (
            Some(ChainRecord {
                key: Secret(*chain.as_bytes()),
                index: chain.index(),
            }),
            None,
        ),
        Sending::AwaitingStep { remote } => (None, Some(*remote)),
    };
    let record = RecordV1 {
        role: match session.role {
            Role::Initiator => 1,
            Role::Responder => 2,
        },
        local_identity: session.local_identity.clone(),
        remote_identity: session.remote_identity.clone(),
        local: session.local,
        remote: session.remote,
        base_key: session.base_key,
        pending_setup: session.pending_setup.as_ref().map(|s| SetupRecord {
            identity: s.identity.clone(),
            base_key: s.base_key,
            signed_prekey: s.signed_prekey,
            one_time_prekey: s.one_time_prekey,
            kem_prekey: s.kem_prekey,
            kem_ciphertext: s.kem_ciphertext.clone(),
        }),
        root_key: Secret(*ratchet.root_key.as_bytes()),
        ratchet_key: Secret(*ratchet.ratchet_key.to_secret_bytes()),
        sending_chain,
        awaiting_remote,
        previous_counter: ratchet.previous_counter,
        receivers: ratchet
            .receivers
            .iter()
            .map(|r| ReceiverRecord {
                ratchet_key: *r.ratchet_key(),
                key: Secret(*r.chain_key().as_bytes()),
                index: r.chain_key().index(),
            })
            .collect(),
        retired: ratchet.retired.iter().copied().collect(),
        skipped: session
            .skipped
            .iter()
            .map(|k| SkippedRecord {
                ratchet_key: k.ratchet_key,
                index: k.key.index(),
                key: Secret(*k.key.as_bytes()),
                stored_at_ms: k.stored_at_ms,
            })
            .collect(),
    };
    // Reserve enough that the buffer never reallocates (and leaves no stale copies).
    let capacity =
        4096 + 128 * (record.skipped.len() + record.receivers.len() + record.retired.len());
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    out.push(RECORD_VERSION);
    // Writing plain data with string keys into a Vec cannot fail.
    let _ = rmp_serde::encode::write_named(&mut *out, &record);
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Session, E2eError> {
    const BAD: E2eError = E2eError::Malformed("session record");
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(BAD);
    }
    let (&version, mut rest) = bytes.split_first().ok_or(BAD)?;
    if version != RECORD_VERSION {
        return Err(E2eError::UnsupportedVersion(version));
    }
    let record: RecordV1 = {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        RecordV1::deserialize(&mut de).map_err(|_| BAD)?
    };
    if !rest.is_empty()
        || record.receivers.len() > MAX_RECEIVER_CHAINS
        || record.skipped.len() > MAX_SKIPPED_KEYS
        || record.retired.len() > MAX_RETIRED_CHAINS
        || record.local_identity.account != record.local.account
        || record.remote_identity.account != record.remote.account
    {
        return Err(BAD);
    }
    let role = match record.role {
        1 => Role::Initiator,
        2 => Role::Responder,
        _ => return Err(BAD),
    };
    let sending = match (&record.sending_chain, record.awaiting_remote) {
        (Some(chain), None) => Sending::Active(ChainKey::new(&chain.key.0, chain.index)),
        (None, Some(remote)) => Sending::AwaitingStep { remote },
        _ => return Err(BAD),
    };
    let pending_setup = match &record.pending_setup {
        None => None,
        Some(s) if role == Role::Initiator && s.base_key == record.base_key => Some(SessionSetup {
            identity: s.identity.clone(),
            base_key: s.base_key,
            signed_prekey: s.signed_prekey,
            one_time_prekey: s.one_time_prekey,
            kem_prekey: s.kem_prekey,
            kem_ciphertext: s.kem_ciphertext.clone(),
        }),
        Some(_) => return Err(BAD),
    };
    if pending_setup
        .as_ref()
        .is_some_and(|s| s.kem_ciphertext.len() != super::limits::KEM_CIPHERTEXT_BYTES)
    {
        return Err(BAD);
    }
    let ratchet = DoubleRatchet {
        root_key: RootKey::from_bytes(&record.root_key.0),
        ratchet_key: RatchetKeyPair::from_secret_bytes(&record.ratchet_key.0),
        sending,
        previous_counter: record.previous_counter,
        receivers: record
            .receivers
            .iter()
            .map(|r| ReceiverChain::new(r.ratchet_key, ChainKey::new(&r.key.0, r.index)))
            .collect(),
        retired: record.retired.iter().copied().collect(),
    };
    let skipped = SkippedKeys::from_keys(
        record
            .skipped
            .iter()
            .map(|k| SkippedKey {
                ratchet_key: k.ratchet_key,
                key: MessageKey::new(&k.key.0, k.index),
                stored_at_ms: k.stored_at_ms,
            })
            .collect(),
    );
    Ok(Session {
        role,
        local_identity: record.local_identity.clone(),
        remote_identity: record.remote_identity.clone(),
        local: record.local,
        remote: record.remote,
        base_key: record.base_key,
        pending_setup,
        ratchet,
        skipped,
    })
}
