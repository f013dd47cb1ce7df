//! Presence across nodes over NATS core (`--bus nats://…`): no JetStream, no state in
//! NATS, so losing NATS never loses an envelope.
//!
//! Each node keeps its own connections in a [`LocalPresence`] and, for every device
//! connected to it, subscribes to the device's subject ([`subjects`]): the subscription
//! *is* the presence (NATS routes a subject only to the nodes interested in it).
//!
//! * **Attach**: subscribe, confirm with a round trip that the server has the interest
//!   (a flush only puts it on the wire), then publish
//!   `Connected{node, auth time}`; only then does the connection read the store, so every
//!   commit after that read is published to a subject this node hears.
//! * **Commit**: the store tells this node of each envelope it committed; the node hands it
//!   to a local connection and publishes a wake (`seq`, and the envelope when small) on the
//!   recipient's subject. The receiving node offers it to the connection, which writes it
//!   only if it continues its last delivered seq and otherwise reads the store.
//! * **Held envelopes** (hold, then persist; `held.rs`): the store carries an envelope it
//!   decided without a queue row as a wake with a reply subject; the recipient's node
//!   answers there when the device acks it, or asks for its commit when the device's
//!   queue is read or the device goes (NATS itself answers "no responders" when no node
//!   holds the device). A device connected to this very node is held here the same way.
//! * **Displacement**: a node holding a device that hears another node's `Connected`
//!   closes its connection (4002) if the other is newer by `(auth time, node id)`, and
//!   otherwise answers with its own `Connected`, so the older one closes: two racing
//!   connections, or a node paused while its device moved, converge to one.
//! * **Lost hints**: after a reconnect to NATS or a slow-consumer event, every local
//!   device reads its queue again and is announced again; while NATS is unreachable, a
//!   safety poll does the same every [`SAFETY_POLL`]; a node whose outgoing queue
//!   overflowed asks every node to do it ([`Subjects::resync_all`]).
//!
//! This is best effort, as in Signal: two connections of one device may both live for
//! about one NATS round trip; the client drops what it already has by seq.

mod held;
mod link;
mod message;
pub mod subjects;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parley_protocol::ids::{DeviceAddress, Seq};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::held::{HeldHere, ReplyTo, Waiting};
use self::message::DeviceMessage;
pub use self::subjects::Subjects;
use super::attachment::lock;
use super::{Attachment, LinkFuture, LocalPresence, OpenRendezvous, Presence, PresenceFuture};
use crate::metrics::BusMetrics;
use crate::store::{CommitListener, HeldWord, StoredEnvelope};
use crate::topology::{ClusterKey, SecretUrl};

/// While NATS is unreachable, how often every local device reads its queue again (no
/// wake can reach it meanwhile).
pub const SAFETY_POLL: Duration = Duration::from_secs(1);

/// Longest an attach waits for NATS to confirm its subscription before the connection
/// reads the store anyway (then the safety poll or the next resync covers it).
pub const SUBSCRIBE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of the bus.
#[derive(Clone, Debug)]
pub struct BusOptions {
    /// Messages published and not yet handed to the NATS client; a full queue drops the
    /// wake and has every node resync.
    pub outgoing_capacity: usize,
    /// Messages the NATS client buffers per device subscription before it reports a slow
    /// consumer (and this node resyncs).
    pub subscription_capacity: usize,
    /// Held envelopes one local device may have awaiting its ack (`held.rs`); past it,
    /// their senders' nodes are asked to commit them at once.
    pub held_per_device: usize,
}

impl Default for BusOptions {
    fn default() -> BusOptions {
        BusOptions {
            outgoing_capacity: 65_536,
            subscription_capacity: 1_024,
            held_per_device: held::HELD_PER_DEVICE_MAX,
        }
    }
}

/// The bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS URL could not be used (its password is never shown).
    #[error("bus {url}: {message}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Presence across the nodes of a cluster. See the module documentation.
#[derive(Debug)]
pub struct NatsPresence {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    node: String,
    local: LocalPresence,
    client: async_nats::Client,
    subjects: Subjects,
    outgoing: mpsc::Sender<Outgoing>,
    /// Where the words about envelopes this node holds come (`held.rs`).
    held_inbox: String,
    /// The senders' end of held envelopes.
    waiting: Mutex<Waiting>,
    /// The recipients' end of held envelopes.
    held_here: Mutex<HeldHere>,
    /// A wake was dropped: every node must resync.
    overflowed: AtomicBool,
    subscriptions: Mutex<HashMap<DeviceAddress, DeviceSubscription>>,
    metrics: Arc<BusMetrics>,
    stop: CancellationToken,
}

