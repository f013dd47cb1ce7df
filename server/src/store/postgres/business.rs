//! The SQL behind consent, blocks, reports, business lookups and display names (the
//! operator's commands are in `admin.rs`, the send policy in `policy.rs`; the rules in
//! `store::business`).

use deadpool_postgres::{ClientWrapper, Transaction};
use futures_util::future::try_join4;
use parley_protocol::business::CategorySet;
use parley_protocol::ids::AccountId;

use super::errors::Failure;
use crate::store::admin::decode_certificate;
use crate::store::business::{business_sweep_cutoffs, judge_consent, ConsentFacts, NameCheck};
use crate::store::policy::category_code;
use crate::store::values::{to_day, to_i64, to_u64};
use crate::store::{
    BusinessRecord, BusinessWindows, ConsentChange, ConsentOutcome, ReportOutcome, ReportPolicy,
};

use super::queue::SWEEP_BATCH;

/// What [`change_consent`] takes.
pub(super) type ConsentInput = (AccountId, ConsentChange, u64);

/// Stores a verified grant or revocation. A revocation deletes the consent rows first:
/// that waits for every send holding one of them (`FOR SHARE`), so the purge after it
/// sees, and deletes, what those sends queued; a send after it finds no consent.
pub(super) async fn change_consent(
    tx: &Transaction<'_>,
    input: &ConsentInput,
) -> Result<ConsentOutcome, Failure> {
    let (user, change, now_ms) = input;
    let record = change.record();
    let business = record.business();
    let u = user.as_bytes().as_slice();
    let b = business.as_bytes().as_slice();
    let nonce = change.nonce();
    let nonce = nonce.as_bytes().as_slice();
    let now = to_i64(*now_ms);
    let (replayed, verified, is_business, latest) = try_join4(
        tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM consent_log WHERE person = $1 AND nonce = $2)",
            &[&u, &nonce],
        ),
        tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM businesses WHERE account = $1
                              AND revoked_at_ms IS NULL AND expires_at_ms > $2)",
            &[&b, &now],
        ),
        tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM businesses WHERE account = $1)",
            &[&b],
        ),
        tx.query_one(
            "SELECT MAX(issued_at_ms) FROM consent_log
             WHERE person = $1 AND business = $2 AND revocation",
            &[&u, &b],
        ),
    )
    .await?;
    let facts = ConsentFacts {
        replayed: replayed.try_get(0)?,
        verified: verified.try_get(0)?,
        is_business: is_business.try_get(0)?,
        latest_revocation_ms: latest.try_get::<_, Option<i64>>(0)?.map(to_u64),
    };
    if let Err(reason) = judge_consent(change, facts) {
        return Ok(ConsentOutcome::Invalid(reason));
    }
    tx.execute(
        "INSERT INTO consent_log (person, nonce, business, revocation, categories,
                                  issued_at_ms, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &u,
            &nonce,
            &b,
            &change.is_revocation(),
            &i64::from(record.categories().bits()),
            &to_i64(record.issued_at_ms()),
            &record.encode(),
        ],
    )
    .await?;
    let mut purged = 0;
    match change {
        ConsentChange::Grant(g) => {
            let codes: Vec<i64> = g.grant.categories.iter().map(category_code).collect();
            tx.execute(
                "INSERT INTO consents (person, business, category, expires_at_ms, granted_at_ms)
                 SELECT $1, $2, category, $4, $5 FROM unnest($3::bigint[]) AS t (category)
                 ON CONFLICT (person, business, category) DO UPDATE
                   SET expires_at_ms = excluded.expires_at_ms,
                       granted_at_ms = excluded.granted_at_ms",
                &[
                    &u,
                    &b,
                    &codes,
                    &g.grant.expires_at_ms.map(to_i64),
                    &to_i64(to_day(*now_ms)),
                ],
            )
            .await?;
        }
        ConsentChange::Revoke(r) => {
            let mask = i64::from(r.revocation.categories.bits());
            tx.execute(
                "DELETE FROM consents
                 WHERE person = $1 AND business = $2 AND (category & $3) <> 0",
                &[&u, &b, &mask],
            )
            .await?;
            purged = tx
                .execute(
                    "DELETE FROM queue
                     WHERE recipient IN (SELECT id FROM devices WHERE account = $1)
                       AND sender_account = $2 AND category IS NOT NULL
                       AND (category & $3) <> 0",
                    &[&u, &b, &mask],
                )
                .await?;
        }
    }
    let bits: i64 = tx
        .query_one(
            "SELECT COALESCE(bit_or(category), 0) FROM consents
             WHERE person = $1 AND business = $2
               AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
            &[&u, &b, &now],
        )
        .await?
        .try_get(0)?;
    Ok(ConsentOutcome::Updated {
        categories: u8::try_from(bits)
            .ok()
            .and_then(CategorySet::from_bits)
            .unwrap_or(CategorySet::EMPTY),
        purged: u32::try_from(purged).unwrap_or(u32::MAX),
    })
}

