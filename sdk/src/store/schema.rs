//! The client database schema; `PRAGMA user_version` counts applied migrations.

use rusqlite::Connection;

use crate::error::SdkError;

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE prekeys (kind INTEGER NOT NULL, id INTEGER NOT NULL, secret BLOB NOT NULL,
                          PRIMARY KEY (kind, id));
    CREATE TABLE sessions (account BLOB NOT NULL, device INTEGER NOT NULL, record BLOB NOT NULL,
                           PRIMARY KEY (account, device));
    CREATE TABLE contacts (account BLOB PRIMARY KEY, handle TEXT, identity BLOB NOT NULL,
                           verified INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE seen (account BLOB NOT NULL, device INTEGER NOT NULL, message_id BLOB NOT NULL,
                       PRIMARY KEY (account, device, message_id));
    CREATE TABLE outbox (n INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL UNIQUE,
                         account BLOB NOT NULL, device INTEGER NOT NULL, ciphertext BLOB NOT NULL);
    CREATE TABLE inbox (n INTEGER PRIMARY KEY AUTOINCREMENT, account BLOB NOT NULL,
                        device INTEGER NOT NULL, message_id BLOB NOT NULL,
                        sent_at_ms INTEGER NOT NULL, text TEXT NOT NULL,
                        shown INTEGER NOT NULL DEFAULT 0,
                        UNIQUE (account, device, message_id));
"#,
    // Business accounts and consent (protocol §14).
    r#"
    ALTER TABLE outbox ADD COLUMN category TEXT;
    ALTER TABLE inbox ADD COLUMN category TEXT;
    ALTER TABLE inbox ADD COLUMN card BLOB;
    CREATE TABLE consent_ledger (n INTEGER PRIMARY KEY AUTOINCREMENT, user BLOB NOT NULL,
                                 business BLOB NOT NULL, record BLOB NOT NULL UNIQUE);
    CREATE TABLE businesses (account BLOB PRIMARY KEY, certificate BLOB,
                             suspended INTEGER NOT NULL, fetched_at_ms INTEGER NOT NULL);
    CREATE TABLE last_sent (account BLOB PRIMARY KEY, at_ms INTEGER NOT NULL);
    CREATE TABLE cards_sent (card_id BLOB PRIMARY KEY, account BLOB NOT NULL, card BLOB NOT NULL,
                             answered INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE sent_status (message_id BLOB PRIMARY KEY, account BLOB NOT NULL,
                              status INTEGER NOT NULL);
"#,
    // The session a newer one replaced, kept to open messages still in flight on it
    // (both sides started a session at the same time).
    r#"
    ALTER TABLE sessions ADD COLUMN previous BLOB;
"#,
    // The action a card was answered with, so that a second answer is refused naming
    // the first (the card's sender would refuse it anyway).
    r#"
    ALTER TABLE inbox ADD COLUMN answer TEXT;
"#,
    // History: the inbox becomes `messages`, holding both directions of every
    // conversation (`account`, `device`: the peer; `outgoing`: sent by this client), each
    // received message read or not, and the receipts owed to peers. Messages shown
    // before count as read (no read receipt is owed for them).
    r#"
    CREATE TABLE messages (n INTEGER PRIMARY KEY AUTOINCREMENT, account BLOB NOT NULL,
                           device INTEGER NOT NULL, outgoing INTEGER NOT NULL,
                           message_id BLOB NOT NULL, at_ms INTEGER NOT NULL,
                           text TEXT NOT NULL, category TEXT, card BLOB, answer TEXT,
                           shown INTEGER NOT NULL DEFAULT 0, read INTEGER NOT NULL DEFAULT 0,
                           UNIQUE (account, device, outgoing, message_id));
    INSERT INTO messages (n, account, device, outgoing, message_id, at_ms, text, category,
                          card, answer, shown, read)
        SELECT n, account, device, 0, message_id, sent_at_ms, text, category, card, answer,
               shown, shown FROM inbox;
    DROP TABLE inbox;
    CREATE INDEX messages_by_peer ON messages (account, n);
    CREATE TABLE receipts_due (account BLOB NOT NULL, device INTEGER NOT NULL,
                               kind INTEGER NOT NULL, message_id BLOB NOT NULL,
                               PRIMARY KEY (account, device, kind, message_id));
    ALTER TABLE outbox ADD COLUMN receipt INTEGER NOT NULL DEFAULT 0;
"#,
    // The display names people set, as the relay reported them when their handle was
    // resolved (store::names).
    r#"
    CREATE TABLE display_names (account BLOB PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;
"#,
    // The profile's own device id (`kv` key `device`, a big-endian u32): a linked device
    // (ADR 0007) is not device 1. Every profile before this registered its account, so
    // it is device 1.
    r#"
    INSERT OR IGNORE INTO kv (key, value)
        SELECT 'device', x'00000001' FROM kv WHERE key = 'identity';
"#,
    // Linked devices (ADR 0007): the device lists this client verified, and the copies
    // of a send to every device (store::device_lists, OutboxFanOut).
    r#"
    CREATE TABLE device_lists (account BLOB PRIMARY KEY, version INTEGER NOT NULL,
                               list BLOB NOT NULL) WITHOUT ROWID;
    ALTER TABLE outbox ADD COLUMN fan_out BLOB;
"#,
    // The device of this account that sent each card kept (another device's card arrives
    // as a `sent` copy): the person signs the answer to it. NULL for the cards kept
    // before, which this device sent.
    r#"
    ALTER TABLE cards_sent ADD COLUMN device INTEGER;
"#,
];

/// Checks that a database opened read-only has this version's schema (it cannot be
/// migrated there).
pub(super) fn check_current(conn: &Connection) -> Result<(), SdkError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| SdkError::Storage(e.to_string()))?;
    if usize::try_from(version).ok() != Some(MIGRATIONS.len()) {
        return Err(SdkError::Storage(
            "the profile is in use by a parley process of another version, whose database \
             this one cannot read; close that process first"
                .into(),
        ));
    }
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), SdkError> {
    let db = |e: rusqlite::Error| SdkError::Storage(e.to_string());
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(db)
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX))?;
    if current > MIGRATIONS.len() {
        return Err(SdkError::Storage(
            "this profile was written by a newer parley; upgrade".into(),
        ));
    }
    let tx = conn.transaction().map_err(db)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", i + 1).map_err(db)?;
    }
    tx.commit().map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_from_before_linked_devices_is_device_1() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute(
            "INSERT INTO kv (key, value) VALUES ('identity', x'01'), ('account', x'02')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let device: Vec<u8> = conn
            .query_row("SELECT value FROM kv WHERE key = 'device'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(device, vec![0, 0, 0, 1]);

        // A profile without an identity gets none (register or link writes it).
        let mut empty = Connection::open_in_memory().unwrap();
        migrate(&mut empty).unwrap();
        let none: i64 = empty
            .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
            .unwrap();
        assert_eq!(none, 0);
    }

    #[test]
    fn a_card_kept_before_its_sender_was_recorded_names_none() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 8).unwrap();
        conn.execute(
            "INSERT INTO cards_sent (card_id, account, card) VALUES (x'01', x'02', x'03')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let device: Option<u32> = conn
            .query_row("SELECT device FROM cards_sent", [], |r| r.get(0))
            .unwrap();
        assert_eq!(device, None);
    }

    #[test]
    fn the_inbox_of_an_older_profile_becomes_its_history() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute(
            "INSERT INTO inbox (account, device, message_id, sent_at_ms, text, shown)
             VALUES (x'02', 1, x'01', 5, 'seen before', 1), (x'02', 1, x'03', 6, 'new', 0)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, String, bool, bool, bool)> = conn
            .prepare("SELECT at_ms, text, outgoing, shown, read FROM messages ORDER BY n")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (5, "seen before".into(), false, true, true),
                (6, "new".into(), false, false, false),
            ]
        );
    }
}
