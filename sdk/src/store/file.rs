//! A profile's files on disk: private to the user, held by one process, and never
//! mistaken for a new profile when they are damaged.
//!
//! * **Private.** The database holds the identity key. Its directory is created `0700`
//!   and the database, its `-wal`/`-shm` files and the lock file are `0600`; a profile
//!   made by an older version (or copied with a loose umask) is tightened when opened.
//! * **One process.** `client.lock` next to the database is locked for the store's
//!   lifetime ([`SdkError::ProfileInUse`] for a second opener): the lock guards the
//!   profile's single connection to the relay (two engines on one profile would
//!   displace each other's connection and race on the same sessions). Beside the holder,
//!   [`open_read_only`] gives a reader that cannot write and cannot start an engine.
//! * **New or damaged.** A new database is built under a temporary name and renamed into
//!   place once its schema is written, so a database file that exists always held a
//!   profile. One that is empty, is not SQLite, or has lost its schema is damaged:
//!   [`SdkError::DamagedProfile`], naming the file, and nothing is written to it. Only
//!   [`Damaged::SetAside`] (for `parley register --replace-damaged-profile`) moves it
//!   aside, as `<name>.damaged-<unix seconds>`, and starts a new one.
//!
//! What is inside the database is [`super::schema`]'s and [`super::ClientStore`]'s.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::SdkError;

/// Mode of a profile's directory.
#[cfg(unix)]
const DIRECTORY_MODE: u32 = 0o700;
/// Mode of a profile's files.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// What to do with a damaged database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damaged {
    /// Refuse to open it ([`SdkError::DamagedProfile`]): the default.
    Refuse,
    /// Move it aside and start a new profile; asked for explicitly by the person.
    SetAside,
}

/// Prepares the directory of `path` and locks the profile; returns the lock, held for the
/// store's lifetime.
pub(super) fn lock(path: &Path) -> Result<File, SdkError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let lock_path = path.with_extension("lock");
    let lock = private_file(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(SdkError::ProfileInUse),
        Err(std::fs::TryLockError::Error(e)) => Err(storage(&lock_path, "cannot lock", e)),
    }
}

/// Opens the database at `path` (creating a new one if there is no file), after
/// checking it is not damaged; tightens the modes of its files.
pub(super) fn open(path: &Path, damaged: Damaged) -> Result<Connection, SdkError> {
    if !path.exists() {
        create(path)?;
    }
    let conn = match check(path) {
        Ok(conn) => conn,
        Err(SdkError::DamagedProfile { .. }) if damaged == Damaged::SetAside => {
            set_aside(path)?;
            create(path)?;
            check(path)?
        }
        Err(e) => return Err(e),
    };
    for file in [
        path.to_owned(),
        suffixed(path, "-wal"),
        suffixed(path, "-shm"),
    ] {
        if file.exists() {
            make_private(&file)?;
        }
    }
    Ok(conn)
}

/// Opens the existing database at `path` read-only, without taking the lock (the
/// database's own locking keeps each read consistent while the holder writes).
pub(super) fn open_read_only(path: &Path) -> Result<Connection, SdkError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags)
        .map_err(|e| SdkError::Storage(format!("{}: {e}", path.display())))
}

/// Opens `path` and checks that it holds a profile's schema.
fn check(path: &Path) -> Result<Connection, SdkError> {
    let damaged = |reason: &str| SdkError::DamagedProfile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let empty = std::fs::metadata(path)
        .map_err(|e| storage(path, "cannot read", e))?
        .len()
        == 0;
    if empty {
        return Err(damaged("is empty"));
    }
    let not_sqlite = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            damaged("is not a readable SQLite database")
        }
        _ => SdkError::Storage(format!("{}: {e}", path.display())),
    };
    let conn = Connection::open(path).map_err(not_sqlite)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(not_sqlite)?;
    if version == 0 {
        return Err(damaged("has lost its tables"));
    }
    Ok(conn)
}

/// Builds a new database at `path`: schema first, under a temporary name, then renamed
/// into place.
fn create(path: &Path) -> Result<(), SdkError> {
    let building = suffixed(path, ".new");
    let _ = std::fs::remove_file(&building);
    drop(private_file(&building)?);
    let result = Connection::open(&building)
        .map_err(|e| SdkError::Storage(format!("{}: {e}", building.display())))
        .and_then(|mut conn| {
            super::schema::migrate(&mut conn)?;
            conn.close()
                .map_err(|(_, e)| SdkError::Storage(format!("{}: {e}", building.display())))
        })
        .and_then(|()| {
            std::fs::rename(&building, path).map_err(|e| storage(path, "cannot create", e))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&building);
    }
    result
}

/// Moves a damaged database (and its `-wal`/`-shm` files) aside.
fn set_aside(path: &Path) -> Result<(), SdkError> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = suffixed(path, &format!(".damaged-{seconds}"));
    for (from, to) in [
        (path.to_owned(), aside.clone()),
        (suffixed(path, "-wal"), suffixed(&aside, "-wal")),
        (suffixed(path, "-shm"), suffixed(&aside, "-shm")),
    ] {
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| storage(&from, "cannot move aside", e))?;
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `dir` (and missing parents) private to the user, and tightens `dir` itself if
/// it already existed.
fn create_private_dir(dir: &Path) -> Result<(), SdkError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIRECTORY_MODE);
    }
    builder
        .create(dir)
        .map_err(|e| storage(dir, "cannot create", e))?;
    set_mode(dir, true)
}

/// Opens (creating) a file readable and writable by the user only.
fn private_file(path: &Path) -> Result<File, SdkError> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options
        .open(path)
        .map_err(|e| storage(path, "cannot open", e))?;
    make_private(path)?;
    Ok(file)
}

/// Tightens an existing file to the user only.
fn make_private(path: &Path) -> Result<(), SdkError> {
    set_mode(path, false)
}

#[cfg(unix)]
fn set_mode(path: &Path, directory: bool) -> Result<(), SdkError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if directory { DIRECTORY_MODE } else { FILE_MODE };
    let current = std::fs::metadata(path)
        .map_err(|e| storage(path, "cannot read", e))?
        .permissions()
        .mode();
    if current & 0o777 == mode {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| storage(path, "cannot make private", e))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _directory: bool) -> Result<(), SdkError> {
    Ok(())
}

fn storage(path: &Path, what: &str, e: std::io::Error) -> SdkError {
    SdkError::Storage(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_database_is_complete_before_it_has_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p").join("client.db");
        let _lock = lock(&path).unwrap();
        drop(open(&path, Damaged::Refuse).unwrap());
        assert!(!suffixed(&path, ".new").exists());
        drop(check(&path).expect("a migrated database"));
        #[cfg(unix)]
        {
            assert_eq!(mode(dir.path().join("p").as_path()), 0o700);
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&path.with_extension("lock")), 0o600);
        }
    }

    #[test]
    fn damaged_databases_are_refused_and_set_aside_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.db");
        for (bytes, reason) in [
            (&b""[..], "is empty"),
            (
                &b"this is not a database, just some text that is long enough"[..],
                "SQLite",
            ),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let err = open(&path, Damaged::Refuse).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
        }
        drop(open(&path, Damaged::SetAside).unwrap());
        drop(check(&path).expect("a new database"));
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("client.db.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }
}