/// What [`set_blocked`] takes: person, blocked account, block or unblock, time.
pub(super) type BlockInput = (AccountId, AccountId, bool, u64);

/// Blocks or unblocks. The blocking person's `queue_head` rows are locked first (in the
/// lanes' order), so a send to them either committed before or reads the block.
pub(super) async fn set_blocked(tx: &Transaction<'_>, input: &BlockInput) -> Result<(), Failure> {
    let (user, blocked, block, now_ms) = input;
    let u = user.as_bytes().as_slice();
    let b = blocked.as_bytes().as_slice();
    tx.execute(
        "SELECT 1 FROM queue_head AS q JOIN devices AS d ON d.id = q.recipient
         WHERE d.account = $1 ORDER BY d.device FOR UPDATE OF q",
        &[&u],
    )
    .await?;
    if *block {
        tx.execute(
            "INSERT INTO blocks (person, blocked, at_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&u, &b, &to_i64(to_day(*now_ms))],
        )
        .await?;
    } else {
        tx.execute(
            "DELETE FROM blocks WHERE person = $1 AND blocked = $2",
            &[&u, &b],
        )
        .await?;
    }
    Ok(())
}

/// What [`report`] takes: reporter, reported account, policy, time.
pub(super) type ReportInput = (AccountId, AccountId, ReportPolicy, u64);

/// Records a report; suspends a business reported by enough distinct people within the
/// window since its standing was last restored.
pub(super) async fn report(
    tx: &Transaction<'_>,
    input: &ReportInput,
) -> Result<ReportOutcome, Failure> {
    let (reporter, account, policy, now_ms) = input;
    let a = account.as_bytes().as_slice();
    let now = to_i64(*now_ms);
    tx.execute(
        "INSERT INTO reports (account, reporter, at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (account, reporter) DO UPDATE SET at_ms = excluded.at_ms",
        &[&a, &reporter.as_bytes().as_slice(), &now],
    )
    .await?;
    let standing = tx
        .query_opt(
            "SELECT standing_since_ms, suspended_at_ms IS NOT NULL
             FROM businesses WHERE account = $1 FOR UPDATE",
            &[&a],
        )
        .await?;
    let Some(standing) = standing else {
        return Ok(ReportOutcome::Recorded);
    };
    if standing.try_get::<_, bool>(1)? {
        return Ok(ReportOutcome::Recorded);
    }
    let since = policy.counted_since(to_u64(standing.try_get(0)?), *now_ms);
    let reports: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM reports WHERE account = $1 AND at_ms >= $2",
            &[&a, &to_i64(since)],
        )
        .await?
        .try_get(0)?;
    if !policy.suspends(to_u64(reports)) {
        return Ok(ReportOutcome::Recorded);
    }
    tx.execute(
        "UPDATE businesses SET suspended_at_ms = $2, suspended_reason = 'reports'
         WHERE account = $1",
        &[&a, &now],
    )
    .await?;
    Ok(ReportOutcome::Suspended)
}

