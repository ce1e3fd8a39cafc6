//! The receiver's own Kinesis writer (the Rust SDK through `adpipe_aws::KinesisStream`)
//! against the sink: shard listing, aggregated puts placed by explicit hash key, throttling
//! answered per entry, and the counters `GET /stats` reports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use adpipe_core::kpl::{Aggregator, MAX_RECORD_BYTES};
use adpipe_core::shard::{ShardMap, hash_key};
use adpipe_core::stream::{PutEntry, PutOutcome, StreamWriter};
use adpipe_kinesis_sink::api::Sink;
use adpipe_kinesis_sink::ledger::Ledger;
use adpipe_kinesis_sink::server::{ServeOptions, serve};
use adpipe_kinesis_sink::throttle::Throttle;

const STREAM: &str = "ads-acme-video";

async fn start(throttle: bool) -> (String, adpipe_aws::KinesisStream) {
    let ledger = Ledger::new(STREAM, 4, None);
    let throttle = throttle.then(|| Throttle::new(4, Instant::now()));
    let sink = Arc::new(Mutex::new(Sink::new(ledger, throttle)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        sink,
        ServeOptions::default(),
        std::future::pending(),
    ));
    let config = adpipe_testkit::sdk_config_for(&endpoint).await;
    let client = adpipe_aws::config::kinesis_client(&config);
    (endpoint, adpipe_aws::KinesisStream::new(client, STREAM))
}

async fn stats(endpoint: &str) -> serde_json::Value {
    http_get(&format!("{endpoint}/stats")).await
}

/// A plain HTTP GET over a TCP socket, so the test needs no HTTP client of its own.
async fn http_get(url: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn the_receiver_writer_lists_shards_and_puts_aggregates_on_them() {
    let (endpoint, stream) = start(false).await;
    let shards = stream.shards().await.unwrap();
    assert_eq!(shards.len(), 4);
    assert!(shards.iter().all(|s| s.open));
    let map = ShardMap::new(&shards);
    // One aggregate per shard, of keys that belong there, sent as the producer sends them.
    let mut per_shard: Vec<Aggregator> =
        (0..4).map(|_| Aggregator::new(MAX_RECORD_BYTES)).collect();
    for i in 0..200 {
        let key = format!("sess-{i}");
        let shard = map.shard_for(hash_key(&key)).unwrap();
        let index = shards.iter().position(|s| s.id == shard.id).unwrap();
        let data = format!(r#"{{"event_id":"e-{i}"}}"#);
        per_shard[index].try_add(&key, data.as_bytes()).unwrap();
    }
    let entries: Vec<PutEntry> = per_shard
        .iter_mut()
        .zip(&shards)
        .map(|(aggregator, shard)| {
            let record = aggregator.finish().unwrap();
            PutEntry {
                partition_key: record.partition_key,
                explicit_hash_key: map.explicit_hash_key_for(&shard.id),
                data: record.data,
            }
        })
        .collect();
    let outcomes = stream.put(&entries).await.unwrap();
    for (outcome, shard) in outcomes.iter().zip(&shards) {
        match outcome {
            PutOutcome::Accepted { shard_id, .. } => assert_eq!(shard_id, &shard.id),
            other => panic!("not accepted: {other:?}"),
        }
    }
    let stats = stats(&endpoint).await;
    assert_eq!(stats["calls"]["PutRecords"], 1);
    assert_eq!(stats["records"], 4);
    assert_eq!(stats["user_records"], 200);
    assert_eq!(stats["aggregated_user_records"], 200);
    assert_eq!(stats["misplaced_user_records"], 0);
    assert_eq!(stats["billed_units"], 4);
    assert!(stats["calls"]["ListShards"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn entries_over_a_shard_limit_fail_alone_and_retryably() {
    let (endpoint, stream) = start(true).await;
    let big = bytes::Bytes::from(vec![b'x'; 600 * 1024]);
    let entry = PutEntry {
        partition_key: "k".to_owned(),
        explicit_hash_key: Some(0),
        data: big,
    };
    let outcomes = stream.put(&[entry.clone(), entry]).await.unwrap();
    assert!(matches!(outcomes[0], PutOutcome::Accepted { .. }));
    assert!(matches!(
        outcomes[1],
        PutOutcome::Failed {
            retryable: true,
            ..
        }
    ));
    let stats = stats(&endpoint).await;
    assert_eq!(stats["throttled_records"], 1);
    assert_eq!(stats["records"], 1);
}
