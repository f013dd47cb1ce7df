//! Commits held envelopes at their deadline (`holds`): one task per store, sleeping
//! until the earliest deadline, then handing the writer a job that queues what expired
//! and writes the dedup rows of envelopes acked while held.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::held;
use super::holds::Holds;
use super::seqs::SeqBlocks;
use super::threads::{self, WriterMsg};
use crate::store::StoreError;

/// Runs until the writer is gone.
pub(super) async fn run(writer: mpsc::Sender<WriterMsg>, holds: Arc<Holds>) {
    loop {
        match holds.next_deadline() {
            None => holds.reaper.notified().await,
            Some(at) => {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                if commit_expired(&writer, &holds, Some(Instant::now())).await
                    == Err(StoreError::Unavailable)
                {
                    return;
                }
            }
        }
    }
}

/// Has the writer queue every held envelope whose deadline is at or before `now`
/// (every one: `None`), and write the dedup rows waiting; settles the envelopes once
/// committed. If the commit fails their senders get the error (nothing was `accepted`;
/// they retry).
///
/// When nothing held is due, only dedup rows are written, and they are committed
/// without waiting for the disk ([`WriterMsg::Unsynced`]): every envelope they are about
/// is on its recipient's disk already, a crash of the process cannot lose them, and a
/// power failure costs what a crash before this job would (a retry delivered again and
/// dropped by the recipient's client). Waiting for the disk here held up the sends
/// behind it for the length of an fsync at every deadline: the tail of the relay's
/// latency at moderate rates (docs/benchmarks.md).
pub(super) async fn commit_expired(
    writer: &mpsc::Sender<WriterMsg>,
    holds: &Arc<Holds>,
    now: Option<Instant>,
) -> Result<(), StoreError> {
    if now.is_some_and(|now| !holds.has_expired(now)) {
        return record_acked(writer, holds).await;
    }
    let (reply, answer) = oneshot::channel();
    let job_holds = holds.clone();
    let job = move |c: &Connection, _: &mut SeqBlocks| {
        held::record_acked(c, &job_holds)?;
        let taken = job_holds.take_expired(now);
        held::commit(c, &taken)?;
        Ok(taken)
    };
    let settle_holds = holds.clone();
    let settled = move |taken| settle_holds.settle_taken(taken, &Ok(()));
    writer
        .send(WriterMsg::Job(threads::write_job_then(job, settled, reply)))
        .await
        .map_err(|_| StoreError::Unavailable)?;
    answer.await.map_err(|_| StoreError::Unavailable)?
}

/// Has the writer write the dedup rows waiting, unsynced (see [`commit_expired`]).
async fn record_acked(
    writer: &mpsc::Sender<WriterMsg>,
    holds: &Arc<Holds>,
) -> Result<(), StoreError> {
    let (reply, answer) = oneshot::channel();
    let job_holds = holds.clone();
    let job = move |c: &Connection, _: &mut SeqBlocks| held::record_acked(c, &job_holds);
    writer
        .send(WriterMsg::Unsynced(threads::write_job(job, reply)))
        .await
        .map_err(|_| StoreError::Unavailable)?;
    answer.await.map_err(|_| StoreError::Unavailable)?
}
