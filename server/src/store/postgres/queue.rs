//! The SQL of the queues: storing an envelope (inside a lane's transaction), reading a
//! page, cumulative acks, and the retention sweep.
//!
//! An envelope takes up to three steps inside its batch's transaction, each a pipeline
//! of statements sent together (tokio-postgres pipelines the queries of one
//! connection that are polled together; they run in the order sent):
//!
//! 1. **the recipient's next seq** (`UPDATE queue_head ... RETURNING`, which locks the
//!    row until the commit); then one statement for the sender's device key, any earlier
//!    send of its message id and the send facts about the people involved (`policy.rs`).
//! 2. only for a business sender: its standing, consent or care window, reach, rate
//!    bucket.
//! 3. the decision's effects, the queue row and the dedup row. These are not waited
//!    for: they go out ahead of the next envelope's step 1 (or before the commit), so an
//!    envelope between people costs one round trip.
//!
//! The seq is taken before the facts are read so that the facts are read under the
//! recipient's lock (see `policy.rs`). A send that turns out to be a retry or a refusal
//! gives its seq back (`next_seq - 1`): nobody else can have taken one meanwhile, since
//! the row stays locked until this transaction ends, so seqs stay dense.

use deadpool_postgres::{ClientWrapper, Transaction};
use futures_util::future::try_join3;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId, Seq};
use tokio_postgres::Statement;

use super::errors::Failure;
use super::policy::{self, PolicyStatements, SendRules, PEOPLE_FACTS};
use super::pool::JobFuture;
use crate::store::policy::{category_code, category_from_code, decide, Decision};
use crate::store::retry::{answer_retry, ciphertext_digest, EarlierSend};
use crate::store::values::{corrupt, to_i64, to_u64};
use crate::store::{EnqueueOutcome, NewEnvelope, StoreError, StoredEnvelope, SweepReport};

/// Rows deleted per sweep call, so that one sweep never holds locks for long.
pub(super) const SWEEP_BATCH: i64 = 5_000;

/// First key of the advisory lock that lets one node at a time sweep ("PRLZ"; the
/// second key is the schema's, as for migrations).
const LOCK_CLASS_SWEEP: i32 = 0x5052_4c5a;

/// The statements of [`enqueue`], prepared once per batch.
#[derive(Debug)]
pub(super) struct EnqueueStatements {
    sender: Statement,
    take_seq: Statement,
    give_back_seq: Statement,
    insert_queue: Statement,
    insert_sent: Statement,
    policy: PolicyStatements,
}

