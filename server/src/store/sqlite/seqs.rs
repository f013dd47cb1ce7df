//! Seqs handed out from durable reservations.
//!
//! A recipient device's seqs increase; they are not dense. `devices.next_seq` is the end
//! of the device's durable reservation: the first seq *not* reserved. The writer thread
//! owns one [`SeqBlocks`] and hands seqs out of it from memory; when a device's block is
//! used up (or the device is not in memory yet) it reserves the next [`SEQ_BLOCK`] seqs
//! with one `UPDATE` in the transaction of the envelope that takes the first of them.
//! Answers (and hand-offs to recipients) come after the commit, so every seq anybody
//! sees is covered by a committed reservation:
//!
//! ```text
//!  devices.next_seq (committed)        after the batch's UPDATE
//!          │                                    │
//!   ... ───┼── 1025 1026 ... 2048 ──────────────┼── 2049 ...
//!          └ handed out from memory, one by one ┘
//! ```
//!
//! * After a restart (or `kill -9`) a device starts at its reservation end: the rest of
//!   its last block is skipped (a gap), never given again.
//! * A batch that fails or is rolled back takes its reservations with it; the writer then
//!   [`clear`](SeqBlocks::clear)s the blocks, and the next seq of each device is read from
//!   its committed reservation again.
//! * A deleted device row is [`forget`](SeqBlocks::forget)ed in the job that deletes it:
//!   SQLite may give its row key to a new device, whose reservation starts again at 1.
//!
//! What this module does not know: which envelopes take the seqs (`queries`), nor when
//! a batch commits (`threads`).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::sql_error;
use crate::store::values::corrupt;
use crate::store::StoreError;

/// Seqs reserved for a device at a time. A reservation is one `UPDATE` of the device
/// row, so the hot path writes it once per this many envelopes; a restart skips at most
/// this many seqs of each device (seqs are 63-bit: that never runs out).
pub(super) const SEQ_BLOCK: i64 = 1024;

/// Most devices whose blocks are kept in memory (about 40 bytes each, so a few MiB).
/// Past it an arbitrary block is dropped: that device skips the rest of its block and
/// reserves a new one when it next receives, as after a restart.
pub(super) const SEQ_BLOCKS_MAX: usize = 1 << 17;

/// The writer's blocks of reserved seqs, by device row key (`devices.id`).
#[derive(Debug, Default)]
pub(super) struct SeqBlocks {
    blocks: HashMap<i64, Block>,
}

/// One device's reserved seqs not handed out yet: `next..end`.
#[derive(Clone, Copy, Debug)]
struct Block {
    next: i64,
    end: i64,
}

impl SeqBlocks {
    /// Takes the next seq of the device whose row key is `device`, reserving a new block
    /// in the current transaction (on `conn`) when its block is used up or not known.
    /// The one rule for every envelope queued, whatever path it comes by.
    pub(super) fn take(&mut self, conn: &Connection, device: i64) -> Result<i64, StoreError> {
        if let Some(block) = self.blocks.get_mut(&device) {
            if block.next < block.end {
                let seq = block.next;
                block.next += 1;
                return Ok(seq);
            }
        }
        let end = reserve(conn, device)?;
        // The block starts where the committed reservation ended, whatever memory said:
        // after a restart, an eviction or a cleared batch that is the first seq nobody
        // can have seen.
        let start = end
            .checked_sub(SEQ_BLOCK)
            .ok_or_else(|| corrupt("devices.next_seq"))?;
        if self.blocks.len() >= SEQ_BLOCKS_MAX && !self.blocks.contains_key(&device) {
            let evicted = self.blocks.keys().next().copied();
            if let Some(evicted) = evicted {
                self.blocks.remove(&evicted);
            }
        }
        self.blocks.insert(
            device,
            Block {
                next: start + 1,
                end,
            },
        );
        Ok(start)
    }

    /// Drops every block: the batch that may have reserved them did not commit.
    pub(super) fn clear(&mut self) {
        self.blocks.clear();
    }

    /// Drops the block of a device row being deleted.
    pub(super) fn forget(&mut self, device: i64) {
        self.blocks.remove(&device);
    }
}

