//! The test kit's Parley client, on the SDK's client-side wire core
//! ([`parley_sdk::wire`]).
//!
//! It speaks Parley correctly when asked ([`Client::register`], [`Client::login`],
//! [`Client::send`]: the core's typed login exchange) and incorrectly when told to: a
//! connection from [`Client::connect`] has not logged in and still sends any request
//! ([`Client::request`], [`Client::send_frame`]) or any WebSocket message
//! ([`Client::send_raw`]), through the core's escape hatch
//! ([`parley_sdk::wire::Unchecked`]), because these tests check the server's refusals.
//! Pushed frames that arrive while it waits for a reply are kept, in order, for
//! [`Client::next_push`].

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use parley_protocol::ids::{DeviceAddress, DeviceId, MessageId, RequestId, Seq};
use parley_protocol::wire::client::{Ack, ClientBody, Send};
use parley_protocol::wire::server::{Deliver, ErrorBody, Hello, ServerBody};
use parley_protocol::wire::{ErrorCode, ServerFrame};
use parley_sdk::wire::{self, Unauthenticated, Unchecked, WireLimits};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use crate::account::TestAccount;

/// How long a test waits for any single frame (or reply, or close) before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Most frames a client keeps while a test waits for a reply: far more than any test
/// leaves unread, still a bound.
pub const MAX_KEPT_FRAMES: usize = 65_536;

/// A connected test client.
#[derive(Debug)]
pub struct Client {
    link: Unchecked<MaybeTlsStream<TcpStream>>,
    /// The server's challenge.
    pub hello: Hello,
}

/// What the server answered to a request.
pub type Reply = Result<ServerBody, ErrorBody>;

impl Client {
    /// Connects and reads the `hello` challenge; does not log in.
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        Client::connect_with(url, None).await
    }

    /// Connects with a TLS `connector` for `wss://` URLs (see [`crate::tls`]) and reads
    /// the `hello` challenge; does not log in.
    pub async fn connect_with(
        url: &str,
        connector: Option<tokio_tungstenite::Connector>,
    ) -> anyhow::Result<Client> {
        let (link, hello) = Client::open(url, connector).await?.into_unchecked();
        Ok(Client { link, hello })
    }

    /// Connects and registers `account`.
    pub async fn register(url: &str, account: &TestAccount) -> anyhow::Result<Client> {
        let opened = Client::open(url, None).await?;
        let register = account.register(opened.hello());
        let hello = opened.hello().clone();
        let conn = opened.register(register).await.context("register failed")?;
        Ok(Client {
            link: conn.into_unchecked(),
            hello,
        })
    }

    /// Connects and logs in as `account`.
    pub async fn login(url: &str, account: &TestAccount) -> anyhow::Result<Client> {
        let opened = Client::open(url, None).await?;
        let hello = opened.hello().clone();
        let conn = opened
            .login(&account.identity, DeviceId::PRIMARY)
            .await
            .context("login failed")?;
        Ok(Client {
            link: conn.into_unchecked(),
            hello,
        })
    }

    /// Sends a request frame without waiting; returns its request id.
    pub async fn send_frame(&mut self, body: ClientBody) -> anyhow::Result<RequestId> {
        Ok(self.link.send(body).await?)
    }

    /// Sends any WebSocket message as is.
    pub async fn send_raw(&mut self, message: Message) -> anyhow::Result<()> {
        Ok(self.link.send_raw(message).await?)
    }

    /// Sends a request and waits for its reply, keeping pushed frames for later.
    pub async fn request(&mut self, body: ClientBody) -> anyhow::Result<Reply> {
        Ok(self.link.request(body).await?)
    }

    /// Waits for the reply to `rid`, keeping pushed frames for later.
    pub async fn reply_to(&mut self, rid: RequestId) -> anyhow::Result<Reply> {
        Ok(self.link.reply_to(rid).await?)
    }

    /// Sends an envelope and returns the seq it was accepted at.
    pub async fn send(
        &mut self,
        to: DeviceAddress,
        id: MessageId,
        ciphertext: Vec<u8>,
    ) -> anyhow::Result<Seq> {
        match self
            .request(ClientBody::Send(Send {
                to,
                id,
                ciphertext,
                category: None,
                receipt: false,
            }))
            .await?
        {
            Ok(ServerBody::Accepted(a)) if a.id == id => Ok(a.seq),
            other => bail!("send not accepted: {other:?}"),
        }
    }

    /// Acknowledges everything through `seq`.
    pub async fn ack(&mut self, seq: Seq) -> anyhow::Result<()> {
        self.send_frame(ClientBody::Ack(Ack { through: seq }))
            .await
            .map(|_| ())
    }

    /// The next frame, pushed or not, within [`FRAME_TIMEOUT`].
    pub async fn next_frame(&mut self) -> anyhow::Result<ServerFrame> {
        Ok(tokio::time::timeout(FRAME_TIMEOUT, self.link.next_frame())
            .await
            .map_err(|_| anyhow!("no frame within {FRAME_TIMEOUT:?}"))??)
    }

    /// The next pushed frame (skipping nothing).
    pub async fn next_push(&mut self) -> anyhow::Result<ServerBody> {
        Ok(self.next_frame().await?.body)
    }

    /// The next `deliver`, skipping `drained` and `prekeys_low`.
    pub async fn next_deliver(&mut self) -> anyhow::Result<Deliver> {
        loop {
            match self.next_push().await? {
                ServerBody::Deliver(d) => return Ok(d),
                ServerBody::Drained(_) | ServerBody::PrekeysLow(_) => continue,
                other => bail!("expected deliver, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code (None if the connection
    /// ended without a close frame).
    pub async fn closed(&mut self) -> anyhow::Result<Option<u16>> {
        Ok(self.link.closed().await?)
    }

    /// Closes the connection normally (a WebSocket close, 1000) right away, without
    /// reading what the server sent, and waits for the server to answer the close.
    pub async fn close(self) -> anyhow::Result<()> {
        Ok(self.link.close().await?)
    }

    /// The expected error code of a reply.
    pub fn error_code(reply: &Reply) -> Option<ErrorCode> {
        reply.as_ref().err().map(|e| e.code)
    }

    async fn open(
        url: &str,
        connector: Option<tokio_tungstenite::Connector>,
    ) -> anyhow::Result<Unauthenticated<MaybeTlsStream<TcpStream>>> {
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(wire::websocket_config()),
            false,
            connector,
        )
        .await
        .with_context(|| format!("connecting to {url}"))?;
        Ok(Unauthenticated::start(socket, limits()).await?)
    }
}

/// The kit's limits: [`FRAME_TIMEOUT`] for every wait, [`MAX_KEPT_FRAMES`].
fn limits() -> WireLimits {
    WireLimits {
        reply_timeout: FRAME_TIMEOUT,
        write_timeout: FRAME_TIMEOUT,
        max_buffered_frames: MAX_KEPT_FRAMES,
    }
}