/// A message to publish: subject, reply subject, payload.
type Outgoing = (String, Option<String>, Bytes);

/// This node's subscription to one device's subject, shared by its connections (a new
/// one attaches before the old one detaches).
#[derive(Debug)]
struct DeviceSubscription {
    holders: usize,
    task: Option<tokio::task::AbortHandle>,
}

impl NatsPresence {
    /// Connects to NATS at `url` as node `node`; keeps reconnecting in the background if
    /// NATS is not reachable yet (the node serves meanwhile, with the safety poll).
    pub async fn connect(
        url: &SecretUrl,
        key: ClusterKey,
        node: String,
        options: BusOptions,
        metrics: Arc<BusMetrics>,
    ) -> Result<NatsPresence, BusError> {
        let fail = |message: String| BusError::Connect {
            url: url.redacted(),
            message,
        };
        let servers: Vec<async_nats::ServerAddr> = url
            .expose()
            .split(',')
            .map(|s| s.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| fail(format!("not a NATS server address: {e}")))?;
        let (events_tx, events) = mpsc::channel(64);
        let mut options_with_auth = async_nats::ConnectOptions::new();
        // The client takes credentials from its options, not from the URLs: `user:password@`
        // or a token (`token@`) of the first URL that has them.
        if let Some(server) = servers.iter().find(|s| s.has_user_pass()) {
            match (server.username(), server.password()) {
                (Some(user), Some(password)) => {
                    options_with_auth =
                        options_with_auth.user_and_password(user.to_owned(), password.to_owned());
                }
                (Some(token), None) => {
                    options_with_auth = options_with_auth.token(token.to_owned())
                }
                _ => {}
            }
        }
        let client = options_with_auth
            .name(format!("parley-server {node}"))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .subscription_capacity(options.subscription_capacity.max(1))
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    // Events only trigger resyncs; a full queue already holds one.
                    let _ = events_tx.try_send(event);
                }
            })
            .connect(servers)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (outgoing, to_publish) = mpsc::channel(options.outgoing_capacity.max(1));
        let stop = CancellationToken::new();
        let subjects = Subjects::new(key);
        let held_inbox = subjects.held_inbox(&crate::topology::random_node_id());
        let inner = Arc::new(Inner {
            node,
            local: LocalPresence::default(),
            client,
            subjects,
            outgoing,
            held_inbox,
            waiting: Mutex::default(),
            held_here: Mutex::new(HeldHere::new(options.held_per_device)),
            overflowed: AtomicBool::new(false),
            subscriptions: Mutex::default(),
            metrics,
            stop: stop.clone(),
        });
        tokio::spawn(publish(inner.clone(), to_publish));
        tokio::spawn(watch_connection(inner.clone(), events));
        let control = inner
            .client
            .subscribe(inner.subjects.resync_all())
            .await
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        tokio::spawn(hear_resync_requests(inner.clone(), control));
        let words = inner
            .client
            .subscribe(format!("{}.*", inner.held_inbox))
            .await
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        tokio::spawn(hear_held_words(inner.clone(), words));
        Ok(NatsPresence { inner, stop })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Whether the NATS connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl Drop for NatsPresence {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Inner {
    /// Waits (at most [`SUBSCRIBE_CONFIRM_TIMEOUT`]) until the NATS server has taken
    /// every subscription this node made before: a flush only puts them on the wire,
    /// while the server answers a request on the same connection only after what came
    /// before it, here "no responders" on [`Subjects::probe`]. False if no such answer
    /// came in time.
    async fn interest_confirmed(&self) -> bool {
        let probe = self.client.request(self.subjects.probe(), Bytes::new());
        matches!(
            tokio::time::timeout(SUBSCRIBE_CONFIRM_TIMEOUT, probe).await,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders
        )
    }

    /// Queues a message for the bus; a full queue drops it and marks that every node
    /// must resync.
    fn publish(&self, subject: String, message: &DeviceMessage) {
        self.publish_with_reply(subject, None, message);
    }

    /// [`Inner::publish`] with a reply subject; false if the queue was full.
    fn publish_with_reply(
        &self,
        subject: String,
        reply: Option<String>,
        message: &DeviceMessage,
    ) -> bool {
        let payload = Bytes::from(message.encode());
        if self.outgoing.try_send((subject, reply, payload)).is_err() {
            self.metrics.wakes_dropped.inc();
            self.overflowed.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// Sends `word` about a held envelope to where it goes. A word lost on the way costs
    /// its sender a commit at the deadline.
    fn answer_held(&self, reply: ReplyTo, word: HeldWord) {
        match reply {
            ReplyTo::Here(tx) => {
                let _ = tx.send(word);
            }
            ReplyTo::Bus(subject) => {
                let payload = Bytes::from_static(held::encode(word));
                if self.outgoing.try_send((subject, None, payload)).is_err() {
                    self.metrics.wakes_dropped.inc();
                }
            }
        }
    }

    /// Keeps a held envelope handed to `device`'s connection until its ack or a read;
    /// past a bound, asks for its commit at once. If the device detached meanwhile (its
    /// detach released what was kept before this), what is kept now is released too:
    /// nothing else would.
    fn keep_held(&self, device: DeviceAddress, seq: Seq, reply: ReplyTo) {
        let kept = lock(&self.held_here).keep(device, seq, reply);
        if let Err(reply) = kept {
            self.answer_held(reply, HeldWord::Commit);
        }
        if self.local.get(&device).is_none() {
            self.release_held(&device);
        }
    }

    /// Asks for a commit of everything held here for `device`.
    fn release_held(&self, device: &DeviceAddress) {
        let released = lock(&self.held_here).release(device);
        for reply in released {
            self.answer_held(reply, HeldWord::Commit);
        }
    }

    fn announce(&self, device: &DeviceAddress, attachment: &Attachment) {
        self.publish(
            self.subjects.device(device),
            &DeviceMessage::Connected {
                node: self.node.clone(),
                auth_time_ms: attachment.auth_time_ms(),
            },
        );
    }

    /// Every local device reads its queue again and is announced again.
    fn resync_local(&self) {
        self.metrics.resyncs.inc();
        for (device, attachment) in self.local.all() {
            attachment.resync();
            self.announce(&device, &attachment);
        }
    }

    /// Takes a share of `device`'s subscription, subscribing if this is the first.
    async fn subscribe(self: &Arc<Self>, device: DeviceAddress) {
        {
            let mut subscriptions = lock(&self.subscriptions);
            let entry = subscriptions.entry(device).or_insert(DeviceSubscription {
                holders: 0,
                task: None,
            });
            entry.holders += 1;
            if entry.holders > 1 {
                return;
            }
        }
        let subscriber = match self.client.subscribe(self.subjects.device(&device)).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe on the bus; the safety poll covers this device");
                return;
            }
        };
        let task = tokio::spawn(hear_device(self.clone(), device, subscriber)).abort_handle();
        let mut subscriptions = lock(&self.subscriptions);
        match subscriptions.get_mut(&device) {
            // Still held: keep the subscription.
            Some(entry) if entry.holders > 0 => entry.task = Some(task),
            // Detached while subscribing.
            _ => task.abort(),
        }
    }

    /// Gives back a share of `device`'s subscription, unsubscribing after the last.
    fn unsubscribe(&self, device: &DeviceAddress) {
        let mut subscriptions = lock(&self.subscriptions);
        let Some(entry) = subscriptions.get_mut(device) else {
            return;
        };
        entry.holders = entry.holders.saturating_sub(1);
        if entry.holders == 0 {
            if let Some(task) = subscriptions.remove(device).and_then(|e| e.task) {
                // Dropping the subscriber in the task unsubscribes.
                task.abort();
            }
        }
    }

    /// Acts on a message heard on a local device's subject (`reply`: the wake of a
    /// held envelope, whose word goes there).
    fn heard(&self, device: &DeviceAddress, message: DeviceMessage, reply: Option<String>) {
        let Some(attachment) = self.local.get(device) else {
            if let Some(reply) = reply {
                self.answer_held(ReplyTo::Bus(reply), HeldWord::Commit);
            }
            return;
        };
        match message {
            DeviceMessage::Wake { seq, envelope } => {
                self.metrics.wakes_received.inc();
                match envelope.and_then(|e| e.into_stored(seq)) {
                    Some(envelope) => {
                        if let Some(reply) = reply {
                            self.keep_held(*device, Seq(seq), ReplyTo::Bus(reply));
                        }
                        attachment.offer(envelope);
                    }
                    None => {
                        if let Some(reply) = reply {
                            self.answer_held(ReplyTo::Bus(reply), HeldWord::Commit);
                        }
                        attachment.resync();
                    }
                }
            }
            DeviceMessage::Resync => attachment.resync(),
            DeviceMessage::Removed => attachment.remove(),
            DeviceMessage::PrekeysLow { remaining } => attachment.report_prekeys_low(remaining),
            DeviceMessage::Connected { node, auth_time_ms } => {
                let theirs = (auth_time_ms, node.as_str());
                let ours = (attachment.auth_time_ms(), self.node.as_str());
                if theirs > ours {
                    // The newer node may announce twice (its attach, and its answer to
                    // this node's own announcement): one connection, one displacement.
                    if !attachment.displaced.is_cancelled() {
                        self.metrics.displacements.inc();
                    }
                    attachment.displaced.cancel();
                } else if theirs < ours {
                    // The other one is older: tell it so that it closes.
                    self.announce(device, &attachment);
                }
            }
        }
    }
}

/// Hands queued messages to the NATS client, in order; after an overflow, asks every
/// node to resync.
async fn publish(inner: Arc<Inner>, mut to_publish: mpsc::Receiver<Outgoing>) {
    loop {
        let next = tokio::select! {
            () = inner.stop.cancelled() => return,
            next = to_publish.recv() => next,
        };
        let Some((subject, reply, payload)) = next else {
            return;
        };
        let published = match reply {
            Some(reply) => {
                inner
                    .client
                    .publish_with_reply(subject, reply, payload)
                    .await
            }
            None => inner.client.publish(subject, payload).await,
        };
        match published {
            Ok(()) => inner.metrics.wakes_sent.inc(),
            Err(e) => tracing::debug!(error = %e, "bus publish failed"),
        }
        if to_publish.is_empty() && inner.overflowed.swap(false, Ordering::AcqRel) {
            let _ = inner
                .client
                .publish(inner.subjects.resync_all(), Bytes::new())
                .await;
            inner.resync_local();
        }
    }
}

/// Follows the NATS connection: resync after a reconnect or a slow consumer, and poll
/// the store while disconnected.
async fn watch_connection(inner: Arc<Inner>, mut events: mpsc::Receiver<async_nats::Event>) {
    let mut disconnected = true;
    let mut poll = tokio::time::interval(SAFETY_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            _ = poll.tick(), if disconnected => {
                if !inner.local.is_empty() {
                    inner.metrics.resyncs.inc();
                    inner.local.resync_all();
                }
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to the bus");
                        inner.metrics.connected.set(1);
                        disconnected = false;
                        inner.resync_local();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from the bus; polling the store every {SAFETY_POLL:?} until it returns");
                        inner.metrics.connected.set(0);
                        disconnected = true;
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        tracing::warn!("the bus dropped messages for this node (slow consumer); resyncing");
                        inner.metrics.slow_consumer_events.inc();
                        inner.resync_local();
                    }
                    other => tracing::info!(event = %other, "bus event"),
                }
            }
        }
    }
}

