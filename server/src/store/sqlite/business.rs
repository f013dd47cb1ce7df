//! The SQL behind consent, blocks, reports, business lookups and display names, as the
//! connections use them (the operator's commands are in `business_admin.rs`; the send
//! policy in `policy.rs`).

use parley_protocol::business::CategorySet;
use parley_protocol::ids::AccountId;
use rusqlite::{params, Connection, OptionalExtension};

use super::queries::SWEEP_BATCH;
use super::{policy, sql_error};
use crate::store::admin::decode_certificate;
use crate::store::business::{business_sweep_cutoffs, judge_consent, ConsentFacts, NameCheck};
use crate::store::policy::category_code;
use crate::store::values::{to_day, to_i64, to_u64};
use crate::store::{
    BusinessRecord, BusinessWindows, ConsentChange, ConsentOutcome, ReportOutcome, ReportPolicy,
    StoreError,
};

/// Stores a verified grant or revocation for `user`.
pub(super) fn change_consent(
    conn: &Connection,
    user: &AccountId,
    change: &ConsentChange,
    now_ms: u64,
) -> Result<ConsentOutcome, StoreError> {
    let record = change.record();
    let business = record.business();
    let u = user.as_bytes().as_slice();
    let b = business.as_bytes().as_slice();
    let nonce = change.nonce();
    let revocation = change.is_revocation();
    let facts = ConsentFacts {
        replayed: conn
            .prepare_cached("SELECT 1 FROM consent_log WHERE user = ?1 AND nonce = ?2")
            .and_then(|mut s| s.exists(params![u, nonce.as_bytes().as_slice()]))
            .map_err(sql_error)?,
        verified: conn
            .prepare_cached(
                "SELECT 1 FROM businesses WHERE account = ?1
                   AND revoked_at_ms IS NULL AND expires_at_ms > ?2",
            )
            .and_then(|mut s| s.exists(params![b, to_i64(now_ms)]))
            .map_err(sql_error)?,
        is_business: policy::is_business(conn, &business)?,
        latest_revocation_ms: conn
            .prepare_cached(
                "SELECT MAX(issued_at_ms) FROM consent_log
                 WHERE user = ?1 AND business = ?2 AND revocation = 1",
            )
            .and_then(|mut s| s.query_row(params![u, b], |r| r.get::<_, Option<i64>>(0)))
            .map_err(sql_error)?
            .map(to_u64),
    };
    if let Err(reason) = judge_consent(change, facts) {
        return Ok(ConsentOutcome::Invalid(reason));
    }
    conn.prepare_cached(
        "INSERT INTO consent_log (user, nonce, business, revocation, categories, issued_at_ms,
                                  record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            u,
            nonce.as_bytes().as_slice(),
            b,
            i64::from(revocation),
            i64::from(record.categories().bits()),
            to_i64(record.issued_at_ms()),
            record.encode(),
        ])
    })
    .map_err(sql_error)?;
    let mut purged = 0;
    match change {
        ConsentChange::Grant(g) => {
            for category in g.grant.categories.iter() {
                conn.prepare_cached(
                    "INSERT INTO consents (user, business, category, expires_at_ms, granted_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (user, business, category) DO UPDATE
                       SET expires_at_ms = excluded.expires_at_ms,
                           granted_at_ms = excluded.granted_at_ms",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        u,
                        b,
                        category_code(category),
                        g.grant.expires_at_ms.map(to_i64),
                        to_i64(to_day(now_ms)),
                    ])
                })
                .map_err(sql_error)?;
            }
        }
        ConsentChange::Revoke(r) => {
            let mask = i64::from(r.revocation.categories.bits());
            conn.prepare_cached(
                "DELETE FROM consents WHERE user = ?1 AND business = ?2 AND (category & ?3) != 0",
            )
            .and_then(|mut s| s.execute(params![u, b, mask]))
            .map_err(sql_error)?;
            purged = conn
                .prepare_cached(
                    "DELETE FROM queue
                     WHERE recipient IN (SELECT id FROM devices WHERE account = ?1)
                       AND sender_account = ?2 AND category IS NOT NULL
                       AND (category & ?3) != 0",
                )
                .and_then(|mut s| s.execute(params![u, b, mask]))
                .map_err(sql_error)?;
        }
    }
    Ok(ConsentOutcome::Updated {
        categories: in_force(conn, user, &business, now_ms)?,
        purged: u32::try_from(purged).unwrap_or(u32::MAX),
    })
}

/// The categories `user` has granted `business` that are in force at `now_ms`.
fn in_force(
    conn: &Connection,
    user: &AccountId,
    business: &AccountId,
    now_ms: u64,
) -> Result<CategorySet, StoreError> {
    let bits: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(category), 0) FROM consents
             WHERE user = ?1 AND business = ?2
               AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    user.as_bytes().as_slice(),
                    business.as_bytes().as_slice(),
                    to_i64(now_ms)
                ],
                |r| r.get(0),
            )
        })
        .map_err(sql_error)?;
    Ok(u8::try_from(bits)
        .ok()
        .and_then(CategorySet::from_bits)
        .unwrap_or(CategorySet::EMPTY))
}

pub(super) fn set_blocked(
    conn: &Connection,
    user: &AccountId,
    blocked: &AccountId,
    block: bool,
    now_ms: u64,
) -> Result<(), StoreError> {
    let (sql, with_time) = if block {
        (
            "INSERT OR IGNORE INTO blocks (user, blocked, at_ms) VALUES (?1, ?2, ?3)",
            true,
        )
    } else {
        ("DELETE FROM blocks WHERE user = ?1 AND blocked = ?2", false)
    };
    let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
    let (u, b) = (user.as_bytes().as_slice(), blocked.as_bytes().as_slice());
    if with_time {
        stmt.execute(params![u, b, to_i64(to_day(now_ms))])
    } else {
        stmt.execute(params![u, b])
    }
    .map(|_| ())
    .map_err(sql_error)
}

