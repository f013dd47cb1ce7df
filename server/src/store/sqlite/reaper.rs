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

/// Runs until the writer is gone. A job of its that failed, or that was dropped unrun
/// because another job of its batch failed, left what it took held (or waiting to be
/// written), so a later turn tries again.
pub(super) async fn run(writer: mpsc::Sender<WriterMsg>, holds: Arc<Holds>) {
    let mut failures: u32 = 0;
    loop {
        match holds.next_deadline() {
            None => holds.reaper.notified().await,
            Some(at) => {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                match commit_expired(&writer, &holds, Some(Instant::now())).await {
                    Ok(()) => failures = 0,
                    Err(_) if writer.is_closed() => return,
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        if failures.is_power_of_two() {
                            tracing::warn!(%error, failures, "committing held envelopes failed; trying again");
                        }
                        // Not at once: the deadline that was due is due still.
                        tokio::time::sleep(retry_after(failures)).await;
                    }
                }
            }
        }
    }
}

/// How long the reaper waits after `failures` failed jobs in a row: 10 ms, doubling,
/// at most 1 s.
fn retry_after(failures: u32) -> std::time::Duration {
    let first = std::time::Duration::from_millis(10);
    first
        .saturating_mul(1 << failures.saturating_sub(1).min(7))
        .min(std::time::Duration::from_secs(1))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use parley_protocol::ids::{MessageId, Seq};

    use super::*;
    use crate::metrics::StoreMetrics;
    use crate::store::sqlite::holds::{DedupRow, HeldCopy, HoldLimits};
    use crate::store::sqlite::{open_connection, schema, Durability};
    use crate::store::StoredEnvelope;
    use crate::test_ids::device;

    /// The next message to the writer, within a deadline.
    async fn next_job(jobs: &mut mpsc::Receiver<WriterMsg>) -> threads::WriteJob {
        let msg = tokio::time::timeout(Duration::from_secs(5), jobs.recv())
            .await
            .expect("the reaper sends a job in time")
            .expect("the reaper is running");
        match msg {
            WriterMsg::Job(job) | WriterMsg::Unsynced(job) => job,
            WriterMsg::Close(_) => panic!("the reaper never closes the writer"),
        }
    }

    #[test]
    fn retries_back_off_to_a_second() {
        assert_eq!(retry_after(1), Duration::from_millis(10));
        assert_eq!(retry_after(2), Duration::from_millis(20));
        assert_eq!(retry_after(8), Duration::from_secs(1));
        assert_eq!(retry_after(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_job_dropped_with_a_failed_batch_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn =
            open_connection(&dir.path().join("r.db"), Durability::Normal, false).unwrap();
        schema::migrate(&mut conn).unwrap();
        let holds = Arc::new(Holds::new(
            HoldLimits {
                deadline: Duration::from_millis(5),
                ..HoldLimits::OFF
            },
            Arc::new(StoreMetrics::default()),
        ));
        let copy = HeldCopy {
            to: device(1),
            envelope: StoredEnvelope {
                seq: Seq(1),
                from: device(2),
                id: MessageId([7; 16]),
                accepted_at_ms: 1,
                ciphertext: vec![0; 10],
                category: None,
            },
        };
        let dedup = DedupRow {
            sender: 2,
            id: MessageId([7; 16]),
            sealed_seq: 1,
            digest: vec![7; 16],
            at_ms: 0,
        };
        let mut settlement = holds.hold(vec![copy], dedup, Instant::now());
        holds.batch_committed();
        let (writer, mut jobs) = mpsc::channel(8);
        tokio::spawn(run(writer.clone(), holds.clone()));

        // Dropped unrun, as the writer drops the jobs of a batch after one that failed.
        drop(next_job(&mut jobs).await);
        let job = next_job(&mut jobs).await;
        let metrics = StoreMetrics::default();
        let answerer = threads::Answerer::Inline;
        let mut seqs = SeqBlocks::default();
        threads::commit_batch(
            &conn,
            &mut seqs,
            std::iter::once(job),
            &answerer,
            &metrics,
            Some(&holds),
            true,
        );
        let settled = tokio::time::timeout(Duration::from_secs(5), &mut settlement).await;
        assert_eq!(
            settled.map(|r| r.ok()),
            Ok(Some(Ok(()))),
            "committed by the second try: the sender is answered"
        );
        drop(writer);
    }
}