/// Moves the reservation of device row `device` on by [`SEQ_BLOCK`]; returns its new end.
fn reserve(conn: &Connection, device: i64) -> Result<i64, StoreError> {
    // `RETURNING` opens and closes a temporary B-tree on every run (a few per cent of
    // the writer when it ran for every envelope); this runs once per block.
    let end: Option<i64> = conn
        .prepare_cached(
            "UPDATE devices SET next_seq = next_seq + ?2 WHERE id = ?1 RETURNING next_seq",
        )
        .and_then(|mut s| {
            s.query_row(params![device, SEQ_BLOCK], |r| r.get(0))
                .optional()
        })
        .map_err(sql_error)?;
    end.ok_or_else(|| StoreError::Database("a recipient device has no row".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{open_connection, schema, threads, Durability};

    /// A database with one device row; its key.
    fn database(dir: &std::path::Path) -> (Connection, i64) {
        let mut conn = open_connection(&dir.join("seqs.db"), Durability::Normal, false).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO devices (account, device, created_at_ms) VALUES (x'01', 1, 0)",
            [],
        )
        .unwrap();
        let key = conn.last_insert_rowid();
        (conn, key)
    }

    fn reservation_end(conn: &Connection, key: i64) -> i64 {
        conn.query_row("SELECT next_seq FROM devices WHERE id = ?1", [key], |r| {
            r.get(0)
        })
        .unwrap()
    }

    /// Takes `n` seqs of `key` in one committed transaction.
    fn take_committed(conn: &Connection, seqs: &mut SeqBlocks, key: i64, n: usize) -> Vec<i64> {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let taken = (0..n).map(|_| seqs.take(conn, key).unwrap()).collect();
        conn.execute_batch("COMMIT").unwrap();
        taken
    }

    #[test]
    fn a_block_is_reserved_once_and_handed_out_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, key) = database(dir.path());
        let mut seqs = SeqBlocks::default();
        assert_eq!(take_committed(&conn, &mut seqs, key, 3), vec![1, 2, 3]);
        assert_eq!(reservation_end(&conn, key), 1 + SEQ_BLOCK);
        let n = usize::try_from(SEQ_BLOCK).unwrap();
        let rest = take_committed(&conn, &mut seqs, key, n);
        assert_eq!(rest.first(), Some(&4));
        assert_eq!(rest.last(), Some(&(SEQ_BLOCK + 3)), "into the second block");
        assert_eq!(reservation_end(&conn, key), 1 + 2 * SEQ_BLOCK);
    }

    #[test]
    fn after_reopen_the_next_seq_is_the_reservation_end() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, key) = database(dir.path());
        let mut seqs = SeqBlocks::default();
        assert_eq!(take_committed(&conn, &mut seqs, key, 2), vec![1, 2]);
        drop((conn, seqs));
        let conn = open_connection(&dir.path().join("seqs.db"), Durability::Normal, false).unwrap();
        let mut reopened = SeqBlocks::default();
        assert_eq!(
            take_committed(&conn, &mut reopened, key, 2),
            vec![1 + SEQ_BLOCK, 2 + SEQ_BLOCK],
            "a gap, never a seq given twice"
        );
    }

    #[test]
    fn a_rolled_back_reservation_is_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, key) = database(dir.path());
        let mut seqs = SeqBlocks::default();
        assert_eq!(take_committed(&conn, &mut seqs, key, 1), vec![1]);
        // Use the block up in a batch that fails after reserving the next one.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..SEQ_BLOCK + 5 {
            seqs.take(&conn, key).unwrap();
        }
        assert_eq!(reservation_end(&conn, key), 1 + 2 * SEQ_BLOCK);
        conn.execute_batch("ROLLBACK").unwrap();
        seqs.clear();
        assert_eq!(reservation_end(&conn, key), 1 + SEQ_BLOCK);
        assert_eq!(
            take_committed(&conn, &mut seqs, key, 1),
            vec![1 + SEQ_BLOCK],
            "from the committed reservation"
        );
    }

    /// Runs one job through the writer's `commit_batch`; its answer.
    fn run_batch<T: Send + 'static>(
        conn: &Connection,
        seqs: &mut SeqBlocks,
        job: impl FnOnce(&Connection, &mut SeqBlocks) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = threads::write_job(job, reply);
        let metrics = crate::metrics::StoreMetrics::default();
        threads::commit_batch(
            conn,
            seqs,
            std::iter::once(job),
            &threads::Answerer::Inline,
            &metrics,
            None,
            true,
        );
        answer.blocking_recv().unwrap()
    }

    #[test]
    fn a_failed_batch_hands_out_nothing_of_its_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, key) = database(dir.path());
        let mut seqs = SeqBlocks::default();
        assert_eq!(
            run_batch(&conn, &mut seqs, move |c, s| s.take(c, key)),
            Ok(1)
        );
        // The rest of the first block and the start of a second, then a failure.
        let failed = run_batch(&conn, &mut seqs, move |c, s| {
            for _ in 0..SEQ_BLOCK {
                s.take(c, key)?;
            }
            Err::<(), _>(StoreError::Database("injected".into()))
        });
        assert!(failed.is_err());
        assert_eq!(reservation_end(&conn, key), 1 + SEQ_BLOCK, "rolled back");
        assert_eq!(
            run_batch(&conn, &mut seqs, move |c, s| s.take(c, key)),
            Ok(1 + SEQ_BLOCK),
            "the next seq comes from the committed reservation"
        );
    }

    #[test]
    fn a_forgotten_row_key_starts_again_from_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, key) = database(dir.path());
        let mut seqs = SeqBlocks::default();
        take_committed(&conn, &mut seqs, key, 2);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.execute("DELETE FROM devices WHERE id = ?1", [key])
            .unwrap();
        seqs.forget(key);
        // A plain insert gets the highest row key again once its row is gone (the
        // server's `devices::INSERT_DEVICE` never does; the seq blocks must not rely on
        // that).
        conn.execute(
            "INSERT INTO devices (account, device, created_at_ms) VALUES (x'01', 1, 0)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), key, "the key was reused");
        assert_eq!(seqs.take(&conn, key).unwrap(), 1);
        conn.execute_batch("COMMIT").unwrap();
    }
}