impl EnqueueStatements {
    pub(super) async fn prepare(tx: &Transaction<'_>) -> Result<EnqueueStatements, Failure> {
        Ok(EnqueueStatements {
            sender: tx
                .prepare_cached(&format!(
                    "SELECT d.id, s.seq, s.recipient, s.digest, {PEOPLE_FACTS}
                     FROM devices AS d
                     LEFT JOIN sent AS s ON s.sender = d.id AND s.message_id = $3
                     WHERE d.account = $1 AND d.device = $2"
                ))
                .await?,
            take_seq: tx
                .prepare_cached(
                    "UPDATE queue_head SET next_seq = next_seq + 1
                     WHERE recipient = (SELECT id FROM devices WHERE account = $1 AND device = $2)
                     RETURNING recipient, next_seq - 1",
                )
                .await?,
            give_back_seq: tx
                .prepare_cached(
                    "UPDATE queue_head SET next_seq = next_seq - 1 WHERE recipient = $1",
                )
                .await?,
            insert_queue: tx
                .prepare_cached(
                    "INSERT INTO queue (recipient, seq, sender_account, sender_device,
                                        message_id, accepted_at_ms, ciphertext, category)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?,
            insert_sent: tx
                .prepare_cached(
                    "INSERT INTO sent (sender, message_id, seq, recipient, digest, accepted_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?,
            policy: PolicyStatements::prepare(tx).await?,
        })
    }
}

/// Writes of an accepted envelope that are sent but not yet confirmed: the caller sends
/// them with the next envelope's reads (see [`enqueue`]) or awaits them before it
/// commits. Any failure among them fails the transaction.
pub(super) type Writes<'a> = JobFuture<'a, ()>;

/// Stores `e` (or finds the earlier result of its id) in the caller's transaction.
///
/// `before` are the previous envelope's writes: they go out in the same pipeline as this
/// envelope's reads, ahead of them (so the reads see them), which saves a round trip per
/// envelope. The writes of `e` itself come back unsent, for the caller to pass on to the
/// next envelope or to await before the commit.
pub(super) async fn enqueue<'a>(
    tx: &'a Transaction<'a>,
    st: &'a EnqueueStatements,
    rules: &'a SendRules,
    e: &'a NewEnvelope,
    before: Option<Writes<'a>>,
) -> Result<(EnqueueOutcome, Option<Writes<'a>>), Failure> {
    let from_account = e.from.account.as_bytes().as_slice();
    let from_device = i64::from(e.from.device.0);
    let to_account = e.to.account.as_bytes().as_slice();
    let to_device = i64::from(e.to.device.0);
    let id = e.id.as_bytes().as_slice();
    let before = async {
        match before {
            Some(writes) => writes.await,
            None => Ok(()),
        }
    };
    // In this order: the seq (and the recipient's lock) before the facts.
    let ((), taken, sender) = try_join3(
        before,
        async {
            let row = tx
                .query_opt(&st.take_seq, &[&to_account, &to_device])
                .await?;
            Ok(row)
        },
        async {
            let row = tx
                .query_opt(&st.sender, &[&from_account, &from_device, &id, &to_account])
                .await?;
            Ok(row)
        },
    )
    .await?;
    let sender = sender.ok_or_else(|| StoreError::Database("sender device vanished".into()))?;
    let sender_key: i64 = sender.try_get(0)?;
    let (mut facts, from_a_business) = policy::people_facts(&sender, 4)?;
    // (recipient key, seq) when the recipient exists.
    let taken: Option<(i64, i64)> = match taken {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    };
    let digest = ciphertext_digest(&e.ciphertext);
    if let Some(earlier) = sender.try_get::<_, Option<i64>>(1)? {
        give_back(tx, st, taken).await?;
        let earlier_recipient: Option<i64> = sender.try_get(2)?;
        let earlier_digest: Option<Vec<u8>> = sender.try_get(3)?;
        let outcome = answer_retry(EarlierSend {
            seq: Seq(to_u64(earlier)),
            same_recipient: earlier_recipient.map(|r| Some(r) == taken.map(|(key, _)| key)),
            same_bytes: earlier_digest.map(|d| d.as_slice() == digest.as_slice()),
        });
        return Ok((outcome, None));
    }
    facts.recipient_exists = taken.is_some();
    let bucket = if from_a_business {
        Some(policy::read_business_facts(tx, &st.policy, rules, e, &mut facts).await?)
    } else {
        None
    };
    let (from_business, effects) = match decide(&facts, e.category, e.now_ms, &rules.policy) {
        Decision::Refuse(outcome) => {
            give_back(tx, st, taken).await?;
            return Ok((outcome, None));
        }
        Decision::Accept {
            from_business,
            effects,
        } => (from_business, effects),
    };
    let Some((recipient, seq)) = taken else {
        return Ok((EnqueueOutcome::UnknownRecipient, None));
    };
    let writes: Writes<'a> = Box::pin(async move {
        let now = to_i64(e.now_ms);
        let category = e.category.filter(|_| from_business).map(category_code);
        let digest = digest.as_slice();
        try_join3(
            policy::write_effects(tx, &st.policy, rules, e, effects, bucket),
            async {
                tx.execute(
                    &st.insert_queue,
                    &[
                        &recipient,
                        &seq,
                        &from_account,
                        &from_device,
                        &id,
                        &now,
                        &e.ciphertext,
                        &category,
                    ],
                )
                .await?;
                Ok(())
            },
            async {
                tx.execute(
                    &st.insert_sent,
                    &[&sender_key, &id, &seq, &recipient, &digest, &now],
                )
                .await?;
                Ok(())
            },
        )
        .await?;
        Ok(())
    });
    let outcome = EnqueueOutcome::Accepted {
        seq: Seq(to_u64(seq)),
        from_business,
    };
    Ok((outcome, Some(writes)))
}

/// Returns a seq taken for an envelope that is not stored.
async fn give_back(
    tx: &Transaction<'_>,
    st: &EnqueueStatements,
    taken: Option<(i64, i64)>,
) -> Result<(), Failure> {
    if let Some((recipient, _)) = taken {
        tx.execute(&st.give_back_seq, &[&recipient]).await?;
    }
    Ok(())
}

/// Up to `limit` envelopes of `device` after `after`, in seq order.
pub(super) async fn page(
    client: &ClientWrapper,
    device: &DeviceAddress,
    after: Seq,
    limit: usize,
) -> Result<Vec<StoredEnvelope>, Failure> {
    let statement = client
        .prepare_cached(
            "SELECT seq, sender_account, sender_device, message_id, accepted_at_ms, ciphertext,
                    category
             FROM queue
             WHERE recipient = (SELECT id FROM devices WHERE account = $1 AND device = $2)
               AND seq > $3
             ORDER BY seq LIMIT $4",
        )
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &statement,
            &[
                &device.account.as_bytes().as_slice(),
                &i64::from(device.device.0),
                &to_i64(after.0),
                &limit,
            ],
        )
        .await?;
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

/// Deletes the envelopes of `device` up to `through`; returns how many.
pub(super) async fn ack_through(
    tx: &Transaction<'_>,
    device: &DeviceAddress,
    through: Seq,
) -> Result<u64, Failure> {
    let statement = tx
        .prepare_cached(
            "DELETE FROM queue
             WHERE recipient = (SELECT id FROM devices WHERE account = $1 AND device = $2)
               AND seq <= $3",
        )
        .await?;
    Ok(tx
        .execute(
            &statement,
            &[
                &device.account.as_bytes().as_slice(),
                &i64::from(device.device.0),
                &to_i64(through.0),
            ],
        )
        .await?)
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
