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
pub(super) async fn commit_expired(
    writer: &mpsc::Sender<WriterMsg>,
    holds: &Arc<Holds>,
    now: Option<Instant>,
) -> Result<(), StoreError> {
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
