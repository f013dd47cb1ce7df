//! Hold, then persist on a cluster (ADR 0005 §3, `--hold-deadline`): a person's
//! envelope for a device that some node may hold is decided (policy, dedup, seq) without
//! its queue row or its dedup row, carried to the recipient's node by the bus
//! ([`CommitListener::carry`]), and settled by that node's word or by a commit.
//!
//! * **Decided.** The lane's transaction (`enqueue.rs`) moves the recipient's
//!   `queue_head.next_seq` as for any envelope and stamps `queue_head.decided_at_ms` with
//!   the database's clock; it writes no queue or `sent` row. Every copy of a send to
//!   every device is held, or none is. A lane that is behind (jobs still waiting after
//!   its batch) holds nothing in that batch: its commits might miss their windows.
//! * **Settled** ([`settle_held`], after the commit): each copy is carried; the sender's
//!   `accepted` comes when every copy is settled: by [`HeldWord::Acked`] (the device
//!   has it on its disk), or by a commit of its queue row (a [`LaneJob::CommitHeld`] on
//!   the sender's lane, ahead of its other jobs) after [`HeldWord::Commit`], a closed
//!   carrier, or the deadline.
//!   The send's dedup row goes with that commit, or alone once every copy was acked.
//! * **The window.** A held seq may be committed only while the database's clock is
//!   within [`HoldWindow::window_ms`] of its decision; later the commit is refused and the
//!   sender gets an error (it retries, and the retry is a new envelope). The decision
//!   records that deadline in `queue_head.held_until_ms`, and a read of a device's queue
//!   waits for it where it could pass such a seq (`fence.rs`), on whichever node. An ack
//!   word heard after the window is not trusted (a read may have passed the seq by
//!   then): that copy is committed instead, which the window refuses once it has passed
//!   by the database's clock.
//! * **Retries.** A retry of a held send's id finds no dedup row; it finds the send in
//!   [`HeldSends`] instead and is answered as its first attempt once that one ended
//!   (`accepted` with its dedup row committed), or with an error if it did not.
//! * **Closing** holds nothing more and waits for the settlements before the lanes stop.
//!
//! A lost word costs a commit at the deadline (and perhaps a second delivery, which the
//! SDK drops by message id), never a message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_protocol::ids::{DeviceAddress, MessageId, Seq};
use tokio::sync::{oneshot, watch};
use tokio_util::task::TaskTracker;

use super::lanes::{LaneJob, SettledLanes};
use crate::metrics::StoreMetrics;
use crate::store::types::Decided;
use crate::store::values::to_u64;
use crate::store::{
    CommitListener, EnqueueOutcome, HeldWord, NewEnvelope, StoreError, StoredEnvelope,
};

/// The settings of holding on a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldWindow {
    /// How long a held envelope waits for its recipient's word before it is committed;
    /// zero turns holding off.
    pub deadline: Duration,
    /// How much longer than the deadline a held seq may still be committed (lane
    /// queueing, the commit itself); past it, the commit is refused.
    pub commit_grace: Duration,
}

impl HoldWindow {
    /// The window a read assumes (when larger than its own) for a decision that recorded
    /// none (`queue_head.held_until_ms`, made by a node from before migration 6): the
    /// server's defaults, `--hold-deadline 50ms` and `--hold-commit-grace 1s`.
    pub const UNRECORDED: HoldWindow = HoldWindow {
        deadline: Duration::from_millis(50),
        commit_grace: Duration::from_secs(1),
    };

    /// No holding: every envelope is persisted before `accepted`.
    pub const OFF: HoldWindow = HoldWindow {
        deadline: Duration::ZERO,
        commit_grace: Duration::ZERO,
    };

    /// Whether envelopes are held at all.
    pub fn is_on(&self) -> bool {
        !self.deadline.is_zero()
    }

    /// How long after its decision a held seq may still be committed, in ms.
    pub fn window_ms(&self) -> i64 {
        i64::try_from((self.deadline + self.commit_grace).as_millis()).unwrap_or(i64::MAX)
    }
}

/// One copy of a held send: where it went and what its queue row would hold.
#[derive(Clone, Debug)]
pub(super) struct HeldCopy {
    /// The device.
    pub to: DeviceAddress,
    /// Its `devices.id`.
    pub recipient: i64,
    /// Its seq.
    pub seq: i64,
    /// Its ciphertext.
    pub ciphertext: Vec<u8>,
}

