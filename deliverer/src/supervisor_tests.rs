//! Consumer-group scenarios over the in-memory fakes: workers follow shard ownership, a lost
//! lease stops all writes, a handover and a reshard land every event exactly once, the
//! catalog knows each partition before the commit that covers it, and shutdown releases the
//! leases after the last flush.

use std::collections::BTreeSet;

use adpipe_core::enrich::Enricher;
use adpipe_core::event::EpochMillis;
use adpipe_core::group::{Catalog, SoleOwner};
use adpipe_core::lake::Partition;
use adpipe_core::sink::ObjectSink;
use adpipe_core::spec::PartnerPipelineSpec;
use adpipe_core::stream::{Checkpoint, PendingRange, SequenceNumber};
use prometheus::Registry;
use tokio::task::JoinHandle;

use super::*;
use crate::testing::{
    BEFORE_14H, Entry, FakeCatalog, FakeCheckpoints, FakeLeases, FakeSink, FakeStream,
    event_id_counts, event_json,
};
use crate::{Deliverer, DelivererOptions};

const S0: &str = "shardId-000000000000";
const S1: &str = "shardId-000000000001";

fn spec(max_file_bytes: u64) -> PartnerPipelineSpec {
    serde_json::from_value(serde_json::json!({
        "partner": "acme-video",
        "source": {"format": "json", "mapping": {}},
        "stream": {"name": "ads-acme-video"},
        "deliverer": {"sink": {"bucket": "lake", "maxFileAge": "1h", "maxFileBytes": max_file_bytes}}
    }))
    .unwrap()
}

/// Files that only close by age (an hour), at shard end or on shutdown.
const LARGE_FILES: u64 = 128 * 1024 * 1024;

fn spawn(
    spec: &PartnerPipelineSpec,
    stream: &Arc<FakeStream>,
    coordinator: Arc<dyn ShardCoordinator>,
    catalog: Option<Arc<dyn Catalog>>,
    sink: Arc<dyn ObjectSink>,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> JoinHandle<Result<(), DelivererError>> {
    spawn_with(
        spec,
        stream,
        (coordinator, catalog, sink),
        DelivererOptions::default(),
        registry,
        shutdown,
    )
}

type Backends = (
    Arc<dyn ShardCoordinator>,
    Option<Arc<dyn Catalog>>,
    Arc<dyn ObjectSink>,
);

fn spawn_with(
    spec: &PartnerPipelineSpec,
    stream: &Arc<FakeStream>,
    (coordinator, catalog, sink): Backends,
    options: DelivererOptions,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> JoinHandle<Result<(), DelivererError>> {
    let deliverer = Deliverer::new(
        spec,
        stream.clone(),
        coordinator,
        catalog,
        sink,
        Enricher::new(&[], None).unwrap(),
        options,
        registry,
    )
    .unwrap();
    tokio::spawn(deliverer.run(shutdown.clone()))
}

fn flush_every(seconds: u64) -> DelivererOptions {
    DelivererOptions {
        flush_interval: Some(Duration::from_secs(seconds)),
        ..DelivererOptions::default()
    }
}

fn seq(n: u64) -> SequenceNumber {
    SequenceNumber::from_u64(n)
}

fn metric(registry: &Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        })
        .sum()
}

/// Whether `entry` is a read or a write of `shard` (by `worker`, when given).
fn touches(entry: &Entry, worker: Option<&str>, shard: &str) -> bool {
    let by = |w: &str| worker.is_none_or(|worker| worker == w);
    match entry {
        Entry::Read { shard: s } => worker.is_none() && s == shard,
        Entry::Begin {
            worker: w,
            shard: s,
        }
        | Entry::Commit {
            worker: w,
            shard: s,
            ..
        } => by(w) && s == shard,
        Entry::Put { worker: w, key } => by(w) && key.contains(&format!("/{shard}-")),
        _ => false,
    }
}

fn syncs_of(entries: &[Entry], worker: &str) -> Vec<Option<Vec<String>>> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Synced { worker: w, owned } if w == worker => Some(owned.clone()),
            _ => None,
        })
        .collect()
}

fn ids(ids: &[&str]) -> Vec<(String, usize)> {
    ids.iter().map(|id| ((*id).to_owned(), 1)).collect()
}

