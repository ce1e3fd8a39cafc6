//! Keeps one worker running per shard until shutdown.
//!
//! ```text
//! reader.shards() ─▶ spawn supervise(shard) ─▶ run_shard ─┬─ Finished / Stopped ─▶ done
//!                                                         └─ Err ─▶ log, backoff ─▶ run_shard again
//! ```
//!
//! A restarted worker loads its checkpoint again, so an error never skips or repeats a
//! record. A panicking worker (a bug) stops the others and fails [`run`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::DelivererError;
use crate::worker::{ShardOutcome, WorkerContext, run_shard};

/// First wait before restarting a failed worker or listing shards again; doubled per failure.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest such wait: a broken backend is retried at least once a minute.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Runs every shard's worker until `shutdown` and all of them have stopped.
pub(crate) async fn run(
    ctx: Arc<WorkerContext>,
    shutdown: CancellationToken,
) -> Result<(), DelivererError> {
    let partner = ctx.settings.partner.clone();
    let Some(shards) = list_shards(&ctx, &shutdown).await else {
        return Ok(());
    };
    info!(partner = %partner, shards = shards.len(), "deliverer started");
    // NOTE: a child token lets a panicking worker stop its siblings without cancelling the
    // caller's token.
    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    let mut shard_of_task = HashMap::new();
    for shard in shards {
        let handle = tasks.spawn(supervise(ctx.clone(), shard.clone(), stop.clone()));
        shard_of_task.insert(handle.id(), shard);
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(source) = joined {
            let shard = shard_of_task.remove(&source.id()).unwrap_or_default();
            error!(partner = %partner, shard = %shard, error = %source, "shard worker task failed; stopping the deliverer");
            stop.cancel();
            failure.get_or_insert(DelivererError::WorkerTask { shard, source });
        }
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    shutdown.cancelled().await;
    info!(partner = %partner, "deliverer stopped");
    Ok(())
}

/// The shard ids, retried until they can be listed; `None` on shutdown.
async fn list_shards(ctx: &WorkerContext, shutdown: &CancellationToken) -> Option<Vec<String>> {
    let mut failures = 0;
    loop {
        match ctx.reader.shards().await {
            Ok(shards) => return Some(shards.into_iter().map(|s| s.id).collect()),
            Err(e) => {
                failures += 1;
                let wait = restart_backoff(failures);
                warn!(partner = %ctx.settings.partner, error = %e, retry_in = ?wait, "failed to list shards; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

async fn supervise(ctx: Arc<WorkerContext>, shard: String, shutdown: CancellationToken) {
    let mut failures = 0;
    loop {
        match run_shard(&ctx, &shard, &shutdown).await {
            Ok(ShardOutcome::Finished) => {
                info!(partner = %ctx.settings.partner, shard = %shard, "shard read to its end and delivered");
                return;
            }
            Ok(ShardOutcome::Stopped) => return,
            Err(e) => {
                failures += 1;
                let wait = restart_backoff(failures);
                error!(partner = %ctx.settings.partner, shard = %shard, error = %e, retry_in = ?wait, "shard worker failed; restarting from its checkpoint");
                ctx.metrics.worker_restarted(&shard);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return,
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
mod tests {
    use adpipe_core::enrich::Enricher;
    use adpipe_core::spec::PartnerPipelineSpec;
    use adpipe_core::stream::SequenceNumber;
    use prometheus::Registry;

    use crate::testing::{
        BEFORE_14H, FakeCheckpoints, FakeSink, FakeStream, event_id_counts, event_json,
    };
    use crate::{Deliverer, DelivererOptions};

    use super::*;

    fn spec() -> PartnerPipelineSpec {
        serde_json::from_value(serde_json::json!({
            "partner": "acme-video",
            "source": {"format": "json", "mapping": {}},
            "stream": {"name": "ads-acme-video"},
            "deliverer": {"sink": {"bucket": "lake", "maxFileAge": "1h"}}
        }))
        .unwrap()
    }

    fn counter(registry: &Registry, name: &str) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
            .sum()
    }

    #[tokio::test(start_paused = true)]
    async fn every_shard_is_delivered_failed_workers_restart_and_shutdown_flushes() {
        let stream = Arc::new(FakeStream::new(&[("closed", false), ("open", true)]));
        stream.push("closed", event_json("c1", BEFORE_14H), BEFORE_14H);
        stream.push("closed", event_json("c2", BEFORE_14H), BEFORE_14H);
        let open_last = stream.push("open", event_json("o1", BEFORE_14H), BEFORE_14H);
        let checkpoints = Arc::new(FakeCheckpoints::new());
        checkpoints.script_commits([true]);
        let sink = Arc::new(FakeSink::default());
        let registry = Registry::new();
        let deliverer = Deliverer::new(
            &spec(),
            stream.clone(),
            checkpoints.clone(),
            sink.clone(),
            Enricher::new(&[], None).unwrap(),
            DelivererOptions::default(),
            &registry,
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(deliverer.run(shutdown.clone()));

        checkpoints
            .wait_committed("closed", &SequenceNumber::from_u64(20))
            .await;
        assert!(checkpoints.get("closed").finished);
        let empty_reads = stream.empty_reads();
        stream.wait_empty_reads(empty_reads + 1).await;
        assert!(!running.is_finished(), "runs until shutdown");

        shutdown.cancel();
        running.await.unwrap().unwrap();
        assert_eq!(checkpoints.get("open").committed, Some(open_last));
        let counts = event_id_counts(&sink.objects());
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [
                ("c1".to_owned(), 1),
                ("c2".to_owned(), 1),
                ("o1".to_owned(), 1)
            ]
        );
        assert_eq!(
            counter(&registry, "adpipe_deliverer_worker_restarts_total"),
            1.0
        );
        assert_eq!(
            counter(&registry, "adpipe_deliverer_events_written_total"),
            3.0
        );
    }
}
