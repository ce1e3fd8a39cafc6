//! The consumer group against DynamoDB as moto implements it: workers balance shards, hand
//! them over on release and on death, respect shard lineage, and a zombie's fenced writes
//! fail without touching its successor's progress.
//!
//! ```text
//! moto_server (venv) ◀── DynamoCoordinator "worker-a", "worker-b" (lease duration 1 s)
//! ```
#![cfg(feature = "external-tests")]
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adpipe_core::group::ShardCoordinator;
use adpipe_core::stream::{Checkpoint, PendingRange, SequenceNumber, Shard, StreamError};
use adpipe_leases::{DynamoCoordinator, LeaseSettings, LeaseTable};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{KeyType, TableStatus};

use support::Moto;

const TABLE: &str = "adpipe-test-leases";

/// Short, so that expiry tests take seconds.
const LEASE: Duration = Duration::from_secs(1);

/// How long a test waits for the group to reach the expected state: many lease durations.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two syncs while waiting, like a supervisor's renew interval.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// A moto server with the lease table created.
struct Group {
    _moto: Moto,
    client: Client,
}

impl Group {
    async fn start() -> Group {
        let moto = Moto::start();
        let client = support::dynamodb(&moto).await;
        LeaseTable::ensure(&client, TABLE).await.unwrap();
        Group {
            _moto: moto,
            client,
        }
    }

    fn worker(&self, id: &str) -> DynamoCoordinator {
        DynamoCoordinator::new(
            self.client.clone(),
            TABLE,
            id,
            LeaseSettings {
                lease_duration: LEASE,
            },
        )
    }
}

/// `n` open shards splitting the hash key space, without parents.
fn shards(n: u128) -> Vec<Shard> {
    let width = u128::MAX / n;
    (0..n)
        .map(|i| Shard {
            id: format!("shardId-{i:012}"),
            starting_hash_key: i * width,
            ending_hash_key: if i + 1 == n {
                u128::MAX
            } else {
                (i + 1) * width - 1
            },
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            open: true,
        })
        .collect()
}

fn seq(n: u64) -> SequenceNumber {
    SequenceNumber::from_u64(n)
}

fn range(first: u64, last: u64) -> PendingRange {
    PendingRange {
        first: seq(first),
        last: seq(last),
    }
}

/// Syncs `worker` every `SYNC_INTERVAL` until it holds `want`; fails after `SETTLE_TIMEOUT`.
async fn sync_until_held(worker: &DynamoCoordinator, listing: &[Shard], want: &[&str]) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let held = worker.sync(listing).await.unwrap();
        if held == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still holding {held:?}, want {want:?}"
        );
        tokio::time::sleep(SYNC_INTERVAL).await;
    }
}

#[tokio::test]
async fn ensuring_the_table_twice_leaves_one_active_table() {
    let moto = Moto::start();
    let client = support::dynamodb(&moto).await;
    LeaseTable::ensure(&client, TABLE).await.unwrap();
    LeaseTable::ensure(&client, TABLE).await.unwrap();

    let table = client
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(table.table_status, Some(TableStatus::Active));
    let key = &table.key_schema()[0];
    assert_eq!(
        (key.attribute_name(), key.key_type()),
        ("shard_id", &KeyType::Hash)
    );
}

#[tokio::test]
async fn two_workers_end_with_two_of_four_shards_each() {
    let group = Group::start().await;
    let (a, b) = (group.worker("worker-a"), group.worker("worker-b"));
    let listing = shards(4);
    assert_eq!(
        a.sync(&listing).await.unwrap().len(),
        4,
        "a lone worker takes all"
    );

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let (held_a, held_b) = loop {
        let held_b = b.sync(&listing).await.unwrap();
        let held_a = a.sync(&listing).await.unwrap();
        if held_a.len() == 2 && held_b.len() == 2 {
            break (held_a, held_b);
        }
        assert!(
            Instant::now() < deadline,
            "a holds {held_a:?}, b holds {held_b:?}"
        );
        tokio::time::sleep(SYNC_INTERVAL).await;
    };
    let all: BTreeSet<&String> = held_a.iter().chain(&held_b).collect();
    assert_eq!(all.len(), 4, "a holds {held_a:?}, b holds {held_b:?}");

    // Balanced: further syncs change nothing.
    assert_eq!(b.sync(&listing).await.unwrap(), held_b);
    assert_eq!(a.sync(&listing).await.unwrap(), held_a);
}

#[tokio::test]
async fn released_leases_are_taken_at_the_next_sync() {
    let group = Group::start().await;
    let (a, b) = (group.worker("worker-a"), group.worker("worker-b"));
    let listing = shards(4);
    assert_eq!(a.sync(&listing).await.unwrap().len(), 4);

    a.release_all().await.unwrap();
    assert_eq!(
        b.sync(&listing).await.unwrap().len(),
        4,
        "no wait for expiry"
    );
    let write = a
        .checkpoints()
        .commit("shardId-000000000000", &seq(1), false)
        .await;
    assert!(matches!(write, Err(StreamError::LeaseLost(_))), "{write:?}");
}

