//! The generator's lean WebSocket client: connect from a chosen 127.0.0.x source
//! address, and the Parley handshake (hello, then register or auth).
//!
//! Scenarios own the resulting [`Ws`] directly, so the hot path is a plain
//! tokio-tungstenite stream with no extra buffering or tasks.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use parley_protocol::ids::RequestId;
use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::{Hello, ServerBody};
use parley_protocol::wire::{self, ClientFrame, ServerFrame};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use crate::account::Account;

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// How long any single handshake step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Client-side WebSocket settings: small read buffer (thousands of idle connections
/// live in this process too); writes go out on each flush.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(parley_protocol::limits::MAX_FRAME_BYTES))
        .max_frame_size(Some(parley_protocol::limits::MAX_FRAME_BYTES))
}

/// Opens a WebSocket to `server` at `path`, from `source`, with `TCP_NODELAY`.
pub async fn connect(server: SocketAddr, path: &str, source: Ipv4Addr) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("binding {source}"))?;
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{server}{path}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(client_config()))
        .await
        .context("WebSocket upgrade")?;
    Ok(ws)
}

/// Sends one Parley frame and flushes.
pub async fn send_frame(ws: &mut Ws, rid: u32, body: ClientBody) -> anyhow::Result<()> {
    let bytes = wire::encode_client(&ClientFrame::new(RequestId(rid), body))?;
    ws.send(Message::Binary(Bytes::from(bytes))).await?;
    Ok(())
}

/// The next Parley frame (pings and pongs skipped), within [`STEP_TIMEOUT`].
pub async fn next_frame(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        let message = tokio::time::timeout(STEP_TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow!("no frame within {STEP_TIMEOUT:?}"))?;
        match message {
            Some(Ok(Message::Binary(bytes))) => return Ok(wire::decode_server(&bytes)?),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => bail!("unexpected message {other:?}"),
            Some(Err(e)) => bail!("connection error: {e}"),
            None => bail!("connection closed"),
        }
    }
}

/// How to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Create the account.
    Register,
    /// Log in to an existing account.
    Login,
}

/// Connects to a Parley server and authenticates `account`; returns the socket right
/// after `authenticated` (the backlog and `drained` follow on it).
pub async fn parley_session(
    server: SocketAddr,
    source: Ipv4Addr,
    account: &Account,
    how: Auth,
) -> anyhow::Result<Ws> {
    let mut ws = connect(server, "/", source).await?;
    let hello: Hello = match next_frame(&mut ws).await?.body {
        ServerBody::Hello(hello) => hello,
        other => bail!("expected hello, got {other:?}"),
    };
    let body = match how {
        Auth::Register => account.register_body(&hello),
        Auth::Login => account.auth_body(&hello),
    };
    send_frame(&mut ws, 1, body).await?;
    loop {
        let frame = next_frame(&mut ws).await?;
        match frame.body {
            ServerBody::Authenticated(_) => return Ok(ws),
            ServerBody::Error(e) => bail!("{how:?} refused: {:?} {}", e.code, e.message),
            _ => continue,
        }
    }
}

/// Closes politely and waits briefly for the server to finish the close handshake (the
/// server then closes the TCP connection first, so TIME_WAIT stays on its side).
pub async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
