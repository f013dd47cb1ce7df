//! Device lists on PostgreSQL (`store::devices` has the rules).
//!
//! Publishing locks the account's row first, so two publishes of one account (from two
//! nodes) take turns and the version check holds, then the account's `queue_head` rows in
//! the lanes' order (as a block does): a send to a device being removed either committed
//! before (and its envelope is deleted with the queue) or finds the device gone.

use deadpool_postgres::{ClientWrapper, Transaction};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId};

use super::errors::Failure;
use crate::store::devices::{self, DeviceListLookup, NewDeviceList, PublishOutcome};
use crate::store::values::{to_day, to_i64, to_u64};

/// Stores a newer list and makes the account's device rows match it.
pub(super) async fn publish(
    tx: &Transaction<'_>,
    new: &NewDeviceList,
) -> Result<PublishOutcome, Failure> {
    let account = new.account();
    let a = account.as_bytes().as_slice();
    let exists = tx
        .query_opt(
            "SELECT 1 FROM accounts WHERE account = $1 FOR UPDATE",
            &[&a],
        )
        .await?;
    if exists.is_none() {
        return Ok(PublishOutcome::UnknownAccount);
    }
    let stored_version = tx
        .query_opt("SELECT version FROM device_lists WHERE account = $1", &[&a])
        .await?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()?
        .map_or(0, to_u64);
    if new.version() <= stored_version {
        return Ok(PublishOutcome::Stale { stored_version });
    }
    tx.execute(
        "SELECT 1 FROM queue_head AS q JOIN devices AS d ON d.id = q.recipient
         WHERE d.account = $1 ORDER BY d.device FOR UPDATE OF q",
        &[&a],
    )
    .await?;
    let current: Vec<DeviceId> = tx
        .query(
            "SELECT device FROM devices WHERE account = $1 ORDER BY device",
            &[&a],
        )
        .await?
        .iter()
        .map(|r| {
            r.try_get::<_, i64>(0)
                .map(|d| DeviceId(u32::try_from(d).unwrap_or(0)))
        })
        .collect::<Result<_, _>>()?;
    let (added, removed) = devices::changes(&current, &new.devices());
    let created = to_i64(to_day(new.now_ms));
    for device in &added {
        let key: i64 = tx
            .query_one(
                "INSERT INTO devices (account, device, created_at_ms) VALUES ($1, $2, $3)
                 RETURNING id",
                &[&a, &i64::from(device.0), &created],
            )
            .await?
            .try_get(0)?;
        tx.execute("INSERT INTO queue_head (recipient) VALUES ($1)", &[&key])
            .await?;
    }
    for device in &removed {
        remove_device(tx, a, *device).await?;
    }
    tx.execute(
        "INSERT INTO device_lists (account, version, list) VALUES ($1, $2, $3)
         ON CONFLICT (account) DO UPDATE SET version = excluded.version, list = excluded.list",
        &[&a, &to_i64(new.version()), &devices::encode(&new.list)],
    )
    .await?;
    Ok(PublishOutcome::Stored { added, removed })
}

/// The account's latest list.
pub(super) async fn lookup(
    client: &ClientWrapper,
    account: &AccountId,
) -> Result<DeviceListLookup, Failure> {
    let statement = client
        .prepare_cached(
            "SELECT l.list, a.account IS NOT NULL FROM (SELECT $1::bytea AS account) AS k
             LEFT JOIN device_lists AS l ON l.account = k.account
             LEFT JOIN accounts AS a ON a.account = k.account",
        )
        .await?;
    let row = client
        .query_one(&statement, &[&account.as_bytes().as_slice()])
        .await?;
    let list: Option<Vec<u8>> = row.try_get(0)?;
    let exists: bool = row.try_get(1)?;
    Ok(match list {
        Some(bytes) => DeviceListLookup::Published(devices::decode(&bytes)?),
        None if exists => DeviceListLookup::Implicit,
        None => DeviceListLookup::UnknownAccount,
    })
}

/// Records the day `device` logged in (one autocommitted statement, a write only when
/// the day changed).
pub(super) async fn seen(
    client: &ClientWrapper,
    device: &DeviceAddress,
    now_ms: u64,
) -> Result<(), Failure> {
    let statement = client
        .prepare_cached(
            "UPDATE devices SET last_seen_day_ms = $3
             WHERE account = $1 AND device = $2
               AND last_seen_day_ms IS DISTINCT FROM $3",
        )
        .await?;
    client
        .execute(
            &statement,
            &[
                &device.account.as_bytes().as_slice(),
                &i64::from(device.device.0),
                &to_i64(to_day(now_ms)),
            ],
        )
        .await?;
    Ok(())
}

/// The day each device of `account` last logged in.
pub(super) async fn last_seen(
    client: &ClientWrapper,
    account: &AccountId,
) -> Result<Vec<(DeviceId, Option<u64>)>, Failure> {
    let statement = client
        .prepare_cached(
            "SELECT device, last_seen_day_ms FROM devices WHERE account = $1 ORDER BY device",
        )
        .await?;
    client
        .query(&statement, &[&account.as_bytes().as_slice()])
        .await?
        .iter()
        .map(|r| {
            let device = DeviceId(u32::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0));
            let day: Option<i64> = r.try_get(1)?;
            Ok((device, day.map(to_u64)))
        })
        .collect()
}

/// Deletes one device: its queue head and queue, retry entries, prekeys and row.
async fn remove_device(
    tx: &Transaction<'_>,
    account: &[u8],
    device: DeviceId,
) -> Result<(), Failure> {
    let key = tx
        .query_opt(
            "SELECT id FROM devices WHERE account = $1 AND device = $2",
            &[&account, &i64::from(device.0)],
        )
        .await?;
    let Some(key) = key.map(|r| r.try_get::<_, i64>(0)).transpose()? else {
        return Ok(());
    };
    for sql in [
        "DELETE FROM queue_head WHERE recipient = $1",
        "DELETE FROM queue WHERE recipient = $1",
        "DELETE FROM queue_acked WHERE recipient = $1",
        "DELETE FROM sent WHERE sender = $1",
        "DELETE FROM one_time_prekeys WHERE device_key = $1",
        "DELETE FROM signed_prekeys WHERE device_key = $1",
        "DELETE FROM devices WHERE id = $1",
    ] {
        tx.execute(sql, &[&key]).await?;
    }
    Ok(())
}
