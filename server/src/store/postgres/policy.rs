//! The send policy in PostgreSQL: the lane reads an envelope's [`SendFacts`] in the
//! transaction that will store it, [`decide`](crate::store::policy::decide) decides, and the lane writes the
//! decision's [`Effects`] in the same transaction. Only the SQL is here.
//!
//! Locks make the facts hold until the commit, on every node:
//! * the recipient's `queue_head` row, taken (for its seq) before any fact is read, so a
//!   block (which locks the blocking person's `queue_head` rows) is either committed
//!   before the facts are read or waits for this send's commit;
//! * `FOR SHARE` on the sending business's row (suspension, tier and certificate
//!   changes wait) and on the consent row of the claimed category, so a revocation
//!   waits for this send to commit and then purges what it queued, or, if it came first,
//!   this send finds no consent;
//! * `FOR UPDATE` on the business's messages-per-second bucket (`rate_buckets`, with
//!   the arithmetic of `rate_limit::BucketRate`), so that nodes share one bucket.

use std::time::Duration;

use deadpool_postgres::Transaction;
use futures_util::future::{try_join, try_join3, try_join4};
use parley_protocol::business::Category;
use tokio_postgres::{Row, Statement};

use super::errors::Failure;
use crate::rate_limit::{BucketRate, RetryAfter};
use crate::store::policy::{
    category_code, reach_window_start, Consent, Effects, Reach, SendFacts, SendPolicy, Standing,
};
use crate::store::values::{to_i64, to_u64};
use crate::store::NewEnvelope;

/// The `rate_buckets.limit_name` of the business messages-per-second limit.
const BUSINESS_SENDS: &str = "business_sends";

/// The send policy and the arithmetic of its bucket.
#[derive(Debug)]
pub(super) struct SendRules {
    /// The rules.
    pub policy: SendPolicy,
    business_rate: BucketRate,
}

impl SendRules {
    pub(super) fn new(policy: SendPolicy) -> SendRules {
        SendRules {
            business_rate: BucketRate::new(
                policy.business_sends_per_second,
                Duration::from_secs(1),
            ),
            policy,
        }
    }
}

/// The statements of the policy, prepared once per batch (from each connection's cache).
#[derive(Debug)]
pub(super) struct PolicyStatements {
    standing: Statement,
    consent: Statement,
    care_window: Statement,
    reach: Statement,
    ensure_bucket: Statement,
    bucket: Statement,
    open_care_window: Statement,
    count_reach: Statement,
    put_bucket: Statement,
}

impl PolicyStatements {
    pub(super) async fn prepare(tx: &Transaction<'_>) -> Result<PolicyStatements, Failure> {
        Ok(PolicyStatements {
            standing: tx
                .prepare_cached(
                    "SELECT categories, revoked_at_ms IS NULL AND expires_at_ms > $2, tier,
                            suspended_at_ms IS NOT NULL
                     FROM businesses WHERE account = $1 FOR SHARE",
                )
                .await?,
            consent: tx
                .prepare_cached(
                    "SELECT expires_at_ms FROM consents
                     WHERE person = $2 AND business = $1 AND category = $3 FOR SHARE",
                )
                .await?,
            care_window: tx
                .prepare_cached(
                    "SELECT last_message_ms FROM care_windows WHERE person = $2 AND business = $1",
                )
                .await?,
            // The count and the oldest only when the recipient is not counted yet
            // (subplans run on demand).
            reach: tx
                .prepare_cached(
                    "WITH counted AS (
                         SELECT EXISTS (SELECT 1 FROM reach WHERE business = $1
                                        AND recipient = $2 AND first_sent_ms > $3) AS yes)
                     SELECT yes,
                            CASE WHEN yes THEN 0 ELSE
                              (SELECT COUNT(*) FROM reach WHERE business = $1
                               AND first_sent_ms > $3) END,
                            CASE WHEN yes THEN NULL ELSE
                              (SELECT MIN(first_sent_ms) FROM reach WHERE business = $1
                               AND first_sent_ms > $3) END
                     FROM counted",
                )
                .await?,
            // A new bucket is full; inserting it first (a no-op once it exists) makes two
            // first sends at once wait for each other instead of both taking from it.
            ensure_bucket: tx
                .prepare_cached(
                    "INSERT INTO rate_buckets (limit_name, subject, tokens, updated_at_ms)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .await?,
            bucket: tx
                .prepare_cached(
                    "SELECT tokens, updated_at_ms FROM rate_buckets
                     WHERE limit_name = $1 AND subject = $2 FOR UPDATE",
                )
                .await?,
            open_care_window: tx
                .prepare_cached(
                    "INSERT INTO care_windows (person, business, last_message_ms)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (person, business)
                       DO UPDATE SET last_message_ms = excluded.last_message_ms",
                )
                .await?,
            count_reach: tx
                .prepare_cached(
                    "INSERT INTO reach (business, recipient, first_sent_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (business, recipient)
                       DO UPDATE SET first_sent_ms = excluded.first_sent_ms",
                )
                .await?,
            put_bucket: tx
                .prepare_cached(
                    "UPDATE rate_buckets SET tokens = $3, updated_at_ms = $4
                     WHERE limit_name = $1 AND subject = $2",
                )
                .await?,
        })
    }
}

