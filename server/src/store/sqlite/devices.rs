//! Device lists on SQLite (`store::devices` has the rules).

use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId};
use rusqlite::{params, Connection, OptionalExtension};

use super::seqs::SeqBlocks;
use super::sql_error;
use crate::store::devices::{
    self, CurrentDevices, DeviceListLookup, NewDeviceList, PublishOutcome,
};
use crate::store::values::{to_day, to_i64, to_u64};
use crate::store::StoreError;

/// Adds a device row (`?1` account, `?2` device id, `?3` creation day); its key is
/// `last_insert_rowid` (use [`insert_device`]). Keys go above every key in use and every key ever deleted
/// (schema migration 8), so retry entries left by a removed device match no later one.
pub(super) const INSERT_DEVICE: &str = "
    INSERT INTO devices (id, account, device, created_at_ms)
    SELECT max(coalesce((SELECT max(id) FROM devices), 0), high) + 1, ?1, ?2, ?3
    FROM device_key_high";

/// Adds a device row with [`INSERT_DEVICE`]; its key.
pub(super) fn insert_device(
    conn: &Connection,
    account: &[u8],
    device: DeviceId,
    created_day_ms: i64,
) -> Result<i64, StoreError> {
    let inserted = conn
        .prepare_cached(INSERT_DEVICE)
        .and_then(|mut s| s.execute(params![account, device.0, created_day_ms]))
        .map_err(sql_error)?;
    if inserted != 1 {
        return Err(StoreError::Database(
            "no device row was added (is device_key_high empty?)".into(),
        ));
    }
    Ok(conn.last_insert_rowid())
}

/// Stores a newer list and makes the account's device rows match it (the seq blocks of
/// removed rows are forgotten).
pub(super) fn publish(
    conn: &Connection,
    seqs: &mut SeqBlocks,
    new: &NewDeviceList,
) -> Result<PublishOutcome, StoreError> {
    let account = new.account();
    let a = account.as_bytes().as_slice();
    if !account_exists(conn, &account)? {
        return Ok(PublishOutcome::UnknownAccount);
    }
    let stored_version = conn
        .prepare_cached("SELECT version FROM device_lists WHERE account = ?1")
        .and_then(|mut s| s.query_row(params![a], |r| r.get::<_, i64>(0)).optional())
        .map_err(sql_error)?
        .map_or(0, to_u64);
    if new.version() <= stored_version {
        return Ok(PublishOutcome::Stale { stored_version });
    }
    let (added, removed) = devices::changes(&current_devices(conn, a)?, &new.devices());
    let created = to_i64(to_day(new.now_ms));
    for device in &added {
        insert_device(conn, a, *device, created)?;
    }
    for device in &removed {
        remove_device(conn, seqs, a, *device)?;
    }
    conn.prepare_cached(
        "INSERT INTO device_lists (account, version, list) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE SET version = excluded.version, list = excluded.list",
    )
    .and_then(|mut s| {
        s.execute(params![
            a,
            to_i64(new.version()),
            devices::encode(&new.list)
        ])
    })
    .map_err(sql_error)?;
    Ok(PublishOutcome::Stored { added, removed })
}

/// The account's latest list.
pub(super) fn lookup(
    conn: &Connection,
    account: &AccountId,
) -> Result<DeviceListLookup, StoreError> {
    let stored: Option<Vec<u8>> = conn
        .prepare_cached("SELECT list FROM device_lists WHERE account = ?1")
        .and_then(|mut s| {
            s.query_row(params![account.as_bytes().as_slice()], |r| r.get(0))
                .optional()
        })
        .map_err(sql_error)?;
    match stored {
        Some(bytes) => devices::decode(&bytes).map(DeviceListLookup::Published),
        None if account_exists(conn, account)? => Ok(DeviceListLookup::Implicit),
        None => Ok(DeviceListLookup::UnknownAccount),
    }
}

/// A device of an account as a send to every device reads it: its row key, so that its
/// copy is queued without reading the row again.
#[derive(Clone, Copy, Debug)]
pub(super) struct Listed {
    pub address: DeviceAddress,
    pub key: i64,
}

