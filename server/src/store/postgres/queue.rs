//! The SQL of the queues besides storing (`enqueue.rs`): reading a page, cumulative
//! acks, and the retention sweep.

use std::collections::HashMap;

use deadpool_postgres::{ClientWrapper, Transaction};
use futures_util::future::try_join_all;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId, Seq};

use super::errors::Failure;
use crate::store::policy::category_from_code;
use crate::store::values::{corrupt, to_i64, to_u64};
use crate::store::{StoredEnvelope, SweepReport};

/// Rows deleted per sweep call, so that one sweep never holds locks for long.
pub(super) const SWEEP_BATCH: i64 = 5_000;

/// First key of the advisory lock that lets one node at a time sweep ("PRLZ"; the
/// second key is the schema's, as for migrations).
const LOCK_CLASS_SWEEP: i32 = 0x5052_4c5a;

/// A page of a device's queue: `$1`, `$2` the device, `after < seq < below` (`$3`, `$5`),
/// at most `$4` rows, in seq order.
const PAGE: &str = "SELECT seq, sender_account, sender_device, message_id, accepted_at_ms,
                           ciphertext, category
                    FROM queue
                    WHERE recipient = (SELECT id FROM devices WHERE account = $1 AND device = $2)
                      AND seq > $3 AND seq < $5
                    ORDER BY seq LIMIT $4";

/// Up to `limit` envelopes of `device` after `after`, in seq order.
pub(super) async fn page(
    client: &ClientWrapper,
    device: &DeviceAddress,
    after: Seq,
    limit: usize,
) -> Result<Vec<StoredEnvelope>, Failure> {
    let statement = client.prepare_cached(PAGE).await?;
    let rows = client
        .query(
            &statement,
            &page_parameters(device, after, Seq(u64::MAX), limit).as_refs(),
        )
        .await?;
    decode_page(rows)
}

/// Up to `limit` envelopes of `device` with `after < seq < below`, in seq order, in `tx`.
pub(super) async fn page_below(
    tx: &Transaction<'_>,
    device: &DeviceAddress,
    after: Seq,
    below: Seq,
    limit: usize,
) -> Result<Vec<StoredEnvelope>, Failure> {
    let statement = tx.prepare_cached(PAGE).await?;
    let rows = tx
        .query(
            &statement,
            &page_parameters(device, after, below, limit).as_refs(),
        )
        .await?;
    decode_page(rows)
}

/// The parameters of [`PAGE`].
struct PageParameters<'a>(&'a [u8], i64, i64, i64, i64);

impl PageParameters<'_> {
    fn as_refs(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [&self.0, &self.1, &self.2, &self.3, &self.4]
    }
}

fn page_parameters(
    device: &DeviceAddress,
    after: Seq,
    below: Seq,
    limit: usize,
) -> PageParameters<'_> {
    PageParameters(
        device.account.as_bytes().as_slice(),
        i64::from(device.device.0),
        to_i64(after.0),
        i64::try_from(limit).unwrap_or(i64::MAX),
        to_i64(below.0),
    )
}

/// The envelopes of a [`PAGE`]'s rows.
fn decode_page(rows: Vec<tokio_postgres::Row>) -> Result<Vec<StoredEnvelope>, Failure> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let account: Vec<u8> = row.try_get(1)?;
        let sender_device: i64 = row.try_get(2)?;
        let id: Vec<u8> = row.try_get(3)?;
        out.push(StoredEnvelope {
            seq: Seq(to_u64(row.try_get(0)?)),
            from: DeviceAddress {
                account: AccountId::from_slice(&account)
                    .ok_or_else(|| corrupt("queue.sender_account"))?,
                device: DeviceId(
                    u32::try_from(sender_device).map_err(|_| corrupt("queue.sender_device"))?,
                ),
            },
            id: MessageId::from_slice(&id).ok_or_else(|| corrupt("queue.message_id"))?,
            accepted_at_ms: to_u64(row.try_get(4)?),
            ciphertext: row.try_get(5)?,
            category: row
                .try_get::<_, Option<i64>>(6)?
                .and_then(category_from_code),
        });
    }
    Ok(out)
}

