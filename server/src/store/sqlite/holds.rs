//! Held envelopes: hold, then persist (ADR 0005, option 2; `--hold-deadline`).
//!
//! A person's envelope for a device connected to this process is not written to the
//! queue: the writer decides it as usual (dedup, policy, seq), registers it here in its
//! own order, and hands it to the recipient's connection after the batch's commit (which
//! wrote nothing for it). Its sender is answered `accepted` when, first of:
//! * the recipient acks it ([`Holds::acked`]): it is on the recipient's disk. The ack
//!   needs no write of its own: the envelope's dedup row waits here, where a retry finds
//!   it, until the reaper has the writer write the rows waiting, a deadline later
//!   ([`Holds::take_unrecorded`]); and the queue's delete is skipped when the queue holds
//!   nothing the ack covers ([`QueuedSeqs`]);
//! * its deadline passes, or a read of the recipient's queue needs it: the writer
//!   commits it to the queue with its dedup row ([`Holds::take_expired`],
//!   [`Holds::take_device`]) and answers after that commit.
//!
//! Nothing here touches the database; the writer (`queries`, `held`) does, in its order,
//! so an entry is either acked (and never written to the queue) or taken by exactly one
//! commit. Entries are bounded per device and in total (`--hold-max-per-device`,
//! `--hold-max-bytes`); past a bound, the send is persisted first as without holding.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use parley_protocol::ids::{DeviceAddress, MessageId, Seq};
use tokio::sync::{oneshot, Notify};

use super::queued::QueuedSeqs;
use crate::metrics::StoreMetrics;
use crate::store::{StoreError, StoredEnvelope};

