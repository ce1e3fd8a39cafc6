//! The producer: events in, KPL-aggregated `PutRecords` calls out.
//!
//! ```text
//! handler ── reserve(bytes) ──▶ Budget (bounded memory; full ⇒ 503)
//!    │
//!    └─ submit(records) ──▶ batcher task ──▶ one Aggregator per predicted shard
//!                                  │             (user records of one shard only)
//!                                  ├─ seal on size / linger ──▶ ready entries
//!                                  └─ dispatch ≤ 500 entries, ≤ 5 MiB ──▶ StreamWriter::put
//!                                                                │ per-entry outcome
//!   Ack (oneshot) ◀── every record of the submission accepted ◀──┘ failed ⇒ re-sent by index
//! ```
//!
//! A submission is acknowledged only when every entry that carries one of its records was
//! accepted by the stream, which is what `ack: durable` promises. Failed entries of a partial
//! failure are re-sent alone, with backoff and jitter; memory stays bounded because records
//! hold their budget until they are acknowledged.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use adpipe_core::kpl::{AddError, AggregatedRecord, Aggregator};
use adpipe_core::shard::{ShardMap, hash_key};
use adpipe_core::stream::{PutEntry, PutOutcome, StreamError, StreamWriter};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::{PUT_PAYLOAD_UNIT_BYTES, PartnerMetrics};

/// PutRecords API limit: entries per call.
pub const MAX_ENTRIES_PER_PUT: usize = 500;
/// Bytes per call (data and partition keys): a fifth of the API's 5 MiB. A call in flight
/// holds about 2.3 times its bytes outside the buffer budget (the SDK's copy of each record
/// and the base64 JSON body), so 8 calls of 5 MiB held ~90 MiB nobody counted; calls fill
/// this only with a backlog, where a call's own CPU is already small beside its bytes.
pub const MAX_BYTES_PER_PUT: usize = 1024 * 1024;
/// Kinesis' record limit is 1 MiB including the partition key; stay a little below so a
/// record never fails for size whatever key it carries.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1000 * 1024;
/// How long a record may wait for company before it is sent: long enough to pack records
/// under load, short next to a partner's request timeout.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(10);
/// Longest a record waits for company while its shard has a put in flight: records that
/// arrive during a put join the next aggregate instead of paying for a small one of their
/// own (KPL's default `RecordMaxBufferedTime` is the same 100 ms).
pub const DEFAULT_MAX_LINGER: Duration = Duration::from_millis(100);
/// Calls in flight at once; more adds no throughput once shards are busy.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// Memory the producer may hold for records not yet acknowledged by the stream.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;
/// The shard map is refreshed at least this often, to follow reshards.
const SHARD_MAP_REFRESH: Duration = Duration::from_secs(30);
/// First and largest retry delay.
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// Largest aggregated record.
    pub max_record_bytes: usize,
    /// Longest wait before a partial batch is sent while its shard is idle.
    pub linger: Duration,
    /// Longest wait while the shard has a put in flight.
    pub max_linger: Duration,
    /// Concurrent `put` calls.
    pub max_in_flight: usize,
    /// Budget for records not yet acknowledged.
    pub max_buffered_bytes: usize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            linger: DEFAULT_LINGER,
            max_linger: DEFAULT_MAX_LINGER,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// Why records were not stored.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProduceError {
    /// The buffer budget is used up; retry later.
    #[error("buffers are full")]
    Full,
    /// The producer is shutting down.
    #[error("the receiver is shutting down")]
    Closed,
    /// The stream refused a record for good.
    #[error("the stream refused the events: {0}")]
    Refused(String),
    /// A single event is larger than a stream record may be.
    #[error("an event of {0} bytes is larger than a stream record may be")]
    TooLarge(usize),
}

/// One event ready for the stream.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    /// The Kinesis partition key.
    pub partition_key: String,
    /// The event's stream JSON.
    pub data: Vec<u8>,
}

/// Buffer space held for a submission until the stream acknowledged it.
#[derive(Debug)]
pub struct Reservation(OwnedSemaphorePermit);

/// Resolves when every record of a submission is stored, or says why not.
pub type Ack = oneshot::Receiver<Result<(), ProduceError>>;

/// Handle to a running producer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Producer {
    commands: mpsc::UnboundedSender<Command>,
    budget: Arc<Semaphore>,
    buffered: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    max_buffered_bytes: usize,
}

