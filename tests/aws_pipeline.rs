//! The production path end to end on moto: `adpipe-receiver` → Kinesis → two
//! `adpipe-deliverer` workers (DynamoDB leases) → S3 Parquet → Glue partitions, while the
//! stream is resharded 2 → 4 and a worker is killed with SIGKILL and restarted.
//!
//! ```text
//! sender ─durable 200s─▶ receiver ─▶ moto Kinesis ─▶ worker-1 / worker-2 ─▶ moto S3 + Glue
//!              reshard 2→4 ──┘            kill -9 worker-1, restart ──┘
//! ```
//!
//! Every acknowledged event must be in S3 exactly once, and no event twice.
#![cfg(feature = "external-tests")]
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::aws::{AwsPipeline, metric};
use support::*;

/// Sends durable batches of `batch` events until `stop`, recording the ids of every batch
/// answered `200`.
fn sender(
    base: String,
    tag: &'static str,
    batch: usize,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        for request in 0.. {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let ids: Vec<String> = (0..batch).map(|i| format!("{tag}-{request}-{i}")).collect();
            let response = post_acme_batch(&client, &base, &ids);
            if response.status() == 200 {
                acked.lock().unwrap().extend(ids);
            }
        }
    })
}

#[test]
fn every_acknowledged_event_lands_once_through_a_reshard_and_a_killed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = AwsPipeline::new(dir.path(), 2, None);
    let (mut receiver, base) = pipeline.receiver();
    let (mut worker1, worker1_metrics) = pipeline.deliverer("worker-1");
    let (mut worker2, _) = pipeline.deliverer("worker-2");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let send = sender(base, "e2e", 10, acked.clone(), stop.clone());
    let acked_count = || acked.lock().unwrap().len();

    wait_for(
        "300 acknowledged events",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || acked_count() >= 300,
    );
    pipeline.reshard(4);
    wait_for(
        "600 acknowledged events",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || acked_count() >= 600,
    );
    wait_for(
        "worker-1 to own a child shard",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || metric(&worker1_metrics, "adpipe_deliverer_shards_owned") > 0.0,
    );
    worker1.kill();
    // Only worker-2 is alive: what was acknowledged so far lands once it has taken over
    // worker-1's expired leases.
    let before_kill = acked.lock().unwrap().clone();
    wait_for(
        "worker-2 to deliver worker-1's shards",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let counts = pipeline.event_id_counts();
            before_kill.iter().all(|id| counts.contains_key(id))
        },
    );
    worker1.restart();
    let target = acked_count() + 600;
    wait_for(
        "600 more acknowledged events",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || acked_count() >= target,
    );
    stop.store(true, Ordering::SeqCst);
    send.join().unwrap();

    let acked = acked.lock().unwrap().clone();
    let mut counts = BTreeMap::new();
    wait_for(
        "every acknowledged event in S3",
        Duration::from_secs(180),
        Duration::from_millis(200),
        || {
            counts = pipeline.event_id_counts();
            acked.iter().all(|id| counts.contains_key(id))
        },
    );
    assert!(receiver.terminate().success(), "{}", receiver.log());
    assert!(worker1.terminate().success(), "{}", worker1.log());
    assert!(worker2.terminate().success(), "{}", worker2.log());

    let counts = pipeline.event_id_counts();
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} events written twice, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(5)]
    );
    let missing = acked.iter().filter(|id| !counts.contains_key(*id)).count();
    assert_eq!(missing, 0);

    let keys = pipeline.parquet_keys();
    let children = [
        "shardId-000000000002",
        "shardId-000000000003",
        "shardId-000000000004",
        "shardId-000000000005",
    ];
    assert!(
        keys.iter().any(|k| children.iter().any(|c| k.contains(c))),
        "events after the reshard come from the child shards: {keys:?}"
    );
    let partitions = pipeline.glue_partitions();
    assert!(!partitions.is_empty());
    for key in &keys {
        let values: Vec<String> = key
            .split('/')
            .filter_map(|segment| segment.split_once('=').map(|(_, v)| v.to_owned()))
            .collect();
        assert!(
            partitions.contains(&values),
            "{key} is in no Glue partition: {partitions:?}"
        );
    }
}
