//! The business send policy, run by the writer inside the transaction that stores the
//! envelope (see docs/protocol.md §14, "What a business may send").
//!
//! An account with a row in `businesses` is a business, whatever the state of its
//! certificate: while the certificate is revoked or expired it may still answer people in
//! `conversation`, but nothing else. Refusals that would tell a business whether a person
//! uses Parley, opted in, or blocked it all return [`EnqueueOutcome::Refused`].

use std::time::Instant;

use parley_protocol::business::{Category, CategorySet};
use parley_protocol::ids::AccountId;
use rusqlite::{params, Connection};

use super::queries::to_i64;
use super::sql_error;
use crate::store::{EnqueueOutcome, NewEnvelope, StoreError};

/// The rolling window of the daily reach.
pub(super) const REACH_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// Code of `conversation` in `queue.category` (grantable categories use their bit).
const CONVERSATION_CODE: i64 = 16;

/// How a category is stored in `queue.category`.
pub(super) fn category_code(category: Category) -> i64 {
    match category {
        Category::Conversation => CONVERSATION_CODE,
        c => i64::from(CategorySet::of([c]).bits()),
    }
}

/// The category a `queue.category` code names.
pub(super) fn category_from_code(code: i64) -> Option<Category> {
    if code == CONVERSATION_CODE {
        return Some(Category::Conversation);
    }
    let bits = u8::try_from(code).ok()?;
    let set = CategorySet::from_bits(bits)?;
    let mut one = set.iter();
    match (one.next(), one.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// What the relay knows of a sending business.
struct Standing {
    /// Categories its certificate allows, empty while revoked or expired.
    categories: CategorySet,
    tier: u32,
    suspended: bool,
}

/// What the policy decided about a send.
pub(super) enum Verdict {
    /// Refused with this outcome; store nothing.
    Refuse(EnqueueOutcome),
    /// From a person: store it without a category.
    FromPerson,
    /// From a business: store it with its category.
    FromBusiness,
}

/// Checks `e` against the policy. `recipient_exists` says whether the recipient device is
/// registered.
pub(super) fn check(
    conn: &Connection,
    e: &NewEnvelope,
    recipient_exists: bool,
) -> Result<Verdict, StoreError> {
    let refuse = |outcome| Ok(Verdict::Refuse(outcome));
    let sender = e.from.account;
    let user = e.to.account;
    let facts = facts(conn, &sender, &user, e.now_ms)?;
    let Some(business) = facts.sender else {
        // A person.
        if !recipient_exists {
            return refuse(EnqueueOutcome::UnknownRecipient);
        }
        if facts.blocked {
            return refuse(EnqueueOutcome::Blocked);
        }
        if facts.recipient_is_business {
            open_care_window(conn, &sender, &user, e.now_ms)?;
        }
        return Ok(Verdict::FromPerson);
    };
    if business.suspended {
        return refuse(EnqueueOutcome::Suspended);
    }
    let Some(category) = e.category else {
        return refuse(EnqueueOutcome::CategoryNotAllowed);
    };
    if category != Category::Conversation && !business.categories.contains(category) {
        return refuse(EnqueueOutcome::CategoryNotAllowed);
    }
    if !recipient_exists || facts.blocked {
        return refuse(EnqueueOutcome::Refused);
    }
    let allowed = if category == Category::Conversation {
        in_care_window(conn, &user, &sender, e.now_ms, e.policy.care_window_ms)?
    } else {
        consents(conn, &user, &sender, category, e.now_ms)?
    };
    if !allowed {
        return refuse(EnqueueOutcome::Refused);
    }
    if let Err(retry) = e.policy.business_rate.take(&sender, 1, Instant::now()) {
        let ms = u64::try_from(retry.0.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        return refuse(EnqueueOutcome::RateLimited(ms));
    }
    if category != Category::Conversation {
        if let Some(limit) = e.policy.reach_tiers.reach(business.tier) {
            if let Some(retry_ms) = take_reach(conn, &sender, &user, limit, e.now_ms)? {
                return refuse(EnqueueOutcome::ReachExhausted(retry_ms));
            }
        }
    }
    Ok(Verdict::FromBusiness)
}

/// What every send's policy needs, read with one statement (it runs once per envelope
/// on the writer thread): the sender's standing if it is a business, whether the
/// recipient blocked the sender, and whether the recipient is a business.
struct Facts {
    sender: Option<Standing>,
    blocked: bool,
    recipient_is_business: bool,
}

fn facts(
    conn: &Connection,
    sender: &AccountId,
    recipient: &AccountId,
    now_ms: u64,
) -> Result<Facts, StoreError> {
    conn.prepare_cached(
        "SELECT b.categories, b.tier, b.suspended_at_ms IS NOT NULL,
                b.revoked_at_ms IS NULL AND b.expires_at_ms > ?3,
                EXISTS (SELECT 1 FROM blocks WHERE user = ?2 AND blocked = ?1),
                EXISTS (SELECT 1 FROM businesses WHERE account = ?2)
         FROM (SELECT 1) LEFT JOIN businesses AS b ON b.account = ?1",
    )
    .and_then(|mut s| {
        s.query_row(
            params![
                sender.as_bytes().as_slice(),
                recipient.as_bytes().as_slice(),
                to_i64(now_ms)
            ],
            |r| {
                let sender = match r.get::<_, Option<i64>>(0)? {
                    None => None,
                    Some(bits) => {
                        let valid: bool = r.get::<_, Option<bool>>(3)?.unwrap_or(false);
                        Some(Standing {
                            categories: if valid {
                                u8::try_from(bits)
                                    .ok()
                                    .and_then(CategorySet::from_bits)
                                    .unwrap_or(CategorySet::EMPTY)
                            } else {
                                CategorySet::EMPTY
                            },
                            tier: u32::try_from(r.get::<_, Option<i64>>(1)?.unwrap_or(0))
                                .unwrap_or(0),
                            suspended: r.get(2)?,
                        })
                    }
                };
                Ok(Facts {
                    sender,
                    blocked: r.get(4)?,
                    recipient_is_business: r.get(5)?,
                })
            },
        )
    })
    .map_err(sql_error)
}

/// Whether `account` is a business (any row in `businesses`).
pub(super) fn is_business(conn: &Connection, account: &AccountId) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM businesses WHERE account = ?1")
        .and_then(|mut s| s.exists(params![account.as_bytes().as_slice()]))
        .map_err(sql_error)
}

fn open_care_window(
    conn: &Connection,
    user: &AccountId,
    business: &AccountId,
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO care_windows (user, business, last_message_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (user, business) DO UPDATE SET last_message_ms = excluded.last_message_ms",
    )
    .and_then(|mut s| {
        s.execute(params![
            user.as_bytes().as_slice(),
            business.as_bytes().as_slice(),
            to_i64(now_ms)
        ])
    })
    .map(|_| ())
    .map_err(sql_error)
}

fn in_care_window(
    conn: &Connection,
    user: &AccountId,
    business: &AccountId,
    now_ms: u64,
    window_ms: u64,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM care_windows WHERE user = ?1 AND business = ?2 AND last_message_ms > ?3",
    )
    .and_then(|mut s| {
        s.exists(params![
            user.as_bytes().as_slice(),
            business.as_bytes().as_slice(),
            to_i64(now_ms.saturating_sub(window_ms))
        ])
    })
    .map_err(sql_error)
}

fn consents(
    conn: &Connection,
    user: &AccountId,
    business: &AccountId,
    category: Category,
    now_ms: u64,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM consents WHERE user = ?1 AND business = ?2 AND category = ?3
           AND (expires_at_ms IS NULL OR expires_at_ms > ?4)",
    )
    .and_then(|mut s| {
        s.exists(params![
            user.as_bytes().as_slice(),
            business.as_bytes().as_slice(),
            category_code(category),
            to_i64(now_ms)
        ])
    })
    .map_err(sql_error)
}