/// A send decided as held: what its commit would write.
#[derive(Debug)]
pub(super) struct HeldSend {
    /// When it was decided, by the database's clock (ms since the epoch).
    pub decided_at_ms: i64,
    /// An instant of this node's clock no later than `decided_at_ms`: the time since it
    /// is at least the time since the decision, whatever the two clocks read.
    pub decided_after: Instant,
    /// The sender's `devices.id`.
    pub sender_key: i64,
    /// Its dedup row's sealed seq, digest and time.
    pub sealed_seq: i64,
    /// The retry digest.
    pub digest: Vec<u8>,
    /// The dedup row's time.
    pub dedup_time: i64,
    /// The copies still to settle (or, in a [`LaneJob::CommitHeld`], to commit).
    pub copies: Vec<HeldCopy>,
    /// Its ciphertext's share of `--hold-max-bytes`, given back when this is dropped
    /// (after the settlement's commit, or with a batch that failed).
    pub _reserved: Option<HeldBytesGuard>,
}

/// What a held send's dedup row and queue rows are written from in a lane's batch.
#[derive(Debug)]
pub(super) struct HeldCommit {
    /// The envelope's sender, id, time (the queue rows' columns).
    pub envelope: NewEnvelope,
    /// The send, with the copies to commit (none: only the dedup row).
    pub send: HeldSend,
}

/// How a held send ended, for retries of its id that wait for it: `Some(true)` once its
/// dedup row is committed (the retry's answer stands), `Some(false)` if it was not
/// `accepted` (the retry must be sent again).
pub(super) type Settled = watch::Receiver<Option<bool>>;

/// What a lane does after its commit with an envelope's outcome.
#[derive(Debug)]
pub(super) enum AfterCommit {
    /// Answer it (and tell the listener of an accepted envelope).
    Answer,
    /// Held: settle it ([`settle_held`]); the sender tells how it ended.
    Settle(HeldSend, watch::Sender<Option<bool>>),
    /// A retry of a held send: answer once that one ended.
    WaitFor(Settled),
}

/// The held sends of one store that have not ended, by sender key and message id, so
/// that a retry of one (a later batch finds no dedup row) is answered as its first
/// attempt once that one has ended, never before.
#[derive(Debug, Default)]
pub(super) struct HeldSends(Mutex<HashMap<(i64, MessageId), HeldRetry>>);

/// The ciphertext bytes of the held sends this node decided and has not settled, bounded
/// (`--hold-max-bytes`): past the bound a send is persisted first, as when it cannot be
/// carried.
#[derive(Debug)]
pub(super) struct HeldBytes {
    held: AtomicUsize,
    max: usize,
    metrics: Arc<StoreMetrics>,
}

impl HeldBytes {
    pub fn new(max: usize, metrics: Arc<StoreMetrics>) -> HeldBytes {
        HeldBytes {
            held: AtomicUsize::new(0),
            max,
            metrics,
        }
    }

    /// Takes `bytes` of the bound until the guard is dropped; `None` if that would pass
    /// it (counted in `parley_hold_refused_total{reason="total"}`).
    pub(super) fn reserve(self: &Arc<Self>, bytes: usize) -> Option<HeldBytesGuard> {
        let taken = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.max)
            });
        if taken.is_err() {
            self.metrics.hold_refused.inc("total");
            return None;
        }
        self.gauge();
        Some(HeldBytesGuard {
            bytes,
            of: self.clone(),
        })
    }

    /// Sets `parley_held_bytes` from the count after a change (read again, so that the
    /// last of two changes racing sets what both left).
    fn gauge(&self) {
        let held = self.held.load(Ordering::SeqCst);
        self.metrics
            .held_bytes
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

/// Bytes taken of [`HeldBytes`], given back when dropped.
#[derive(Debug)]
pub(super) struct HeldBytesGuard {
    bytes: usize,
    of: Arc<HeldBytes>,
}

impl Drop for HeldBytesGuard {
    fn drop(&mut self) {
        self.of.held.fetch_sub(self.bytes, Ordering::SeqCst);
        self.of.gauge();
    }
}

/// What a retry of a held send is answered from.
#[derive(Clone, Debug)]
pub(super) struct HeldRetry {
    /// The first attempt's retry digest.
    pub digest: Vec<u8>,
    /// Its sealed seq.
    pub sealed_seq: i64,
    /// How it ended.
    pub settled: Settled,
}

impl HeldSends {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, MessageId), HeldRetry>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The held send of `sender_key` with `id`, if it has not ended.
    pub fn get(&self, sender_key: i64, id: MessageId) -> Option<HeldRetry> {
        self.lock().get(&(sender_key, id)).cloned()
    }

    fn insert(&self, sender_key: i64, id: MessageId, retry: HeldRetry) {
        self.lock().insert((sender_key, id), retry);
    }

    fn remove(&self, sender_key: i64, id: MessageId) {
        self.lock().remove(&(sender_key, id));
    }
}