/// Resyncs every local device when another node asks (it dropped wakes).
async fn hear_resync_requests(inner: Arc<Inner>, mut control: async_nats::Subscriber) {
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            message = control.next() => {
                if message.is_none() {
                    return;
                }
                inner.resync_local();
            }
        }
    }
}

/// Forwards what is heard on one device's subject to its local connection.
async fn hear_device(
    inner: Arc<Inner>,
    device: DeviceAddress,
    mut subscriber: async_nats::Subscriber,
) {
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            message = subscriber.next() => {
                let Some(message) = message else { return };
                if let Some(decoded) = DeviceMessage::decode(&message.payload) {
                    let reply = message.reply.map(|r| r.to_string());
                    inner.heard(&device, decoded, reply);
                }
            }
        }
    }
}

/// Hears the words about the envelopes this node holds, and sweeps the waiters nobody
/// waits for any more.
async fn hear_held_words(inner: Arc<Inner>, mut words: async_nats::Subscriber) {
    let mut sweep = tokio::time::interval(held::OFFLINE_FOR);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            _ = sweep.tick() => lock(&inner.waiting).sweep(std::time::Instant::now()),
            message = words.next() => {
                let Some(message) = message else { return };
                let Some(token) = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                let offline = message.status == Some(async_nats::StatusCode::NO_RESPONDERS);
                let word = match offline || message.status.is_some() {
                    true => HeldWord::Commit,
                    false => held::decode(&message.payload),
                };
                lock(&inner.waiting).heard(token, word, offline, std::time::Instant::now());
            }
        }
    }
}

