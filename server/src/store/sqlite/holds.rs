//! Held envelopes: hold, then persist (ADR 0005, option 2; `--hold-deadline`).
//!
//! A person's envelope for a device connected to this process is not written to the
//! queue: the writer decides it as usual (dedup, policy, seq), registers it here in its
//! own order, and hands it to the recipient's connection after the batch's commit (which
//! wrote nothing for it). Its sender is answered `accepted` when, first of:
//! * the recipient acks it ([`Holds::acked`]): it is on the recipient's disk; its dedup
//!   row is written with the ack's delete, and nobody waits for that;
//! * its deadline passes, or a read of the recipient's queue needs it: the writer
//!   commits it to the queue with its dedup row ([`Holds::take_expired`],
//!   [`Holds::take_device`]) and answers after that commit.
//!
//! Nothing here touches the database; the writer (`queries`) does, in its order, so an
//! entry is either acked (and never written to the queue) or taken by exactly one
//! commit. Entries are bounded per device and in total (`--hold-max-per-device`,
//! `--hold-max-bytes`); past a bound, the send is persisted first as without holding.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use parley_protocol::ids::{DeviceAddress, MessageId, Seq};
use tokio::sync::{oneshot, Notify};

use crate::metrics::StoreMetrics;
use crate::store::{StoreError, StoredEnvelope};

/// The limits of holding (from the server's configuration).
#[derive(Clone, Copy, Debug)]
pub struct HoldLimits {
    /// How long an envelope may wait for its recipient's ack before it is committed;
    /// zero turns holding off.
    pub deadline: Duration,
    /// Most envelopes held for one device.
    pub max_per_device: usize,
    /// Most ciphertext bytes held for one device.
    pub max_device_bytes: usize,
    /// Most ciphertext bytes held in all.
    pub max_total_bytes: usize,
}

impl HoldLimits {
    /// No holding: every envelope is persisted before `accepted`.
    pub const OFF: HoldLimits = HoldLimits {
        deadline: Duration::ZERO,
        max_per_device: 0,
        max_device_bytes: 0,
        max_total_bytes: 0,
    };

    /// Whether envelopes are held at all.
    pub fn is_on(&self) -> bool {
        !self.deadline.is_zero()
    }
}

/// What the writer needs to commit a held envelope later: the queue row and the dedup
/// (`sent`) row it did not write.
#[derive(Debug)]
pub(super) struct HeldRow {
    /// The recipient device.
    pub to: DeviceAddress,
    /// The queue row (its seq taken from the device's reservation).
    pub envelope: StoredEnvelope,
    /// The sender's device row key, for the dedup row.
    pub sender: i64,
    /// The dedup row's sealed seq and digest ([`crate::store::retry`]).
    pub sealed_seq: i64,
    pub digest: Vec<u8>,
    /// The dedup row's time.
    pub dedup_at_ms: i64,
}

/// Why an envelope was not held (the `parley_hold_refused_total` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    PerDevice,
    Total,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::PerDevice => "per_device",
            Refused::Total => "total",
        }
    }
}

/// The answer a held envelope's sender waits for: `Ok` once acked or committed.
pub(super) type Settlement = oneshot::Receiver<Result<(), StoreError>>;

