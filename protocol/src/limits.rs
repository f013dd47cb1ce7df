//! Every limit of wire protocol v1, in one place.
//!
//! Both ends enforce these; a server may configure lower values for some of them (it never
//! accepts more than these). Each constant says why it has the value it has.

/// The protocol version carried in every frame (`v`). A peer speaking another version is
/// refused with `unsupported_version`.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest encoded frame either side accepts, in bytes. Checked before any decoding, so a
/// hostile length prefix costs nothing. Fits the largest legitimate frame (a registration
/// carrying a ML-KEM-768 prekey and [`MAX_PREKEYS_PER_UPLOAD`] one-time prekeys, or an
/// envelope of [`MAX_ENVELOPE_BYTES`]) with room for framing.
pub const MAX_FRAME_BYTES: usize = 80 * 1024;

/// Deepest nesting of MessagePack arrays and maps a decoder of this crate follows (frames,
/// end-to-end content, session records). The deepest legitimate value nests 8 levels (a
/// consent grant inside its frame). rmp-serde's own default, 1024, lets one 80 KiB frame
/// whose unknown key holds 1 000 nested arrays overflow a 2 MiB thread stack while the
/// decoder skips it, which aborts the whole process.
pub const MAX_NESTING_DEPTH: usize = 32;

/// Largest ciphertext an envelope may carry. Attachments travel out of band; 64 KiB is
/// generous for text, cards and receipts after encryption.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Most one-time prekeys in one registration or upload. A client tops up in batches of
/// this size; more per frame would only let one request hold the database longer.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 200;

/// Most one-time prekeys the server keeps per device; uploads beyond it are refused with
/// `too_many_prekeys`, so one account cannot grow the database without bound.
pub const MAX_STORED_ONE_TIME_PREKEYS: u32 = 1_000;

/// Size of an ML-KEM-768 encapsulation key, the only KEM prekey v1 knows.
pub const KEM_PUBLIC_KEY_BYTES: usize = 1184;

/// Longest handle in bytes (ASCII only, see [`crate::Handle`]), without the leading `@`.
pub const MAX_HANDLE_LEN: usize = 32;

/// Shortest handle in bytes.
pub const MIN_HANDLE_LEN: usize = 3;

/// Most envelopes in one delivery page: the server sends at most this many `deliver`
/// frames before it reads the queue again.
pub const MAX_DELIVERY_PAGE: usize = 256;

/// Longest human-readable error message the server sends.
pub const MAX_ERROR_MESSAGE_LEN: usize = 256;

/// Longest display name, in bytes of UTF-8, for accounts and business certificates.
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;

/// Longest legal name in a business certificate, in bytes of UTF-8.
pub const MAX_LEGAL_NAME_BYTES: usize = 128;

/// Longest domain in a business certificate (DNS's own limit).
pub const MAX_DOMAIN_BYTES: usize = 253;

/// How far in the future a consent grant or revocation may be dated, in milliseconds:
/// clocks drift, but a grant dated next week is a forgery or a bug.
pub const MAX_CONSENT_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
