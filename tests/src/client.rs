//! A raw-frame WebSocket client for tests.
//!
//! It speaks Parley correctly when asked ([`Client::register`], [`Client::login`],
//! [`Client::send`]) and incorrectly when told to ([`Client::send_raw`]). Pushed frames
//! that arrive while it waits for a reply are kept, in order, for [`Client::next_push`].

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use parley_protocol::ids::{DeviceAddress, MessageId, RequestId, Seq};
use parley_protocol::wire::client::{Ack, ClientBody, Send};
use parley_protocol::wire::server::{Deliver, ErrorBody, Hello, ServerBody};
use parley_protocol::wire::{self, ClientFrame, ErrorCode, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::account::TestAccount;

/// How long a test waits for any single frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected test client.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The server's challenge.
    pub hello: Hello,
    next_rid: u32,
    pushed: VecDeque<ServerFrame>,
}

/// What the server answered to a request.
pub type Reply = Result<ServerBody, ErrorBody>;

impl Client {
    /// Connects and reads the `hello` challenge.
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        Client::connect_with(url, None).await
    }

    /// Connects with a TLS `connector` for `wss://` URLs (see [`crate::tls`]) and reads
    /// the `hello` challenge.
    pub async fn connect_with(
        url: &str,
        connector: Option<tokio_tungstenite::Connector>,
    ) -> anyhow::Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut client = Client {
            ws,
            hello: Hello {
                server_id: parley_protocol::ids::ServerId([0; 32]),
                nonce: parley_protocol::ids::Nonce([0; 32]),
                max_envelope_bytes: 0,
                auth_timeout_ms: 0,
            },
            next_rid: 1,
            pushed: VecDeque::new(),
        };
        match client.next_frame().await?.body {
            ServerBody::Hello(hello) => client.hello = hello,
            other => bail!("expected hello, got {other:?}"),
        }
        Ok(client)
    }

    /// Connects and registers `account`.
    pub async fn register(url: &str, account: &TestAccount) -> anyhow::Result<Client> {
        let mut client = Client::connect(url).await?;
        let body = account.register_body(&client.hello);
        match client.request(body).await? {
            Ok(ServerBody::Authenticated(_)) => Ok(client),
            other => bail!("register failed: {other:?}"),
        }
    }

    /// Connects and logs in as `account`.
    pub async fn login(url: &str, account: &TestAccount) -> anyhow::Result<Client> {
        let mut client = Client::connect(url).await?;
        let body = account.auth_body(&client.hello);
        match client.request(body).await? {
            Ok(ServerBody::Authenticated(_)) => Ok(client),
            other => bail!("login failed: {other:?}"),
        }
    }

    /// Sends a request frame without waiting; returns its request id.
    pub async fn send_frame(&mut self, body: ClientBody) -> anyhow::Result<RequestId> {
        let rid = RequestId(self.next_rid);
        self.next_rid = self.next_rid.wrapping_add(1);
        let bytes = wire::encode_client(&ClientFrame::new(rid, body))?;
        self.ws.send(Message::Binary(Bytes::from(bytes))).await?;
        Ok(rid)
    }

    /// Sends any WebSocket message as is.
    pub async fn send_raw(&mut self, message: Message) -> anyhow::Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// Sends a request and waits for its reply, keeping pushed frames for later.
    pub async fn request(&mut self, body: ClientBody) -> anyhow::Result<Reply> {
        let rid = self.send_frame(body).await?;
        self.reply_to(rid).await
    }

    /// Waits for the reply to `rid`, keeping pushed frames for later.
    pub async fn reply_to(&mut self, rid: RequestId) -> anyhow::Result<Reply> {
        loop {
            let frame = self.read_frame().await?;
            if frame.rid == Some(rid) {
                return Ok(match frame.body {
                    ServerBody::Error(e) => Err(e),
                    body => Ok(body),
                });
            }
            self.pushed.push_back(frame);
        }
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

    /// The next frame, pushed or not.
    pub async fn next_frame(&mut self) -> anyhow::Result<ServerFrame> {
        match self.pushed.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read_frame().await,
        }
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
        let wait = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(frame))) => {
                        return Ok(frame.map(|f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Ok(None),
                }
            }
        };
        tokio::time::timeout(FRAME_TIMEOUT, wait)
            .await
            .map_err(|_| anyhow!("server did not close the connection"))?
    }

    /// Closes the connection normally (a WebSocket close, 1000) right away, without
    /// reading what the server sent, and waits for the server to answer the close.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.ws.close(None).await?;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        tokio::time::timeout(FRAME_TIMEOUT, drain)
            .await
            .map_err(|_| anyhow!("server did not answer the close"))
    }

    /// The expected error code of a reply.
    pub fn error_code(reply: &Reply) -> Option<ErrorCode> {
        reply.as_ref().err().map(|e| e.code)
    }

    async fn read_frame(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {FRAME_TIMEOUT:?}"))?;
            match message {
                Some(Ok(Message::Binary(bytes))) => return Ok(wire::decode_server(&bytes)?),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => bail!("unexpected message {other:?}"),
                Some(Err(e)) => bail!("connection error: {e}"),
                None => bail!("connection closed"),
            }
        }
    }
}
