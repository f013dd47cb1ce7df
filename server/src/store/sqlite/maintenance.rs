//! What operators do to the database, beside serving clients: the readiness probe, the
//! queue depth for `/metrics`, and two commands that work on a data directory while a
//! server may be running on it: [`stats`] and [`backup`].
//!
//! Both commands open their own connection. WAL lets them read a consistent snapshot
//! while the server's writer keeps committing; neither ever writes to the live database.

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{sql_error, DATABASE_FILE};
use crate::store::StoreError;

/// Writes one tiny row, so that a successful commit proves the database is writable.
pub(super) fn probe_write(conn: &Connection, now_ms: u64) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', ?1)")
        .and_then(|mut s| s.execute(params![i64::try_from(now_ms).unwrap_or(i64::MAX)]))
        .map(|_| ())
        .map_err(sql_error)
}

/// Envelopes waiting in all queues.
pub(super) fn queue_depth(conn: &Connection) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT COUNT(*) FROM queue")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(sql_error)
}

/// A summary of a database, for `parley-server admin stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseStats {
    /// The database file.
    pub path: PathBuf,
    /// Schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Size of the database file in bytes (without its WAL).
    pub file_bytes: u64,
    /// Size of the write-ahead log in bytes (0 when absent).
    pub wal_bytes: u64,
    /// Registered accounts.
    pub accounts: u64,
    /// Devices.
    pub devices: u64,
    /// Envelopes waiting for acknowledgement.
    pub queued_envelopes: u64,
    /// When the oldest queued envelope was accepted, ms since the Unix epoch.
    pub oldest_queued_at_ms: Option<u64>,
    /// One-time prekeys held for all devices.
    pub one_time_prekeys: u64,
    /// Retry dedup entries.
    pub dedup_entries: u64,
}

/// Reads a summary of the database in `data_dir`, in one read transaction.
pub fn stats(data_dir: &Path) -> Result<DatabaseStats, StoreError> {
    let path = data_dir.join(DATABASE_FILE);
    let mut conn = open_existing(&path)?;
    let tx = conn.transaction().map_err(sql_error)?;
    let count = |table: &str| -> Result<u64, StoreError> {
        tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(sql_error)
    };
    let stats = DatabaseStats {
        schema_version: tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql_error)?,
        file_bytes: file_size(&path),
        wal_bytes: file_size(&wal_path(&path)),
        accounts: count("accounts")?,
        devices: count("devices")?,
        queued_envelopes: count("queue")?,
        oldest_queued_at_ms: tx
            .query_row("SELECT MIN(accepted_at_ms) FROM queue", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()
            .map_err(sql_error)?
            .flatten()
            .map(|ms| u64::try_from(ms).unwrap_or(0)),
        one_time_prekeys: count("one_time_prekeys")?,
        dedup_entries: count("sent")?,
        path: path.clone(),
    };
    tx.commit().map_err(sql_error)?;
    Ok(stats)
}

/// What [`backup`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Envelopes queued in it.
    pub queued_envelopes: u64,
}

