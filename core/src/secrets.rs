//! Partner secrets, read from the files Kubernetes mounts and re-read when they change.
//!
//! A Secret `acme-auth` with key `secret` is mounted at `{secrets-dir}/acme-auth/secret`.
//! Kubernetes rotates a mounted Secret by swapping a symlink, so the file's modification
//! time changes; [`SecretFile::get`] notices that within [`RECHECK_INTERVAL`] and reads the
//! new value, without a restart and without a `stat` on every request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use subtle::ConstantTimeEq;

use crate::spec::SecretRef;

/// How stale a cached secret may be after the file changed.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Secret bytes. Never printed: `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes, without the trailing newline an editor or `echo` leaves.
    pub fn new(mut bytes: Vec<u8>) -> Secret {
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        Secret(bytes)
    }

    /// The secret, for keying a MAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Compares `candidate` with the secret in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Why a secret cannot be read. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file is missing or unreadable.
    #[error("failed to read secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One mounted secret key, cached.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    cache: RwLock<Cached>,
}

#[derive(Debug)]
struct Cached {
    checked_at: Instant,
    modified: Option<SystemTime>,
    secret: Arc<Secret>,
}

impl SecretFile {
    /// Opens `{dir}/{name}/{key}` and reads it once, so a missing secret fails at start-up.
    pub fn open(dir: &Path, secret_ref: &SecretRef) -> Result<SecretFile, SecretError> {
        let path = dir.join(&secret_ref.name).join(&secret_ref.key);
        let (modified, secret) = read(&path)?;
        Ok(SecretFile {
            path,
            cache: RwLock::new(Cached {
                checked_at: Instant::now(),
                modified,
                secret,
            }),
        })
    }

    /// The file this secret is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current secret. When the file has changed it is read again; when it has become
    /// unreadable the last good value is kept, so a rotation in progress rejects nobody.
    pub fn get(&self) -> Arc<Secret> {
        if let Ok(cached) = self.cache.read()
            && cached.checked_at.elapsed() < RECHECK_INTERVAL
        {
            return cached.secret.clone();
        }
        let Ok(mut cached) = self.cache.write() else {
            // A writer panicked; the poisoned value is still the last good secret.
            return self
                .cache
                .read()
                .map(|c| c.secret.clone())
                .unwrap_or_else(|p| p.into_inner().secret.clone());
        };
        cached.checked_at = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some()
            && modified != cached.modified
            && let Ok((modified, secret)) = read(&self.path)
        {
            cached.modified = modified;
            cached.secret = secret;
        }
        cached.secret.clone()
    }
}

fn read(path: &Path) -> Result<(Option<SystemTime>, Arc<Secret>), SecretError> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    let secret = Secret::new(bytes);
    if secret.0.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    Ok((modified, Arc::new(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_ref() -> SecretRef {
        SecretRef {
            name: "acme-auth".into(),
            key: "secret".into(),
        }
    }

    #[test]
    fn reads_the_mounted_file_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("acme-auth")).unwrap();
        std::fs::write(dir.path().join("acme-auth/secret"), "s3cret\n").unwrap();
        let file = SecretFile::open(dir.path(), &secret_ref()).unwrap();
        assert_eq!(file.get().expose(), b"s3cret");
        assert!(file.get().matches(b"s3cret"));
        assert!(!file.get().matches(b"s3cre"));
    }

    #[test]
    fn picks_up_a_rotated_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("acme-auth")).unwrap();
        let path = dir.path().join("acme-auth/secret");
        std::fs::write(&path, "old").unwrap();
        let file = SecretFile::open(dir.path(), &secret_ref()).unwrap();
        assert_eq!(file.get().expose(), b"old");
        std::fs::write(&path, "new").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        file.cache.write().unwrap().checked_at = Instant::now() - RECHECK_INTERVAL;
        assert_eq!(file.get().expose(), b"new");
    }

    #[test]
    fn a_missing_secret_names_the_file_and_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let err = SecretFile::open(dir.path(), &secret_ref())
            .unwrap_err()
            .to_string();
        assert!(err.contains("acme-auth/secret"), "{err}");
        assert_eq!(
            format!("{:?}", Secret::new(b"hunter2".to_vec())),
            "Secret(<7 bytes redacted>)"
        );
    }
}
