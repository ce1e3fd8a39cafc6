//! The KPL codec against a reader and writer no one here wrote: the Python `aws-kinesis-agg`
//! package, driven by `tests/python/kpl_interop.py` in the virtualenv that
//! `scripts/python-env.sh` builds.
//!
//! ```text
//! Aggregator ─▶ JSON lines ─▶ aws_kinesis_agg.deaggregator ─▶ JSON ─▶ compare with the input
//! aws_kinesis_agg.aggregator ─▶ JSON lines (aggregates + their user records) ─▶ deaggregate
//! ```
#![cfg(feature = "external-tests")]
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use adpipe_core::kpl::{self, AddError, Aggregator};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// Budget of the aggregates written here: small enough for several aggregates, large enough
/// that some user records need multi-byte length varints.
const AGGREGATE_BYTES: usize = 256 * 1024;

/// Runs `tests/python/kpl_interop.py` with `args`; fails the test if the script fails.
fn run_script(args: &[&Path]) {
    let args: Vec<&str> = args.iter().map(|p| p.to_str().unwrap()).collect();
    adpipe_testkit::run_python("kpl_interop.py", &args);
}

/// xorshift64*: deterministic sizes and bytes without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// User records as (partition key, data).
type Records = Vec<(String, Vec<u8>)>;

/// A few hundred user records: repeated and unique keys, multi-byte UTF-8 keys, binary data
/// of sizes from empty to 100 KB.
fn user_records() -> Records {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let keys = [
        "session-1",
        "session-2",
        "séance-ü",
        "セッション",
        "🦀",
        "k",
    ];
    let sizes = [0, 1, 50, 127, 128, 300, 4_000, 100_000];
    (0..300)
        .map(|i| {
            let key = if i % 3 == 0 {
                format!("event-{i}-é")
            } else {
                (*rng.pick(&keys)).to_owned()
            };
            let len = *rng.pick(&sizes);
            let data = (0..len).map(|_| rng.next() as u8).collect();
            (key, data)
        })
        .collect()
}

/// A user record as the script writes it: key, explicit hash key, data.
fn user_record(value: &Value) -> Option<(String, Option<String>, Vec<u8>)> {
    let key = value["partition_key"].as_str()?.to_owned();
    let explicit_hash_key = match &value["explicit_hash_key"] {
        Value::Null => None,
        other => Some(other.as_str()?.to_owned()),
    };
    let data = STANDARD.decode(value["data"].as_str()?).ok()?;
    Some((key, explicit_hash_key, data))
}

#[test]
fn python_reads_what_the_aggregator_writes() {
    let records = user_records();
    let mut aggregates: Vec<(kpl::AggregatedRecord, Records)> = Vec::new();
    let mut aggregator = Aggregator::new(AGGREGATE_BYTES);
    let mut pending = Vec::new();
    for (i, (key, data)) in records.iter().enumerate() {
        if let Err(AddError::Full) = aggregator.try_add(key, data) {
            aggregates.push((aggregator.finish().unwrap(), std::mem::take(&mut pending)));
            aggregator.try_add(key, data).unwrap();
        }
        pending.push((key.clone(), data.clone()));
        // One aggregate of a single user record, as the receiver sends when traffic is low.
        if i == 0 {
            aggregates.push((aggregator.finish().unwrap(), std::mem::take(&mut pending)));
        }
    }
    aggregates.push((aggregator.finish().unwrap(), pending));
    assert!(aggregates.len() > 3, "only {} aggregates", aggregates.len());

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("aggregates.jsonl");
    let output = dir.path().join("user-records.jsonl");
    let lines: String = aggregates
        .iter()
        .map(|(record, _)| {
            assert!(record.data.len() + record.partition_key.len() <= AGGREGATE_BYTES);
            let line = json!({
                "partition_key": record.partition_key,
                "data": STANDARD.encode(&record.data),
            });
            format!("{line}\n")
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    run_script(&[Path::new("deaggregate"), &input, &output]);

    let read = std::fs::read_to_string(&output).unwrap();
    let read: Vec<Vec<Value>> = read
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(read.len(), aggregates.len());
    for (n, (users, (record, expected))) in read.iter().zip(&aggregates).enumerate() {
        assert_eq!(users.len(), record.user_records, "aggregate {n}");
        let got: Records = users
            .iter()
            .map(|user| {
                let (key, explicit_hash_key, data) = user_record(user).unwrap();
                assert_eq!(explicit_hash_key, None, "aggregate {n}");
                (key, data)
            })
            .collect();
        assert_eq!(&got, expected, "aggregate {n}");
    }
    assert_eq!(read.iter().map(Vec::len).sum::<usize>(), records.len());
}

#[test]
fn deaggregate_reads_what_python_writes() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("aggregates.jsonl");
    run_script(&[Path::new("aggregate"), &output]);

    let written = std::fs::read_to_string(&output).unwrap();
    let mut total = 0;
    let mut with_explicit_hash_key = 0;
    let mut aggregates = 0;
    for line in written.lines() {
        let aggregate: Value = serde_json::from_str(line).unwrap();
        let (partition_key, _, data) = user_record(&aggregate).unwrap();
        assert!(data.starts_with(&kpl::MAGIC));
        let got = kpl::deaggregate(&data, &partition_key).unwrap();
        let expected = aggregate["user_records"].as_array().unwrap();
        assert_eq!(got.len(), expected.len(), "aggregate {aggregates}");
        for (user, want) in got.iter().zip(expected) {
            let (key, explicit_hash_key, data) = user_record(want).unwrap();
            assert_eq!(user.partition_key, key);
            assert_eq!(user.explicit_hash_key, explicit_hash_key);
            assert_eq!(user.data.as_ref(), data.as_slice());
            with_explicit_hash_key += usize::from(user.explicit_hash_key.is_some());
        }
        total += got.len();
        aggregates += 1;
    }
    assert_eq!(total, 400, "the script writes 400 user records");
    assert!(aggregates > 3, "only {aggregates} aggregates");
    assert!(with_explicit_hash_key > 0);
}