/// Applies a batch's acks: deletes each device's envelopes up to the highest seq it
/// acknowledged, one statement per device (all in one pipeline). Returns, per ack in
/// order, the envelopes it deleted: a device's count goes to its last ack (its acks are
/// cumulative), its earlier ones get 0.
///
/// With `record` (holding on, `held.rs`) it also records each device's highest ack in
/// `queue_acked`, in the same pipeline.
pub(super) async fn ack_through(
    tx: &Transaction<'_>,
    acks: &[(&DeviceAddress, Seq)],
    record: bool,
) -> Result<Vec<u64>, Failure> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let statement = tx
        .prepare_cached(
            "DELETE FROM queue
             WHERE recipient = (SELECT id FROM devices WHERE account = $1 AND device = $2)
               AND seq <= $3",
        )
        .await?;
    // Per device: the highest seq and the index of its last ack.
    let mut highest: HashMap<&DeviceAddress, (Seq, usize)> = HashMap::new();
    for (index, (device, through)) in acks.iter().enumerate() {
        let entry = highest.entry(*device).or_insert((*through, index));
        *entry = (entry.0.max(*through), index);
    }
    let deletes = highest.iter().map(|(device, (through, last))| {
        let statement = &statement;
        async move {
            let deleted = tx
                .execute(
                    statement,
                    &[
                        &device.account.as_bytes().as_slice(),
                        &i64::from(device.device.0),
                        &to_i64(through.0),
                    ],
                )
                .await?;
            Ok::<_, Failure>((*last, deleted))
        }
    });
    let recorded = async {
        if !record {
            return Ok(0);
        }
        let (accounts, devices, throughs): (Vec<&[u8]>, Vec<i64>, Vec<i64>) = highest
            .iter()
            .map(|(device, (through, _))| {
                (
                    device.account.as_bytes().as_slice(),
                    i64::from(device.device.0),
                    to_i64(through.0),
                )
            })
            .collect();
        let statement = tx
            .prepare_cached(
                "INSERT INTO queue_acked (recipient, through)
                 SELECT d.id, a.through
                 FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS a(account, device, through)
                 JOIN devices d ON d.account = a.account AND d.device = a.device
                 ON CONFLICT (recipient)
                 DO UPDATE SET through = GREATEST(queue_acked.through, EXCLUDED.through)",
            )
            .await?;
        Ok::<_, Failure>(
            tx.execute(&statement, &[&accounts, &devices, &throughs])
                .await?,
        )
    };
    let (deleted, _) = futures_util::future::try_join(try_join_all(deletes), recorded).await?;
    let mut counts = vec![0; acks.len()];
    for (last, deleted) in deleted {
        if let Some(count) = counts.get_mut(last) {
            *count = deleted;
        }
    }
    Ok(counts)
}

/// Deletes at most [`SWEEP_BATCH`] envelopes accepted before `queue_cutoff_ms` and as
/// many dedup entries older than `dedup_cutoff_ms`, if no other node is sweeping (then
/// it deletes nothing; the caller repeats until nothing is deleted).
pub(super) async fn sweep(
    tx: &Transaction<'_>,
    cutoffs: &(u64, u64),
) -> Result<SweepReport, Failure> {
    let (queue_cutoff_ms, dedup_cutoff_ms) = *cutoffs;
    let ours: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1, COALESCE(hashtext(current_schema()), 0))",
            &[&LOCK_CLASS_SWEEP],
        )
        .await?
        .try_get(0)?;
    if !ours {
        return Ok(SweepReport::default());
    }
    let envelopes = tx
        .execute(
            "DELETE FROM queue WHERE (recipient, seq) IN
               (SELECT recipient, seq FROM queue WHERE accepted_at_ms < $1 LIMIT $2)",
            &[&to_i64(queue_cutoff_ms), &SWEEP_BATCH],
        )
        .await?;
    let dedup_entries = tx
        .execute(
            "DELETE FROM sent WHERE (sender, message_id) IN
               (SELECT sender, message_id FROM sent WHERE accepted_at_ms < $1 LIMIT $2)",
            &[&to_i64(dedup_cutoff_ms), &SWEEP_BATCH],
        )
        .await?;
    Ok(SweepReport {
        envelopes,
        dedup_entries,
    })
}