/// The business record of `account`, if it is (or was) a business.
pub(super) async fn business(
    client: &ClientWrapper,
    account: &AccountId,
) -> Result<Option<BusinessRecord>, Failure> {
    let statement = client
        .prepare_cached(
            "SELECT certificate, revoked_at_ms IS NOT NULL, suspended_at_ms IS NOT NULL
             FROM businesses WHERE account = $1",
        )
        .await?;
    let Some(row) = client
        .query_opt(&statement, &[&account.as_bytes().as_slice()])
        .await?
    else {
        return Ok(None);
    };
    let revoked: bool = row.try_get(1)?;
    let certificate = if revoked {
        None
    } else {
        Some(decode_certificate(row.try_get(0)?)?)
    };
    Ok(Some(BusinessRecord {
        certificate,
        suspended: row.try_get(2)?,
    }))
}

/// Whether `name` is reserved for `account` (see [`NameCheck`]).
pub(super) async fn name_reserved(
    tx: &Transaction<'_>,
    account: &AccountId,
    name: &str,
) -> Result<bool, Failure> {
    let skeleton = match NameCheck::of(name) {
        NameCheck::Reserved => return Ok(true),
        NameCheck::Free => return Ok(false),
        NameCheck::Skeleton(skeleton) => skeleton,
    };
    Ok(tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM businesses
                            WHERE name_skeleton = $1 AND account <> $2 AND revoked_at_ms IS NULL)",
            &[&skeleton, &account.as_bytes().as_slice()],
        )
        .await?
        .try_get(0)?)
}

/// Sets or clears a display name; `false` (and nothing changed) when it is reserved.
pub(super) async fn set_display_name(
    tx: &Transaction<'_>,
    input: &(AccountId, Option<String>),
) -> Result<bool, Failure> {
    let (account, name) = input;
    if let Some(name) = name {
        if name_reserved(tx, account, name).await? {
            return Ok(false);
        }
    }
    tx.execute(
        "UPDATE accounts SET display_name = $2 WHERE account = $1",
        &[&account.as_bytes().as_slice(), name],
    )
    .await?;
    Ok(true)
}

/// Deletes business bookkeeping that no longer counts, at most [`SWEEP_BATCH`] rows of
/// each kind per call; returns the rows deleted.
pub(super) async fn sweep(
    tx: &Transaction<'_>,
    input: &(u64, BusinessWindows),
) -> Result<u64, Failure> {
    let (now_ms, windows) = *input;
    let sweeps = [
        "DELETE FROM reach WHERE (business, recipient) IN
           (SELECT business, recipient FROM reach WHERE first_sent_ms <= $1 LIMIT $2)",
        "DELETE FROM care_windows WHERE (person, business) IN
           (SELECT person, business FROM care_windows WHERE last_message_ms <= $1 LIMIT $2)",
        "DELETE FROM consents WHERE (person, business, category) IN
           (SELECT person, business, category FROM consents
            WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1 LIMIT $2)",
        "DELETE FROM reports WHERE (account, reporter) IN
           (SELECT r.account, r.reporter FROM reports AS r
            LEFT JOIN businesses AS b ON b.account = r.account
            WHERE b.suspended_at_ms IS NULL
              AND (r.at_ms < $1 OR r.at_ms < b.standing_since_ms) LIMIT $2)",
    ];
    let mut deleted = 0;
    for (sql, cutoff) in sweeps
        .into_iter()
        .zip(business_sweep_cutoffs(now_ms, windows))
    {
        deleted += tx.execute(sql, &[&to_i64(cutoff), &SWEEP_BATCH]).await?;
    }
    // Shared rate buckets idle for a day are full again (every limit refills within an
    // hour): a new bucket would be the same.
    deleted += tx
        .execute(
            "DELETE FROM rate_buckets WHERE (limit_name, subject) IN
               (SELECT limit_name, subject FROM rate_buckets WHERE updated_at_ms <= $1 LIMIT $2)",
            &[&to_i64(now_ms.saturating_sub(IDLE_BUCKET_MS)), &SWEEP_BATCH],
        )
        .await?;
    Ok(deleted)
}

/// How long a shared rate bucket stays after its last use.
const IDLE_BUCKET_MS: u64 = 24 * 60 * 60 * 1000;
