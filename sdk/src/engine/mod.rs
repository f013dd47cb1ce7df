//! The engine: one task that owns the connection and the sessions.
//!
//! It connects and logs in, resends whatever the outbox holds, then serves commands from
//! the [`crate::Client`] handle and frames from the server until the connection breaks;
//! then it reconnects with exponential backoff and jitter. Commands wait while it is
//! disconnected; a message already encrypted stays in the outbox and is resent.

mod business;
mod customer;
mod receive;
mod send;

pub(crate) use send::{now_ms, resolve_request, resolved};
pub use send::{Outgoing, Peer};

use std::sync::Arc;
use std::time::Duration;

use parley_protocol::business::AuthorityKey;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, MessageId};
use parley_protocol::wire::client::{ClientBody, DeleteAccount};
use parley_protocol::wire::server::ServerBody;
use rand_core::{OsRng, RngCore};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::business_info::BusinessInfo;
use crate::connection::Connection;
use crate::error::SdkError;
use crate::events::{ConnectionState, Event};
use crate::store::ClientStore;

/// Shortest and longest pause between reconnection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// See [`BACKOFF_MIN`].
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often the engine pings an otherwise quiet server; a server silent for two
/// intervals is considered gone and the engine reconnects.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// A request from the client handle.
#[derive(Debug)]
pub enum Command {
    /// Encrypt and send content.
    Send {
        /// What, to whom, in which category.
        message: Outgoing,
        /// The message id once the server accepted it.
        reply: oneshot::Sender<Result<MessageId, SdkError>>,
    },
    /// A plain request (block, report, consent, display name...) and its reply.
    Request {
        /// The request.
        body: ClientBody,
        /// The server's reply (an `error` reply is `Err`).
        reply: oneshot::Sender<Result<ServerBody, SdkError>>,
    },
    /// Fetch and check an account's business certificate.
    Business {
        /// The account, or a handle to resolve.
        who: Peer,
        /// The verdict.
        reply: oneshot::Sender<Result<BusinessInfo, SdkError>>,
    },
    /// Delete the account on the server (its handle becomes free).
    DeleteAccount {
        /// Done.
        reply: oneshot::Sender<Result<(), SdkError>>,
    },
}

/// The engine's state.
#[derive(Debug)]
pub struct Engine {
    pub(crate) store: Arc<ClientStore>,
    pub(crate) identity: IdentityKeyPair,
    pub(crate) me: DeviceAddress,
    /// The configured verification authority key (`None`: pin on first contact).
    pub(crate) authority: Option<AuthorityKey>,
    /// Whether to take deliveries (see [`crate::ClientConfig::receive`]).
    pub(crate) receive: bool,
    pub(crate) url: String,
    pub(crate) tls: crate::tls::TlsTrust,
    pub(crate) events: mpsc::Sender<Event>,
    /// Test hook: stop dead after storing a message and before acknowledging it, as if
    /// the process were killed there.
    pub(crate) halt_before_ack: bool,
    /// Cancelled by [`crate::Client::stop`]: finish the current step and return, also
    /// while disconnected.
    pub(crate) stop: CancellationToken,
}

/// Why a connection ended.
enum Stop {
    /// The client handle is gone: stop the engine.
    Shutdown,
    /// The test hook fired.
    Halted,
    /// The connection broke: reconnect.
    Lost(SdkError),
}