/// Records a report; suspends a business reported by enough distinct people within the
/// window since its standing was last restored.
pub(super) fn report(
    conn: &Connection,
    reporter: &AccountId,
    account: &AccountId,
    policy: ReportPolicy,
    now_ms: u64,
) -> Result<ReportOutcome, StoreError> {
    let a = account.as_bytes().as_slice();
    conn.prepare_cached(
        "INSERT INTO reports (account, reporter, at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (account, reporter) DO UPDATE SET at_ms = excluded.at_ms",
    )
    .and_then(|mut s| s.execute(params![a, reporter.as_bytes().as_slice(), to_i64(now_ms)]))
    .map_err(sql_error)?;
    let standing: Option<(i64, bool)> = conn
        .prepare_cached(
            "SELECT standing_since_ms, suspended_at_ms IS NOT NULL
             FROM businesses WHERE account = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![a], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql_error)?;
    let Some((standing_since, false)) = standing else {
        return Ok(ReportOutcome::Recorded);
    };
    let since = policy.counted_since(to_u64(standing_since), now_ms);
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM reports WHERE account = ?1 AND at_ms >= ?2")
        .and_then(|mut s| s.query_row(params![a, to_i64(since)], |r| r.get(0)))
        .map_err(sql_error)?;
    if !policy.suspends(to_u64(count)) {
        return Ok(ReportOutcome::Recorded);
    }
    conn.prepare_cached(
        "UPDATE businesses SET suspended_at_ms = ?2, suspended_reason = 'reports'
         WHERE account = ?1",
    )
    .and_then(|mut s| s.execute(params![a, to_i64(now_ms)]))
    .map_err(sql_error)?;
    Ok(ReportOutcome::Suspended)
}

/// The business record of `account`, if it is (or was) a business.
pub(super) fn business(
    conn: &Connection,
    account: &AccountId,
) -> Result<Option<BusinessRecord>, StoreError> {
    let row: Option<(Vec<u8>, bool, bool)> = conn
        .prepare_cached(
            "SELECT certificate, revoked_at_ms IS NOT NULL, suspended_at_ms IS NOT NULL
             FROM businesses WHERE account = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![account.as_bytes().as_slice()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(sql_error)?;
    let Some((bytes, revoked, suspended)) = row else {
        return Ok(None);
    };
    let certificate = if revoked {
        None
    } else {
        Some(decode_certificate(&bytes)?)
    };
    Ok(Some(BusinessRecord {
        certificate,
        suspended,
    }))
}

/// Whether `name` is reserved for `account`: it imitates the badge, or its skeleton is
/// another verified business's display-name skeleton.
pub(super) fn name_reserved(
    conn: &Connection,
    account: &AccountId,
    name: &str,
) -> Result<bool, StoreError> {
    let skeleton = match NameCheck::of(name) {
        NameCheck::Reserved => return Ok(true),
        NameCheck::Free => return Ok(false),
        NameCheck::Skeleton(skeleton) => skeleton,
    };
    conn.prepare_cached(
        "SELECT 1 FROM businesses
         WHERE name_skeleton = ?1 AND account != ?2 AND revoked_at_ms IS NULL",
    )
    .and_then(|mut s| s.exists(params![skeleton, account.as_bytes().as_slice()]))
    .map_err(sql_error)
}

/// Sets or clears a display name; `false` (and nothing changed) when it is reserved.
pub(super) fn set_display_name(
    conn: &Connection,
    account: &AccountId,
    name: Option<&str>,
) -> Result<bool, StoreError> {
    if let Some(name) = name {
        if name_reserved(conn, account, name)? {
            return Ok(false);
        }
    }
    conn.prepare_cached("UPDATE accounts SET display_name = ?2 WHERE account = ?1")
        .and_then(|mut s| s.execute(params![account.as_bytes().as_slice(), name]))
        .map(|_| true)
        .map_err(sql_error)
}

/// Deletes business bookkeeping that no longer counts: reach entries older than the reach
/// window, care windows that closed, consents past their expiry, reports that no longer
/// count (`business_sweep_cutoffs`). At most `SWEEP_BATCH` rows of each per call; returns
/// the rows deleted.
pub(super) fn sweep(
    conn: &Connection,
    now_ms: u64,
    windows: BusinessWindows,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    let sweeps = [
        "DELETE FROM reach WHERE (business, recipient) IN
           (SELECT business, recipient FROM reach WHERE first_sent_ms <= ?1 LIMIT ?2)",
        "DELETE FROM care_windows WHERE (user, business) IN
           (SELECT user, business FROM care_windows WHERE last_message_ms <= ?1 LIMIT ?2)",
        "DELETE FROM consents WHERE (user, business, category) IN
           (SELECT user, business, category FROM consents
            WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1 LIMIT ?2)",
        "DELETE FROM reports WHERE (account, reporter) IN
           (SELECT r.account, r.reporter FROM reports AS r
            LEFT JOIN businesses AS b ON b.account = r.account
            WHERE b.suspended_at_ms IS NULL
              AND (r.at_ms < ?1 OR r.at_ms < b.standing_since_ms) LIMIT ?2)",
    ];
    for (sql, cutoff) in sweeps
        .into_iter()
        .zip(business_sweep_cutoffs(now_ms, windows))
    {
        let n = conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params![to_i64(cutoff), SWEEP_BATCH]))
            .map_err(sql_error)?;
        deleted += u64::try_from(n).unwrap_or(0);
    }
    Ok(deleted)
}
