//! The database threads: the group-committing writer and the readers.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::sql_error;
use crate::metrics::StoreMetrics;
use crate::store::StoreError;

/// What a write job reports after it ran inside its savepoint: whether it succeeded (so
/// the savepoint is kept or rolled back) and how to answer once the commit is known.
pub(super) struct Executed {
    ok: bool,
    answer: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// A unit of work for the writer.
pub(super) type WriteJob = Box<dyn FnOnce(&Connection) -> Executed + Send>;

/// A unit of work for a reader.
pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Messages to the writer.
pub(super) enum WriterMsg {
    /// Run a job in the next group commit.
    Job(WriteJob),
    /// Commit what is pending, checkpoint the WAL and stop.
    Close(oneshot::Sender<()>),
}

/// Wraps a typed job: its result is delivered only after the commit, and turned into the
/// commit's error if the commit fails.
pub(super) fn write_job<T: Send + 'static>(
    job: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    reply: oneshot::Sender<Result<T, StoreError>>,
) -> WriteJob {
    write_job_then(job, |result| result, reply)
}

/// Like [`write_job`], and once the commit succeeded (and the job did), `committed`
/// turns the job's result into the answer. It runs on the writer thread, in the batch's
/// job order, before the answer is sent.
pub(super) fn write_job_then<T: Send + 'static, U: Send + 'static>(
    job: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    committed: impl FnOnce(T) -> U + Send + 'static,
    reply: oneshot::Sender<Result<U, StoreError>>,
) -> WriteJob {
    Box::new(move |conn: &Connection| {
        let result = job(conn);
        Executed {
            ok: result.is_ok(),
            answer: Box::new(move |commit: Result<(), StoreError>| {
                let _ = reply.send(commit.and(result).map(committed));
            }),
        }
    })
}

pub(super) fn spawn_writer(
    conn: Connection,
    jobs: mpsc::Receiver<WriterMsg>,
    group_commit_max: usize,
    metrics: Arc<StoreMetrics>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("parley-db-writer".into())
        .spawn(move || writer_loop(conn, jobs, group_commit_max, &metrics))
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

fn writer_loop(
    conn: Connection,
    mut jobs: mpsc::Receiver<WriterMsg>,
    group_commit_max: usize,
    metrics: &StoreMetrics,
) {
    let mut batch = Vec::with_capacity(group_commit_max);
    let mut close: Option<oneshot::Sender<()>> = None;
    while close.is_none() {
        match jobs.blocking_recv() {
            Some(WriterMsg::Job(job)) => batch.push(job),
            Some(WriterMsg::Close(done)) => close = Some(done),
            None => break,
        }
        while batch.len() < group_commit_max && close.is_none() {
            match jobs.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, batch.drain(..), metrics);
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "WAL checkpoint at close failed");
    }
    drop(conn);
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// Runs a transaction-control statement through the statement cache, so the statements
/// of every commit are compiled once, not per commit (`execute_batch` recompiles).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs every job in its own savepoint of one transaction, commits once, then answers.
/// A job that cannot even start (no transaction, no savepoint) is dropped unrun, which
/// answers its caller with [`StoreError::Unavailable`].
fn commit_batch(conn: &Connection, jobs: impl Iterator<Item = WriteJob>, metrics: &StoreMetrics) {
    let started = Instant::now();
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "could not begin a write transaction");
        return;
    }
    let mut answers = Vec::new();
    for job in jobs {
        if let Err(e) = run_cached(conn, "SAVEPOINT job") {
            tracing::warn!(error = %e, "could not open a savepoint");
            continue;
        }
        let executed = job(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error): nothing of
            // this batch is stored. Stop here so no later job runs outside a transaction;
            // the failed COMMIT below answers every job that ran with the error, and the
            // jobs never run are dropped, which answers them `Unavailable`.
            tracing::warn!("the write transaction was rolled back by SQLite");
            answers.push(executed.answer);
            break;
        }
        let end = if executed.ok {
            run_cached(conn, "RELEASE job")
        } else {
            run_cached(conn, "ROLLBACK TO job").and_then(|()| run_cached(conn, "RELEASE job"))
        };
        if let Err(e) = end {
            tracing::warn!(error = %e, "could not end a savepoint");
        }
        answers.push(executed.answer);
    }
    let committed = run_cached(conn, "COMMIT").map_err(sql_error);
    match &committed {
        Ok(()) => {
            metrics.commit_seconds.observe(started.elapsed());
            metrics.committed_jobs.add(answers.len() as u64);
        }
        Err(e) => {
            metrics.failed_commits.inc();
            tracing::warn!(error = %e, jobs = answers.len(), "group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    for answer in answers {
        answer(committed.clone());
    }
}
