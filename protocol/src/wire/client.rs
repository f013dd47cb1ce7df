//! Frames a client sends.
//!
//! Every frame is `{ "v": 1, "rid": <u32>, "body": { "<kind>": { ...fields } } }`; the
//! field tables are in `docs/protocol.md`.

use serde::{Deserialize, Serialize};

use crate::business::{Category, SignedGrant, SignedRevocation};
use crate::devices::link::{JoinMac, RendezvousId};
use crate::devices::SignedDeviceList;
use crate::identity::{IdentityKeyPair, IdentityPublic, X25519Public};
use crate::ids::{AccountId, DeviceAddress, DeviceId, Handle, MessageId, RequestId, Seq};
use crate::prekeys::{OneTimePrekey, SignedKemPrekey, SignedPrekey};
use crate::signature::Signature;
use crate::wire::server::Hello;

/// One client-to-server frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Protocol version, [`crate::PROTOCOL_VERSION`].
    pub v: u8,
    /// Echoed in the reply. Clients use distinct ids for requests in flight; `ack`
    /// gets no reply, so its id is not used.
    pub rid: RequestId,
    /// What the client asks for.
    pub body: ClientBody,
}

impl ClientFrame {
    /// A version-1 frame.
    pub fn new(rid: RequestId, body: ClientBody) -> ClientFrame {
        ClientFrame {
            v: crate::PROTOCOL_VERSION,
            rid,
            body,
        }
    }
}

/// The kinds of client frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientBody {
    /// Log in to an existing account. Reply: `authenticated`, or error `auth_failed`
    /// and close.
    Auth(Auth),
    /// Create an account and log in. Reply: `authenticated`.
    Register(Register),
    /// Replace the signed prekeys and/or add one-time prekeys. Reply: `prekeys_stored`.
    UploadPrekeys(UploadPrekeys),
    /// Get a prekey bundle to start a session. Reply: `bundle`.
    FetchBundle(FetchBundle),
    /// Look up the account behind a handle. Reply: `resolved`.
    ResolveHandle(ResolveHandle),
    /// Send an envelope. Reply: `accepted` once it is durably queued.
    Send(Send),
    /// Send one message to every device of an account and to the sender's other devices,
    /// one ciphertext each, stored all together or not at all. Reply: `accepted`, or the
    /// error `stale_devices` carrying the current lists.
    SendToAll(SendToAll),
    /// Cumulative acknowledgement of delivered envelopes. No reply.
    Ack(Ack),
    /// Delete this account: its devices, prekeys, queued envelopes and handle (which
    /// becomes free). Reply: `account_deleted`, then the server closes (1000).
    DeleteAccount(DeleteAccount),
    /// Store a signed consent grant to a business. Reply: `consent_updated`.
    GrantConsent(GrantConsent),
    /// Store a signed revocation; queued envelopes from the business in the revoked
    /// categories are purged. Reply: `consent_updated`.
    RevokeConsent(RevokeConsent),
    /// Refuse every envelope from an account. Reply: `done`.
    Block(Block),
    /// Lift a block. Reply: `done`.
    Unblock(Unblock),
    /// Report an account for abuse; counts against a business's standing. Reply: `done`.
    Report(Report),
    /// The verification authority's key and an account's business certificate.
    /// Reply: `business`.
    FetchBusiness(FetchBusiness),
    /// Set or clear this account's display name. Reply: `done`, or `name_reserved`.
    SetDisplayName(SetDisplayName),
    /// Store a newer signed list of this account's devices; devices no longer on it are
    /// deleted and closed. Reply: `devices`.
    PublishDevices(PublishDevices),
    /// An account's latest signed device list. Reply: `devices`.
    FetchDevices(FetchDevices),
    /// (Existing device) wait for a new device to join with a linking code. Reply:
    /// `link_opened`; later the push `link_joined`.
    OpenLink(OpenLink),
    /// (Existing device) hand the sealed account secrets to the device that joined.
    /// Reply: `done`.
    SealLink(SealLink),
    /// (New device, before authentication) join the rendezvous of a linking code. Reply:
    /// `link_sealed` once the existing device sealed the secrets.
    JoinLink(JoinLink),
}

/// `auth`: the answer to the server's `hello` challenge.
///
/// `signature` is by `address.account` over
/// `"parley/v1/auth" 0x00 ‖ server_id (32) ‖ nonce (32) ‖ account (32) ‖ device (u32 BE)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The device logging in.
    pub address: DeviceAddress,
    /// Signature over the auth transcript.
    pub signature: Signature,
}

impl Auth {
    /// `address`'s answer to the challenge in `hello`, signed by `identity` (the key of
    /// `address.account`).
    pub fn signed(identity: &IdentityKeyPair, hello: &Hello, address: DeviceAddress) -> Auth {
        let transcript = crate::auth::auth_transcript(&hello.server_id, &hello.nonce, &address);
        Auth {
            address,
            signature: identity.sign(&transcript),
        }
    }
}

/// `register`: create an account (device 1) and log in on this connection.
///
/// `signature` is by `identity.account` over
/// `"parley/v1/register" 0x00 ‖ server_id (32) ‖ nonce (32) ‖ account (32) ‖ dh (32) ‖
/// len (u32 BE) ‖ handle (UTF-8, empty when none)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The new account's public identity.
    pub identity: IdentityPublic,
    /// Optional unique handle.
    pub handle: Option<Handle>,
    /// The first signed prekey.
    pub signed_prekey: SignedPrekey,
    /// The first signed KEM prekey, if any.
    pub kem_prekey: Option<SignedKemPrekey>,
    /// Initial one-time prekeys, at most [`crate::limits::MAX_PREKEYS_PER_UPLOAD`].
    pub one_time_prekeys: Vec<OneTimePrekey>,
    /// Proof of possession of the identity key, bound to this server and challenge.
    pub signature: Signature,
}

