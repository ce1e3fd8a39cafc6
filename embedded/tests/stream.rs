//! The embedded stream through the core traits, as the receiver and the deliverer use it,
//! plus the documented on-disk layout for recovery scenarios.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// NOTE: marks the helpers below as test code, so they may unwrap like the tests (clippy.toml).
#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adpipe_core::event::EpochMillis;
use adpipe_core::shard::hash_key;
use adpipe_core::stream::{
    PutEntry, PutOutcome, SequenceNumber, StartPosition, StreamError, StreamReader, StreamRecord,
    StreamWriter,
};
use adpipe_embedded::{EmbeddedStream, OpenError};
use bytes::Bytes;

/// Generous bound for an awaited event that should happen at once.
const WAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn entry(key: &str, data: &str) -> PutEntry {
    PutEntry {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: Bytes::from(data.to_owned()),
    }
}

fn accepted(outcome: &PutOutcome) -> (String, SequenceNumber) {
    match outcome {
        PutOutcome::Accepted { shard_id, sequence } => (shard_id.clone(), sequence.clone()),
        PutOutcome::Failed { message, .. } => panic!("entry failed: {message}"),
    }
}

fn log_path(root: &Path, stream: &str, shard: &str) -> PathBuf {
    root.join("streams")
        .join(stream)
        .join(format!("{shard}.log"))
}

async fn read_all(stream: &EmbeddedStream, shard: &str) -> Vec<StreamRecord> {
    let mut records = Vec::new();
    let mut from = StartPosition::TrimHorizon;
    loop {
        let batch = stream.read(shard, &from, 7).await.unwrap();
        let Some(last) = batch.records.last() else {
            return records;
        };
        from = StartPosition::After(last.sequence.clone());
        records.extend(batch.records);
    }
}

#[tokio::test]
async fn records_land_on_the_shard_their_hash_key_predicts_and_read_back_in_order() {
    let root = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(root.path(), "ads", 4).unwrap();
    let shards = StreamWriter::shards(&stream).await.unwrap();
    assert_eq!(shards.len(), 4);
    assert!(shards.iter().all(|s| s.open));
    assert_eq!(StreamReader::shards(&stream).await.unwrap(), shards);

    let mut entries: Vec<PutEntry> = (0..200)
        .map(|i| entry(&format!("session-{i}"), &format!("event {i}")))
        .collect();
    entries.push(PutEntry {
        explicit_hash_key: Some(shards[2].starting_hash_key),
        ..entry("session-0", "placed explicitly")
    });
    let before = EpochMillis::now();
    let outcomes = stream.put(&entries).await.unwrap();
    assert_eq!(outcomes.len(), entries.len());

    let mut expected: BTreeMap<String, Vec<(SequenceNumber, &PutEntry)>> = BTreeMap::new();
    for (entry, outcome) in entries.iter().zip(&outcomes) {
        let (shard_id, sequence) = accepted(outcome);
        let hash = entry
            .explicit_hash_key
            .unwrap_or_else(|| hash_key(&entry.partition_key));
        let owner = shards.iter().find(|s| s.owns(hash)).unwrap();
        assert_eq!(shard_id, owner.id, "{}", entry.partition_key);
        expected
            .entry(shard_id)
            .or_default()
            .push((sequence, entry));
    }
    assert_eq!(expected.len(), 4, "200 keys should reach every shard");

    for shard in &shards {
        let records = read_all(&stream, &shard.id).await;
        let want = &expected[&shard.id];
        assert_eq!(records.len(), want.len());
        for (record, (sequence, entry)) in records.iter().zip(want) {
            assert_eq!(&record.sequence, sequence);
            assert_eq!(record.partition_key, entry.partition_key);
            assert_eq!(record.data, entry.data);
            assert!(record.arrived_at >= before && record.arrived_at <= EpochMillis::now());
        }
    }
}

