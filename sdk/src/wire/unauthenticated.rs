//! [`Unauthenticated`]: a connection that has read the server's `hello` and can do one
//! thing, the login exchange (`auth` or `register`), which turns it into an
//! [`Authenticated`] one; before it, a new device may join a linking code (`join_link`,
//! protocol §15), the one request the server answers before login.

use std::time::Duration;

use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId};
use parley_protocol::wire::client::{Auth, ClientBody, JoinLink, Register};
use parley_protocol::wire::server::{Hello, ServerBody};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

use super::{Authenticated, Reply, Unchecked, WireError, WireLimits};

/// A connection before login.
#[derive(Debug)]
pub struct Unauthenticated<S> {
    link: Unchecked<S>,
    hello: Hello,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Unauthenticated<S> {
    /// Reads the server's `hello` from a freshly upgraded WebSocket (made with
    /// [`super::websocket_config`]), at most [`WireLimits::reply_timeout`].
    pub async fn start(
        socket: WebSocketStream<S>,
        limits: WireLimits,
    ) -> Result<Unauthenticated<S>, WireError> {
        let mut link = Unchecked::new(socket, limits);
        let first = tokio::time::timeout(link.limits().reply_timeout, link.next_frame())
            .await
            .map_err(|_| WireError::TimedOut("no hello from the server"))??;
        match first.body {
            ServerBody::Hello(hello) => Ok(Unauthenticated { link, hello }),
            other => Err(WireError::Unexpected(format!(
                "expected hello, got {other:?}"
            ))),
        }
    }

    /// The server's identity and this connection's challenge.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Logs in as `device` of `identity`'s account, signing the challenge.
    pub async fn login(
        self,
        identity: &IdentityKeyPair,
        device: DeviceId,
    ) -> Result<Authenticated<S>, WireError> {
        let address = DeviceAddress {
            account: identity.account_id(),
            device,
        };
        let auth = Auth::signed(identity, &self.hello, address);
        self.login_with(auth).await
    }

    /// Joins a linking code's rendezvous and waits, at most `within`, for what the
    /// existing device sealed (`link_sealed`), or the server's refusal; the connection
    /// then logs in as the device the sealed secrets name (the server suspends its auth
    /// deadline during the wait).
    pub async fn join_link(
        &mut self,
        join: JoinLink,
        within: Duration,
    ) -> Result<Reply, WireError> {
        let rid = self.link.send(ClientBody::JoinLink(join)).await?;
        self.link.reply_within(rid, within).await
    }

    /// Logs in with an `auth` already signed for [`Unauthenticated::hello`].
    pub async fn login_with(self, auth: Auth) -> Result<Authenticated<S>, WireError> {
        self.answer(ClientBody::Auth(auth)).await
    }

    /// Creates the account a `register` signed for [`Unauthenticated::hello`]
    /// describes, and logs in as its first device.
    pub async fn register(self, register: Register) -> Result<Authenticated<S>, WireError> {
        self.answer(ClientBody::Register(register)).await
    }

    /// The escape hatch: the connection without state checks, for tests of the
    /// server's refusals (see [`Unchecked`]).
    pub fn into_unchecked(self) -> (Unchecked<S>, Hello) {
        (self.link, self.hello)
    }

    async fn answer(mut self, body: ClientBody) -> Result<Authenticated<S>, WireError> {
        match self.link.request(body).await? {
            Ok(ServerBody::Authenticated(a)) => Ok(Authenticated::new(self.link, a.address)),
            Ok(other) => Err(WireError::Unexpected(format!(
                "unexpected reply to a login: {other:?}"
            ))),
            Err(refusal) => Err(WireError::Refused(refusal)),
        }
    }
}
