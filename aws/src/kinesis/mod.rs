//! A Kinesis Data Stream as the pipeline's stream: the receiver's writer and the deliverer's
//! reader.
//!
//! ```text
//! put(entries)   ─▶ PutRecords (ExplicitHashKey when set) ─▶ one PutOutcome per entry
//! shards()       ─▶ ListShards, every page ─▶ open and closed shards with their parents
//! read(shard, from, limit)
//!   cursor for `from` cached? ──no──▶ GetShardIterator (TRIM_HORIZON | AFTER_SEQUENCE_NUMBER)
//!   └─▶ GetRecords (at most every 200 ms per shard) ─▶ records, lag, NextShardIterator
//!       └─ NextShardIterator cached as the cursor for the position after the last record;
//!          absent: the shard is closed and read to its end
//! ```
//!
//! Steady reading is one GetRecords call per read: the deliverer asks for the position right
//! after the last record it got, which is the position the cached iterator continues from.
//! An iterator that expired (five minutes unused) is replaced once, transparently.

pub mod admin;
mod errors;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adpipe_core::event::EpochMillis;
use adpipe_core::stream::{
    PutEntry, PutOutcome, ReadBatch, SequenceNumber, Shard, StartPosition, StreamError,
    StreamReader, StreamRecord, StreamWriter,
};
use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Record, ShardIteratorType};
use tokio::time::Instant;

use self::errors::{classify, entry_outcome};

/// The shortest time between two GetRecords calls on one shard: Kinesis allows 5 per second
/// per shard, shared by every consumer of the stream.
pub const MIN_GET_RECORDS_INTERVAL: Duration = Duration::from_millis(200);

/// The most records one GetRecords call may return (API limit).
const MAX_GET_RECORDS_LIMIT: usize = 10_000;

/// A Kinesis stream, written by the receiver and read by the deliverer. A `put` is one
/// PutRecords call, so callers keep batches within its limits (500 entries, 5 MiB); a `read`
/// of a shard waits until [`MIN_GET_RECORDS_INTERVAL`] has passed since the previous one.
pub struct KinesisStream {
    client: Client,
    stream_name: String,
    /// Per shard: the cached iterator and when GetRecords was last called.
    cursors: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ShardCursor>>>>,
}

impl std::fmt::Debug for KinesisStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisStream")
            .field("stream_name", &self.stream_name)
            .finish_non_exhaustive()
    }
}

/// What one shard's reader remembers between reads.
#[derive(Default)]
struct ShardCursor {
    /// Where the last read left off, and how to continue from there.
    next: Option<(StartPosition, Continuation)>,
    /// When GetRecords was last sent for this shard.
    last_get_records: Option<Instant>,
}

/// How reading continues from a position.
enum Continuation {
    /// The `NextShardIterator` Kinesis returned for it.
    Iterator(String),
    /// Nothing: the shard is closed and was read to its end.
    ShardEnd,
}

impl KinesisStream {
    /// The stream `stream_name`, reached through `client` (see [`crate::config`]).
    pub fn new(client: Client, stream_name: impl Into<String>) -> KinesisStream {
        KinesisStream {
            client,
            stream_name: stream_name.into(),
            cursors: Mutex::new(HashMap::new()),
        }
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // NOTE: ListShards refuses a stream name together with a next token.
            let request = match next_token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream_name),
            };
            let page = request
                .send()
                .await
                .map_err(|e| classify("ListShards", e))?;
            for shard in page.shards() {
                shards.push(convert_shard(shard)?);
            }
            match page.next_token() {
                Some(token) => next_token = Some(token.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    fn cursor(&self, shard_id: &str) -> Arc<tokio::sync::Mutex<ShardCursor>> {
        let mut cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        cursors.entry(shard_id.to_owned()).or_default().clone()
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        from: &StartPosition,
    ) -> Result<String, StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream_name)
            .shard_id(shard_id);
        let request = match from {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
        };
        let output = request
            .send()
            .await
            .map_err(|e| classify("GetShardIterator", e))?;
        output.shard_iterator().map(str::to_owned).ok_or_else(|| {
            StreamError::Unavailable(format!(
                "GetShardIterator: no iterator for {shard_id} of {}",
                self.stream_name
            ))
        })
    }

    /// One GetRecords call, no sooner than [`MIN_GET_RECORDS_INTERVAL`] after the last one on
    /// this shard. `Ok(None)` when the iterator expired.
    async fn get_records(
        &self,
        cursor: &mut ShardCursor,
        iterator: String,
        limit: usize,
    ) -> Result<Option<GetRecordsOutput>, StreamError> {
        if let Some(last) = cursor.last_get_records {
            tokio::time::sleep_until(last + MIN_GET_RECORDS_INTERVAL).await;
        }
        cursor.last_get_records = Some(Instant::now());
        let limit = limit.clamp(1, MAX_GET_RECORDS_LIMIT);
        let sent = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await;
        match sent {
            Ok(output) => Ok(Some(output)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_expired_iterator_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("GetRecords", e)),
        }
    }
}

