//! The stream between receiver and deliverer, as traits both backends implement: Kinesis
//! in the cloud, an embedded on-disk log for `adpipe local`.
//!
//! The traits speak Kinesis' model — shards owning ranges of the 128-bit MD5 hash key space,
//! per-shard sequence numbers, per-entry results of a batch put — so the producer and the
//! consumer group are written once and the embedded backend is an honest stand-in.

use std::cmp::Ordering;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::event::EpochMillis;

/// A Kinesis sequence number: a decimal string of up to 128 bits that orders the records of
/// one shard. Compared numerically.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Wraps a decimal sequence number; `None` if it is not one.
    pub fn parse(text: &str) -> Option<SequenceNumber> {
        let trimmed = text.trim_start_matches('0');
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(SequenceNumber(if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        }))
    }

    /// A sequence number from an integer position (the embedded log uses byte offsets).
    pub fn from_u64(n: u64) -> SequenceNumber {
        SequenceNumber(n.to_string())
    }

    /// The position as an integer, when it fits (always true for the embedded log).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    /// The decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One shard and the slice of the hash key space it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// e.g. `shardId-000000000000`.
    pub id: String,
    /// First hash key the shard owns.
    pub starting_hash_key: u128,
    /// Last hash key the shard owns (inclusive).
    pub ending_hash_key: u128,
    /// The shard it was split from or merged from, if any.
    pub parent_shard_id: Option<String>,
    /// The second parent of a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// Whether the shard still accepts writes (closed shards are read to their end).
    pub open: bool,
}

impl Shard {
    /// Whether `hash_key` falls in this shard's range.
    pub fn owns(&self, hash_key: u128) -> bool {
        (self.starting_hash_key..=self.ending_hash_key).contains(&hash_key)
    }
}

/// One entry of a batch put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutEntry {
    /// The partition key; decides the shard unless `explicit_hash_key` is set.
    pub partition_key: String,
    /// Places the record on the shard owning this hash key (used for aggregated records,
    /// whose user records all belong to one shard).
    pub explicit_hash_key: Option<u128>,
    /// The record body.
    pub data: Bytes,
}

/// The outcome of one entry of a batch put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored durably.
    Accepted {
        /// The shard it landed on.
        shard_id: String,
        /// Its sequence number there.
        sequence: SequenceNumber,
    },
    /// Not stored; send it again if `retryable`.
    Failed {
        /// The service's error code, e.g. `ProvisionedThroughputExceededException`.
        code: String,
        /// The service's message.
        message: String,
        /// Whether sending the same entry again can succeed.
        retryable: bool,
    },
}

/// A record read from a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its position in the shard.
    pub sequence: SequenceNumber,
    /// The partition key it was written with.
    pub partition_key: String,
    /// The record body: an aggregated record or a plain one.
    pub data: Bytes,
    /// When the stream accepted it.
    pub arrived_at: EpochMillis,
}

/// Where reading a shard starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still retained.
    TrimHorizon,
    /// Just after this record.
    After(SequenceNumber),
}

/// The answer to one read of a shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// Records in sequence order; empty when the reader is caught up.
    pub records: Vec<StreamRecord>,
    /// How far the last record is behind the shard's tip, when the backend knows.
    pub millis_behind_latest: Option<u64>,
    /// The shard is closed and every record has been read.
    pub shard_end: bool,
}

/// A stream failure that is not about one entry.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream or shard does not exist.
    #[error("stream resource not found: {0}")]
    NotFound(String),
    /// The backend is throttling; back off and try again.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The backend cannot be reached or failed; try again later.
    #[error("stream unavailable: {0}")]
    Unavailable(String),
    /// This worker no longer holds the shard's lease; another worker owns it now.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// A local I/O error (embedded backend).
    #[error("stream I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes records to a stream.
#[async_trait]
pub trait StreamWriter: Send + Sync + 'static {
    /// The open shards, for predicting where a partition key lands.
    async fn shards(&self) -> Result<Vec<Shard>, StreamError>;

    /// Writes a batch; the result holds one outcome per entry, in order. An entry is only
    /// `Accepted` once it is durable.
    async fn put(&self, entries: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError>;
}

/// Reads records from a stream's shards.
#[async_trait]
pub trait StreamReader: Send + Sync + 'static {
    /// Every shard still retained, open and closed.
    async fn shards(&self) -> Result<Vec<Shard>, StreamError>;

    /// Up to `limit` records of `shard_id` from `from`.
    async fn read(
        &self,
        shard_id: &str,
        from: &StartPosition,
        limit: usize,
    ) -> Result<ReadBatch, StreamError>;
}

/// Where a consumer is in one shard, kept so that a restart neither skips nor repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every record up to and including this one is in the lake.
    pub committed: Option<SequenceNumber>,
    /// A range whose files were being written when the owner stopped: the next owner
    /// rewrites exactly this range, under the same object names, before reading on.
    pub pending: Option<PendingRange>,
    /// The shard was read to its end and everything is in the lake.
    pub finished: bool,
}

/// An inclusive range of sequence numbers of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRange {
    /// First record of the range.
    pub first: SequenceNumber,
    /// Last record of the range.
    pub last: SequenceNumber,
}

/// Durable per-shard progress of a consumer group.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The shard's checkpoint; the default when the shard was never read.
    async fn load(&self, shard_id: &str) -> Result<Checkpoint, StreamError>;

    /// Records that `range` is about to be written, before any of its files is.
    async fn begin(&self, shard_id: &str, range: &PendingRange) -> Result<(), StreamError>;

    /// Records that every record up to `last` is in the lake, clearing the pending range;
    /// `finished` marks the shard as read to its end.
    async fn commit(
        &self,
        shard_id: &str,
        last: &SequenceNumber,
        finished: bool,
    ) -> Result<(), StreamError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_numerically_not_lexically() {
        let small = SequenceNumber::parse("9").unwrap();
        let big = SequenceNumber::parse("10").unwrap();
        assert!(small < big);
        assert_eq!(SequenceNumber::parse("0010"), Some(big));
        assert_eq!(SequenceNumber::parse("12a"), None);
        assert_eq!(SequenceNumber::parse(""), None);
    }
}
