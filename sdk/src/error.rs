//! Errors of the SDK, sorted by who is at fault: the user or caller, the peer or server,
//! then local failures.

use parley_protocol::wire::server::ErrorBody;
use parley_protocol::wire::ErrorCode;

use crate::wire::WireError;

/// Something the SDK could not do.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// This profile has no identity yet.
    #[error("not registered: run `parley register <handle>` first")]
    NotRegistered,
    /// The profile's database is empty, not SQLite, or lost its tables: it is left
    /// untouched rather than silently replaced by a new identity.
    #[error(
        "the profile database {} {reason}; it was left untouched so that its identity is \
         not silently replaced: restore it from a backup, or start a new identity with \
         `parley register --replace-damaged-profile <handle>` (which moves it aside)",
        path.display()
    )]
    DamagedProfile {
        /// The database file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds this profile (only one at a time connects a profile to the
    /// server); commands that only read the local store can open it read-only beside
    /// that process ([`crate::store::ClientStore::open_read_only`]).
    #[error(
        "this profile is open in another process (a running `parley chat`, for example), \
         and only one process at a time can connect a profile to the server"
    )]
    ProfileInUse,
    /// The message is encrypted and stored locally but the server has not confirmed it;
    /// it is resent (same id, so at most once) on the next connection.
    #[error(
        "queued, not yet confirmed by the server ({0}); it will be resent on the next connection"
    )]
    Queued(String),
    /// No account has this handle.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// The input is not valid (a bad handle, for example).
    #[error("{0}")]
    InvalidInput(String),
    /// The relay has no device waiting on this linking code: it was already used, it
    /// expired, or the device that showed it stopped waiting (the relay does not say
    /// which, protocol §15).
    #[error(
        "this linking code was already used or has expired; run `parley link` again on your \
         other device"
    )]
    LinkUnavailable,
    /// The linking code expired, or the joining device went away, before this device
    /// handed the account over: nothing was handed over.
    #[error(
        "the linking code expired before the new device was approved; nothing was handed \
         over: run `parley link` again"
    )]
    LinkExpired,
    /// The account already has as many devices as the relay allows (or the protocol's
    /// 32): no device was added.
    #[error(
        "this account already has as many devices as the server allows ({0}); remove one \
         first (`parley devices remove N`)"
    )]
    TooManyDevices(String),
    /// The server could not be reached.
    #[error("server unreachable at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server's TLS certificate was refused; `advice` is one sentence naming the
    /// server, the problem and what to do (see `certificate_error`).
    #[error("{advice}")]
    Certificate {
        /// The URL tried.
        url: String,
        /// The sentence shown.
        advice: String,
    },
    /// The server refused a request.
    #[error("server refused: {code}: {message}")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// Human text from the server.
        message: String,
        /// When to retry (`rate_limited`, `reach_exhausted`), in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// A send to every device was made for device lists that are no longer the current
    /// ones; the relay sent the current lists (verified before use, never trusted).
    #[error("the recipient's or this account's devices changed")]
    StaleDevices(Vec<parley_protocol::wire::server::Devices>),
    /// The relay served a device list this client refuses: not signed by the account,
    /// another account's, or older than one it verified before. Nothing was encrypted to
    /// the devices on it.
    #[error("refused the device list the relay served for {account}: {reason}")]
    DeviceListRefused {
        /// Whose list.
        account: parley_protocol::ids::AccountId,
        /// Why.
        reason: String,
    },
    /// The relay presented a verification authority other than the pinned (or
    /// configured) one: certificates cannot be checked, nothing is trusted.
    #[error(
        "the server's verification authority changed: pinned {pinned}, presented {presented}; \
         if the operator really replaced its key, remove the pin or configure the new key"
    )]
    AuthorityMismatch {
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the key the server presented.
        presented: String,
    },
    /// A consent ledger that does not verify.
    #[error("consent ledger: {0}")]
    Ledger(String),
    /// The connection broke in the middle of a request.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// End-to-end cryptography refused a bundle or message.
    #[error("encryption: {0}")]
    Crypto(#[from] parley_protocol::e2e::E2eError),
    /// The local database failed.
    #[error("local storage: {0}")]
    Storage(String),
    /// The client engine has stopped.
    #[error("the client has stopped")]
    Stopped,
}

impl SdkError {
    /// The wire error code behind this error, when the server's refusal is the cause
    /// (for machine-readable output).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Refused { code, .. } => Some(*code),
            SdkError::LinkUnavailable | SdkError::LinkExpired => Some(ErrorCode::LinkUnavailable),
            SdkError::TooManyDevices(_) => Some(ErrorCode::TooManyDevices),
            _ => None,
        }
    }

    /// Whether the connection itself failed (refused, reset, closed, timed out), as
    /// opposed to an answer from the server: the engine then tries the next server, and
    /// a send under way is retried there with the same message id.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            SdkError::Unreachable { .. }
                | SdkError::Certificate { .. }
                | SdkError::ConnectionLost(_)
        )
    }
}

impl From<WireError> for SdkError {
    /// A failed connection is [`SdkError::ConnectionLost`] (the engine reconnects), a
    /// refused login the server's refusal, anything else a protocol error.
    fn from(e: WireError) -> SdkError {
        match e {
            WireError::Refused(refusal) => refusal.into(),
            e if e.is_connection_error() => SdkError::ConnectionLost(e.to_string()),
            e => SdkError::Protocol(e.to_string()),
        }
    }
}

impl From<ErrorBody> for SdkError {
    fn from(e: ErrorBody) -> SdkError {
        if e.code == ErrorCode::StaleDevices {
            return SdkError::StaleDevices(e.devices);
        }
        SdkError::Refused {
            code: e.code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
        }
    }
}
