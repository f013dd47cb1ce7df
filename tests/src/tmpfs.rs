//! A small tmpfs mounted for one test: a real file system that fills up (ENOSPC) or turns
//! read-only, for storage-fault tests.
//!
//! Mounting needs root with `CAP_SYS_ADMIN`. Where that is missing, [`Tmpfs::mount`]
//! returns `None` and says why, and the test skips itself with that message: a chmod-based
//! imitation would pass falsely under root (root ignores file modes).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted (lazily) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    /// Where it is mounted (inside a temporary directory).
    pub path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB; `None` (with the reason printed) if this machine does
    /// not allow it.
    pub fn mount(kib: u64) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().ok()?;
        let path = parent.path().join("fs");
        std::fs::create_dir(&path).ok()?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&path)
            .output();
        match output {
            Ok(out) if out.status.success() => Some(Tmpfs {
                path,
                _parent: parent,
            }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    /// Remounts read-only (fails while a file is open for writing).
    pub fn remount_read_only(&self) -> anyhow::Result<()> {
        remount(&self.path, "remount,ro")
    }

    /// Remounts read-write.
    pub fn remount_read_write(&self) -> anyhow::Result<()> {
        remount(&self.path, "remount,rw")
    }
}

fn remount(path: &Path, options: &str) -> anyhow::Result<()> {
    let out = Command::new("mount")
        .args(["-o", options])
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mount -o {options}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
