//! Held envelopes: hold, then persist (ADR 0005, option 2; `--hold-deadline`).
//!
//! A person's send whose every copy is for a device connected to this process (one copy
//! for a `send`, one per device for a `send_to_all`) is not written to the queue: the
//! writer decides it as usual (dedup, policy, seqs), registers its copies here in its own
//! order, and hands them to the recipients' connections after the batch's commit (which
//! wrote nothing for them). Each copy is settled on its own, first of:
//! * its device acks it ([`Holds::acked`]): it is on that device's disk. The ack needs no
//!   write of its own, and the queue's delete is skipped when the queue holds nothing
//!   the ack covers ([`QueuedSeqs`]);
//! * its deadline passes, or a read of its device's queue needs it: the writer commits
//!   it to the queue ([`Holds::take_expired`], [`Holds::take_device`]).
//!
//! The sender is answered `accepted` once every copy is settled: after the commit if
//! the last was committed, or if a copy was taken for a commit that had not happened
//! when the last was acked (it is answered with that commit, or fails with it). The
//! send's dedup row is written with its last copy's commit, or, if the last was acked,
//! waits here, where a retry finds it, until the reaper has the writer write the rows
//! waiting, a deadline later ([`Holds::take_unrecorded`]).
//!
//! Nothing here touches the database; the writer (`queries`, `held`) does, in its order,
//! so a copy is either acked (and never written to the queue) or taken by exactly one
//! commit. Copies are bounded per device and in total (`--hold-max-per-device`,
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

/// One copy of a held send: its recipient device and the queue row it did not write
/// (its seq taken from the device's reservation).
#[derive(Debug)]
pub(super) struct HeldCopy {
    /// The recipient device.
    pub to: DeviceAddress,
    /// The queue row.
    pub envelope: StoredEnvelope,
}

/// The dedup (`sent`) row of a held send, written once every copy of it is settled.
#[derive(Debug)]
pub(super) struct DedupRow {
    /// The sender's device row key.
    pub sender: i64,
    /// The sender's message id.
    pub id: MessageId,
    /// The sealed seq and digest ([`crate::store::retry`]).
    pub sealed_seq: i64,
    pub digest: Vec<u8>,
    /// The row's time.
    pub at_ms: i64,
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

/// A held copy, in its device's map.
struct Entry {
    copy: HeldCopy,
    deadline: Instant,
    /// The send it is a copy of, in [`Inner::sends`].
    send: u64,
}

/// A held send: one copy (a `send`) or several (a `send_to_all`), settled once every copy
/// is acked or committed.
struct HeldSend {
    /// Copies not settled yet.
    remaining: usize,
    /// A copy of it is taken for the running batch's commit and not committed yet: if
    /// its last copies are acked meanwhile, it is answered after that commit (or fails
    /// with it), not at the ack.
    taken_in_batch: bool,
    dedup: DedupRow,
    /// The sender, and any retry of the same id, waiting for the settlement.
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

#[derive(Default)]
struct Inner {
    /// Held copies by recipient device, in seq order.
    devices: HashMap<DeviceAddress, BTreeMap<Seq, Entry>>,
    /// The held sends, by a number of this registry.
    sends: HashMap<u64, HeldSend>,
    next_send: u64,
    /// A held send by its dedup key (sender device row, message id).
    by_id: HashMap<(i64, MessageId), u64>,
    /// Copies registered in the batch the writer is running (forgotten if it fails).
    this_batch: Vec<(DeviceAddress, Seq)>,
    /// Sends with a copy taken for the running batch's commit and others still held
    /// (failed, with their other copies, if the batch fails).
    partly_taken: Vec<u64>,
    /// Ciphertext bytes and copies held.
    bytes: usize,
    count: usize,
    /// Settled while their last copy was acked: their dedup rows, by dedup key, for the
    /// writer to write.
    unrecorded: HashMap<(i64, MessageId), DedupRow>,
    /// When the oldest of `unrecorded` was acked (the reaper writes them a deadline on).
    unrecorded_since: Option<Instant>,
    /// Dedup rows the running batch writes (back to `unrecorded` if it fails).
    recording: Vec<DedupRow>,
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

