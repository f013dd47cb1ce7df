//! The verification authority: the Ed25519 key with which this deployment signs business
//! certificates.
//!
//! It lives in the data directory as `authority.key` (the 32-byte secret seed, mode 0600),
//! created on first start (or by the first `admin verify-business`). Back it up with the
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
    /// there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Authority, AuthorityError> {
        let path = data_dir.join(AUTHORITY_KEY_FILE);
        let fail = |reason: String| AuthorityError {
            path: path.clone(),
            reason,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| fail(format!("expected 32 bytes, found {}", bytes.len())))?,
                );
                Ok(Authority {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(|e| fail(e.to_string()))?;
                let key = SigningKey::generate(&mut rand_core::OsRng);
                write_new(&path, &key).map_err(|e| fail(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the verification authority key");
                Ok(Authority { key })
            }
            Err(e) => Err(fail(e.to_string())),
        }
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
    fn a_damaged_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUTHORITY_KEY_FILE), b"short").unwrap();
        let e = Authority::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("expected 32 bytes"), "{e}");
    }
}
