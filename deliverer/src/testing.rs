//! In-memory stand-ins for the stream, the checkpoint store and the sink, with the faults the
//! worker tests inject (crashes, failing puts and commits, transient read errors), plus
//! helpers to build records and read the lake back.
//!
//! State lives in `tokio::sync::watch` channels so a test can wait for a condition (a commit,
//! an empty read) instead of sleeping.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use adpipe_core::event::{AdEvent, EpochMillis};
use adpipe_core::kpl;
use adpipe_core::sink::{ObjectSink, SinkError};
use adpipe_core::stream::{
    Checkpoint, CheckpointStore, PendingRange, ReadBatch, SequenceNumber, Shard, StartPosition,
    StreamError, StreamReader, StreamRecord,
};
use arrow::array::{Array, AsArray, RecordBatch};
use async_trait::async_trait;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// 2026-11-28T13:59:59.000Z: one second before an hour boundary.
pub const BEFORE_14H: i64 = 1_795_874_399_000;

#[derive(Debug)]
struct FakeShard {
    records: Vec<StreamRecord>,
    open: bool,
}

/// A stream whose shards are vectors; sequence numbers are 10, 20, 30, … per shard.
#[derive(Debug)]
pub struct FakeStream {
    shards: Mutex<BTreeMap<String, FakeShard>>,
    read_errors: Mutex<VecDeque<StreamError>>,
    empty_reads: watch::Sender<usize>,
}

impl FakeStream {
    pub fn new(shards: &[(&str, bool)]) -> FakeStream {
        let shards = shards
            .iter()
            .map(|(id, open)| {
                let shard = FakeShard {
                    records: Vec::new(),
                    open: *open,
                };
                (id.to_string(), shard)
            })
            .collect();
        FakeStream {
            shards: Mutex::new(shards),
            read_errors: Mutex::new(VecDeque::new()),
            empty_reads: watch::Sender::new(0),
        }
    }

    /// Appends a record; returns its sequence number.
    pub fn push(&self, shard: &str, data: impl Into<Bytes>, arrived_at: i64) -> SequenceNumber {
        let mut shards = self.shards.lock().unwrap();
        let records = &mut shards.get_mut(shard).unwrap().records;
        let sequence = SequenceNumber::from_u64(10 * (records.len() as u64 + 1));
        records.push(StreamRecord {
            sequence: sequence.clone(),
            partition_key: "session-1".into(),
            data: data.into(),
            arrived_at: EpochMillis(arrived_at),
        });
        sequence
    }

    /// The next reads fail with these errors, one each.
    pub fn fail_reads(&self, errors: impl IntoIterator<Item = StreamError>) {
        self.read_errors.lock().unwrap().extend(errors);
    }

    /// How many reads found nothing new so far.
    pub fn empty_reads(&self) -> usize {
        *self.empty_reads.borrow()
    }

    /// Waits until a read found nothing new, `count` times in all.
    pub async fn wait_empty_reads(&self, count: usize) {
        let mut seen = self.empty_reads.subscribe();
        seen.wait_for(|n| *n >= count).await.unwrap();
    }
}

#[async_trait]
impl StreamReader for FakeStream {
    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        let shards = self.shards.lock().unwrap();
        Ok(shards
            .iter()
            .map(|(id, s)| Shard {
                id: id.clone(),
                starting_hash_key: 0,
                ending_hash_key: u128::MAX,
                parent_shard_id: None,
                adjacent_parent_shard_id: None,
                open: s.open,
            })
            .collect())
    }

    async fn read(
        &self,
        shard_id: &str,
        from: &StartPosition,
        limit: usize,
    ) -> Result<ReadBatch, StreamError> {
        if let Some(error) = self.read_errors.lock().unwrap().pop_front() {
            return Err(error);
        }
        let shards = self.shards.lock().unwrap();
        let shard = shards
            .get(shard_id)
            .ok_or_else(|| StreamError::NotFound(shard_id.to_owned()))?;
        let start = match from {
            StartPosition::TrimHorizon => 0,
            StartPosition::After(seq) => shard.records.partition_point(|r| r.sequence <= *seq),
        };
        let records: Vec<StreamRecord> =
            shard.records[start..].iter().take(limit).cloned().collect();
        let end = start + records.len() == shard.records.len();
        if records.is_empty() {
            self.empty_reads.send_modify(|n| *n += 1);
        }
        Ok(ReadBatch {
            millis_behind_latest: Some(0),
            shard_end: end && !shard.open,
            records,
        })
    }
}

/// Checkpoints in a map; commits can be made to fail.
#[derive(Debug)]
pub struct FakeCheckpoints {
    state: watch::Sender<HashMap<String, Checkpoint>>,
    fail_commits: Mutex<VecDeque<bool>>,
}

impl FakeCheckpoints {
    pub fn new() -> FakeCheckpoints {
        FakeCheckpoints {
            state: watch::Sender::new(HashMap::new()),
            fail_commits: Mutex::new(VecDeque::new()),
        }
    }

