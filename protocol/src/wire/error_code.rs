//! Stable error codes (in `error` frames) and WebSocket close codes.
//!
//! Codes are part of the protocol: they are encoded as the snake_case strings below and
//! never renamed. Messages next to them are for people and may change.

use serde::{Deserialize, Serialize};

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be decoded, or broke a limit. The server closes (1007).
    MalformedFrame,
    /// The frame's `v` is not a version this server speaks. The server closes (1002).
    UnsupportedVersion,
    /// The request needs an authenticated connection.
    NotAuthenticated,
    /// `auth` or `register` on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// Authentication failed: unknown account or device, bad signature, or a replayed
    /// or expired challenge, deliberately indistinguishable. The server closes (4001).
    AuthFailed,
    /// A signature in a registration or prekey upload does not verify.
    InvalidSignature,
    /// A registration without a KEM prekey, or a registration or prekey upload whose KEM
    /// prekey is not an ML-KEM-768 encapsulation key (FIPS 203 §7.2): nobody could start
    /// a session with the device. Nothing was stored.
    InvalidPrekey,
    /// The account (identity key) is already registered.
    AccountExists,
    /// Another account holds this handle.
    HandleTaken,
    /// No such account, device or handle.
    NotFound,
    /// The ciphertext is larger than the server's limit.
    TooLarge,
    /// The upload would leave more one-time prekeys than the server keeps per device.
    TooManyPrekeys,
    /// Too many requests of this kind; see `retry_after_ms`.
    RateLimited,
    /// The server cannot store more right now; nothing was stored. Retry later.
    StorageFull,
    /// The server is shutting down or overloaded; nothing was stored. Retry later.
    Unavailable,
    /// A bug or an unexpected storage failure on the server; nothing was stored.
    Internal,
    /// The recipient does not take this envelope: unknown, not opted in to this
    /// category, or blocking the sender, deliberately indistinguishable.
    Refused,
    /// The business reached its daily number of unique recipients; retry after
    /// `retry_after_ms` (a new recipient), or ask the operator for a higher tier.
    ReachExhausted,
    /// The business is suspended; stop sending.
    Suspended,
    /// A business send without a category, or in one its certificate does not allow.
    CategoryNotAllowed,
    /// A consent grant or revocation is forged, foreign, expired, replayed, or names an
    /// account that is not a verified business.
    InvalidConsent,
    /// The display name or handle is confusable with a verified business's name, or
    /// imitates the verified badge.
    NameReserved,
    /// A `send` reused a message id this device already used for another recipient or
    /// other bytes; nothing was stored. Message ids must be unique per sending device.
    IdReused,
    /// A `send` with a `category` from an account that is not a verified business;
    /// nothing was stored. Only businesses send in categories: send without one.
    NotABusiness,
    /// A `publish_devices` list that is malformed, another account's, or not signed by
    /// the account (ADR 0007); nothing was stored.
    InvalidDeviceList,
    /// A `publish_devices` list whose version is not greater than the one the server
    /// holds; nothing was stored. Fetch the current list, and sign a newer one.
    StaleDeviceList,
    /// A `publish_devices` list with more devices than the server allows per account;
    /// nothing was stored.
    TooManyDevices,
    /// No device is waiting on this linking rendezvous: the code expired, was used, or the
    /// device that showed it went away (or, for `open_link`, it is already open).
    LinkUnavailable,
    /// A `send_to_all` whose device lists are not the current ones (a device was linked or
    /// removed since the sender looked, or its copies do not name exactly the listed
    /// devices); nothing was stored. The error carries the current signed lists
    /// (`devices`): check them, encrypt for their devices, and send again.
    StaleDevices,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::InvalidPrekey => "invalid_prekey",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::HandleTaken => "handle_taken",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyPrekeys => "too_many_prekeys",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Refused => "refused",
            ErrorCode::ReachExhausted => "reach_exhausted",
            ErrorCode::Suspended => "suspended",
            ErrorCode::CategoryNotAllowed => "category_not_allowed",
            ErrorCode::InvalidConsent => "invalid_consent",
            ErrorCode::NameReserved => "name_reserved",
            ErrorCode::IdReused => "id_reused",
            ErrorCode::NotABusiness => "not_a_business",
            ErrorCode::InvalidDeviceList => "invalid_device_list",
            ErrorCode::StaleDeviceList => "stale_device_list",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::LinkUnavailable => "link_unavailable",
            ErrorCode::StaleDevices => "stale_devices",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the server uses (RFC 6455 section 7.4 and the private range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: WebSocket protocol violation, or unsupported Parley version.
    ProtocolError,
    /// 1003: a text frame (Parley speaks binary frames only).
    UnsupportedData,
    /// 1007: a binary frame that is not a valid Parley frame.
    InvalidPayload,
    /// 1008: a policy was violated (for example, too many connections from one address).
    PolicyViolation,
    /// 1009: a message larger than the frame limit.
    MessageTooBig,
    /// 1011: the server failed unexpectedly.
    InternalError,
    /// 4000: no successful `auth`/`register` before the auth deadline.
    AuthTimeout,
    /// 4001: authentication failed.
    AuthFailed,
    /// 4002: the same device connected again; this older connection is closed.
    Displaced,
    /// 4003: the client did not read its frames fast enough (its envelopes stay queued).
    SlowConsumer,
    /// 4004: no pong (or any frame) within the keepalive deadline.
    KeepaliveTimeout,
    /// 4005: the account removed this device from its list; it cannot log in again.
    DeviceRemoved,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::UnsupportedData => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::AuthTimeout => 4000,
            CloseCode::AuthFailed => 4001,
            CloseCode::Displaced => 4002,
            CloseCode::SlowConsumer => 4003,
            CloseCode::KeepaliveTimeout => 4004,
            CloseCode::DeviceRemoved => 4005,
        }
    }

    /// Short reason text sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::UnsupportedData => "binary frames only",
            CloseCode::InvalidPayload => "malformed frame",
            CloseCode::PolicyViolation => "policy violation",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::AuthTimeout => "auth timeout",
            CloseCode::AuthFailed => "auth failed",
            CloseCode::Displaced => "device connected elsewhere",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::KeepaliveTimeout => "keepalive timeout",
            CloseCode::DeviceRemoved => "device removed from the account",
        }
    }
}