#[tokio::test]
async fn a_dead_workers_shards_are_taken_once_its_leases_expire() {
    let group = Group::start().await;
    let (a, b) = (group.worker("worker-a"), group.worker("worker-b"));
    let listing = shards(4);
    assert_eq!(a.sync(&listing).await.unwrap().len(), 4);
    let last_renewal = Instant::now();
    assert_eq!(
        b.sync(&listing).await.unwrap().len(),
        1,
        "b steals one of a's four"
    );
    drop(a); // dies without releasing anything

    let ids: Vec<String> = listing.iter().map(|s| s.id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sync_until_held(&b, &listing, &ids).await;
    assert!(
        last_renewal.elapsed() >= LEASE,
        "a's leases were taken before they expired"
    );
}

#[tokio::test]
async fn a_zombie_cannot_overwrite_its_successors_checkpoints() {
    let group = Group::start().await;
    let (a, b) = (group.worker("worker-a"), group.worker("worker-b"));
    let listing = shards(2);
    let (s0, s1) = ("shardId-000000000000", "shardId-000000000001");
    assert_eq!(a.sync(&listing).await.unwrap(), [s0, s1]);
    let zombie = a.checkpoints();
    zombie.begin(s0, &range(1, 5)).await.unwrap();
    zombie.commit(s0, &seq(5), false).await.unwrap();

    // a pauses past its lease; b takes over and makes progress.
    sync_until_held(&b, &listing, &[s0, s1]).await;
    let successor = b.checkpoints();
    successor.commit(s0, &seq(7), false).await.unwrap();
    successor.begin(s1, &range(1, 3)).await.unwrap();

    // a wakes up and writes as if it still held both shards.
    match zombie.commit(s0, &seq(9), false).await {
        Err(StreamError::LeaseLost(why)) => assert!(why.contains("worker-b"), "{why}"),
        other => panic!("a zombie's commit must fail with LeaseLost, got {other:?}"),
    }
    let begin = zombie.begin(s1, &range(4, 8)).await;
    assert!(matches!(begin, Err(StreamError::LeaseLost(_))), "{begin:?}");

    assert_eq!(
        successor.load(s0).await.unwrap(),
        Checkpoint {
            committed: Some(seq(7)),
            pending: None,
            finished: false,
        }
    );
    assert_eq!(successor.load(s1).await.unwrap().pending, Some(range(1, 3)));
    // And b still holds both: the zombie's attempts did not disturb its leases.
    assert_eq!(b.sync(&listing).await.unwrap(), [s0, s1]);
}

#[tokio::test]
async fn a_child_shard_is_taken_only_once_both_parents_are_finished() {
    let group = Group::start().await;
    let a = group.worker("worker-a");
    let mut listing = shards(2);
    for parent in &mut listing {
        parent.open = false;
    }
    let (p0, p1, child) = (
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    );
    listing.push(Shard {
        id: child.to_owned(),
        starting_hash_key: 0,
        ending_hash_key: u128::MAX,
        parent_shard_id: Some(p0.to_owned()),
        adjacent_parent_shard_id: Some(p1.to_owned()),
        open: true,
    });
    let checkpoints = a.checkpoints();

    assert_eq!(a.sync(&listing).await.unwrap(), [p0, p1]);
    checkpoints.commit(p0, &seq(10), true).await.unwrap();
    assert_eq!(
        a.sync(&listing).await.unwrap(),
        [p1],
        "one parent is still open"
    );
    checkpoints.commit(p1, &seq(20), true).await.unwrap();
    assert_eq!(a.sync(&listing).await.unwrap(), [child]);

    assert!(checkpoints.load(p0).await.unwrap().finished);
    // A second worker finds nothing to take: finished parents are never handed out.
    let b = group.worker("worker-b");
    assert_eq!(b.sync(&listing).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn the_pending_range_survives_a_handover() {
    let group = Group::start().await;
    let (a, b) = (group.worker("worker-a"), group.worker("worker-b"));
    let listing = shards(1);
    let s0 = "shardId-000000000000";
    assert_eq!(a.sync(&listing).await.unwrap(), [s0]);
    a.checkpoints().commit(s0, &seq(4), false).await.unwrap();
    a.checkpoints().begin(s0, &range(5, 9)).await.unwrap();
    a.release_all().await.unwrap();

    assert_eq!(b.sync(&listing).await.unwrap(), [s0]);
    let checkpoints = b.checkpoints();
    assert_eq!(
        checkpoints.load(s0).await.unwrap(),
        Checkpoint {
            committed: Some(seq(4)),
            pending: Some(range(5, 9)),
            finished: false,
        }
    );
    checkpoints.commit(s0, &seq(9), false).await.unwrap();
    assert_eq!(
        checkpoints.load(s0).await.unwrap(),
        Checkpoint {
            committed: Some(seq(9)),
            pending: None,
            finished: false,
        }
    );
}

#[tokio::test]
async fn a_restarted_worker_takes_its_leases_back_at_once_and_fences_the_old_process() {
    let group = Group::start().await;
    let old = group.worker("worker-a");
    let listing = shards(2);
    let (s0, s1) = ("shardId-000000000000", "shardId-000000000001");
    assert_eq!(old.sync(&listing).await.unwrap(), [s0, s1]);

    let restarted = group.worker("worker-a");
    assert_eq!(
        restarted.sync(&listing).await.unwrap(),
        [s0, s1],
        "no wait for expiry"
    );
    let write = old.checkpoints().commit(s0, &seq(1), false).await;
    assert!(matches!(write, Err(StreamError::LeaseLost(_))), "{write:?}");
    restarted
        .checkpoints()
        .commit(s0, &seq(2), false)
        .await
        .unwrap();
}
