//! One shard's worker: reads the shard, batches its records and lands them exactly once.
//!
//! ```text
//! load checkpoint ─▶ pending range? ─▶ replay exactly that range ─▶ flush
//!        │                                                          │
//!        └──────────────────────────────▶ read ─▶ decode ─▶ enrich ─▶ batch
//!                                          ▲                          │ age, size, shutdown, shard end
//!                                          └──────────────────────────┘ ─▶ flush
//! flush: begin(range) ─▶ put files ─▶ register new partitions in the catalog ─▶ commit
//! ```
//!
//! Exactly once: a flush records its range (`begin`) before the first put and clears it
//! (`commit`) only after the last put succeeded. Object keys derive only from the shard and
//! the sequence numbers in each file, so when a worker dies anywhere in between, its
//! successor re-reads exactly the pending range and overwrites the same keys with the same
//! rows. Records never reach the lake outside a begun range, so a crash before `begin` only
//! means the batch is read again.
//!
//! In a consumer group the checkpoint store is fenced: once another worker took the shard's
//! lease, `begin` and `commit` fail with [`StreamError::LeaseLost`] and the worker stops at
//! once, without another write; its begun range is the successor's to rewrite.

use std::time::Duration;

use adpipe_core::enrich::{CachingEnricher, Enricher};
use adpipe_core::sink::ObjectSink;
use adpipe_core::stream::{
    CheckpointStore, PendingRange, ReadBatch, SequenceNumber, StartPosition, StreamError,
    StreamReader, StreamRecord,
};
use std::sync::Arc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::batch::{Batch, FileNames, LakeObject};
use crate::catalog::PartitionCatalog;
use crate::decode::{Split, decode};
use crate::error::WorkerError;
use crate::metrics::DelivererMetrics;

/// First wait after a failed read or put; doubled on each further failure.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between retries: long enough to ride out throttling, short enough that a
/// recovered store is used again quickly.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How a worker behaves; the same for every shard of a pipeline.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// `spec.partner`.
    pub(crate) partner: String,
    /// `spec.deliverer.sink.prefix`.
    pub(crate) prefix: String,
    /// A batch is flushed at the latest this long after its first record.
    pub(crate) max_file_age: Duration,
    /// A batch is flushed once its files' encoded size reaches this.
    pub(crate) max_file_bytes: u64,
    /// The wait after an empty read.
    pub(crate) idle_poll: Duration,
    /// Records asked for per read.
    pub(crate) read_limit: usize,
    /// Read to the tip before the last flush on shutdown.
    pub(crate) drain_on_shutdown: bool,
}

/// What every worker of a deliverer shares.
pub(crate) struct WorkerContext {
    pub(crate) settings: Settings,
    pub(crate) reader: Arc<dyn StreamReader>,
    pub(crate) checkpoints: Arc<dyn CheckpointStore>,
    pub(crate) sink: Arc<dyn ObjectSink>,
    pub(crate) enricher: Enricher,
    pub(crate) metrics: DelivererMetrics,
    /// Where new partitions are registered, if the pipeline has a catalog.
    pub(crate) catalog: Option<PartitionCatalog>,
}

/// How a worker ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShardOutcome {
    /// The shard was read to its end and everything is committed.
    Finished,
    /// Shutdown was requested; whatever was not committed will be read again.
    Stopped,
}

/// Runs the worker of `shard_id` until the shard ends, shutdown, or an error.
pub(crate) async fn run_shard(
    ctx: &WorkerContext,
    shard_id: &str,
    shutdown: &CancellationToken,
) -> Result<ShardOutcome, WorkerError> {
    let checkpoint =
        ctx.checkpoints
            .load(shard_id)
            .await
            .map_err(|source| WorkerError::LoadCheckpoint {
                shard: shard_id.to_owned(),
                source,
            })?;
    if checkpoint.finished {
        debug!(partner = %ctx.settings.partner, shard = shard_id, "shard already finished");
        return Ok(ShardOutcome::Finished);
    }
    let mut worker = Worker {
        ctx,
        shard: shard_id,
        shutdown,
        position: checkpoint
            .committed
            .clone()
            .map_or(StartPosition::TrimHorizon, StartPosition::After),
        committed: checkpoint.committed,
        read_failures: 0,
        enricher: ctx.enricher.caching(),
    };
    if let Some(pending) = checkpoint.pending
        && let Some(outcome) = worker.replay(&pending).await?
    {
        return Ok(outcome);
    }
    worker.stream().await
}

struct Worker<'a> {
    ctx: &'a WorkerContext,
    shard: &'a str,
    shutdown: &'a CancellationToken,
    position: StartPosition,
    committed: Option<SequenceNumber>,
    read_failures: u32,
    /// This worker's enricher, whose caches no other worker touches.
    enricher: CachingEnricher<'a>,
}

