//! Why a wire exchange failed, sorted into the connection's failures (the caller
//! reconnects) and the server's answers or misbehaviour (it does not help to).

use parley_protocol::wire::codec::EncodeError;
use parley_protocol::wire::server::ErrorBody;
use parley_protocol::wire::DecodeError;
use tokio_tungstenite::tungstenite;

/// A failed read, write, wait or login.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The server closed the WebSocket (`code` is `None` when its close frame had none).
    #[error("closed by server{}", closed_detail(*.code, .reason))]
    Closed {
        /// The close code.
        code: Option<u16>,
        /// The close reason, possibly empty.
        reason: String,
    },
    /// The connection ended without a close frame, or the transport failed.
    #[error("{0}")]
    Lost(String),
    /// Nothing, or not the awaited reply, arrived in time; or a write blocked too long.
    #[error("{0}")]
    TimedOut(&'static str),
    /// The server sent a message over the frame size limit
    /// ([`parley_protocol::limits::MAX_FRAME_BYTES`]); the message was not read.
    #[error("the server sent a message of {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More frames arrived while a caller waited for a reply than
    /// [`super::WireLimits::max_buffered_frames`] allows.
    #[error("too many pushed frames buffered (more than {0})")]
    TooManyBuffered(usize),
    /// Bytes from the server that are not a valid frame.
    #[error("undecodable frame from the server: {0}")]
    Malformed(#[from] DecodeError),
    /// A valid frame or message with no place here: a text message, a first frame that
    /// is not `hello`, a reply to a login that is neither `authenticated` nor `error`.
    #[error("{0}")]
    Unexpected(String),
    /// The server refused the login or the registration.
    #[error("refused: {}: {}", .0.code, .0.message)]
    Refused(ErrorBody),
    /// A frame could not be encoded (a bug, never the server's doing).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl WireError {
    /// Whether the connection itself failed (closed, dropped, timed out, overrun): the
    /// caller may reconnect. Otherwise the server answered, or sent what this client
    /// does not understand.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            WireError::Closed { .. }
                | WireError::Lost(_)
                | WireError::TimedOut(_)
                | WireError::TooLarge { .. }
                | WireError::TooManyBuffered(_)
        )
    }
}

impl From<tungstenite::Error> for WireError {
    fn from(e: tungstenite::Error) -> WireError {
        match e {
            tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
                size,
                max_size,
            }) => WireError::TooLarge {
                size,
                limit: max_size,
            },
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                WireError::Lost("connection closed".into())
            }
            other => WireError::Lost(other.to_string()),
        }
    }
}

fn closed_detail(code: Option<u16>, reason: &str) -> String {
    match code {
        Some(code) => format!(" ({code}: {reason})"),
        None => String::new(),
    }
}