    /// The next commits succeed or fail as listed (`true` fails), then all succeed.
    pub fn script_commits(&self, failures: impl IntoIterator<Item = bool>) {
        self.fail_commits.lock().unwrap().extend(failures);
    }

    pub fn get(&self, shard: &str) -> Checkpoint {
        self.state.borrow().get(shard).cloned().unwrap_or_default()
    }

    /// Waits until `shard` is committed up to `last` or beyond.
    pub async fn wait_committed(&self, shard: &str, last: &SequenceNumber) {
        let mut state = self.state.subscribe();
        state
            .wait_for(|m| {
                m.get(shard)
                    .and_then(|c| c.committed.as_ref())
                    .is_some_and(|c| c >= last)
            })
            .await
            .unwrap();
    }
}

#[async_trait]
impl CheckpointStore for FakeCheckpoints {
    async fn load(&self, shard_id: &str) -> Result<Checkpoint, StreamError> {
        Ok(self.get(shard_id))
    }

    async fn begin(&self, shard_id: &str, range: &PendingRange) -> Result<(), StreamError> {
        self.state.send_modify(|m| {
            m.entry(shard_id.to_owned()).or_default().pending = Some(range.clone());
        });
        Ok(())
    }

    async fn commit(
        &self,
        shard_id: &str,
        last: &SequenceNumber,
        finished: bool,
    ) -> Result<(), StreamError> {
        if self.fail_commits.lock().unwrap().pop_front() == Some(true) {
            return Err(StreamError::Unavailable("injected commit failure".into()));
        }
        self.state.send_modify(|m| {
            let checkpoint = m.entry(shard_id.to_owned()).or_default();
            checkpoint.committed = Some(last.clone());
            checkpoint.pending = None;
            checkpoint.finished = finished;
        });
        Ok(())
    }
}

/// Objects in a map; a put can "crash" the worker or fail a number of times.
#[derive(Debug, Default)]
pub struct FakeSink {
    objects: Mutex<BTreeMap<String, Bytes>>,
    puts: AtomicUsize,
    crash: Mutex<Option<(usize, CancellationToken)>>,
    failures_left: AtomicUsize,
}

impl FakeSink {
    /// Put number `at` (0-based, counted from now) fails without storing and cancels
    /// `stop`, like a process dying during an upload.
    pub fn crash_at(&self, at: usize, stop: CancellationToken) {
        let base = self.puts.load(Ordering::SeqCst);
        *self.crash.lock().unwrap() = Some((base + at, stop));
    }

    /// The next `n` puts fail (and are expected to be retried).
    pub fn fail_next(&self, n: usize) {
        self.failures_left.store(n, Ordering::SeqCst);
    }

    pub fn objects(&self) -> BTreeMap<String, Bytes> {
        self.objects.lock().unwrap().clone()
    }

    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ObjectSink for FakeSink {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        let failed = |message: &str| SinkError::Write {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if let Some((at, stop)) = &*self.crash.lock().unwrap()
            && *at == n
        {
            stop.cancel();
            return Err(failed("injected crash"));
        }
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(failed("injected failure"));
        }
        self.objects.lock().unwrap().insert(key.to_owned(), body);
        Ok(())
    }
}

/// An event as the receiver writes it to the stream.
pub fn event_json(id: &str, received_at: i64) -> Vec<u8> {
    AdEvent {
        event_id: id.into(),
        partner: "acme-video".into(),
        event_type: adpipe_core::event::EventType::Impression.into(),
        event_time: EpochMillis(received_at - 1000),
        received_at: EpochMillis(received_at),
        ad_session_id: Some("session-1".into()),
        ..AdEvent::default()
    }
    .to_stream_json()
}

/// A KPL aggregated record of `bodies`.
pub fn aggregate(bodies: &[Vec<u8>]) -> Bytes {
    let mut aggregator = kpl::Aggregator::new(kpl::MAX_RECORD_BYTES);
    for body in bodies {
        aggregator.try_add("session-1", body).unwrap();
    }
    aggregator.finish().unwrap().data
}

/// Every row of every Parquet object, as one record batch per object.
pub fn read_parquet(objects: &BTreeMap<String, Bytes>) -> Vec<(String, RecordBatch)> {
    objects
        .iter()
        .filter(|(key, _)| key.ends_with(".parquet"))
        .flat_map(|(key, body)| {
            ParquetRecordBatchReaderBuilder::try_new(body.clone())
                .unwrap()
                .build()
                .unwrap()
                .map(|batch| (key.clone(), batch.unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The values of a string column across batches (`None` for nulls).
pub fn strings(batches: &[(String, RecordBatch)], column: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|(_, batch)| {
            let col = batch.column_by_name(column).unwrap().as_string::<i32>();
            (0..col.len())
                .map(|i| col.is_valid(i).then(|| col.value(i).to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How many rows each event id has across all Parquet objects.
pub fn event_id_counts(objects: &BTreeMap<String, Bytes>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in strings(&read_parquet(objects), "event_id")
        .into_iter()
        .flatten()
    {
        *counts.entry(id).or_default() += 1;
    }
    counts
}