impl Engine {
    /// Runs until the client handle is dropped. `conn` is an already logged-in connection.
    pub async fn run(self, conn: Connection, mut commands: mpsc::Receiver<Command>) {
        let mut conn = Some(conn);
        let mut failures: u32 = 0;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let current = match conn.take() {
                Some(c) => c,
                None => match tokio::select! {
                    _ = self.stop.cancelled() => return,
                    attempt = self.connect() => attempt,
                } {
                    Ok(c) => c,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        self.pause(failures, &e).await;
                        continue;
                    }
                },
            };
            match self.serve(current, &mut commands).await {
                Stop::Shutdown | Stop::Halted => return,
                Stop::Lost(e) => {
                    tracing::debug!(error = %e, "connection lost");
                    // The connection worked: start the backoff afresh.
                    failures = 1;
                    self.pause(failures, &e).await;
                }
            }
        }
    }

    /// Tells the application why it is disconnected, then waits out the backoff.
    async fn pause(&self, failures: u32, why: &SdkError) {
        let delay = backoff(failures);
        self.emit(Event::Connection(ConnectionState::Reconnecting {
            in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            reason: why.to_string(),
        }))
        .await;
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    /// Opens a connection and logs in.
    pub async fn connect(&self) -> Result<Connection, SdkError> {
        let mut conn = Connection::open(&self.url, &self.tls).await?;
        conn.login(&self.identity).await?;
        Ok(conn)
    }

    async fn serve(&self, mut conn: Connection, commands: &mut mpsc::Receiver<Command>) -> Stop {
        self.emit(Event::Connection(ConnectionState::Connected))
            .await;
        if let Err(e) = self.flush_outbox(&mut conn).await {
            return Stop::Lost(e);
        }
        let mut next_ping = tokio::time::Instant::now() + KEEPALIVE_INTERVAL;
        // Commands wait for the backlog: a session a peer started while we were away is
        // then taken up before we send, instead of both sides starting one at once
        // (each would replace the other's, and the next message would not decrypt).
        let mut drained = !self.receive;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Stop::Shutdown,
                _ = tokio::time::sleep_until(next_ping) => {
                    if conn.last_heard().elapsed() > KEEPALIVE_INTERVAL * 2 {
                        return Stop::Lost(SdkError::ConnectionLost("server silent".into()));
                    }
                    if let Err(e) = conn.ping().await {
                        return Stop::Lost(e);
                    }
                    next_ping = tokio::time::Instant::now() + KEEPALIVE_INTERVAL;
                }
                command = commands.recv(), if drained => match command {
                    None => return Stop::Shutdown,
                    Some(Command::Send { message, reply }) => {
                        let result = self.send_content(&mut conn, message).await;
                        if let Some(stop) = answer(reply, result) {
                            return stop;
                        }
                    }
                    Some(Command::Request { body, reply }) => {
                        let result = conn.request(body).await;
                        if let Some(stop) = answer(reply, result) {
                            return stop;
                        }
                    }
                    Some(Command::Business { who, reply }) => {
                        let result = self.business(&mut conn, who).await;
                        if let Some(stop) = answer(reply, result) {
                            return stop;
                        }
                    }
                    Some(Command::DeleteAccount { reply }) => {
                        let result = conn
                            .request(ClientBody::DeleteAccount(DeleteAccount {}))
                            .await
                            .map(|_| ());
                        let deleted = result.is_ok();
                        let _ = reply.send(result);
                        if deleted {
                            return Stop::Shutdown;
                        }
                    }
                },
                push = conn.next_push(), if self.receive => {
                    let body = match push {
                        Ok(body) => body,
                        Err(e) => return Stop::Lost(e),
                    };
                    drained |= matches!(body, ServerBody::Drained(_));
                    match self.on_push(&mut conn, body).await {
                        Ok(true) => {}
                        Ok(false) => return Stop::Halted,
                        Err(e) => return Stop::Lost(e),
                    }
                }
            }
        }
    }

    async fn business(&self, conn: &mut Connection, who: Peer) -> Result<BusinessInfo, SdkError> {
        let (account, handle) = match who {
            Peer::Account(account) => (account, None),
            Peer::Handle(handle) => (send::resolve(conn, &handle).await?, Some(handle)),
        };
        self.fetch_business(conn, account, handle).await
    }

    pub(crate) async fn emit(&self, event: Event) {
        // The application may have stopped listening; that is its choice.
        let _ = self.events.send(event).await;
    }

    /// Runs a store operation off the async workers.
    pub(crate) async fn stored<T: Send + 'static>(
        &self,
        op: impl FnOnce(&ClientStore) -> Result<T, SdkError> + Send + 'static,
    ) -> Result<T, SdkError> {
        blocking(&self.store, op).await
    }
}

/// Hands a result to the waiting caller; a broken connection also ends this one.
fn answer<T>(
    reply: oneshot::Sender<Result<T, SdkError>>,
    result: Result<T, SdkError>,
) -> Option<Stop> {
    let lost = match &result {
        Err(SdkError::ConnectionLost(why)) => Some(why.clone()),
        _ => None,
    };
    let _ = reply.send(result);
    lost.map(|why| Stop::Lost(SdkError::ConnectionLost(why)))
}

/// Runs `op` on `store` in a blocking thread.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<ClientStore>,
    op: impl FnOnce(&ClientStore) -> Result<T, SdkError> + Send + 'static,
) -> Result<T, SdkError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || op(&store))
        .await
        .map_err(|e| SdkError::Storage(format!("storage task failed: {e}")))?
}

/// Exponential backoff with ±50 % jitter, so many clients do not reconnect in lockstep.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX);
    let jitter = 0.5 + f64::from(OsRng.next_u32()) / f64::from(u32::MAX);
    base.mul_f64(jitter).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= BACKOFF_MIN.mul_f64(1.5));
        assert!(backoff(1) >= BACKOFF_MIN.mul_f64(0.5));
        assert!(backoff(4) >= BACKOFF_MIN * 4);
        assert!(backoff(100) <= BACKOFF_MAX);
    }
}
