//! What the engine tells the application.

use parley_protocol::business::{Category, CategorySet, ConsentRecord};
use parley_protocol::e2e::content::{Card, CardAnswer};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, MessageId};

use crate::store::SendStatus;

/// An event from the client engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new message (shown once: it is stored before it is acknowledged, and a
    /// redelivery of it is dropped).
    Message {
        /// The sender.
        from: DeviceAddress,
        /// The sender's handle, when verified by resolving it.
        handle: Option<Handle>,
        /// The message id.
        id: MessageId,
        /// Server acceptance time, ms since the epoch.
        sent_at_ms: u64,
        /// The text.
        text: String,
        /// The category a verified business sent it in (`None` between people).
        category: Option<Category>,
    },
    /// A card (from a business, usually): show it, and answer with
    /// [`crate::Client::answer_card`] and the message id.
    Card {
        /// The sender.
        from: DeviceAddress,
        /// The sender's handle, when known.
        handle: Option<Handle>,
        /// The message id (what `answer_card` takes).
        id: MessageId,
        /// Server acceptance time, ms since the epoch.
        sent_at_ms: u64,
        /// The card.
        card: Card,
        /// The category it was sent in.
        category: Option<Category>,
    },
    /// A business message the local consent ledger does not cover (no grant in force
    /// for its category, or a `conversation` reply outside the care window): the relay
    /// should have refused it. It was dropped (and acknowledged) unseen.
    DroppedWithoutConsent {
        /// The sender.
        from: DeviceAddress,
        /// The category it claimed (`conversation` when it claimed none).
        category: Category,
    },
    /// (Business side) a customer answered a card this account sent (from this device,
    /// or from another one whose `sent` copy this device kept); the answer's signature,
    /// digest, action and expiry were checked against the stored card.
    CardAnswered {
        /// The customer.
        from: DeviceAddress,
        /// The card as sent.
        card: Card,
        /// The signed answer (keep it: it is evidence).
        answer: CardAnswer,
    },
    /// (Business side) an answer to a card that does not check out; dropped.
    InvalidCardAnswer {
        /// Who sent it.
        from: DeviceAddress,
        /// Why it was refused.
        reason: String,
    },
    /// A receipt moved a sent message's status forward (never backward).
    Status {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: AccountId,
        /// The new status.
        status: SendStatus,
    },
    /// (Business side) a customer sent a signed consent grant or revocation; its
    /// signature was checked, and its user is the sender.
    ConsentChanged {
        /// The customer.
        user: AccountId,
        /// The signed record (kept in the local ledger).
        record: ConsentRecord,
        /// The categories now in force from this customer.
        in_force: CategorySet,
    },
    /// A peer's identity key differs from the one seen before: the safety number changed.
    IdentityChanged {
        /// Their account (the new one).
        account: AccountId,
        /// Their handle, if known.
        handle: Option<Handle>,
    },
    /// Another device of this account sent a text or a card: show it as this account's
    /// own message to `to`.
    SentElsewhere {
        /// The device that sent it.
        from: DeviceAddress,
        /// The recipient account.
        to: AccountId,
        /// Its handle, as the sending device resolved it.
        to_handle: Option<Handle>,
        /// The message id.
        id: MessageId,
        /// Server acceptance time, ms since the epoch.
        sent_at_ms: u64,
        /// The text (a card's title for a card).
        text: String,
    },
    /// A newer device list of `account` (a contact, or this account) verified: messages
    /// go to its devices from now on. Tell the person, loudly: a device they did not
    /// expect is someone else reading along.
    DevicesChanged {
        /// Whose devices.
        account: AccountId,
        /// The list's version.
        version: u64,
        /// Devices new on it.
        added: Vec<DeviceId>,
        /// Devices no longer on it.
        removed: Vec<DeviceId>,
    },
    /// The relay served a device list of `account` that did not verify, or is older than
    /// one verified before: it was refused, and nothing was encrypted to its devices.
    DeviceListRefused {
        /// Whose list.
        account: AccountId,
        /// Why.
        reason: String,
    },
    /// A message that could not be decrypted (it was dropped, and acknowledged).
    Undecryptable {
        /// The sender.
        from: DeviceAddress,
        /// Why.
        reason: String,
    },
    /// Every message queued at connection time has been received.
    Drained,
    /// The connection state changed.
    Connection(ConnectionState),
}

/// Whether the engine is connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Authenticated and receiving.
    Connected,
    /// Lost; reconnecting after this many milliseconds (0: to the next server at once).
    Reconnecting {
        /// Delay before the next attempt.
        in_ms: u64,
        /// Why the last attempt or connection failed.
        reason: String,
    },
    /// No server answered within [`crate::Failover::give_up_after`]: sends that were
    /// waiting got [`crate::SdkError::Queued`], and commands fail at once until a server
    /// answers again. The engine keeps trying.
    Unreachable {
        /// Why the last attempt or connection failed.
        reason: String,
    },
}