#[async_trait]
impl StreamWriter for KinesisStream {
    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        self.list_shards().await
    }

    async fn put(&self, entries: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let records = entries
            .iter()
            .map(|entry| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&entry.partition_key)
                    .set_explicit_hash_key(entry.explicit_hash_key.map(|key| key.to_string()))
                    .data(Blob::new(entry.data.to_vec()))
                    .build()
                    .map_err(|e| StreamError::Unavailable(format!("PutRecords: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .put_records()
            .stream_name(&self.stream_name)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| classify("PutRecords", e))?;
        if output.records().len() != entries.len() {
            return Err(StreamError::Unavailable(format!(
                "PutRecords: {} results for {} entries",
                output.records().len(),
                entries.len()
            )));
        }
        Ok(output.records().iter().map(entry_outcome).collect())
    }
}

#[async_trait]
impl StreamReader for KinesisStream {
    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        self.list_shards().await
    }

    async fn read(
        &self,
        shard_id: &str,
        from: &StartPosition,
        limit: usize,
    ) -> Result<ReadBatch, StreamError> {
        let slot = self.cursor(shard_id);
        let mut cursor = slot.lock().await;
        let cached = match cursor.next.take() {
            Some((position, continuation)) if position == *from => Some(continuation),
            _ => None,
        };
        let iterator = match cached {
            Some(Continuation::ShardEnd) => {
                cursor.next = Some((from.clone(), Continuation::ShardEnd));
                return Ok(ReadBatch {
                    shard_end: true,
                    ..ReadBatch::default()
                });
            }
            Some(Continuation::Iterator(iterator)) => iterator,
            None => self.shard_iterator(shard_id, from).await?,
        };
        let output = match self.get_records(&mut cursor, iterator, limit).await? {
            Some(output) => output,
            None => {
                let fresh = self.shard_iterator(shard_id, from).await?;
                self.get_records(&mut cursor, fresh, limit)
                    .await?
                    .ok_or_else(|| {
                        StreamError::Unavailable(format!(
                            "GetRecords: a new iterator for {shard_id} expired at once"
                        ))
                    })?
            }
        };
        let records = output
            .records()
            .iter()
            .map(convert_record)
            .collect::<Result<Vec<_>, _>>()?;
        let position = match records.last() {
            Some(last) => StartPosition::After(last.sequence.clone()),
            None => from.clone(),
        };
        let continuation = match output.next_shard_iterator() {
            Some(next) => Continuation::Iterator(next.to_owned()),
            None => Continuation::ShardEnd,
        };
        let shard_end = matches!(continuation, Continuation::ShardEnd);
        cursor.next = Some((position, continuation));
        Ok(ReadBatch {
            records,
            millis_behind_latest: output
                .millis_behind_latest()
                .and_then(|ms| u64::try_from(ms).ok()),
            shard_end,
        })
    }
}

fn convert_shard(shard: &aws_sdk_kinesis::types::Shard) -> Result<Shard, StreamError> {
    let invalid = |what: &str| {
        StreamError::Unavailable(format!("ListShards: shard {} has {what}", shard.shard_id()))
    };
    let range = shard
        .hash_key_range()
        .ok_or_else(|| invalid("no hash key range"))?;
    let parse = |key: &str| {
        key.parse::<u128>()
            .map_err(|_| invalid("an invalid hash key"))
    };
    Ok(Shard {
        id: shard.shard_id().to_owned(),
        starting_hash_key: parse(range.starting_hash_key())?,
        ending_hash_key: parse(range.ending_hash_key())?,
        parent_shard_id: shard.parent_shard_id().map(str::to_owned),
        adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
        open: shard
            .sequence_number_range()
            .is_none_or(|range| range.ending_sequence_number().is_none()),
    })
}

fn convert_record(record: &Record) -> Result<StreamRecord, StreamError> {
    let sequence = SequenceNumber::parse(record.sequence_number()).ok_or_else(|| {
        StreamError::Unavailable(format!(
            "GetRecords: invalid sequence number {:?}",
            record.sequence_number()
        ))
    })?;
    // NOTE: Kinesis always sets the arrival time; "now" is only a fallback for a response
    // without one, and only feeds lag metrics, never partitioning (that is `received_at`).
    let arrived_at = record
        .approximate_arrival_timestamp()
        .and_then(|at| at.to_millis().ok())
        .map_or_else(EpochMillis::now, EpochMillis);
    Ok(StreamRecord {
        sequence,
        partition_key: record.partition_key().unwrap_or_default().to_owned(),
        data: bytes::Bytes::copy_from_slice(record.data().as_ref()),
        arrived_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::{HashKeyRange, SequenceNumberRange};

    fn listed(ending_sequence: Option<&str>) -> aws_sdk_kinesis::types::Shard {
        aws_sdk_kinesis::types::Shard::builder()
            .shard_id("shardId-000000000003")
            .parent_shard_id("shardId-000000000000")
            .hash_key_range(
                HashKeyRange::builder()
                    .starting_hash_key("0")
                    .ending_hash_key(u128::MAX.to_string())
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("1")
                    .set_ending_sequence_number(ending_sequence.map(str::to_owned))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn a_shard_is_open_until_it_has_an_ending_sequence_number() {
        let open = convert_shard(&listed(None)).unwrap();
        assert!(open.open);
        assert_eq!(open.ending_hash_key, u128::MAX);
        assert_eq!(
            open.parent_shard_id.as_deref(),
            Some("shardId-000000000000")
        );
        assert!(!convert_shard(&listed(Some("99"))).unwrap().open);
    }
}