/// The columns of the facts every send needs, for the caller's statement that also reads
/// the sender's dedup entry (one statement over the batch, run after the recipients'
/// heads were locked; its rows are `i`, with columns `from_account` and `to_account`):
/// whether the recipient blocks the sender, whether the recipient is a business, whether
/// the sender is one. Decoded by [`people_facts`].
pub(super) const PEOPLE_FACTS: &str = "
    EXISTS (SELECT 1 FROM blocks WHERE person = i.to_account AND blocked = i.from_account),
    EXISTS (SELECT 1 FROM businesses WHERE account = i.to_account),
    EXISTS (SELECT 1 FROM businesses WHERE account = i.from_account)";

/// The facts of [`PEOPLE_FACTS`], read from `row` from column `first` on, and whether
/// the sender is a business (then [`read_business_facts`] reads its standing).
/// `recipient_exists` is for the caller to fill in.
pub(super) fn people_facts(row: &Row, first: usize) -> Result<(SendFacts, bool), Failure> {
    let facts = SendFacts {
        blocked: row.try_get(first)?,
        recipient_is_business: row.try_get(first + 1)?,
        ..SendFacts::between_people()
    };
    Ok((facts, row.try_get(first + 2)?))
}

fn standing_of(row: &Row) -> Result<Standing, Failure> {
    Ok(Standing::from_stored(
        row.try_get(0)?,
        row.try_get::<_, Option<bool>>(1)?.unwrap_or(false),
        row.try_get(2)?,
        row.try_get(3)?,
    ))
}

/// The business's bucket as this send found it: its tokens refilled to the send's time.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Completes `facts` of a send from a business: its standing (`FOR SHARE`), consent
/// (`FOR SHARE`) or care window, reach, and its bucket (`FOR UPDATE`), in one pipeline.
/// Returns the bucket for [`write_effects`].
pub(super) async fn read_business_facts(
    tx: &Transaction<'_>,
    st: &PolicyStatements,
    rules: &SendRules,
    e: &NewEnvelope,
    facts: &mut SendFacts,
) -> Result<Bucket, Failure> {
    let from = e.from.account.as_bytes().as_slice();
    let to = e.to.account.as_bytes().as_slice();
    let now = to_i64(e.now_ms);
    let conversation = e.category == Some(Category::Conversation);
    let claimed = e.category.filter(|_| !conversation).map(category_code);
    let window_start = to_i64(reach_window_start(e.now_ms));
    let full = rules.business_rate.full();
    let standing = async { tx.query_opt(&st.standing, &[&from, &now]).await };
    let consent = async {
        match &claimed {
            Some(code) => tx.query_opt(&st.consent, &[&from, &to, code]).await,
            None => Ok(None),
        }
    };
    let care_window = async {
        if conversation {
            tx.query_opt(&st.care_window, &[&from, &to]).await
        } else {
            Ok(None)
        }
    };
    let reach = async {
        if claimed.is_some() {
            tx.query_opt(&st.reach, &[&from, &to, &window_start]).await
        } else {
            Ok(None)
        }
    };
    let bucket = async {
        tx.execute(&st.ensure_bucket, &[&BUSINESS_SENDS, &from, &full, &now])
            .await?;
        tx.query_one(&st.bucket, &[&BUSINESS_SENDS, &from]).await
    };
    let (standing, (consent, care_window, reach, bucket)) =
        try_join(standing, try_join4(consent, care_window, reach, bucket)).await?;
    facts.sender_business = standing.map(|row| standing_of(&row)).transpose()?;

    if let Some(row) = consent {
        facts.consent = Consent::Granted {
            expires_at_ms: row.try_get::<_, Option<i64>>(0)?.map(to_u64),
        };
    }
    if let Some(row) = care_window {
        facts.care_window_last_ms = Some(to_u64(row.try_get(0)?));
    }
    if let Some(row) = reach {
        facts.reach = Reach {
            already_counted: row.try_get(0)?,
            recipients: u32::try_from(row.try_get::<_, i64>(1)?).unwrap_or(u32::MAX),
            oldest_ms: row.try_get::<_, Option<i64>>(2)?.map(to_u64),
        };
    }
    let stored_at = to_u64(bucket.try_get(1)?);
    let elapsed = Duration::from_millis(e.now_ms.saturating_sub(stored_at));
    let tokens = rules.business_rate.refill(bucket.try_get(0)?, elapsed);
    facts.rate_limited_for_ms = match rules.business_rate.take(tokens, 1) {
        Ok(_) => None,
        Err(RetryAfter(wait)) => Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
    };
    Ok(Bucket {
        tokens,
        at_ms: e.now_ms.max(stored_at),
    })
}

/// Writes what an accepted send changes besides the queue. Its statements go out at its
/// first poll, so the caller can pipeline them with its own.
pub(super) async fn write_effects(
    tx: &Transaction<'_>,
    st: &PolicyStatements,
    rules: &SendRules,
    e: &NewEnvelope,
    effects: Effects,
    bucket: Option<Bucket>,
) -> Result<(), Failure> {
    let from = e.from.account.as_bytes().as_slice();
    let to = e.to.account.as_bytes().as_slice();
    let now = to_i64(e.now_ms);
    let care_window = async {
        if effects.open_care_window {
            tx.execute(&st.open_care_window, &[&from, &to, &now])
                .await?;
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    let reach = async {
        if effects.count_reach {
            tx.execute(&st.count_reach, &[&from, &to, &now]).await?;
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    let bucket = async {
        if let (true, Some(b)) = (effects.take_rate_token, bucket) {
            let left = rules.business_rate.take(b.tokens, 1).unwrap_or(0.0);
            let at = to_i64(b.at_ms);
            tx.execute(&st.put_bucket, &[&BUSINESS_SENDS, &from, &left, &at])
                .await?;
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    try_join3(care_window, reach, bucket).await?;
    Ok(())
}
