//! Writer lanes: how sends (and acks) reach PostgreSQL in group commits.
//!
//! There are `lanes` lanes (`PostgresOptions::lanes`), each a bounded queue and one task.
//! A job goes to the lane of its device (the sender of an envelope, the acknowledging
//! device of an ack), chosen by hash; callers wait while the lane is full
//! (backpressure). The lane task takes the first job and every job already waiting (up
//! to `group_commit_max`) and runs them in **one transaction**, committed with
//! `synchronous_commit = on`. Only after the commit does it tell the commit listener of
//! each accepted envelope and answer each job, in the order the jobs ran; if the commit
//! fails nothing is answered as accepted.
//!
//! Order. One device's jobs go to one lane, whose batches run one after another, and
//! within a batch its jobs keep their order: a sender's envelopes are stored, and its
//! acks applied, in the order submitted. A batch runs its envelopes in bulk
//! (`enqueue.rs`), decided in the order submitted (so the first of two sends with one
//! id is the one stored, as in a store without batches), and first locks the
//! `queue_head` rows of all its recipients in one global order, so that batches of different lanes do not deadlock
//! over them. Per recipient, the row lock of `queue_head` makes seq order commit order;
//! so the listener hears each recipient's envelopes in seq order from one lane, while
//! envelopes of one recipient committed by different lanes (or nodes) may be heard out
//! of order by a few microseconds (listeners tolerate a gap: `crate::presence`).
//!
//! Failures. A batch that fails with a deadlock, a serialization failure or a concurrent
//! insert of the same key (other locks, such as a business's rate bucket, can still make
//! two lanes wait for each other) is rolled back and run again from its first job, up
//! to `pool::ATTEMPTS` times. Any other failure answers every job of the batch with the
//! error; the clients retry, and retries are deduplicated.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use deadpool_postgres::{Pool, Transaction};
use futures_util::future::try_join;
use parley_protocol::ids::{DeviceAddress, Seq};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::enqueue::{store_envelopes, EnqueueStatements, Holding};
use super::errors::{pool_error, Failure};
use super::held::{self, AfterCommit, HeldBytes, HeldCommit, HeldSends, HoldWindow};
use super::policy::SendRules;
use super::pool::{backoff, ATTEMPTS};
use super::queue;
use crate::metrics::StoreMetrics;
use crate::store::types::{announce, Decided};
use crate::store::{CommitListener, EnqueueOutcome, NewEnvelope, StoreError};

