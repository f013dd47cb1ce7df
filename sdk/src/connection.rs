//! One authenticated WebSocket to the server, speaking wire protocol v1.
//!
//! A [`Connection`] sends requests with fresh request ids and reads until the reply with
//! that id arrives; pushed frames (deliveries, `drained`...) that arrive meanwhile are
//! kept, in order, for [`Connection::next_push`]. Every wait is bounded.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, RequestId};
use parley_protocol::wire::client::{Auth, ClientBody, Register};
use parley_protocol::wire::server::{Hello, ServerBody};
use parley_protocol::wire::{self, ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::SdkError;
use crate::failover::{self, ServerList};

/// Longest wait for the WebSocket upgrade and for any reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Most pushed frames kept while waiting for a reply; beyond that the connection is
/// dropped (and the server redelivers later).
pub const MAX_BUFFERED_PUSHES: usize = 4096;

/// An open connection.
#[derive(Debug)]
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    hello: Hello,
    next_rid: u32,
    pushed: VecDeque<ServerBody>,
    last_heard: tokio::time::Instant,
}

impl Connection {
    /// Connects (over TLS for `wss://`, trusting `tls`) and reads the server's `hello`.
    pub async fn open(url: &str, tls: &crate::tls::TlsTrust) -> Result<Connection, SdkError> {
        let unreachable = |reason: String| SdkError::Unreachable {
            url: url.to_owned(),
            reason,
        };
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, tls.connector());
        let (ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| match crate::certificate_error::explain(url, &e) {
                Some(advice) => SdkError::Certificate {
                    url: url.to_owned(),
                    advice,
                },
                None => unreachable(e.to_string()),
            })?;
        let mut conn = Connection {
            ws,
            hello: Hello {
                server_id: parley_protocol::ids::ServerId([0; 32]),
                nonce: parley_protocol::ids::Nonce([0; 32]),
                max_envelope_bytes: 0,
                auth_timeout_ms: 0,
            },
            next_rid: 1,
            pushed: VecDeque::new(),
            last_heard: tokio::time::Instant::now(),
        };
        match conn.read_frame().await?.body {
            ServerBody::Hello(hello) => conn.hello = hello,
            other => return Err(SdkError::Protocol(format!("expected hello, got {other:?}"))),
        }
        Ok(conn)
    }

    /// Opens a connection to the first of `servers` that answers, trying each once in
    /// order; returns its index in the list too.
    pub async fn open_first(
        servers: &ServerList,
        tls: &crate::tls::TlsTrust,
    ) -> Result<(usize, Connection), SdkError> {
        let mut last = None;
        for (index, url) in servers.urls().iter().enumerate() {
            match Connection::open(url, tls).await {
                Ok(conn) => return Ok((index, conn)),
                Err(e) if e.is_connection_error() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(match last {
            Some(last) => failover::unreachable(servers, &last),
            None => SdkError::InvalidInput("no server URL given".into()),
        })
    }

    /// Logs in as `identity`'s primary device.
    pub async fn login(&mut self, identity: &IdentityKeyPair) -> Result<DeviceAddress, SdkError> {
        let address = DeviceAddress {
            account: identity.account_id(),
            device: DeviceId::PRIMARY,
        };
        let transcript = parley_protocol::auth::auth_transcript(
            &self.hello.server_id,
            &self.hello.nonce,
            &address,
        );
        let body = ClientBody::Auth(Auth {
            address,
            signature: identity.sign(&transcript),
        });
        match self.request(body).await? {
            ServerBody::Authenticated(a) => Ok(a.address),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers; `build` gets the challenge and returns the signed `register` body
    /// (`None` when it cannot, which is reported as a protocol error).
    pub async fn register(
        &mut self,
        build: impl FnOnce(&Hello) -> Option<Register>,
    ) -> Result<DeviceAddress, SdkError> {
        let register = build(&self.hello)
            .ok_or_else(|| SdkError::Protocol("could not build the registration".into()))?;
        let body = ClientBody::Register(register);
        match self.request(body).await? {
            ServerBody::Authenticated(a) => Ok(a.address),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a request and returns its reply (an `error` reply becomes `Err`).
    pub async fn request(&mut self, body: ClientBody) -> Result<ServerBody, SdkError> {
        let rid = self.send(body).await?;
        loop {
            let frame = self.read_frame().await?;
            if frame.rid == Some(rid) {
                return match frame.body {
                    ServerBody::Error(e) => Err(e.into()),
                    body => Ok(body),
                };
            }
            if self.pushed.len() >= MAX_BUFFERED_PUSHES {
                return Err(SdkError::ConnectionLost(
                    "too many pushed frames buffered".into(),
                ));
            }
            self.pushed.push_back(frame.body);
        }
    }

    /// Sends a frame without waiting for a reply.
    pub async fn send(&mut self, body: ClientBody) -> Result<RequestId, SdkError> {
        let rid = RequestId(self.next_rid);
        self.next_rid = self.next_rid.wrapping_add(1);
        let bytes = wire::encode_client(&ClientFrame::new(rid, body))
            .map_err(|e| SdkError::Protocol(e.to_string()))?;
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.ws.send(Message::Binary(Bytes::from(bytes))),
        )
        .await
        .map_err(|_| SdkError::ConnectionLost("write timed out".into()))?
        .map_err(|e| SdkError::ConnectionLost(e.to_string()))?;
        Ok(rid)
    }

    /// Sends a WebSocket ping; the server's pong (or anything else) proves it is alive.
    pub async fn ping(&mut self) -> Result<(), SdkError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.ws.send(Message::Ping(Bytes::new())))
            .await
            .map_err(|_| SdkError::ConnectionLost("write timed out".into()))?
            .map_err(|e| SdkError::ConnectionLost(e.to_string()))
    }

    /// When anything last arrived from the server.
    pub fn last_heard(&self) -> tokio::time::Instant {
        self.last_heard
    }

    /// The next pushed frame; waits for one (cancel-safe when nothing is buffered).
    pub async fn next_push(&mut self) -> Result<ServerBody, SdkError> {
        if let Some(body) = self.pushed.pop_front() {
            return Ok(body);
        }
        loop {
            let frame = self.read_frame_unbounded().await?;
            if frame.rid.is_none() {
                return Ok(frame.body);
            }
        }
    }

    async fn read_frame(&mut self) -> Result<ServerFrame, SdkError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.read_frame_unbounded())
            .await
            .map_err(|_| SdkError::ConnectionLost("no reply from the server".into()))?
    }

    async fn read_frame_unbounded(&mut self) -> Result<ServerFrame, SdkError> {
        loop {
            let message = self.ws.next().await;
            self.last_heard = tokio::time::Instant::now();
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    return wire::decode_server(&bytes)
                        .map_err(|e| SdkError::Protocol(e.to_string()))
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!("closed by server ({}: {})", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "closed by server".into());
                    return Err(SdkError::ConnectionLost(why));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(SdkError::ConnectionLost(e.to_string())),
                None => return Err(SdkError::ConnectionLost("connection closed".into())),
            }
        }
    }
}

fn unexpected(body: &ServerBody) -> SdkError {
    SdkError::Protocol(format!("unexpected reply {body:?}"))
}