#[tokio::test]
async fn reading_after_a_sequence_number_resumes_there_and_reports_the_lag() {
    let root = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(root.path(), "ads", 2).unwrap();
    let entries: Vec<PutEntry> = (0..10)
        .map(|i| PutEntry {
            explicit_hash_key: Some(0),
            ..entry("k", &i.to_string())
        })
        .collect();
    let outcomes = stream.put(&entries).await.unwrap();
    let (shard, first) = accepted(&outcomes[0]);

    let head = stream
        .read(&shard, &StartPosition::TrimHorizon, 3)
        .await
        .unwrap();
    assert_eq!(head.records.len(), 3);
    assert_eq!(head.records[0].sequence, first);
    assert!(!head.shard_end);
    assert!(head.millis_behind_latest.is_some());

    let after = StartPosition::After(head.records[2].sequence.clone());
    let rest = stream.read(&shard, &after, 100).await.unwrap();
    let data: Vec<&[u8]> = rest.records.iter().map(|r| &r.data[..]).collect();
    assert_eq!(data, [&b"3"[..], b"4", b"5", b"6", b"7", b"8", b"9"]);
    assert_eq!(
        rest.millis_behind_latest,
        Some(0),
        "the batch reached the tip"
    );

    let tip = StartPosition::After(rest.records[6].sequence.clone());
    let empty = stream.read(&shard, &tip, 100).await.unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.millis_behind_latest, Some(0));
}

#[tokio::test]
async fn unknown_shards_and_positions_past_the_end_are_not_found() {
    let root = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    let shard = "shardId-000000000000";
    assert!(matches!(
        stream
            .read("shardId-000000000009", &StartPosition::TrimHorizon, 1)
            .await,
        Err(StreamError::NotFound(_))
    ));
    let beyond = StartPosition::After(SequenceNumber::from_u64(1000));
    assert!(matches!(
        stream.read(shard, &beyond, 1).await,
        Err(StreamError::NotFound(_))
    ));
    let empty = stream
        .read(shard, &StartPosition::TrimHorizon, 1)
        .await
        .unwrap();
    assert!(empty.records.is_empty());
}

#[tokio::test]
async fn entries_kinesis_would_refuse_fail_alone_and_are_not_retryable() {
    let root = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    let too_big = PutEntry {
        data: Bytes::from(vec![0u8; adpipe_embedded::MAX_RECORD_BYTES]),
        ..entry("k", "")
    };
    let outcomes = stream
        .put(&[entry("", "no key"), too_big, entry("ok", "fine")])
        .await
        .unwrap();
    for refused in &outcomes[..2] {
        assert!(matches!(
            refused,
            PutOutcome::Failed { code, retryable: false, .. } if code == "InvalidArgumentException"
        ));
    }
    accepted(&outcomes[2]);
    let records = read_all(&stream, "shardId-000000000000").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data, "fine");
}

#[tokio::test]
async fn records_persist_across_reopen_and_the_layout_is_kept() {
    let root = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(root.path(), "ads", 2).unwrap();
    let shards = StreamWriter::shards(&stream).await.unwrap();
    let first: Vec<_> = stream
        .put(&[entry("a", "one"), entry("b", "two")])
        .await
        .unwrap();
    drop(stream);

    let reopened = EmbeddedStream::open(root.path(), "ads", 5).unwrap();
    assert_eq!(StreamWriter::shards(&reopened).await.unwrap(), shards);
    let second = reopened.put(&[entry("a", "three")]).await.unwrap();
    let (shard_a, seq_one) = accepted(&first[0]);
    let (shard_three, seq_three) = accepted(&second[0]);
    assert_eq!(shard_a, shard_three);
    assert!(seq_three > seq_one);

    let data: Vec<Bytes> = read_all(&reopened, &shard_a)
        .await
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert!(data.contains(&Bytes::from("one")) && data.contains(&Bytes::from("three")));
    let total: usize = {
        let mut n = 0;
        for shard in &shards {
            n += read_all(&reopened, &shard.id).await.len();
        }
        n
    };
    assert_eq!(total, 3);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_on_reopen_and_writing_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let shard = "shardId-000000000000";
    let path = log_path(root.path(), "ads", shard);
    let stream = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    stream
        .put(&[entry("a", "one"), entry("b", "two")])
        .await
        .unwrap();
    drop(stream);
    let good_len = fs::metadata(&path).unwrap().len();

    // Garbage appended after the last frame, as a crashed write could leave.
    let mut log = OpenOptions::new().append(true).open(&path).unwrap();
    log.write_all(b"garbage that is no frame").unwrap();
    drop(log);
    let stream = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(read_all(&stream, shard).await.len(), 2);

    // A frame cut in the middle: the last record was never acknowledged.
    let outcomes = stream
        .put(&[entry("c", "three, to be torn")])
        .await
        .unwrap();
    let (_, torn_at) = accepted(&outcomes[0]);
    drop(stream);
    let log = OpenOptions::new().write(true).open(&path).unwrap();
    log.set_len(fs::metadata(&path).unwrap().len() - 5).unwrap();
    drop(log);

    let stream = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    let records = read_all(&stream, shard).await;
    let data: Vec<&[u8]> = records.iter().map(|r| &r.data[..]).collect();
    assert_eq!(data, [&b"one"[..], b"two"]);
    let outcomes = stream.put(&[entry("d", "four")]).await.unwrap();
    assert_eq!(
        accepted(&outcomes[0]).1,
        torn_at,
        "appends continue where the tear was"
    );
    assert_eq!(read_all(&stream, shard).await.len(), 3);
}

