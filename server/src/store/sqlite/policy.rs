//! The send policy in SQLite: the writer reads an envelope's [`SendFacts`] in the
//! transaction that will store it, [`policy::decide`] decides, and the writer writes the
//! decision's [`Effects`] in the same transaction.
//!
//! The business rate limit is a token bucket in this process: the writer is the only
//! one to check and take it, so checking before the decision and taking after it is one
//! step.

use std::sync::LazyLock;
use std::time::Instant;

use parley_protocol::business::Category;
use parley_protocol::ids::AccountId;
use rusqlite::{params, Connection};

use super::sql_error;
use crate::rate_limit::RateLimiter;
use crate::store::policy::{
    self, category_code, Consent, Decision, Effects, Reach, SendFacts, SendPolicy, Standing,
};
use crate::store::values::{to_i64, to_u64};
use crate::store::{NewEnvelope, StoreError};

/// Most businesses whose messages-per-second bucket is tracked at once.
const RATE_BUCKETS_MAX: usize = 100_000;

/// The send policy with the state this store keeps for it.
#[derive(Debug)]
pub(super) struct SendRules {
    policy: SendPolicy,
    business_rate: RateLimiter<AccountId>,
}

impl SendRules {
    pub(super) fn new(policy: SendPolicy) -> SendRules {
        SendRules {
            business_rate: RateLimiter::new(
                policy.business_sends_per_second,
                std::time::Duration::from_secs(1),
                RATE_BUCKETS_MAX,
            ),
            policy,
        }
    }
}

/// Decides `e` and, when it is accepted, writes the decision's effects.
pub(super) fn check(
    conn: &Connection,
    e: &NewEnvelope,
    recipient_exists: bool,
    rules: &SendRules,
) -> Result<Decision, StoreError> {
    let sender = e.from.account;
    let mut facts = facts(conn, e, recipient_exists)?;
    let now = Instant::now();
    if facts.sender_business.is_some() {
        facts.rate_limited_for_ms = rules
            .business_rate
            .check(&sender, now)
            .err()
            .map(|retry| u64::try_from(retry.0.as_millis()).unwrap_or(u64::MAX));
    }
    let decision = policy::decide(&facts, e.category, e.now_ms, &rules.policy);
    if let Decision::Accept { effects, .. } = decision {
        apply(conn, e, effects, rules, now)?;
    }
    Ok(decision)
}

