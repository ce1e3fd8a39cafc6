//! `KinesisStream` and the stream admin helpers: shard-aware KPL puts land where predicted,
//! read back whole, and a 2 → 4 reshard is reported and read the way a consumer group needs.

use std::collections::BTreeMap;

use adpipe_aws::KinesisStream;
use adpipe_aws::config::kinesis_client;
use adpipe_aws::kinesis::{MIN_GET_RECORDS_INTERVAL, admin};
use adpipe_core::event::EpochMillis;
use adpipe_core::kpl::{self, AddError, Aggregator};
use adpipe_core::shard::{ShardMap, hash_key};
use adpipe_core::stream::{
    PutEntry, PutOutcome, Shard, StartPosition, StreamError, StreamReader, StreamRecord,
    StreamWriter,
};
use bytes::Bytes;

use crate::support::{moto, unique};

/// Small aggregates, so that every shard gets several of them.
const AGGREGATE_BYTES: usize = 2048;
/// Records asked for per read: fewer than a shard holds, so reads continue from a cursor.
const READ_LIMIT: usize = 3;

async fn client() -> aws_sdk_kinesis::Client {
    kinesis_client(&moto().sdk_config().await)
}

/// User records `(partition key, body)` numbered from `first`.
fn user_records(first: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (first..first + count)
        .map(|i| {
            let body = format!(r#"{{"event_id":"e{i}","ad_session_id":"session-{i}"}}"#);
            (format!("session-{i}"), body.into_bytes())
        })
        .collect()
}

/// Aggregates `records` per predicted shard, as the producer does: each aggregate holds the
/// records of one shard and goes there by an explicit hash key. Returns the entries and, per
/// entry, the shard it must land on.
fn aggregate(map: &ShardMap, records: &[(String, Vec<u8>)]) -> Vec<(PutEntry, String)> {
    let mut by_shard: BTreeMap<String, Vec<&(String, Vec<u8>)>> = BTreeMap::new();
    for record in records {
        let shard = map.shard_for(hash_key(&record.0)).unwrap();
        by_shard.entry(shard.id.clone()).or_default().push(record);
    }
    let mut entries = Vec::new();
    for (shard_id, records) in by_shard {
        let explicit_hash_key = map.explicit_hash_key_for(&shard_id);
        let mut aggregator = Aggregator::new(AGGREGATE_BYTES);
        let mut finish = |aggregator: &mut Aggregator| {
            let aggregate = aggregator.finish().unwrap();
            let entry = PutEntry {
                partition_key: aggregate.partition_key,
                explicit_hash_key,
                data: aggregate.data,
            };
            entries.push((entry, shard_id.clone()));
        };
        for (key, body) in records {
            match aggregator.try_add(key, body) {
                Ok(()) => {}
                Err(AddError::Full) => {
                    finish(&mut aggregator);
                    aggregator.try_add(key, body).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        finish(&mut aggregator);
    }
    entries
}

/// Puts `entries` and checks that each one was accepted on the shard it was meant for.
async fn put_on_predicted_shards(stream: &KinesisStream, entries: &[(PutEntry, String)]) {
    let batch: Vec<PutEntry> = entries.iter().map(|(entry, _)| entry.clone()).collect();
    let outcomes = stream.put(&batch).await.unwrap();
    assert_eq!(outcomes.len(), entries.len());
    for ((_, predicted), outcome) in entries.iter().zip(&outcomes) {
        match outcome {
            PutOutcome::Accepted { shard_id, .. } => assert_eq!(shard_id, predicted),
            PutOutcome::Failed { code, message, .. } => panic!("{code}: {message}"),
        }
    }
}

/// Reads a shard from the trim horizon until a read comes back empty or at the shard's end;
/// returns the records and whether the end was reached.
async fn read_all(stream: &KinesisStream, shard_id: &str) -> (Vec<StreamRecord>, bool) {
    let mut records: Vec<StreamRecord> = Vec::new();
    let mut from = StartPosition::TrimHorizon;
    loop {
        let batch = stream.read(shard_id, &from, READ_LIMIT).await.unwrap();
        assert!(batch.records.len() <= READ_LIMIT);
        let done = batch.records.is_empty() || batch.shard_end;
        if let Some(last) = batch.records.last() {
            from = StartPosition::After(last.sequence.clone());
        }
        records.extend(batch.records);
        if done {
            return (records, batch.shard_end);
        }
    }
}

/// The user records inside stream records, each checked to belong to `shard`.
fn user_records_of(shard: &Shard, records: &[StreamRecord]) -> Vec<(String, Vec<u8>)> {
    records
        .iter()
        .flat_map(|record| kpl::deaggregate(&record.data, &record.partition_key).unwrap())
        .inspect(|user| {
            assert!(
                shard.owns(hash_key(&user.partition_key)),
                "{} read from {}, which does not own its hash key",
                user.partition_key,
                shard.id
            );
        })
        .map(|user| (user.partition_key, user.data.to_vec()))
        .collect()
}

#[tokio::test]
async fn aggregated_records_land_on_their_predicted_shard_and_read_back() {
    let client = client().await;
    let name = unique("put-read");
    let summary = admin::create_stream(&client, &name, Some(2), 48)
        .await
        .unwrap();
    assert_eq!((summary.open_shards, summary.retention_hours), (2, 48));
    assert!(summary.active && !summary.on_demand);
    // Idempotent: the second call finds the stream as it is.
    assert_eq!(
        admin::create_stream(&client, &name, Some(2), 48)
            .await
            .unwrap(),
        summary
    );

    let stream = KinesisStream::new(client, &name);
    let shards = StreamWriter::shards(&stream).await.unwrap();
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| s.open && s.parent_shard_id.is_none()));
    let map = ShardMap::new(&shards);

    let started = EpochMillis::now();
    let sent = user_records(0, 200);
    let entries = aggregate(&map, &sent);
    assert!(entries.len() > 4, "expected several aggregates per shard");
    put_on_predicted_shards(&stream, &entries).await;

    let mut received = Vec::new();
    for shard in &shards {
        let (records, shard_end) = read_all(&stream, &shard.id).await;
        assert!(!shard_end, "an open shard has no end");
        assert!(records.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert!(records.iter().all(|r| r.arrived_at.0 >= started.0 - 60_000));
        let users = user_records_of(shard, &records);
        assert!(!users.is_empty(), "{} got no records", shard.id);
        received.extend(users);
    }
    let mut expected = sent.clone();
    expected.sort();
    received.sort();
    assert_eq!(received, expected);

    // A plain record without explicit hash key goes where its partition key's MD5 says, and
    // a reader caught up on that shard gets exactly it through its cached iterator.
    let key = "session-plain";
    let target = map.shard_for(hash_key(key)).unwrap().clone();
    let (before, _) = read_all(&stream, &target.id).await;
    let tip = StartPosition::After(before.last().unwrap().sequence.clone());
    assert!(
        StreamReader::read(&stream, &target.id, &tip, 10)
            .await
            .unwrap()
            .records
            .is_empty()
    );
    let plain = PutEntry {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: Bytes::from_static(b"{\"event_id\":\"plain\"}"),
    };
    put_on_predicted_shards(&stream, &[(plain.clone(), target.id.clone())]).await;
    let batch = StreamReader::read(&stream, &target.id, &tip, 10)
        .await
        .unwrap();
    assert_eq!(batch.records.len(), 1);
    assert_eq!(
        (
            batch.records[0].partition_key.as_str(),
            &batch.records[0].data
        ),
        (key, &plain.data)
    );
    assert_eq!(batch.millis_behind_latest, Some(0));
}

#[tokio::test]
async fn a_missing_stream_is_not_found() {
    let stream = KinesisStream::new(client().await, unique("missing"));
    let err = StreamWriter::shards(&stream).await.unwrap_err();
    assert!(matches!(err, StreamError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn resharding_2_to_4_closes_parents_that_read_to_their_end() {
    let client = client().await;
    let name = unique("reshard");
    admin::create_stream(&client, &name, Some(2), 24)
        .await
        .unwrap();
    let stream = KinesisStream::new(client.clone(), &name);
    let parents = StreamReader::shards(&stream).await.unwrap();
    let before = user_records(0, 60);
    put_on_predicted_shards(&stream, &aggregate(&ShardMap::new(&parents), &before)).await;

    let summary = admin::update_shard_count(&client, &name, 4).await.unwrap();
    assert_eq!(summary.open_shards, 4);
    let shards = StreamReader::shards(&stream).await.unwrap();
    assert_eq!(shards.len(), 6);
    for parent in &parents {
        let listed = shards.iter().find(|s| s.id == parent.id).unwrap();
        assert!(!listed.open, "{} is still open", parent.id);
        let mut children: Vec<&Shard> = shards
            .iter()
            .filter(|s| s.parent_shard_id.as_deref() == Some(parent.id.as_str()))
            .collect();
        children.sort_by_key(|s| s.starting_hash_key);
        assert_eq!(children.len(), 2, "children of {}", parent.id);
        assert!(
            children
                .iter()
                .all(|c| c.open && c.adjacent_parent_shard_id.is_none())
        );
        // The children split the parent's hash key range between them, without gap or overlap.
        assert_eq!(children[0].starting_hash_key, parent.starting_hash_key);
        assert_eq!(
            children[0].ending_hash_key + 1,
            children[1].starting_hash_key
        );
        assert_eq!(children[1].ending_hash_key, parent.ending_hash_key);
    }

    // Writes after the reshard land on the children the new shard map predicts.
    let map = ShardMap::new(&shards);
    assert_eq!(map.shards().len(), 4);
    let after = user_records(1000, 80);
    put_on_predicted_shards(&stream, &aggregate(&map, &after)).await;

    // Each closed parent holds exactly its records from before and reaches its end; reading
    // again from there answers "end" at once.
    let mut from_parents = Vec::new();
    for parent in &parents {
        let (records, shard_end) = read_all(&stream, &parent.id).await;
        assert!(shard_end, "{} never reached its end", parent.id);
        from_parents.extend(user_records_of(parent, &records));
        let tip = StartPosition::After(records.last().unwrap().sequence.clone());
        let again = StreamReader::read(&stream, &parent.id, &tip, 10)
            .await
            .unwrap();
        assert!(again.shard_end && again.records.is_empty());
    }
    let mut expected = before.clone();
    expected.sort();
    from_parents.sort();
    assert_eq!(from_parents, expected);

    let mut from_children = Vec::new();
    for child in map.shards() {
        let (records, shard_end) = read_all(&stream, &child.id).await;
        assert!(!shard_end);
        from_children.extend(user_records_of(child, &records));
    }
    let mut expected = after.clone();
    expected.sort();
    from_children.sort();
    assert_eq!(from_children, expected);
}

#[tokio::test]
async fn reads_of_one_shard_keep_to_five_per_second() {
    let client = client().await;
    let name = unique("pace");
    admin::create_stream(&client, &name, Some(1), 24)
        .await
        .unwrap();
    let stream = KinesisStream::new(client, &name);
    let shard = StreamReader::shards(&stream).await.unwrap().remove(0);
    let reads = 4;
    let started = std::time::Instant::now();
    for _ in 0..reads {
        let batch = StreamReader::read(&stream, &shard.id, &StartPosition::TrimHorizon, 10)
            .await
            .unwrap();
        assert!(batch.records.is_empty() && !batch.shard_end);
    }
    assert!(started.elapsed() >= MIN_GET_RECORDS_INTERVAL * (reads - 1));
}
