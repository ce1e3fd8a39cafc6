//! Why opening an embedded stream fails. Failures after opening speak the core traits'
//! `StreamError` and `SinkError`; `into_io` turns a failed step with its path into the
//! `std::io::Error` those carry.

use std::io;
use std::path::{Path, PathBuf};

/// A failure to open or recover an embedded stream.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A stream name, consumer group or shard id that is not a plain file name.
    #[error(
        "failed to use {what} {name:?}: it must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '.' or '-', and not '.' or '..'"
    )]
    InvalidName {
        /// What the name names.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A stream needs at least one shard.
    #[error("failed to create stream {name}: it needs at least one shard")]
    NoShards {
        /// The stream name.
        name: String,
    },
    /// A file or directory operation failed.
    #[error("failed to {step} {}: {source}", path.display())]
    Io {
        /// The step, e.g. "read".
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process has the stream open; two writers would corrupt its logs.
    #[error("failed to open {}: the stream is in use by another process (is another `adpipe local` running on this lake?)", path.display())]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
    /// The stream's metadata file is unreadable or describes an impossible layout.
    #[error("failed to read stream metadata {}: {message}", path.display())]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A shard log is corrupt before its tail, so truncating would drop acknowledged records.
    #[error(
        "failed to recover {}: corrupt frame at offset {offset} ({problem}) followed by more data; move the file away or truncate it at that offset to drop the rest",
        path.display()
    )]
    Corrupt {
        /// The shard log.
        path: PathBuf,
        /// Byte offset of the first bad frame.
        offset: u64,
        /// What is wrong with it.
        problem: crate::frame::Problem,
    },
    /// A shard's writer thread could not be started.
    #[error("failed to start the writer thread of {}: {source}", path.display())]
    SpawnWriter {
        /// The shard log.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Wraps an I/O error with the failed step and path, keeping its kind.
pub fn into_io(step: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("failed to {step} {}: {error}", path.display()),
    )
}

/// The maximum length of a name used as a file name, as Kinesis limits stream names.
const MAX_NAME_CHARS: usize = 128;

/// Checks that `name` is safe as one path component, so no name can escape its directory.
pub fn check_name(what: &'static str, name: &str) -> Result<(), OpenError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(OpenError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_their_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(check_name("stream", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["ads-acme-video", "shardId-000000000000", "group_1.v2"] {
            assert!(check_name("stream", good).is_ok(), "{good:?} refused");
        }
    }
}
