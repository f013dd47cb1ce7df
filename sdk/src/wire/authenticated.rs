//! [`Authenticated`]: a logged-in connection; the only kind that sends requests.

use parley_protocol::ids::{DeviceAddress, RequestId};
use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ServerFrame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;

use super::{Reply, Unchecked, WireError};

/// A connection acting for one device, after the server's `authenticated`.
#[derive(Debug)]
pub struct Authenticated<S> {
    link: Unchecked<S>,
    address: DeviceAddress,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Authenticated<S> {
    /// Only [`super::Unauthenticated`] makes one, from the server's `authenticated`.
    pub(super) fn new(link: Unchecked<S>, address: DeviceAddress) -> Authenticated<S> {
        Authenticated { link, address }
    }

    /// The device this connection acts for, as the server confirmed it.
    pub fn address(&self) -> DeviceAddress {
        self.address
    }

    /// Sends a request and waits for its reply, at most
    /// [`super::WireLimits::reply_timeout`]; pushed frames that arrive meanwhile are
    /// kept, in order, for [`Authenticated::next_push`].
    pub async fn request(&mut self, body: ClientBody) -> Result<Reply, WireError> {
        self.link.request(body).await
    }

    /// Sends a frame without waiting for a reply (`ack`, which gets none, or requests
    /// sent ahead of their replies); returns its request id.
    pub async fn send(&mut self, body: ClientBody) -> Result<RequestId, WireError> {
        self.link.send(body).await
    }

    /// Waits for the reply to a request sent with [`Authenticated::send`].
    pub async fn reply_to(&mut self, rid: RequestId) -> Result<Reply, WireError> {
        self.link.reply_to(rid).await
    }

    /// The next pushed frame (`deliver`, `drained`, `prekeys_low`...). Waits as long as
    /// it takes, and is cancel-safe.
    pub async fn next_push(&mut self) -> Result<ServerBody, WireError> {
        self.link.next_push().await
    }

    /// Sends a WebSocket ping (see [`Authenticated::last_heard`]).
    pub async fn ping(&mut self) -> Result<(), WireError> {
        self.link.ping().await
    }

    /// When the server last sent anything, pings and pongs included.
    pub fn last_heard(&self) -> Instant {
        self.link.last_heard()
    }

    /// Closes normally and waits briefly for the server's answer.
    pub async fn close(self) -> Result<(), WireError> {
        self.link.close().await
    }

    /// The WebSocket itself and the frames kept for later, for the load generator's
    /// hot path (see [`Unchecked::into_parts`]).
    pub fn into_parts(self) -> (WebSocketStream<S>, Vec<ServerFrame>) {
        self.link.into_parts()
    }

    /// The escape hatch: the connection without state checks, for tests of the
    /// server's refusals (see [`Unchecked`]).
    pub fn into_unchecked(self) -> Unchecked<S> {
        self.link
    }
}