#[derive(Debug)]
enum Command {
    Submit(Submission),
    Close,
}

#[derive(Debug)]
struct Submission {
    records: Vec<OutgoingRecord>,
    ack: Arc<Pending>,
}

/// Completion state shared by every entry carrying records of one submission.
#[derive(Debug)]
struct Pending {
    remaining: AtomicUsize,
    done: std::sync::Mutex<Option<oneshot::Sender<Result<(), ProduceError>>>>,
    reservation: std::sync::Mutex<Option<Reservation>>,
    bytes: usize,
    buffered: Arc<AtomicUsize>,
}

impl Pending {
    fn settle(&self, outcome: Result<(), ProduceError>) {
        if let Ok(mut done) = self.done.lock()
            && let Some(tx) = done.take()
        {
            // The requester may have gone away (client disconnect); the records are
            // stored regardless.
            let _ = tx.send(outcome);
            self.buffered.fetch_sub(self.bytes, Ordering::Relaxed);
            if let Ok(mut r) = self.reservation.lock() {
                r.take();
            }
        }
    }

    fn accepted(&self, records: usize) {
        if self.remaining.fetch_sub(records, Ordering::AcqRel) == records {
            self.settle(Ok(()));
        }
    }
}

impl Producer {
    /// Starts the batcher task writing to `writer`.
    pub fn start(
        writer: Arc<dyn StreamWriter>,
        options: ProducerOptions,
        metrics: PartnerMetrics,
    ) -> (Producer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let buffered = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let producer = Producer {
            commands: tx,
            budget: Arc::new(Semaphore::new(options.max_buffered_bytes)),
            buffered: buffered.clone(),
            healthy: healthy.clone(),
            max_buffered_bytes: options.max_buffered_bytes,
        };
        let batcher = Batcher::new(writer, options, metrics, healthy);
        let task = tokio::spawn(batcher.run(rx));
        (producer, task)
    }

    /// Holds `bytes` of the budget, or says the buffers are full. Never waits: a full
    /// buffer is answered with `503` at once.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, ProduceError> {
        let bytes = bytes.min(self.max_buffered_bytes);
        let permits = u32::try_from(bytes).map_err(|_| ProduceError::Full)?;
        self.budget
            .clone()
            .try_acquire_many_owned(permits)
            .map(Reservation)
            .map_err(|_| ProduceError::Full)
    }

    /// Hands records to the batcher; the returned [`Ack`] resolves once all are stored.
    pub fn submit(&self, records: Vec<OutgoingRecord>, reservation: Reservation) -> Ack {
        let (tx, rx) = oneshot::channel();
        let bytes = reservation.0.num_permits();
        self.buffered.fetch_add(bytes, Ordering::Relaxed);
        let ack = Arc::new(Pending {
            remaining: AtomicUsize::new(records.len()),
            done: std::sync::Mutex::new(Some(tx)),
            reservation: std::sync::Mutex::new(Some(reservation)),
            bytes,
            buffered: self.buffered.clone(),
        });
        if records.is_empty() {
            ack.settle(Ok(()));
        } else if let Err(mpsc::error::SendError(Command::Submit(submission))) = self
            .commands
            .send(Command::Submit(Submission { records, ack }))
        {
            submission.ack.settle(Err(ProduceError::Closed));
        }
        rx
    }

    /// Sends everything buffered, waits for the stream to take it, and stops the batcher;
    /// its task handle resolves when that is done.
    pub fn close(&self) {
        // A batcher that already stopped has nothing left to send.
        let _ = self.commands.send(Command::Close);
    }

    /// Bytes held for records not yet acknowledged.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Whether the last calls to the stream succeeded; `/readyz` reports it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Records of one submission inside one stream entry.
#[derive(Debug)]
struct Member {
    ack: Arc<Pending>,
    records: usize,
}

/// An aggregated record being filled for one shard.
struct OpenRecord {
    aggregator: Aggregator,
    /// Each record in the aggregate, its acknowledgement, and the aggregate's billed size
    /// (data and partition key) once it was added: what cutting at a unit boundary needs.
    records: Vec<(OutgoingRecord, Arc<Pending>, usize)>,
    opened_at: Instant,
}

impl OpenRecord {
    fn new(max_bytes: usize) -> OpenRecord {
        OpenRecord {
            aggregator: Aggregator::new(max_bytes),
            records: Vec::new(),
            opened_at: Instant::now(),
        }
    }

