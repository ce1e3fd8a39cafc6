//! The soak run of the production path on moto, behind the fault-injecting proxy: senders
//! push [`EVENTS`] acknowledged events through `adpipe-receiver` into a 4-shard stream while
//! three `adpipe-deliverer` workers deliver them to S3, a random worker is killed with
//! SIGKILL and restarted [`KILLS`] times, and the proxy throttles, fails entries and answers
//! S3 writes with `503 SlowDown`.
//!
//! ```text
//! senders ─durable 200s─▶ receiver ─▶ proxy ─▶ moto Kinesis ─▶ proxy ─▶ worker-1..3 ─▶ proxy ─▶ moto S3
//!                        throttles, failed entries ─┘   read throttles ─┘   kill -9, restart ─┘  503s
//! ```
//!
//! Every acknowledged event must be in S3 exactly once, and no event twice.
#![cfg(feature = "external-tests")]
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adpipe_testkit::fault_proxy::Faults;
use support::aws::AwsPipeline;
use support::*;

/// Acknowledged events the run must deliver.
const EVENTS: usize = 100_000;
/// Events per durable request.
const BATCH: usize = 100;
/// Concurrent senders.
const SENDERS: usize = 3;
/// Deliverer workers.
const WORKERS: usize = 3;
/// SIGKILLs during the run, spread evenly over the acknowledged events.
const KILLS: usize = 20;
/// Seed of the PRNG that picks the worker to kill: the same run every time.
const SEED: u64 = 0x5EED_50A6_2026_0001;

/// xorshift64*: deterministic picks without a crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Sends durable batches until `EVENTS` events are acknowledged in all, recording the ids
/// of every batch answered `200`; other answers (e.g. `503` while buffers are full) leave
/// their events unacknowledged and the next batch gets new ids.
fn sender(
    base: String,
    tag: usize,
    acked: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        for request in 0.. {
            if count.load(Ordering::SeqCst) >= EVENTS {
                break;
            }
            let ids: Vec<String> = (0..BATCH)
                .map(|i| format!("soak{tag}-{request}-{i}"))
                .collect();
            let response = post_acme_batch(&client, &base, &ids);
            if response.status() != 200 {
                continue;
            }
            // A `200` acknowledges the accepted events; rejected ones are listed by index.
            let answer: serde_json::Value = response.json().unwrap();
            let rejected: Vec<u64> = answer["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["index"].as_u64())
                .collect();
            let accepted: Vec<String> = ids
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !rejected.contains(&(*i as u64)))
                .map(|(_, id)| id)
                .collect();
            count.fetch_add(accepted.len(), Ordering::SeqCst);
            acked.lock().unwrap().extend(accepted);
        }
    })
}

/// Every event id on the stream, read back from the start of every shard.
fn ids_on_stream(pipeline: &AwsPipeline) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for (key, data) in pipeline.stream_records() {
        for user in adpipe_core::kpl::deaggregate(&data, &key).unwrap() {
            let event: serde_json::Value = serde_json::from_slice(&user.data).unwrap();
            ids.insert(event["event_id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

#[test]
fn soak_survives_twenty_sigkills_and_injected_faults() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // The issue's "30% injected throttling": 15% of PutRecords calls throttled whole plus 15%
    // of the entries of the others failed, so about 30% of the puts are affected in all.
    let faults = Faults {
        put_throttle: 0.15,
        put_entry_failure: 0.15,
        read_throttle: 0.3,
        s3_unavailable: 0.05,
    };
    let pipeline = AwsPipeline::new(dir.path(), 4, Some(faults));
    let (mut receiver, base) = pipeline.receiver();
    let mut workers: Vec<_> = (1..=WORKERS)
        .map(|n| pipeline.deliverer(&format!("worker-{n}")).0)
        .collect();

    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|tag| sender(base.clone(), tag, acked.clone(), count.clone()))
        .collect();
    let acked_now = || count.load(Ordering::SeqCst);

    // Kill k comes once k/(KILLS+1) of the events are acknowledged; the worker stays dead
    // for half an interval of acknowledgements, so its leases expire or are taken meanwhile.
    let interval = EVENTS / (KILLS + 1);
    let mut rng = Rng(SEED);
    for kill in 1..=KILLS {
        wait_for(
            &format!("{} acknowledged events", kill * interval),
            Duration::from_secs(120),
            Duration::from_millis(50),
            || acked_now() >= kill * interval,
        );
        let victim = rng.below(WORKERS);
        workers[victim].kill();
        let target = acked_now() + interval / 2;
        wait_for(
            &format!("{target} acknowledged events"),
            Duration::from_secs(120),
            Duration::from_millis(50),
            || acked_now() >= target,
        );
        workers[victim].restart();
        eprintln!(
            "kill {kill}: worker-{} at {:.1?}, {} events acknowledged",
            victim + 1,
            started.elapsed(),
            acked_now()
        );
    }
    for sender in senders {
        sender.join().unwrap();
    }
    let sent_in = started.elapsed();

    let acked = acked.lock().unwrap().clone();
    let all_in_s3 = poll_until(Duration::from_secs(240), Duration::from_secs(5), || {
        let counts = pipeline.event_id_counts();
        acked.iter().all(|id| counts.contains_key(id))
    });
    let delivered_in = started.elapsed();
    assert!(receiver.terminate().success(), "{}", receiver.log());
    for worker in &mut workers {
        assert!(worker.terminate().success(), "{}", worker.log());
    }

    let counts = pipeline.event_id_counts();
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let missing = acked.iter().filter(|id| !counts.contains_key(*id)).count();
    let injected = &pipeline.proxy.as_ref().unwrap().injected;
    let injected: BTreeMap<&str, u64> = [
        (
            "put_throttles",
            injected.put_throttles.load(Ordering::Relaxed),
        ),
        (
            "failed_entries",
            injected.failed_entries.load(Ordering::Relaxed),
        ),
        (
            "read_throttles",
            injected.read_throttles.load(Ordering::Relaxed),
        ),
        ("s3_errors", injected.s3_errors.load(Ordering::Relaxed)),
    ]
    .into();
    eprintln!(
        "{} events acknowledged in {sent_in:.1?} ({:.0} events/s), delivery waited until \
         {delivered_in:.1?}; {} ids in S3, {missing} lost, {} duplicated; {KILLS} SIGKILLs; \
         injected {injected:?}",
        acked.len(),
        acked.len() as f64 / sent_in.as_secs_f64(),
        counts.len(),
        duplicated.len(),
    );
    assert!(
        duplicated.is_empty(),
        "{} events written twice, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(5)]
    );
    if !all_in_s3 {
        let on_stream = ids_on_stream(&pipeline);
        let lost: Vec<&String> = acked
            .iter()
            .filter(|id| !counts.contains_key(*id))
            .collect();
        let not_on_stream = lost.iter().filter(|id| !on_stream.contains(**id)).count();
        panic!(
            "{missing} acknowledged events are not in S3 ({not_on_stream} of them not on the \
             stream either), e.g. {:?}",
            &lost[..lost.len().min(10)]
        );
    }
    assert!(acked.len() >= EVENTS);
    for (kind, n) in &injected {
        assert!(*n > 0, "no {kind} injected");
    }
}
