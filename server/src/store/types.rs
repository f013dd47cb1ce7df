//! Values that cross the [`super::Store`] interface.

use std::sync::Arc;

use parley_protocol::business::Category;
use parley_protocol::identity::IdentityPublic;
use parley_protocol::ids::{DeviceAddress, Handle, MessageId, Seq};
use parley_protocol::prekeys::{OneTimePrekey, PrekeyBundle, SignedKemPrekey, SignedPrekey};

use super::policy::SendPolicy;
use crate::clock::Clock;
use crate::metrics::StoreMetrics;

/// A verified registration.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Public identity (signatures already verified).
    pub identity: IdentityPublic,
    /// Optional unique handle.
    pub handle: Option<Handle>,
    /// First signed prekey.
    pub signed_prekey: SignedPrekey,
    /// First KEM prekey.
    pub kem_prekey: Option<SignedKemPrekey>,
    /// Initial one-time prekeys.
    pub one_time_prekeys: Vec<OneTimePrekey>,
    /// Creation time, ms since the epoch.
    pub now_ms: u64,
}

/// Result of [`super::Store::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Created, with this device and this many one-time prekeys.
    Created {
        /// The new account's first device.
        address: DeviceAddress,
        /// One-time prekeys stored.
        one_time_prekeys: u32,
    },
    /// The identity key is already registered.
    AccountExists,
    /// Another account holds the handle.
    HandleTaken,
    /// The handle is confusable with a verified business's name.
    NameReserved,
}

/// What authentication needs about a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthRecord {
    /// One-time prekeys left on the server.
    pub one_time_prekeys: u32,
}

/// New prekeys for a device (signatures already verified).
#[derive(Clone, Debug)]
pub struct PrekeyUpload {
    /// Replacement signed prekey.
    pub signed_prekey: Option<SignedPrekey>,
    /// Replacement KEM prekey.
    pub kem_prekey: Option<SignedKemPrekey>,
    /// One-time prekeys to add.
    pub one_time_prekeys: Vec<OneTimePrekey>,
    /// Most one-time prekeys the device may hold afterwards.
    pub max_one_time_prekeys: u32,
}

/// Result of [`super::Store::upload_prekeys`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Stored; the device now holds this many one-time prekeys.
    Stored {
        /// One-time prekeys held.
        one_time_prekeys: u32,
    },
    /// The upload would exceed the per-device cap; nothing was stored.
    TooMany,
    /// The device does not exist.
    UnknownDevice,
}

/// Result of [`super::Store::take_bundle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleOutcome {
    /// A bundle, and the one-time prekeys left after this one was taken.
    Found {
        /// The bundle.
        bundle: PrekeyBundle,
        /// One-time prekeys left.
        remaining: u32,
    },
    /// No such device.
    NotFound,
}

/// Told about each envelope right after its commit, so an online recipient gets it
/// without reading the store back (see `crate::presence`).
///
/// Called after the commit and before the sender's `accepted` is answered, in the
/// writer's commit order, so for one recipient in `seq` order: `SqliteStore` calls it on
/// a tokio worker (its answering task) when it runs on a multi-thread runtime, else on
/// its writer thread; `PostgresStore` on the task of the writer lane that committed. A
/// store with several writers (PostgreSQL's lanes, and every node of a cluster) keeps
/// that order per writer only: one recipient's envelopes committed by two writers may
/// be heard out of `seq` order, or not at all on this node. So a listener keeps its own
/// order and takes a gap as "read the store" (`crate::presence` does). Must be quick and
/// never block.
///
/// Holding (ADR 0005): the embedded store calls `committed` for an envelope it holds
/// when it decides it; the clustered store instead [`CommitListener::carry`]s it, in the
/// lane's order, and tells nobody again when it commits it later.
pub trait CommitListener: Send + Sync + std::fmt::Debug {
    /// `envelope` was durably queued for `to` (or, held on the embedded store, decided
    /// for `to`).
    fn committed(&self, to: DeviceAddress, envelope: StoredEnvelope);

    /// Whether a connection of `to` in this process would take a hand-off now, so an
    /// envelope for it may be held instead of queued (`--hold-deadline`). Quick, from the
    /// writer thread; `false` unless the listener knows.
    fn connected_here(&self, _to: &DeviceAddress) -> bool {
        false
    }

    /// Cluster holding (ADR 0005 §3): whether an envelope of `size` bytes for `to` may
    /// be decided without its queue row and carried to the recipient's node instead.
    /// Quick; `false` unless the listener can carry it.
    fn can_carry(&self, _to: &DeviceAddress, _size: usize) -> bool {
        false
    }

