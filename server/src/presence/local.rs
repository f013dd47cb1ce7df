//! The in-process delivery registry: which devices are connected to this process.
//!
//! The embedded default, and the part of every node that holds its own connections. The
//! store hands every committed envelope, in commit order, to [`LocalPresence`] as its
//! [`CommitListener`] (from its answering task, see `store::sqlite::threads::Answerer`),
//! which keeps it in the recipient's [`Attachment`] and wakes it. A second connection of
//! the same device displaces the first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use parley_protocol::business::CategorySet;
use parley_protocol::devices::link::{JoinMac, RendezvousId};
use parley_protocol::identity::X25519Public;
use parley_protocol::ids::{AccountId, DeviceAddress};
use tokio::sync::oneshot;

use super::attachment::lock;
use super::link::Rendezvous;
use super::{Attachment, LinkFuture, OpenRendezvous, Presence, PresenceFuture};
use crate::store::{CommitListener, StoredEnvelope};

/// The devices connected to this process.
#[derive(Debug, Default)]
pub struct LocalPresence {
    next_id: AtomicU64,
    devices: Mutex<HashMap<DeviceAddress, Arc<Attachment>>>,
    /// Linking rendezvous opened by connections of this process.
    pub rendezvous: Rendezvous,
}

impl LocalPresence {
    /// Registers a connection for `device`, displacing any earlier one here; returns the
    /// new attachment and the one it displaced.
    pub fn register(
        &self,
        device: DeviceAddress,
        auth_time_ms: u64,
    ) -> (Arc<Attachment>, Option<Arc<Attachment>>) {
        let attachment = Arc::new(Attachment::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            auth_time_ms,
        ));
        let old = self.lock().insert(device, attachment.clone());
        if let Some(old) = &old {
            old.displaced.cancel();
        }
        (attachment, old)
    }

    /// Removes `attachment` if it is still the registered one for `device`; returns
    /// whether it was.
    pub fn unregister(&self, device: &DeviceAddress, attachment: &Attachment) -> bool {
        let mut devices = self.lock();
        if devices
            .get(device)
            .is_some_and(|a| a.id() == attachment.id())
        {
            devices.remove(device);
            true
        } else {
            false
        }
    }

    /// The attachment of `device`, if connected here.
    pub fn get(&self, device: &DeviceAddress) -> Option<Arc<Attachment>> {
        self.lock().get(device).cloned()
    }

    /// Every device connected here, with its attachment.
    pub fn all(&self) -> Vec<(DeviceAddress, Arc<Attachment>)> {
        self.lock()
            .iter()
            .map(|(device, a)| (*device, a.clone()))
            .collect()
    }

    /// Tells every connection here to read its queue from the store.
    pub fn resync_all(&self) {
        for (_, a) in self.all() {
            a.resync();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DeviceAddress, Arc<Attachment>>> {
        lock(&self.devices)
    }
}

impl CommitListener for LocalPresence {
    /// Hands the envelope to `to`'s connection, if connected here, and wakes it.
    fn committed(&self, to: DeviceAddress, envelope: StoredEnvelope) {
        if let Some(a) = self.get(&to) {
            a.offer(envelope);
        }
    }

    fn connected_here(&self, to: &DeviceAddress) -> bool {
        self.get(to).is_some()
    }
}

impl Presence for LocalPresence {
    fn attach(&self, device: DeviceAddress, auth_time_ms: u64) -> PresenceFuture<'_> {
        let (attachment, _) = self.register(device, auth_time_ms);
        Box::pin(std::future::ready(attachment))
    }

    fn detach(&self, device: &DeviceAddress, attachment: &Attachment) {
        self.unregister(device, attachment);
    }

    fn wake(&self, device: &DeviceAddress) {
        if let Some(a) = self.get(device) {
            a.resync();
        }
    }

    fn prekeys_low(&self, device: &DeviceAddress, remaining: u32) {
        if let Some(a) = self.get(device) {
            a.report_prekeys_low(remaining);
        }
    }

    fn remove(&self, device: &DeviceAddress) {
        if let Some(a) = self.get(device) {
            a.remove();
        }
    }

    fn consent_changed(
        &self,
        device: &DeviceAddress,
        business: AccountId,
        categories: CategorySet,
        revoked: bool,
    ) {
        if let Some(a) = self.get(device) {
            if revoked {
                a.consent_revoked(business, categories);
            } else {
                a.consent_granted(business, categories);
            }
        }
    }

    fn open_link(&self, id: RendezvousId) -> LinkFuture<'_, OpenRendezvous> {
        Box::pin(std::future::ready(self.rendezvous.open(id)))
    }

    fn join_link(
        &self,
        id: RendezvousId,
        public: X25519Public,
        mac: JoinMac,
        _wait: std::time::Duration,
    ) -> LinkFuture<'_, oneshot::Receiver<Vec<u8>>> {
        Box::pin(std::future::ready(
            self.rendezvous.join_here(&id, public, mac),
        ))
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::FRESH_MAX_ENVELOPES;
    use parley_protocol::ids::{AccountId, DeviceId};

    fn addr() -> DeviceAddress {
        DeviceAddress {
            account: AccountId([1; 32]),
            device: DeviceId(1),
        }
    }

    #[tokio::test]
    async fn a_second_attachment_displaces_the_first_and_survives_its_detach() {
        let presence = LocalPresence::default();
        let first = presence.attach(addr(), 1).await;
        let second = presence.attach(addr(), 2).await;
        assert!(first.displaced.is_cancelled());
        assert!(!second.displaced.is_cancelled());
        presence.detach(&addr(), &first);
        assert_eq!(
            presence.len(),
            1,
            "the old connection must not remove the new one"
        );
        presence.detach(&addr(), &second);
        assert!(presence.is_empty());
    }

    fn envelope(seq: u64) -> StoredEnvelope {
        StoredEnvelope {
            seq: parley_protocol::ids::Seq(seq),
            from: addr(),
            id: parley_protocol::ids::MessageId([seq as u8; 16]),
            accepted_at_ms: 0,
            ciphertext: vec![0; 100],
            category: None,
        }
    }

    #[tokio::test]
    async fn fresh_envelopes_are_handed_over_in_seq_order_until_the_buffer_overflows() {
        let presence = LocalPresence::default();
        let a = presence.attach(addr(), 1).await;
        presence.committed(addr(), envelope(2));
        presence.committed(addr(), envelope(1));
        let taken = a.take_fresh();
        assert!(!taken.stale);
        let seqs: Vec<u64> = taken.envelopes.iter().map(|e| e.seq.0).collect();
        assert_eq!(seqs, vec![1, 2]);
        for seq in 0..=FRESH_MAX_ENVELOPES as u64 {
            presence.committed(addr(), envelope(10 + seq));
        }
        let taken = a.take_fresh();
        assert!(taken.stale && taken.envelopes.is_empty());
        assert!(!a.take_fresh().stale, "stale is reported once");
        presence.wake(&addr());
        assert!(
            a.take_fresh().stale,
            "a wake without envelope means: read the store"
        );
    }

    #[tokio::test]
    async fn hand_offs_of_a_revoked_business_are_not_written_after_the_revocation() {
        use parley_protocol::business::{Category, CategorySet};
        let presence = LocalPresence::default();
        let a = presence.attach(addr(), 1).await;
        let business = AccountId([9; 32]);
        let from_business = |seq| StoredEnvelope {
            from: DeviceAddress {
                account: business,
                device: DeviceId(1),
            },
            category: Some(Category::Marketing),
            ..envelope(seq)
        };
        presence.committed(addr(), from_business(1));
        let marketing = CategorySet::of([Category::Marketing]);
        presence.consent_changed(&addr(), business, marketing, true);
        let taken = a.take_fresh();
        assert!(
            taken.stale && taken.envelopes.is_empty(),
            "read the store instead"
        );
        presence.committed(addr(), from_business(2));
        let taken = a.take_fresh();
        assert!(
            taken.stale && taken.envelopes.is_empty(),
            "a late hand-off too"
        );
        presence.committed(addr(), envelope(3));
        assert_eq!(a.take_fresh().envelopes.len(), 1, "people are not affected");
        presence.consent_changed(&addr(), business, marketing, false);
        presence.committed(addr(), from_business(4));
        assert_eq!(a.take_fresh().envelopes.len(), 1, "granted again");
    }

    #[tokio::test]
    async fn prekeys_low_is_reported_once() {
        let presence = LocalPresence::default();
        let a = presence.attach(addr(), 1).await;
        presence.prekeys_low(&addr(), 3);
        assert_eq!(a.take_prekeys_low(), Some(3));
        assert_eq!(a.take_prekeys_low(), None);
    }
}
