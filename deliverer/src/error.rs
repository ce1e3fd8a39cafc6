//! The deliverer's errors: one enum for what stops a shard worker (it is then restarted from
//! its checkpoint, unless its lease was lost), one for a failed sync with the consumer group
//! (retried at the next interval) and one for what stops the deliverer as a whole.

use adpipe_core::stream::StreamError;

/// Why a shard worker stopped before shutdown. The supervisor logs it and restarts the worker
/// from its checkpoint, so none of these loses data.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The shard's checkpoint could not be read.
    #[error("failed to load the checkpoint of shard {shard}: {source}")]
    LoadCheckpoint {
        /// The shard id.
        shard: String,
        /// The store's error.
        source: StreamError,
    },
    /// The range about to be written could not be recorded.
    #[error("failed to record pending range {first}..={last} of shard {shard}: {source}")]
    BeginRange {
        /// The shard id.
        shard: String,
        /// First sequence number of the range.
        first: String,
        /// Last sequence number of the range.
        last: String,
        /// The store's error.
        source: StreamError,
    },
    /// Written files could not be checkpointed.
    #[error("failed to commit shard {shard} up to {last}: {source}")]
    Commit {
        /// The shard id.
        shard: String,
        /// The sequence number that was to be committed.
        last: String,
        /// The store's error.
        source: StreamError,
    },
    /// The shard could not be read (throttling and unavailability are retried in place;
    /// this is everything else).
    #[error("failed to read shard {shard}: {source}")]
    Read {
        /// The shard id.
        shard: String,
        /// The stream's error.
        source: StreamError,
    },
    /// A batch could not be encoded into files.
    #[error("failed to encode a batch of shard {shard}: {source}")]
    Encode {
        /// The shard id.
        shard: String,
        /// What the encoder said.
        source: EncodeError,
    },
}

impl WorkerError {
    /// Whether the checkpoint store refused the worker because another worker of the group
    /// holds the shard's lease now: the worker must stop and not be restarted until the
    /// coordinator hands the shard back.
    pub fn is_lease_lost(&self) -> bool {
        matches!(
            self,
            WorkerError::LoadCheckpoint {
                source: StreamError::LeaseLost(_),
                ..
            } | WorkerError::BeginRange {
                source: StreamError::LeaseLost(_),
                ..
            } | WorkerError::Commit {
                source: StreamError::LeaseLost(_),
                ..
            }
        )
    }
}

/// Why one round of "list the shards, sync the leases" failed; the running workers carry on
/// and the next round tries again.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The stream's shards could not be listed.
    #[error("failed to list the stream's shards: {0}")]
    ListShards(StreamError),
    /// The coordinator could not renew or take leases.
    #[error("failed to sync shard leases: {0}")]
    Leases(StreamError),
}

/// Why a batch could not be turned into file bodies.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The Parquet writer failed.
    #[error("failed to write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow column could not be built.
    #[error("failed to build Arrow columns: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The error file could not be compressed.
    #[error("failed to compress the error file: {0}")]
    Gzip(#[from] std::io::Error),
    /// An error entry could not be serialised.
    #[error("failed to serialise an error entry: {0}")]
    Json(#[from] serde_json::Error),
    /// Events were staged for a partition whose file was never opened: a bug, reported so
    /// that the batch fails and its range is read again, rather than losing the events.
    #[error("failed to encode events: no open file for partition {0}")]
    NoFile(String),
}

/// Why the deliverer cannot start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DelivererError {
    /// The metrics could not be registered (e.g. a second deliverer for the same partner on
    /// one registry).
    #[error("failed to register deliverer metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A shard worker's task panicked.
    #[error("failed to run the worker of shard {shard}: {source}")]
    WorkerTask {
        /// The shard id.
        shard: String,
        /// The join error.
        source: tokio::task::JoinError,
    },
}
