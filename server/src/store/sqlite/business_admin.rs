//! The operator's business commands (`parley-server admin verify-business`, ...). Each
//! opens its own connection to the database in a data directory, so they work while a
//! server runs on it (WAL; the server's writer and this connection take turns), and
//! each runs in one transaction.

use std::path::Path;

use parley_protocol::business::SignedCertificate;
use parley_protocol::ids::{AccountId, Handle};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{open_connection, schema, sql_error, Durability, DATABASE_FILE};
use crate::authority::Authority;
use crate::store::admin::{decode_certificate, AdminError, BusinessListing, Verification};
use crate::store::values::{corrupt, to_i64, to_u64};

/// Issues (or reissues, with the next serial) a certificate for the account `handle`.
pub fn verify_business(
    data_dir: &Path,
    authority: &Authority,
    handle: &Handle,
    what: Verification,
    now_ms: u64,
) -> Result<SignedCertificate, AdminError> {
    with_transaction(data_dir, |conn| {
        let account = account_of(conn, handle)?;
        let clash: Option<String> = conn
            .query_row(
                "SELECT display_name FROM businesses
                 WHERE name_skeleton = ?1 AND account != ?2 AND revoked_at_ms IS NULL",
                params![what.name_skeleton(), account.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_error)?;
        let serial: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(serial), 0) + 1 FROM businesses WHERE account = ?1",
                params![account.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .map_err(sql_error)?;
        let issued = what.certify(authority, account, to_u64(serial), clash, now_ms)?;
        let c = &issued.signed.certificate;
        conn.execute(
            "INSERT INTO businesses (account, serial, certificate, legal_name, display_name,
                                     name_skeleton, domain, categories, issued_at_ms,
                                     expires_at_ms, standing_since_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9)
             ON CONFLICT (account) DO UPDATE SET
               serial = excluded.serial, certificate = excluded.certificate,
               legal_name = excluded.legal_name, display_name = excluded.display_name,
               name_skeleton = excluded.name_skeleton, domain = excluded.domain,
               categories = excluded.categories, issued_at_ms = excluded.issued_at_ms,
               expires_at_ms = excluded.expires_at_ms, revoked_at_ms = NULL",
            params![
                account.as_bytes().as_slice(),
                serial,
                issued.encoded,
                c.legal_name,
                c.display_name,
                issued.skeleton,
                c.domain,
                i64::from(c.categories.bits()),
                to_i64(c.issued_at_ms),
                to_i64(c.expires_at_ms),
            ],
        )
        .map_err(sql_error)?;
        Ok(issued.signed)
    })
}

/// Revokes the business certificate of `handle`: clients lose the badge, and the account
/// may only answer people in `conversation`.
pub fn revoke_business(data_dir: &Path, handle: &Handle, now_ms: u64) -> Result<(), AdminError> {
    update_business(
        data_dir,
        handle,
        "UPDATE businesses SET revoked_at_ms = ?2 WHERE account = ?1",
        to_i64(now_ms),
    )
}

/// Suspends (`true`) or restores (`false`) the business `handle`. Restoring also restarts
/// the count of reports.
pub fn set_suspended(
    data_dir: &Path,
    handle: &Handle,
    suspend: bool,
    now_ms: u64,
) -> Result<(), AdminError> {
    let sql = if suspend {
        "UPDATE businesses SET suspended_at_ms = ?2, suspended_reason = 'operator'
         WHERE account = ?1"
    } else {
        "UPDATE businesses SET suspended_at_ms = NULL, suspended_reason = NULL,
                               standing_since_ms = ?2
         WHERE account = ?1"
    };
    update_business(data_dir, handle, sql, to_i64(now_ms))
}

/// Sets the reach tier of the business `handle`.
pub fn set_tier(data_dir: &Path, handle: &Handle, tier: u32) -> Result<(), AdminError> {
    update_business(
        data_dir,
        handle,
        "UPDATE businesses SET tier = ?2 WHERE account = ?1",
        i64::from(tier),
    )
}

/// Every business, verified or revoked, by display name.
pub fn list_businesses(data_dir: &Path) -> Result<Vec<BusinessListing>, AdminError> {
    with_transaction(data_dir, |conn| {
        let mut stmt = conn
            .prepare(
                "SELECT a.handle, b.certificate, b.revoked_at_ms, b.tier, b.suspended_at_ms,
                        b.suspended_reason,
                        (SELECT COUNT(*) FROM reports r
                          WHERE r.account = b.account AND r.at_ms >= b.standing_since_ms)
                 FROM businesses b LEFT JOIN accounts a ON a.account = b.account
                 ORDER BY b.display_name",
            )
            .map_err(sql_error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(sql_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (handle, cert, revoked, tier, suspended, reason, reports) =
                row.map_err(sql_error)?;
            out.push(BusinessListing {
                handle,
                certificate: decode_certificate(&cert)?,
                revoked_at_ms: revoked.map(to_u64),
                tier: u32::try_from(tier).unwrap_or(0),
                suspended: suspended.map(|at| (to_u64(at), reason.unwrap_or_default())),
                reports: to_u64(reports),
            });
        }
        Ok(out)
    })
}

fn update_business(
    data_dir: &Path,
    handle: &Handle,
    sql: &str,
    value: i64,
) -> Result<(), AdminError> {
    with_transaction(data_dir, |conn| {
        let account = account_of(conn, handle)?;
        let changed = conn
            .execute(sql, params![account.as_bytes().as_slice(), value])
            .map_err(sql_error)?;
        if changed == 0 {
            return Err(AdminError::NotABusiness(handle.as_str().to_owned()));
        }
        Ok(())
    })
}

fn account_of(conn: &Connection, handle: &Handle) -> Result<AccountId, AdminError> {
    let bytes: Option<Vec<u8>> = conn
        .query_row(
            "SELECT account FROM accounts WHERE handle = ?1",
            params![handle.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_error)?;
    let bytes = bytes.ok_or_else(|| AdminError::UnknownHandle(handle.as_str().to_owned()))?;
    Ok(AccountId::from_slice(&bytes).ok_or_else(|| corrupt("accounts.account"))?)
}

/// Opens the existing database of `data_dir` (migrating it if needed; never creating
/// one) and runs `f` in one immediate transaction, committed if `f` succeeds.
fn with_transaction<T>(
    data_dir: &Path,
    f: impl FnOnce(&Connection) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    let path = data_dir.join(DATABASE_FILE);
    super::maintenance::require_existing(&path)?;
    let mut conn = open_connection(&path, Durability::Full, false)?;
    schema::migrate(&mut conn)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let value = f(&tx)?;
    tx.commit().map_err(sql_error)?;
    Ok(value)
}