impl CommitListener for NatsPresence {
    fn committed(&self, to: DeviceAddress, envelope: StoredEnvelope) {
        let wake = DeviceMessage::wake(&envelope);
        self.inner.local.committed(to, envelope);
        self.inner.publish(self.inner.subjects.device(&to), &wake);
    }

    fn can_carry(&self, to: &DeviceAddress, size: usize) -> bool {
        size <= message::WAKE_ENVELOPE_MAX_BYTES
            && (self.inner.local.get(to).is_some()
                || (self.is_connected()
                    && lock(&self.inner.waiting).may_carry(to, std::time::Instant::now())))
    }

    fn carry(
        &self,
        to: DeviceAddress,
        envelope: StoredEnvelope,
    ) -> Option<tokio::sync::oneshot::Receiver<HeldWord>> {
        if let Some(attachment) = self.inner.local.get(&to) {
            // Connected here: the word comes from this node's own ack.
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.inner.keep_held(to, envelope.seq, ReplyTo::Here(tx));
            attachment.offer(envelope);
            return Some(rx);
        }
        let (token, rx) = lock(&self.inner.waiting).wait(to);
        let reply = format!("{}.{token}", self.inner.held_inbox);
        let wake = DeviceMessage::wake(&envelope);
        self.inner
            .publish_with_reply(self.inner.subjects.device(&to), Some(reply), &wake)
            .then_some(rx)
    }

