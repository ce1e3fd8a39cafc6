//! Micro-benchmarks of the two hot paths, per event, on realistic ~300-byte acme-video
//! events:
//!
//! * receiver: partner JSON batch → map + validate → stream JSON → KPL aggregate;
//! * deliverer: KPL record → de-aggregate + decode → enrich (user agent) → zstd Parquet.
//!
//! `make bench` runs them; the numbers of a run are recorded in `bench/results/`.

// Benchmark inputs are constants built once; failing to build them is a bug to see at once.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use adpipe_core::enrich::Enricher;
use adpipe_core::event::EpochMillis;
use adpipe_core::kpl::Aggregator;
use adpipe_core::source::{Decoded, InboundRequest, Mapper};
use adpipe_core::spec::{Enrichment, PipelineDocument};
use adpipe_core::stream::{SequenceNumber, StreamRecord};
use adpipe_deliverer::decode::{Split, decode};
use adpipe_deliverer::parquet_file::ParquetFile;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 20;
const DELIVERER_EVENTS: usize = 10_000;

fn acme_video() -> PipelineDocument {
    adpipe_core::validate::parse(include_str!("../../examples/pipelines/acme-video.yaml"))
        .expect("the shipped example is valid")
        .remove(0)
}

fn acme_batch(n: usize, now: EpochMillis) -> Vec<u8> {
    let events: Vec<_> = (0..n)
        .map(|i| serde_json::json!({
            "id": format!("evt-{i:08}-3f9a2c"), "type": "imp", "ts": now.0 - 1500,
            "session": format!("sess-{:06}", i % 977), "campaign": "cmp-2026-q4-video",
            "placement": "plc-homepage-top", "creative": "crv-15s-bumper-v2",
            "ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "ip": "203.0.113.77", "deal": "pmp-4471"
        }))
        .collect();
    serde_json::to_vec(&events).expect("serialisable")
}

fn receiver_path(c: &mut Criterion) {
    let doc = acme_video();
    let mapper = Mapper::new(&doc.spec.partner, &doc.spec.source);
    let now = EpochMillis::now();
    let body = acme_batch(BATCH, now);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let mut group = c.benchmark_group("receiver");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("map_validate_encode_aggregate_20", |b| {
        let mut aggregator = Aggregator::new(1000 * 1024);
        b.iter(|| {
            let request = InboundRequest {
                method: &http::Method::POST,
                route: "events",
                query: "",
                headers: &headers,
                body: &body,
                client_ip: None,
                received_at: now,
            };
            let Ok(Decoded::Events { results, .. }) =
                doc.spec.source.format.decode(&request, &mapper, None)
            else {
                panic!("the batch decodes");
            };
            for event in results.into_iter().flatten() {
                let data = event.to_stream_json();
                if aggregator.try_add(event.partition_key(), &data).is_err() {
                    black_box(aggregator.finish());
                    aggregator
                        .try_add(event.partition_key(), &data)
                        .expect("fits an empty aggregate");
                }
            }
        });
    });
    group.finish();
}

fn deliverer_path(c: &mut Criterion) {
    let doc = acme_video();
    let mapper = Mapper::new(&doc.spec.partner, &doc.spec.source);
    let now = EpochMillis::now();
    let body = acme_batch(DELIVERER_EVENTS, now);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let request = InboundRequest {
        method: &http::Method::POST,
        route: "events",
        query: "",
        headers: &headers,
        body: &body,
        client_ip: None,
        received_at: now,
    };
    let Ok(Decoded::Events { results, .. }) =
        doc.spec.source.format.decode(&request, &mapper, None)
    else {
        panic!("the batch decodes");
    };
    let mut records = Vec::new();
    let mut aggregator = Aggregator::new(1000 * 1024);
    let seal = |aggregator: &mut Aggregator, records: &mut Vec<StreamRecord>| {
        if let Some(agg) = aggregator.finish() {
            records.push(StreamRecord {
                sequence: SequenceNumber::from_u64(records.len() as u64),
                partition_key: agg.partition_key,
                data: agg.data,
                arrived_at: now,
            });
        }
    };
    for event in results.into_iter().flatten() {
        let data = event.to_stream_json();
        if aggregator.try_add(event.partition_key(), &data).is_err() {
            seal(&mut aggregator, &mut records);
            aggregator
                .try_add(event.partition_key(), &data)
                .expect("fits an empty aggregate");
        }
    }
    seal(&mut aggregator, &mut records);
    let enricher = Enricher::new(&[Enrichment::UserAgent], None).expect("no database needed");

    let mut group = c.benchmark_group("deliverer");
    group.throughput(Throughput::Elements(DELIVERER_EVENTS as u64));
    group.sample_size(20);
    group.bench_function("deaggregate_decode_enrich_parquet_10k", |b| {
        b.iter(|| {
            let mut file = ParquetFile::new().expect("schema is valid");
            // A worker's caches, empty at the start of each iteration as at a worker's start.
            let mut enricher = enricher.caching();
            for record in &records {
                let split = Split::of(record);
                let mut decoded = decode("shardId-000000000000", "acme-video", record, &split);
                for event in &mut decoded.events {
                    enricher.enrich(event);
                }
                file.write(&decoded.events).expect("encodes");
            }
            black_box(file.finish().expect("finishes"))
        });
    });
    group.finish();
}

criterion_group!(benches, receiver_path, deliverer_path);
criterion_main!(benches);
