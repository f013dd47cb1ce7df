//! The application's handle on the engine.

use std::sync::Arc;
use std::time::Duration;

use parley_protocol::business::AuthorityKey;
use parley_protocol::e2e::content::{Content, Text, MAX_TEXT_BYTES};
use parley_protocol::e2e::safety_number::SafetyNumber;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, MessageId};
use rand_core::OsRng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::ServerBody;

use crate::business_info::BusinessInfo;
use crate::connection::{self, Connection};
use crate::engine::{blocking, Command, Engine, Outgoing, Peer};
use crate::error::SdkError;
use crate::events::Event;
use crate::failover::{Failover, ServerList};
use crate::keys::{generate_identity, register_body};
use crate::store::{ClientStore, Contact, Profile};
use crate::transport::Transport;

/// Capacity of the command and event queues. A slow application slows the engine down
/// (messages wait on the server) rather than growing memory.
pub const QUEUE_CAPACITY: usize = 256;

/// Refuses a text that is empty (or only spaces) or longer than [`MAX_TEXT_BYTES`], in
/// one sentence naming the limit; [`Client::send_content`] checks every text with it, and
/// an application may call it before connecting.
pub fn check_text(body: &str) -> Result<(), SdkError> {
    if body.trim().is_empty() {
        return Err(SdkError::InvalidInput(
            "the message is empty; nothing was sent".into(),
        ));
    }
    if body.len() > MAX_TEXT_BYTES {
        return Err(SdkError::InvalidInput(format!(
            "the message is {} bytes long and the limit is {MAX_TEXT_BYTES} bytes; nothing was \
             sent",
            body.len()
        )));
    }
    Ok(())
}

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The servers of the deployment (`ws://host:port` or `wss://host:port`); the
    /// engine fails over from one to the next (see [`crate::failover`]).
    pub servers: ServerList,
    /// When to pause between servers and when to tell waiting callers it gave up.
    pub failover: Failover,
    /// Certificates trusted for a `wss://` server (default: the web PKI roots).
    pub tls: crate::tls::TlsTrust,
    /// The operator's verification authority key, when known out of band; `None` pins
    /// the key the server presents on first contact.
    pub authority: Option<AuthorityKey>,
    /// Take deliveries (the default). A short-lived control command (consent, block,
    /// report...) turns this off: what is queued stays on the relay for the next
    /// receiving session, so a revocation purges it there instead of it being shown.
    pub receive: bool,
    /// Send delivered receipts for the texts and cards this client stores, and read
    /// receipts when the person views a conversation ([`Client::mark_read`]; the profile
    /// may turn read receipts off, [`ClientStore::set_read_receipts`]). On by default;
    /// [`crate::bot::BusinessBot`] turns it off (a business's envelope needs a category).
    pub send_receipts: bool,
    /// Longest the engine goes on handling deliveries that keep arriving before it acks
    /// them with one cumulative ack (default [`ACK_GATHER_DEFAULT`]). Keep it well under
    /// the server's `hold_deadline` (50 ms by default): an envelope the server holds
    /// for this device and that is not acked by then is committed instead, which costs
    /// the server a write.
    pub ack_gather: Duration,
    /// Test hook: the engine stops dead after storing a received message and before
    /// acknowledging it, as if the process were killed at the worst moment.
    #[doc(hidden)]
    pub halt_before_ack: bool,
}

/// The default [`ClientConfig::ack_gather`]: under half the server's default
/// `hold_deadline`, with room left for the network.
pub const ACK_GATHER_DEFAULT: Duration = Duration::from_millis(20);

/// Most pushed frames the engine handles before it acks the deliveries among them.
pub const PUSHES_PER_ACK_MAX: usize = 64;

impl ClientConfig {
    /// A configuration for one server URL, or several as a comma-separated list
    /// (`"ws://a:7878,ws://b:7878"`). Text that is not a list of `ws://`/`wss://` URLs
    /// is kept as one URL, and connecting to it fails with an error that names it; use
    /// [`ClientConfig::with_servers`] with a parsed [`ServerList`] to refuse it earlier.
    pub fn new(server_url: impl Into<String>) -> ClientConfig {
        ClientConfig::with_servers(ServerList::lenient(server_url.into()))
    }

    /// A configuration for the servers of one deployment, tried in this order first.
    pub fn with_servers(servers: ServerList) -> ClientConfig {
        ClientConfig {
            servers,
            failover: Failover::default(),
            tls: crate::tls::TlsTrust::default(),
            authority: None,
            receive: true,
            send_receipts: true,
            ack_gather: ACK_GATHER_DEFAULT,
            halt_before_ack: false,
        }
    }
}

