//! The operator's business commands on a PostgreSQL database (`parley-server admin
//! verify-business`, ...), the counterparts of `sqlite/business_admin.rs`. Each connects
//! to the URL by itself (applying missing migrations, like the server would), runs in
//! one transaction, and works while servers run on the database: the business row is
//! locked, so an update waits for the sends that hold it and is in force for every send
//! after it. The rules are in `store::admin`; only the SQL is here.

use std::time::Duration;

use deadpool_postgres::{Object, Transaction};
use parley_protocol::business::SignedCertificate;
use parley_protocol::ids::{AccountId, Handle};

use super::errors::{pg_error, pool_error};
use super::{pool, schema};
use crate::authority::Authority;
use crate::store::admin::{decode_certificate, AdminError, BusinessListing, Verification};
use crate::store::values::{corrupt, to_i64, to_u64};
use crate::store::StoreError;

/// How long a command waits for its connection.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Issues (or reissues, with the next serial) a certificate for the account `handle`.
pub async fn verify_business(
    url: &str,
    authority: &Authority,
    handle: &Handle,
    what: Verification,
    now_ms: u64,
) -> Result<SignedCertificate, AdminError> {
    let mut client = connect(url).await?;
    let tx = client.transaction().await.map_err(db)?;
    let account = account_of(&tx, handle).await?;
    let id = account.as_bytes().as_slice();
    let clash: Option<String> = tx
        .query_opt(
            "SELECT display_name FROM businesses
             WHERE name_skeleton = $1 AND account <> $2 AND revoked_at_ms IS NULL
             LIMIT 1",
            &[&what.name_skeleton(), &id],
        )
        .await
        .map_err(db)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(db)?;
    let serial: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(serial), 0) + 1 FROM businesses WHERE account = $1",
            &[&id],
        )
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    let issued = what.certify(authority, account, to_u64(serial), clash, now_ms)?;
    let c = &issued.signed.certificate;
    tx.execute(
        "INSERT INTO businesses (account, serial, certificate, legal_name, display_name,
                                 name_skeleton, domain, categories, issued_at_ms,
                                 expires_at_ms, standing_since_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9)
         ON CONFLICT (account) DO UPDATE SET
           serial = excluded.serial, certificate = excluded.certificate,
           legal_name = excluded.legal_name, display_name = excluded.display_name,
           name_skeleton = excluded.name_skeleton, domain = excluded.domain,
           categories = excluded.categories, issued_at_ms = excluded.issued_at_ms,
           expires_at_ms = excluded.expires_at_ms, revoked_at_ms = NULL",
        &[
            &id,
            &serial,
            &issued.encoded,
            &c.legal_name,
            &c.display_name,
            &issued.skeleton,
            &c.domain,
            &i64::from(c.categories.bits()),
            &to_i64(c.issued_at_ms),
            &to_i64(c.expires_at_ms),
        ],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(issued.signed)
}

/// Revokes the business certificate of `handle`: clients lose the badge, and the account
/// may only answer people in `conversation`.
pub async fn revoke_business(url: &str, handle: &Handle, now_ms: u64) -> Result<(), AdminError> {
    update_business(
        url,
        handle,
        "UPDATE businesses SET revoked_at_ms = $2 WHERE account = $1",
        to_i64(now_ms),
    )
    .await
}

/// Suspends (`true`) or restores (`false`) the business `handle`. Restoring also restarts
/// the count of reports.
pub async fn set_suspended(
    url: &str,
    handle: &Handle,
    suspend: bool,
    now_ms: u64,
) -> Result<(), AdminError> {
    let sql = if suspend {
        "UPDATE businesses SET suspended_at_ms = $2, suspended_reason = 'operator'
         WHERE account = $1"
    } else {
        "UPDATE businesses SET suspended_at_ms = NULL, suspended_reason = NULL,
                               standing_since_ms = $2
         WHERE account = $1"
    };
    update_business(url, handle, sql, to_i64(now_ms)).await
}

/// Sets the reach tier of the business `handle`.
pub async fn set_tier(url: &str, handle: &Handle, tier: u32) -> Result<(), AdminError> {
    update_business(
        url,
        handle,
        "UPDATE businesses SET tier = $2 WHERE account = $1",
        i64::from(tier),
    )
    .await
}

/// Every business, verified or revoked, by display name.
pub async fn list_businesses(url: &str) -> Result<Vec<BusinessListing>, AdminError> {
    let client = connect(url).await?;
    let rows = client
        .query(
            "SELECT a.handle, b.certificate, b.revoked_at_ms, b.tier, b.suspended_at_ms,
                    b.suspended_reason,
                    (SELECT COUNT(*) FROM reports AS r
                      WHERE r.account = b.account AND r.at_ms >= b.standing_since_ms)
             FROM businesses AS b LEFT JOIN accounts AS a ON a.account = b.account
             ORDER BY b.display_name",
            &[],
        )
        .await
        .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let certificate: Vec<u8> = row.try_get(1).map_err(db)?;
        let suspended: Option<i64> = row.try_get(4).map_err(db)?;
        let reason: Option<String> = row.try_get(5).map_err(db)?;
        out.push(BusinessListing {
            handle: row.try_get(0).map_err(db)?,
            certificate: decode_certificate(&certificate)?,
            revoked_at_ms: row.try_get::<_, Option<i64>>(2).map_err(db)?.map(to_u64),
            tier: u32::try_from(row.try_get::<_, i64>(3).map_err(db)?).unwrap_or(0),
            suspended: suspended.map(|at| (to_u64(at), reason.unwrap_or_default())),
            reports: to_u64(row.try_get(6).map_err(db)?),
        });
    }
    Ok(out)
}

async fn update_business(
    url: &str,
    handle: &Handle,
    sql: &str,
    value: i64,
) -> Result<(), AdminError> {
    let mut client = connect(url).await?;
    let tx = client.transaction().await.map_err(db)?;
    let account = account_of(&tx, handle).await?;
    let changed = tx
        .execute(sql, &[&account.as_bytes().as_slice(), &value])
        .await
        .map_err(db)?;
    if changed == 0 {
        return Err(AdminError::NotABusiness(handle.as_str().to_owned()));
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

async fn account_of(tx: &Transaction<'_>, handle: &Handle) -> Result<AccountId, AdminError> {
    let row = tx
        .query_opt(
            "SELECT account FROM accounts WHERE handle = $1",
            &[&handle.as_str()],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| AdminError::UnknownHandle(handle.as_str().to_owned()))?;
    let bytes: Vec<u8> = row.try_get(0).map_err(db)?;
    Ok(AccountId::from_slice(&bytes).ok_or_else(|| corrupt("accounts.account"))?)
}

/// One connection to `url`, with the schema migrated.
async fn connect(url: &str) -> Result<Object, AdminError> {
    let pool = pool::build(url, 1, CONNECT_WAIT)?;
    let mut client = pool.get().await.map_err(pool_error)?;
    schema::migrate(&mut client)
        .await
        .map_err(StoreError::from)?;
    Ok(client)
}

fn db(e: tokio_postgres::Error) -> AdminError {
    AdminError::Store(pg_error(&e))
}
