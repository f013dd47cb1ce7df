//! What the engine tells the application.

use parley_protocol::ids::{AccountId, DeviceAddress, Handle, MessageId};

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
    },
    /// A peer's identity key differs from the one seen before: the safety number changed.
    IdentityChanged {
        /// Their account (the new one).
        account: AccountId,
        /// Their handle, if known.
        handle: Option<Handle>,
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
    /// Lost; reconnecting after this many milliseconds.
    Reconnecting {
        /// Delay before the next attempt.
        in_ms: u64,
        /// Why the last attempt or connection failed.
        reason: String,
    },
}
