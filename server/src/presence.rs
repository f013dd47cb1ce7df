//! The delivery registry: which devices are connected to this process, and how to nudge
//! them.
//!
//! A registration is a [`Attachment`]: a coalescing wake-up (`Notify`), a displacement
//! token, a flag for "your one-time prekeys run low", and the **fresh envelopes**: the
//! store hands every committed envelope, in commit order, to [`Presence::committed`]
//! (from its answering task, see `store::sqlite::threads::Answerer`), which keeps
//! it in the recipient's attachment (bounded by [`FRESH_MAX_ENVELOPES`] and
//! [`FRESH_MAX_BYTES`]) and wakes it. The connection then writes them without reading
//! the store back, as long as they continue its last delivered seq without a gap and
//! nothing was dropped; otherwise (a full buffer, a wake without envelope, a gap) it
//! reads the store from its last delivered seq, as it always did. The store stays the
//! truth: a lost, merged or dropped hand-off never loses an envelope. A second
//! connection of the same device displaces the first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use parley_protocol::ids::DeviceAddress;

use crate::store::{CommitListener, StoredEnvelope};

/// Most fresh envelopes held for one connection; one more and the connection reads the
/// store instead (a recipient that far behind is reading pages anyway).
pub const FRESH_MAX_ENVELOPES: usize = parley_protocol::limits::MAX_DELIVERY_PAGE;

/// Most ciphertext bytes of fresh envelopes held for one connection (same rule). Small:
/// it adds to the write buffer (`--write-buffer-bytes`) of a connection that is slow to
/// take them, across every connected device; a full page of 200-byte envelopes fits.
pub const FRESH_MAX_BYTES: usize = 64 * 1024;

/// Envelopes committed for a connected device and not yet taken by its connection.
#[derive(Debug, Default)]
struct Fresh {
    /// In `seq` order.
    envelopes: VecDeque<StoredEnvelope>,
    bytes: usize,
    /// Something may be in the store that is not in `envelopes`: read the store.
    stale: bool,
}

/// What a connection takes from its attachment: fresh envelopes in `seq` order, and
/// whether it must read the store anyway.
#[derive(Debug, Default)]
pub struct Taken {
    /// Committed envelopes handed over since the last take.
    pub envelopes: VecDeque<StoredEnvelope>,
    /// An envelope may have been committed that is not in `envelopes`.
    pub stale: bool,
}
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One connected device.
#[derive(Debug)]
pub struct Attachment {
    id: u64,
    /// Woken when new envelopes may be in the store for this device.
    pub wake: Notify,
    /// Cancelled when another connection of the same device attaches.
    pub displaced: CancellationToken,
    /// Remaining one-time prekeys to report, or `u32::MAX` when there is nothing to report.
    prekeys_low: AtomicU32,
    fresh: Mutex<Fresh>,
}

impl Attachment {
    /// Takes a pending "prekeys low" report, if any.
    pub fn take_prekeys_low(&self) -> Option<u32> {
        match self.prekeys_low.swap(u32::MAX, Ordering::AcqRel) {
            u32::MAX => None,
            remaining => Some(remaining),
        }
    }

    /// Takes the fresh envelopes handed over so far.
    pub fn take_fresh(&self) -> Taken {
        let mut fresh = lock(&self.fresh);
        fresh.bytes = 0;
        Taken {
            envelopes: std::mem::take(&mut fresh.envelopes),
            stale: std::mem::take(&mut fresh.stale),
        }
    }

    fn offer(&self, envelope: StoredEnvelope) {
        let mut fresh = lock(&self.fresh);
        if fresh.stale {
            return;
        }
        let size = envelope.ciphertext.len();
        if fresh.envelopes.len() >= FRESH_MAX_ENVELOPES
            || fresh.bytes.saturating_add(size) > FRESH_MAX_BYTES
        {
            *fresh = Fresh {
                stale: true,
                ..Fresh::default()
            };
            return;
        }
        // Commits come in seq order; keep the order whatever happens.
        let at = fresh
            .envelopes
            .iter()
            .rposition(|e| e.seq < envelope.seq)
            .map_or(0, |i| i + 1);
        fresh.bytes += size;
        fresh.envelopes.insert(at, envelope);
    }

    fn mark_stale(&self) {
        let mut fresh = lock(&self.fresh);
        *fresh = Fresh {
            stale: true,
            ..Fresh::default()
        };
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The devices connected to this process.
#[derive(Debug, Default)]
pub struct Presence {
    next_id: AtomicU64,
    devices: Mutex<HashMap<DeviceAddress, Arc<Attachment>>>,
}

impl Presence {
    /// Registers a connection for `device`, displacing any earlier one.
    pub fn attach(&self, device: DeviceAddress) -> Arc<Attachment> {
        let attachment = Arc::new(Attachment {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            wake: Notify::new(),
            displaced: CancellationToken::new(),
            prekeys_low: AtomicU32::new(u32::MAX),
            fresh: Mutex::default(),
        });
        if let Some(old) = self.lock().insert(device, attachment.clone()) {
            old.displaced.cancel();
        }
        attachment
    }

    /// Removes `attachment` if it is still the registered one for `device`.
    pub fn detach(&self, device: &DeviceAddress, attachment: &Attachment) {
        let mut devices = self.lock();
        if devices.get(device).is_some_and(|a| a.id == attachment.id) {
            devices.remove(device);
        }
    }

    /// Tells `device`, if connected here, to read its queue from the store (something
    /// was queued for it that it was not handed).
    pub fn wake(&self, device: &DeviceAddress) {
        if let Some(a) = self.get(device) {
            a.mark_stale();
            a.wake.notify_one();
        }
    }

    fn get(&self, device: &DeviceAddress) -> Option<Arc<Attachment>> {
        self.lock().get(device).cloned()
    }

    /// Tells `device`, if connected here, that it has `remaining` one-time prekeys.
    pub fn prekeys_low(&self, device: &DeviceAddress, remaining: u32) {
        if let Some(a) = self.lock().get(device) {
            a.prekeys_low.store(remaining, Ordering::Release);
            a.wake.notify_one();
        }
    }

    /// Number of connected devices.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no device is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DeviceAddress, Arc<Attachment>>> {
        lock(&self.devices)
    }
}

impl CommitListener for Presence {
    /// Hands the envelope to `to`'s connection, if connected here, and wakes it.
    fn committed(&self, to: DeviceAddress, envelope: StoredEnvelope) {
        if let Some(a) = self.get(&to) {
            a.offer(envelope);
            a.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::ids::{AccountId, DeviceId};

    fn addr() -> DeviceAddress {
        DeviceAddress {
            account: AccountId([1; 32]),
            device: DeviceId(1),
        }
    }

    #[test]
    fn a_second_attachment_displaces_the_first_and_survives_its_detach() {
        let presence = Presence::default();
        let first = presence.attach(addr());
        let second = presence.attach(addr());
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

    #[test]
    fn fresh_envelopes_are_handed_over_in_seq_order_until_the_buffer_overflows() {
        let presence = Presence::default();
        let a = presence.attach(addr());
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

    #[test]
    fn prekeys_low_is_reported_once() {
        let presence = Presence::default();
        let a = presence.attach(addr());
        presence.prekeys_low(&addr(), 3);
        assert_eq!(a.take_prekeys_low(), Some(3));
        assert_eq!(a.take_prekeys_low(), None);
    }
}