/// What settling a held send needs of its store.
#[derive(Debug)]
pub(super) struct Settling {
    /// The lanes, for its commit (ahead of their other jobs).
    pub lanes: SettledLanes,
    /// The carrier of its copies.
    pub listener: Arc<dyn CommitListener>,
    /// Where settlements are counted.
    pub metrics: Arc<StoreMetrics>,
    /// How long it waits for the words, and how long a held seq may be committed.
    pub window: HoldWindow,
    /// The held sends that have not ended.
    pub held_sends: Arc<HeldSends>,
}

/// Starts settling a held send once its decision committed: carries every copy now (in
/// the lane's order, so one sender's wakes go out in seq order) and spawns the rest
/// ([`settle`]) on `tracker`.
#[allow(clippy::too_many_arguments)]
pub(super) fn settle_held(
    settling: Settling,
    tracker: &TaskTracker,
    envelope: NewEnvelope,
    decided: Decided,
    mut send: HeldSend,
    ended: watch::Sender<Option<bool>>,
    reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
) {
    let ciphertexts = std::iter::once(&envelope.ciphertext).chain(
        envelope
            .fan_out
            .iter()
            .flat_map(|f| &f.copies)
            .map(|c| &c.ciphertext),
    );
    for (copy, ciphertext) in send.copies.iter_mut().zip(ciphertexts) {
        copy.ciphertext.clone_from(ciphertext);
    }
    settling.held_sends.insert(
        send.sender_key,
        envelope.id,
        HeldRetry {
            digest: send.digest.clone(),
            sealed_seq: send.sealed_seq,
            settled: ended.subscribe(),
        },
    );
    let category = envelope.category.filter(|_| {
        matches!(
            decided.outcome,
            EnqueueOutcome::Accepted {
                from_business: true,
                ..
            }
        )
    });
    let words: Vec<_> = send
        .copies
        .iter()
        .map(|copy| {
            let stored = StoredEnvelope {
                seq: Seq(to_u64(copy.seq)),
                from: envelope.from,
                id: envelope.id,
                accepted_at_ms: envelope.now_ms,
                ciphertext: copy.ciphertext.clone(),
                category,
            };
            settling.listener.carry(copy.to, stored)
        })
        .collect();
    tracker.spawn(settle(
        settling, envelope, decided, send, words, ended, reply,
    ));
}

