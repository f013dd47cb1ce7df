//! The SQL of accounts, devices and prekeys: registration, authentication records,
//! prekey uploads, bundles (one-time prekeys handed out once across nodes), handles and
//! account deletion.

use std::collections::BTreeMap;

use deadpool_postgres::{ClientWrapper, Transaction};
use futures_util::future::try_join4;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle};
use parley_protocol::prekeys::{OneTimePrekey, SignedKemPrekey, SignedPrekey};
use tokio_postgres::Row;

use super::business::name_reserved;
use super::errors::Failure;
use crate::store::bundle::{SignedRow, StoredBundle, KIND_KEM, KIND_SIGNED};
use crate::store::values::{corrupt, to_day, to_i64};
use crate::store::{
    AuthRecord, BundleOutcome, NewAccount, PrekeyUpload, RegisterOutcome, UploadOutcome,
};

/// Creates the account, its first device (with its `queue_head` row) and prekeys.
/// Registrations racing on one identity or handle end in a unique violation, which the
/// transaction loop retries: the retry answers `AccountExists` or `HandleTaken`.
pub(super) async fn register(
    tx: &Transaction<'_>,
    a: &NewAccount,
) -> Result<RegisterOutcome, Failure> {
    let account = a.identity.account;
    let id = account.as_bytes().as_slice();
    let handle = a.handle.as_ref().map(Handle::as_str);
    let taken = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE account = $1),
                    EXISTS (SELECT 1 FROM accounts WHERE handle = $2)",
            &[&id, &handle],
        )
        .await?;
    if taken.try_get(0)? {
        return Ok(RegisterOutcome::AccountExists);
    }
    if let Some(handle) = handle {
        if taken.try_get(1)? {
            return Ok(RegisterOutcome::HandleTaken);
        }
        if name_reserved(tx, &account, handle).await? {
            return Ok(RegisterOutcome::NameReserved);
        }
    }
    let now = to_i64(to_day(a.now_ms));
    tx.execute(
        "INSERT INTO accounts (account, identity_dh, dh_signature, handle, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &id,
            &a.identity.dh.as_bytes().as_slice(),
            &a.identity.dh_signature.as_bytes().as_slice(),
            &handle,
            &now,
        ],
    )
    .await?;
    let address = DeviceAddress {
        account,
        device: DeviceId::PRIMARY,
    };
    let key: i64 = tx
        .query_one(
            "INSERT INTO devices (account, device, created_at_ms) VALUES ($1, $2, $3)
             RETURNING id",
            &[&id, &i64::from(address.device.0), &now],
        )
        .await?
        .try_get(0)?;
    tx.execute("INSERT INTO queue_head (recipient) VALUES ($1)", &[&key])
        .await?;
    put_signed_prekey(tx, key, &a.signed_prekey).await?;
    if let Some(kem) = &a.kem_prekey {
        put_kem_prekey(tx, key, kem).await?;
    }
    put_one_time_prekeys(tx, key, &a.one_time_prekeys).await?;
    Ok(RegisterOutcome::Created {
        address,
        one_time_prekeys: one_time_count(tx, key).await?,
    })
}

pub(super) async fn auth_record(
    client: &ClientWrapper,
    device: &DeviceAddress,
) -> Result<Option<AuthRecord>, Failure> {
    let statement = client
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM one_time_prekeys AS o WHERE o.device_key = d.id)
             FROM devices AS d WHERE d.account = $1 AND d.device = $2",
        )
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[
                &device.account.as_bytes().as_slice(),
                &i64::from(device.device.0),
            ],
        )
        .await?;
    row.map(|r| {
        Ok(AuthRecord {
            one_time_prekeys: count(r.try_get(0)?),
        })
    })
    .transpose()
}

