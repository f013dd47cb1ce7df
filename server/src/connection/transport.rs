//! One client's WebSocket, typed: Parley frames in, Parley frames out, every write
//! bounded in time.
//!
//! The outbound path is bounded twice: by the WebSocket write buffer
//! (`max_write_buffer_size`) and by `write_timeout`. A client that stops reading fills
//! its TCP window, then the buffer; the pending write then times out and the connection
//! is dropped as a slow consumer. Nothing is lost: envelopes stay in the store until
//! acknowledged.
//!
//! The inbound path bounds control frames: each ping costs a pong, so a connection gets
//! [`MAX_CONTROL_FRAMES_PER_SECOND`] with bursts of [`CONTROL_FRAME_BURST`], then 1008.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parley_protocol::ids::RequestId;
use parley_protocol::limits::MAX_FRAME_BYTES;
use parley_protocol::wire::{self, ClientFrame, CloseCode, DecodeError, ServerFrame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use crate::metrics::Metrics;
use crate::tls::ClientStream;

/// Default read buffer per connection (`--read-buffer-bytes`). Small, because most
/// connections are idle and tungstenite allocates it up front: at 1 KiB an idle
/// authenticated connection costs about 6 KiB of server memory, at 4 KiB about 9 KiB. A
/// larger frame is still read whole; it only takes more `read` calls.
pub const READ_BUFFER_BYTES: usize = 1024;

/// Bytes buffered before the WebSocket writes to the socket (frames are also flushed at
/// the end of each batch).
pub const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// The WebSocket settings the server uses, all explicit (tungstenite's defaults allow
/// 64 MiB messages, an unbounded write buffer and a 128 KiB read buffer).
pub fn websocket_config(
    read_buffer_bytes: usize,
    max_write_buffer_bytes: usize,
) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer_bytes.max(1))
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_write_buffer_size(max_write_buffer_bytes.max(WRITE_BATCH_BYTES + MAX_FRAME_BYTES + 1))
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .accept_unmasked_frames(false)
}

/// Control frames (pings and pongs) a client may send per second, sustained. A client
/// needs a few per minute to prove it is alive; a flood costs the server a pong each.
pub const MAX_CONTROL_FRAMES_PER_SECOND: f64 = 50.0;

/// Control frames a client may send in a burst above that rate (2 s worth) before the
/// connection is closed with 1008.
pub const CONTROL_FRAME_BURST: f64 = 2.0 * MAX_CONTROL_FRAMES_PER_SECOND;

/// A per-connection token bucket for control frames.
#[derive(Debug)]
struct ControlBudget {
    tokens: f64,
    updated: Instant,
}

impl ControlBudget {
    fn new() -> ControlBudget {
        ControlBudget {
            tokens: CONTROL_FRAME_BURST,
            updated: Instant::now(),
        }
    }

    /// Takes one frame's worth; false when the client is over its budget.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * MAX_CONTROL_FRAMES_PER_SECOND).min(CONTROL_FRAME_BURST);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What arrived from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A valid frame.
    Frame(ClientFrame),
    /// A ping or pong: the client is alive.
    Heartbeat,
    /// A binary message that is not a valid frame, with its `rid` if one could be read
    /// ([`wire::codec::request_id`]): the `error` answering it carries it.
    Malformed {
        /// Why it is not a frame.
        error: DecodeError,
        /// The request id it carries, if readable.
        rid: Option<RequestId>,
    },
    /// A transport-level violation; close with this code.
    Violation(CloseCode),
    /// The client closed or the connection broke.
    Gone,
}

/// A write did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The write stalled longer than the write timeout.
    #[error("write stalled")]
    Stalled,
    /// The connection broke.
    #[error("connection lost: {0}")]
    Broken(String),
}

/// A client's WebSocket.
#[derive(Debug)]
pub struct Transport {
    ws: WebSocketStream<ClientStream>,
    write_timeout: Duration,
    metrics: Arc<Metrics>,
    control: ControlBudget,
}