    /// Carries a held envelope (decided, not queued) to the node holding `to`; the
    /// answer is that node's word about it. `None` (or a receiver that closes) when it
    /// cannot be carried: the caller commits it.
    fn carry(
        &self,
        _to: DeviceAddress,
        _envelope: StoredEnvelope,
    ) -> Option<tokio::sync::oneshot::Receiver<HeldWord>> {
        None
    }

    /// `device` acknowledged everything through `through`: tell the senders' nodes of
    /// what was carried to it and is now on its disk.
    fn acked(&self, _device: &DeviceAddress, _through: Seq) {}

    /// A read of `device`'s queue is about to start: ask the senders' nodes to commit
    /// what was carried to it and not acknowledged, so that the read finds it.
    fn release_held(&self, _device: &DeviceAddress) {}
}

/// What the recipient's node says of an envelope carried to it while held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldWord {
    /// The device acknowledged it: it is on the device's disk.
    Acked,
    /// It was not (or no longer is) held there: the sender's node must commit it.
    Commit,
}

/// An envelope to queue.
#[derive(Clone, Debug)]
pub struct NewEnvelope {
    /// The authenticated sender.
    pub from: DeviceAddress,
    /// The recipient.
    pub to: DeviceAddress,
    /// The sender's id for it.
    pub id: MessageId,
    /// Opaque payload.
    pub ciphertext: Vec<u8>,
    /// Acceptance time, ms since the epoch.
    pub now_ms: u64,
    /// The business category it claims (`None` between people).
    pub category: Option<Category>,
    /// The sender marked it as a receipt: it does not open a care window
    /// ([`super::policy::SendFacts::receipt`]).
    pub receipt: bool,
    /// For a send to every device (`send_to_all`): the copies beyond this one and the
    /// device lists they were made for; `None` for a `send` to one device.
    pub fan_out: Option<FanOut>,
}

impl NewEnvelope {
    /// A sync: a send to every device of the sender's own account (but the sending one),
    /// carrying account state. The send policy does not apply to it.
    pub fn is_sync(&self) -> bool {
        self.fan_out.is_some() && self.to.account == self.from.account
    }

    /// A send to every device with copies for the sender's other devices: only then is
    /// the sender's own list checked.
    pub fn has_own_copies(&self) -> bool {
        !self.is_sync()
            && self
                .fan_out
                .iter()
                .flat_map(|f| &f.copies)
                .any(|c| c.to.account == self.from.account)
    }
}

/// The rest of a send to every device (ADR 0007): the envelope itself is the copy for
/// the recipient's lowest device; these are the others, stored in the same transaction
/// under the policy and the retry entry decided once for the envelope.
///
/// A store refuses the whole send with [`EnqueueOutcome::StaleDevices`] unless, in that
/// transaction, the versions are the stored ones and the envelope and its copies name
/// exactly the recipient's devices and the sender's other devices
/// ([`super::devices::CurrentDevices::match_fan_out`]).
#[derive(Clone, Debug)]
pub struct FanOut {
    /// The version of the recipient's list the copies were made for (0: implicit).
    pub to_version: u64,
    /// The version of the sender's own list (0: implicit).
    pub own_version: u64,
    /// The recipient's other devices, then the sender's other devices.
    pub copies: Vec<EnvelopeCopy>,
}

/// One further copy of a send to every device.
#[derive(Clone, Debug)]
pub struct EnvelopeCopy {
    /// The device it is for.
    pub to: DeviceAddress,
    /// Encrypted for that device.
    pub ciphertext: Vec<u8>,
}

/// What a store's transaction decided for one envelope: its outcome, and for an accepted
/// send to every device the seqs its copies took, in the order of [`FanOut::copies`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decided {
    pub(crate) outcome: EnqueueOutcome,
    pub(crate) copy_seqs: Vec<Seq>,
}

impl From<EnqueueOutcome> for Decided {
    fn from(outcome: EnqueueOutcome) -> Decided {
        Decided {
            outcome,
            copy_seqs: Vec::new(),
        }
    }
}

/// What the server gives a store once, when it opens it: the rules every send is checked
/// against, who is told of each committed envelope, and where to count.
#[derive(Clone, Debug)]
pub struct StoreHooks {
    /// The send policy, decided inside the storing transaction.
    pub send_policy: SendPolicy,
    /// Told of every committed envelope (not of refusals or duplicates).
    pub on_commit: Arc<dyn CommitListener>,
    /// Commit latencies, batch sizes and failures.
    pub metrics: Arc<StoreMetrics>,
    /// The time for what the store stamps itself (a probe write, a shared rate bucket);
    /// the time of a request comes with the request.
    pub clock: Clock,
}

