//! The one error type of the end-to-end layer.
//!
//! Variants are grouped by who is at fault: the peer or the relay (bad, replayed or
//! unexpected input), the caller (wrong arguments), or us (a bug). Every error leaves the
//! session exactly as it was: decryption works on a copy and commits only on success.
//! Messages never say *which* cryptographic check failed beyond what the variant names.

use crate::ids::{AccountId, PrekeyId};

/// Why an end-to-end operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum E2eError {
    // --- the peer or the relay -------------------------------------------------------
    /// The bytes are not a well-formed message, record or content of this version; the
    /// string names the part that is wrong.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A message or record of a version this implementation does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The authentication tag did not verify: the message was tampered with, truncated, or
    /// is not for this session.
    #[error("message authentication failed")]
    AuthenticationFailed,
    /// The message was already decrypted (or its key was discarded after
    /// [`MAX_SKIPPED_KEYS`](super::limits::MAX_SKIPPED_KEYS) or
    /// [`MAX_RECEIVER_CHAINS`](super::limits::MAX_RECEIVER_CHAINS)): show nothing.
    #[error("duplicate message")]
    Duplicate,
    /// A prekey message whose session was already set up (a replayed first message): no
    /// second session is created and nothing is shown.
    #[error("session setup already accepted")]
    DuplicateSetup,
    /// The message counter is more than [`MAX_SKIP`](super::limits::MAX_SKIP) ahead of
    /// the chain; refused before deriving any key.
    #[error("message counter too far ahead")]
    TooFarAhead,
    /// The message's skipped key is older than
    /// [`SKIPPED_KEY_MAX_AGE_MS`](super::limits::SKIPPED_KEY_MAX_AGE_MS).
    #[error("message key expired")]
    Expired,
    /// A Diffie-Hellman result was all zeros (a low-order public key): refused.
    #[error("non-contributory key agreement")]
    NonContributory,
    /// A prekey, identity or card-answer signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A prekey message names a prekey this device does not have (used, retired or never
    /// published).
    #[error("unknown prekey {0:?}")]
    UnknownPrekey(PrekeyId),
    /// The bundle carries no KEM prekey. Version 1 sessions are always hybrid, so a relay
    /// cannot downgrade a session by removing it.
    #[error("prekey bundle has no KEM prekey")]
    MissingKemPrekey,
    /// The bundle, or a prekey message's identity, does not belong to the expected address.
    #[error("identity does not match the address")]
    AddressMismatch,
    /// A prekey message that belongs to another session with this peer; try
    /// [`accept`](super::accept) or another stored session.
    #[error("message belongs to another session")]
    SessionMismatch,
    /// A peer's identity differs from the one stored for it: possibly a relay substituting
    /// keys. Nothing was stored; the user (or policy) must accept the new identity.
    #[error("identity of the peer changed")]
    IdentityChanged {
        /// The identity stored before.
        previous: AccountId,
        /// The identity now presented.
        presented: AccountId,
    },
    /// A card answer refers to another card or an action the card does not offer.
    #[error("card answer does not match the card")]
    CardMismatch,
    /// A content value breaks a limit (the string names it).
    #[error("limit exceeded: {0}")]
    Limit(&'static str),

    // --- the caller --------------------------------------------------------------------
    /// The sending chain has used all 2^32 counters; start a new session.
    #[error("sending chain exhausted")]
    ChainExhausted,

    // --- us ----------------------------------------------------------------------------
    /// Encoding failed; this indicates a bug.
    #[error("encoding failed: {0}")]
    Encoding(String),
}

impl E2eError {
    /// Whether the input was a replay (of a message or of a session setup): the caller
    /// should drop it silently and still acknowledge it to the relay.
    pub fn is_replay(&self) -> bool {
        matches!(self, E2eError::Duplicate | E2eError::DuplicateSetup)
    }
}