/// Replaces signed prekeys and adds one-time prekeys, unless the one-time prekeys would
/// then exceed the cap (then nothing is stored). The device row is locked, so uploads of
/// one device from two nodes take turns and the cap holds.
pub(super) async fn upload_prekeys(
    tx: &Transaction<'_>,
    input: &(DeviceAddress, PrekeyUpload),
) -> Result<UploadOutcome, Failure> {
    let (device, u) = input;
    let key = tx
        .query_opt(
            "SELECT id FROM devices WHERE account = $1 AND device = $2 FOR UPDATE",
            &[
                &device.account.as_bytes().as_slice(),
                &i64::from(device.device.0),
            ],
        )
        .await?;
    let Some(key) = key.map(|r| r.try_get::<_, i64>(0)).transpose()? else {
        return Ok(UploadOutcome::UnknownDevice);
    };
    let ids: Vec<i64> = u
        .one_time_prekeys
        .iter()
        .map(|p| i64::from(p.id.0))
        .collect();
    let after: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM (SELECT key_id FROM one_time_prekeys WHERE device_key = $1
                                   UNION SELECT unnest($2::bigint[])) AS ids",
            &[&key, &ids],
        )
        .await?
        .try_get(0)?;
    if count(after) > u.max_one_time_prekeys {
        return Ok(UploadOutcome::TooMany);
    }
    if let Some(spk) = &u.signed_prekey {
        put_signed_prekey(tx, key, spk).await?;
    }
    if let Some(kem) = &u.kem_prekey {
        put_kem_prekey(tx, key, kem).await?;
    }
    put_one_time_prekeys(tx, key, &u.one_time_prekeys).await?;
    Ok(UploadOutcome::Stored {
        one_time_prekeys: one_time_count(tx, key).await?,
    })
}

/// A bundle of `device`, deleting the one-time prekey it hands out. `SKIP LOCKED`: two
/// fetches at once (on any nodes) take different keys without waiting for each other.
pub(super) async fn take_bundle(
    tx: &Transaction<'_>,
    device: &DeviceAddress,
) -> Result<BundleOutcome, Failure> {
    let account = device.account.as_bytes().as_slice();
    let number = i64::from(device.device.0);
    let device_key = "(SELECT id FROM devices WHERE account = $1 AND device = $2)";
    let identity = tx
        .prepare_cached("SELECT identity_dh, dh_signature FROM accounts WHERE account = $1")
        .await?;
    let signed = tx
        .prepare_cached(&format!(
            "SELECT kind, key_id, public, signature FROM signed_prekeys
             WHERE device_key = {device_key}"
        ))
        .await?;
    let one_time = tx
        .prepare_cached(&format!(
            "DELETE FROM one_time_prekeys WHERE (device_key, key_id) =
               (SELECT device_key, key_id FROM one_time_prekeys
                WHERE device_key = {device_key}
                ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING key_id, public"
        ))
        .await?;
    let remaining = tx
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = {device_key}"
        ))
        .await?;
    let (identity, signed, one_time, remaining) = try_join4(
        tx.query_opt(&identity, &[&account]),
        tx.query(&signed, &[&account, &number]),
        tx.query_opt(&one_time, &[&account, &number]),
        tx.query_one(&remaining, &[&account, &number]),
    )
    .await?;
    let Some(identity) = identity else {
        return Ok(BundleOutcome::NotFound);
    };
    let mut signed_prekey = None;
    let mut kem = None;
    for row in &signed {
        let kind: i64 = row.try_get(0)?;
        let decoded = signed_row(row)?;
        match kind {
            KIND_SIGNED => signed_prekey = Some(decoded),
            KIND_KEM => kem = Some(decoded),
            _ => return Err(corrupt("signed_prekeys.kind").into()),
        }
    }
    let Some(signed) = signed_prekey else {
        return Ok(BundleOutcome::NotFound);
    };
    let one_time = match one_time {
        Some(row) => Some((key_id(row.try_get(0)?)?, row.try_get(1)?)),
        None => None,
    };
    Ok(StoredBundle {
        identity_dh: identity.try_get(0)?,
        dh_signature: identity.try_get(1)?,
        signed,
        kem,
        one_time,
        remaining: count(remaining.try_get(0)?),
    }
    .decode(device)?)
}

fn signed_row(row: &Row) -> Result<SignedRow, Failure> {
    Ok(SignedRow(
        key_id(row.try_get(1)?)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ))
}

fn key_id(stored: i64) -> Result<u32, Failure> {
    Ok(u32::try_from(stored).map_err(|_| corrupt("prekey key_id"))?)
}

pub(super) async fn resolve_handle(
    client: &ClientWrapper,
    handle: &Handle,
) -> Result<Option<(AccountId, Option<String>)>, Failure> {
    let statement = client
        .prepare_cached("SELECT account, display_name FROM accounts WHERE handle = $1")
        .await?;
    let row = client.query_opt(&statement, &[&handle.as_str()]).await?;
    row.map(|r| {
        let account: Vec<u8> = r.try_get(0)?;
        let account = AccountId::from_slice(&account).ok_or_else(|| corrupt("accounts.account"))?;
        Ok((account, r.try_get(1)?))
    })
    .transpose()
}

