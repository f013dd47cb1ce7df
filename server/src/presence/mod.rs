//! Presence: which devices are connected, where, and how to nudge them.
//!
//! [`Presence`] is what connections and the store see. Two implementations:
//! * [`LocalPresence`], the in-process registry: the embedded default, where every
//!   device is connected to this one process.
//! * [`NatsPresence`] (cluster mode, `--bus nats://…`): the local registry for this node's
//!   own connections, plus NATS core subjects to wake the node that holds a device, to
//!   tell another node's prekeys-low, and to displace a duplicate connection of a device
//!   on another node.
//!
//! The rules both keep: a wake-up is a hint that may be lost. A connection reads the
//! store from its last delivered seq whenever its [`Attachment`] says it is stale, and an
//! attachment made before the connection's first read of the store (subscribe, then
//! read) never misses a commit after that read. Of two connections of one device, the
//! later one (by authentication time, then node id) stays; the other is closed with 4002
//! "device connected elsewhere".

mod attachment;
pub mod link;
mod local;
pub mod nats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parley_protocol::business::CategorySet;
use parley_protocol::devices::link::{JoinMac, RendezvousId};
use parley_protocol::identity::X25519Public;
use parley_protocol::ids::{AccountId, DeviceAddress};
use tokio::sync::oneshot;

pub use attachment::{Attachment, Taken, FRESH_MAX_BYTES, FRESH_MAX_ENVELOPES};
pub use link::{Answer, Joined, LinkUnavailable, OpenRendezvous};
pub use local::LocalPresence;
pub use nats::NatsPresence;

use crate::store::CommitListener;

/// A boxed future of a [`Presence::attach`].
pub type PresenceFuture<'a> = Pin<Box<dyn Future<Output = Arc<Attachment>> + Send + 'a>>;

/// A boxed future of the linking methods.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LinkUnavailable>> + Send + 'a>>;

/// Which devices are connected, and how to reach them. As a [`CommitListener`] it is
/// told of every envelope the store commits, in commit order, and hands it to the
/// recipient's connection wherever that is.
pub trait Presence: CommitListener {
    /// Registers a connection of `device` that authenticated at `auth_time_ms`,
    /// displacing any other connection of it (here or, in a cluster, on another node).
    /// Resolves once commits for the device after this point will reach the attachment,
    /// so the connection reads the store only after it.
    fn attach(&self, device: DeviceAddress, auth_time_ms: u64) -> PresenceFuture<'_>;

    /// Removes `attachment` if it is still the registered one for `device`.
    fn detach(&self, device: &DeviceAddress, attachment: &Attachment);

    /// Tells `device`, wherever it is connected, to read its queue from the store.
    fn wake(&self, device: &DeviceAddress);

    /// Tells `device`, wherever it is connected, that it has `remaining` one-time prekeys.
    fn prekeys_low(&self, device: &DeviceAddress, remaining: u32);

    /// Closes `device`'s connection, wherever it is, because its account removed it (the
    /// store already deleted it: it cannot authenticate again). A hint like the others:
    /// lost on the bus, the connection stays open but receives nothing more.
    fn remove(&self, device: &DeviceAddress);

    /// `device` (connected here) revoked `categories` from `business`, or granted them
    /// again: hand-offs from before a revocation are not written (the store purged them).
    fn consent_changed(
        &self,
        device: &DeviceAddress,
        business: AccountId,
        categories: CategorySet,
        revoked: bool,
    );

    /// Opens linking rendezvous `id` for a connection of this process, reachable from
    /// every node once this resolves (`presence::link`).
    fn open_link(&self, id: RendezvousId) -> LinkFuture<'_, OpenRendezvous>;

    /// Joins rendezvous `id` wherever it is open: resolves to the receiver of the sealed
    /// answer, which closes without one when the opener goes away, `wait` passes, or (in a
    /// cluster) nobody held the rendezvous.
    fn join_link(
        &self,
        id: RendezvousId,
        public: X25519Public,
        mac: JoinMac,
        wait: std::time::Duration,
    ) -> LinkFuture<'_, oneshot::Receiver<Vec<u8>>>;

    /// Devices connected to this process.
    fn len(&self) -> usize;

    /// Why this node cannot reach the other nodes right now, if it cannot (for
    /// `/readyz`); `None` on one node.
    fn unreachable(&self) -> Option<&'static str> {
        None
    }

    /// Whether no device is connected to this process.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
