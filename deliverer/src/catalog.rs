//! Keeps the catalog (Glue in the cloud) in step with the lake: the table exists before any
//! worker starts, and every partition a batch wrote to is registered before the batch is
//! committed.
//!
//! ```text
//! supervisor start ─▶ ensure_table ──(retry with backoff until it works or shutdown)
//! worker flush: put files ─▶ register(partitions) ─▶ commit
//!                               │ skip the ones this process registered already
//!                               └▶ add_partition, retried until it works (never skipped)
//! ```
//!
//! Registration is idempotent in the catalog, so a successor that replays a range registers
//! its partitions again at no harm; the set of registered partitions only saves calls within
//! one process. It holds one entry per partition hour seen, a few hundred a month.

use std::collections::HashSet;
use std::sync::Arc;

use adpipe_core::group::{Catalog, CatalogError};
use adpipe_core::lake::Partition;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::DelivererMetrics;
use crate::worker::backoff;

/// One partner's catalog table and the partitions this process registered in it.
pub(crate) struct PartitionCatalog {
    catalog: Arc<dyn Catalog>,
    partner: String,
    metrics: DelivererMetrics,
    // NOTE: an async mutex held across the catalog calls, so two shard workers writing the
    // same hour register it once, and a batch never commits while its partition is still
    // being registered by another worker.
    registered: Mutex<HashSet<Partition>>,
}

impl PartitionCatalog {
    /// Registers `partner`'s partitions in `catalog`.
    pub(crate) fn new(
        catalog: Arc<dyn Catalog>,
        partner: &str,
        metrics: DelivererMetrics,
    ) -> PartitionCatalog {
        PartitionCatalog {
            catalog,
            partner: partner.to_owned(),
            metrics,
            registered: Mutex::new(HashSet::new()),
        }
    }

    /// Creates the table when missing, retrying until it works; `false` if shutdown came
    /// first.
    pub(crate) async fn ensure_table(&self, shutdown: &CancellationToken) -> bool {
        let mut failures = 0;
        loop {
            match self.catalog.ensure_table().await {
                Ok(()) => {
                    info!(partner = %self.partner, "catalog table ready");
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    if !self.retry_after(&e, failures, shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Registers each of `partitions` that this process has not registered yet, retrying
    /// each until it works; `false` if shutdown interrupted the retries, and the batch must
    /// then not be committed.
    pub(crate) async fn register(
        &self,
        partitions: &[Partition],
        shutdown: &CancellationToken,
    ) -> bool {
        let mut registered = self.registered.lock().await;
        for &partition in partitions {
            if registered.contains(&partition) {
                continue;
            }
            let mut failures = 0;
            loop {
                match self.catalog.add_partition(&self.partner, partition).await {
                    Ok(()) => {
                        info!(partner = %self.partner, %partition, "partition registered in the catalog");
                        self.metrics.partition_registered();
                        registered.insert(partition);
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        if !self.retry_after(&e, failures, shutdown).await {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Logs `error` and waits before the next attempt; `false` once shutdown is requested
    /// (a registration interrupted so leaves its batch pending for the next owner).
    async fn retry_after(
        &self,
        error: &CatalogError,
        failures: u32,
        shutdown: &CancellationToken,
    ) -> bool {
        let wait = backoff(failures);
        warn!(partner = %self.partner, error = %error, retry_in = ?wait, "catalog call failed; retrying");
        self.metrics.catalog_retried();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}