/// Deletes everything of an account. Its `queue_head` rows go first: that waits for
/// every send to it that holds them, so the envelopes those sends commit are seen, and
/// deleted, by the statements after it; sends after it find no recipient.
pub(super) async fn delete_account(
    tx: &Transaction<'_>,
    account: &AccountId,
) -> Result<bool, Failure> {
    let account = account.as_bytes().as_slice();
    let devices = "(SELECT id FROM devices WHERE account = $1)";
    for sql in [
        format!("DELETE FROM queue_head WHERE recipient IN {devices}"),
        format!("DELETE FROM queue WHERE recipient IN {devices}"),
        format!("DELETE FROM queue_acked WHERE recipient IN {devices}"),
        format!("DELETE FROM sent WHERE sender IN {devices}"),
        format!("DELETE FROM one_time_prekeys WHERE device_key IN {devices}"),
        format!("DELETE FROM signed_prekeys WHERE device_key IN {devices}"),
        "DELETE FROM devices WHERE account = $1".to_owned(),
        "DELETE FROM consents WHERE person = $1 OR business = $1".to_owned(),
        "DELETE FROM care_windows WHERE person = $1 OR business = $1".to_owned(),
        "DELETE FROM reach WHERE business = $1 OR recipient = $1".to_owned(),
        "DELETE FROM blocks WHERE person = $1 OR blocked = $1".to_owned(),
        "DELETE FROM reports WHERE reporter = $1 OR account = $1".to_owned(),
        "DELETE FROM consent_log WHERE person = $1 OR business = $1".to_owned(),
        "DELETE FROM rate_buckets WHERE subject = $1".to_owned(),
        "DELETE FROM businesses WHERE account = $1".to_owned(),
        "DELETE FROM device_lists WHERE account = $1".to_owned(),
    ] {
        tx.execute(&sql, &[&account]).await?;
    }
    let deleted = tx
        .execute("DELETE FROM accounts WHERE account = $1", &[&account])
        .await?;
    Ok(deleted > 0)
}

async fn one_time_count(tx: &Transaction<'_>, key: i64) -> Result<u32, Failure> {
    let n: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = $1",
            &[&key],
        )
        .await?
        .try_get(0)?;
    Ok(count(n))
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn put_signed_prekey(
    tx: &Transaction<'_>,
    key: i64,
    spk: &SignedPrekey,
) -> Result<(), Failure> {
    put_signed_row(
        tx,
        key,
        KIND_SIGNED,
        spk.id.0,
        spk.public.as_bytes(),
        spk.signature.as_bytes(),
    )
    .await
}

async fn put_kem_prekey(
    tx: &Transaction<'_>,
    key: i64,
    kem: &SignedKemPrekey,
) -> Result<(), Failure> {
    put_signed_row(
        tx,
        key,
        KIND_KEM,
        kem.id.0,
        &kem.public,
        kem.signature.as_bytes(),
    )
    .await
}

async fn put_signed_row(
    tx: &Transaction<'_>,
    key: i64,
    kind: i64,
    id: u32,
    public: &[u8],
    signature: &[u8],
) -> Result<(), Failure> {
    tx.execute(
        "INSERT INTO signed_prekeys (device_key, kind, key_id, public, signature)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_key, kind) DO UPDATE SET
           key_id = excluded.key_id, public = excluded.public, signature = excluded.signature",
        &[&key, &kind, &i64::from(id), &public, &signature],
    )
    .await?;
    Ok(())
}

/// Adds (or replaces) one-time prekeys with one statement.
async fn put_one_time_prekeys(
    tx: &Transaction<'_>,
    key: i64,
    prekeys: &[OneTimePrekey],
) -> Result<(), Failure> {
    if prekeys.is_empty() {
        return Ok(());
    }
    // One row per id (the last upload of an id wins), as one statement may not update a
    // row twice.
    let unique: BTreeMap<i64, &[u8]> = prekeys
        .iter()
        .map(|p| (i64::from(p.id.0), p.public.as_bytes().as_slice()))
        .collect();
    let (ids, publics): (Vec<i64>, Vec<&[u8]>) = unique.into_iter().unzip();
    tx.execute(
        "INSERT INTO one_time_prekeys (device_key, key_id, public)
         SELECT $1, id, public FROM unnest($2::bigint[], $3::bytea[]) AS t (id, public)
         ON CONFLICT (device_key, key_id) DO UPDATE SET public = excluded.public",
        &[&key, &ids, &publics],
    )
    .await?;
    Ok(())
}
