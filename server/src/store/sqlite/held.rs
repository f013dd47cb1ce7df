//! The writer's statements for held envelopes (`holds`): committing them to the queue
//! with their dedup rows, and writing the dedup rows of those acked while held.

use parley_protocol::ids::DeviceAddress;
use rusqlite::{params, Connection};

use super::holds::{DedupRow, Holds, Taken};
use super::sql_error;
use crate::store::values::to_i64;
use crate::store::StoreError;

/// Queues held copies taken out of `holds`, each with its send's dedup row when it was
/// its send's last copy (at a deadline, or before a read of the recipient's queue). A
/// recipient device deleted meanwhile gets nothing (its queue went with it), and a
/// sender deleted meanwhile leaves no dedup row.
pub(super) fn commit(conn: &Connection, taken: &[Taken]) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO queue (recipient, seq, sender_account, sender_device, message_id,
                                accepted_at_ms, ciphertext, category)
             SELECT id, ?3, ?4, ?5, ?6, ?7, ?8, NULL
             FROM devices WHERE account = ?1 AND device = ?2",
        )
        .map_err(sql_error)?;
    for t in taken {
        let (to, e) = (&t.copy.to, &t.copy.envelope);
        insert
            .execute(params![
                to.account.as_bytes().as_slice(),
                to.device.0,
                to_i64(e.seq.0),
                e.from.account.as_bytes().as_slice(),
                e.from.device.0,
                e.id.as_bytes().as_slice(),
                to_i64(e.accepted_at_ms),
                e.ciphertext,
            ])
            .map_err(sql_error)?;
    }
    record_sent(conn, taken.iter().filter_map(|t| t.dedup.as_ref()))
}

/// Takes everything held for `devices` out of `holds` and commits it (see [`commit`]),
/// before a read of a device's queue or with the removal of the devices; the caller
/// settles what it returns once the batch committed.
pub(super) fn commit_devices(
    conn: &Connection,
    holds: &Holds,
    devices: &[DeviceAddress],
) -> Result<Vec<Taken>, StoreError> {
    let taken: Vec<Taken> = devices.iter().flat_map(|d| holds.take_device(d)).collect();
    commit(conn, &taken)?;
    Ok(taken)
}

/// Writes the dedup rows of sends settled while held that wait in `holds` (the reaper's
/// job, a deadline after the first of them, or an ack's when they reach
/// `holds::UNRECORDED_MAX`). Until then a retry finds them there; from this job on, in
/// the table. Nobody waits for this: the envelopes are on their recipients' disks, and
/// writing them once per deadline instead of with each batch leaves the batches of held
/// envelopes with nothing to write, so their commits cost no fsync.
pub(super) fn record_acked(conn: &Connection, holds: &Holds) -> Result<(), StoreError> {
    let rows = holds.take_unrecorded();
    if rows.is_empty() {
        return Ok(());
    }
    let written = record_sent(conn, &rows);
    holds.recording(rows);
    written
}

/// Writes dedup rows of held sends.
fn record_sent<'a>(
    conn: &Connection,
    rows: impl IntoIterator<Item = &'a DedupRow>,
) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO sent (sender, message_id, sealed_seq, digest, accepted_at_ms)
             SELECT id, ?2, ?3, ?4, ?5 FROM devices WHERE id = ?1",
        )
        .map_err(sql_error)?;
    for row in rows {
        insert
            .execute(params![
                row.sender,
                row.id.as_bytes().as_slice(),
                row.sealed_seq,
                row.digest,
                row.at_ms,
            ])
            .map_err(sql_error)?;
    }
    Ok(())
}
