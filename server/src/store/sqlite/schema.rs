//! The SQLite schema and its migrations.
//!
//! `PRAGMA user_version` records how many entries of [`MIGRATIONS`] have been applied.
//! A migration is appended, never edited; opening a database applies the missing ones
//! in one transaction. A database from a newer server is refused rather than guessed at.
//!
//! Devices get a compact integer key (`devices.id`) so that the hot tables (`queue`,
//! `sent`) index 8-byte integers instead of 36-byte addresses. Since migration 3 both hot
//! tables are append-only rowid tables: rows go in commit order, retention (and the
//! dedup window) deletes from the lowest id, and no index on time is kept. Since
//! migration 5 `sent` names no recipient (`store::retry`); since migration 8 its index
//! leads with the message id, and a removed device's rows expire with the window.

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
    // 2: business accounts, consent, care windows, reach, blocks, reports, display names.
    r#"
    ALTER TABLE accounts ADD COLUMN display_name TEXT;
    -- Category bit (1, 2, 4, 8) of a business envelope; 16 for conversation; NULL between
    -- people. Used to purge envelopes of revoked categories.
    ALTER TABLE queue ADD COLUMN category INTEGER;

    -- Verified businesses: the current certificate, standing and limits.
    CREATE TABLE businesses (
        account          BLOB PRIMARY KEY,
        serial           INTEGER NOT NULL,
        certificate      BLOB NOT NULL,     -- MessagePack SignedCertificate
        legal_name       TEXT NOT NULL,
        display_name     TEXT NOT NULL,
        name_skeleton    TEXT NOT NULL,     -- confusable::skeleton(display_name)
        domain           TEXT NOT NULL,
        categories       INTEGER NOT NULL,  -- CategorySet bits
        issued_at_ms     INTEGER NOT NULL,
        expires_at_ms    INTEGER NOT NULL,
        revoked_at_ms    INTEGER,           -- NULL while the certificate stands
        tier             INTEGER NOT NULL DEFAULT 0,
        suspended_at_ms  INTEGER,           -- NULL unless suspended
        suspended_reason TEXT,
        standing_since_ms INTEGER NOT NULL DEFAULT 0  -- reports before this do not count
    ) WITHOUT ROWID;
    CREATE INDEX businesses_by_skeleton ON businesses (name_skeleton);

    -- Categories in force per (user, business); one row per granted category.
    CREATE TABLE consents (
        user          BLOB NOT NULL,
        business      BLOB NOT NULL,
        category      INTEGER NOT NULL,     -- one CategorySet bit
        expires_at_ms INTEGER,              -- NULL: until revoked
        granted_at_ms INTEGER NOT NULL,
        PRIMARY KEY (user, business, category)
    ) WITHOUT ROWID;

    -- Every grant and revocation accepted, by nonce: replay protection and audit.
    CREATE TABLE consent_log (
        user         BLOB NOT NULL,
        nonce        BLOB NOT NULL,
        business     BLOB NOT NULL,
        revocation   INTEGER NOT NULL,      -- 0 grant, 1 revocation
        categories   INTEGER NOT NULL,
        issued_at_ms INTEGER NOT NULL,
        record       BLOB NOT NULL,         -- MessagePack ConsentRecord
        PRIMARY KEY (user, nonce)
    ) WITHOUT ROWID;
    CREATE INDEX consent_log_by_pair ON consent_log (user, business, revocation, issued_at_ms);

    -- The last time a person wrote to a business: opens the care window.
    CREATE TABLE care_windows (
        user            BLOB NOT NULL,
        business        BLOB NOT NULL,
        last_message_ms INTEGER NOT NULL,
        PRIMARY KEY (user, business)
    ) WITHOUT ROWID;

    -- Unique recipients a business reached outside conversations, for the daily reach.
    CREATE TABLE reach (
        business      BLOB NOT NULL,
        recipient     BLOB NOT NULL,
        first_sent_ms INTEGER NOT NULL,
        PRIMARY KEY (business, recipient)
    ) WITHOUT ROWID;
    CREATE INDEX reach_by_time ON reach (business, first_sent_ms);

    CREATE TABLE blocks (
        user       BLOB NOT NULL,
        blocked    BLOB NOT NULL,
        at_ms      INTEGER NOT NULL,
        PRIMARY KEY (user, blocked)
    ) WITHOUT ROWID;

    -- One report per (reported account, reporter) counts.
    CREATE TABLE reports (
        account  BLOB NOT NULL,
        reporter BLOB NOT NULL,
        at_ms    INTEGER NOT NULL,
        PRIMARY KEY (account, reporter)
    ) WITHOUT ROWID;
    "#,
    // 3: append-only queue and dedup tables, without the accepted_at_ms indexes.
    //
    // Rows are appended in commit order (`id`), so the oldest rows are those with the
    // lowest ids, and the retention sweeps delete from there; `queue_by_age` and
    // `sent_by_age` cost a page write per envelope each and are dropped. The payload rows
    // no longer live in a B-tree keyed by recipient (where each recipient's last leaf is
    // rewritten, and split, for every envelope): new rows share the table's last pages,
    // and only a small `(recipient, seq)` index entry goes to a per-recipient page.
    r#"
    CREATE TABLE queue_v3 (
        id             INTEGER PRIMARY KEY,  -- commit order
        recipient      INTEGER NOT NULL,     -- devices.id
        seq            INTEGER NOT NULL,
        sender_account BLOB NOT NULL,
        sender_device  INTEGER NOT NULL,
        message_id     BLOB NOT NULL,
        accepted_at_ms INTEGER NOT NULL,
        ciphertext     BLOB NOT NULL,
        category       INTEGER
    );
    INSERT INTO queue_v3 (recipient, seq, sender_account, sender_device, message_id,
                          accepted_at_ms, ciphertext, category)
        SELECT recipient, seq, sender_account, sender_device, message_id,
               accepted_at_ms, ciphertext, category
        FROM queue ORDER BY accepted_at_ms, recipient, seq;
    DROP TABLE queue;
    ALTER TABLE queue_v3 RENAME TO queue;
    CREATE UNIQUE INDEX queue_by_recipient ON queue (recipient, seq);

    CREATE TABLE sent_v3 (
        id             INTEGER PRIMARY KEY,  -- commit order
        sender         INTEGER NOT NULL,     -- devices.id
        message_id     BLOB NOT NULL,
        seq            INTEGER NOT NULL,
        accepted_at_ms INTEGER NOT NULL
    );
    INSERT INTO sent_v3 (sender, message_id, seq, accepted_at_ms)
        SELECT sender, message_id, seq, accepted_at_ms FROM sent
        ORDER BY accepted_at_ms, sender, message_id;
    DROP TABLE sent;
    ALTER TABLE sent_v3 RENAME TO sent;
    CREATE UNIQUE INDEX sent_by_message ON sent (sender, message_id);
    "#,
    // 4: the recipient and a digest of the ciphertext of each sent id, so that an id
    // reused for another recipient or other bytes is refused instead of answered with the
    // first envelope's seq. NULL for older rows.
    r#"
    ALTER TABLE sent ADD COLUMN recipient INTEGER;
    ALTER TABLE sent ADD COLUMN digest BLOB;      -- first 16 bytes of SHA-256(ciphertext)
    "#,
    // 5: retry dedup without the recipient (store::retry): each row keeps a digest over
    // recipient and ciphertext together and the seq sealed under it, so a copy of the
    // database no longer says who wrote to whom. Old rows named the recipient and cannot
    // be rewritten (the ciphertext of a delivered envelope is gone): they expire here,
    // as at the end of the dedup window. The queue is untouched. Times that no rule
    // reads are kept to the day.
    r#"
    DROP TABLE sent;
    CREATE TABLE sent (
        id             INTEGER PRIMARY KEY,  -- commit order
        sender         INTEGER NOT NULL,     -- devices.id
        message_id     BLOB NOT NULL,
        sealed_seq     INTEGER NOT NULL,     -- RetryKey::seal(seq)
        digest         BLOB NOT NULL,        -- RetryKey::digest(recipient, ciphertext)
        accepted_at_ms INTEGER NOT NULL      -- retry::dedup_time
    );
    CREATE UNIQUE INDEX sent_by_message ON sent (sender, message_id);

    -- Times no rule reads, to the day (values::to_day).
    UPDATE accounts SET created_at_ms = created_at_ms - created_at_ms % 86400000;
    UPDATE devices SET created_at_ms = created_at_ms - created_at_ms % 86400000;
    UPDATE blocks SET at_ms = at_ms - at_ms % 86400000;
    UPDATE consents SET granted_at_ms = granted_at_ms - granted_at_ms % 86400000;
    "#,
    // 6: linked devices (ADR 0007): each account's latest signed device list, as its
    // client sent it (store::devices).
    r#"
    CREATE TABLE device_lists (
        account BLOB PRIMARY KEY,
        version INTEGER NOT NULL,
        list    BLOB NOT NULL                -- MessagePack SignedDeviceList
    ) WITHOUT ROWID;
    "#,
    // 7: the day each device last logged in, for its own account's `parley devices`
    // (store::devices); to the day, like the other times no rule reads.
    r#"
    ALTER TABLE devices ADD COLUMN last_seen_day_ms INTEGER;
    "#,
    // 8: the dedup index leads with the message id. The SDK's ids begin with their send
    // time (`MessageId::time_ordered`), so the rows a batch adds share the index's last
    // pages, whatever their senders; led by the sender, every sender of the batch dirtied
    // a page of its own, which made the dedup rows of held sends most of the WAL and its
    // checkpoints the tail of the relay's latency (docs/benchmarks.md). Rows are no
    // longer deleted by sender (that would scan the table): a removed device's rows
    // expire with the dedup window, and so that no later device matches them, a device
    // key is never given again (`devices::INSERT_DEVICE` takes keys above
    // `device_key_high`, the highest key ever deleted).
    r#"
    DROP INDEX sent_by_message;
    CREATE UNIQUE INDEX sent_by_id ON sent (message_id, sender);

    CREATE TABLE device_key_high (high INTEGER NOT NULL);
    INSERT INTO device_key_high SELECT coalesce(max(id), 0) FROM devices;
    CREATE TRIGGER device_keys_are_not_given_again AFTER DELETE ON devices
    BEGIN
        UPDATE device_key_high SET high = max(high, OLD.id);
    END;
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
    fn migration_3_keeps_queued_envelopes_and_dedup_entries() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..2] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.execute_batch(
            "INSERT INTO queue VALUES (7, 2, x'01', 1, x'02', 200, x'aa', NULL);
             INSERT INTO queue VALUES (7, 1, x'01', 1, x'03', 100, x'bb', 4);
             INSERT INTO sent VALUES (3, x'02', 2, 200);",
        )
        .unwrap();
        tx.commit().unwrap();
        conn.execute_batch(MIGRATIONS[2]).unwrap(); // 3 alone: 5 empties `sent`
        let rows: Vec<(i64, i64, i64, Option<i64>)> = conn
            .prepare("SELECT id, seq, accepted_at_ms, category FROM queue ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![(1, 1, 100, Some(4)), (2, 2, 200, None)]);
        let seq: i64 = conn
            .query_row(
                "SELECT seq FROM sent WHERE sender = 3 AND message_id = x'02'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seq, 2);
        let duplicate = conn.execute("INSERT INTO queue (recipient, seq, sender_account, sender_device, message_id, accepted_at_ms, ciphertext) VALUES (7, 2, x'01', 1, x'04', 300, x'cc')", []);
        assert!(duplicate.is_err(), "(recipient, seq) stays unique");
    }

    #[test]
    fn migration_5_forgets_recipients_and_keeps_queued_envelopes() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..4] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 4).unwrap();
        tx.execute_batch(
            "INSERT INTO queue (recipient, seq, sender_account, sender_device, message_id,
                                accepted_at_ms, ciphertext)
                 VALUES (7, 1, x'01', 1, x'02', 100, x'aa');
             INSERT INTO sent (sender, message_id, seq, accepted_at_ms, recipient, digest)
                 VALUES (3, x'02', 1, 100, 7, x'bb');
             INSERT INTO blocks VALUES (x'01', x'03', 86400123);",
        )
        .unwrap();
        tx.commit().unwrap();
        migrate(&mut conn).unwrap();
        let queued: i64 = conn
            .query_row("SELECT COUNT(*) FROM queue WHERE recipient = 7", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(queued, 1, "the queued envelope stays");
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM sent", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 0, "entries that named a recipient expire");
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('sent')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !columns.iter().any(|c| c == "recipient" || c == "seq"),
            "{columns:?}"
        );
        let blocked_at: i64 = conn
            .query_row("SELECT at_ms FROM blocks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(blocked_at, 86_400_000, "to the day");
    }

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

    #[test]
    fn migration_8_never_gives_a_deleted_device_key_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..7] {
            tx.execute_batch(sql).unwrap();
        }
        tx.execute_batch(
            "INSERT INTO devices (account, device, created_at_ms) VALUES (x'01', 1, 0);
             INSERT INTO devices (account, device, created_at_ms) VALUES (x'01', 2, 0);",
        )
        .unwrap();
        tx.pragma_update(None, "user_version", 7).unwrap();
        tx.commit().unwrap();
        migrate(&mut conn).unwrap();
        let insert = |account: &[u8], device: u32| {
            conn.execute(
                crate::store::sqlite::devices::INSERT_DEVICE,
                rusqlite::params![account, device, 0],
            )
            .unwrap();
            conn.last_insert_rowid()
        };
        // Keys deleted before: their retry entries were deleted with them.
        conn.execute("DELETE FROM devices WHERE id = 2", [])
            .unwrap();
        assert_eq!(insert(b"\x02", 1), 3, "not the deleted highest key");
        conn.execute("DELETE FROM devices WHERE id IN (1, 3)", [])
            .unwrap();
        assert_eq!(
            insert(b"\x03", 1),
            4,
            "not any deleted key, with no row left"
        );
        let index: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'sent_by_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(index.contains("(message_id, sender)"), "{index}");
    }
}
