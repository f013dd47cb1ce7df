//! The SDK's connection to a server, on the client-side wire core ([`crate::wire`]):
//! opening the WebSocket (TLS, certificate advice, the server list), then the login
//! exchange that yields the [`Connection`] the engine uses. Every error here is an
//! [`SdkError`].
//!
//! A [`Connection`] exists only after the server answered `authenticated`: the engine
//! cannot send a request before login.
//!
//! It runs on any byte stream ([`Socket`]): where the bytes go is the
//! [`crate::transport`]'s business (TCP, or an in-memory pipe to a scripted relay in the
//! SDK's unit tests); TLS, the upgrade and the login are the same code for both.

use std::time::Duration;

use futures_util::FutureExt;

use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, RequestId};
use parley_protocol::wire::client::{ClientBody, Register};
use parley_protocol::wire::server::{Hello, ServerBody};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::MaybeTlsStream;

use crate::error::SdkError;
use crate::failover::{self, ServerList};
use crate::transport::Transport;
use crate::wire::{self, Authenticated, Unauthenticated, WireLimits};

/// Longest wait for the TCP connection, the TLS handshake and the WebSocket upgrade.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A byte stream to a server: TCP, or an in-memory pipe (see [`crate::transport`]).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static> Stream for T {}

/// What a connection runs on: a byte stream, with TLS over it for `wss://`.
pub type Socket = MaybeTlsStream<Box<dyn Stream>>;

/// Connects over TCP (and TLS for `wss://`, trusting `tls`) and reads the server's
/// `hello`.
pub async fn open(
    url: &str,
    tls: &crate::tls::TlsTrust,
) -> Result<Unauthenticated<Socket>, SdkError> {
    open_via(&Transport::Network, url, tls).await
}

/// [`open`] on a stream from `transport`.
pub(crate) async fn open_via(
    transport: &Transport,
    url: &str,
    tls: &crate::tls::TlsTrust,
) -> Result<Unauthenticated<Socket>, SdkError> {
    let unreachable = |reason: String| SdkError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let connect = async {
        let stream = transport.dial(url).await?;
        tokio_tungstenite::client_async_tls_with_config(
            url,
            stream,
            Some(wire::websocket_config()),
            tls.connector(),
        )
        .await
    };
    let (socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| match crate::certificate_error::explain(url, &e) {
            Some(advice) => SdkError::Certificate {
                url: url.to_owned(),
                advice,
            },
            None => unreachable(e.to_string()),
        })?;
    Ok(Unauthenticated::start(socket, WireLimits::default()).await?)
}

/// Opens a connection to the first of `servers` that answers, trying each once in
/// order; returns its index in the list too.
pub async fn open_first(
    servers: &ServerList,
    tls: &crate::tls::TlsTrust,
) -> Result<(usize, Unauthenticated<Socket>), SdkError> {
    let mut last = None;
    for (index, url) in servers.urls().iter().enumerate() {
        match open(url, tls).await {
            Ok(opened) => return Ok((index, opened)),
            Err(e) if e.is_connection_error() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(match last {
        Some(last) => failover::unreachable(servers, &last),
        None => SdkError::InvalidInput("no server URL given".into()),
    })
}

/// A logged-in connection.
#[derive(Debug)]
pub struct Connection(Authenticated<Socket>);

impl Connection {
    /// Logs in on `opened` as `device` of `identity`'s account.
    pub async fn login(
        opened: Unauthenticated<Socket>,
        identity: &IdentityKeyPair,
        device: DeviceId,
    ) -> Result<Connection, SdkError> {
        Ok(Connection(opened.login(identity, device).await?))
    }

    /// Registers on `opened`; `build` gets the challenge and returns the signed
    /// `register` body (`None` when it cannot, which is reported as a protocol error).
    pub async fn register(
        opened: Unauthenticated<Socket>,
        build: impl FnOnce(&Hello) -> Option<Register>,
    ) -> Result<Connection, SdkError> {
        let register = build(opened.hello())
            .ok_or_else(|| SdkError::Protocol("could not build the registration".into()))?;
        Ok(Connection(opened.register(register).await?))
    }

    /// The device this connection acts for.
    pub fn address(&self) -> DeviceAddress {
        self.0.address()
    }

    /// Sends a request and returns its reply (an `error` reply becomes `Err`); pushed
    /// frames that arrive meanwhile are kept for [`Connection::next_push`].
    pub async fn request(&mut self, body: ClientBody) -> Result<ServerBody, SdkError> {
        Ok(self.0.request(body).await??)
    }

    /// Sends a frame without waiting for a reply.
    pub async fn send(&mut self, body: ClientBody) -> Result<RequestId, SdkError> {
        Ok(self.0.send(body).await?)
    }

    /// Sends a WebSocket ping; the server's pong (or anything else) proves it is alive.
    pub async fn ping(&mut self) -> Result<(), SdkError> {
        Ok(self.0.ping().await?)
    }

    /// When anything last arrived from the server.
    pub fn last_heard(&self) -> tokio::time::Instant {
        self.0.last_heard()
    }

    /// The next pushed frame; waits for one (cancel-safe).
    pub async fn next_push(&mut self) -> Result<ServerBody, SdkError> {
        Ok(self.0.next_push().await?)
    }

    /// The next pushed frame if one is already here (kept, or readable without waiting
    /// for the network); `None` otherwise.
    pub fn ready_push(&mut self) -> Option<Result<ServerBody, SdkError>> {
        self.0
            .next_push()
            .now_or_never()
            .map(|pushed| pushed.map_err(SdkError::from))
    }
}
