//! Shard worker scenarios over the in-memory fakes: contract keys, exactly once across
//! crashes, flush triggers, retries and enrichment.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adpipe_core::enrich::Enricher;
use adpipe_core::spec::Enrichment;
use adpipe_core::stream::{SequenceNumber, StreamError};
use bytes::Bytes;
use prometheus::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::DelivererMetrics;
use crate::testing::{
    BEFORE_14H, FakeCheckpoints, FakeSink, FakeStream, aggregate, event_id_counts, event_json,
    read_parquet, strings,
};

const SHARD: &str = "shardId-000000000000";

struct Harness {
    stream: Arc<FakeStream>,
    checkpoints: Arc<FakeCheckpoints>,
    sink: Arc<FakeSink>,
    registry: Registry,
    ctx: Arc<WorkerContext>,
}

fn settings() -> Settings {
    Settings {
        partner: "acme-video".into(),
        prefix: "events".into(),
        max_file_age: Duration::from_secs(3600),
        max_file_bytes: 128 * 1024 * 1024,
        idle_poll: Duration::from_millis(200),
        read_limit: 10,
        drain_on_shutdown: false,
    }
}

fn harness(stream: FakeStream, settings: Settings, enricher: Enricher) -> Harness {
    let stream = Arc::new(stream);
    let checkpoints = Arc::new(FakeCheckpoints::new());
    let sink = Arc::new(FakeSink::default());
    let registry = Registry::new();
    let ctx = Arc::new(WorkerContext {
        settings,
        reader: stream.clone(),
        checkpoints: checkpoints.clone(),
        sink: sink.clone(),
        enricher,
        metrics: DelivererMetrics::register(&registry, "acme-video").unwrap(),
        catalog: None,
    });
    Harness {
        stream,
        checkpoints,
        sink,
        registry,
        ctx,
    }
}

/// A fresh worker context on the same fakes, as a new process with other settings would be.
fn restarted(h: &Harness, settings: Settings) -> Arc<WorkerContext> {
    Arc::new(WorkerContext {
        settings,
        reader: h.stream.clone(),
        checkpoints: h.checkpoints.clone(),
        sink: h.sink.clone(),
        enricher: no_enrichment(),
        metrics: DelivererMetrics::register(&Registry::new(), "acme-video").unwrap(),
        catalog: None,
    })
}

fn no_enrichment() -> Enricher {
    Enricher::new(&[], None).unwrap()
}

fn counter(registry: &Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

async fn run(h: &Harness) -> Result<ShardOutcome, WorkerError> {
    run_shard(&h.ctx, SHARD, &CancellationToken::new()).await
}

#[tokio::test(start_paused = true)]
async fn a_closed_shard_lands_under_the_contract_keys_and_finishes() {
    let stream = FakeStream::new(&[(SHARD, false)]);
    let t = BEFORE_14H;
    stream.push(
        SHARD,
        aggregate(&[event_json("e1", t), event_json("e2", t)]),
        t,
    );
    stream.push(SHARD, event_json("e3", t + 1500), t + 1500);
    stream.push(SHARD, &b"not json"[..], t + 2000);
    stream.push(
        SHARD,
        aggregate(&[event_json("e4", t + 1000), b"{bad".to_vec()]),
        t + 2000,
    );
    let h = harness(stream, settings(), no_enrichment());

    assert_eq!(run(&h).await.unwrap(), ShardOutcome::Finished);

    let objects = h.sink.objects();
    let keys: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "events/_errors/partner=acme-video/dt=2026-11-28/shardId-000000000000-30-40.jsonl.gz",
            "events/partner=acme-video/dt=2026-11-28/hour=13/shardId-000000000000-10-10.parquet",
            "events/partner=acme-video/dt=2026-11-28/hour=14/shardId-000000000000-20-40.parquet",
        ]
    );
    let rows = read_parquet(&objects);
    assert_eq!(
        strings(&rows, "event_id"),
        ["e1", "e2", "e3", "e4"].map(|id| Some(id.to_owned()))
    );
    let errors = gunzip(&objects[keys[0]]);
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["sequence"], "30");
    assert!(errors[0]["reason"].as_str().unwrap().contains("JSON"));
    assert_eq!(errors[1]["sub_sequence"], 1);

    let checkpoint = h.checkpoints.get(SHARD);
    assert_eq!(checkpoint.committed, Some(SequenceNumber::from_u64(40)));
    assert!(checkpoint.finished && checkpoint.pending.is_none());
    assert_eq!(
        counter(&h.registry, "adpipe_deliverer_events_written_total"),
        4.0
    );
    assert_eq!(
        counter(&h.registry, "adpipe_deliverer_decode_errors_total"),
        2.0
    );

    let puts = h.sink.puts();
    assert_eq!(run(&h).await.unwrap(), ShardOutcome::Finished);
    assert_eq!(h.sink.puts(), puts, "a finished shard is skipped");
}