/// A write that goes through a lane.
#[derive(Debug)]
pub(super) enum LaneJob {
    /// Store an envelope.
    Enqueue {
        /// It.
        envelope: NewEnvelope,
        /// Answered after the commit.
        reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
    },
    /// Delete a device's envelopes through a seq.
    Ack {
        /// The acknowledging device.
        device: DeviceAddress,
        /// Through this seq.
        through: Seq,
        /// Answered after the commit: envelopes deleted.
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Write the rows of a held send that settled (`held.rs`).
    CommitHeld {
        /// Its copies not acknowledged, and its dedup row.
        commit: HeldCommit,
        /// Answered after the commit; an error if its window had passed.
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl LaneJob {
    /// The device whose lane runs the job.
    fn device(&self) -> &DeviceAddress {
        match self {
            LaneJob::Enqueue { envelope, .. } => &envelope.from,
            LaneJob::Ack { device, .. } => device,
            LaneJob::CommitHeld { commit, .. } => &commit.envelope.from,
        }
    }

    /// Answers the job with what it did in a committed batch (telling the commit
    /// listener of an accepted envelope first, or settling a held one), or with the
    /// batch's error.
    fn answer(self, done: Result<Done, StoreError>, context: &LaneContext) {
        let mixed_up =
            || StoreError::Database("a lane answered a job with another's result".into());
        match (self, done) {
            (
                LaneJob::Enqueue { envelope, reply },
                Ok(Done::Enqueued(decided, AfterCommit::Settle(send, ended))),
            ) => match context.settling() {
                Some(settling) => held::settle_held(
                    settling,
                    &context.settlements,
                    envelope,
                    decided,
                    send,
                    ended,
                    reply,
                ),
                None => {
                    let _ = reply.send(Err(StoreError::Unavailable));
                }
            },
            (
                LaneJob::Enqueue { reply, .. },
                Ok(Done::Enqueued(decided, AfterCommit::WaitFor(settled))),
            ) => {
                context
                    .settlements
                    .spawn(held::answer_after(settled, decided.outcome, reply));
            }
            (LaneJob::Enqueue { envelope, reply }, done) => {
                let _ = reply.send(done.and_then(|done| match done {
                    Done::Enqueued(outcome, _) => {
                        Ok(announce(outcome, envelope, &*context.on_commit))
                    }
                    _ => Err(mixed_up()),
                }));
            }
            (LaneJob::Ack { reply, .. }, done) => {
                let _ = reply.send(done.and_then(|done| match done {
                    Done::Acked(deleted) => Ok(deleted),
                    _ => Err(mixed_up()),
                }));
            }
            (LaneJob::CommitHeld { reply, .. }, done) => {
                let _ = reply.send(done.and_then(|done| match done {
                    Done::Committed(true) => Ok(()),
                    Done::Committed(false) => Err(StoreError::Database(
                        "a held envelope's commit window had passed; send it again".into(),
                    )),
                    _ => Err(mixed_up()),
                }));
            }
        }
    }
}

/// What a job did, before the commit.
#[derive(Debug)]
enum Done {
    Enqueued(Decided, AfterCommit),
    Acked(u64),
    /// A held send's rows: written (`false`: its window had passed).
    Committed(bool),
}

#[derive(Debug)]
enum LaneMsg {
    Job(LaneJob),
    /// Run what is queued before it, then stop.
    Close(oneshot::Sender<()>),
}

/// What every lane task shares.
#[derive(Debug)]
pub(super) struct LaneContext {
    /// Connections.
    pub pool: Pool,
    /// The send policy.
    pub rules: Arc<SendRules>,
    /// Told of each committed envelope.
    pub on_commit: Arc<dyn CommitListener>,
    /// Commit latencies and failures.
    pub metrics: Arc<StoreMetrics>,
    /// Most jobs per transaction.
    pub group_commit_max: usize,
    /// Holding on a cluster (`held.rs`).
    pub hold: HoldWindow,
    /// The lanes' queues of settled held sends (weak: the lanes stop once the store
    /// lets go of them).
    pub lanes: OnceLock<Vec<mpsc::WeakSender<LaneJob>>>,
    /// The held sends that have not ended (for retries of their ids).
    pub held_sends: Arc<HeldSends>,
    /// The bound on the ciphertext held sends carry (`--hold-max-bytes`).
    pub held_bytes: Arc<HeldBytes>,
    /// The tasks settling held sends, which closing waits for.
    pub settlements: TaskTracker,
    /// The store is closing: hold nothing more.
    pub closing: AtomicBool,
}

impl LaneContext {
    /// What a held send's settlement needs; `None` once the lanes are gone.
    fn settling(&self) -> Option<held::Settling> {
        let senders: Option<Vec<_>> = self
            .lanes
            .get()
            .into_iter()
            .flatten()
            .map(mpsc::WeakSender::upgrade)
            .collect();
        let senders = senders.filter(|s| !s.is_empty())?;
        Some(held::Settling {
            lanes: SettledLanes { senders },
            listener: self.on_commit.clone(),
            metrics: self.metrics.clone(),
            window: self.hold,
            held_sends: self.held_sends.clone(),
        })
    }
}

/// The lanes of one store.
#[derive(Debug)]
pub(super) struct Lanes {
    senders: Vec<mpsc::Sender<LaneMsg>>,
    /// Kept so that the settled queues live as long as the lanes (the settlements hold
    /// them weakly).
    _settled: SettledLanes,
}

/// The lanes' queues of held sends that settled (`held.rs`): a lane takes them before
/// its other jobs, so that a held envelope is committed within its window even when the
/// lane is backed up.
#[derive(Clone, Debug)]
pub(super) struct SettledLanes {
    senders: Vec<mpsc::Sender<LaneJob>>,
}

impl SettledLanes {
    /// Queues a held send's commit on its sender's lane, ahead of the lane's other jobs.
    pub(super) async fn submit(&self, job: LaneJob) -> Result<(), StoreError> {
        let lane = self
            .senders
            .get(lane_of(job.device(), self.senders.len()))
            .ok_or(StoreError::Unavailable)?;
        lane.send(job).await.map_err(|_| StoreError::Unavailable)
    }
}

/// The lane of `device`'s jobs among `count`.
fn lane_of(device: &DeviceAddress, count: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    device.hash(&mut hasher);
    usize::try_from(hasher.finish() % count.max(1) as u64).unwrap_or(0)
}

impl Lanes {
    /// Jobs waiting in each lane.
    pub(super) fn waiting(&self) -> Vec<usize> {
        self.senders
            .iter()
            .map(|s| s.max_capacity().saturating_sub(s.capacity()))
            .collect()
    }

    /// Starts `count` lane tasks on the current runtime, each with a queue of `capacity`.
    pub(super) fn start(count: usize, capacity: usize, context: Arc<LaneContext>) -> Lanes {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..count.max(1))
            .map(|_| mpsc::channel(capacity.max(1)))
            .unzip();
        let (settled, settled_receivers): (Vec<_>, Vec<_>) = (0..count.max(1))
            .map(|_| mpsc::channel(capacity.max(1)))
            .unzip();
        let _ = context
            .lanes
            .set(settled.iter().map(mpsc::Sender::downgrade).collect());
        for (rx, settled_rx) in receivers.into_iter().zip(settled_receivers) {
            tokio::spawn(run_lane(rx, settled_rx, context.clone()));
        }
        Lanes {
            senders,
            _settled: SettledLanes { senders: settled },
        }
    }

    /// Queues `job` on its device's lane, waiting for room.
    pub(super) async fn submit(&self, job: LaneJob) -> Result<(), StoreError> {
        let lane = self
            .senders
            .get(lane_of(job.device(), self.senders.len()))
            .ok_or(StoreError::Unavailable)?;
        lane.send(LaneMsg::Job(job))
            .await
            .map_err(|_| StoreError::Unavailable)
    }

    /// Lets every lane finish the jobs queued so far, then stops them; later jobs are
    /// refused with [`StoreError::Unavailable`].
    pub(super) async fn close(&self) {
        for lane in &self.senders {
            let (done, finished) = oneshot::channel();
            if lane.send(LaneMsg::Close(done)).await.is_ok() {
                let _ = finished.await;
            }
        }
    }
}

async fn run_lane(
    mut rx: mpsc::Receiver<LaneMsg>,
    mut settled: mpsc::Receiver<LaneJob>,
    context: Arc<LaneContext>,
) {
    let max = context.group_commit_max.max(1);
    let mut batch = Vec::with_capacity(max);
    let mut close = None;
    while close.is_none() {
        tokio::select! {
            biased;
            Some(job) = settled.recv() => batch.push(job),
            message = rx.recv() => match message {
                Some(LaneMsg::Job(job)) => batch.push(job),
                Some(LaneMsg::Close(done)) => close = Some(done),
                None => break,
            },
        }
        // Settled held sends first: their commits have a window to keep.
        while batch.len() < max {
            match settled.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        while batch.len() < max && close.is_none() {
            match rx.try_recv() {
                Ok(LaneMsg::Job(job)) => batch.push(job),
                Ok(LaneMsg::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            // A lane with jobs still waiting is behind: a held envelope's commit could
            // miss its window, so this batch holds nothing (it persists first).
            let may_hold = rx.is_empty() && !context.closing.load(Ordering::Acquire);
            commit_batch(&context, std::mem::take(&mut batch), may_hold).await;
        }
    }
    // Jobs queued after the close are dropped with the receiver: answered Unavailable.
    drop(rx);
    let Some(done) = close else {
        return;
    };
    // Held sends decided before the close still settle, and their commits need this
    // lane: serve them until every settlement of the store has ended (the store stopped
    // counting new ones when it began to close).
    loop {
        tokio::select! {
            biased;
            Some(job) = settled.recv() => batch.push(job),
            () = context.settlements.wait() => break,
        }
        while batch.len() < max {
            match settled.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&context, std::mem::take(&mut batch), false).await;
    }
    let _ = done.send(());
}

/// Runs `jobs` in one transaction (again, after a retryable failure), then announces
/// and answers them.
async fn commit_batch(context: &LaneContext, jobs: Vec<LaneJob>, may_hold: bool) {
    let started = Instant::now();
    let mut attempt = 1;
    let result = loop {
        match run_batch(context, &jobs, may_hold).await {
            Ok(done) => break Ok(done),
            Err(failure) if failure.retry && attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %failure.error, "batch rolled back; running it again");
                backoff(attempt).await;
                attempt += 1;
            }
            Err(failure) => break Err(failure.error),
        }
    };
    match result {
        Ok(done) => {
            context.metrics.commit_seconds.observe(started.elapsed());
            context.metrics.committed_jobs.add(jobs.len() as u64);
            for (job, done) in jobs.into_iter().zip(done) {
                job.answer(Ok(done), context);
            }
        }
        Err(error) => {
            context.metrics.failed_commits.inc();
            tracing::warn!(%error, jobs = jobs.len(), "group commit failed; nothing of it was stored");
            for job in jobs {
                job.answer(Err(error.clone()), context);
            }
        }
    }
}

/// One attempt at a batch: every job in one transaction, committed.
async fn run_batch(
    context: &LaneContext,
    jobs: &[LaneJob],
    may_hold: bool,
) -> Result<Vec<Done>, Failure> {
    let mut client = context.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await?;
    let done = run_jobs(&tx, context, jobs, may_hold).await?;
    tx.commit().await?;
    Ok(done)
}

/// Runs the jobs in `tx`: the acks and the envelopes each in bulk (`queue::ack_through`,
/// `enqueue::store_envelopes`), in one pipeline. An ack never covers an envelope of its
/// own batch (a device acks only what it was pushed, which was committed before).
async fn run_jobs(
    tx: &Transaction<'_>,
    context: &LaneContext,
    jobs: &[LaneJob],
    may_hold: bool,
) -> Result<Vec<Done>, Failure> {
    let statements = EnqueueStatements::prepare(tx).await?;
    let mut envelopes = Vec::with_capacity(jobs.len());
    let mut acks = Vec::new();
    let mut commits = Vec::new();
    for job in jobs {
        match job {
            LaneJob::Enqueue { envelope, .. } => envelopes.push(envelope),
            LaneJob::Ack {
                device, through, ..
            } => acks.push((device, *through)),
            LaneJob::CommitHeld { commit, .. } => commits.push(commit),
        }
    }
    let hold = Holding {
        window: context.hold,
        may_hold,
        listener: &*context.on_commit,
        held_sends: &context.held_sends,
        held_bytes: &context.held_bytes,
    };
    let (acked, (stored, committed)) = try_join(
        queue::ack_through(tx, &acks, context.hold.is_on()),
        store_envelopes(tx, &statements, &context.rules, hold, &envelopes, &commits),
    )
    .await?;
    let (mut acked, mut stored, mut committed) =
        (acked.into_iter(), stored.into_iter(), committed.into_iter());
    let mut done = Vec::with_capacity(jobs.len());
    for job in jobs {
        let next = match job {
            LaneJob::Enqueue { .. } => stored.next().map(|(d, after)| Done::Enqueued(d, after)),
            LaneJob::Ack { .. } => acked.next().map(Done::Acked),
            LaneJob::CommitHeld { .. } => committed.next().map(Done::Committed),
        };
        done.push(next.ok_or_else(|| {
            StoreError::Database("a batch answered fewer jobs than it ran".into())
        })?);
    }
    Ok(done)
}
