//! Frames the server sends.
//!
//! Every frame is `{ "v": 1, "rid": <u32 or nil>, "body": { "<kind>": { ...fields } } }`.
//! `rid` echoes the request a frame answers; pushed frames (`hello`, `deliver`,
//! `drained`, `prekeys_low`) carry nil.

use serde::{Deserialize, Serialize};

use crate::business::{AuthorityKey, Category, CategorySet, SignedCertificate};
use crate::devices::link::{JoinMac, RendezvousId};
use crate::devices::SignedDeviceList;
use crate::identity::X25519Public;
use crate::ids::{AccountId, DeviceAddress, Handle, MessageId, Nonce, RequestId, Seq, ServerId};
use crate::prekeys::PrekeyBundle;
use crate::wire::ErrorCode;

/// One server-to-client frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// Protocol version, [`crate::PROTOCOL_VERSION`].
    pub v: u8,
    /// The request this answers, or nil for pushed frames.
    pub rid: Option<RequestId>,
    /// What the server says.
    pub body: ServerBody,
}

impl ServerFrame {
    /// A version-1 reply to `rid`.
    pub fn reply(rid: RequestId, body: ServerBody) -> ServerFrame {
        ServerFrame {
            v: crate::PROTOCOL_VERSION,
            rid: Some(rid),
            body,
        }
    }

    /// A version-1 pushed frame.
    pub fn push(body: ServerBody) -> ServerFrame {
        ServerFrame {
            v: crate::PROTOCOL_VERSION,
            rid: None,
            body,
        }
    }
}

/// The kinds of server frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerBody {
    /// First frame on every connection: the server's identity and a fresh challenge.
    Hello(Hello),
    /// Reply to `auth` and `register`: this connection now acts for `address`.
    Authenticated(Authenticated),
    /// Reply to `upload_prekeys`.
    PrekeysStored(PrekeysStored),
    /// Reply to `fetch_bundle`.
    Bundle(PrekeyBundle),
    /// Reply to `resolve_handle`.
    Resolved(Resolved),
    /// Reply to `send` and `send_to_all`: the envelope is durably queued for its
    /// recipient (for `send_to_all`, every copy is).
    Accepted(Accepted),
    /// An envelope for this device.
    Deliver(Deliver),
    /// Every envelope queued when this connection authenticated has been sent.
    Drained(Drained),
    /// This device has few one-time prekeys left; upload more.
    PrekeysLow(PrekeysLow),
    /// Reply to `delete_account`.
    AccountDeleted(AccountDeleted),
    /// Reply to `grant_consent` and `revoke_consent`.
    ConsentUpdated(ConsentUpdated),
    /// Reply to `fetch_business`.
    Business(Business),
    /// Reply to `block`, `unblock`, `report` and `set_display_name`: it took effect.
    Done(Done),
    /// Reply to `publish_devices` and `fetch_devices`: the account's latest device list.
    Devices(Devices),
    /// Reply to `open_link`: the rendezvous is open until `expires_at_ms`.
    LinkOpened(LinkOpened),
    /// Push to the connection that opened a rendezvous: a new device joined it.
    LinkJoined(LinkJoined),
    /// Reply to `join_link`: what the existing device sealed.
    LinkSealed(LinkSealed),
    /// A request failed (with `rid`) or the connection is about to close (nil `rid`).
    Error(ErrorBody),
}

/// `hello`: the challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The server deployment's identity, bound into auth signatures.
    pub server_id: ServerId,
    /// Single-use challenge, valid until the auth deadline of this connection.
    pub nonce: Nonce,
    /// Largest ciphertext this server accepts in `send`.
    pub max_envelope_bytes: u32,
    /// Milliseconds the client has to authenticate before the server closes.
    pub auth_timeout_ms: u32,
}

/// `authenticated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticated {
    /// The device this connection acts for.
    pub address: DeviceAddress,
    /// One-time prekeys the server still holds for it.
    pub one_time_prekeys: u32,
}

/// `prekeys_stored`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeysStored {
    /// One-time prekeys the server now holds for this device.
    pub one_time_prekeys: u32,
}

/// `resolved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The handle asked about.
    pub handle: Handle,
    /// The account it names.
    pub account: AccountId,
    /// The account's display name, if it set one. Omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `accepted`. For a `send_to_all`, `seq` is the position of the copy for the
/// recipient's lowest device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The sender's message id.
    pub id: MessageId,
    /// Position in the recipient's queue: the server's id for this envelope.
    pub seq: Seq,
}

/// `deliver`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Position in this device's queue; acknowledge it (cumulatively) once processed.
    pub seq: Seq,
    /// The authenticated sender.
    pub from: DeviceAddress,
    /// The sender's message id.
    pub id: MessageId,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The opaque payload, exactly as sent.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
    /// The category a business sent it in; omitted for envelopes between people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
}

/// `drained`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drained {
    /// The last seq of the backlog (0 if there was none).
    pub through: Seq,
}

/// `account_deleted`: no fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDeleted {}

/// `prekeys_low`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeysLow {
    /// One-time prekeys left on the server.
    pub remaining: u32,
}

/// `consent_updated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentUpdated {
    /// The business concerned.
    pub business: AccountId,
    /// The categories it may now send in (all grants in force together).
    pub categories: CategorySet,
    /// Queued envelopes from the business deleted by a revocation.
    pub purged: u32,
}

/// `business`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Business {
    /// The verification authority's key, for clients to pin.
    pub authority: AuthorityKey,
    /// The account's current certificate: nil if it has none, or it was revoked.
    pub certificate: Option<SignedCertificate>,
    /// Whether the operator suspended the business.
    pub suspended: bool,
}

/// `done`: no fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail, never containing secrets; not stable.
    pub message: String,
    /// For `rate_limited` and `reach_exhausted`: milliseconds to wait before retrying.
    pub retry_after_ms: Option<u64>,
    /// For `stale_devices`: the current lists of the recipient and of the sender's own
    /// account, as `devices` would answer them (an extension of version 1: omitted when
    /// empty, and a frame without it means empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Devices>,
}

/// `devices`: an account's latest signed device list as the server holds it. `nil` when the
/// account never published one: it has the implicit list, device 1 at version 0
/// ([`crate::devices::DeviceList::implicit`]). A client verifies the list itself
/// ([`crate::devices::DeviceListView::accept`]); the server's word is not enough.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    /// Whose list.
    pub account: AccountId,
    /// The list, or nil for the implicit one.
    pub list: Option<SignedDeviceList>,
    /// For the asker's own account only: the day (UTC midnight, ms since the epoch) each
    /// device last logged in, as the relay recorded it (its word, not signed; an
    /// extension of version 1: omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_seen: Vec<DeviceSeen>,
}

/// When the relay last saw a device log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSeen {
    /// The device.
    pub device: crate::ids::DeviceId,
    /// The day, as UTC midnight in ms since the epoch.
    pub day_ms: u64,
}

/// `link_opened`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOpened {
    /// When the server forgets the rendezvous (server time, ms since the epoch).
    pub expires_at_ms: u64,
}

/// `link_joined`: check `mac` against the code before sealing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkJoined {
    /// The rendezvous joined.
    pub rendezvous: RendezvousId,
    /// The new device's ephemeral X25519 key.
    pub public: X25519Public,
    /// Its MAC, as the new device sent it.
    pub mac: JoinMac,
}

/// `link_sealed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSealed {
    /// The sealed `LinkSecrets`.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}
