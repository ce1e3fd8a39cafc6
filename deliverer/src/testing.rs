//! In-memory stand-ins for the stream, the checkpoint store and the sink, with the faults the
//! worker tests inject (crashes, failing puts and commits, transient read errors, reshards),
//! plus helpers to build records and read the lake back. `group` holds the consumer-group
//! fakes (leases, coordinators, catalog); `journal` the shared record of what they all saw.
//!
//! State lives in `tokio::sync::watch` channels so a test can wait for a condition (a commit,
//! an empty read, a journal entry) instead of sleeping.

mod group;
mod journal;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

pub use self::group::{FakeCatalog, FakeLeases};
pub use self::journal::{Entry, Journal, SOLE};

/// 2026-11-28T13:59:59.000Z: one second before an hour boundary.
pub const BEFORE_14H: i64 = 1_795_874_399_000;

#[derive(Debug)]
struct FakeShard {
    records: Vec<StreamRecord>,
    open: bool,
    parent: Option<String>,
}

/// A stream whose shards are vectors; sequence numbers are 10, 20, 30, … per shard. Every
/// read is recorded in its journal.
#[derive(Debug)]
pub struct FakeStream {
    shards: Mutex<BTreeMap<String, FakeShard>>,
    read_errors: Mutex<VecDeque<StreamError>>,
    empty_reads: watch::Sender<usize>,
    journal: Arc<Journal>,
}

impl FakeStream {
    pub fn new(shards: &[(&str, bool)]) -> FakeStream {
        let shards = shards
            .iter()
            .map(|(id, open)| {
                let shard = FakeShard {
                    records: Vec::new(),
                    open: *open,
                    parent: None,
                };
                (id.to_string(), shard)
            })
            .collect();
        FakeStream {
            shards: Mutex::new(shards),
            read_errors: Mutex::new(VecDeque::new()),
            empty_reads: watch::Sender::new(0),
            journal: Arc::default(),
        }
    }

    /// The journal its reads are recorded in, for the other fakes of the test to share.
    pub fn journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }

    /// Closes `parent` and adds `children`, open and empty, split from it: a reshard.
    pub fn split(&self, parent: &str, children: &[&str]) {
        let mut shards = self.shards.lock().unwrap();
        shards.get_mut(parent).unwrap().open = false;
        for child in children {
            let shard = FakeShard {
                records: Vec::new(),
                open: true,
                parent: Some(parent.to_owned()),
            };
            shards.insert((*child).to_owned(), shard);
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
                parent_shard_id: s.parent.clone(),
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
        self.journal.record(Entry::Read {
            shard: shard_id.to_owned(),
        });
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

/// Checkpoints in a map; commits can be made to fail. Writes are recorded in its journal.
#[derive(Debug)]
pub struct FakeCheckpoints {
    state: watch::Sender<HashMap<String, Checkpoint>>,
    fail_commits: Mutex<VecDeque<bool>>,
    journal: Arc<Journal>,
}

impl FakeCheckpoints {
    pub fn new() -> FakeCheckpoints {
        FakeCheckpoints::recording_to(Arc::default())
    }

    pub fn recording_to(journal: Arc<Journal>) -> FakeCheckpoints {
        FakeCheckpoints {
            state: watch::Sender::new(HashMap::new()),
            fail_commits: Mutex::new(VecDeque::new()),
            journal,
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

    /// `begin` on behalf of `worker`.
    pub fn begin_as(&self, worker: &str, shard_id: &str, range: &PendingRange) {
        self.journal.record(Entry::Begin {
            worker: worker.to_owned(),
            shard: shard_id.to_owned(),
        });
        self.state.send_modify(|m| {
            m.entry(shard_id.to_owned()).or_default().pending = Some(range.clone());
        });
    }

    /// `commit` on behalf of `worker`.
    pub fn commit_as(
        &self,
        worker: &str,
        shard_id: &str,
        last: &SequenceNumber,
        finished: bool,
    ) -> Result<(), StreamError> {
        if self.fail_commits.lock().unwrap().pop_front() == Some(true) {
            return Err(StreamError::Unavailable("injected commit failure".into()));
        }
        self.journal.record(Entry::Commit {
            worker: worker.to_owned(),
            shard: shard_id.to_owned(),
            last: last.clone(),
            finished,
        });
        self.state.send_modify(|m| {
            let checkpoint = m.entry(shard_id.to_owned()).or_default();
            checkpoint.committed = Some(last.clone());
            checkpoint.pending = None;
            checkpoint.finished = finished;
        });
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for FakeCheckpoints {
    async fn load(&self, shard_id: &str) -> Result<Checkpoint, StreamError> {
        Ok(self.get(shard_id))
    }

    async fn begin(&self, shard_id: &str, range: &PendingRange) -> Result<(), StreamError> {
        self.begin_as(SOLE, shard_id, range);
        Ok(())
    }

    async fn commit(
        &self,
        shard_id: &str,
        last: &SequenceNumber,
        finished: bool,
    ) -> Result<(), StreamError> {
        self.commit_as(SOLE, shard_id, last, finished)
    }
}

/// Objects in a map; a put can "crash" the worker or fail a number of times. Stored objects
/// are recorded in its journal.
#[derive(Debug, Default)]
pub struct FakeSink {
    objects: Mutex<BTreeMap<String, Bytes>>,
    puts: AtomicUsize,
    crash: Mutex<Option<(usize, CancellationToken)>>,
    failures_left: AtomicUsize,
    journal: Arc<Journal>,
}

impl FakeSink {
    pub fn recording_to(journal: Arc<Journal>) -> FakeSink {
        FakeSink {
            journal,
            ..FakeSink::default()
        }
    }

    /// The sink as one worker of a group uses it: its puts are recorded under `worker`.
    pub fn as_worker(self: &Arc<Self>, worker: &str) -> Arc<WorkerSink> {
        Arc::new(WorkerSink {
            worker: worker.to_owned(),
            sink: self.clone(),
        })
    }

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

    fn put_as(&self, worker: &str, key: &str, body: Bytes) -> Result<(), SinkError> {
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
        self.journal.record(Entry::Put {
            worker: worker.to_owned(),
            key: key.to_owned(),
        });
        self.objects.lock().unwrap().insert(key.to_owned(), body);
        Ok(())
    }
}

#[async_trait]
impl ObjectSink for FakeSink {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        self.put_as(SOLE, key, body)
    }
}

/// A [`FakeSink`] seen by one worker of a group.
#[derive(Debug)]
pub struct WorkerSink {
    worker: String,
    sink: Arc<FakeSink>,
}

#[async_trait]
impl ObjectSink for WorkerSink {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        self.sink.put_as(&self.worker, key, body)
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
