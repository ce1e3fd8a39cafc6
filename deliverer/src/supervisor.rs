//! The consumer-group member: keeps one worker running per shard this process owns.
//!
//! ```text
//! catalog? ─▶ ensure_table (retried until it works)
//! every sync interval: reader.shards() ─▶ coordinator.sync(shards) ─▶ owned shard ids
//!    ├─ owned, not running, not finished here ─▶ spawn supervise(shard)
//!    └─ running, no longer owned              ─▶ cancel it: it flushes (fenced) and stops
//! supervise(shard): run_shard ─┬─ Finished  ─▶ never started again by this process
//!                              ├─ Stopped   ─▶ (cancelled) started again if owned again
//!                              ├─ LeaseLost ─▶ started again only if a later sync returns it
//!                              └─ other Err ─▶ log, backoff ─▶ run_shard again
//! shutdown: cancel every worker ─▶ wait for their last flush ─▶ coordinator.release_all()
//! ```
//!
//! A restarted worker loads its checkpoint again, so an error never skips or repeats a
//! record. A failed sync keeps the current workers running: their checkpoint writes are
//! fenced, so a worker whose lease expired meanwhile cannot overwrite its successor. A
//! panicking worker (a bug) stops the others and fails [`run`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use adpipe_core::group::ShardCoordinator;
use adpipe_core::stream::{Shard, StreamReader};
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::{DelivererError, SyncError};
use crate::worker::{ShardOutcome, WorkerContext, run_shard};

/// First wait before restarting a failed worker; doubled per failure.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest such wait: a broken backend is retried at least once a minute.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How a shard's worker task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorkerExit {
    /// The shard was read to its end and everything is committed.
    Finished,
    /// It was cancelled (shard no longer owned, or shutdown) and flushed what it could.
    Stopped,
    /// Another worker holds the shard's lease now.
    LeaseLost,
}

/// Runs this member of the group until `shutdown`, then stops every worker and releases
/// the leases.
pub(crate) async fn run(
    ctx: Arc<WorkerContext>,
    coordinator: Arc<dyn ShardCoordinator>,
    sync_interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), DelivererError> {
    if let Some(catalog) = &ctx.catalog
        && !catalog.ensure_table(&shutdown).await
    {
        return Ok(());
    }
    info!(partner = %ctx.settings.partner, "deliverer started");
    let mut member = Member {
        ctx,
        coordinator,
        // NOTE: a child token lets a panicking worker stop its siblings without cancelling
        // the caller's token.
        stop: shutdown.child_token(),
        tasks: JoinSet::new(),
        shard_of_task: HashMap::new(),
        running: HashMap::new(),
        finished: HashSet::new(),
        failure: None,
    };
    let mut ticker = tokio::time::interval(sync_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = member.stop.cancelled() => break,
            Some(joined) = member.tasks.join_next_with_id() => member.reap(joined),
            _ = ticker.tick() => member.sync().await,
        }
    }
    member.shut_down().await
}

/// The state of one member of the group.
struct Member {
    ctx: Arc<WorkerContext>,
    coordinator: Arc<dyn ShardCoordinator>,
    stop: CancellationToken,
    tasks: JoinSet<WorkerExit>,
    shard_of_task: HashMap<task::Id, String>,
    /// The shards with a worker task, and the token that stops it.
    running: HashMap<String, CancellationToken>,
    /// Shards this process read to their end (pruned when they leave the listing).
    finished: HashSet<String>,
    failure: Option<DelivererError>,
}

impl Member {
    /// One round: list, sync, start and stop workers. Failures leave the workers as they are.
    async fn sync(&mut self) {
        let synced = tokio::select! {
            biased;
            () = self.stop.cancelled() => return,
            synced = owned_shards(self.ctx.reader.as_ref(), self.coordinator.as_ref()) => synced,
        };
        let (shards, owned) = match synced {
            Ok(synced) => synced,
            Err(e) => {
                warn!(partner = %self.ctx.settings.partner, error = %e, "group sync failed; workers keep running, retrying at the next sync");
                return;
            }
        };
        self.ctx.metrics.shards_owned(owned.len());
        for (shard, token) in &self.running {
            if !owned.contains(shard) && !token.is_cancelled() {
                info!(partner = %self.ctx.settings.partner, shard = %shard, "shard no longer owned; stopping its worker");
                token.cancel();
            }
        }
        self.finished
            .retain(|id| shards.iter().any(|s| &s.id == id));
        for shard in shards {
            if owned.contains(&shard.id)
                && !self.running.contains_key(&shard.id)
                && !self.finished.contains(&shard.id)
            {
                self.start(shard.id);
            }
        }
    }

