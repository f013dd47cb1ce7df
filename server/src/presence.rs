//! The delivery registry: which devices are connected to this process, and how to nudge
//! them.
//!
//! A registration is a [`Attachment`]: a coalescing wake-up (`Notify`), a displacement
//! token, and a flag for "your one-time prekeys run low". A wake carries no data; the
//! connection always reads the store from its last delivered seq, so a lost or merged
//! wake never loses an envelope. A second connection of the same device displaces the
//! first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use parley_protocol::ids::DeviceAddress;
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
}

impl Attachment {
    /// Takes a pending "prekeys low" report, if any.
    pub fn take_prekeys_low(&self) -> Option<u32> {
        match self.prekeys_low.swap(u32::MAX, Ordering::AcqRel) {
            u32::MAX => None,
            remaining => Some(remaining),
        }
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

    /// Tells `device`, if connected here, to look at its queue.
    pub fn wake(&self, device: &DeviceAddress) {
        if let Some(a) = self.lock().get(device) {
            a.wake.notify_one();
        }
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
        match self.devices.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
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

    #[test]
    fn prekeys_low_is_reported_once() {
        let presence = Presence::default();
        let a = presence.attach(addr());
        presence.prekeys_low(&addr(), 3);
        assert_eq!(a.take_prekeys_low(), Some(3));
        assert_eq!(a.take_prekeys_low(), None);
    }
}
