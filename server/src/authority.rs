//! The verification authority: the Ed25519 key with which this deployment signs business
//! certificates.
//!
//! It lives in the data directory as `authority.key` (the 32-byte secret seed, mode 0600),
//! created when a server first starts on the directory; operator commands never create it
//! ([`Authority::load`]). Back it up with the
//! database: clients pin its public key, and a new key makes every client warn. It is
//! never logged; `admin authority` prints only the public key and its fingerprint.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use parley_protocol::business::AuthorityKey;
use zeroize::Zeroizing;

/// The key file inside a data directory.
pub const AUTHORITY_KEY_FILE: &str = "authority.key";

/// The key file could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("verification authority key {path}: {reason}")]
pub struct AuthorityError {
    path: PathBuf,
    reason: String,
}

/// The authority's signing key.
pub struct Authority {
    key: SigningKey,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Loads `authority.key` from `data_dir`, creating the directory and a fresh key if
    /// there is none (a server starting on its directory).
    pub fn load_or_create(data_dir: &Path) -> Result<Authority, AuthorityError> {
        let path = data_dir.join(AUTHORITY_KEY_FILE);
        match read(&path)? {
            Some(authority) => Ok(authority),
            None => {
                let fail = |e: std::io::Error| AuthorityError {
                    path: path.clone(),
                    reason: e.to_string(),
                };
                std::fs::create_dir_all(data_dir).map_err(fail)?;
                let key = SigningKey::generate(&mut rand_core::OsRng);
                write_new(&path, &key).map_err(fail)?;
                tracing::info!(path = %path.display(), "created the verification authority key");
                Ok(Authority { key })
            }
        }
    }

    /// Loads the existing `authority.key` of `data_dir`, never creating one: for operator
    /// commands, where a missing key means a wrong `--data-dir` (a new key there would be
    /// a different authority, which every client would refuse).
    pub fn load(data_dir: &Path) -> Result<Authority, AuthorityError> {
        let path = data_dir.join(AUTHORITY_KEY_FILE);
        read(&path)?.ok_or_else(|| AuthorityError {
            reason: format!(
                "not found: is --data-dir {} the server's data directory? (a server \
                 creates the key when it first starts there; admin commands never do)",
                data_dir.display()
            ),
            path,
        })
    }

    /// The public key clients pin.
    pub fn public(&self) -> AuthorityKey {
        AuthorityKey(self.key.verifying_key().to_bytes())
    }

    /// The signing key, for issuing certificates.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

/// The key in `path`; `None` if there is no such file.
fn read(path: &Path) -> Result<Option<Authority>, AuthorityError> {
    let fail = |reason: String| AuthorityError {
        path: path.to_owned(),
        reason,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| fail(format!("expected 32 bytes, found {}", bytes.len())))?,
    );
    Ok(Some(Authority {
        key: SigningKey::from_bytes(&seed),
    }))
}

/// Writes the seed to a new file (never over an existing one), readable by the owner
/// only, and syncs it.
fn write_new(path: &Path, key: &SigningKey) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(&Zeroizing::new(key.to_bytes())[..])?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public(), again.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(AUTHORITY_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{first:?}").contains(&hex::encode(first.key.to_bytes())));
    }

    #[test]
    fn loading_never_creates_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = Authority::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("--data-dir"), "{e}");
        assert!(!dir.path().join(AUTHORITY_KEY_FILE).exists());
        let created = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(
            Authority::load(dir.path()).unwrap().public(),
            created.public()
        );
    }

    #[test]
    fn a_damaged_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUTHORITY_KEY_FILE), b"short").unwrap();
        let e = Authority::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("expected 32 bytes"), "{e}");
    }
}
