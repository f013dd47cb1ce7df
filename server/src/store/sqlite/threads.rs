//! The database threads: the group-committing writer and the readers.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::holds::Holds;
use super::seqs::SeqBlocks;
use super::{sql_error, Durability};
use crate::metrics::StoreMetrics;
use crate::store::StoreError;

/// What a write job reports after it ran: its error, if it failed (then the whole batch
/// is rolled back), and how to answer once the commit is known.
pub(super) struct Executed {
    error: Option<StoreError>,
    answer: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// A unit of work for the writer: it runs on the writer's connection, inside the batch's
/// transaction, with the writer's [`SeqBlocks`].
pub(super) type WriteJob = Box<dyn FnOnce(&Connection, &mut SeqBlocks) -> Executed + Send>;

/// A unit of work for a reader.
pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Messages to the writer.
pub(super) enum WriterMsg {
    /// Run a job in the next group commit.
    Job(WriteJob),
    /// Run a job whose writes may be lost to a power failure (though not to a crash of
    /// the process: a commit is in the WAL, in the OS's cache, when it returns), in a
    /// transaction of its own committed without waiting for the disk
    /// (`synchronous=NORMAL`). For rows nobody waits for, whose loss costs only what a
    /// crash already may: the dedup rows of envelopes acked while held (`held`). The
    /// next commit that writes and syncs makes them durable with it, as it syncs the
    /// whole WAL (and a checkpoint syncs the WAL first).
    Unsynced(WriteJob),
    /// Commit what is pending, checkpoint the WAL and stop.
    Close(oneshot::Sender<()>),
}

/// Wraps a typed job: its result is delivered only after the commit, and turned into the
/// commit's error if the commit fails.
pub(super) fn write_job<T: Send + 'static>(
    job: impl FnOnce(&Connection, &mut SeqBlocks) -> Result<T, StoreError> + Send + 'static,
    reply: oneshot::Sender<Result<T, StoreError>>,
) -> WriteJob {
    write_job_then(job, |result| result, reply)
}

/// Like [`write_job`], and once the commit succeeded (and the job did), `committed`
/// turns the job's result into the answer. It runs where the answers are delivered (see
/// [`Answerer`]), in commit order and the batch's job order, before the answer is sent.
pub(super) fn write_job_then<T: Send + 'static, U: Send + 'static>(
    job: impl FnOnce(&Connection, &mut SeqBlocks) -> Result<T, StoreError> + Send + 'static,
    committed: impl FnOnce(T) -> U + Send + 'static,
    reply: oneshot::Sender<Result<U, StoreError>>,
) -> WriteJob {
    Box::new(move |conn: &Connection, seqs: &mut SeqBlocks| {
        let result = job(conn, seqs);
        Executed {
            error: result.as_ref().err().cloned(),
            answer: Box::new(move |commit: Result<(), StoreError>| {
                let _ = reply.send(commit.and(result).map(committed));
            }),
        }
    })
}

/// Most committed batches waiting for the [`Answerer`]'s task; the writer waits when
/// they are all taken. One wake of the task answers every batch waiting, so a few are
/// enough; each holds at most `--group-commit-max` answers, and an accepted envelope's
/// answer keeps its ciphertext for the hand-off (4 × 512 × 64 KiB = 128 MiB at worst).
const ANSWER_BATCHES: usize = 4;

/// Answering a batch's jobs after its commit means waking the tasks that wait for them.
/// From the writer thread every wake may unpark a tokio worker (an `eventfd` write and,
/// on a busy core, a context switch per job: a quarter of the writer's time in a profile
/// of `parley-loadtest store`). So the writer hands each batch's answers, in commit
/// order, to one task on the runtime, which wakes them from inside it: one cross-thread
/// wake per batch.
///
/// Only on a multi-thread runtime, whose workers run the task whatever else the program
/// does; a store opened elsewhere (a current-thread runtime, or none) answers on the
/// writer thread as before. Answers run on a tokio worker, so a [`CommitListener`] must
/// not block.
///
/// [`CommitListener`]: crate::store::CommitListener
pub(super) enum Answerer {
    /// A task on the runtime the store was opened in runs the answers.
    Task(mpsc::Sender<Box<dyn FnOnce() + Send>>),
    /// The writer answers itself.
    Inline,
}

