//! One connected device as its connection sees it: a coalescing wake-up, a displacement
//! token, a pending "prekeys low" report, and the **fresh envelopes** handed over after
//! their commit.
//!
//! Fresh envelopes are bounded per connection ([`FRESH_MAX_ENVELOPES`],
//! [`FRESH_MAX_BYTES`]). The connection writes them without reading the store back as
//! long as they continue its last delivered seq without a gap and nothing was dropped;
//! otherwise (a full buffer, a wake without envelope, a gap) it reads the store from its
//! last delivered seq. The store stays the truth: a lost, merged or dropped hand-off never
//! loses an envelope.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use parley_protocol::business::CategorySet;
use parley_protocol::ids::AccountId;

use crate::store::StoredEnvelope;

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

/// Most revocations an attachment remembers (see [`Attachment::consent_revoked`]); the
/// oldest is forgotten first.
pub const REVOKED_MAX: usize = 64;

/// One connected device.
#[derive(Debug)]
pub struct Attachment {
    id: u64,
    /// When the connection authenticated (ms since the epoch): of two connections of one
    /// device, the later one stays.
    auth_time_ms: u64,
    /// Woken when new envelopes may be in the store for this device.
    pub wake: Notify,
    /// Cancelled when another connection of the same device attaches, or the device is
    /// removed from its account ([`Attachment::was_removed`] tells which).
    pub displaced: CancellationToken,
    /// The account removed the device: close with 4005, not 4002.
    removed: AtomicBool,
    /// Remaining one-time prekeys to report, or `u32::MAX` when there is nothing to report.
    prekeys_low: AtomicU32,
    fresh: Mutex<Fresh>,
    /// Businesses and categories this device revoked while connected: a hand-off of
    /// theirs that arrives now was committed before the revocation, which purged it.
    revoked: Mutex<Vec<(AccountId, CategorySet)>>,
}

impl Attachment {
    /// A new attachment with a registry-unique `id`.
    pub(super) fn new(id: u64, auth_time_ms: u64) -> Attachment {
        Attachment {
            id,
            auth_time_ms,
            wake: Notify::new(),
            displaced: CancellationToken::new(),
            removed: AtomicBool::new(false),
            prekeys_low: AtomicU32::new(u32::MAX),
            fresh: Mutex::default(),
            revoked: Mutex::default(),
        }
    }

    /// The registry's id of this attachment.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When its connection authenticated.
    pub fn auth_time_ms(&self) -> u64 {
        self.auth_time_ms
    }

    /// Closes the connection because the account removed the device.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.displaced.cancel();
    }

    /// Whether [`Attachment::remove`] ended it (rather than another connection).
    pub fn was_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

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

    /// Hands over a committed envelope and wakes the connection.
    pub(super) fn offer(&self, envelope: StoredEnvelope) {
        self.keep(envelope);
        self.wake.notify_one();
    }

    fn keep(&self, envelope: StoredEnvelope) {
        if self.was_revoked(&envelope) {
            // Purged by the revocation: the store, read instead, no longer has it.
            self.resync_quietly();
            return;
        }
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

    /// Tells the connection to read its queue from the store, and wakes it.
    pub(super) fn resync(&self) {
        self.resync_quietly();
        self.wake.notify_one();
    }

    fn resync_quietly(&self) {
        let mut fresh = lock(&self.fresh);
        *fresh = Fresh {
            stale: true,
            ..Fresh::default()
        };
    }

    fn was_revoked(&self, envelope: &StoredEnvelope) -> bool {
        let Some(category) = envelope.category else {
            return false;
        };
        lock(&self.revoked).iter().any(|(business, categories)| {
            *business == envelope.from.account && categories.contains(category)
        })
    }

    /// This device revoked `categories` from `business` (the store purged what was
    /// queued): envelopes of theirs handed over before, or arriving late from another
    /// node, are not written; the connection reads the store instead.
    pub(super) fn consent_revoked(&self, business: AccountId, categories: CategorySet) {
        {
            let mut revoked = lock(&self.revoked);
            if revoked.len() >= REVOKED_MAX {
                revoked.remove(0);
            }
            revoked.push((business, categories));
        }
        let purged = lock(&self.fresh)
            .envelopes
            .iter()
            .any(|e| self.was_revoked(e));
        if purged {
            self.resync();
        }
    }

    /// This device granted `categories` to `business` again: its new envelopes count.
    pub(super) fn consent_granted(&self, business: AccountId, categories: CategorySet) {
        let mut revoked = lock(&self.revoked);
        for (b, c) in revoked.iter_mut() {
            if *b == business {
                *c = c.minus(categories);
            }
        }
        revoked.retain(|(_, c)| !c.is_empty());
    }

    /// Reports `remaining` one-time prekeys, and wakes the connection.
    pub(super) fn report_prekeys_low(&self, remaining: u32) {
        self.prekeys_low.store(remaining, Ordering::Release);
        self.wake.notify_one();
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
