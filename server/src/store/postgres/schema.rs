//! The PostgreSQL schema and its migrations.
//!
//! `parley_schema.version` records how many entries of [`MIGRATIONS`] have been
//! applied. A migration is appended, never edited. [`migrate`] applies the missing ones
//! in one transaction that first takes a transaction-level advisory lock, so that nodes
//! starting at once migrate once: the others wait, then find nothing left to do. A
//! database from a newer server is refused rather than guessed at. The lock is keyed by
//! the schema the connection works in (its `search_path`), so that separate schemas of
//! one database (tests) migrate independently.
//!
//! Layout (scaleout.md §5.1): devices get a compact `bigint` key, which the hot tables
//! (`queue_head`, `queue`, `sent`) use. `queue_head` holds each recipient's next seq
//! (`fillfactor` 70 so that its updates stay HOT); `queue` is hash-partitioned by
//! recipient into 16 partitions, each vacuumed early because acknowledged envelopes are
//! deleted at the rate they arrive; `sent` is the retry-dedup index, which names no
//! recipient (migration 2, `store::retry`). Everything a send
//! checks is keyed so that it could later move with its recipient. Times are `bigint`
//! ms since the epoch; categories are `store::policy::category_code`s.

use deadpool_postgres::{ClientWrapper, Transaction};
use parley_protocol::ids::ServerId;

use super::errors::Failure;
use crate::store::values::corrupt;
use crate::store::StoreError;