impl StoreHooks {
    /// `send_policy`, nobody told of commits, fresh metrics (for tools and tests).
    pub fn new(send_policy: SendPolicy) -> StoreHooks {
        StoreHooks {
            send_policy,
            on_commit: Arc::new(NobodyListens),
            metrics: Arc::default(),
            clock: Clock::system(),
        }
    }

    /// The same, telling `listener` of every commit.
    pub fn with_listener(mut self, listener: Arc<dyn CommitListener>) -> StoreHooks {
        self.on_commit = listener;
        self
    }

    /// The same, on `clock`.
    pub fn with_clock(mut self, clock: Clock) -> StoreHooks {
        self.clock = clock;
        self
    }

    /// The same, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<StoreMetrics>) -> StoreHooks {
        self.metrics = metrics;
        self
    }
}

/// Hands an envelope (and each of its copies) to the listener if `decided` says it was
/// committed; answers the outcome. Every store calls it after its commit, before
/// answering the sender.
pub(crate) fn announce(
    decided: Decided,
    envelope: NewEnvelope,
    listener: &dyn CommitListener,
) -> EnqueueOutcome {
    let Decided { outcome, copy_seqs } = decided;
    if let EnqueueOutcome::Accepted { seq, from_business } = outcome {
        let NewEnvelope {
            from,
            to,
            id,
            ciphertext,
            now_ms,
            category,
            receipt: _,
            fan_out,
        } = envelope;
        let category = category.filter(|_| from_business);
        let stored = |seq, ciphertext| StoredEnvelope {
            seq,
            from,
            id,
            accepted_at_ms: now_ms,
            ciphertext,
            category,
        };
        listener.committed(to, stored(seq, ciphertext));
        let copies = fan_out.map(|f| f.copies).unwrap_or_default();
        for (copy, seq) in copies.into_iter().zip(copy_seqs) {
            listener.committed(copy.to, stored(seq, copy.ciphertext));
        }
    }
    outcome
}

/// A [`CommitListener`] for a store nobody is connected to (tools, tests).
#[derive(Debug)]
struct NobodyListens;

impl CommitListener for NobodyListens {
    fn committed(&self, _to: DeviceAddress, _envelope: StoredEnvelope) {}
}

/// Result of [`super::Store::enqueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Durably queued at this position.
    Accepted {
        /// Position in the recipient's queue.
        seq: Seq,
        /// Whether the sender is a business (its envelope carries its category).
        from_business: bool,
    },
    /// A retry: the first attempt was queued at this position; nothing new was stored.
    Duplicate(Seq),
    /// The sender used this message id for another recipient or other bytes; nothing was
    /// stored.
    IdReused,
    /// The recipient device does not exist (the sender is not a business).
    UnknownRecipient,
    /// Uniform refusal of a business send: unknown recipient, no consent or care
    /// window, or the recipient blocks the business.
    Refused,
    /// A person's send to someone who blocks them.
    Blocked,
    /// The sender is a suspended business.
    Suspended,
    /// A business send without a category, or in one its certificate does not allow.
    CategoryNotAllowed,
    /// A send with a category from an account that is not a business (categories are
    /// for verified businesses only).
    NotABusiness,
    /// The business is over its messages per second; retry after this many ms.
    RateLimited(u64),
    /// The business reached its daily unique recipients; a slot frees in this many ms.
    ReachExhausted(u64),
    /// A send to every device made for device lists that are not the current ones
    /// ([`FanOut`]); nothing was stored.
    StaleDevices,
    /// The sending device is no longer on its account (a device list without it was
    /// published after the send was submitted); nothing was stored.
    SenderRemoved,
}

/// A queued envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Position in the recipient's queue.
    pub seq: Seq,
    /// The sender.
    pub from: DeviceAddress,
    /// The sender's id for it.
    pub id: MessageId,
    /// Acceptance time, ms since the epoch.
    pub accepted_at_ms: u64,
    /// Opaque payload.
    pub ciphertext: Vec<u8>,
    /// The business category it was sent in, if any.
    pub category: Option<Category>,
}

/// A clustered store's connections and writer lanes at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreLoad {
    /// Connections open in the pool.
    pub connections_open: usize,
    /// Of those, connections idle.
    pub connections_idle: usize,
    /// Requests waiting for a connection.
    pub connections_waited_for: usize,
    /// Jobs waiting in each writer lane, lane 0 first.
    pub lane_waiting: Vec<usize>,
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired undelivered envelopes deleted.
    pub envelopes: u64,
    /// Old dedup entries deleted.
    pub dedup_entries: u64,
}
