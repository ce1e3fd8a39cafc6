//! The adpipe deliverer: one partner's consumer of the stream, landing every event in the
//! lake exactly once.
//!
//! ```text
//! StreamReader ──▶ one worker per shard ──▶ decode (KPL ─▶ JSON ─▶ AdEvent) ──▶ Enricher
//!                     │ batch by partition                                       │
//!                     ▼                                                          ▼
//!   CheckpointStore: begin(range) ──▶ ObjectSink: put Parquet / error files ──▶ commit(last)
//! ```
//!
//! * `decode` turns a stream record into events and error entries.
//! * `parquet_file` writes the lake's Parquet layout; `batch` groups a shard's records into
//!   the files they become; `worker` runs one shard exactly once; `metrics` owns every metric.
//! * [`Deliverer`] supervises the workers: a failed worker is restarted from its checkpoint.
//!
//! The backends (Kinesis + DynamoDB + S3, or the embedded log + directory) come in through
//! the traits of [`adpipe_core::stream`] and [`adpipe_core::sink`].

mod batch;
pub mod decode;
mod error;
mod metrics;
pub mod parquet_file;
mod supervisor;
#[cfg(test)]
mod testing;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use adpipe_core::enrich::Enricher;
use adpipe_core::sink::ObjectSink;
use adpipe_core::spec::PartnerPipelineSpec;
use adpipe_core::stream::{CheckpointStore, StreamReader};
use arrow::datatypes::SchemaRef;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

pub use crate::error::DelivererError;
use crate::metrics::DelivererMetrics;
use crate::worker::{Settings, WorkerContext};

/// The wait after a read that found nothing new: Kinesis allows 5 GetRecords calls per
/// second per shard, shared by every consumer of the stream.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_millis(200);

/// Records asked for per read: the most one Kinesis GetRecords call returns.
pub const DEFAULT_READ_LIMIT: usize = 10_000;

/// The Arrow schema of the lake's Parquet files: the contract's columns in its order (for
/// catalog tables and readers that want to check what they get).
pub fn lake_schema() -> SchemaRef {
    parquet_file::schema()
}

/// How the deliverer runs, beyond what the pipeline says.
#[derive(Clone, Debug)]
pub struct DelivererOptions {
    /// Replaces `spec.deliverer.sink.maxFileAge` (the `--flush-interval` flag).
    pub flush_interval: Option<Duration>,
    /// The wait after an empty read; [`DEFAULT_IDLE_POLL`] unless a test or a local run
    /// wants lower latency.
    pub idle_poll: Duration,
    /// Records asked for per read; [`DEFAULT_READ_LIMIT`] by default.
    pub read_limit: usize,
    /// On shutdown, read each shard until caught up before the last flush, so everything
    /// the stream holds is in the lake when `run` returns (`adpipe local`'s Ctrl-C). Off
    /// in a consumer group, where the next owner carries on and a quick hand-off matters.
    pub drain_on_shutdown: bool,
}

impl Default for DelivererOptions {
    fn default() -> Self {
        DelivererOptions {
            flush_interval: None,
            idle_poll: DEFAULT_IDLE_POLL,
            read_limit: DEFAULT_READ_LIMIT,
            drain_on_shutdown: false,
        }
    }
}

/// One partner's deliverer: reads every shard of its stream and writes the lake.
pub struct Deliverer {
    ctx: Arc<WorkerContext>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("settings", &self.ctx.settings)
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    /// Prepares the deliverer of `spec`'s partner on the given backends and registers its
    /// metrics (labelled with the partner) on `registry`; several partners may share one
    /// registry.
    pub fn new(
        spec: &PartnerPipelineSpec,
        reader: Arc<dyn StreamReader>,
        checkpoints: Arc<dyn CheckpointStore>,
        sink: Arc<dyn ObjectSink>,
        enricher: Enricher,
        options: DelivererOptions,
        registry: &Registry,
    ) -> Result<Deliverer, DelivererError> {
        let sink_spec = &spec.deliverer.sink;
        let settings = Settings {
            partner: spec.partner.clone(),
            prefix: sink_spec.prefix.clone(),
            max_file_age: options.flush_interval.unwrap_or(sink_spec.max_file_age.0),
            max_file_bytes: sink_spec.max_file_bytes,
            idle_poll: options.idle_poll,
            read_limit: options.read_limit.max(1),
            drain_on_shutdown: options.drain_on_shutdown,
        };
        let metrics = DelivererMetrics::register(registry, &spec.partner)?;
        Ok(Deliverer {
            ctx: Arc::new(WorkerContext {
                settings,
                reader,
                checkpoints,
                sink,
                enricher,
                metrics,
            }),
        })
    }

    /// Runs one worker per shard until `shutdown` is cancelled; each then flushes its open
    /// batch and stops, and `run` returns once all have. A worker that fails is restarted from
    /// its checkpoint after a backoff. Shards whose checkpoint is finished are skipped; when
    /// every shard is finished, `run` still waits for `shutdown`.
    ///
    /// Errors only if a worker task panicked (after stopping the others).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DelivererError> {
        supervisor::run(self.ctx, shutdown).await
    }
}