/// Counts `recipient` in the business's daily reach. `Some(ms)` when the reach is
/// exhausted: the oldest recipient of the window leaves it in `ms`.
fn take_reach(
    conn: &Connection,
    business: &AccountId,
    recipient: &AccountId,
    limit: u32,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let since = to_i64(now_ms.saturating_sub(REACH_WINDOW_MS));
    let b = business.as_bytes().as_slice();
    let already = conn
        .prepare_cached(
            "SELECT 1 FROM reach WHERE business = ?1 AND recipient = ?2 AND first_sent_ms > ?3",
        )
        .and_then(|mut s| s.exists(params![b, recipient.as_bytes().as_slice(), since]))
        .map_err(sql_error)?;
    if already {
        return Ok(None);
    }
    let (count, oldest): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT COUNT(*), MIN(first_sent_ms) FROM reach
             WHERE business = ?1 AND first_sent_ms > ?2",
        )
        .and_then(|mut s| s.query_row(params![b, since], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(sql_error)?;
    if count >= i64::from(limit) {
        let frees_at = u64::try_from(oldest.unwrap_or(0))
            .unwrap_or(0)
            .saturating_add(REACH_WINDOW_MS);
        return Ok(Some(frees_at.saturating_sub(now_ms).max(1)));
    }
    conn.prepare_cached(
        "INSERT INTO reach (business, recipient, first_sent_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (business, recipient) DO UPDATE SET first_sent_ms = excluded.first_sent_ms",
    )
    .and_then(|mut s| s.execute(params![b, recipient.as_bytes().as_slice(), to_i64(now_ms)]))
    .map(|_| None)
    .map_err(sql_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_codes_round_trip() {
        for c in [
            Category::SecurityAlert,
            Category::Transactional,
            Category::Authentication,
            Category::Marketing,
            Category::Conversation,
        ] {
            assert_eq!(category_from_code(category_code(c)), Some(c));
        }
        assert_eq!(category_from_code(3), None);
        assert_eq!(category_from_code(-1), None);
    }
}
