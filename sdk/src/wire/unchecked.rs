//! [`Unchecked`]: a Parley connection that sends whatever it is given, in any state.
//!
//! It is the engine room of [`super::Unauthenticated`] and [`super::Authenticated`],
//! which expose only what their state allows, and the escape hatch for tests of the
//! server's refusals (a request before login, a malformed frame, a text message): get
//! one with `into_unchecked`. An application has no reason to hold one.

use futures_util::SinkExt;
use parley_protocol::ids::RequestId;
use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::{ErrorBody, ServerBody};
use parley_protocol::wire::{ClientFrame, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use super::inbox::Inbox;
use super::messages::{frame_message, next_frame, until_closed};
use super::{WireError, WireLimits};

/// What the server answered to a request: its reply, or its `error`.
pub type Reply = Result<ServerBody, ErrorBody>;

/// A connection without state checks.
#[derive(Debug)]
pub struct Unchecked<S> {
    socket: WebSocketStream<S>,
    inbox: Inbox,
    limits: WireLimits,
    last_heard: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Unchecked<S> {
    /// Wraps an upgraded WebSocket (made with [`super::websocket_config`]) on which
    /// nothing was read yet.
    pub fn new(socket: WebSocketStream<S>, limits: WireLimits) -> Unchecked<S> {
        Unchecked {
            socket,
            inbox: Inbox::new(limits.max_buffered_frames),
            limits,
            last_heard: Instant::now(),
        }
    }

    /// The limits this connection works within.
    pub fn limits(&self) -> &WireLimits {
        &self.limits
    }

    /// Sends a frame with a fresh request id, without waiting; returns the id.
    pub async fn send(&mut self, body: ClientBody) -> Result<RequestId, WireError> {
        let rid = self.inbox.next_request_id();
        let message = frame_message(&ClientFrame::new(rid, body))?;
        self.send_raw(message).await?;
        Ok(rid)
    }

    /// Sends any WebSocket message as it is: a broken frame, a text message, a ping.
    pub async fn send_raw(&mut self, message: Message) -> Result<(), WireError> {
        tokio::time::timeout(self.limits.write_timeout, self.socket.send(message))
            .await
            .map_err(|_| WireError::TimedOut("write timed out"))??;
        Ok(())
    }

    /// Sends a request and waits for its reply (see [`Unchecked::reply_to`]).
    pub async fn request(&mut self, body: ClientBody) -> Result<Reply, WireError> {
        let rid = self.send(body).await?;
        self.reply_to(rid).await
    }

    /// Waits for the reply to `rid`, at most [`WireLimits::reply_timeout`]; frames
    /// that arrive meanwhile are kept, in order, for [`Unchecked::next_frame`].
    pub async fn reply_to(&mut self, rid: RequestId) -> Result<Reply, WireError> {
        self.reply_within(rid, self.limits.reply_timeout).await
    }

    /// Waits for the reply to `rid` at most `limit`, for the one request whose answer
    /// waits on another party (`join_link`, answered when the existing device seals).
    pub async fn reply_within(
        &mut self,
        rid: RequestId,
        limit: std::time::Duration,
    ) -> Result<Reply, WireError> {
        if let Some(body) = self.inbox.take_reply(rid) {
            return Ok(as_reply(body));
        }
        let wait = async {
            loop {
                let frame = self.read_frame().await?;
                if let Some(body) = self.inbox.route(rid, frame)? {
                    return Ok(as_reply(body));
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| WireError::TimedOut("no reply from the server"))?
    }

    /// The next frame, kept or new, reply or push. Waits as long as it takes, and is
    /// cancel-safe.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, WireError> {
        match self.inbox.oldest() {
            Some(frame) => Ok(frame),
            None => self.read_frame().await,
        }
    }

    /// The next pushed frame (`deliver`, `drained`...); replies nobody waits for are
    /// dropped. Waits as long as it takes, and is cancel-safe.
    pub async fn next_push(&mut self) -> Result<ServerBody, WireError> {
        if let Some(body) = self.inbox.oldest_push() {
            return Ok(body);
        }
        loop {
            let frame = self.read_frame().await?;
            if frame.rid.is_none() {
                return Ok(frame.body);
            }
        }
    }

    /// Sends a WebSocket ping; the server's pong (or anything else) updates
    /// [`Unchecked::last_heard`].
    pub async fn ping(&mut self) -> Result<(), WireError> {
        self.send_raw(Message::Ping(Bytes::new())).await
    }

    /// When the server last sent anything, pings and pongs included.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Reads until the server ends the connection, at most
    /// [`WireLimits::reply_timeout`]; returns its close code (`None` when it ended
    /// without one).
    pub async fn closed(&mut self) -> Result<Option<u16>, WireError> {
        tokio::time::timeout(self.limits.reply_timeout, until_closed(&mut self.socket))
            .await
            .map_err(|_| WireError::TimedOut("the server did not close the connection"))
    }

    /// Closes normally (1000) and waits, at most [`WireLimits::reply_timeout`], for the
    /// server to answer the close (the server then closes the TCP connection first, so
    /// its TIME_WAIT stays on its side).
    pub async fn close(mut self) -> Result<(), WireError> {
        self.socket.close(None).await?;
        self.closed().await.map(|_| ())
    }

    /// The WebSocket itself and the frames kept for later (oldest first), for a caller
    /// that reads and writes frames on its own hot path (the load generator).
    pub fn into_parts(self) -> (WebSocketStream<S>, Vec<ServerFrame>) {
        (self.socket, self.inbox.into_frames())
    }

    async fn read_frame(&mut self) -> Result<ServerFrame, WireError> {
        let last_heard = &mut self.last_heard;
        next_frame(&mut self.socket, || *last_heard = Instant::now()).await
    }
}

fn as_reply(body: ServerBody) -> Reply {
    match body {
        ServerBody::Error(e) => Err(e),
        body => Ok(body),
    }
}
