//! The client side of wire protocol v1: one core for every Parley client in this
//! workspace (the SDK's engine, the test kit's client in `tests/`, the load generator
//! in `loadtest/`), so that frames are read, written, matched to their requests and
//! bounded in one place.
//!
//! # Typed states
//!
//! ```text
//!  WebSocket ──Unauthenticated::start──▶ Unauthenticated ──login / register──▶ Authenticated
//!                (reads hello)              hello()                            request, send,
//!                                                                              next_push, ping
//! ```
//!
//! A request before login cannot be written: [`Unauthenticated`] has no method that
//! sends one, and only a successful login exchange makes an [`Authenticated`]. A
//! refused login is [`WireError::Refused`] and consumes the connection.
//!
//! ```compile_fail,E0599
//! # use parley_protocol::wire::client::ClientBody;
//! # use parley_sdk::wire::Unauthenticated;
//! # async fn before_login(opened: Unauthenticated<tokio::net::TcpStream>, body: ClientBody) {
//! opened.request(body).await; // E0599: no method named `request`: log in first
//! # }
//! ```
//!
//! Tests of the server's refusals must do what a correct client never does (a request
//! before login, a malformed frame, a text message). They take the clearly named escape
//! hatch, `into_unchecked`, which gives an [`Unchecked`] connection: the same core
//! without the state checks.
//!
//! # What it owns
//!
//! * [`messages`]: the one WebSocket read loop (binary messages are frames; pings and
//!   pongs skipped; close, end of stream, a text message or a message over
//!   [`parley_protocol::limits::MAX_FRAME_BYTES`] end it), and the WebSocket settings
//!   that enforce the size limit ([`websocket_config`]).
//! * [`inbox`]: request ids, which frame answers which request, and the frames kept,
//!   bounded, while a caller waits for a reply. No I/O: it is tested alone.
//! * [`Unchecked`], [`Unauthenticated`], [`Authenticated`]: the async connection over
//!   any stream (TCP, TLS, or an in-memory pipe in this module's tests).
//!
//! Connecting (DNS, TCP, TLS, the HTTP upgrade) stays with each caller: the SDK
//! explains certificate failures, the load generator binds chosen source addresses,
//! the test kit brings its own certificates. Each hands over the upgraded WebSocket.
//!
//! # Why here
//!
//! `parley-protocol` is sans-IO (no tokio, no WebSocket library) and the server uses it
//! too, so the async client core cannot live there. It lives in `parley-sdk`, which
//! already depends on tokio-tungstenite, and `parley-tests` and `parley-loadtest` depend
//! on the SDK for it. The pure parts (the codec in `parley_protocol::wire`, the signed
//! `auth` in [`parley_protocol::wire::client::Auth::signed`], the [`inbox`]) are kept
//! apart from the I/O so they are testable without a socket.
//!
//! The load generator uses the core for the handshake and for reading messages
//! ([`next_binary`] works on a split read half too), and writes its pre-encoded frames
//! in batches on the WebSocket it gets back with `into_parts` (with the frames kept
//! during setup): its hot path must be the same code for Parley and for the bare relay
//! it is compared against.

mod authenticated;
mod error;
pub mod inbox;
pub mod messages;
mod unauthenticated;
mod unchecked;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use authenticated::Authenticated;
pub use error::WireError;
pub use messages::{frame_message, next_binary, next_frame, until_closed, websocket_config};
pub use unauthenticated::Unauthenticated;
pub use unchecked::{Reply, Unchecked};

/// See [`WireLimits::reply_timeout`].
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// See [`WireLimits::write_timeout`].
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// See [`WireLimits::max_buffered_frames`].
pub const MAX_BUFFERED_FRAMES: usize = 4096;

/// How long a connection waits and how much it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLimits {
    /// Longest wait for `hello`, for the reply to a request, and for the server to end
    /// a connection being closed.
    pub reply_timeout: Duration,
    /// Longest a write may block (a server that stopped reading).
    pub write_timeout: Duration,
    /// Most frames kept while a caller waits for a reply; one more ends the connection
    /// with [`WireError::TooManyBuffered`] (the server redelivers what was not
    /// acknowledged).
    pub max_buffered_frames: usize,
}

impl Default for WireLimits {
    /// 15 s for a reply or a write, 4096 frames kept.
    fn default() -> WireLimits {
        WireLimits {
            reply_timeout: REPLY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_buffered_frames: MAX_BUFFERED_FRAMES,
        }
    }
}