/// `upload_prekeys`: rotate signed prekeys and/or top up one-time prekeys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPrekeys {
    /// A new signed prekey replacing the current one.
    pub signed_prekey: Option<SignedPrekey>,
    /// A new signed KEM prekey replacing the current one.
    pub kem_prekey: Option<SignedKemPrekey>,
    /// One-time prekeys to add; ids already stored are replaced.
    pub one_time_prekeys: Vec<OneTimePrekey>,
}

/// `fetch_bundle`: a prekey bundle of one device. Takes one of its one-time prekeys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBundle {
    /// The device.
    pub address: DeviceAddress,
}

/// `resolve_handle`: which account a handle names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveHandle {
    /// The handle, normalized.
    pub handle: Handle,
}

/// `send`: an opaque envelope for one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    /// The recipient device.
    pub to: DeviceAddress,
    /// Sender-chosen id; a retry with the same id returns the first result.
    pub id: MessageId,
    /// End-to-end encrypted payload, at most [`crate::limits::MAX_ENVELOPE_BYTES`].
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
    /// What a business send is about; required from business accounts, absent (and
    /// ignored) between people. Omitted from the encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// The envelope carries a delivered or read receipt (an extension of version 1:
    /// omitted when false, and a frame without it means `false`). A receipt a person
    /// sends to a business does not open the business's care window (§14); it is the
    /// sender's claim, and only ever narrows what the relay lets the business send.
    #[serde(
        default,
        deserialize_with = "false_if_nil",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub receipt: bool,
}

/// `send_to_all`: one message for every device of `to` (as listed at `to_version`) and
/// every other device of the sender (as listed at `own_version`), ADR 0007.
///
/// The server stores every copy in one transaction or none. It refuses the request with
/// `stale_devices` (and the current signed lists) unless `to_version` is the version it
/// holds and `copies` name exactly the devices of that list, and, when `own_copies` is
/// not empty, the same holds for `own_version` and every device of the sender but the
/// sending one (empty `own_copies`, for a receipt say, skip the sender's devices). Retry
/// dedup, consent, blocks, care windows and business limits count the request once, as
/// one message to `to`. The ciphertexts together are at most the server's
/// `max_envelope_bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendToAll {
    /// The recipient account (not the sender's own).
    pub to: AccountId,
    /// The version of `to`'s device list the copies were made for (0: the implicit list).
    pub to_version: u64,
    /// One ciphertext per device of `to`, in ascending device order; at least one.
    pub copies: Vec<DeviceCopy>,
    /// The version of the sender's own device list (0: the implicit list).
    pub own_version: u64,
    /// One ciphertext per other device of the sender, in ascending device order; empty
    /// when it has none, or when they need no copy.
    pub own_copies: Vec<DeviceCopy>,
    /// Sender-chosen id; a retry with the same id, recipient and bytes returns the first
    /// result.
    pub id: MessageId,
    /// As in `send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// As in `send`.
    #[serde(
        default,
        deserialize_with = "false_if_nil",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub receipt: bool,
}

/// One device's ciphertext in a `send_to_all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCopy {
    /// The device.
    pub device: DeviceId,
    /// End-to-end encrypted for that device.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// An optional flag: a missing key and `nil` are both `false` (docs/protocol.md §2).
fn false_if_nil<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// `delete_account`: no fields; acts on the authenticated account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAccount {}

/// `ack`: every envelope with `seq <= through` was processed and may be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Highest sequence number processed.
    pub through: Seq,
}

/// `grant_consent`: the grant must be signed by the authenticated account, name a
/// verified business, be in force, and carry a nonce the server has not seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantConsent {
    /// The signed grant.
    pub grant: SignedGrant,
}

/// `revoke_consent`: signed by the authenticated account, with a fresh nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeConsent {
    /// The signed revocation.
    pub revocation: SignedRevocation,
}

/// `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The account whose envelopes are refused from now on.
    pub account: AccountId,
}

/// `unblock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unblock {
    /// The account to accept envelopes from again.
    pub account: AccountId,
}

/// `report`: one report per reporter and account counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The account reported.
    pub account: AccountId,
}

/// `fetch_business`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBusiness {
    /// The account asked about.
    pub account: AccountId,
}

/// `set_display_name`: at most [`crate::limits::MAX_DISPLAY_NAME_BYTES`] bytes, no
/// control characters; names confusable with a verified business's are refused to
/// other accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDisplayName {
    /// The new name, or nil to clear it.
    pub display_name: Option<String>,
}

/// `publish_devices`: the list must be this account's, signed by it (ADR 0007), with a
/// version greater than the one the server holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishDevices {
    /// The new list.
    pub list: SignedDeviceList,
}

/// `fetch_devices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchDevices {
    /// Whose devices.
    pub account: AccountId,
}

/// `open_link`: at most one open rendezvous per connection; it ends with the connection,
/// after one join, or after the server's link lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLink {
    /// `rendezvous` of the code this device shows (protocol.md §15).
    pub rendezvous: RendezvousId,
}

/// `seal_link`: answers the join the server pushed as `link_joined`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealLink {
    /// The rendezvous this connection opened.
    pub rendezvous: RendezvousId,
    /// The sealed `LinkSecrets` (at most 4 096 bytes).
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// `join_link`: the only request besides `auth` and `register` before authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinLink {
    /// From the code.
    pub rendezvous: RendezvousId,
    /// The new device's ephemeral X25519 key.
    pub public: X25519Public,
    /// The join MAC over `public` (protocol.md §15).
    pub mac: JoinMac,
}