/// The account's stored list version and its devices, for a send to every device.
pub(super) fn current(
    conn: &Connection,
    account: &AccountId,
) -> Result<(CurrentDevices, Vec<Listed>), StoreError> {
    let a = account.as_bytes().as_slice();
    // One statement, as it runs for every such send: the list version comes with each
    // device row (an account without rows has no devices to match, whatever its version).
    let mut version = 0;
    let listed: Vec<Listed> = conn
        .prepare_cached(
            "SELECT device, id, (SELECT version FROM device_lists WHERE account = ?1)
             FROM devices WHERE account = ?1 ORDER BY device",
        )
        .and_then(|mut s| {
            s.query_map(params![a], |r| {
                version = r.get::<_, Option<i64>>(2)?.map_or(0, to_u64);
                Ok(Listed {
                    address: DeviceAddress {
                        account: *account,
                        device: DeviceId(r.get(0)?),
                    },
                    key: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_error)?;
    let current = CurrentDevices {
        version,
        devices: listed.iter().map(|l| l.address.device).collect(),
    };
    Ok((current, listed))
}

/// Records the day `device` logged in (a write only when the day changed).
pub(super) fn seen(
    conn: &Connection,
    device: &DeviceAddress,
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE devices SET last_seen_day_ms = ?3
         WHERE account = ?1 AND device = ?2 AND last_seen_day_ms IS NOT ?3",
    )
    .and_then(|mut s| {
        s.execute(params![
            device.account.as_bytes().as_slice(),
            device.device.0,
            to_i64(to_day(now_ms))
        ])
    })
    .map(|_| ())
    .map_err(sql_error)
}

/// The day each device of `account` last logged in.
pub(super) fn last_seen(
    conn: &Connection,
    account: &AccountId,
) -> Result<Vec<(DeviceId, Option<u64>)>, StoreError> {
    conn.prepare_cached(
        "SELECT device, last_seen_day_ms FROM devices WHERE account = ?1 ORDER BY device",
    )
    .and_then(|mut s| {
        s.query_map(params![account.as_bytes().as_slice()], |r| {
            Ok((DeviceId(r.get(0)?), r.get::<_, Option<i64>>(1)?.map(to_u64)))
        })?
        .collect::<Result<Vec<_>, _>>()
    })
    .map_err(sql_error)
}

fn account_exists(conn: &Connection, account: &AccountId) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE account = ?1)")
        .and_then(|mut s| s.query_row(params![account.as_bytes().as_slice()], |r| r.get(0)))
        .map_err(sql_error)
}

pub(super) fn current_devices(
    conn: &Connection,
    account: &[u8],
) -> Result<Vec<DeviceId>, StoreError> {
    conn.prepare_cached("SELECT device FROM devices WHERE account = ?1 ORDER BY device")
        .and_then(|mut s| {
            s.query_map(params![account], |r| r.get::<_, u32>(0).map(DeviceId))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_error)
}

/// Deletes one device: its queue, prekeys and row (and its seq block). Its retry
/// entries expire with the dedup window (`schema`, migration 8): they name a device key
/// no row resolves any more.
fn remove_device(
    conn: &Connection,
    seqs: &mut SeqBlocks,
    account: &[u8],
    device: DeviceId,
) -> Result<(), StoreError> {
    let key: Option<i64> = conn
        .prepare_cached("SELECT id FROM devices WHERE account = ?1 AND device = ?2")
        .and_then(|mut s| {
            s.query_row(params![account, device.0], |r| r.get(0))
                .optional()
        })
        .map_err(sql_error)?;
    let Some(key) = key else {
        return Ok(());
    };
    seqs.forget(key);
    for sql in [
        "DELETE FROM queue WHERE recipient = ?1",
        "DELETE FROM one_time_prekeys WHERE device_key = ?1",
        "DELETE FROM signed_prekeys WHERE device_key = ?1",
        "DELETE FROM devices WHERE id = ?1",
    ] {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute(params![key]))
            .map_err(sql_error)?;
    }
    Ok(())
}