/// A running client: send with [`Client::send_text`], receive with [`Client::next_event`].
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    store: Arc<ClientStore>,
    profile: Profile,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Client {
    /// Creates an identity, registers it (with `handle`, if any) and stores it.
    pub async fn register(
        config: &ClientConfig,
        store: Arc<ClientStore>,
        handle: Option<Handle>,
    ) -> Result<Profile, SdkError> {
        if store.is_read_only() {
            return Err(SdkError::ProfileInUse);
        }
        let existing = blocking(&store, |s| s.identity()).await?;
        if let Some(existing) = existing.as_ref().filter(|e| !e.pending) {
            let name = existing
                .profile
                .handle
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_else(|| existing.profile.account.to_string());
            return Err(SdkError::InvalidInput(format!(
                "this profile is already registered as {name}"
            )));
        }
        // Generate and store first (or reuse what an interrupted attempt stored), so a
        // lost reply never leaves an account on the server whose key nobody has.
        let identity = match existing {
            Some(pending) => identity_from(&pending.secret)?,
            None => {
                let (identity, records) = generate_identity(&mut OsRng);
                let profile = Profile {
                    account: identity.account_id(),
                    handle: handle.clone(),
                    device: DeviceId::PRIMARY,
                };
                let secret = identity.to_secret_bytes();
                blocking(&store, move |s| {
                    s.save_identity(secret.as_slice(), &profile, &records)
                })
                .await?;
                identity
            }
        };
        let records = blocking(&store, |s| s.prekeys()).await?;
        let (_, opened) = connection::open_first(&config.servers, &config.tls).await?;
        let mut body = None;
        let registered = Connection::register(opened, |hello| {
            let built = register_body(&identity, &records, hello, handle.as_ref());
            let register = built.as_ref().ok().cloned();
            body = Some(built);
            register
        })
        .await
        .map(|conn| conn.address());
        if let Some(Err(e)) = body {
            return Err(e);
        }
        let address = match registered {
            Ok(address) => address,
            // An earlier attempt got through but its reply was lost: prove it is ours.
            Err(SdkError::Refused {
                code: parley_protocol::wire::ErrorCode::AccountExists,
                ..
            }) => {
                let (_, opened) = connection::open_first(&config.servers, &config.tls).await?;
                Connection::login(opened, &identity, DeviceId::PRIMARY)
                    .await?
                    .address()
            }
            Err(e) => return Err(e),
        };
        let confirmed = handle.clone();
        blocking(&store, move |s| s.registered(confirmed.as_ref())).await?;
        Ok(Profile {
            account: address.account,
            handle,
            device: address.device,
        })
    }

    /// Connects and logs in with the stored identity, then runs the engine in the
    /// background. Tries each server once, in order; fails at once if none can be
    /// reached (or one refuses the login). Once running, the engine fails over on its
    /// own ([`crate::failover`]).
    pub async fn start(config: ClientConfig, store: Arc<ClientStore>) -> Result<Client, SdkError> {
        Client::start_via(config, store, Transport::Network).await
    }

    /// [`Client::start`], with the engine's connections made by `transport`.
    pub(crate) async fn start_via(
        config: ClientConfig,
        store: Arc<ClientStore>,
        transport: Transport,
    ) -> Result<Client, SdkError> {
        if store.is_read_only() {
            // A reader beside the process that holds the profile: never a second engine.
            return Err(SdkError::ProfileInUse);
        }
        let stored = blocking(&store, |s| s.identity())
            .await?
            .filter(|s| !s.pending)
            .ok_or(SdkError::NotRegistered)?;
        let identity = identity_from(&stored.secret)?;
        let profile = stored.profile;
        let me = DeviceAddress {
            account: profile.account,
            device: profile.device,
        };
        let (events_tx, events) = mpsc::channel(QUEUE_CAPACITY);
        let (commands, commands_rx) = mpsc::channel(QUEUE_CAPACITY);
        let stop = CancellationToken::new();
        let engine = Engine {
            store: store.clone(),
            identity,
            me,
            authority: config.authority,
            receive: config.receive,
            send_receipts: config.send_receipts,
            servers: config.servers.clone(),
            failover: config.failover,
            tls: config.tls.clone(),
            transport,
            events: events_tx,
            ack_gather: config.ack_gather,
            halt_before_ack: config.halt_before_ack,
            stop: stop.clone(),
        };
        let (at, conn) = engine.connect_first().await?;
        let task = tokio::spawn(engine.run(conn, at, commands_rx));
        Ok(Client {
            commands,
            events,
            store,
            profile,
            task,
            stop,
        })
    }

    /// Encrypts and sends `text` to `to`; returns once the server stored it.
    ///
    /// If the connection breaks before the server answers, the engine fails over and
    /// sends the same stored envelope (same message id) on the next connection, and this
    /// call returns that answer; if no server answers within
    /// [`Failover::give_up_after`], it returns [`SdkError::Queued`] and the message is
    /// still resent on the next connection.
    ///
    /// When `to` belonged to a contact marked verified and the server now names another
    /// account for it, nothing is sent: `SdkError::Crypto(E2eError::IdentityChanged)`
    /// (and an [`Event::IdentityChanged`]). Taking the mark off (`verified = false`, with
    /// [`ClientStore::save_contact`]) lets the next send go to the new account.
    pub async fn send_text(&self, to: &Handle, text: &str) -> Result<MessageId, SdkError> {
        self.send_content(Outgoing {
            to: Peer::Handle(to.clone()),
            content: Content::Text(Text {
                body: text.to_owned(),
                sender_handle: self.profile.handle.clone(),
                category: None,
            }),
            category: None,
            id: None,
        })
        .await
    }

    /// Encrypts and sends any content; returns once the server stored it. The wire
    /// `category` is the caller's to choose: [`crate::bot::BusinessBot`] keeps it equal
    /// to the category inside the content, which is what clients check.
    pub async fn send_content(&self, message: Outgoing) -> Result<MessageId, SdkError> {
        if let Content::Text(text) = &message.content {
            check_text(&text.body)?;
        }
        self.call(|reply| Command::Send { message, reply }).await
    }

    /// The person viewed the conversation with `peer`: its received messages are marked
    /// read and, unless this profile turned read receipts off, `peer` is sent a read
    /// receipt for them (batched). Returns the ids newly marked read. The receipts owed
    /// are kept if the connection breaks, and sent on the next one.
    pub async fn mark_read(&self, peer: &AccountId) -> Result<Vec<MessageId>, SdkError> {
        let peer = *peer;
        let read = blocking(&self.store, move |s| s.mark_read(&peer)).await?;
        if !read.is_empty() {
            self.call(|reply| Command::SendReceipts { reply }).await?;
        }
        Ok(read)
    }

    /// Sends a request frame and returns the server's reply.
    pub async fn request(&self, body: ClientBody) -> Result<ServerBody, SdkError> {
        self.call(|reply| Command::Request { body, reply }).await
    }

    /// Asks the relay for `who`'s business certificate and checks it locally against the
    /// configured or pinned authority key (pinning the presented key on first contact,
    /// and refusing a different key later with [`SdkError::AuthorityMismatch`]).
    pub async fn business_info(&self, who: Peer) -> Result<BusinessInfo, SdkError> {
        self.call(|reply| Command::Business { who, reply }).await
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SdkError>>) -> Command,
    ) -> Result<T, SdkError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| SdkError::Stopped)?;
        answer.await.map_err(|_| SdkError::Stopped)?
    }

    /// The local identity key pair (for signing consent records and card answers).
    pub(crate) async fn identity(&self) -> Result<IdentityKeyPair, SdkError> {
        let stored = blocking(&self.store, |s| s.identity())
            .await?
            .ok_or(SdkError::NotRegistered)?;
        identity_from(&stored.secret)
    }

    /// This device's address: the account and the device id the profile holds.
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            account: self.profile.account,
            device: self.profile.device,
        }
    }

    /// Deletes the account on the server, then forgets the local identity. The handle
    /// becomes free; contacts who write to it later see an identity change.
    pub async fn delete_account(self) -> Result<(), SdkError> {
        self.call(|reply| Command::DeleteAccount { reply }).await?;
        let store = self.store.clone();
        self.stop().await;
        blocking(&store, |s| s.forget_identity()).await
    }

    /// An event if one is ready, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next event; `None` once the engine has stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Takes the event stream out of the client, so that one task can wait for events
    /// while others send through the client (shared in an `Arc`). After this,
    /// [`Client::next_event`] returns `None` at once.
    pub fn take_events(&mut self) -> EventStream {
        let (_, closed) = mpsc::channel(1);
        EventStream(std::mem::replace(&mut self.events, closed))
    }

    /// The local profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The local store.
    pub fn store(&self) -> &Arc<ClientStore> {
        &self.store
    }

    /// Stops the engine and waits for it: it finishes the step in progress (a message
    /// being stored is stored and acknowledged), also while disconnected.
    pub async fn stop(self) {
        self.stop.cancel();
        drop(self.commands);
        drop(self.events);
        let _ = self.task.await;
    }
}

