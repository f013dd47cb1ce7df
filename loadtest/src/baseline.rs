//! The bare relay: the physical limit of Parley's stack, measured in the same run.
//!
//! A tokio-tungstenite relay with no authentication, no storage, no acknowledgements and
//! no parsing beyond a 4-byte destination. Everything else matches `parley-server`: the
//! same multi-threaded tokio runtime, `TCP_NODELAY`, the same WebSocket settings
//! (`server/src/connection/transport.rs::websocket_config` with the default
//! `--write-buffer-bytes`), and the same write pattern (frames fed into the write buffer,
//! then one flush per batch). It is built with the same release profile as the product
//! because it is this very binary, started as the hidden `baseline-server` subcommand.
//!
//! ```text
//! connect   ws://host:port/<id>          the connection is registered as <id> (u32)
//! message   dest (u32 LE) ‖ opaque bytes  forwarded unchanged to connection <dest>
//! ```
//!
//! A message to an unknown destination is dropped. Each connection has a bounded queue
//! ([`QUEUE_CAPACITY`]); a full queue makes the forwarding connection wait, so memory is
//! bounded as in the product.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// How the baseline relay announces its address on stderr: this prefix, then `ADDR`.
pub const READY_PREFIX: &str = "baseline-server ready listen=";

/// `transport::READ_BUFFER_BYTES` in the server.
const READ_BUFFER_BYTES: usize = 1024;
/// `transport::WRITE_BATCH_BYTES` in the server.
const WRITE_BATCH_BYTES: usize = 16 * 1024;
/// The server's default `--write-buffer-bytes`.
const MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// `parley_protocol::limits::MAX_FRAME_BYTES`.
const MAX_FRAME_BYTES: usize = parley_protocol::limits::MAX_FRAME_BYTES;
/// Messages queued for one connection before senders to it wait.
pub const QUEUE_CAPACITY: usize = 1024;
/// Most queued messages written before one flush (the product's delivery page).
const BATCH_MAX: usize = 256;

/// The WebSocket settings of `parley-server`.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES.max(WRITE_BATCH_BYTES + MAX_FRAME_BYTES + 1))
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .accept_unmasked_frames(false)
}

/// Connections by id. Bounded queues; an entry is removed when its connection ends.
type Registry = Arc<Mutex<HashMap<u32, mpsc::Sender<Bytes>>>>;

/// Runs the bare relay on `listen` until the process is killed.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("{READY_PREFIX}{}", listener.local_addr()?);
        let registry = Registry::default();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, registry.clone()));
                }
                // EMFILE and friends: back off instead of stopping.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}

/// The id in a `/<id>` request path.
fn id_from_path(path: &str) -> Option<u32> {
    path.trim_start_matches('/').parse().ok()
}

async fn connection(stream: TcpStream, registry: Registry) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The callback's error type is tungstenite's HTTP response; its size is not ours.
    #[allow(clippy::result_large_err)]
    let record_path = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        record_path,
        Some(websocket_config()),
    );
    let Ok(Ok(mut ws)) = tokio::time::timeout(Duration::from_secs(10), upgrade).await else {
        return;
    };
    let Some(id) = id_from_path(&path) else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CAPACITY);
    registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, tx.clone());
    // Destinations this connection has sent to, so the registry lock is taken once per
    // destination rather than once per message.
    let mut routes: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let bytes = match incoming {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    _ => break,
                };
                let Some(dest) = bytes.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                    continue;
                };
                let dest = u32::from_le_bytes(dest);
                let route = match routes.get(&dest) {
                    Some(route) => Some(route.clone()),
                    None => {
                        let found = registry
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get(&dest)
                            .cloned();
                        if let Some(route) = &found {
                            routes.insert(dest, route.clone());
                        }
                        found
                    }
                };
                if let Some(route) = route {
                    if route.send(bytes).await.is_err() {
                        routes.remove(&dest);
                    }
                }
            }
            Some(first) = rx.recv() => {
                let mut ok = ws.feed(Message::Binary(first)).await.is_ok();
                let mut batch = 1;
                while ok && batch < BATCH_MAX {
                    let Ok(next) = rx.try_recv() else { break };
                    ok = ws.feed(Message::Binary(next)).await.is_ok();
                    batch += 1;
                }
                if !ok || ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
    if registry
        .get(&id)
        .is_some_and(|current| current.same_channel(&tx))
    {
        registry.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids() {
        assert_eq!(id_from_path("/42"), Some(42));
        assert_eq!(id_from_path("/x"), None);
    }
}
