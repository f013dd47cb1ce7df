//! The engine: one task that owns the connection and the sessions.
//!
//! It connects and logs in, resends whatever the outbox holds, then serves commands from
//! the [`crate::Client`] handle and frames from the server until the connection breaks;
//! then it fails over: the next server at once, a pause (with jitter) after each round
//! in which every server failed ([`crate::failover`]). Commands wait while it is
//! disconnected; a message already encrypted stays in the outbox and is resent, and a
//! send interrupted by the break waits for that resend's answer ([`waiting`]). After
//! [`crate::Failover::give_up_after`] without a server, waiting callers get an error
//! and new commands fail at once, while the engine keeps trying.
//!
//! It reaches its servers through a [`Transport`]: TCP, or in its unit tests an in-memory
//! pipe to a relay the test scripts frame by frame (`tests.rs`, on
//! `crate::scripted_relay`), so that its decisions (the retry after `stale_devices`, the
//! device lists it refuses, whose `sent` and `sync` it takes) are tested without a socket.

mod business;
mod customer;
mod devices;
mod receipts;
mod receive;
mod send;
#[cfg(test)]
mod tests;
mod waiting;

use receive::Burst;
pub(crate) use send::{now_ms, resolve_request, resolved};
pub use send::{Outgoing, Peer};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::business::AuthorityKey;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, MessageId};
use parley_protocol::wire::client::{ClientBody, DeleteAccount};
use parley_protocol::wire::server::ServerBody;
use rand_core::{OsRng, RngCore};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::business_info::BusinessInfo;
use crate::connection::{self, Connection};
use crate::error::SdkError;
use crate::events::{ConnectionState, Event};
use crate::failover::{self, Failover, Rotation, ServerList};
use crate::store::ClientStore;
use crate::transport::Transport;
use waiting::WaitingSends;

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
    /// Send the receipts owed (after the person viewed a conversation).
    SendReceipts {
        /// Done: each is in the outbox (and sent, unless the connection broke).
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
    /// Whether to send receipts (see [`crate::ClientConfig::send_receipts`]).
    pub(crate) send_receipts: bool,
    pub(crate) servers: ServerList,
    pub(crate) failover: Failover,
    pub(crate) tls: crate::tls::TlsTrust,
    /// How connections reach the servers: the network, or a scripted relay in tests.
    pub(crate) transport: Transport,
    pub(crate) events: mpsc::Sender<Event>,
    /// See [`crate::ClientConfig::ack_gather`].
    pub(crate) ack_gather: Duration,
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

/// An outage: since the last connection that lasted, no server has worked.
#[derive(Debug)]
struct Outage {
    /// When waiting callers are told.
    give_up_at: Instant,
    /// Whether they were: commands then fail at once while disconnected.
    gave_up: bool,
    /// Why the last connection or attempt failed.
    why: SdkError,
}

impl Engine {
    /// Runs until the client handle is dropped. `conn` is an already logged-in
    /// connection to server number `at`.
    pub async fn run(self, conn: Connection, at: usize, mut commands: mpsc::Receiver<Command>) {
        let mut rotation = Rotation::new(self.servers.count(), at);
        let mut waiting = WaitingSends::default();
        let mut outage: Option<Outage> = None;
        let mut conn = conn;
        loop {
            let opened = Instant::now();
            let e = match self.serve(conn, &mut commands, &mut waiting).await {
                Stop::Shutdown | Stop::Halted => return,
                Stop::Lost(e) => e,
            };
            let lasted = opened.elapsed();
            tracing::debug!(
                server = self.servers.url(rotation.current()),
                error = %e,
                "connection lost"
            );
            // A refusal (say, the outbox flush answered `storage_full`) is not the
            // server's absence: stay with it.
            rotation.ended(lasted, &self.failover);
            let pause = if e.is_connection_error() {
                rotation.failed(&self.failover)
            } else {
                rotation.refused(&self.failover)
            };
            let reason = e.to_string();
            // A connection that lasted ended the last outage; one that did not is part
            // of it, and its deadline stands.
            let current = match outage.take() {
                Some(mut o) if lasted < self.failover.max_pause => {
                    o.why = e;
                    o
                }
                _ => Outage {
                    give_up_at: Instant::now() + self.failover.give_up_after,
                    gave_up: false,
                    why: e,
                },
            };
            let o = outage.insert(current);
            self.announce(pause, reason).await;
            if self
                .while_down(self.pause(pause), o, &mut commands, &mut waiting)
                .await
                .is_none()
            {
                return;
            }
            conn = match self
                .reconnect(&mut rotation, o, &mut commands, &mut waiting)
                .await
            {
                Some(c) => c,
                None => return,
            };
        }
    }

    /// Tries the servers in turn (pausing after each round in which all failed) until
    /// one logs us in; `None` once stopped.
    async fn reconnect(
        &self,
        rotation: &mut Rotation,
        outage: &mut Outage,
        commands: &mut mpsc::Receiver<Command>,
        waiting: &mut WaitingSends,
    ) -> Option<Connection> {
        loop {
            let url = self.servers.url(rotation.current());
            match self
                .while_down(self.connect(url), outage, commands, waiting)
                .await?
            {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    let pause = if e.is_connection_error() {
                        rotation.failed(&self.failover)
                    } else {
                        rotation.refused(&self.failover)
                    };
                    tracing::debug!(server = url, error = %e, "connecting failed");
                    outage.why = e;
                    if !pause.is_zero() {
                        self.announce(pause, outage.why.to_string()).await;
                        self.while_down(self.pause(pause), outage, commands, waiting)
                            .await?;
                    }
                }
            }
        }
    }

    /// Runs `step` while disconnected: stops with the engine (`None`), tells waiting
    /// callers at the outage's deadline, and from then on answers new commands at once
    /// with the error.
    async fn while_down<T>(
        &self,
        step: impl Future<Output = T>,
        outage: &mut Outage,
        commands: &mut mpsc::Receiver<Command>,
        waiting: &mut WaitingSends,
    ) -> Option<T> {
        tokio::pin!(step);
        loop {
            if outage.gave_up {
                // Also whatever a short-lived connection left waiting since.
                self.give_up(outage, waiting);
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                done = &mut step => return Some(done),
                _ = tokio::time::sleep_until(outage.give_up_at), if !outage.gave_up => {
                    outage.gave_up = true;
                    tracing::debug!(error = %outage.why, "no server answered in time");
                    self.emit(Event::Connection(ConnectionState::Unreachable {
                        reason: outage.why.to_string(),
                    }))
                    .await;
                }
                command = commands.recv(), if outage.gave_up => match command {
                    None => return None,
                    Some(command) => self.refuse(command, &outage.why),
                },
            }
        }
    }

    /// Tells the callers waiting through the outage that it lasted too long.
    fn give_up(&self, outage: &Outage, waiting: &mut WaitingSends) {
        let reason = outage.why.to_string();
        waiting.give_up(&reason, || self.unreachable(&outage.why));
    }

    /// Answers a command that arrived during an outage past its deadline.
    fn refuse(&self, command: Command, why: &SdkError) {
        // The caller may have stopped waiting; that is its choice.
        let error = self.unreachable(why);
        match command {
            Command::Send { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Request { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Business { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::DeleteAccount { reply } | Command::SendReceipts { reply } => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// "No server answers", naming them all.
    fn unreachable(&self, why: &SdkError) -> SdkError {
        failover::unreachable(&self.servers, why)
    }

    /// Tells the application it is disconnected, and when the next attempt comes.
    async fn announce(&self, pause: Duration, reason: String) {
        self.emit(Event::Connection(ConnectionState::Reconnecting {
            in_ms: u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            reason,
        }))
        .await;
    }

    /// Sleeps `pause` less a random share of up to half (see [`Failover::jitter`]).
    async fn pause(&self, pause: Duration) {
        tokio::time::sleep(Failover::jitter(pause, OsRng.next_u32())).await;
    }

    /// Opens a connection to `url` and logs in.
    pub async fn connect(&self, url: &str) -> Result<Connection, SdkError> {
        let opened = connection::open_via(&self.transport, url, &self.tls).await?;
        Connection::login(opened, &self.identity, self.me.device).await
    }

    /// Connects to the first server that lets us in, trying each once in order; fails
    /// at once on a refusal. Returns the server's index too.
    pub async fn connect_first(&self) -> Result<(usize, Connection), SdkError> {
        let mut last = None;
        for (index, url) in self.servers.urls().iter().enumerate() {
            match self.connect(url).await {
                Ok(conn) => return Ok((index, conn)),
                Err(e) if e.is_connection_error() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(match last {
            Some(last) => failover::unreachable(&self.servers, &last),
            None => SdkError::InvalidInput("no server URL given".into()),
        })
    }

    async fn serve(
        &self,
        mut conn: Connection,
        commands: &mut mpsc::Receiver<Command>,
        waiting: &mut WaitingSends,
    ) -> Stop {
        self.emit(Event::Connection(ConnectionState::Connected))
            .await;
        if let Err(e) = self.flush_outbox(&mut conn, waiting).await {
            return Stop::Lost(e);
        }
        // Without deliveries there is no backlog to wait for: receipts owed from an
        // earlier run go now (else once the backlog is in).
        if !self.receive {
            if let Err(e) = self.flush_receipts(&mut conn, waiting).await {
                return Stop::Lost(e);
            }
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
                // A send the last connection interrupted goes first.
                command = next_command(waiting, commands), if drained => match command {
                    None => return Stop::Shutdown,
                    Some(Command::Send { message, reply }) => {
                        if let Err(e) = self.serve_send(&mut conn, message, reply, waiting).await {
                            return Stop::Lost(e);
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
                    Some(Command::SendReceipts { reply }) => {
                        let result = self.flush_receipts(&mut conn, waiting).await;
                        if let Some(stop) = answer(reply, result) {
                            return stop;
                        }
                    }
                },
                push = conn.next_push(), if self.receive => {
                    let body = match push {
                        Ok(body) => body,
                        Err(e) => return Stop::Lost(e),
                    };
                    match self.on_pushes(&mut conn, body).await {
                        Ok(Burst::Handled { drained: now }) => drained |= now,
                        Ok(Burst::Halted) => return Stop::Halted,
                        Err(e) => return Stop::Lost(e),
                    }
                    // Delivered receipts for the backlog go in batches once it is in,
                    // then one per message as messages arrive.
                    if drained {
                        if let Err(e) = self.flush_receipts(&mut conn, waiting).await {
                            return Stop::Lost(e);
                        }
                    }
                }
            }
        }
    }

    async fn business(&self, conn: &mut Connection, who: Peer) -> Result<BusinessInfo, SdkError> {
        let (account, handle) = match who {
            Peer::Account(account) => (account, None),
            Peer::Handle(handle) => (self.resolve_handle(conn, &handle).await?, Some(handle)),
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

/// The send the last connection interrupted, if any, else the next command (cancel-safe:
/// the first is ready at once, and `recv` loses nothing when dropped).
async fn next_command(
    waiting: &mut WaitingSends,
    commands: &mut mpsc::Receiver<Command>,
) -> Option<Command> {
    match waiting.take_unstored() {
        Some(command) => Some(command),
        None => commands.recv().await,
    }
}