    /// The size Kinesis bills for the aggregate as it stands.
    fn billed_bytes(&self) -> usize {
        self.records.last().map_or(0, |(_, _, size)| *size)
    }
}

/// A sealed record waiting to be sent (or re-sent).
struct ReadyEntry {
    /// The shard it was aggregated for ("" without a shard map).
    shard: String,
    entry: PutEntry,
    members: Vec<Member>,
    attempts: u32,
    not_before: Instant,
}

/// A finished `put`: what was sent, what came back, how long it took.
struct PutCall {
    entries: Vec<ReadyEntry>,
    result: Result<Vec<PutOutcome>, StreamError>,
    took: Duration,
}

struct Batcher {
    writer: Arc<dyn StreamWriter>,
    options: ProducerOptions,
    metrics: PartnerMetrics,
    healthy: Arc<AtomicBool>,
    shard_map: Option<ShardMap>,
    shard_map_at: Instant,
    open: HashMap<String, OpenRecord>,
    /// Sealed aggregates' emptied buffers, for the next aggregates to fill: a buffer keeps
    /// the size it grew to instead of growing again from nothing for every aggregate.
    spare: Vec<OpenRecord>,
    /// Entries in flight per shard.
    busy: HashMap<String, usize>,
    ready: VecDeque<ReadyEntry>,
    in_flight: JoinSet<PutCall>,
}

