//! The SQLite schema and its migrations.
//!
//! `PRAGMA user_version` records how many entries of [`MIGRATIONS`] have been applied.
//! A migration is appended, never edited; opening a database applies the missing ones
//! in one transaction. A database from a newer server is refused rather than guessed at.
//!
//! Devices get a compact integer key (`devices.id`) so that the hot tables (`queue`,
//! `sent`) index 8-byte integers instead of 36-byte addresses.

use rusqlite::Connection;

use super::sql_error;
use crate::store::StoreError;

/// Schema versions, in order. Index `i` upgrades `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, devices, prekeys, queues, dedup.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE accounts (
        account       BLOB PRIMARY KEY,      -- Ed25519 identity key (32)
        identity_dh   BLOB NOT NULL,         -- X25519 identity key (32)
        dh_signature  BLOB NOT NULL,         -- 64
        handle        TEXT UNIQUE,           -- normalized, NULL when none
        created_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE devices (
        id            INTEGER PRIMARY KEY,   -- compact device key
        account       BLOB NOT NULL,
        device        INTEGER NOT NULL,
        next_seq      INTEGER NOT NULL DEFAULT 1,
        created_at_ms INTEGER NOT NULL,
        UNIQUE (account, device)
    );

    -- kind 0: signed X25519 prekey; kind 1: signed ML-KEM prekey. One of each per device.
    CREATE TABLE signed_prekeys (
        device_key INTEGER NOT NULL,
        kind       INTEGER NOT NULL,
        key_id     INTEGER NOT NULL,
        public     BLOB NOT NULL,
        signature  BLOB NOT NULL,
        PRIMARY KEY (device_key, kind)
    ) WITHOUT ROWID;

    CREATE TABLE one_time_prekeys (
        device_key INTEGER NOT NULL,
        key_id     INTEGER NOT NULL,
        public     BLOB NOT NULL,
        PRIMARY KEY (device_key, key_id)
    ) WITHOUT ROWID;

    -- Undelivered (or delivered but unacknowledged) envelopes, per recipient device.
    CREATE TABLE queue (
        recipient      INTEGER NOT NULL,     -- devices.id
        seq            INTEGER NOT NULL,
        sender_account BLOB NOT NULL,
        sender_device  INTEGER NOT NULL,
        message_id     BLOB NOT NULL,
        accepted_at_ms INTEGER NOT NULL,
        ciphertext     BLOB NOT NULL,
        PRIMARY KEY (recipient, seq)
    ) WITHOUT ROWID;
    CREATE INDEX queue_by_age ON queue (accepted_at_ms);

    -- What each sender's message ids became, so a retry gets the first result.
    CREATE TABLE sent (
        sender         INTEGER NOT NULL,     -- devices.id
        message_id     BLOB NOT NULL,
        seq            INTEGER NOT NULL,
        accepted_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sender, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX sent_by_age ON sent (accepted_at_ms);
    "#,
];

/// Applies connection settings and any missing migrations.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_error)?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError::Database(format!(
            "database schema version {current} is newer than this server ({known}); \
             upgrade parley-server"
        )));
    }
    let tx = conn.transaction().map_err(sql_error)?;
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.execute_batch(sql).map_err(sql_error)?;
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(sql_error)?;
    }
    tx.commit().map_err(sql_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_newer_schemas_are_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::Database(_))));
    }
}