#[tokio::test]
async fn corruption_before_the_tail_refuses_to_open_and_names_file_and_offset() {
    let root = tempfile::tempdir().unwrap();
    let path = log_path(root.path(), "ads", "shardId-000000000000");
    let stream = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    stream
        .put(&[entry("a", "one"), entry("b", "two")])
        .await
        .unwrap();
    drop(stream);
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x55;
    fs::write(&path, &bytes).unwrap();

    let error = EmbeddedStream::open(root.path(), "ads", 1).err().unwrap();
    assert!(matches!(error, OpenError::Corrupt { offset: 0, .. }));
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("offset 0"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_from_many_tasks_are_all_read_exactly_once() {
    const TASKS: usize = 8;
    const PUTS: usize = 25;
    const ENTRIES: usize = 20;
    let root = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(root.path(), "ads", 3).unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let stream = stream.clone();
            tokio::spawn(async move {
                for put in 0..PUTS {
                    let entries: Vec<PutEntry> = (0..ENTRIES)
                        .map(|i| {
                            let id = format!("{task}-{put}-{i}");
                            entry(&id, &id)
                        })
                        .collect();
                    for outcome in stream.put(&entries).await.unwrap() {
                        accepted(&outcome);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let mut seen = BTreeSet::new();
    for shard in StreamReader::shards(&stream).await.unwrap() {
        let records = read_all(&stream, &shard.id).await;
        assert!(records.windows(2).all(|w| w[0].sequence < w[1].sequence));
        for record in records {
            assert_eq!(record.data, record.partition_key.as_bytes());
            assert!(seen.insert(record.partition_key), "read twice");
        }
    }
    assert_eq!(seen.len(), TASKS * PUTS * ENTRIES);
}

#[tokio::test]
async fn a_waiting_reader_wakes_up_when_its_shard_grows() {
    let root = tempfile::tempdir().unwrap();
    let writer = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    // A second handle, as a deliverer opening the stream itself would hold.
    let reader = EmbeddedStream::open(root.path(), "ads", 1).unwrap();
    let shard = "shardId-000000000000";

    let waiting = {
        let reader = reader.clone();
        tokio::spawn(async move {
            reader
                .wait_for_append(shard, &StartPosition::TrimHorizon)
                .await
        })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !waiting.is_finished(),
        "woke up before anything was written"
    );

    let outcomes = writer.put(&[entry("k", "first")]).await.unwrap();
    tokio::time::timeout(WAKE_TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let batch = reader
        .read(shard, &StartPosition::TrimHorizon, 10)
        .await
        .unwrap();
    assert_eq!(batch.records.len(), 1);

    // Waiting after the last record blocks until the next one, not on the existing one.
    let after = StartPosition::After(accepted(&outcomes[0]).1);
    let waiting = {
        let reader = reader.clone();
        let after = after.clone();
        tokio::spawn(async move { reader.wait_for_append(shard, &after).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "woke up for a record already read");
    writer.put(&[entry("k", "second")]).await.unwrap();
    tokio::time::timeout(WAKE_TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let batch = reader.read(shard, &after, 10).await.unwrap();
    assert_eq!(batch.records[0].data, "second");
}