impl Batcher {
    fn new(
        writer: Arc<dyn StreamWriter>,
        options: ProducerOptions,
        metrics: PartnerMetrics,
        healthy: Arc<AtomicBool>,
    ) -> Batcher {
        Batcher {
            writer,
            options,
            metrics,
            healthy,
            shard_map: None,
            shard_map_at: Instant::now(),
            open: HashMap::new(),
            spare: Vec::new(),
            busy: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: JoinSet::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut closed = false;
        loop {
            if closed && self.open.is_empty() && self.ready.is_empty() && self.in_flight.is_empty()
            {
                return;
            }
            self.dispatch(closed);
            let wake = self.next_wake(closed);
            tokio::select! {
                command = commands.recv(), if !closed => match command {
                    Some(Command::Submit(s)) => {
                        self.add(s).await;
                        // Take whatever else is queued before sealing, to pack records.
                        loop {
                            match commands.try_recv() {
                                Ok(Command::Submit(s)) => self.add(s).await,
                                Ok(Command::Close) => {
                                    closed = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Some(Command::Close) | None => closed = true,
                },
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(call) = done {
                        self.settle(call);
                    }
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// When the loop must look again without news: the earliest moment [`Self::dispatch`]
    /// would seal an open record, or the earliest retry.
    ///
    /// NOTE: it must be the moment dispatch acts on ([`Self::seal_at`]), not the short linger:
    /// a record whose linger passed while its shard has a put in flight waits, and waking for
    /// it would spin the loop until the put returns, a full core for the length of every
    /// put slower than the linger (real Kinesis puts take tens of milliseconds).
    fn next_wake(&self, closed: bool) -> Option<Instant> {
        if closed && !self.open.is_empty() {
            return Some(Instant::now());
        }
        let linger = self
            .open
            .iter()
            .map(|(shard, open)| self.seal_at(shard, open))
            .min();
        // Entries in backoff matter only when a call could be sent.
        let retry = if self.in_flight.len() < self.options.max_in_flight {
            self.ready.iter().map(|e| e.not_before).min()
        } else {
            None
        };
        match (linger, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn shard_map(&mut self) -> Option<&ShardMap> {
        if self.shard_map.is_none() || self.shard_map_at.elapsed() > SHARD_MAP_REFRESH {
            match self.writer.shards().await {
                Ok(shards) => {
                    self.shard_map = Some(ShardMap::new(&shards));
                    self.healthy.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to list shards");
                    self.healthy.store(false, Ordering::Relaxed);
                }
            }
            self.shard_map_at = Instant::now();
        }
        self.shard_map.as_ref()
    }

    async fn add(&mut self, submission: Submission) {
        for record in submission.records {
            let hash = hash_key(&record.partition_key);
            let shard = match self.shard_map().await.and_then(|m| m.shard_for(hash)) {
                Some(shard) => shard.id.clone(),
                // No map yet: one aggregate per key, placed by its own key, still correct.
                None => String::new(),
            };
            self.add_record(shard, record, &submission.ack);
        }
    }

    fn add_record(&mut self, shard: String, record: OutgoingRecord, ack: &Arc<Pending>) {
        if !self.open.contains_key(&shard) {
            let fresh = self.fresh_record();
            self.open.insert(shard.clone(), fresh);
        }
        let Some(open) = self.open.get_mut(&shard) else {
            return;
        };
        match open.aggregator.try_add(&record.partition_key, &record.data) {
            Ok(()) => {
                let outer_key = open
                    .records
                    .first()
                    .map_or(record.partition_key.len(), |(r, _, _)| {
                        r.partition_key.len()
                    });
                let billed = open.aggregator.size_bytes() + outer_key;
                open.records.push((record, ack.clone(), billed));
            }
            Err(AddError::Full) => {
                self.seal(&shard);
                return self.add_record(shard, record, ack);
            }
            Err(AddError::TooLarge { .. }) => {
                ack.settle(Err(ProduceError::TooLarge(record.data.len())));
            }
            Err(e @ AddError::InvalidKey) => ack.settle(Err(ProduceError::Refused(e.to_string()))),
        }
        if shard.is_empty() {
            // Without a shard map every record is its own aggregate.
            self.seal(&shard);
        }
    }

    /// Seals an aggregate whose linger is over. Kinesis bills each record in whole 25 KB
    /// units, so an aggregate just past a unit boundary is cut there: the records up to the
    /// last full unit are sealed, the rest wait in a fresh aggregate for one more linger.
    /// Under steady load that keeps billed units within a few percent of the bytes sent.
    fn seal_lingered(&mut self, shard: &str) {
        let Some(mut open) = self.open.remove(shard) else {
            return;
        };
        let aligned = open.billed_bytes() / PUT_PAYLOAD_UNIT_BYTES * PUT_PAYLOAD_UNIT_BYTES;
        let kept = match open
            .records
            .iter()
            .rposition(|(_, _, billed)| *billed <= aligned)
        {
            Some(last) if aligned > 0 => last + 1,
            _ => open.records.len(),
        };
        let rest = open.records.split_off(kept);
        let record = open.aggregator.finish_first(kept);
        self.push_ready(shard, record, &open.records);
        self.recycle(open);
        for (record, ack, _) in rest {
            self.add_record(shard.to_owned(), record, &ack);
        }
    }

    fn seal(&mut self, shard: &str) {
        let Some(mut open) = self.open.remove(shard) else {
            return;
        };
        let record = open.aggregator.finish();
        self.push_ready(shard, record, &open.records);
        self.recycle(open);
    }

    /// An empty aggregate, opened now, on a spare's buffers when there is one.
    fn fresh_record(&mut self) -> OpenRecord {
        match self.spare.pop() {
            Some(mut open) => {
                open.opened_at = Instant::now();
                open
            }
            None => OpenRecord::new(self.options.max_record_bytes),
        }
    }

    /// Keeps a sealed aggregate's buffers for [`Self::fresh_record`]: as many as there are
    /// aggregates open at once at most, one a shard, so memory stays bounded.
    fn recycle(&mut self, mut open: OpenRecord) {
        open.records.clear();
        let limit = self.shard_map.as_ref().map_or(1, |m| m.shards().len());
        if open.aggregator.is_empty() && self.spare.len() < limit {
            self.spare.push(open);
        }
    }

    /// Queues a sealed aggregate for the next call, acknowledged to the submissions whose
    /// records it carries.
    fn push_ready(
        &mut self,
        shard: &str,
        record: Option<AggregatedRecord>,
        records: &[(OutgoingRecord, Arc<Pending>, usize)],
    ) {
        let Some(record) = record else {
            return;
        };
        let mut members = Vec::new();
        for (_, ack, _) in records {
            push_member(&mut members, ack);
        }
        let explicit_hash_key = self
            .shard_map
            .as_ref()
            .and_then(|m| m.explicit_hash_key_for(shard));
        self.metrics.record_sealed(record.user_records);
        self.ready.push_back(ReadyEntry {
            shard: shard.to_owned(),
            entry: PutEntry {
                partition_key: record.partition_key,
                explicit_hash_key,
                data: record.data,
            },
            members,
            attempts: 0,
            not_before: Instant::now(),
        });
    }

    /// Seals lingered records and sends as many full calls as the in-flight limit allows.
    ///
    /// A call costs far more CPU than the bytes it carries (signing, serialising, a
    /// round trip), so when one shard's aggregate is due, every other idle shard's aggregate
    /// that holds a whole billed unit (its full units are cut off) or has waited half a
    /// linger goes in the same call instead of in a call of its own a few milliseconds
    /// later. The shards then keep step, one call per linger instead of one per shard; an
    /// aggregate younger than that stays, as sealing it would bill a whole unit for little.
    fn dispatch(&mut self, closing: bool) {
        let now = Instant::now();
        let mut lingered: Vec<String> = self
            .open
            .iter()
            .filter(|(shard, o)| closing || now >= self.seal_at(shard, o))
            .map(|(k, _)| k.clone())
            .collect();
        if !lingered.is_empty() && !closing {
            let company: Vec<String> = self
                .open
                .iter()
                .filter(|(shard, o)| {
                    !lingered.contains(shard)
                        && !self.busy.contains_key(*shard)
                        && (o.billed_bytes() >= PUT_PAYLOAD_UNIT_BYTES
                            || now >= o.opened_at + self.options.linger / 2)
                })
                .map(|(k, _)| k.clone())
                .collect();
            lingered.extend(company);
        }
        for shard in lingered {
            if closing {
                self.seal(&shard);
            } else {
                self.seal_lingered(&shard);
            }
        }
        while self.in_flight.len() < self.options.max_in_flight {
            let batch = self.take_batch(now);
            if batch.is_empty() {
                break;
            }
            for entry in &batch {
                *self.busy.entry(entry.shard.clone()).or_default() += 1;
            }
            let writer = self.writer.clone();
            self.in_flight.spawn(async move {
                let entries: Vec<PutEntry> = batch.iter().map(|e| e.entry.clone()).collect();
                let started = Instant::now();
                let result = writer.put(&entries).await;
                PutCall {
                    entries: batch,
                    result,
                    took: started.elapsed(),
                }
            });
        }
    }

    /// When an open aggregate is sealed: after the linger, or, while a put to its shard is in
    /// flight, after the longer `max_linger`, so records arriving meanwhile join it.
    fn seal_at(&self, shard: &str, open: &OpenRecord) -> Instant {
        let wait = if self.busy.contains_key(shard) {
            self.options.max_linger
        } else {
            self.options.linger
        };
        open.opened_at + wait
    }

    /// Takes due entries up to the API limits, leaving entries still in backoff.
    fn take_batch(&mut self, now: Instant) -> Vec<ReadyEntry> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut waiting = VecDeque::new();
        while let Some(entry) = self.ready.pop_front() {
            let size = entry.entry.data.len() + entry.entry.partition_key.len();
            if entry.not_before > now {
                waiting.push_back(entry);
            } else if batch.len() == MAX_ENTRIES_PER_PUT
                || (!batch.is_empty() && bytes + size > MAX_BYTES_PER_PUT)
            {
                self.ready.push_front(entry);
                break;
            } else {
                bytes += size;
                batch.push(entry);
            }
        }
        waiting.append(&mut self.ready);
        self.ready = waiting;
        batch
    }

    fn settle(
        &mut self,
        PutCall {
            entries,
            result,
            took,
        }: PutCall,
    ) {
        self.metrics.put_finished(took, result.is_ok());
        for entry in &entries {
            if let Some(n) = self.busy.get_mut(&entry.shard) {
                *n -= 1;
                if *n == 0 {
                    self.busy.remove(&entry.shard);
                }
            }
        }
        let outcomes = match result {
            Ok(outcomes) if outcomes.len() == entries.len() => {
                self.healthy.store(true, Ordering::Relaxed);
                outcomes
            }
            Ok(outcomes) => {
                tracing::error!(
                    sent = entries.len(),
                    answered = outcomes.len(),
                    "stream answered a different number of entries; re-sending all"
                );
                entries.into_iter().for_each(|e| self.retry(e, false));
                return;
            }
            Err(e) => {
                let throttled = matches!(e, StreamError::Throttled(_));
                if !throttled {
                    self.healthy.store(false, Ordering::Relaxed);
                }
                tracing::warn!(error = %e, entries = entries.len(), "put failed; will retry");
                entries
                    .into_iter()
                    .for_each(|entry| self.retry(entry, throttled));
                return;
            }
        };
        for (entry, outcome) in entries.into_iter().zip(outcomes) {
            match outcome {
                PutOutcome::Accepted { shard_id, .. } => {
                    if let Some(expected) = entry.entry.explicit_hash_key
                        && let Some(map) = &self.shard_map
                        && map.shard_for(expected).is_some_and(|s| s.id != shard_id)
                    {
                        // A reshard moved the range: look again before the next record.
                        self.shard_map = None;
                    }
                    self.metrics
                        .record_put(entry.entry.data.len() + entry.entry.partition_key.len());
                    for member in &entry.members {
                        member.ack.accepted(member.records);
                    }
                }
                PutOutcome::Failed {
                    retryable: true,
                    code,
                    ..
                } => {
                    let throttled = code.contains("Throughput") || code.contains("Throttl");
                    self.retry(entry, throttled);
                }
                PutOutcome::Failed {
                    retryable: false,
                    code,
                    message,
                } => {
                    tracing::error!(%code, %message, "stream refused a record");
                    let error = ProduceError::Refused(format!("{code}: {message}"));
                    for member in &entry.members {
                        member.ack.settle(Err(error.clone()));
                    }
                }
            }
        }
    }

    fn retry(&mut self, mut entry: ReadyEntry, throttled: bool) {
        entry.attempts += 1;
        self.metrics.put_retried(throttled);
        let exp = RETRY_BASE
            .saturating_mul(1 << entry.attempts.min(7))
            .min(RETRY_MAX);
        let jitter = rand::rng().random_range(0.5..1.0);
        entry.not_before = Instant::now() + exp.mul_f64(jitter);
        self.ready.push_back(entry);
    }
}

fn push_member(members: &mut Vec<Member>, ack: &Arc<Pending>) {
    match members.last_mut() {
        Some(last) if Arc::ptr_eq(&last.ack, ack) => last.records += 1,
        _ => members.push(Member {
            ack: ack.clone(),
            records: 1,
        }),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Bytes a submission of `records` holds in the budget.
pub fn budget_bytes(records: &[OutgoingRecord]) -> usize {
    records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use adpipe_core::stream::{SequenceNumber, Shard};
    use async_trait::async_trait;
    use prometheus::Registry;

    use super::*;
    use crate::metrics::ReceiverMetrics;

    /// Two shards splitting the hash key space, whose puts take `latency` on tokio's clock;
    /// it remembers the shards each call carried entries for, and the bytes it carried.
    struct SlowStream {
        latency: Duration,
        calls: Mutex<Vec<Vec<String>>>,
        call_bytes: Mutex<Vec<usize>>,
    }

    impl SlowStream {
        fn new(latency: Duration) -> Arc<SlowStream> {
            Arc::new(SlowStream {
                latency,
                calls: Mutex::new(Vec::new()),
                call_bytes: Mutex::new(Vec::new()),
            })
        }

        fn map() -> ShardMap {
            let shard = |n: u128, start: u128, end: u128| Shard {
                id: format!("shardId-{n:012}"),
                starting_hash_key: start,
                ending_hash_key: end,
                parent_shard_id: None,
                adjacent_parent_shard_id: None,
                open: true,
            };
            ShardMap::new(&[
                shard(0, 0, u128::MAX / 2),
                shard(1, u128::MAX / 2 + 1, u128::MAX),
            ])
        }
    }

    #[async_trait]
    impl StreamWriter for SlowStream {
        async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
            Ok(Self::map().shards().to_vec())
        }

        async fn put(&self, entries: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
            let map = Self::map();
            let shards: Vec<String> = entries
                .iter()
                .map(|e| {
                    let hash = e
                        .explicit_hash_key
                        .unwrap_or_else(|| hash_key(&e.partition_key));
                    map.shard_for(hash)
                        .map_or_else(String::new, |s| s.id.clone())
                })
                .collect();
            self.calls.lock().unwrap().push(shards.clone());
            self.call_bytes.lock().unwrap().push(
                entries
                    .iter()
                    .map(|e| e.data.len() + e.partition_key.len())
                    .sum(),
            );
            tokio::time::sleep(self.latency).await;
            Ok(shards
                .into_iter()
                .enumerate()
                .map(|(i, shard_id)| PutOutcome::Accepted {
                    shard_id,
                    sequence: SequenceNumber::from_u64(i as u64),
                })
                .collect())
        }
    }

    fn metrics() -> PartnerMetrics {
        ReceiverMetrics::register(&Registry::new())
            .unwrap()
            .partner("acme-video")
    }

    fn event(key: &str) -> Vec<OutgoingRecord> {
        vec![OutgoingRecord {
            partition_key: key.to_owned(),
            data: br#"{"event_type":"impression"}"#.to_vec(),
        }]
    }

    /// A partition key for each shard.
    fn key_on(shard: &str) -> String {
        let map = SlowStream::map();
        (0..)
            .map(|n| format!("session-{n}"))
            .find(|key| map.shard_for(hash_key(key)).is_some_and(|s| s.id == shard))
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn records_lingering_behind_a_slow_put_wait_for_it_without_spinning() {
        let latency = Duration::from_millis(200);
        let (producer, _task) = Producer::start(
            SlowStream::new(latency),
            ProducerOptions::default(),
            metrics(),
        );
        let runtime = tokio::runtime::Handle::current().metrics();
        let busy_before = runtime.worker_total_busy_duration(0);
        let first = producer.submit(event("a"), producer.reserve(64).unwrap());
        // The second record arrives while the first one's put is in flight, and its linger
        // passes long before that put returns.
        tokio::time::sleep(DEFAULT_LINGER * 2).await;
        let second = producer.submit(event("a"), producer.reserve(64).unwrap());
        assert_eq!((first.await, second.await), (Ok(Ok(())), Ok(Ok(()))));
        let busy = runtime.worker_total_busy_duration(0) - busy_before;
        // Waiting, the batcher needs well under a millisecond of the ~400 ms this takes;
        // polling for the put's end would keep the thread busy for most of the 100 ms the
        // second record lingers.
        assert!(
            busy < latency / 8,
            "the runtime was busy for {busy:?} of two puts of {latency:?} each"
        );
    }

    /// The shards each call carried when a record for shard 1 arrives `after` one for
    /// shard 0, both well under a unit.
    async fn calls_for_records_apart(after: Duration) -> Vec<Vec<String>> {
        let stream = SlowStream::new(Duration::from_millis(5));
        let (producer, _task) =
            Producer::start(stream.clone(), ProducerOptions::default(), metrics());
        let (zero, one) = (
            key_on("shardId-000000000000"),
            key_on("shardId-000000000001"),
        );
        let first = producer.submit(event(&zero), producer.reserve(64).unwrap());
        tokio::time::sleep(after).await;
        let second = producer.submit(event(&one), producer.reserve(64).unwrap());
        assert_eq!((first.await, second.await), (Ok(Ok(())), Ok(Ok(()))));
        stream.calls.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_shard_waiting_half_a_linger_goes_in_the_due_shards_call() {
        assert_eq!(
            calls_for_records_apart(DEFAULT_LINGER / 4).await,
            [["shardId-000000000000", "shardId-000000000001"]]
        );
        assert_eq!(
            calls_for_records_apart(DEFAULT_LINGER * 3 / 4).await,
            [["shardId-000000000000"], ["shardId-000000000001"]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_leaves_in_calls_of_at_most_a_mebibyte() {
        let stream = SlowStream::new(Duration::from_millis(50));
        let options = ProducerOptions {
            max_record_bytes: 64 * 1024,
            max_in_flight: 1,
            ..ProducerOptions::default()
        };
        let (producer, _task) = Producer::start(stream.clone(), options, metrics());
        // ~4 MiB of 1 KiB events on both shards, all queued behind the first call.
        let records: Vec<OutgoingRecord> = (0..4096)
            .map(|n| OutgoingRecord {
                partition_key: format!("session-{n}"),
                data: vec![b'x'; 1000],
            })
            .collect();
        let bytes = budget_bytes(&records);
        let ack = producer.submit(records, producer.reserve(bytes).unwrap());
        assert_eq!(ack.await, Ok(Ok(())));
        let calls = stream.call_bytes.lock().unwrap().clone();
        let largest = calls.iter().copied().max().unwrap_or(0);
        let mebibyte = 1024 * 1024;
        assert!(
            largest <= mebibyte && largest > mebibyte / 2,
            "calls of {calls:?} bytes"
        );
        assert!(calls.iter().sum::<usize>() >= bytes, "{calls:?}");
    }
}