fn gunzip(body: &Bytes) -> Vec<serde_json::Value> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Twelve records around an hour boundary, two per read, one batch per read.
fn crash_harness() -> (Harness, Vec<String>) {
    let stream = FakeStream::new(&[(SHARD, false)]);
    let mut ids = Vec::new();
    for i in 0..12i64 {
        let t = BEFORE_14H + i * 200;
        let a = format!("e{i}a");
        let b = format!("e{i}b");
        if i % 3 == 0 {
            stream.push(SHARD, event_json(&a, t), t);
            ids.push(a);
        } else if i % 5 == 0 {
            stream.push(
                SHARD,
                aggregate(&[event_json(&a, t), b"garbage".to_vec()]),
                t,
            );
            ids.push(a);
        } else {
            stream.push(SHARD, aggregate(&[event_json(&a, t), event_json(&b, t)]), t);
            ids.extend([a, b]);
        }
    }
    let settings = Settings {
        read_limit: 2,
        max_file_bytes: 1,
        ..settings()
    };
    (harness(stream, settings, no_enrichment()), ids)
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_any_put_or_commit_leaves_every_event_exactly_once() {
    let (reference, ids) = crash_harness();
    assert_eq!(run(&reference).await.unwrap(), ShardOutcome::Finished);
    let expected = reference.sink.objects();
    let once: BTreeMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(event_id_counts(&expected), once);
    let data_files = expected.keys().filter(|k| k.ends_with(".parquet")).count();
    assert!(
        data_files >= 6,
        "the size limit closes a file per read: {data_files}"
    );
    let puts = reference.sink.puts();

    for crash_at in 0..puts {
        let (h, _) = crash_harness();
        let stop = CancellationToken::new();
        h.sink.crash_at(crash_at, stop.clone());
        let outcome = run_shard(&h.ctx, SHARD, &stop).await.unwrap();
        assert_eq!(outcome, ShardOutcome::Stopped, "crash at put {crash_at}");
        assert!(
            h.checkpoints.get(SHARD).pending.is_some(),
            "crash at put {crash_at}"
        );

        assert_eq!(run(&h).await.unwrap(), ShardOutcome::Finished);
        assert_eq!(h.sink.objects(), expected, "crash at put {crash_at}");
    }

    // A successor that reads more per call must still rewrite exactly the pending range.
    for crash_at in 0..puts {
        let (h, _) = crash_harness();
        let stop = CancellationToken::new();
        h.sink.crash_at(crash_at, stop.clone());
        run_shard(&h.ctx, SHARD, &stop).await.unwrap();
        let successor = restarted(
            &h,
            Settings {
                read_limit: 5,
                ..h.ctx.settings.clone()
            },
        );
        let outcome = run_shard(&successor, SHARD, &CancellationToken::new()).await;
        assert_eq!(outcome.unwrap(), ShardOutcome::Finished);
        assert_eq!(
            event_id_counts(&h.sink.objects()),
            once,
            "crash at put {crash_at}"
        );
    }

    for failed_commit in 0..6 {
        let (h, _) = crash_harness();
        let script = (0..=failed_commit).map(|i| i == failed_commit);
        h.checkpoints.script_commits(script);
        let err = run(&h).await.unwrap_err();
        assert!(matches!(err, WorkerError::Commit { .. }), "{err}");
        assert!(h.checkpoints.get(SHARD).pending.is_some());

        assert_eq!(run(&h).await.unwrap(), ShardOutcome::Finished);
        assert_eq!(h.sink.objects(), expected, "commit {failed_commit} failed");
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_shard_flushes_by_age_and_on_shutdown() {
    let stream = FakeStream::new(&[(SHARD, true)]);
    for i in 0..3 {
        stream.push(SHARD, event_json(&format!("a{i}"), BEFORE_14H), BEFORE_14H);
    }
    let settings = Settings {
        max_file_age: Duration::from_secs(60),
        ..settings()
    };
    let h = harness(stream, settings, no_enrichment());
    let stop = CancellationToken::new();
    let worker = tokio::spawn({
        let (ctx, stop) = (h.ctx.clone(), stop.clone());
        async move { run_shard(&ctx, SHARD, &stop).await }
    });

    let started = Instant::now();
    h.checkpoints
        .wait_committed(SHARD, &SequenceNumber::from_u64(30))
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "flushed after {waited:?}"
    );

    let last = h
        .stream
        .push(SHARD, event_json("b", BEFORE_14H), BEFORE_14H);
    let empty_reads = h.stream.empty_reads();
    h.stream.wait_empty_reads(empty_reads + 1).await;
    assert_eq!(h.sink.objects().len(), 1, "the second batch is not due yet");
    stop.cancel();
    assert_eq!(worker.await.unwrap().unwrap(), ShardOutcome::Stopped);

    let checkpoint = h.checkpoints.get(SHARD);
    assert_eq!(checkpoint.committed, Some(last));
    assert!(!checkpoint.finished);
    assert_eq!(event_id_counts(&h.sink.objects()).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn draining_on_shutdown_lands_everything_the_shard_holds() {
    let stream = FakeStream::new(&[(SHARD, true)]);
    for i in 0..25 {
        stream.push(SHARD, event_json(&format!("d{i}"), BEFORE_14H), BEFORE_14H);
    }
    let stop = CancellationToken::new();
    stop.cancel();
    let drained = harness(
        stream,
        Settings {
            drain_on_shutdown: true,
            ..settings()
        },
        no_enrichment(),
    );
    assert_eq!(
        run_shard(&drained.ctx, SHARD, &stop).await.unwrap(),
        ShardOutcome::Stopped
    );
    assert_eq!(
        event_id_counts(&drained.sink.objects()).len(),
        25,
        "read_limit is 10: several reads"
    );

    let stream = FakeStream::new(&[(SHARD, true)]);
    stream.push(SHARD, event_json("kept", BEFORE_14H), BEFORE_14H);
    let quick = harness(stream, settings(), no_enrichment());
    assert_eq!(
        run_shard(&quick.ctx, SHARD, &stop).await.unwrap(),
        ShardOutcome::Stopped
    );
    assert!(
        quick.sink.objects().is_empty(),
        "without draining, records stay for the next owner"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_puts_and_throttled_reads_are_retried_not_skipped() {
    let stream = FakeStream::new(&[(SHARD, false)]);
    stream.push(SHARD, event_json("x", BEFORE_14H), BEFORE_14H);
    stream.fail_reads([
        StreamError::Throttled("slow down".into()),
        StreamError::Unavailable("try again".into()),
    ]);
    let h = harness(stream, settings(), no_enrichment());
    h.sink.fail_next(3);

    assert_eq!(run(&h).await.unwrap(), ShardOutcome::Finished);
    assert_eq!(event_id_counts(&h.sink.objects()).get("x"), Some(&1));
    assert_eq!(
        counter(&h.registry, "adpipe_deliverer_sink_retries_total"),
        3.0
    );
    assert_eq!(
        counter(&h.registry, "adpipe_deliverer_read_retries_total"),
        2.0
    );

    let h = harness(
        FakeStream::new(&[(SHARD, true)]),
        settings(),
        no_enrichment(),
    );
    h.stream.fail_reads([StreamError::NotFound(SHARD.into())]);
    assert!(matches!(run(&h).await, Err(WorkerError::Read { .. })));
}

#[tokio::test(start_paused = true)]
async fn geoip_and_user_agent_fill_the_enrichment_columns() {
    let database =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/geoip/GeoIP2-City-Test.mmdb");
    let enricher =
        Enricher::new(&[Enrichment::Geoip, Enrichment::UserAgent], Some(&database)).unwrap();
    assert!(enricher.geoip_enabled());
    let stream = FakeStream::new(&[(SHARD, false)]);
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    for (id, ip) in [
        ("v4", "203.0.113.0"),
        ("v6", "2001:db8:abcd::"),
        ("none", "198.51.100.0"),
    ] {
        let body = format!(
            r#"{{"event_id":"{id}","event_type":"impression","received_at":{BEFORE_14H},"ip":"{ip}","user_agent":"{chrome}"}}"#
        );
        stream.push(SHARD, body.into_bytes(), BEFORE_14H);
    }
    let h = harness(stream, settings(), enricher);

    assert_eq!(run(&h).await.unwrap(), ShardOutcome::Finished);
    let rows = read_parquet(&h.sink.objects());
    let column = |name: &str| -> Vec<Option<String>> { strings(&rows, name) };
    let some = |values: [&str; 2]| -> Vec<Option<String>> {
        values
            .iter()
            .map(|v| Some((*v).to_owned()))
            .chain([None])
            .collect()
    };
    assert_eq!(
        column("event_id"),
        ["v4", "v6", "none"].map(|v| Some(v.to_owned()))
    );
    assert_eq!(column("country"), some(["US", "DE"]));
    assert_eq!(column("region"), some(["CA", "BE"]));
    assert_eq!(column("city"), some(["San Francisco", "Berlin"]));
    assert_eq!(column("browser"), ["Chrome"; 3].map(|v| Some(v.to_owned())));
    assert_eq!(
        column("device_type"),
        ["desktop"; 3].map(|v| Some(v.to_owned()))
    );
}
