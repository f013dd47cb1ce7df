//! Linking a device (ADR 0007, protocol.md §15), on both connections.
//!
//! * The existing device's connection (authenticated) opens one rendezvous at a time
//!   (`open_link`, limited per account per hour), is pushed the first join
//!   (`link_joined`), and answers it with the sealed secrets (`seal_link`). The rendezvous
//!   closes after that answer, after `--link-lifetime`, or with the connection.
//! * The new device's connection (before authentication) joins (`join_link`, limited per
//!   source address) and waits, its auth deadline suspended, for the sealed answer
//!   (`link_sealed`); then it has the usual auth deadline to log in as its new device.
//!
//! The relay only forwards: it cannot check the MAC (it does not know the code's secret)
//! nor open the sealed bytes.

use std::net::SocketAddr;

use parley_protocol::ids::AccountId;
use parley_protocol::wire::client::{JoinLink, OpenLink, SealLink};
use parley_protocol::wire::server::{Done, LinkJoined, LinkOpened, ServerBody};
use parley_protocol::wire::ServerFrame;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

use crate::context::Shared;
use crate::error::RequestError;
use crate::presence::{Answer, OpenRendezvous};

/// The rendezvous an authenticated connection holds, if any.
#[derive(Debug, Default)]
pub struct LinkState {
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    rendezvous: OpenRendezvous,
    expires: Instant,
    /// The join's way back, once a device joined.
    answer: Option<Answer>,
}

impl LinkState {
    /// Whether a rendezvous is open (the connection must watch [`LinkState::next_push`]).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// `open_link`.
    pub async fn open(
        &mut self,
        shared: &Shared,
        account: AccountId,
        request: OpenLink,
    ) -> Result<ServerBody, RequestError> {
        if self.open.is_some() {
            return Err(RequestError::LinkUnavailable(
                "this connection already has a linking code open",
            ));
        }
        shared
            .limiters
            .link_codes
            .take(&*shared.store, &account, 1)
            .await
            .map_err(|retry| RequestError::RateLimited {
                what: "linking codes for this account",
                retry_after: retry.0,
            })?;
        let rendezvous = shared
            .presence
            .open_link(request.rendezvous)
            .await
            .map_err(|_| RequestError::LinkUnavailable("this linking code is already open"))?;
        let lifetime = shared.config.link_lifetime;
        self.open = Some(Open {
            rendezvous,
            expires: Instant::now() + lifetime,
            answer: None,
        });
        let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        Ok(ServerBody::LinkOpened(LinkOpened {
            expires_at_ms: shared.now_ms().saturating_add(lifetime_ms),
        }))
    }

    /// `seal_link`: hands the sealed secrets to the device that joined, and closes.
    pub async fn seal(&mut self, request: SealLink) -> Result<ServerBody, RequestError> {
        let joined = self
            .open
            .as_ref()
            .is_some_and(|o| o.rendezvous.id == request.rendezvous && o.answer.is_some());
        if !joined {
            return Err(RequestError::LinkUnavailable(
                "no device joined this linking code on this connection",
            ));
        }
        if let Some(answer) = self.open.take().and_then(|o| o.answer) {
            answer.send(request.sealed).await;
        }
        Ok(ServerBody::Done(Done {}))
    }

    /// Waits for the rendezvous's next event: a join (the `link_joined` push to write) or
    /// its expiry (`None`; the rendezvous is closed). Never resolves while none is open.
    pub async fn next_push(&mut self) -> Option<ServerFrame> {
        let Some(open) = self.open.as_mut() else {
            return std::future::pending().await;
        };
        let expires = open.expires;
        let joined = if open.answer.is_some() {
            sleep_until(expires).await;
            None
        } else {
            tokio::select! {
                joined = &mut open.rendezvous.joins => joined.ok(),
                () = sleep_until(expires) => None,
            }
        };
        match joined {
            Some(joined) => {
                let push = ServerFrame::push(ServerBody::LinkJoined(LinkJoined {
                    rendezvous: open.rendezvous.id,
                    public: joined.public,
                    mac: joined.mac,
                }));
                open.answer = Some(joined.answer);
                Some(push)
            }
            None => {
                self.open = None;
                None
            }
        }
    }
}

/// `join_link` from a connection that is not authenticated: the receiver of the sealed
/// answer (it closes without one if none comes).
pub async fn join(
    shared: &Shared,
    peer: SocketAddr,
    request: JoinLink,
) -> Result<oneshot::Receiver<Vec<u8>>, RequestError> {
    shared
        .limiters
        .link_joins
        .take(&*shared.store, &peer.ip(), 1)
        .await
        .map_err(|retry| RequestError::RateLimited {
            what: "linking code joins from this address",
            retry_after: retry.0,
        })?;
    shared
        .presence
        .join_link(
            request.rendezvous,
            request.public,
            request.mac,
            shared.config.link_lifetime,
        )
        .await
        .map_err(|_| RequestError::LinkUnavailable(NO_DEVICE_WAITING))
}

/// Why a join got no answer, for people.
pub const NO_DEVICE_WAITING: &str =
    "no device is waiting for this linking code: it expired, was used, or its device went away";
