//! The application's handle on the engine.

use std::sync::Arc;

use parley_protocol::e2e::safety_number::SafetyNumber;
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, Handle, MessageId};
use rand_core::OsRng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::connection::Connection;
use crate::engine::{blocking, Command, Engine};
use crate::error::SdkError;
use crate::events::Event;
use crate::keys::NewIdentity;
use crate::store::{ClientStore, Contact, Profile};

/// Capacity of the command and event queues. A slow application slows the engine down
/// (messages wait on the server) rather than growing memory.
pub const QUEUE_CAPACITY: usize = 256;

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `ws://host:port` of the server.
    pub server_url: String,
    /// Test hook: the engine stops dead after storing a received message and before
    /// acknowledging it, as if the process were killed at the worst moment.
    #[doc(hidden)]
    pub halt_before_ack: bool,
}

impl ClientConfig {
    /// A configuration for `server_url`.
    pub fn new(server_url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            server_url: server_url.into(),
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
}

impl Client {
    /// Creates an identity, registers it (with `handle`, if any) and stores it.
    pub async fn register(
        config: &ClientConfig,
        store: Arc<ClientStore>,
        handle: Option<Handle>,
    ) -> Result<Profile, SdkError> {
        if let Some(existing) = blocking(&store, |s| s.identity()).await? {
            let name = existing
                .profile
                .handle
                .map(|h| h.to_string())
                .unwrap_or_else(|| existing.profile.account.to_string());
            return Err(SdkError::InvalidInput(format!(
                "this profile is already registered as {name}"
            )));
        }
        let new = NewIdentity::generate(&mut OsRng);
        let mut conn = Connection::open(&config.server_url).await?;
        let address = conn
            .register(|hello| new.register_body(hello, handle.as_ref()))
            .await?;
        let profile = Profile {
            account: address.account,
            handle,
        };
        let saved = profile.clone();
        blocking(&store, move |s| {
            s.save_identity(
                new.identity.to_secret_bytes().as_slice(),
                &saved,
                &new.records,
            )
        })
        .await?;
        Ok(profile)
    }

    /// Connects and logs in with the stored identity, then runs the engine in the
    /// background. Fails at once if the server cannot be reached.
    pub async fn start(config: ClientConfig, store: Arc<ClientStore>) -> Result<Client, SdkError> {
        let stored = blocking(&store, |s| s.identity())
            .await?
            .ok_or(SdkError::NotRegistered)?;
        let identity = identity_from(&stored.secret)?;
        let profile = stored.profile;
        let me = DeviceAddress {
            account: profile.account,
            device: DeviceId::PRIMARY,
        };
        let (events_tx, events) = mpsc::channel(QUEUE_CAPACITY);
        let (commands, commands_rx) = mpsc::channel(QUEUE_CAPACITY);
        let engine = Engine {
            store: store.clone(),
            identity,
            me,
            my_handle: profile.handle.clone(),
            url: config.server_url.clone(),
            events: events_tx,
            halt_before_ack: config.halt_before_ack,
        };
        let conn = engine.connect().await?;
        let task = tokio::spawn(engine.run(conn, commands_rx));
        Ok(Client {
            commands,
            events,
            store,
            profile,
            task,
        })
    }

    /// Encrypts and sends `text` to `to`; returns once the server stored it.
    pub async fn send_text(&self, to: &Handle, text: &str) -> Result<MessageId, SdkError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::SendText {
                to: to.clone(),
                text: text.to_owned(),
                reply,
            })
            .await
            .map_err(|_| SdkError::Stopped)?;
        answer.await.map_err(|_| SdkError::Stopped)?
    }

    /// Deletes the account on the server, then forgets the local identity. The handle
    /// becomes free; contacts who write to it later see an identity change.
    pub async fn delete_account(self) -> Result<(), SdkError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::DeleteAccount { reply })
            .await
            .map_err(|_| SdkError::Stopped)?;
        answer.await.map_err(|_| SdkError::Stopped)??;
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

    /// The local profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The local store.
    pub fn store(&self) -> &Arc<ClientStore> {
        &self.store
    }

    /// Stops the engine and waits for it.
    pub async fn stop(self) {
        drop(self.commands);
        drop(self.events);
        let _ = self.task.await;
    }
}

/// The safety number between the local identity and a contact's.
pub fn safety_number(store: &ClientStore, contact: &Contact) -> Result<SafetyNumber, SdkError> {
    let stored = store.identity()?.ok_or(SdkError::NotRegistered)?;
    let identity = identity_from(&stored.secret)?;
    Ok(SafetyNumber::new(&identity.public(), &contact.identity))
}

fn identity_from(secret: &[u8]) -> Result<IdentityKeyPair, SdkError> {
    let bytes: &[u8; 64] = secret
        .try_into()
        .map_err(|_| SdkError::Storage("corrupt identity".into()))?;
    Ok(IdentityKeyPair::from_secret_bytes(bytes))
}
