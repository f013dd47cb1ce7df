//! The one loop that reads WebSocket messages from a Parley server: binary messages are
//! frames, pings and pongs are the transport's business (tungstenite answers pings by
//! itself), a close or the end of the stream ends the connection, a text message is a
//! protocol violation. A message over the frame size limit never reaches the caller.
//!
//! It works on anything that yields tungstenite messages: a whole
//! [`tokio_tungstenite::WebSocketStream`], or the read half of one split in two (the
//! load generator's hot path).

use futures_util::{Stream, StreamExt};
use parley_protocol::limits::MAX_FRAME_BYTES;
use parley_protocol::wire::{self, ClientFrame, ServerFrame};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

use super::WireError;

/// The WebSocket settings of every client connection: messages and frames up to the
/// protocol's [`MAX_FRAME_BYTES`], larger ones refused before they are buffered.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// The next binary message. `heard` is called for every message the server sends,
/// pings and pongs included (a keepalive's proof of life). Cancel-safe: nothing is lost
/// when the future is dropped, whatever it skipped is not data.
pub async fn next_binary<St>(messages: &mut St, mut heard: impl FnMut()) -> Result<Bytes, WireError>
where
    St: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let message = messages.next().await;
        heard();
        match message {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
            Some(Ok(Message::Text(_))) => {
                return Err(WireError::Unexpected(
                    "a text message from the server (Parley frames are binary)".into(),
                ))
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err(WireError::Lost("connection closed".into())),
        }
    }
}

/// The next frame: [`next_binary`], decoded.
pub async fn next_frame<St>(
    messages: &mut St,
    heard: impl FnMut(),
) -> Result<ServerFrame, WireError>
where
    St: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let bytes = next_binary(messages, heard).await?;
    Ok(wire::decode_server(&bytes)?)
}

/// `frame` as the WebSocket message that carries it.
pub fn frame_message(frame: &ClientFrame) -> Result<Message, WireError> {
    Ok(Message::Binary(Bytes::from(wire::encode_client(frame)?)))
}

/// Reads until the server ends the connection, skipping whatever it still sends;
/// returns its close code (`None` when it ended without one, or the transport failed).
pub async fn until_closed<St>(messages: &mut St) -> Option<u16>
where
    St: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match next_binary(messages, || {}).await {
            Ok(_) | Err(WireError::Unexpected(_)) => continue,
            Err(WireError::Closed { code, .. }) => return code,
            Err(_) => return None,
        }
    }
}

fn closed(frame: Option<CloseFrame>) -> WireError {
    match frame {
        Some(frame) => WireError::Closed {
            code: Some(u16::from(frame.code)),
            reason: frame.reason.to_string(),
        },
        None => WireError::Closed {
            code: None,
            reason: String::new(),
        },
    }
}
