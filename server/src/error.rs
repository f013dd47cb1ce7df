//! Why a request failed, and the one place that maps failures to the wire.
//!
//! Variants are sorted by who is at fault: the peer first, then the server.

use std::time::Duration;

use parley_protocol::ids::RequestId;
use parley_protocol::limits::MAX_ERROR_MESSAGE_LEN;
use parley_protocol::wire::server::{Devices, ErrorBody, ServerBody};
use parley_protocol::wire::{ErrorCode, ServerFrame};

use crate::store::{EnqueueOutcome, StoreError};

/// A request could not be served. The connection stays open unless the caller decides
/// otherwise (see `connection`).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The frame was not a valid v1 frame; the text says why, whole (a decoder's message
    /// already names the frame, so nothing is prefixed).
    #[error("{0}")]
    Malformed(String),
    /// The frame's protocol version is not spoken here.
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    /// A request that needs authentication, before authentication.
    #[error("authenticate first (auth or register)")]
    NotAuthenticated,
    /// `auth`/`register` after authentication.
    #[error("this connection is already authenticated")]
    AlreadyAuthenticated,
    /// Authentication failed, for whatever reason (never said which).
    #[error("authentication failed")]
    AuthFailed,
    /// A registration or prekey signature did not verify.
    #[error("invalid signature on {0}")]
    InvalidSignature(&'static str),
    /// A registration without a KEM prekey, or a KEM prekey that is not an ML-KEM-768
    /// encapsulation key: nobody could start a session with the device.
    #[error("{0}")]
    InvalidPrekey(String),
    /// The identity key is already registered.
    #[error("this identity key is already registered")]
    AccountExists,
    /// The handle belongs to another account.
    #[error("handle is taken")]
    HandleTaken,
    /// No such account, device or handle.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Envelope larger than the configured limit.
    #[error("ciphertext of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size sent.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Too many one-time prekeys for one device.
    #[error("a device may hold at most {0} one-time prekeys")]
    TooManyPrekeys(u32),
    /// A rate limit was hit.
    #[error("rate limited: {what}")]
    RateLimited {
        /// Which limit.
        what: &'static str,
        /// When to retry.
        retry_after: Duration,
    },
    /// A business send refused for a reason the business must not learn: unknown
    /// recipient, no consent or care window, or blocked. One message for all.
    #[error("the recipient does not accept this message")]
    Refused,
    /// The business reached its daily unique recipients.
    #[error("daily reach exhausted: no new recipients until a slot frees")]
    ReachExhausted {
        /// When a slot frees.
        retry_after: Duration,
    },
    /// The business is suspended.
    #[error("this business is suspended; contact the operator")]
    Suspended,
    /// A business send without a category, or in one its certificate does not allow.
    #[error("category missing or not allowed by this business's certificate")]
    CategoryNotAllowed,
    /// A person's send carried a category; only businesses send in categories.
    #[error("only verified businesses send with a category; send without one")]
    NotABusiness,
    /// The sender already used this message id for another recipient or other bytes.
    #[error("this message id was already used for another message; use a fresh id")]
    IdReused,
    /// A consent grant or revocation was refused.
    #[error("invalid consent: {0}")]
    InvalidConsent(&'static str),
    /// The name is confusable with a verified business's, or imitates the badge.
    #[error("this name is reserved: it looks like a verified business or its badge")]
    NameReserved,
    /// A published device list is malformed, another account's, or not signed by it.
    #[error("invalid device list: {0}")]
    InvalidDeviceList(String),
    /// A published device list is not newer than the stored one.
    #[error("the server holds device list version {stored_version}: publish a newer one")]
    StaleDeviceList {
        /// The version held.
        stored_version: u64,
    },
    /// A published device list names more devices than allowed.
    #[error("an account may have at most {0} devices")]
    TooManyDevices(usize),
    /// A `send_to_all` made for device lists that are not the current ones; carries the
    /// current lists (the recipient's, then the sender's own).
    #[error("the device lists changed: encrypt for the current devices and send again")]
    StaleDevices(Vec<Devices>),
    /// No device waits on that linking rendezvous (or it is already open).
    #[error("{0}")]
    LinkUnavailable(&'static str),
    /// The server is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RequestError {
    /// The error a send answers with when the store did not queue it (`None` for
    /// [`EnqueueOutcome::Accepted`] and [`EnqueueOutcome::Duplicate`], which are answered
    /// `accepted`). A `stale_devices` refusal carries the current lists, which the caller
    /// reads and puts in.
    pub fn for_refusal(outcome: EnqueueOutcome) -> Option<RequestError> {
        let ms = Duration::from_millis;
        Some(match outcome {
            EnqueueOutcome::Accepted { .. } | EnqueueOutcome::Duplicate(_) => return None,
            EnqueueOutcome::Suspended => RequestError::Suspended,
            EnqueueOutcome::CategoryNotAllowed => RequestError::CategoryNotAllowed,
            EnqueueOutcome::NotABusiness => RequestError::NotABusiness,
            EnqueueOutcome::RateLimited(retry) => RequestError::RateLimited {
                what: "business messages per second",
                retry_after: ms(retry),
            },
            EnqueueOutcome::ReachExhausted(retry) => RequestError::ReachExhausted {
                retry_after: ms(retry),
            },
            EnqueueOutcome::UnknownRecipient => RequestError::NotFound("recipient"),
            EnqueueOutcome::SenderRemoved => RequestError::NotFound("sending device"),
            EnqueueOutcome::IdReused => RequestError::IdReused,
            EnqueueOutcome::StaleDevices => RequestError::StaleDevices(Vec::new()),
            EnqueueOutcome::Refused | EnqueueOutcome::Blocked => RequestError::Refused,
        })
    }

    /// The `parley_business_sends_total` label of a business send refused with `outcome`
    /// (`None` for outcomes only people's sends get).
    pub fn business_label(outcome: EnqueueOutcome) -> Option<&'static str> {
        match outcome {
            EnqueueOutcome::Refused => Some("refused"),
            EnqueueOutcome::Suspended => Some("suspended"),
            EnqueueOutcome::CategoryNotAllowed => Some("category_not_allowed"),
            EnqueueOutcome::RateLimited(_) => Some("rate_limited"),
            EnqueueOutcome::ReachExhausted(_) => Some("reach_exhausted"),
            _ => None,
        }
    }

    /// The stable code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::Malformed(_) => ErrorCode::MalformedFrame,
            RequestError::UnsupportedVersion => ErrorCode::UnsupportedVersion,
            RequestError::NotAuthenticated => ErrorCode::NotAuthenticated,
            RequestError::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            RequestError::AuthFailed => ErrorCode::AuthFailed,
            RequestError::InvalidSignature(_) => ErrorCode::InvalidSignature,
            RequestError::InvalidPrekey(_) => ErrorCode::InvalidPrekey,
            RequestError::AccountExists => ErrorCode::AccountExists,
            RequestError::HandleTaken => ErrorCode::HandleTaken,
            RequestError::NotFound(_) => ErrorCode::NotFound,
            RequestError::TooLarge { .. } => ErrorCode::TooLarge,
            RequestError::TooManyPrekeys(_) => ErrorCode::TooManyPrekeys,
            RequestError::RateLimited { .. } => ErrorCode::RateLimited,
            RequestError::Refused => ErrorCode::Refused,
            RequestError::ReachExhausted { .. } => ErrorCode::ReachExhausted,
            RequestError::Suspended => ErrorCode::Suspended,
            RequestError::CategoryNotAllowed => ErrorCode::CategoryNotAllowed,
            RequestError::NotABusiness => ErrorCode::NotABusiness,
            RequestError::InvalidConsent(_) => ErrorCode::InvalidConsent,
            RequestError::IdReused => ErrorCode::IdReused,
            RequestError::NameReserved => ErrorCode::NameReserved,
            RequestError::InvalidDeviceList(_) => ErrorCode::InvalidDeviceList,
            RequestError::StaleDeviceList { .. } => ErrorCode::StaleDeviceList,
            RequestError::TooManyDevices(_) => ErrorCode::TooManyDevices,
            RequestError::LinkUnavailable(_) => ErrorCode::LinkUnavailable,
            RequestError::StaleDevices(_) => ErrorCode::StaleDevices,
            RequestError::ShuttingDown => ErrorCode::Unavailable,
            RequestError::Store(StoreError::Full) => ErrorCode::StorageFull,
            RequestError::Store(StoreError::Unavailable) => ErrorCode::Unavailable,
            RequestError::Store(StoreError::Database(_)) => ErrorCode::Internal,
        }
    }

    /// The `error` frame body sent to the client. Store details stay in the server's log.
    pub fn to_wire(&self) -> ErrorBody {
        let message = match self {
            RequestError::Store(StoreError::Database(_)) => "internal storage error".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            code: self.code(),
            message: shortened(message),
            retry_after_ms: match self {
                RequestError::RateLimited { retry_after, .. }
                | RequestError::ReachExhausted { retry_after } => {
                    Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX))
                }
                _ => None,
            },
            devices: match self {
                RequestError::StaleDevices(lists) => lists.clone(),
                _ => Vec::new(),
            },
        }
    }
}

