//! Every bound the end-to-end layer puts on what a peer controls, in one place.
//!
//! A peer (or a relay replaying and reordering its messages) chooses counters, ratchet
//! keys and message sizes. Each constant below caps one of them, so that no input can make
//! a client derive, store or parse without bound.

/// Most message keys one incoming message may make us derive and store in one chain: the
/// gap between the next expected counter and the message's counter (and, on a DH ratchet
/// step, between the old chain's next counter and the header's `previous_counter`).
/// Larger gaps are refused before a single key is derived. 1000 covers a long offline
/// period of an honest sender; libsignal and vodozemac use 2000.
pub const MAX_SKIP: u32 = 1000;

/// Most skipped message keys a session keeps across all chains. When full, the oldest
/// keys are dropped first (their messages then count as lost). Bounds the session record
/// to roughly 100 KiB whatever a peer does.
pub const MAX_SKIPPED_KEYS: usize = 2000;

/// Most receiving chains a session keeps (the current one and older ones). A message on a
/// chain older than these can only be decrypted with a skipped key.
pub const MAX_RECEIVER_CHAINS: usize = 5;

/// Most ratchet keys of forgotten receiving chains a session remembers, so that a replay
/// of an old message is still reported as [`E2eError::Duplicate`](super::E2eError::Duplicate)
/// rather than as a failed ratchet step. 32 bytes each.
pub const MAX_RETIRED_CHAINS: usize = 128;

/// How long a skipped message key is kept, in milliseconds (30 days, like the relay's
/// queue lifetime): a message that has not arrived by then never will.
pub const SKIPPED_KEY_MAX_AGE_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Largest end-to-end message accepted for decoding, equal to the envelope limit.
pub const MAX_MESSAGE_BYTES: usize = crate::limits::MAX_ENVELOPE_BYTES;

/// Most handshakes a [`HandshakeGuard`](super::HandshakeGuard) remembers. When full, the
/// oldest entries are forgotten; those handshakes used a one-time prekey that is gone, or a
/// signed prekey old enough to be retired.
pub const MAX_REMEMBERED_HANDSHAKES: usize = 100_000;

/// Size of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_BYTES: usize = 1088;

/// Size of an ML-KEM-768 decapsulation key in its FIPS 203 encoding.
pub const KEM_SECRET_KEY_BYTES: usize = 2400;

/// Largest plaintext [`Session::encrypt`](super::Session::encrypt) accepts: the message
/// limit minus room for the largest header (a prekey message) and the tag.
pub const MAX_PLAINTEXT_BYTES: usize = MAX_MESSAGE_BYTES - 2048;