/// Schema versions, in order. Index `i` upgrades `version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: everything the store holds.
    r#"
    CREATE TABLE meta (
        key   text PRIMARY KEY,
        value bytea NOT NULL
    );

    CREATE TABLE accounts (
        account       bytea PRIMARY KEY,      -- Ed25519 identity key (32)
        identity_dh   bytea NOT NULL,         -- X25519 identity key (32)
        dh_signature  bytea NOT NULL,         -- 64
        handle        text UNIQUE,            -- normalized, NULL when none
        display_name  text,
        created_at_ms bigint NOT NULL
    );

    CREATE TABLE devices (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- compact key
        account       bytea NOT NULL,
        device        bigint NOT NULL,
        created_at_ms bigint NOT NULL,
        UNIQUE (account, device)
    );

    -- kind 0: signed X25519 prekey; kind 1: signed ML-KEM prekey. One of each per device.
    CREATE TABLE signed_prekeys (
        device_key bigint NOT NULL,
        kind       bigint NOT NULL,
        key_id     bigint NOT NULL,
        public     bytea NOT NULL,
        signature  bytea NOT NULL,
        PRIMARY KEY (device_key, kind)
    );

    CREATE TABLE one_time_prekeys (
        device_key bigint NOT NULL,
        key_id     bigint NOT NULL,
        public     bytea NOT NULL,
        PRIMARY KEY (device_key, key_id)
    );

    -- The next seq of each recipient device. Its row lock orders the commits of one
    -- recipient's envelopes: seq order is commit order, and seqs stay dense.
    CREATE TABLE queue_head (
        recipient bigint PRIMARY KEY,        -- devices.id
        next_seq  bigint NOT NULL DEFAULT 1
    ) WITH (fillfactor = 70);

    -- Undelivered (or delivered but unacknowledged) envelopes, per recipient device.
    CREATE TABLE queue (
        recipient      bigint NOT NULL,      -- devices.id
        seq            bigint NOT NULL,
        sender_account bytea NOT NULL,
        sender_device  bigint NOT NULL,
        message_id     bytea NOT NULL,
        accepted_at_ms bigint NOT NULL,
        ciphertext     bytea NOT NULL,
        category       bigint,               -- NULL between people
        PRIMARY KEY (recipient, seq)
    ) PARTITION BY HASH (recipient);
    CREATE INDEX queue_by_age ON queue (accepted_at_ms);
    DO $$
    BEGIN
        FOR i IN 0..15 LOOP
            EXECUTE format(
                'CREATE TABLE queue_p%s PARTITION OF queue
                   FOR VALUES WITH (MODULUS 16, REMAINDER %s)
                   WITH (autovacuum_vacuum_scale_factor = 0.02,
                         autovacuum_vacuum_insert_scale_factor = 0.05)',
                lpad(i::text, 2, '0'), i);
        END LOOP;
    END
    $$;
    -- Ciphertext does not compress: store it without trying.
    ALTER TABLE queue ALTER COLUMN ciphertext SET STORAGE EXTERNAL;

    -- What each sender's message ids became, so a retry gets the first result.
    CREATE TABLE sent (
        sender         bigint NOT NULL,      -- devices.id
        message_id     bytea NOT NULL,
        seq            bigint NOT NULL,
        recipient      bigint NOT NULL,      -- devices.id
        digest         bytea NOT NULL,       -- first 16 bytes of SHA-256(ciphertext)
        accepted_at_ms bigint NOT NULL,
        PRIMARY KEY (sender, message_id)
    ) WITH (autovacuum_vacuum_scale_factor = 0.02);
    CREATE INDEX sent_by_age ON sent (accepted_at_ms);

    -- Verified businesses: the current certificate, standing and limits.
    CREATE TABLE businesses (
        account           bytea PRIMARY KEY,
        serial            bigint NOT NULL,
        certificate       bytea NOT NULL,    -- MessagePack SignedCertificate
        legal_name        text NOT NULL,
        display_name      text NOT NULL,
        name_skeleton     text NOT NULL,     -- confusable::skeleton(display_name)
        domain            text NOT NULL,
        categories        bigint NOT NULL,   -- CategorySet bits
        issued_at_ms      bigint NOT NULL,
        expires_at_ms     bigint NOT NULL,
        revoked_at_ms     bigint,            -- NULL while the certificate stands
        tier              bigint NOT NULL DEFAULT 0,
        suspended_at_ms   bigint,            -- NULL unless suspended
        suspended_reason  text,
        standing_since_ms bigint NOT NULL DEFAULT 0  -- reports before this do not count
    );
    CREATE INDEX businesses_by_skeleton ON businesses (name_skeleton);

    -- Categories in force per (person, business); one row per granted category.
    CREATE TABLE consents (
        person        bytea NOT NULL,
        business      bytea NOT NULL,
        category      bigint NOT NULL,       -- one CategorySet bit
        expires_at_ms bigint,                -- NULL: until revoked
        granted_at_ms bigint NOT NULL,
        PRIMARY KEY (person, business, category)
    );

    -- Every grant and revocation accepted, by nonce: replay protection and audit.
    CREATE TABLE consent_log (
        person       bytea NOT NULL,
        nonce        bytea NOT NULL,
        business     bytea NOT NULL,
        revocation   boolean NOT NULL,
        categories   bigint NOT NULL,
        issued_at_ms bigint NOT NULL,
        record       bytea NOT NULL,         -- MessagePack ConsentRecord
        PRIMARY KEY (person, nonce)
    );
    CREATE INDEX consent_log_by_pair ON consent_log (person, business, revocation, issued_at_ms);

    -- The last time a person wrote to a business: opens the care window.
    CREATE TABLE care_windows (
        person          bytea NOT NULL,
        business        bytea NOT NULL,
        last_message_ms bigint NOT NULL,
        PRIMARY KEY (person, business)
    );

    -- Unique recipients a business reached outside conversations, for the daily reach.
    CREATE TABLE reach (
        business      bytea NOT NULL,
        recipient     bytea NOT NULL,
        first_sent_ms bigint NOT NULL,
        PRIMARY KEY (business, recipient)
    );
    CREATE INDEX reach_by_time ON reach (business, first_sent_ms);

    CREATE TABLE blocks (
        person  bytea NOT NULL,
        blocked bytea NOT NULL,
        at_ms   bigint NOT NULL,
        PRIMARY KEY (person, blocked)
    );

    -- One report per (reported account, reporter) counts.
    CREATE TABLE reports (
        account  bytea NOT NULL,
        reporter bytea NOT NULL,
        at_ms    bigint NOT NULL,
        PRIMARY KEY (account, reporter)
    );

    -- Token buckets shared by every node (rate_limit::BucketRate arithmetic): the
    -- tokens a bucket held when last counted.
    CREATE TABLE rate_buckets (
        limit_name    text NOT NULL,         -- which limit: 'business_sends'
        subject       bytea NOT NULL,        -- whose bucket: an account
        tokens        double precision NOT NULL,
        updated_at_ms bigint NOT NULL,
        PRIMARY KEY (limit_name, subject)
    ) WITH (fillfactor = 70);

    -- check_writable commits a write here.
    CREATE TABLE probe (
        id    bigint PRIMARY KEY,
        at_ms bigint NOT NULL
    );
    "#,
    // 2: retry dedup without the recipient (store::retry): each row keeps a digest over
    // recipient and ciphertext together and the seq sealed under it, so a copy of the
    // database no longer says who wrote to whom. Old rows named the recipient and cannot
    // be rewritten (the ciphertext of a delivered envelope is gone): they expire here,
    // as at the end of the dedup window. The queue is untouched. Times that no rule
    // reads are kept to the day.
    r#"
    DROP TABLE sent;
    CREATE TABLE sent (
        sender         bigint NOT NULL,      -- devices.id
        message_id     bytea NOT NULL,
        sealed_seq     bigint NOT NULL,      -- RetryKey::seal(seq)
        digest         bytea NOT NULL,       -- RetryKey::digest(recipient, ciphertext)
        accepted_at_ms bigint NOT NULL,      -- retry::dedup_time
        PRIMARY KEY (sender, message_id)
    ) WITH (autovacuum_vacuum_scale_factor = 0.02);
    CREATE INDEX sent_by_age ON sent (accepted_at_ms);

    -- Times no rule reads, to the day (values::to_day).
    UPDATE accounts SET created_at_ms = created_at_ms - created_at_ms % 86400000;
    UPDATE devices SET created_at_ms = created_at_ms - created_at_ms % 86400000;
    UPDATE blocks SET at_ms = at_ms - at_ms % 86400000;
    UPDATE consents SET granted_at_ms = granted_at_ms - granted_at_ms % 86400000;
    "#,
    // 3: linked devices (ADR 0007): each account's latest signed device list, as its
    // client sent it (store::devices).
    r#"
    CREATE TABLE device_lists (
        account bytea PRIMARY KEY,
        version bigint NOT NULL,
        list    bytea NOT NULL                -- MessagePack SignedDeviceList
    );
    "#,
    // 4: the day each device last logged in, for its own account's `parley devices`
    // (store::devices); to the day, like the other times no rule reads.
    r#"
    ALTER TABLE devices ADD COLUMN last_seen_day_ms bigint;
    "#,
    // 5: hold, then persist (ADR 0005 §3, `postgres::held`): when a seq of the device
    // was last given to an envelope held instead of queued, by the database's clock, so
    // that a read of its queue waits until every such seq is committed or can no longer
    // be; and how far each device acknowledged, so that such a read knows which missing
    // seqs were delivered (its own table: acks never wait for the head's lock).
    r#"
    ALTER TABLE queue_head ADD COLUMN decided_at_ms bigint NOT NULL DEFAULT 0;
    CREATE TABLE queue_acked (
        recipient bigint PRIMARY KEY,        -- devices.id
        through   bigint NOT NULL
    );
    "#,
    // 6: until when a held seq of the device may still be committed, by the deciding
    // node's own window (`--hold-deadline` + `--hold-commit-grace`), so that a read on a
    // node with other settings (or with holding off) waits for it just as long.
    r#"
    ALTER TABLE queue_head ADD COLUMN held_until_ms bigint NOT NULL DEFAULT 0;
    "#,
];

