//! A pipeline on (patched) moto: the stream, the bucket, a pipeline file, and the real
//! `adpipe-receiver` and `adpipe-deliverer` binaries talking to it through the SDK's
//! standard chain — optionally through the fault-injecting proxy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adpipe_testkit::fault_proxy::{FaultProxy, Faults};
use adpipe_testkit::{Moto, free_port, unique};
use arrow::array::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Process, repo};

/// The value of an unlabelled-but-for-partner gauge or counter in a metrics page.
pub fn metric(url: &str, name: &str) -> f64 {
    let page = reqwest::blocking::get(url)
        .and_then(|r| r.text())
        .unwrap_or_default();
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One partner's pipeline on moto.
pub struct AwsPipeline {
    pub moto: Moto,
    pub proxy: Option<FaultProxy>,
    pub dir: PathBuf,
    pub file: PathBuf,
    pub stream: String,
    pub bucket: String,
    pub database: String,
    pub runtime: tokio::runtime::Runtime,
    pub kinesis: aws_sdk_kinesis::Client,
    pub s3: aws_sdk_s3::Client,
    pub glue: aws_sdk_glue::Client,
}

impl AwsPipeline {
    /// Starts moto (and the proxy, when `faults` is given), creates a stream of `shards`
    /// shards and the bucket, and writes the acme-video pipeline pointing at them.
    pub fn new(dir: &Path, shards: u32, faults: Option<Faults>) -> AwsPipeline {
        let moto = Moto::start();
        let proxy = faults.map(|f| FaultProxy::start(&moto.endpoint, f));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = runtime.block_on(moto.sdk_config());
        let kinesis = adpipe_aws::config::kinesis_client(&config);
        let s3 = adpipe_aws::config::s3_client(&config);
        let glue = adpipe_aws::config::glue_client(&config);
        let stream = unique("ads-acme-video");
        let bucket = unique("ads-lake");
        let database = unique("ads").replace('-', "_");
        runtime.block_on(async {
            adpipe_aws::kinesis::admin::create_stream(&kinesis, &stream, Some(shards), 24)
                .await
                .unwrap();
            s3.create_bucket().bucket(&bucket).send().await.unwrap();
        });
        let example =
            std::fs::read_to_string(repo().join("examples/pipelines/acme-video.yaml")).unwrap();
        let yaml = example
            .replace("name: ads-acme-video", &format!("name: {stream}"))
            .replace(&"shards: 2".to_owned(), &format!("shards: {shards}"))
            .replace("bucket: ads-lake", &format!("bucket: {bucket}"))
            .replace("catalog: {database: ads, table: events}", &format!("catalog: {{database: {database}, table: events}}\n    leaseTable: {stream}-leases"));
        let file = dir.join("acme-video.yaml");
        std::fs::write(&file, yaml).unwrap();
        AwsPipeline {
            moto,
            proxy,
            dir: dir.to_owned(),
            file,
            stream,
            bucket,
            database,
            runtime,
            kinesis,
            s3,
            glue,
        }
    }

    /// The endpoint the binaries use: the proxy when there is one.
    fn endpoint(&self) -> String {
        self.proxy
            .as_ref()
            .map_or_else(|| self.moto.endpoint.clone(), |p| p.url.clone())
    }

    /// Starts an `adpipe-receiver`; returns it and its base URL.
    pub fn receiver(&self) -> (Process, String) {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let args = vec![
            "--pipeline".into(),
            self.file.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--secrets-dir".into(),
            repo().join("examples/secrets").display().to_string(),
        ];
        let program = Path::new(env!("CARGO_BIN_EXE_adpipe-receiver"));
        let process = Process::start(
            program,
            "receiver",
            args,
            adpipe_testkit::env_for(&self.endpoint()),
            &self.dir,
            Some(format!("{base}/readyz")),
        );
        (process, base)
    }

    /// Starts an `adpipe-deliverer` worker named `worker`; returns it and its metrics URL.
    pub fn deliverer(&self, worker: &str) -> (Process, String) {
        let metrics = free_port();
        let args = vec![
            "--pipeline".into(),
            self.file.display().to_string(),
            "--worker-id".into(),
            worker.to_owned(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics}"),
            "--flush-interval".into(),
            "1s".into(),
        ];
        let program = Path::new(env!("CARGO_BIN_EXE_adpipe-deliverer"));
        let process = Process::start(
            program,
            worker,
            args,
            adpipe_testkit::env_for(&self.endpoint()),
            &self.dir,
            Some(format!("http://127.0.0.1:{metrics}/healthz")),
        );
        (process, format!("http://127.0.0.1:{metrics}/metrics"))
    }

    /// Resizes the stream to `shards` open shards.
    pub fn reshard(&self, shards: u32) {
        self.runtime
            .block_on(adpipe_aws::kinesis::admin::update_shard_count(
                &self.kinesis,
                &self.stream,
                shards,
            ))
            .unwrap();
    }

    /// Every Parquet object of the lake, by key.
    pub fn parquet_keys(&self) -> Vec<String> {
        self.runtime.block_on(async {
            let mut keys = Vec::new();
            let mut pages = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix("events/")
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for object in page.unwrap().contents() {
                    if let Some(key) = object.key().filter(|k| k.ends_with(".parquet")) {
                        keys.push(key.to_owned());
                    }
                }
            }
            keys
        })
    }

    /// How often each event id occurs across the lake.
    pub fn event_id_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for key in self.parquet_keys() {
            let body = self.runtime.block_on(async {
                let object = self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                object.body.collect().await.unwrap().into_bytes()
            });
            let reader = ParquetRecordBatchReaderBuilder::try_new(body)
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let ids = batch
                    .column_by_name("event_id")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                for id in ids.iter().flatten() {
                    *counts.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
        counts
    }

    /// The Glue partitions of the lake table, as `partner/dt/hour` values.
    pub fn glue_partitions(&self) -> Vec<Vec<String>> {
        self.runtime.block_on(async {
            let answer = self
                .glue
                .get_partitions()
                .database_name(&self.database)
                .table_name("events")
                .send()
                .await
                .unwrap();
            answer
                .partitions()
                .iter()
                .map(|p| p.values().to_vec())
                .collect()
        })
    }
}

/// The metrics page of a receiver [`AwsPipeline::receiver`] started (its `--metrics-listen`).
pub fn receiver_metrics(receiver: &Process) -> String {
    let at = receiver
        .args
        .iter()
        .position(|a| a == "--metrics-listen")
        .unwrap();
    format!("http://{}/metrics", receiver.args[at + 1])
}

/// A Kinesis record as stored: partition key and data.
pub type StoredRecord = (String, Vec<u8>);

impl AwsPipeline {
    /// Every record on the stream, read from the start of each shard (closed ones too) with
    /// GetShardIterator `TRIM_HORIZON` and GetRecords, straight from moto.
    pub fn stream_records(&self) -> Vec<StoredRecord> {
        use aws_sdk_kinesis::types::ShardIteratorType;
        self.runtime.block_on(async {
            let shards = self
                .kinesis
                .list_shards()
                .stream_name(&self.stream)
                .send()
                .await
                .unwrap();
            let mut records = Vec::new();
            for shard in shards.shards() {
                let mut iterator = self
                    .kinesis
                    .get_shard_iterator()
                    .stream_name(&self.stream)
                    .shard_id(shard.shard_id())
                    .shard_iterator_type(ShardIteratorType::TrimHorizon)
                    .send()
                    .await
                    .unwrap()
                    .shard_iterator;
                while let Some(current) = iterator {
                    let page = self
                        .kinesis
                        .get_records()
                        .shard_iterator(current)
                        .send()
                        .await
                        .unwrap();
                    if page.records().is_empty() {
                        break;
                    }
                    records.extend(page.records().iter().map(|r| {
                        (
                            r.partition_key().unwrap().to_owned(),
                            r.data().as_ref().to_vec(),
                        )
                    }));
                    iterator = page.next_shard_iterator;
                }
            }
            records
        })
    }

    /// Writes `records` (partition key, explicit hash key, data) straight to the stream as
    /// another producer would, one `PutRecord` call per record, straight to moto.
    pub fn put_records(&self, records: &[(String, Option<String>, Vec<u8>)]) {
        use aws_sdk_kinesis::primitives::Blob;
        self.runtime.block_on(async {
            for (key, explicit_hash_key, data) in records {
                let answer = self
                    .kinesis
                    .put_record()
                    .stream_name(&self.stream)
                    .partition_key(key)
                    .set_explicit_hash_key(explicit_hash_key.clone())
                    .data(Blob::new(data.clone()))
                    .send()
                    .await;
                answer.unwrap();
            }
        });
    }
}
