//! A running server's hold on its data directory: an exclusive lock on `parley.lock`
//! inside it, taken at start before anything is read or created there, and released
//! when the server stops (or dies: the kernel drops the lock with the process).
//!
//! Two servers on one directory would share a SQLite database behind each other's back
//! (and each believe it delivers the queue alone), so the second is refused at start with
//! a message naming the directory. Operator commands (`parley-server admin ...`) do not
//! take the lock: they are made to run beside the server.
//!
//! This module knows nothing of what else lives in the directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file inside a data directory.
pub const LOCK_FILE: &str = "parley.lock";

/// The data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the directory.
    #[error(
        "another parley-server is already running on the data directory {}; stop it first, \
         or give this one another --data-dir",
        .0.display()
    )]
    InUse(PathBuf),
    /// The directory or its lock file could not be created or locked.
    #[error("cannot lock the data directory {}: {reason}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// The exclusive hold on a data directory; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it; [`DataDirError::InUse`] when another
    /// process (or another server in this process) holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let fail = |e: std::io::Error| DataDirError::Io {
            path: dir.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(fail)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(DataDirError::InUse(dir.to_owned())),
            Err(TryLockError::Error(e)) => Err(fail(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_held_by_one_lock_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).unwrap();
        let err = DataDirLock::acquire(&data).unwrap_err();
        assert!(matches!(err, DataDirError::InUse(_)));
        assert!(
            err.to_string().contains(&data.display().to_string()),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(&data).expect("released on drop");
    }
}
