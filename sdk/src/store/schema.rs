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
