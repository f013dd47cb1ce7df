//! One client connection, from TCP accept to close.
//!
//! The connection moves through typed states, each its own module:
//!
//! ```text
//!  TCP ──upgrade (handshake deadline)──▶ awaiting_auth ──auth/register──▶ authenticated
//!                                          │ deadline, bad auth             │ shutdown, displaced,
//!                                          ▼                                ▼ slow consumer, keepalive
//!                                        closed                           closed
//! ```
//!
//! [`transport`] owns the WebSocket; the states decide what to do with each frame. The
//! authenticated state's decisions are a state machine without I/O, [`core`]; its async
//! shell (`authenticated`) runs the store calls it asks for (`requests` for the requests
//! that run alone).
//! Transport-level violations map to close codes in [`close_code_for`], request failures
//! to error frames in [`crate::error::RequestError::to_wire`].

mod authenticated;
mod awaiting_auth;
mod business;
pub mod core;
mod devices;
mod linking;
mod prekey_checks;
mod requests;
mod send_to_all;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use parley_protocol::wire::{CloseCode, DecodeError};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::context::Shared;
use crate::error::RequestError;
use crate::tls::ClientStream;
use transport::Transport;

/// How a connection ended, for the log.
#[derive(Debug)]
pub enum Ending {
    /// The client left.
    ClientLeft,
    /// The server closed it with this code.
    Closed(CloseCode),
}

/// Serves one accepted TCP connection until it ends.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _open = shared.metrics.connections.track();
    let _ = stream.set_nodelay(true);
    // One deadline for the TLS handshake and the WebSocket upgrade together.
    let deadline = tokio::time::Instant::now() + shared.config.handshake_timeout;
    let stream = match &shared.tls {
        None => ClientStream::Plain(stream),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                shared.metrics.tls_handshake_failures.inc();
                shared.metrics.connections_closed.inc("tls_failed");
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                shared.metrics.tls_handshake_failures.inc();
                shared.metrics.connections_closed.inc("tls_timeout");
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let config = transport::websocket_config(
        shared.config.read_buffer_bytes,
        shared.config.write_buffer_bytes,
    );
    let upgrade = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let ws = match tokio::time::timeout_at(deadline, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            shared.metrics.connections_closed.inc("upgrade_failed");
            tracing::debug!(%peer, error = %e, "WebSocket upgrade failed");
            return;
        }
        Err(_) => {
            shared.metrics.connections_closed.inc("upgrade_timeout");
            tracing::debug!(%peer, "WebSocket upgrade timed out");
            return;
        }
    };
    let mut transport = Transport::new(ws, shared.config.write_timeout, shared.metrics.clone());
    let ending = match awaiting_auth::run(&mut transport, &shared, peer, &shutdown).await {
        Ok((session, rid)) => {
            authenticated::run(&mut transport, &shared, session, rid, &shutdown).await
        }
        Err(ending) => ending,
    };
    match ending {
        Ending::ClientLeft => {
            shared.metrics.connections_closed.inc("client_left");
            tracing::debug!(%peer, "client left");
        }
        Ending::Closed(code) => {
            shared.metrics.closed(code);
            tracing::debug!(%peer, code = code.code(), reason = code.reason(), "closing");
            transport.close(code).await;
        }
    }
}

/// The close code for a frame that could not be decoded.
pub fn close_code_for(error: &DecodeError) -> CloseCode {
    match error {
        DecodeError::UnsupportedVersion(_) => CloseCode::ProtocolError,
        DecodeError::TooLarge(_) => CloseCode::MessageTooBig,
        DecodeError::Malformed(_) | DecodeError::TrailingBytes(_) | DecodeError::Limit(_) => {
            CloseCode::InvalidPayload
        }
    }
}

/// The request error reported (in an `error` frame) before closing for `error`.
pub fn request_error_for(error: &DecodeError) -> RequestError {
    match error {
        DecodeError::UnsupportedVersion(_) => RequestError::UnsupportedVersion,
        other => RequestError::Malformed(other.to_string()),
    }
}
