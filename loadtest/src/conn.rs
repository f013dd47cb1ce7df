//! The generator's client connections, on the SDK's client-side wire core
//! ([`parley_sdk::wire`]): connect from a chosen 127.0.0.x source address, then the
//! Parley handshake (hello, then register or auth) as the core's typed login exchange.
//!
//! A scenario gets an [`Authenticated`] connection ([`parley_session`]) for requests
//! during setup, or the plain WebSocket after the handshake ([`parley_ws`]) for its
//! hot path: pre-encoded frames written in batches, read with the core's
//! [`wire::next_binary`], the same client code as against the bare relay.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::SinkExt;
use parley_protocol::ids::{DeviceId, RequestId};
use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ClientFrame;
use parley_sdk::wire::{self, Authenticated, Unauthenticated, WireLimits};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::account::Account;

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// A logged-in Parley connection.
pub type Session = Authenticated<TcpStream>;

/// How long any single handshake step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Client-side WebSocket settings: the core's (frames up to the protocol's limit),
/// with a small read buffer (thousands of idle connections live in this process too);
/// writes go out on each flush.
fn client_config() -> WebSocketConfig {
    wire::websocket_config().read_buffer_size(4 * 1024)
}

/// The core's limits with [`STEP_TIMEOUT`] for every wait.
fn limits() -> WireLimits {
    WireLimits {
        reply_timeout: STEP_TIMEOUT,
        write_timeout: STEP_TIMEOUT,
        ..WireLimits::default()
    }
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
    ws.send(wire::frame_message(&ClientFrame::new(
        RequestId(rid),
        body,
    ))?)
    .await?;
    Ok(())
}

/// How to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Create the account.
    Register,
    /// Log in to an existing account as its device 1.
    Login,
    /// Log in as another device of the account (one on its published list).
    LoginAs(DeviceId),
}

/// Connects to a Parley server and authenticates `account`; returns the connection
/// right after `authenticated` (the backlog and `drained` follow on it).
pub async fn parley_session(
    server: SocketAddr,
    source: Ipv4Addr,
    account: &Account,
    how: Auth,
) -> anyhow::Result<Session> {
    let ws = connect(server, "/", source).await?;
    let opened = Unauthenticated::start(ws, limits()).await?;
    let session = match how {
        Auth::Register => {
            let register = account.register(opened.hello());
            opened.register(register).await
        }
        Auth::Login => {
            let auth = account.auth(opened.hello());
            opened.login_with(auth).await
        }
        Auth::LoginAs(device) => {
            let auth = account.auth_as(opened.hello(), device);
            opened.login_with(auth).await
        }
    };
    session.with_context(|| format!("{how:?}"))
}

/// [`parley_session`], then the plain WebSocket for a hot path.
pub async fn parley_ws(
    server: SocketAddr,
    source: Ipv4Addr,
    account: &Account,
    how: Auth,
) -> anyhow::Result<Ws> {
    into_ws(parley_session(server, source, account, how).await?)
}

/// The plain WebSocket of `session`, for a hot path. A `drained` kept while a setup
/// request waited is dropped (hot paths start after the backlog); any other kept frame
/// is an error, the hot path would never see it.
pub fn into_ws(session: Session) -> anyhow::Result<Ws> {
    let (ws, kept) = session.into_parts();
    if let Some(frame) = kept
        .iter()
        .find(|f| !matches!(f.body, ServerBody::Drained(_)))
    {
        bail!("unexpected frame during setup: {:?}", frame.body);
    }
    Ok(ws)
}

/// Closes politely and waits briefly for the server to finish the close handshake (the
/// server then closes the TCP connection first, so TIME_WAIT stays on its side).
pub async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), wire::until_closed(&mut ws)).await;
}