#[tokio::test(start_paused = true)]
async fn owned_shards_are_delivered_failed_workers_restart_and_leases_are_released_last() {
    let stream = Arc::new(FakeStream::new(&[(S0, false), (S1, true)]));
    let journal = stream.journal();
    stream.push(S0, event_json("c1", BEFORE_14H), BEFORE_14H);
    stream.push(S0, event_json("c2", BEFORE_14H), BEFORE_14H);
    let open_last = stream.push(S1, event_json("o1", BEFORE_14H), BEFORE_14H);
    let leases = FakeLeases::new(journal.clone());
    leases.assign(S0, "w1");
    leases.assign(S1, "w1");
    leases.checkpoints().script_commits([true]);
    let sink = Arc::new(FakeSink::recording_to(journal.clone()));
    let registry = Registry::new();
    let shutdown = CancellationToken::new();
    let running = spawn(
        &spec(LARGE_FILES),
        &stream,
        leases.coordinator("w1"),
        None,
        sink.as_worker("w1"),
        &registry,
        &shutdown,
    );

    leases.checkpoints().wait_committed(S0, &seq(20)).await;
    assert!(leases.checkpoints().get(S0).finished);
    let finished_at = journal.entries().len();
    journal
        .wait_for(|e| syncs_of(&e[finished_at..], "w1").len() >= 3)
        .await;
    assert!(!running.is_finished(), "runs until shutdown");
    assert!(
        !journal.entries()[finished_at..]
            .iter()
            .any(|e| touches(e, None, S0)),
        "a finished shard is not started again although it is still owned"
    );

    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(leases.checkpoints().get(S1).committed, Some(open_last));
    assert_eq!(
        event_id_counts(&sink.objects())
            .into_iter()
            .collect::<Vec<_>>(),
        ids(&["c1", "c2", "o1"])
    );
    let entries = journal.entries();
    assert_eq!(
        entries[entries.len() - 2..],
        [
            Entry::Commit {
                worker: "w1".into(),
                shard: S1.into(),
                last: seq(10),
                finished: false
            },
            Entry::Released {
                worker: "w1".into()
            },
        ],
        "the leases are released after the last flush"
    );
    assert_eq!(
        metric(&registry, "adpipe_deliverer_worker_restarts_total"),
        1.0
    );
    assert_eq!(
        metric(&registry, "adpipe_deliverer_events_written_total"),
        3.0
    );
    assert_eq!(metric(&registry, "adpipe_deliverer_shards_owned"), 2.0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_the_worker_until_a_sync_returns_its_shard() {
    let stream = Arc::new(FakeStream::new(&[(S0, true), (S1, true)]));
    let journal = stream.journal();
    stream.push(S0, event_json("a1", BEFORE_14H), BEFORE_14H);
    let a2 = stream.push(S0, event_json("a2", BEFORE_14H), BEFORE_14H);
    stream.push(S1, event_json("b1", BEFORE_14H), BEFORE_14H);
    let leases = FakeLeases::new(journal.clone());
    leases.assign(S0, "w1");
    leases.assign(S1, "w1");
    leases.hand_over_at_commit(S0, "w2");
    let sink = Arc::new(FakeSink::recording_to(journal.clone()));
    let registry = Registry::new();
    let shutdown = CancellationToken::new();
    let running = spawn_with(
        &spec(LARGE_FILES),
        &stream,
        (leases.coordinator("w1"), None, sink.as_worker("w1")),
        flush_every(10),
        &registry,
        &shutdown,
    );

    let refused = Entry::Refused {
        worker: "w1".into(),
        shard: S0.into(),
    };
    journal.wait_for(|e| e.contains(&refused)).await;
    let refused_at = journal
        .entries()
        .iter()
        .position(|e| *e == refused)
        .unwrap();
    journal
        .wait_for(|e| syncs_of(&e[refused_at..], "w1").len() >= 3)
        .await;
    let entries = journal.entries();
    assert!(
        !entries[refused_at..].iter().any(|e| touches(e, None, S0)),
        "no read or write of the lost shard: {:?}",
        &entries[refused_at..]
    );
    assert_eq!(
        leases.checkpoints().get(S0),
        Checkpoint {
            committed: None,
            pending: Some(PendingRange {
                first: seq(10),
                last: a2.clone()
            }),
            finished: false,
        },
        "the refused batch stays pending for the lease's new owner"
    );
    assert_eq!(metric(&registry, "adpipe_deliverer_leases_lost_total"), 1.0);
    assert_eq!(
        metric(&registry, "adpipe_deliverer_worker_restarts_total"),
        0.0
    );
    assert_eq!(metric(&registry, "adpipe_deliverer_shards_owned"), 1.0);

    leases.fail_syncs(10);
    let failing_from = journal.entries().len();
    let b2 = stream.push(S1, event_json("b2", BEFORE_14H), BEFORE_14H);
    leases.checkpoints().wait_committed(S1, &b2).await;
    let syncs = syncs_of(&journal.entries()[failing_from..], "w1");
    assert!(
        syncs.len() >= 4 && syncs.iter().all(Option::is_none),
        "the worker of S1 delivers while every sync fails: {syncs:?}"
    );

    leases.assign(S0, "w1");
    leases.checkpoints().wait_committed(S0, &a2).await;
    let entries = journal.entries();
    let restarted_at = refused_at
        + entries[refused_at..]
            .iter()
            .position(|e| touches(e, None, S0))
            .unwrap();
    assert!(
        syncs_of(&entries[refused_at..restarted_at], "w1")
            .iter()
            .any(|owned| owned.as_ref().is_some_and(|o| o.iter().any(|s| s == S0))),
        "restarted only after a sync returned the shard"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        event_id_counts(&sink.objects())
            .into_iter()
            .collect::<Vec<_>>(),
        ids(&["a1", "a2", "b1", "b2"])
    );
}

#[tokio::test(start_paused = true)]
async fn a_shard_handed_over_mid_batch_lands_exactly_once() {
    let stream = Arc::new(FakeStream::new(&[(S0, true), (S1, true)]));
    let journal = stream.journal();
    for id in ["a1", "a2", "a3"] {
        stream.push(S0, event_json(id, BEFORE_14H), BEFORE_14H);
    }
    for id in ["b1", "b2"] {
        stream.push(S1, event_json(id, BEFORE_14H + 2000), BEFORE_14H + 2000);
    }
    let leases = FakeLeases::new(journal.clone());
    leases.assign(S0, "w1");
    leases.assign(S1, "w2");
    leases.hand_over_at_commit(S0, "w2");
    let sink = Arc::new(FakeSink::recording_to(journal.clone()));
    let (r1, r2) = (Registry::new(), Registry::new());
    let shutdown = CancellationToken::new();
    let members = [("w1", &r1), ("w2", &r2)].map(|(worker, registry)| {
        spawn_with(
            &spec(LARGE_FILES),
            &stream,
            (leases.coordinator(worker), None, sink.as_worker(worker)),
            flush_every(10),
            registry,
            &shutdown,
        )
    });

    leases.checkpoints().wait_committed(S0, &seq(30)).await;
    let a4 = stream.push(S0, event_json("a4", BEFORE_14H), BEFORE_14H);
    let b3 = stream.push(S1, event_json("b3", BEFORE_14H), BEFORE_14H);
    leases.checkpoints().wait_committed(S0, &a4).await;
    leases.checkpoints().wait_committed(S1, &b3).await;
    shutdown.cancel();
    for member in members {
        member.await.unwrap().unwrap();
    }

    assert_eq!(
        event_id_counts(&sink.objects())
            .into_iter()
            .collect::<Vec<_>>(),
        ids(&["a1", "a2", "a3", "a4", "b1", "b2", "b3"])
    );
    let entries = journal.entries();
    let refused_at = entries
        .iter()
        .position(|e| {
            *e == Entry::Refused {
                worker: "w1".into(),
                shard: S0.into(),
            }
        })
        .unwrap();
    assert!(
        !entries[refused_at..]
            .iter()
            .any(|e| touches(e, Some("w1"), S0)),
        "worker 1 writes nothing after losing the lease"
    );
    let keys_of = |worker: &str| -> BTreeSet<String> {
        entries
            .iter()
            .filter_map(|e| match e {
                Entry::Put { worker: w, key } if w == worker && touches(e, None, S0) => {
                    Some(key.clone())
                }
                _ => None,
            })
            .collect()
    };
    let (w1_keys, w2_keys) = (keys_of("w1"), keys_of("w2"));
    assert!(!w1_keys.is_empty());
    assert!(
        w1_keys.is_subset(&w2_keys),
        "worker 2 rewrote the pending range under the same keys: {w1_keys:?} {w2_keys:?}"
    );
    let commits: Vec<(&str, &SequenceNumber)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Commit {
                worker,
                shard,
                last,
                ..
            } if shard == S0 => Some((worker.as_str(), last)),
            _ => None,
        })
        .collect();
    assert_eq!(commits, [("w2", &seq(30)), ("w2", &a4)]);
    for worker in ["w1", "w2"] {
        let released = entries
            .iter()
            .position(|e| {
                *e == Entry::Released {
                    worker: worker.into(),
                }
            })
            .unwrap();
        let last_write = entries
            .iter()
            .rposition(|e| [S0, S1].iter().any(|s| touches(e, Some(worker), s)))
            .unwrap();
        assert!(
            last_write < released,
            "{worker} released after its last write"
        );
    }
    assert_eq!(metric(&r1, "adpipe_deliverer_leases_lost_total"), 1.0);
    assert_eq!(metric(&r2, "adpipe_deliverer_leases_lost_total"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn after_a_reshard_children_start_only_once_their_parents_are_finished() {
    const FAMILIES: [(&str, [&str; 2]); 2] = [
        (S0, ["shardId-000000000002", "shardId-000000000003"]),
        (S1, ["shardId-000000000004", "shardId-000000000005"]),
    ];
    let stream = Arc::new(FakeStream::new(&[(S0, true), (S1, true)]));
    let journal = stream.journal();
    let mut expected = vec!["p0-0".to_owned(), "p1-0".to_owned()];
    stream.push(S0, event_json("p0-0", BEFORE_14H), BEFORE_14H);
    stream.push(S1, event_json("p1-0", BEFORE_14H), BEFORE_14H);
    let checkpoints = Arc::new(FakeCheckpoints::recording_to(journal.clone()));
    let sink = Arc::new(FakeSink::recording_to(journal.clone()));
    let shutdown = CancellationToken::new();
    let running = spawn_with(
        &spec(LARGE_FILES),
        &stream,
        (
            Arc::new(SoleOwner::new(checkpoints.clone())),
            None,
            sink.clone(),
        ),
        flush_every(5),
        &Registry::new(),
        &shutdown,
    );
    checkpoints.wait_committed(S0, &seq(10)).await;
    checkpoints.wait_committed(S1, &seq(10)).await;

    for (i, (parent, children)) in FAMILIES.iter().enumerate() {
        let id = format!("p{i}-1");
        stream.push(parent, event_json(&id, BEFORE_14H), BEFORE_14H);
        expected.push(id);
        stream.split(parent, children);
        for child in children {
            for n in 0..2 {
                let id = format!("{child}-{n}");
                stream.push(child, event_json(&id, BEFORE_14H), BEFORE_14H);
                expected.push(id);
            }
        }
    }
    // NOTE: the parents' last flush is retried for seconds, over several syncs, while their
    // children already hold records.
    sink.fail_next(8);
    for (_, children) in FAMILIES {
        for child in children {
            checkpoints.wait_committed(child, &seq(20)).await;
        }
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();

    expected.sort();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(
        event_id_counts(&sink.objects())
            .into_iter()
            .collect::<Vec<_>>(),
        ids(&expected)
    );
    let entries = journal.entries();
    for (parent, children) in FAMILIES {
        let checkpoint = checkpoints.get(parent);
        assert!(checkpoint.finished && checkpoint.committed == Some(seq(20)));
        let finished_at = entries
            .iter()
            .position(
                |e| matches!(e, Entry::Commit { shard, finished: true, .. } if shard == parent),
            )
            .unwrap();
        assert!(
            !entries[finished_at + 1..]
                .iter()
                .any(|e| touches(e, None, parent)),
            "a finished parent is not read again"
        );
        for child in children {
            let first_read = entries
                .iter()
                .position(|e| touches(e, None, child))
                .unwrap();
            assert!(
                finished_at < first_read,
                "{child} was read before {parent} finished"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_partition_is_registered_once_before_the_commit_that_covers_it() {
    let (h13, h14) = (BEFORE_14H, BEFORE_14H + 2000);
    let stream = Arc::new(FakeStream::new(&[(S0, false), (S1, false)]));
    let journal = stream.journal();
    for (shard, id, t) in [
        (S0, "e1", h13),
        (S0, "e2", h14),
        (S0, "e3", h13),
        (S1, "f1", h14),
        (S1, "f2", h13),
    ] {
        stream.push(shard, event_json(id, t), t);
    }
    let checkpoints = Arc::new(FakeCheckpoints::recording_to(journal.clone()));
    let catalog = Arc::new(FakeCatalog::new(journal.clone()));
    catalog.fail_ensures(2);
    catalog.fail_adds(2);
    let sink = Arc::new(FakeSink::recording_to(journal.clone()));
    let registry = Registry::new();
    let shutdown = CancellationToken::new();
    // Two records per batch: batches that span both hours, and batches of one hour.
    let two_records_per_batch = DelivererOptions {
        read_limit: 2,
        ..DelivererOptions::default()
    };
    let running = spawn_with(
        &spec(1),
        &stream,
        (
            Arc::new(SoleOwner::new(checkpoints.clone())),
            Some(catalog),
            sink.clone(),
        ),
        two_records_per_batch,
        &registry,
        &shutdown,
    );
    checkpoints.wait_committed(S0, &seq(30)).await;
    checkpoints.wait_committed(S1, &seq(20)).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();

    assert_eq!(
        event_id_counts(&sink.objects())
            .into_iter()
            .collect::<Vec<_>>(),
        ids(&["e1", "e2", "e3", "f1", "f2"])
    );
    let entries = journal.entries();
    let ensured = entries
        .iter()
        .position(|e| *e == Entry::TableEnsured)
        .unwrap();
    assert_eq!(ensured, 0, "nothing is read before the table exists");
    let added: Vec<(usize, Partition)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Entry::PartitionAdded { partner, partition } if partner == "acme-video" => {
                Some((i, *partition))
            }
            _ => None,
        })
        .collect();
    let partitions: Vec<Partition> = added.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        partitions,
        [
            Partition::of(EpochMillis(h13)),
            Partition::of(EpochMillis(h14))
        ],
        "each partition exactly once"
    );
    let data_files = entries.iter().enumerate().filter_map(|(i, e)| match e {
        Entry::Put { key, .. } if key.ends_with(".parquet") => Some((i, key)),
        _ => None,
    });
    for (put_at, key) in data_files {
        let shard = [S0, S1].into_iter().find(|s| key.contains(s)).unwrap();
        let commit_at = put_at
            + entries[put_at..]
                .iter()
                .position(|e| matches!(e, Entry::Commit { shard: s, .. } if s == shard))
                .unwrap();
        let (added_at, _) = added
            .iter()
            .find(|(_, p)| key.contains(&format!("/{p}/")))
            .unwrap();
        assert!(
            *added_at < commit_at,
            "{key}: registered before the commit that covers it"
        );
    }
    for (added_at, partition) in &added {
        let first_file = entries
            .iter()
            .position(
                |e| matches!(e, Entry::Put { key, .. } if key.contains(&format!("/{partition}/"))),
            )
            .unwrap();
        assert!(
            first_file < *added_at,
            "{partition}: registered once a file is in it"
        );
    }
    assert_eq!(
        metric(&registry, "adpipe_deliverer_partitions_registered_total"),
        2.0
    );
    assert_eq!(
        metric(&registry, "adpipe_deliverer_catalog_retries_total"),
        4.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_partition_cannot_be_registered_is_not_committed() {
    let stream = Arc::new(FakeStream::new(&[(S0, false)]));
    let journal = stream.journal();
    let last = stream.push(S0, event_json("e1", BEFORE_14H), BEFORE_14H);
    let checkpoints = Arc::new(FakeCheckpoints::recording_to(journal.clone()));
    let catalog = Arc::new(FakeCatalog::new(journal.clone()));
    catalog.fail_adds(usize::MAX);
    let sink = Arc::new(FakeSink::recording_to(journal.clone()));
    let registry = Registry::new();
    let shutdown = CancellationToken::new();
    let running = spawn(
        &spec(LARGE_FILES),
        &stream,
        Arc::new(SoleOwner::new(checkpoints.clone())),
        Some(catalog.clone()),
        sink.clone(),
        &registry,
        &shutdown,
    );
    journal
        .wait_for(|e| e.iter().any(|e| matches!(e, Entry::Put { .. })))
        .await;
    // NOTE: waiting is the point: the batch must still be uncommitted after many retries.
    tokio::time::sleep(Duration::from_secs(60)).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert!(metric(&registry, "adpipe_deliverer_catalog_retries_total") >= 5.0);
    let checkpoint = checkpoints.get(S0);
    assert_eq!(checkpoint.committed, None, "never committed unregistered");
    assert!(checkpoint.pending.is_some());

    catalog.fail_adds(0);
    let shutdown = CancellationToken::new();
    let successor = spawn(
        &spec(LARGE_FILES),
        &stream,
        Arc::new(SoleOwner::new(checkpoints.clone())),
        Some(catalog),
        sink.clone(),
        &Registry::new(),
        &shutdown,
    );
    checkpoints.wait_committed(S0, &last).await;
    shutdown.cancel();
    successor.await.unwrap().unwrap();
    assert!(checkpoints.get(S0).finished);
    assert!(
        journal
            .entries()
            .iter()
            .any(|e| matches!(e, Entry::PartitionAdded { .. }))
    );
    assert_eq!(
        event_id_counts(&sink.objects())
            .into_iter()
            .collect::<Vec<_>>(),
        ids(&["e1"])
    );
}