/// Copies the database in `data_dir` to `destination` with SQLite's online backup API:
/// one step over all pages inside one read transaction, so the copy is the consistent
/// state of one moment even while the server commits, and the server is never blocked.
///
/// The copy is written next to `destination` under a temporary name, checked with
/// `PRAGMA quick_check`, switched to a self-contained rollback journal, synced, and only
/// then renamed into place: a file at `destination` is always a whole backup. An existing
/// `destination` is never overwritten.
pub fn backup(data_dir: &Path, destination: &Path) -> Result<BackupReport, StoreError> {
    if destination.exists() {
        return Err(StoreError::Database(format!(
            "{} already exists; choose a new file name",
            destination.display()
        )));
    }
    let parent = destination
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(StoreError::Database(format!(
            "cannot write the backup to {}: the directory {} does not exist (create it \
             first, or choose another file)",
            destination.display(),
            parent.display()
        )));
    }
    let source = open_existing(&data_dir.join(DATABASE_FILE))?;
    let mut partial = destination.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let result = copy_into(&source, &partial).and_then(|queued_envelopes| {
        std::fs::rename(&partial, destination).map_err(|e| {
            StoreError::Database(format!("cannot rename to {}: {e}", destination.display()))
        })?;
        Ok(BackupReport {
            path: destination.to_owned(),
            bytes: file_size(destination),
            queued_envelopes,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Copies `source` into a new database at `path`; returns its queued envelopes.
fn copy_into(source: &Connection, path: &Path) -> Result<u64, StoreError> {
    let mut copy = Connection::open(path).map_err(sql_error)?;
    {
        let backup = Backup::new(source, &mut copy).map_err(sql_error)?;
        // -1: every page in one step, under one read lock of the source.
        match backup.step(-1).map_err(sql_error)? {
            StepResult::Done => {}
            other => {
                return Err(StoreError::Database(format!(
                    "backup did not complete in one step ({other:?}); try again"
                )))
            }
        }
    }
    let check: String = copy
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql_error)?;
    if check != "ok" {
        return Err(StoreError::Database(format!(
            "the copy failed its integrity check: {check}"
        )));
    }
    let _: String = copy
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(sql_error)?;
    let queued = queue_depth(&copy)?;
    drop(copy);
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Database(format!("cannot sync {}: {e}", path.display())))?;
    Ok(queued)
}

/// Opens an existing database without creating one.
/// Applies the missing migrations to the database in `data_dir` (which must exist) and
/// returns its schema version; for `parley-server admin migrate` (a server does the
/// same when it starts).
pub fn migrate(data_dir: &Path) -> Result<u32, StoreError> {
    let path = data_dir.join(DATABASE_FILE);
    open_existing(&path)?;
    let mut conn = super::open_connection(&path, super::Durability::Full, false)?;
    super::schema::migrate(&mut conn)?;
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
        .map_err(sql_error)
}

/// Fails unless the database file `path` exists: operator commands act on a server's
/// database and never create one (in a mistyped directory, a new empty database would
/// answer "no businesses" as if all were well).
pub(super) fn require_existing(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "no database at {}: is --data-dir right? (a server creates it when it first \
         starts there; admin commands never do)",
        path.display()
    )))
}

fn open_existing(path: &Path) -> Result<Connection, StoreError> {
    require_existing(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_error)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(sql_error)?;
    Ok(conn)
}

fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use crate::store::{SendPolicy, Store, StoreHooks};
    use parley_protocol::ids::ServerId;

    #[tokio::test]
    async fn backup_of_a_live_store_is_complete_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path(),
            &SqliteOptions::default(),
            ServerId([7; 32]),
            StoreHooks::new(SendPolicy::default()),
        )
        .unwrap();
        store.check_writable().await.unwrap();
        let out = dir.path().join("copy.db");
        let report = backup(dir.path(), &out).unwrap();
        assert_eq!(report.queued_envelopes, 0);
        assert!(report.bytes > 0);
        assert!(backup(dir.path(), &out).is_err(), "existing file kept");
        let restored = tempfile::tempdir().unwrap();
        std::fs::copy(&out, restored.path().join(DATABASE_FILE)).unwrap();
        let copy = SqliteStore::open(
            restored.path(),
            &SqliteOptions::default(),
            ServerId([9; 32]),
            StoreHooks::new(SendPolicy::default()),
        )
        .unwrap();
        assert_eq!(copy.server_id(), ServerId([7; 32]), "server id travels");
        let s = stats(restored.path()).unwrap();
        assert_eq!(s.accounts, 0);
        store.close().await.unwrap();
        copy.close().await.unwrap();
    }

    #[test]
    fn stats_of_a_missing_database_say_where_they_looked() {
        let dir = tempfile::tempdir().unwrap();
        let err = stats(dir.path()).unwrap_err().to_string();
        assert!(err.contains("parley.db"), "{err}");
    }
}