/// The schema version this server knows.
pub(super) fn known_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// First key of the advisory lock that serialises migrations (the second is the
/// schema's), so that it never collides with another application's locks: "PRLY".
pub(super) const LOCK_CLASS_MIGRATE: i32 = 0x5052_4c59;

/// Applies any missing migrations in one transaction; returns the version now in force.
pub(super) async fn migrate(client: &mut ClientWrapper) -> Result<u32, Failure> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, COALESCE(hashtext(current_schema()), 0))",
        &[&LOCK_CLASS_MIGRATE],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS parley_schema (
             single  boolean PRIMARY KEY DEFAULT true CHECK (single),
             version integer NOT NULL
         );
         INSERT INTO parley_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT version FROM parley_schema", &[])
        .await?
        .try_get(0)?;
    let current = u32::try_from(current).map_err(|_| corrupt("parley_schema.version"))?;
    let known = known_version();
    if current > known {
        return Err(StoreError::Database(format!(
            "database schema version {current} is newer than this server ({known}); \
             upgrade parley-server"
        ))
        .into());
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(index + 1).map_err(|_| corrupt("MIGRATIONS"))?;
        tx.execute("UPDATE parley_schema SET version = $1", &[&version])
            .await?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    tx.commit().await?;
    Ok(known)
}

/// Reads the cluster's server id, storing `fresh` if the database has none yet (the
/// first node to open a new database chooses it; every node reads it back).
pub(super) async fn server_id(tx: &Transaction<'_>, fresh: ServerId) -> Result<ServerId, Failure> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('server_id', $1) ON CONFLICT (key) DO NOTHING",
        &[&fresh.as_bytes().as_slice()],
    )
    .await?;
    let bytes: Vec<u8> = tx
        .query_one("SELECT value FROM meta WHERE key = 'server_id'", &[])
        .await?
        .try_get(0)?;
    Ok(ServerId::from_slice(&bytes).ok_or_else(|| corrupt("meta.server_id"))?)
}
