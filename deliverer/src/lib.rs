//! The adpipe deliverer: one member of a partner's consumer group, landing every event of
//! the shards it owns in the lake exactly once.
//!
//! ```text
//! ShardCoordinator::sync ─▶ owned shards ─▶ one worker per shard ─▶ decode (KPL ─▶ JSON ─▶ AdEvent)
//!                                              │ batch by partition            ─▶ Enricher
//!                                              ▼
//!   CheckpointStore (fenced): begin(range) ─▶ ObjectSink: put Parquet / error files
//!                           ─▶ Catalog: add new partitions ─▶ CheckpointStore: commit(last)
//! ```
//!
//! * `decode` turns a stream record into events and error entries.
//! * `parquet_file` writes the lake's Parquet layout; `batch` groups a shard's records into
//!   the files they become; `worker` runs one shard exactly once; `catalog` registers the
//!   partitions; `metrics` owns every metric.
//! * [`Deliverer`] is the group member (`supervisor`): it syncs leases periodically, starts
//!   and stops workers as ownership changes, restarts failed ones from their checkpoint and
//!   gives its leases up on shutdown.
//!
//! The backends (Kinesis, DynamoDB leases, S3 and Glue; or the embedded log, a group of one
//! and a directory) come in through the traits of [`adpipe_core::stream`],
//! [`adpipe_core::group`] and [`adpipe_core::sink`].

mod batch;
mod catalog;
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
use adpipe_core::group::{Catalog, ShardCoordinator};
use adpipe_core::sink::ObjectSink;
use adpipe_core::spec::PartnerPipelineSpec;
use adpipe_core::stream::StreamReader;
use arrow::datatypes::SchemaRef;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::catalog::PartitionCatalog;
pub use crate::error::DelivererError;
use crate::metrics::DelivererMetrics;
use crate::worker::{Settings, WorkerContext};

/// The wait after a read that found nothing new: Kinesis allows 5 GetRecords calls per
/// second per shard, shared by every consumer of the stream.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_millis(200);

/// Records asked for per read: the most one Kinesis GetRecords call returns.
pub const DEFAULT_READ_LIMIT: usize = 10_000;

/// How often the group is synced (shards listed, leases renewed and taken): a fifth of the
/// default 10 s lease duration, so a lease is renewed several times before it could expire
/// and a reshard or a departed worker is noticed within seconds.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// The shortest sync interval accepted: syncing faster only loads the lease table (and a
/// zero interval would spin).
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(100);

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
    /// How often shards are listed and leases synced; [`DEFAULT_SYNC_INTERVAL`] by
    /// default, at least [`MIN_SYNC_INTERVAL`]. Keep it well below the coordinator's lease
    /// duration.
    pub sync_interval: Duration,
}

impl Default for DelivererOptions {
    fn default() -> Self {
        DelivererOptions {
            flush_interval: None,
            idle_poll: DEFAULT_IDLE_POLL,
            read_limit: DEFAULT_READ_LIMIT,
            drain_on_shutdown: false,
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

/// One partner's deliverer: a member of its consumer group that reads the shards it owns
/// and writes the lake.
pub struct Deliverer {
    ctx: Arc<WorkerContext>,
    coordinator: Arc<dyn ShardCoordinator>,
    sync_interval: Duration,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("settings", &self.ctx.settings)
            .field("sync_interval", &self.sync_interval)
            .field("catalog", &self.ctx.catalog.is_some())
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    /// Prepares the deliverer of `spec`'s partner on the given backends and registers its
    /// metrics (labelled with the partner) on `registry`; several partners may share one
    /// registry.
    ///
    /// `coordinator` decides which shards this process reads and provides the (fenced)
    /// checkpoints; [`adpipe_core::group::SoleOwner`] makes a group of one. With a
    /// `catalog`, the table is created at start and each partition is registered before the
    /// first commit of a batch that wrote to it.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per backend and option group; a builder would only rename them"
    )]
    pub fn new(
        spec: &PartnerPipelineSpec,
        reader: Arc<dyn StreamReader>,
        coordinator: Arc<dyn ShardCoordinator>,
        catalog: Option<Arc<dyn Catalog>>,
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
        let catalog =
            catalog.map(|catalog| PartitionCatalog::new(catalog, &spec.partner, metrics.clone()));
        Ok(Deliverer {
            ctx: Arc::new(WorkerContext {
                settings,
                reader,
                checkpoints: coordinator.checkpoints(),
                sink,
                enricher,
                metrics,
                catalog,
            }),
            coordinator,
            sync_interval: options.sync_interval.max(MIN_SYNC_INTERVAL),
        })
    }

    /// Runs this member of the group until `shutdown` is cancelled.
    ///
    /// With a catalog, first creates its table (retried until it works). Then, every sync
    /// interval: lists the stream's shards, syncs them with the coordinator, starts a worker
    /// for each newly owned shard and stops (cancels; it flushes) the worker of each shard
    /// no longer owned. A worker that fails is restarted from its checkpoint after a
    /// backoff; one whose lease was lost stops without writing more and is started again
    /// only when a later sync returns its shard; one that read its shard to the end is not
    /// started again. A failed sync is logged and retried at the next interval while the
    /// workers carry on.
    ///
    /// On shutdown every worker flushes (draining first with `drain_on_shutdown`) and stops;
    /// then every lease is released so other members take over at once, and `run` returns.
    ///
    /// Errors only if a worker task panicked (after stopping the others and releasing the
    /// leases).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DelivererError> {
        supervisor::run(self.ctx, self.coordinator, self.sync_interval, shutdown).await
    }
}