/// Marks a message cut to fit [`MAX_ERROR_MESSAGE_LEN`].
const ELLIPSIS: char = '…';

/// `message` if it fits in [`MAX_ERROR_MESSAGE_LEN`] bytes; otherwise as much of it as
/// fits with [`ELLIPSIS`], cut at a character boundary (a message may quote the peer's
/// own text, any UTF-8).
fn shortened(mut message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_LEN {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE_LEN - ELLIPSIS.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push(ELLIPSIS);
    message
}

/// An `error` frame for `error`, answering `rid`: every error answers the frame that
/// caused it and carries its `rid`, nil only when that frame had no readable one.
pub fn error_frame(rid: Option<RequestId>, error: &RequestError) -> ServerFrame {
    let body = ServerBody::Error(error.to_wire());
    match rid {
        Some(rid) => ServerFrame::reply(rid, body),
        None => ServerFrame::push(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let short = "x".repeat(MAX_ERROR_MESSAGE_LEN);
        assert_eq!(shortened(short.clone()), short);
        for prefix in 0..4 {
            let long = format!("{}{}", "a".repeat(prefix), "é€😀".repeat(100));
            let cut = shortened(long.clone());
            assert!(cut.len() <= MAX_ERROR_MESSAGE_LEN, "{}", cut.len());
            assert!(cut.ends_with(ELLIPSIS));
            assert!(long.starts_with(cut.trim_end_matches(ELLIPSIS)));
        }
    }

    #[test]
    fn a_decoding_error_is_not_prefixed_twice() {
        let e = parley_protocol::wire::decode_client(&[0xc1]).unwrap_err();
        let wire = RequestError::Malformed(e.to_string()).to_wire();
        assert_eq!(
            wire.message.matches("malformed frame").count(),
            1,
            "{}",
            wire.message
        );
    }

    #[test]
    fn storage_details_do_not_reach_the_client() {
        let e = RequestError::Store(StoreError::Database(
            "disk I/O error at /secret/path".into(),
        ));
        let wire = e.to_wire();
        assert_eq!(wire.code, ErrorCode::Internal);
        assert!(!wire.message.contains("/secret/path"));
    }

    #[test]
    fn rate_limits_carry_a_retry_time() {
        let e = RequestError::RateLimited {
            what: "registrations",
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(e.to_wire().retry_after_ms, Some(1500));
        assert_eq!(e.code(), ErrorCode::RateLimited);
    }
}