    fn acked(&self, device: &DeviceAddress, through: Seq) {
        let acked = lock(&self.inner.held_here).acked(device, through);
        for reply in acked {
            self.inner.answer_held(reply, HeldWord::Acked);
        }
    }

    fn release_held(&self, device: &DeviceAddress) {
        self.inner.release_held(device);
    }
}

impl Presence for NatsPresence {
    fn attach(&self, device: DeviceAddress, auth_time_ms: u64) -> PresenceFuture<'_> {
        Box::pin(async move {
            let (attachment, _) = self.inner.local.register(device, auth_time_ms);
            self.inner.subscribe(device).await;
            if !self.inner.interest_confirmed().await {
                tracing::debug!("the bus did not confirm a subscription in time");
            }
            self.inner.announce(&device, &attachment);
            attachment
        })
    }

    fn detach(&self, device: &DeviceAddress, attachment: &Attachment) {
        self.inner.local.unregister(device, attachment);
        self.inner.unsubscribe(device);
        // What this connection was handed and did not ack must be committed.
        self.inner.release_held(device);
    }

    fn wake(&self, device: &DeviceAddress) {
        self.inner.local.wake(device);
        self.inner
            .publish(self.inner.subjects.device(device), &DeviceMessage::Resync);
    }

    fn prekeys_low(&self, device: &DeviceAddress, remaining: u32) {
        self.inner.local.prekeys_low(device, remaining);
        self.inner.publish(
            self.inner.subjects.device(device),
            &DeviceMessage::PrekeysLow { remaining },
        );
    }

    fn open_link(
        &self,
        id: parley_protocol::devices::link::RendezvousId,
    ) -> LinkFuture<'_, OpenRendezvous> {
        Box::pin(link::open(&self.inner, id))
    }

    fn join_link(
        &self,
        id: parley_protocol::devices::link::RendezvousId,
        public: parley_protocol::identity::X25519Public,
        mac: parley_protocol::devices::link::JoinMac,
        wait: Duration,
    ) -> LinkFuture<'_, tokio::sync::oneshot::Receiver<Vec<u8>>> {
        Box::pin(std::future::ready(link::join(
            &self.inner,
            id,
            public,
            mac,
            wait,
        )))
    }

    fn remove(&self, device: &DeviceAddress) {
        self.inner.local.remove(device);
        self.inner
            .publish(self.inner.subjects.device(device), &DeviceMessage::Removed);
    }

    fn consent_changed(
        &self,
        device: &DeviceAddress,
        business: parley_protocol::ids::AccountId,
        categories: parley_protocol::business::CategorySet,
        revoked: bool,
    ) {
        // The revoking connection is this node's: the device is connected here.
        self.inner
            .local
            .consent_changed(device, business, categories, revoked);
    }

    fn len(&self) -> usize {
        self.inner.local.len()
    }

    fn unreachable(&self) -> Option<&'static str> {
        (!self.is_connected()).then_some("the bus (NATS) is unreachable")
    }
}