impl Worker<'_> {
    /// Rewrites the range a predecessor had begun: the records after the checkpoint up to
    /// and including `pending.last`, as one batch. `Some` when the worker is done.
    async fn replay(
        &mut self,
        pending: &PendingRange,
    ) -> Result<Option<ShardOutcome>, WorkerError> {
        info!(
            partner = %self.ctx.settings.partner,
            shard = self.shard,
            first = %pending.first,
            last = %pending.last,
            "rewriting the range a previous worker left pending"
        );
        let mut batch = Batch::new();
        let shard_end = loop {
            if self.shutdown.is_cancelled() {
                return Ok(Some(ShardOutcome::Stopped));
            }
            let Some(read) = self.read(None).await? else {
                continue;
            };
            let within = read
                .records
                .iter()
                .take_while(|r| r.sequence <= pending.last)
                .count();
            self.add(&mut batch, &read.records[..within])?;
            if within < read.records.len()
                || read.records[..within]
                    .last()
                    .is_some_and(|r| r.sequence == pending.last)
            {
                break false;
            }
            if read.shard_end {
                break true;
            }
            if read.records.is_empty() {
                self.pause(self.ctx.settings.idle_poll, None).await;
            }
        };
        if !self.flush(batch, Some(&pending.last), shard_end).await? {
            return Ok(Some(ShardOutcome::Stopped));
        }
        self.position = StartPosition::After(pending.last.clone());
        Ok(shard_end.then_some(ShardOutcome::Finished))
    }

    /// The normal loop: read, batch, flush when due.
    async fn stream(&mut self) -> Result<ShardOutcome, WorkerError> {
        let settings = &self.ctx.settings;
        let mut batch = Batch::new();
        loop {
            if self.is_due(&batch) && !self.flush(std::mem::take(&mut batch), None, false).await? {
                return Ok(ShardOutcome::Stopped);
            }
            if self.shutdown.is_cancelled() {
                if settings.drain_on_shutdown {
                    batch = self.drain(batch).await?;
                }
                self.flush(batch, None, false).await?;
                return Ok(ShardOutcome::Stopped);
            }
            let deadline = batch.opened_at().map(|t| t + settings.max_file_age);
            let Some(read) = self.read(deadline).await? else {
                continue;
            };
            self.add(&mut batch, &read.records)?;
            if read.shard_end {
                return Ok(if self.flush(batch, None, true).await? {
                    ShardOutcome::Finished
                } else {
                    ShardOutcome::Stopped
                });
            }
            if read.records.is_empty() {
                self.pause(settings.idle_poll, deadline).await;
            }
        }
    }

    /// Reads until the shard has nothing more, flushing full batches on the way; gives
    /// back the last, partial batch. A failing read ends the drain: what it could not
    /// read stays in the stream for the next start.
    async fn drain(&mut self, mut batch: Batch) -> Result<Batch, WorkerError> {
        loop {
            let Some(read) = self.read(None).await? else {
                return Ok(batch);
            };
            if read.records.is_empty() {
                return Ok(batch);
            }
            self.add(&mut batch, &read.records)?;
            if batch.estimated_size() >= self.ctx.settings.max_file_bytes
                && !self.flush(std::mem::take(&mut batch), None, false).await?
            {
                return Ok(Batch::new());
            }
        }
    }

    fn is_due(&self, batch: &Batch) -> bool {
        let settings = &self.ctx.settings;
        batch.opened_at().is_some_and(|opened| {
            opened.elapsed() >= settings.max_file_age
                || batch.estimated_size() >= settings.max_file_bytes
        })
    }

    /// One read from the current position. Throttling and unavailability are retried after
    /// a backoff (cut short by `deadline` or shutdown) and give `None`.
    async fn read(&mut self, deadline: Option<Instant>) -> Result<Option<ReadBatch>, WorkerError> {
        let limit = self.ctx.settings.read_limit;
        match self
            .ctx
            .reader
            .read(self.shard, &self.position, limit)
            .await
        {
            Ok(read) => {
                self.read_failures = 0;
                if let Some(millis) = read.millis_behind_latest {
                    self.ctx.metrics.behind_latest(self.shard, millis);
                }
                if let Some(last) = read.records.last() {
                    self.position = StartPosition::After(last.sequence.clone());
                }
                Ok(Some(read))
            }
            Err(e @ (StreamError::Throttled(_) | StreamError::Unavailable(_))) => {
                self.read_failures += 1;
                let wait = backoff(self.read_failures);
                warn!(partner = %self.ctx.settings.partner, shard = self.shard, error = %e, retry_in = ?wait, "failed to read shard; retrying");
                self.ctx.metrics.read_retried(self.shard);
                self.pause(wait, deadline).await;
                Ok(None)
            }
            Err(source) => Err(WorkerError::Read {
                shard: self.shard.to_owned(),
                source,
            }),
        }
    }

    /// Decodes and enriches `records` into `batch`.
    fn add(&mut self, batch: &mut Batch, records: &[StreamRecord]) -> Result<(), WorkerError> {
        let ctx = self.ctx;
        let encode = |source| WorkerError::Encode {
            shard: self.shard.to_owned(),
            source,
        };
        // NOTE: every record is split before any is decoded: the events borrow their text
        // from the splits, which must outlive the staging that holds the events.
        let splits: Vec<Split> = records.iter().map(Split::of).collect();
        let mut staging = batch.begin_read();
        for (record, split) in records.iter().zip(&splits) {
            let mut decoded = decode(self.shard, &ctx.settings.partner, record, split);
            ctx.metrics.record_read(self.shard, decoded.user_records);
            for error in &decoded.errors {
                debug!(partner = %ctx.settings.partner, shard = self.shard, sequence = %record.sequence, reason = %error.reason, "record sent to the error file");
                ctx.metrics.decode_error(error.category);
            }
            decoded
                .events
                .iter_mut()
                .for_each(|event| self.enricher.enrich(event));
            staging
                .add(
                    &record.sequence,
                    record.arrived_at,
                    decoded.events,
                    &decoded.errors,
                )
                .map_err(encode)?;
        }
        staging.finish().map_err(encode)
    }

    /// Lands `batch`: begin its range, put every file, register its partitions, commit. Commits `commit_to` instead
    /// of the batch's last record when given (a replay commits the whole pending range even
    /// if its tail is no longer retained). `false` when shutdown interrupted the puts or the
    /// catalog: the range stays pending for the next worker.
    async fn flush(
        &mut self,
        batch: Batch,
        commit_to: Option<&SequenceNumber>,
        finished: bool,
    ) -> Result<bool, WorkerError> {
        let started = Instant::now();
        let settings = &self.ctx.settings;
        let names = FileNames {
            prefix: &settings.prefix,
            partner: &settings.partner,
            shard_id: self.shard,
        };
        let sealed = batch.finish(names).map_err(|source| WorkerError::Encode {
            shard: self.shard.to_owned(),
            source,
        })?;
        let mut events = 0;
        let last = match sealed {
            Some(sealed) => {
                self.ctx
                    .checkpoints
                    .begin(self.shard, &sealed.range)
                    .await
                    .map_err(|source| WorkerError::BeginRange {
                        shard: self.shard.to_owned(),
                        first: sealed.range.first.to_string(),
                        last: sealed.range.last.to_string(),
                        source,
                    })?;
                for object in &sealed.objects {
                    if !self.put(object).await {
                        warn!(partner = %settings.partner, shard = self.shard, first = %sealed.range.first, last = %sealed.range.last, "shutdown while storing a batch; the next worker rewrites its range");
                        return Ok(false);
                    }
                }
                if let Some(catalog) = &self.ctx.catalog
                    && !catalog.register(&sealed.partitions, self.shutdown).await
                {
                    warn!(partner = %settings.partner, shard = self.shard, first = %sealed.range.first, last = %sealed.range.last, "shutdown while registering partitions; the next worker rewrites the range");
                    return Ok(false);
                }
                events = sealed.events;
                Some(commit_to.unwrap_or(&sealed.range.last).clone())
            }
            None => commit_to.cloned(),
        };
        // NOTE: a shard that ends without any record has no sequence number to commit; 0
        // precedes every real one, so "everything up to 0 is in the lake" is vacuously true.
        let last = match (last, finished) {
            (Some(last), _) => last,
            (None, true) => self
                .committed
                .clone()
                .unwrap_or(SequenceNumber::from_u64(0)),
            (None, false) => return Ok(true),
        };
        self.ctx
            .checkpoints
            .commit(self.shard, &last, finished)
            .await
            .map_err(|source| WorkerError::Commit {
                shard: self.shard.to_owned(),
                last: last.to_string(),
                source,
            })?;
        debug!(partner = %settings.partner, shard = self.shard, last = %last, events, finished, "batch committed");
        self.ctx.metrics.batch_flushed(events, started.elapsed());
        self.committed = Some(last);
        Ok(true)
    }

    /// Stores one object, retrying until it is stored; `false` if shutdown came first.
    async fn put(&self, object: &LakeObject) -> bool {
        let mut failures = 0;
        loop {
            match self.ctx.sink.put(&object.key, object.body.clone()).await {
                Ok(()) => {
                    debug!(partner = %self.ctx.settings.partner, shard = self.shard, key = %object.key, rows = object.rows, bytes = object.body.len(), "object stored");
                    self.ctx
                        .metrics
                        .object_written(object.kind, object.body.len());
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
                    warn!(partner = %self.ctx.settings.partner, shard = self.shard, key = %object.key, error = %e, retry_in = ?wait, "failed to store object; retrying");
                    self.ctx.metrics.sink_retried();
                    if self.shutdown.is_cancelled() {
                        return false;
                    }
                    self.pause(wait, None).await;
                }
            }
        }
    }

    /// Waits `wait`, or until `deadline`, or until shutdown, whichever comes first.
    async fn pause(&self, wait: Duration, deadline: Option<Instant>) {
        let until = Instant::now() + wait;
        let until = deadline.map_or(until, |d| d.min(until));
        tokio::select! {
            () = sleep_until(until) => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// Exponential backoff from [`RETRY_BACKOFF_MIN`] to [`RETRY_BACKOFF_MAX`].
pub(crate) fn backoff(failures: u32) -> Duration {
    RETRY_BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(RETRY_BACKOFF_MAX)
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