/// Dedup rows of acked envelopes kept before an ack has the writer write them at once,
/// instead of waiting for the reaper's next job (about 200 bytes each, without the
/// ciphertext: at most a deadline's worth of acks, 0.8 MiB).
pub(super) const UNRECORDED_MAX: usize = 4096;

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
    /// Acked while held: their dedup rows, by dedup key, for the writer to write.
    unrecorded: HashMap<(i64, MessageId), HeldRow>,
    /// When the oldest of `unrecorded` was acked (the reaper writes them a deadline on).
    unrecorded_since: Option<Instant>,
    /// Dedup rows the running batch writes (back to `unrecorded` if it fails).
    recording: Vec<HeldRow>,
    /// What the queue table may hold per device.
    queued: QueuedSeqs,
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

    /// A retry of an id held or acked while held (writer thread): the original's digest
    /// and sealed seq, and, while it is still held, a settlement that resolves with the
    /// original's.
    pub(super) fn held_retry(
        &self,
        sender: i64,
        id: MessageId,
    ) -> Option<(Vec<u8>, i64, Option<Settlement>)> {
        let mut inner = self.lock();
        if let Some(row) = inner.unrecorded.get(&(sender, id)) {
            return Some((row.digest.clone(), row.sealed_seq, None));
        }
        let (to, seq) = *inner.by_id.get(&(sender, id))?;
        let entry = inner.devices.get_mut(&to)?.get_mut(&seq)?;
        let (waiter, settlement) = oneshot::channel();
        entry.waiters.push(waiter);
        let row = &entry.row;
        Some((row.digest.clone(), row.sealed_seq, Some(settlement)))
    }

    /// The writer's batch committed: what it registered stays, and the dedup rows it
    /// wrote are in the table.
    pub(super) fn batch_committed(&self) {
        let mut inner = self.lock();
        inner.this_batch.clear();
        inner.recording.clear();
    }

    /// The writer's batch failed (at `now`): what it registered was never answered, so
    /// it goes; the dedup rows it meant to write wait to be written again; and what it
    /// learnt of the queue, or wrote to it, is forgotten.
    pub(super) fn batch_failed(&self, error: &StoreError, now: Instant) {
        let mut inner = self.lock();
        let registered = std::mem::take(&mut inner.this_batch);
        for (to, seq) in registered {
            if let Some(entry) = remove(&mut inner, &to, seq) {
                settle(entry, Err(error.clone()));
            }
        }
        let recording = std::mem::take(&mut inner.recording);
        if !recording.is_empty() {
            inner.unrecorded_since.get_or_insert(now);
        }
        for row in recording {
            inner.unrecorded.insert((row.sender, row.envelope.id), row);
        }
        inner.queued.clear();
        self.gauges(&inner);
    }

    /// `device` acked `through` (at `now`): every envelope held for it up to there is on
    /// its disk. Takes them out; their dedup rows wait here to be written (a
    /// retry finds them here meanwhile) and their senders are to be answered `accepted`
    /// ([`Acked::settle`]). Says what the ack still needs of the writer.
    pub(super) fn acked(
        &self,
        device: &DeviceAddress,
        through: Seq,
        now: Instant,
    ) -> (Acked, AckNeeds) {
        let mut inner = self.lock();
        let needs = |inner: &Inner| AckNeeds {
            delete: inner.queued.must_delete(device, through),
            flush: inner.unrecorded.len() >= UNRECORDED_MAX,
        };
        let Some(held) = inner.devices.get_mut(device) else {
            return (Acked(Vec::new()), needs(&inner));
        };
        // Taken from the front, one by one: most acks cover one envelope or a few, and
        // splitting the map would allocate for the rest each time.
        let mut acked = Vec::new();
        while let Some(first) = held.first_entry() {
            if *first.key() > through {
                break;
            }
            acked.push(first.remove());
        }
        if held.is_empty() {
            inner.devices.remove(device);
        }
        if acked.is_empty() {
            return (Acked(Vec::new()), needs(&inner));
        }
        let first = inner.unrecorded.is_empty();
        let envelopes = acked.len() as u64;
        let mut waiters = Vec::with_capacity(acked.len());
        for entry in acked {
            forget(&mut inner, &entry);
            waiters.extend(entry.waiters);
            let mut row = entry.row;
            row.envelope.ciphertext = Vec::new();
            inner.unrecorded.insert((row.sender, row.envelope.id), row);
        }
        if first {
            inner.unrecorded_since = Some(now);
            self.reaper.notify_one();
        }
        self.metrics.held_settled.add("ack", envelopes);
        self.gauges(&inner);
        (Acked(waiters), needs(&inner))
    }

    /// Takes the dedup rows of envelopes acked while held, for the writer to write in the
    /// batch it is running; it hands them back with [`Holds::recording`].
    pub(super) fn take_unrecorded(&self) -> Vec<HeldRow> {
        let mut inner = self.lock();
        inner.unrecorded_since = None;
        inner.unrecorded.drain().map(|(_, row)| row).collect()
    }

    /// The dedup rows the running batch wrote: in the table once it commits, back to
    /// wait if it fails.
    pub(super) fn recording(&self, rows: Vec<HeldRow>) {
        self.lock().recording = rows;
    }

    /// The writer wrote `seq` to `to`'s queue, in the batch it is running.
    pub(super) fn queued(&self, to: &DeviceAddress, seq: Seq) {
        self.lock().queued.queued(to, seq);
    }

    /// The writer deleted `to`'s queue up to an ack and found `lowest` the lowest seq
    /// left in it (`None`: empty).
    pub(super) fn learned(&self, to: DeviceAddress, lowest: Option<Seq>) {
        self.lock().queued.learned(to, lowest);
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

    /// The earliest deadline held, or of dedup rows waiting to be written, if any.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let inner = self.lock();
        let unrecorded = inner.unrecorded_since.map(|at| at + self.limits.deadline);
        inner
            .devices
            .values()
            .flat_map(|held| held.values().map(|e| e.deadline))
            .chain(unrecorded)
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

/// What an ack still needs of the writer once its held envelopes are settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AckNeeds {
    /// The queue may hold envelopes the ack covers.
    pub delete: bool,
    /// Dedup rows of acked envelopes reached [`UNRECORDED_MAX`]: a batch should write them.
    pub flush: bool,
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
        // Taken to be written to the queue, in the batch the writer is running.
        inner.queued.queued(&entry.row.to, entry.row.envelope.seq);
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
