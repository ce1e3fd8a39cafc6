//! Consumer groups: which worker reads which shard, and the catalog the lake is registered
//! in. The deliverer is written against these traits; DynamoDB leases and Glue implement
//! them in the cloud, and `adpipe local` uses a group of one with no catalog.
//!
//! ```text
//! supervisor ── every renew interval ──▶ ShardCoordinator::sync(shards) ──▶ shards I own now
//!    │ start a worker per newly owned shard, stop workers of lost shards
//!    ▼
//! worker ── begin / commit ──▶ CheckpointStore (fenced: fails once the lease is lost)
//!    └─ new partition written ──▶ Catalog::add_partition
//! ```

use std::sync::Arc;

use async_trait::async_trait;

use crate::lake::Partition;
use crate::stream::{CheckpointStore, Shard, StreamError};

/// Assigns shards to the workers of a consumer group.
#[async_trait]
pub trait ShardCoordinator: Send + Sync + 'static {
    /// Renews the leases this worker holds, takes free or expired ones up to its fair share
    /// of `shards` (every shard of the stream, open and closed), and returns the ids of the
    /// shards it owns now. A shard is only taken once its parents are read to their end,
    /// so the records of one partition key are delivered in order across a reshard.
    async fn sync(&self, shards: &[Shard]) -> Result<Vec<String>, StreamError>;

    /// Gives up every lease held, so other workers take the shards over at once (graceful
    /// shutdown, after the last flush).
    async fn release_all(&self) -> Result<(), StreamError>;

    /// The checkpoints of the group. Writes for a shard whose lease this worker no longer
    /// holds fail with [`StreamError::LeaseLost`], so a worker that was presumed dead cannot
    /// overwrite its successor's progress.
    fn checkpoints(&self) -> Arc<dyn CheckpointStore>;
}

/// A group of one: owns every shard; for `adpipe local` and tests.
pub struct SoleOwner {
    checkpoints: Arc<dyn CheckpointStore>,
}

impl SoleOwner {
    /// A group of one keeping its progress in `checkpoints`.
    pub fn new(checkpoints: Arc<dyn CheckpointStore>) -> SoleOwner {
        SoleOwner { checkpoints }
    }
}

impl std::fmt::Debug for SoleOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoleOwner")
    }
}

#[async_trait]
impl ShardCoordinator for SoleOwner {
    async fn sync(&self, shards: &[Shard]) -> Result<Vec<String>, StreamError> {
        let mut owned = Vec::new();
        for shard in shards {
            let parents_done = parents_finished(shard, shards, self.checkpoints.as_ref()).await?;
            if parents_done {
                owned.push(shard.id.clone());
            }
        }
        Ok(owned)
    }

    async fn release_all(&self) -> Result<(), StreamError> {
        Ok(())
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        self.checkpoints.clone()
    }
}

/// Whether every parent of `shard` that is still listed has been read to its end.
pub async fn parents_finished(
    shard: &Shard,
    shards: &[Shard],
    checkpoints: &dyn CheckpointStore,
) -> Result<bool, StreamError> {
    for parent in [&shard.parent_shard_id, &shard.adjacent_parent_shard_id]
        .into_iter()
        .flatten()
    {
        if shards.iter().any(|s| &s.id == parent) && !checkpoints.load(parent).await?.finished {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The table the lake is queried through (Glue in the cloud).
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Creates the database and the Hive-partitioned table when missing; idempotent.
    async fn ensure_table(&self) -> Result<(), CatalogError>;

    /// Registers the partition of `partner` that a file was just written to; idempotent.
    async fn add_partition(&self, partner: &str, partition: Partition) -> Result<(), CatalogError>;
}

/// A catalog failure; the deliverer retries, since a file without its partition registered
/// is invisible to queries.
#[derive(Debug, thiserror::Error)]
#[error("failed to {step}: {message}")]
pub struct CatalogError {
    /// What was being done, e.g. "create partition dt=2026-11-28/hour=13".
    pub step: String,
    /// What the catalog said.
    pub message: String,
}