/// Waits for the words about a held send's copies (at most the deadline), commits what
/// was not acked, answers the sender and says how it ended.
async fn settle(
    settling: Settling,
    envelope: NewEnvelope,
    decided: Decided,
    mut send: HeldSend,
    words: Vec<Option<oneshot::Receiver<HeldWord>>>,
    ended: watch::Sender<Option<bool>>,
    reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
) {
    let Settling {
        lanes,
        metrics,
        window,
        held_sends,
        ..
    } = settling;
    let outcome = decided.outcome;
    let expires = tokio::time::Instant::now() + window.deadline;
    let mut acked = Vec::with_capacity(words.len());
    for word in words {
        let word = match word {
            Some(word) => tokio::time::timeout_at(expires, word)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        acked.push(word == Some(HeldWord::Acked) && acked_in_time(&send, window));
    }
    let mut flags = acked.into_iter();
    send.copies.retain(|_| !flags.next().unwrap_or(false));
    let to_commit = send.copies.len();
    let total = decided.copy_seqs.len() + 1;
    metrics
        .held_settled
        .add("ack", (total.saturating_sub(to_commit)) as u64);
    let (sender_key, id) = (send.sender_key, envelope.id);
    let (done, answer) = oneshot::channel();
    let job = LaneJob::CommitHeld {
        commit: HeldCommit { envelope, send },
        reply: done,
    };
    let mut reply = Some(reply);
    if to_commit == 0 {
        // Every copy is on its device's disk: `accepted` now; the dedup row follows in
        // the sender's lane's next batch (retries of the id wait for it).
        if let Some(reply) = reply.take() {
            let _ = reply.send(Ok(outcome));
        }
    }
    let committed = match lanes.submit(job).await {
        Ok(()) => answer.await.unwrap_or(Err(StoreError::Unavailable)),
        Err(e) => Err(e),
    };
    if committed.is_ok() && to_commit > 0 {
        metrics.held_settled.add("commit", to_commit as u64);
    }
    // Acked but the dedup row not written: still `accepted` (the envelope is on its
    // devices' disks), but a retry of the id must be sent again.
    let _ = ended.send(Some(committed.is_ok()));
    held_sends.remove(sender_key, id);
    if let Some(reply) = reply {
        let _ = reply.send(committed.map(|()| outcome));
    }
}

/// Whether an ack word heard now may settle a copy of `send`. Not once the send's window
/// may have closed: a read of the device's queue may then have passed the seq without
/// the device getting it (its wake came late), and the device's next ack would cover
/// it. Such a copy is committed instead, which the window then refuses: the sender gets
/// an error and sends it again (a second delivery, if it had arrived, is dropped by the
/// SDK by id).
fn acked_in_time(send: &HeldSend, window: HoldWindow) -> bool {
    // The window in whole ms, as the database checks it, less a margin for this node's
    // clock running at another rate than the database's.
    let window = Duration::from_millis(to_u64(window.window_ms()));
    send.decided_after.elapsed() < window.saturating_sub(ACK_CLOCK_MARGIN)
}

/// How much sooner than the window an ack word stops being trusted ([`acked_in_time`]).
const ACK_CLOCK_MARGIN: Duration = Duration::from_millis(5);

/// Answers a retry of a held send once that send ended: as decided if it ended
/// `accepted` with its dedup row, else with an error (the client sends it again).
pub(super) async fn answer_after(
    mut settled: Settled,
    outcome: EnqueueOutcome,
    reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
) {
    let ended = settled
        .wait_for(Option::is_some)
        .await
        .map(|ended| *ended == Some(true))
        .unwrap_or(false);
    let _ = reply.send(match ended {
        true => Ok(outcome),
        false => Err(StoreError::Database(
            "the first send of this message id was not accepted; send it again".into(),
        )),
    });
}

/// The clock statement of a lane's batch, run after its locks: the database's time in
/// ms since the epoch.
pub(super) const DATABASE_NOW: &str =
    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Whether a held send decided at `decided_at_ms` may still be committed at `now_ms`,
/// by the database's clock.
pub(super) fn within_window(window: HoldWindow, decided_at_ms: i64, now_ms: i64) -> bool {
    may_still_commit(commit_deadline_ms(window, decided_at_ms), now_ms)
}

/// The last millisecond (database clock) at which a held send decided at
/// `decided_at_ms` under `window` may be committed: `queue_head.held_until_ms`.
pub(super) fn commit_deadline_ms(window: HoldWindow, decided_at_ms: i64) -> i64 {
    decided_at_ms.saturating_add(window.window_ms())
}

/// Whether a held seq whose commit deadline is `until_ms` may still be committed at
/// `now_ms`; once not, a fenced read may pass it (`fence.rs`). The one rule for both,
/// so that they never both hold at the same millisecond.
pub(super) fn may_still_commit(until_ms: i64, now_ms: i64) -> bool {
    now_ms <= until_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_deadline_and_the_grace() {
        let window = HoldWindow {
            deadline: Duration::from_millis(50),
            commit_grace: Duration::from_millis(250),
        };
        assert_eq!(window.window_ms(), 300);
        assert!(within_window(window, 1_000, 1_300));
        assert!(!within_window(window, 1_000, 1_301));
        assert!(!HoldWindow::OFF.is_on());
    }

    #[test]
    fn the_bytes_carried_are_bounded_and_given_back_when_settled() {
        let metrics = Arc::new(StoreMetrics::default());
        let bytes = Arc::new(HeldBytes::new(100, metrics.clone()));
        let first = bytes.reserve(60).expect("within the bound");
        assert!(bytes.reserve(41).is_none(), "60 + 41 passes 100");
        assert_eq!(metrics.hold_refused.get("total"), 1);
        let second = bytes.reserve(40).expect("60 + 40 is the bound");
        assert_eq!(metrics.held_bytes.get(), 100);
        drop(first);
        assert_eq!(metrics.held_bytes.get(), 40);
        assert!(bytes.reserve(60).is_some(), "given back when settled");
        drop(second);
        assert_eq!(bytes.held.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_ack_word_settles_a_copy_only_within_the_window() {
        let window = HoldWindow {
            deadline: Duration::from_millis(50),
            commit_grace: Duration::from_millis(250),
        };
        let decided = |ago: Duration| HeldSend {
            decided_at_ms: 0,
            decided_after: Instant::now().checked_sub(ago).expect("the clock runs"),
            sender_key: 1,
            sealed_seq: 1,
            digest: Vec::new(),
            dedup_time: 0,
            copies: Vec::new(),
            _reserved: None,
        };
        assert!(acked_in_time(&decided(Duration::from_millis(40)), window));
        assert!(
            !acked_in_time(&decided(Duration::from_millis(300)), window),
            "a word after the window: a read may have passed the seq"
        );
    }
}