    /// Whether copies of these sizes for these devices (distinct) may be held (writer
    /// thread); a refusal is counted by its bound.
    pub(super) fn room(&self, copies: &[(DeviceAddress, usize)]) -> bool {
        let inner = self.lock();
        let total: usize = copies.iter().map(|(_, size)| size).sum();
        let refused = if inner.bytes + total > self.limits.max_total_bytes {
            Some(Refused::Total)
        } else if copies.iter().any(|(to, size)| {
            *size > self.limits.max_device_bytes
                || inner.devices.get(to).is_some_and(|held| {
                    held.len() >= self.limits.max_per_device
                        || held
                            .values()
                            .map(|e| e.copy.envelope.ciphertext.len())
                            .sum::<usize>()
                            + size
                            > self.limits.max_device_bytes
                })
        }) {
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

    /// Holds a send's copies (writer thread, inside a batch, after [`Holds::room`] said
    /// yes): the sender's settlement, to wait for after the batch's commit.
    pub(super) fn hold(&self, copies: Vec<HeldCopy>, dedup: DedupRow, now: Instant) -> Settlement {
        let (waiter, settlement) = oneshot::channel();
        let mut inner = self.lock();
        let first = inner.count == 0;
        let send = inner.next_send;
        inner.next_send += 1;
        inner.by_id.insert((dedup.sender, dedup.id), send);
        inner.sends.insert(
            send,
            HeldSend {
                remaining: copies.len(),
                taken_in_batch: false,
                dedup,
                waiters: vec![waiter],
            },
        );
        for copy in copies {
            let (to, seq) = (copy.to, copy.envelope.seq);
            inner.bytes += copy.envelope.ciphertext.len();
            inner.count += 1;
            inner.this_batch.push((to, seq));
            let entry = Entry {
                copy,
                deadline: now + self.limits.deadline,
                send,
            };
            inner.devices.entry(to).or_default().insert(seq, entry);
        }
        self.gauges(&inner);
        drop(inner);
        if first {
            self.reaper.notify_one();
        }
        settlement
    }

    /// A retry of an id held or settled while held and not yet written (writer thread):
    /// the original's digest and sealed seq, and, while it is still held, a settlement
    /// that resolves with the original's.
    pub(super) fn held_retry(
        &self,
        sender: i64,
        id: MessageId,
    ) -> Option<(Vec<u8>, i64, Option<Settlement>)> {
        let mut inner = self.lock();
        if let Some(row) = inner.unrecorded.get(&(sender, id)) {
            return Some((row.digest.clone(), row.sealed_seq, None));
        }
        let send = *inner.by_id.get(&(sender, id))?;
        let held = inner.sends.get_mut(&send)?;
        let (waiter, settlement) = oneshot::channel();
        held.waiters.push(waiter);
        let row = &held.dedup;
        Some((row.digest.clone(), row.sealed_seq, Some(settlement)))
    }

    /// The writer's batch committed: what it registered stays, and the dedup rows it
    /// wrote are in the table. A send it took a copy of whose other copies were all acked
    /// meanwhile is settled now: its senders are answered, and its dedup row waits to be
    /// written as an acked send's does.
    pub(super) fn batch_committed(&self) {
        let mut inner = self.lock();
        inner.this_batch.clear();
        inner.recording.clear();
        let mut answered = Vec::new();
        for send in std::mem::take(&mut inner.partly_taken) {
            let Some(held) = inner.sends.get_mut(&send) else {
                continue;
            };
            held.taken_in_batch = false;
            if held.remaining == 0 {
                if let Some(held) = settle_send(&mut inner, send) {
                    answered.extend(held.waiters);
                    self.wait_to_record(&mut inner, held.dedup, Instant::now());
                }
            }
        }
        drop(inner);
        Acked(answered).settle();
    }

    /// Keeps the dedup row of a send settled without a commit, for the reaper's job to
    /// write a deadline after the first of those waiting.
    fn wait_to_record(&self, inner: &mut Inner, row: DedupRow, now: Instant) {
        if inner.unrecorded.is_empty() {
            inner.unrecorded_since = Some(now);
            self.reaper.notify_one();
        }
        inner.unrecorded.insert((row.sender, row.id), row);
    }

    /// The writer's batch failed (at `now`): the sends it registered were never
    /// answered, so they go, and so do those it took a copy of for its commit while
    /// others stay held (that copy was not written); their senders get the error. The
    /// dedup rows it meant to write wait to be written again; and what it learnt of the
    /// queue, or wrote to it, is forgotten.
    pub(super) fn batch_failed(&self, error: &StoreError, now: Instant) {
        let mut inner = self.lock();
        let mut failed: Vec<u64> = std::mem::take(&mut inner.partly_taken);
        for (to, seq) in std::mem::take(&mut inner.this_batch) {
            if let Some(entry) = remove(&mut inner, &to, seq) {
                failed.push(entry.send);
            }
        }
        for send in failed {
            if let Some(held) = inner.sends.remove(&send) {
                inner.by_id.remove(&(held.dedup.sender, held.dedup.id));
                for waiter in held.waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
                // Its other copies: nobody will answer for them now.
                let others: Vec<(DeviceAddress, Seq)> = inner
                    .devices
                    .iter()
                    .flat_map(|(to, held)| {
                        held.iter()
                            .filter(|(_, e)| e.send == send)
                            .map(move |(seq, _)| (*to, *seq))
                    })
                    .collect();
                for (to, seq) in others {
                    remove(&mut inner, &to, seq);
                }
            }
        }
        let recording = std::mem::take(&mut inner.recording);
        if !recording.is_empty() {
            inner.unrecorded_since.get_or_insert(now);
        }
        for row in recording {
            inner.unrecorded.insert((row.sender, row.id), row);
        }
        inner.queued.clear();
        self.gauges(&inner);
    }

    /// `device` acked `through` (at `now`): every copy held for it up to there is on its
    /// disk. Takes them out; a send whose last copy this was is settled: its dedup row
    /// waits here to be written (a retry finds it here meanwhile) and its senders are to
    /// be answered `accepted` ([`Acked::settle`]). Says what the ack still needs of the
    /// writer.
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
        // Taken from the front, one by one: most acks cover one copy or a few, and
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
        let copies = acked.len() as u64;
        let mut waiters = Vec::new();
        for entry in acked {
            forget(&mut inner, &entry);
            if let Some(held) = copy_settled(&mut inner, entry.send, Settled::Acked) {
                waiters.extend(held.waiters);
                self.wait_to_record(&mut inner, held.dedup, now);
            }
        }
        self.metrics.held_settled.add("ack", copies);
        self.gauges(&inner);
        (Acked(waiters), needs(&inner))
    }

    /// Takes the dedup rows of envelopes acked while held, for the writer to write in the
    /// batch it is running; it hands them back with [`Holds::recording`].
    pub(super) fn take_unrecorded(&self) -> Vec<DedupRow> {
        let mut inner = self.lock();
        inner.unrecorded_since = None;
        inner.unrecorded.drain().map(|(_, row)| row).collect()
    }

    /// The dedup rows the running batch wrote: in the table once it commits, back to
    /// wait if it fails (a batch may record more than once).
    pub(super) fn recording(&self, rows: Vec<DedupRow>) {
        self.lock().recording.extend(rows);
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

    /// Whether an envelope held has its deadline at or before `now`.
    pub(super) fn has_expired(&self, now: Instant) -> bool {
        let inner = self.lock();
        inner
            .devices
            .values()
            .any(|held| held.values().any(|e| e.deadline <= now))
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

/// A copy taken out for a commit: its queue row to write, and, when it was the last of
/// its send, the send's dedup row to write with it and whom to answer after the commit.
pub(super) struct Taken {
    pub copy: HeldCopy,
    pub dedup: Option<DedupRow>,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

fn take_entries(inner: &mut Inner, entries: impl Iterator<Item = Entry>) -> Vec<Taken> {
    let mut taken = Vec::new();
    for entry in entries {
        forget(inner, &entry);
        // Taken to be written to the queue, in the batch the writer is running.
        inner.queued.queued(&entry.copy.to, entry.copy.envelope.seq);
        let (dedup, waiters) = match copy_settled(inner, entry.send, Settled::Taken) {
            Some(held) => (Some(held.dedup), held.waiters),
            None => {
                if let Some(held) = inner.sends.get_mut(&entry.send) {
                    held.taken_in_batch = true;
                }
                inner.partly_taken.push(entry.send);
                (None, Vec::new())
            }
        };
        taken.push(Taken {
            copy: entry.copy,
            dedup,
            waiters,
        });
    }
    taken
}

/// How a copy was settled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Acked by its device: on its disk now.
    Acked,
    /// Taken for the running batch's commit: stored with that commit.
    Taken,
}

/// A copy of `send` is settled: the send, taken out, if that was its last copy and it
/// is settled now. Not if the copy was acked while another is taken for a commit that
/// has not happened yet (the batch settles it: [`Holds::batch_committed`]); a copy taken
/// settles the send with the same commit as its other taken copies.
fn copy_settled(inner: &mut Inner, send: u64, how: Settled) -> Option<HeldSend> {
    let held = inner.sends.get_mut(&send)?;
    held.remaining = held.remaining.saturating_sub(1);
    if held.remaining > 0 || (how == Settled::Acked && held.taken_in_batch) {
        return None;
    }
    settle_send(inner, send)
}

/// Takes a settled send out, with its dedup key.
fn settle_send(inner: &mut Inner, send: u64) -> Option<HeldSend> {
    let held = inner.sends.remove(&send)?;
    inner.by_id.remove(&(held.dedup.sender, held.dedup.id));
    Some(held)
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

/// Drops `entry` from the totals (it has left `devices` already).
fn forget(inner: &mut Inner, entry: &Entry) {
    inner.bytes = inner
        .bytes
        .saturating_sub(entry.copy.envelope.ciphertext.len());
    inner.count = inner.count.saturating_sub(1);
}

#[cfg(test)]
mod tests;