impl Answerer {
    /// Starts the answering task on the current runtime if it is a multi-thread one.
    pub(super) fn start() -> Answerer {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Answerer::Inline;
        };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Answerer::Inline;
        }
        let (batches, mut to_answer) = mpsc::channel::<Box<dyn FnOnce() + Send>>(ANSWER_BATCHES);
        runtime.spawn(async move {
            while let Some(answer_all) = to_answer.recv().await {
                answer_all();
            }
        });
        Answerer::Task(batches)
    }

    /// Runs `answer_all` on the answering task, after the batches before it; on the
    /// writer thread if that task is gone. It goes with its runtime (at shutdown the
    /// batches it held are dropped, which answers their jobs `Unavailable`; the clients
    /// retry and the retries are deduplicated) or with a panicking answer.
    fn deliver(&self, answer_all: Box<dyn FnOnce() + Send>) {
        match self {
            Answerer::Task(batches) => {
                if let Err(mpsc::error::SendError(answer_all)) = batches.blocking_send(answer_all) {
                    if !TASK_GONE_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(
                            "the store's answering task is gone (runtime shutting down?); \
                             the writer answers by itself from now on"
                        );
                    }
                    answer_all();
                }
            }
            Answerer::Inline => answer_all(),
        }
    }
}

/// Whether [`Answerer::deliver`] said that its task is gone (once per process).
static TASK_GONE_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the writer thread is given.
pub(super) struct Writer {
    pub conn: Connection,
    pub jobs: mpsc::Receiver<WriterMsg>,
    pub group_commit_max: usize,
    /// The connection's `synchronous` setting, restored after each [`WriterMsg::Unsynced`].
    pub durability: Durability,
    pub answerer: Answerer,
    pub metrics: Arc<StoreMetrics>,
    pub holds: Option<Arc<Holds>>,
}

pub(super) fn spawn_writer(writer: Writer) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("parley-db-writer".into())
        .spawn(move || writer_loop(writer))
        .map(|_| ())
        .map_err(|e| StoreError::Database(format!("cannot start writer thread: {e}")))
}

pub(super) fn spawn_reader(
    index: usize,
    conn: Connection,
    mut jobs: mpsc::Receiver<Option<ReadJob>>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(format!("parley-db-reader-{index}"))
        .spawn(move || {
            while let Some(Some(job)) = jobs.blocking_recv() {
                job(&conn);
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::Database(format!("cannot start reader thread: {e}")))
}

fn writer_loop(writer: Writer) {
    let Writer {
        conn,
        mut jobs,
        group_commit_max,
        durability,
        answerer,
        metrics,
        holds,
    } = writer;
    let (answerer, metrics, holds) = (&answerer, &*metrics, holds.as_deref());
    let mut batch = Vec::with_capacity(group_commit_max);
    let mut unsynced = None;
    let mut seqs = SeqBlocks::default();
    let mut close: Option<oneshot::Sender<()>> = None;
    while close.is_none() {
        match jobs.blocking_recv() {
            Some(WriterMsg::Job(job)) => batch.push(job),
            Some(WriterMsg::Unsynced(job)) => unsynced = Some(job),
            Some(WriterMsg::Close(done)) => close = Some(done),
            None => break,
        }
        while batch.len() < group_commit_max && close.is_none() && unsynced.is_none() {
            match jobs.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Unsynced(job)) => unsynced = Some(job),
                Ok(WriterMsg::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let jobs = batch.drain(..);
            commit_batch(&conn, &mut seqs, jobs, answerer, metrics, holds, true);
        }
        if let Some(job) = unsynced.take() {
            let lowered = durability == Durability::Full && set_synchronous(&conn, "NORMAL");
            commit_batch(
                &conn,
                &mut seqs,
                std::iter::once(job),
                answerer,
                metrics,
                holds,
                !lowered,
            );
            if lowered && !set_synchronous(&conn, "FULL") {
                // Never go on committing what must be durable without syncing it.
                tracing::error!("cannot restore synchronous=FULL; the writer stops");
                break;
            }
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "WAL checkpoint at close failed");
    }
    drop(conn);
    if let Some(done) = close {
        // After the answers of the last batches.
        answerer.deliver(Box::new(move || {
            let _ = done.send(());
        }));
    }
}

/// Sets the writer connection's `synchronous` (outside a transaction: SQLite refuses to
/// change it inside one); whether it was set.
fn set_synchronous(conn: &Connection, level: &str) -> bool {
    match conn.pragma_update(None, "synchronous", level) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, level, "could not set synchronous");
            false
        }
    }
}

