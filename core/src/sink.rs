//! Where lake files go: an S3 bucket in the cloud, a directory for `adpipe local`.

use async_trait::async_trait;
use bytes::Bytes;

/// A sink failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The object store refused or failed; the write may be retried.
    #[error("failed to write object {key}: {message}")]
    Write {
        /// The object key.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// A local I/O error.
    #[error("failed to write object {key}: {source}")]
    Io {
        /// The object key.
        key: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Stores whole objects under keys. A `put` that returns `Ok` is durable; writing the same key
/// again replaces the object, which is what makes replays after a crash idempotent.
#[async_trait]
pub trait ObjectSink: Send + Sync + 'static {
    /// Stores `body` under `key` (relative to the bucket or lake root).
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError>;
}