/// A client's events, taken out with [`Client::take_events`].
#[derive(Debug)]
pub struct EventStream(mpsc::Receiver<Event>);

impl EventStream {
    /// The next event; `None` once the engine has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

/// The safety number between the local identity and a contact's.
pub fn safety_number(store: &ClientStore, contact: &Contact) -> Result<SafetyNumber, SdkError> {
    let stored = store.identity()?.ok_or(SdkError::NotRegistered)?;
    let identity = identity_from(&stored.secret)?;
    Ok(SafetyNumber::new(&identity.public(), &contact.identity))
}

pub(crate) fn identity_from(secret: &[u8]) -> Result<IdentityKeyPair, SdkError> {
    let bytes: &[u8; 64] = secret
        .try_into()
        .map_err(|_| SdkError::Storage("corrupt identity".into()))?;
    Ok(IdentityKeyPair::from_secret_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_empty_or_over_the_limit_are_refused_naming_the_limit() {
        for empty in ["", " \n\t "] {
            let refused = check_text(empty).unwrap_err().to_string();
            assert_eq!(refused, "the message is empty; nothing was sent");
        }
        assert!(check_text(&"x".repeat(MAX_TEXT_BYTES)).is_ok());
        let refused = check_text(&"x".repeat(MAX_TEXT_BYTES + 1))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&format!("the limit is {MAX_TEXT_BYTES} bytes")),
            "{refused}"
        );
    }
}