/// Runs a transaction-control statement through the statement cache, so the statements
/// of every commit are compiled once, not per commit (`execute_batch` recompiles).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs the jobs in one transaction, commits once, then has them all answered. `synced`:
/// whether the commit waits for the disk (only then is its time observed).
///
/// Store operations report refusals as values; an error is exceptional (disk full, I/O
/// error, a corrupt row). A job that fails may have written half of what it meant to, so
/// the whole batch is rolled back and every job that ran is answered with that error
/// (jobs not yet run are dropped, which answers them `Unavailable`); nothing of the batch
/// is stored, and the clients retry. Without a savepoint per job, each job's writes are not
/// first copied to a statement journal, which cost a tenth of the server's time.
///
/// The seq reservations of a batch that did not commit are gone
/// with it, so `seqs` is cleared: nothing is handed out of an uncommitted reservation. So
/// are the envelopes it held (`holds`): they were never answered.
pub(super) fn commit_batch(
    conn: &Connection,
    seqs: &mut SeqBlocks,
    jobs: impl Iterator<Item = WriteJob>,
    answerer: &Answerer,
    metrics: &StoreMetrics,
    holds: Option<&Holds>,
    synced: bool,
) {
    let started = Instant::now();
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "could not begin a write transaction");
        return;
    }
    let mut answers = Vec::new();
    let mut failure = None;
    for job in jobs {
        let executed = job(conn, seqs);
        answers.push(executed.answer);
        if let Some(e) = executed.error {
            failure = Some(e);
            break;
        }
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back without the job noticing.
            failure = Some(StoreError::Database(
                "the write transaction was rolled back by SQLite".into(),
            ));
            break;
        }
    }
    let committed = match failure {
        None => run_cached(conn, "COMMIT").map_err(sql_error),
        Some(e) => Err(e),
    };
    match &committed {
        Ok(()) => {
            if synced {
                // The commit-time histogram is the disk's: an unsynced commit skips it.
                metrics.commit_seconds.observe(started.elapsed());
            }
            metrics.committed_jobs.add(answers.len() as u64);
            if let Some(holds) = holds {
                holds.batch_committed();
            }
        }
        Err(e) => {
            seqs.clear();
            if let Some(holds) = holds {
                holds.batch_failed(e, started);
            }
            metrics.failed_commits.inc();
            tracing::warn!(error = %e, jobs = answers.len(), "group commit failed; nothing of it was stored");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
    answerer.deliver(Box::new(move || {
        for answer in answers {
            answer(committed.clone());
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(conn: &Connection) -> Result<i64, StoreError> {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(sql_error)
    }

    /// Sends `job` to the writer as `msg` and waits for its answer.
    fn run<T: Send + 'static>(
        writer: &mpsc::Sender<WriterMsg>,
        msg: fn(WriteJob) -> WriterMsg,
        job: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = write_job(move |c, _| job(c), reply);
        writer.blocking_send(msg(job)).unwrap();
        answer.blocking_recv().unwrap()
    }

    #[test]
    fn an_unsynced_job_commits_without_the_disk_and_the_next_batch_syncs_again() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_connection(&dir.path().join("t.db"), Durability::Full, false)
            .unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let (writer, jobs) = mpsc::channel(8);
        spawn_writer(Writer {
            conn,
            jobs,
            group_commit_max: 8,
            durability: Durability::Full,
            answerer: Answerer::Inline,
            metrics: Arc::default(),
            holds: None,
        })
        .unwrap();
        let during = run(&writer, WriterMsg::Unsynced, |c| {
            c.execute("INSERT INTO t VALUES (1)", [])
                .map_err(sql_error)?;
            synchronous(c)
        });
        assert_eq!(during, Ok(1), "NORMAL while the unsynced job runs");
        let after = run(&writer, WriterMsg::Job, |c| {
            let rows = c
                .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .map_err(sql_error)?;
            Ok((synchronous(c)?, rows))
        });
        assert_eq!(
            after,
            Ok((2, 1)),
            "FULL again, and the unsynced row committed"
        );
    }
}