    fn start(&mut self, shard: String) {
        info!(partner = %self.ctx.settings.partner, shard = %shard, "shard owned; starting its worker");
        let token = self.stop.child_token();
        let handle = self
            .tasks
            .spawn(supervise(self.ctx.clone(), shard.clone(), token.clone()));
        self.shard_of_task.insert(handle.id(), shard.clone());
        self.running.insert(shard, token);
    }

    /// Books a worker task that ended.
    fn reap(&mut self, joined: Result<(task::Id, WorkerExit), JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let shard = self.shard_of_task.remove(&id).unwrap_or_default();
        self.running.remove(&shard);
        match joined {
            Ok((_, WorkerExit::Finished)) => {
                self.finished.insert(shard);
            }
            Ok((_, WorkerExit::Stopped | WorkerExit::LeaseLost)) => {}
            Err(source) => {
                error!(partner = %self.ctx.settings.partner, shard = %shard, error = %source, "shard worker task failed; stopping the deliverer");
                self.stop.cancel();
                self.failure
                    .get_or_insert(DelivererError::WorkerTask { shard, source });
            }
        }
    }

    /// Stops every worker, waits for their last flush, then gives the leases up.
    async fn shut_down(mut self) -> Result<(), DelivererError> {
        let partner = self.ctx.settings.partner.clone();
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            self.reap(joined);
        }
        // NOTE: only after the last flush: a successor that took a lease earlier would have
        // to rewrite the range this worker was still writing.
        match self.coordinator.release_all().await {
            Ok(()) => info!(partner = %partner, "deliverer stopped; leases released"),
            Err(e) => {
                warn!(partner = %partner, error = %e, "deliverer stopped; failed to release its leases, they expire instead");
            }
        }
        self.failure.map_or(Ok(()), Err)
    }
}

/// Every listed shard and the ids of those this member owns now.
async fn owned_shards(
    reader: &dyn StreamReader,
    coordinator: &dyn ShardCoordinator,
) -> Result<(Vec<Shard>, HashSet<String>), SyncError> {
    let shards = reader.shards().await.map_err(SyncError::ListShards)?;
    let owned = coordinator.sync(&shards).await.map_err(SyncError::Leases)?;
    Ok((shards, owned.into_iter().collect()))
}

/// Runs one shard's worker, restarting it after errors, until it finishes, is cancelled or
/// loses its lease.
async fn supervise(ctx: Arc<WorkerContext>, shard: String, stop: CancellationToken) -> WorkerExit {
    let mut failures = 0;
    loop {
        match run_shard(&ctx, &shard, &stop).await {
            Ok(ShardOutcome::Finished) => {
                info!(partner = %ctx.settings.partner, shard = %shard, "shard read to its end and delivered");
                return WorkerExit::Finished;
            }
            Ok(ShardOutcome::Stopped) => return WorkerExit::Stopped,
            Err(e) if e.is_lease_lost() => {
                warn!(partner = %ctx.settings.partner, shard = %shard, error = %e, "lease lost to another worker; stopping without further writes");
                ctx.metrics.lease_lost(&shard);
                return WorkerExit::LeaseLost;
            }
            Err(e) => {
                failures += 1;
                let wait = restart_backoff(failures);
                error!(partner = %ctx.settings.partner, shard = %shard, error = %e, retry_in = ?wait, "shard worker failed; restarting from its checkpoint");
                ctx.metrics.worker_restarted(&shard);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return WorkerExit::Stopped,
                }
            }
        }
    }
}

/// Exponential backoff from [`RESTART_BACKOFF_MIN`] to [`RESTART_BACKOFF_MAX`].
fn restart_backoff(failures: u32) -> Duration {
    RESTART_BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(RESTART_BACKOFF_MAX)
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