/// The statement of [`facts`], built once: the statement cache is keyed by its text, and
/// formatting it for every envelope cost 6 % of the writer's time. Its runs of white
/// space are folded into one space, since the cache hashes the whole text at each use.
static FACTS_SQL: LazyLock<String> = LazyLock::new(|| {
    let counted = "SELECT 1 FROM reach WHERE business = ?1 AND recipient = ?2
                   AND first_sent_ms > ?5";
    let reach_needed = "b.account IS NOT NULL AND ?4 IS NOT NULL AND ?4 <> ?6";
    format!(
        "SELECT b.categories, b.tier, b.suspended_at_ms IS NOT NULL,
                b.revoked_at_ms IS NULL AND b.expires_at_ms > ?3,
                EXISTS (SELECT 1 FROM blocks WHERE user = ?2 AND blocked = ?1),
                EXISTS (SELECT 1 FROM businesses WHERE account = ?2),
                CASE WHEN b.account IS NOT NULL THEN
                  (SELECT last_message_ms FROM care_windows WHERE user = ?2 AND business = ?1)
                END,
                CASE WHEN b.account IS NOT NULL AND ?4 IS NOT NULL THEN
                  (SELECT COALESCE(expires_at_ms, -1) FROM consents
                   WHERE user = ?2 AND business = ?1 AND category = ?4)
                END,
                CASE WHEN {reach_needed} THEN EXISTS ({counted}) ELSE 0 END,
                CASE WHEN {reach_needed} AND NOT EXISTS ({counted}) THEN
                  (SELECT COUNT(*) FROM reach WHERE business = ?1 AND first_sent_ms > ?5)
                END,
                CASE WHEN {reach_needed} AND NOT EXISTS ({counted}) THEN
                  (SELECT MIN(first_sent_ms) FROM reach WHERE business = ?1 AND first_sent_ms > ?5)
                END
         FROM (SELECT 1) LEFT JOIN businesses AS b ON b.account = ?1"
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
});

/// Reads every fact with one statement (it runs once per envelope on the writer
/// thread). The business-only facts are guarded by `CASE`, which SQLite evaluates
/// lazily, so a send between people costs two index lookups as before.
///
/// Columns: the sender's certificate categories, tier, suspension and validity (NULL for
/// a person); block; recipient is a business; care window; consent expiry (NULL: no
/// consent, -1: until revoked); recipient already counted in the reach; recipients in
/// the reach window and the oldest of them.
fn facts(
    conn: &Connection,
    e: &NewEnvelope,
    recipient_exists: bool,
) -> Result<SendFacts, StoreError> {
    let conversation = category_code(Category::Conversation);
    conn.prepare_cached(&FACTS_SQL)
        .and_then(|mut s| {
            s.query_row(
                params![
                    e.from.account.as_bytes().as_slice(),
                    e.to.account.as_bytes().as_slice(),
                    to_i64(e.now_ms),
                    e.category.map(category_code),
                    to_i64(policy::reach_window_start(e.now_ms)),
                    conversation,
                ],
                |r| {
                    let sender_business = match r.get::<_, Option<i64>>(0)? {
                        None => None,
                        Some(bits) => Some(Standing::from_stored(
                            bits,
                            r.get::<_, Option<bool>>(3)?.unwrap_or(false),
                            r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                            r.get(2)?,
                        )),
                    };
                    let consent = match r.get::<_, Option<i64>>(7)? {
                        None => Consent::Absent,
                        Some(-1) => Consent::Granted {
                            expires_at_ms: None,
                        },
                        Some(at) => Consent::Granted {
                            expires_at_ms: Some(to_u64(at)),
                        },
                    };
                    Ok(SendFacts {
                        recipient_exists,
                        sender_business,
                        blocked: r.get(4)?,
                        recipient_is_business: r.get(5)?,
                        care_window_last_ms: r.get::<_, Option<i64>>(6)?.map(to_u64),
                        consent,
                        rate_limited_for_ms: None,
                        receipt: e.receipt,
                        reach: Reach {
                            already_counted: r.get(8)?,
                            recipients: u32::try_from(r.get::<_, Option<i64>>(9)?.unwrap_or(0))
                                .unwrap_or(u32::MAX),
                            oldest_ms: r.get::<_, Option<i64>>(10)?.map(to_u64),
                        },
                    })
                },
            )
        })
        .map_err(sql_error)
}

/// Writes what an accepted send changes besides the queue.
fn apply(
    conn: &Connection,
    e: &NewEnvelope,
    effects: Effects,
    rules: &SendRules,
    now: Instant,
) -> Result<(), StoreError> {
    let sender = e.from.account.as_bytes().as_slice();
    let recipient = e.to.account.as_bytes().as_slice();
    if effects.open_care_window {
        conn.prepare_cached(
            "INSERT INTO care_windows (user, business, last_message_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (user, business) DO UPDATE SET last_message_ms = excluded.last_message_ms",
        )
        .and_then(|mut s| s.execute(params![sender, recipient, to_i64(e.now_ms)]))
        .map_err(sql_error)?;
    }
    if effects.count_reach {
        conn.prepare_cached(
            "INSERT INTO reach (business, recipient, first_sent_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (business, recipient) DO UPDATE SET first_sent_ms = excluded.first_sent_ms",
        )
        .and_then(|mut s| s.execute(params![sender, recipient, to_i64(e.now_ms)]))
        .map_err(sql_error)?;
    }
    if effects.take_rate_token {
        // Checked above by the same thread, so this succeeds (or the bucket table is
        // full, which `check` already let through).
        let _ = rules.business_rate.take(&e.from.account, 1, now);
    }
    Ok(())
}

/// Whether `account` is a business (any row in `businesses`).
pub(super) fn is_business(conn: &Connection, account: &AccountId) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM businesses WHERE account = ?1")
        .and_then(|mut s| s.exists(params![account.as_bytes().as_slice()]))
        .map_err(sql_error)
}