struct Entry {
    row: HeldRow,
    deadline: Instant,
    /// The sender, and any retry of the same id, waiting for the settlement.
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

#[derive(Default)]
struct Inner {
    /// By recipient device, in seq order.
    devices: HashMap<DeviceAddress, BTreeMap<Seq, Entry>>,
    /// A held envelope by its dedup key (sender device row, message id).
    by_id: HashMap<(i64, MessageId), (DeviceAddress, Seq)>,
    /// Registered in the batch the writer is running (forgotten if it fails).
    this_batch: Vec<(DeviceAddress, Seq)>,
    bytes: usize,
    count: usize,
}

/// The process's held envelopes.
pub(super) struct Holds {
    limits: HoldLimits,
    inner: Mutex<Inner>,
    /// Woken when an entry with a new earliest deadline is registered.
    pub(super) reaper: Notify,
    metrics: std::sync::Arc<StoreMetrics>,
}

impl std::fmt::Debug for Holds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holds")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Holds {
    pub(super) fn new(limits: HoldLimits, metrics: std::sync::Arc<StoreMetrics>) -> Holds {
        Holds {
            limits,
            inner: Mutex::default(),
            reaper: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an envelope of `size` bytes for `to` may be held (writer thread); a
    /// refusal is counted by its bound.
    pub(super) fn room(&self, to: &DeviceAddress, size: usize) -> bool {
        let inner = self.lock();
        let refused = if inner.bytes + size > self.limits.max_total_bytes {
            Some(Refused::Total)
        } else if size > self.limits.max_device_bytes
            || inner.devices.get(to).is_some_and(|held| {
                held.len() >= self.limits.max_per_device
                    || held
                        .values()
                        .map(|e| e.row.envelope.ciphertext.len())
                        .sum::<usize>()
                        + size
                        > self.limits.max_device_bytes
            })
        {
            Some(Refused::PerDevice)
        } else {
            None
        };
        drop(inner);
        if let Some(refused) = refused {
            self.metrics.hold_refused.inc(refused.label());
        }
        refused.is_none()
    }

    /// Holds `row` (writer thread, inside a batch, after [`Holds::room`] said yes): the
    /// sender's settlement, to wait for after the batch's commit.
    pub(super) fn hold(&self, row: HeldRow, now: Instant) -> Settlement {
        let size = row.envelope.ciphertext.len();
        let (to, seq) = (row.to, row.envelope.seq);
        let (waiter, settlement) = oneshot::channel();
        let mut inner = self.lock();
        let first = inner.count == 0;
        inner.by_id.insert((row.sender, row.envelope.id), (to, seq));
        inner.devices.entry(to).or_default().insert(
            seq,
            Entry {
                row,
                deadline: now + self.limits.deadline,
                waiters: vec![waiter],
            },
        );
        inner.this_batch.push((to, seq));
        inner.bytes += size;
        inner.count += 1;
        self.gauges(&inner);
        drop(inner);
        if first {
            self.reaper.notify_one();
        }
        settlement
    }

    /// A retry of a held id (writer thread): the original's digest and sealed seq, and a
    /// settlement that resolves with the original's.
    pub(super) fn held_retry(
        &self,
        sender: i64,
        id: MessageId,
    ) -> Option<(Vec<u8>, i64, Settlement)> {
        let mut inner = self.lock();
        let (to, seq) = *inner.by_id.get(&(sender, id))?;
        let entry = inner.devices.get_mut(&to)?.get_mut(&seq)?;
        let (waiter, settlement) = oneshot::channel();
        entry.waiters.push(waiter);
        let row = &entry.row;
        Some((row.digest.clone(), row.sealed_seq, settlement))
    }

    /// The writer's batch committed: what it registered stays.
    pub(super) fn batch_committed(&self) {
        self.lock().this_batch.clear();
    }

    /// The writer's batch failed: what it registered was never answered, so it goes.
    pub(super) fn batch_failed(&self, error: &StoreError) {
        let mut inner = self.lock();
        let registered = std::mem::take(&mut inner.this_batch);
        for (to, seq) in registered {
            if let Some(entry) = remove(&mut inner, &to, seq) {
                settle(entry, Err(error.clone()));
            }
        }
        self.gauges(&inner);
    }

    /// `device` acked `through`: every envelope held for it up to there is on its disk.
    /// Takes them out, with their dedup rows for the writer and their senders to answer
    /// `accepted` ([`Acked::settle`]) once the writer has the rows, so that a retry the
    /// answer prompts finds the dedup row ahead of it in the writer's order.
    pub(super) fn acked(&self, device: &DeviceAddress, through: Seq) -> (Vec<HeldRow>, Acked) {
        let mut inner = self.lock();
        let Some(held) = inner.devices.get_mut(device) else {
            return (Vec::new(), Acked(Vec::new()));
        };
        let rest = held.split_off(&Seq(through.0.saturating_add(1)));
        let acked = std::mem::replace(held, rest);
        if held.is_empty() {
            inner.devices.remove(device);
        }
        let mut rows = Vec::with_capacity(acked.len());
        let mut waiters = Vec::with_capacity(acked.len());
        for (_, entry) in acked {
            forget(&mut inner, &entry);
            rows.push(entry.row);
            waiters.extend(entry.waiters);
        }
        self.metrics.held_settled.add("ack", rows.len() as u64);
        self.gauges(&inner);
        (rows, Acked(waiters))
    }

    /// Takes every entry held for `device` (writer thread), for a commit before a read
    /// of its queue. The caller settles them after its commit.
    pub(super) fn take_device(&self, device: &DeviceAddress) -> Vec<Taken> {
        let mut inner = self.lock();
        let Some(held) = inner.devices.remove(device) else {
            return Vec::new();
        };
        let taken = take_entries(&mut inner, held.into_values());
        self.gauges(&inner);
        taken
    }

    /// Whether anything is held for `device`.
    #[cfg(test)]
    pub(super) fn holds_for(&self, device: &DeviceAddress) -> bool {
        self.lock().devices.contains_key(device)
    }

    /// Takes every entry whose deadline is at or before `now`, or every entry (`None`:
    /// the store is closing), on the writer thread.
    pub(super) fn take_expired(&self, now: Option<Instant>) -> Vec<Taken> {
        let mut inner = self.lock();
        let mut expired = Vec::new();
        let devices: Vec<DeviceAddress> = inner.devices.keys().copied().collect();
        for device in devices {
            let Some(held) = inner.devices.get_mut(&device) else {
                continue;
            };
            let due: Vec<Seq> = held
                .iter()
                .filter(|(_, e)| now.is_none_or(|now| e.deadline <= now))
                .map(|(seq, _)| *seq)
                .collect();
            let entries: Vec<Entry> = due.iter().filter_map(|seq| held.remove(seq)).collect();
            if held.is_empty() {
                inner.devices.remove(&device);
            }
            expired.extend(take_entries(&mut inner, entries.into_iter()));
        }
        self.gauges(&inner);
        expired
    }

    /// The earliest deadline held, if any.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let inner = self.lock();
        inner
            .devices
            .values()
            .flat_map(|held| held.values().map(|e| e.deadline))
            .min()
    }

    /// Settles entries taken for a commit, once it is known (`by`: the metric label).
    pub(super) fn settle_taken(&self, taken: Vec<Taken>, result: &Result<(), StoreError>) {
        if result.is_ok() {
            self.metrics.held_settled.add("commit", taken.len() as u64);
        }
        for t in taken {
            for waiter in t.waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    fn gauges(&self, inner: &Inner) {
        self.metrics.held_envelopes.set(inner.count as i64);
        self.metrics.held_bytes.set(inner.bytes as i64);
    }
}

/// The senders of envelopes acked while held, to answer `accepted`.
#[must_use = "the senders wait for this"]
pub(super) struct Acked(Vec<oneshot::Sender<Result<(), StoreError>>>);

impl Acked {
    /// Answers them: their envelopes are on the recipient's disk.
    pub(super) fn settle(self) {
        for waiter in self.0 {
            let _ = waiter.send(Ok(()));
        }
    }
}

/// An entry taken out for a commit: the row to write and whom to answer after it.
pub(super) struct Taken {
    pub row: HeldRow,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

fn take_entries(inner: &mut Inner, entries: impl Iterator<Item = Entry>) -> Vec<Taken> {
    let mut taken = Vec::new();
    for entry in entries {
        forget(inner, &entry);
        taken.push(Taken {
            row: entry.row,
            waiters: entry.waiters,
        });
    }
    taken
}

fn remove(inner: &mut Inner, to: &DeviceAddress, seq: Seq) -> Option<Entry> {
    let held = inner.devices.get_mut(to)?;
    let entry = held.remove(&seq)?;
    if held.is_empty() {
        inner.devices.remove(to);
    }
    forget(inner, &entry);
    Some(entry)
}

/// Drops `entry` from the index and the totals (it has left `devices` already).
fn forget(inner: &mut Inner, entry: &Entry) {
    inner
        .by_id
        .remove(&(entry.row.sender, entry.row.envelope.id));
    inner.bytes = inner
        .bytes
        .saturating_sub(entry.row.envelope.ciphertext.len());
    inner.count = inner.count.saturating_sub(1);
}

fn settle(entry: Entry, result: Result<(), StoreError>) -> HeldRow {
    for waiter in entry.waiters {
        let _ = waiter.send(result.clone());
    }
    entry.row
}

#[cfg(test)]
mod tests;