impl Transport {
    /// Wraps an upgraded WebSocket; frames in and out are counted in `metrics`.
    pub fn new(
        ws: WebSocketStream<ClientStream>,
        write_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Transport {
        Transport {
            ws,
            write_timeout,
            metrics,
            control: ControlBudget::new(),
        }
    }

    /// The next Parley-level event. Pings and pongs are handled here (tungstenite
    /// queues the pong; it goes out with the next write or flush), within the control
    /// frame budget ([`MAX_CONTROL_FRAMES_PER_SECOND`]; past it, 1008). Cancel-safe.
    pub async fn recv(&mut self) -> Incoming {
        match self.ws.next().await {
            None => Incoming::Gone,
            Some(Ok(Message::Close(_))) => {
                // Complete the closing handshake: tungstenite has queued the answer (the
                // client's code echoed, or 1002 for a code not allowed on the wire), and
                // only a write or flush sends it.
                let _ = tokio::time::timeout(self.write_timeout, self.ws.flush()).await;
                Incoming::Gone
            }
            Some(Ok(Message::Binary(bytes))) => match wire::decode_client(&bytes) {
                Ok(frame) => {
                    self.metrics.frame_in(&frame.body);
                    Incoming::Frame(frame)
                }
                Err(error) => {
                    self.metrics.malformed_frame_in();
                    Incoming::Malformed {
                        error,
                        rid: wire::codec::request_id(&bytes),
                    }
                }
            },
            Some(Ok(Message::Text(_))) => Incoming::Violation(CloseCode::UnsupportedData),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                if self.control.take() {
                    Incoming::Heartbeat
                } else {
                    Incoming::Violation(CloseCode::PolicyViolation)
                }
            }
            Some(Ok(Message::Frame(_))) => Incoming::Heartbeat,
            Some(Err(tungstenite::Error::Capacity(_))) => {
                Incoming::Violation(CloseCode::MessageTooBig)
            }
            // A client that drops its TCP connection without a close frame just left.
            Some(Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ))) => Incoming::Gone,
            Some(Err(tungstenite::Error::Protocol(_))) => {
                Incoming::Violation(CloseCode::ProtocolError)
            }
            Some(Err(tungstenite::Error::Utf8(_))) => {
                Incoming::Violation(CloseCode::InvalidPayload)
            }
            Some(Err(_)) => Incoming::Gone,
        }
    }

    /// Sends one frame and flushes.
    pub async fn send(&mut self, frame: &ServerFrame) -> Result<(), SendError> {
        self.send_all(std::slice::from_ref(frame)).await
    }

    /// Sends frames in one batch: buffered, then one flush, all within the write timeout.
    pub async fn send_all(&mut self, frames: &[ServerFrame]) -> Result<(), SendError> {
        let metrics = self.metrics.clone();
        let write = async {
            for frame in frames {
                metrics.frame_out(&frame.body);
                let bytes =
                    wire::encode_server(frame).map_err(|e| SendError::Broken(e.to_string()))?;
                self.ws
                    .feed(Message::Binary(Bytes::from(bytes)))
                    .await
                    .map_err(|e| SendError::Broken(e.to_string()))?;
            }
            self.ws
                .flush()
                .await
                .map_err(|e| SendError::Broken(e.to_string()))
        };
        tokio::time::timeout(self.write_timeout, write)
            .await
            .map_err(|_| SendError::Stalled)?
    }

    /// Sends a ping.
    pub async fn ping(&mut self) -> Result<(), SendError> {
        let ping = self.ws.send(Message::Ping(Bytes::new()));
        tokio::time::timeout(self.write_timeout, ping)
            .await
            .map_err(|_| SendError::Stalled)?
            .map_err(|e| SendError::Broken(e.to_string()))
    }

    /// Sends a close frame with `code` (best effort, briefly) and drops the connection.
    pub async fn close(mut self, code: CloseCode) {
        let frame = CloseFrame {
            code: WsCloseCode::from(code.code()),
            reason: code.reason().into(),
        };
        let close = async {
            let _ = self.ws.send(Message::Close(Some(frame))).await;
            // Give the client a moment to answer the close handshake.
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    }
}
