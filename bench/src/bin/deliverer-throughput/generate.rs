//! The dataset on disk: the same events twice, as adpipe's deliverer and the baselines read
//! them.
//!
//! ```text
//! dataset::Events ─▶ AdEvent::to_stream_json ─┬─▶ Aggregator per shard (25 KB) ─▶ EmbeddedStream {dir}/stream
//!                                             └─▶ {dir}/events.ndjson, one line per event
//! {dir}/meta.json last: a dataset without it is incomplete and written again
//! ```
//!
//! Events are routed and aggregated as the receiver's producer does it: by the MD5 hash key of
//! the session, one aggregate per shard, put with the shard's explicit hash key.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use adpipe_core::kpl::Aggregator;
use adpipe_core::shard::{ShardMap, hash_key};
use adpipe_core::spec::PipelineDocument;
use adpipe_core::stream::{PutEntry, PutOutcome, StreamWriter};
use adpipe_embedded::EmbeddedStream;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::dataset;

/// Bumped whenever the generator's output changes, so a cached dataset is rebuilt.
const DATASET_FORMAT: u32 = 1;
/// Aggregates of one Kinesis billing unit (25 KB), as the receiver's producer cuts them under
/// steady load.
const AGGREGATE_BYTES: usize = 25 * 1024;
/// Bytes per embedded-stream put: PutRecords' 5 MiB request limit.
const MAX_PUT_BYTES: usize = 5 * 1024 * 1024;
/// The embedded stream's root inside the dataset directory.
pub const STREAM_DIR: &str = "stream";
/// The NDJSON file inside the dataset directory.
pub const NDJSON: &str = "events.ndjson";

/// What `generate` leaves beside the data.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Meta {
    /// [`DATASET_FORMAT`] when written.
    pub format: u32,
    /// Events in the dataset.
    pub events: u64,
    /// The generator's seed.
    pub seed: u64,
    /// Stream records (aggregates) holding them.
    pub records: u64,
    /// Size of the NDJSON file.
    pub ndjson_bytes: u64,
}

/// The embedded stream of the dataset in `dir`, with the pipeline's name and shards.
pub fn open_stream(dir: &Path, doc: &PipelineDocument) -> anyhow::Result<EmbeddedStream> {
    let spec = &doc.spec.stream;
    Ok(EmbeddedStream::open(
        &dir.join(STREAM_DIR),
        &spec.name,
        spec.shards.unwrap_or(1),
    )?)
}

fn meta_path(dir: &Path) -> PathBuf {
    dir.join("meta.json")
}

/// The dataset's description; `None` if there is no complete dataset in `dir`.
pub fn read_meta(dir: &Path) -> Option<Meta> {
    serde_json::from_slice(&fs::read(meta_path(dir)).ok()?).ok()
}

/// Writes `events` events of `seed` under `dir`, unless they are there already; prints the
/// dataset's [`Meta`].
pub async fn generate(dir: &Path, events: u64, seed: u64) -> anyhow::Result<()> {
    if let Some(meta) = read_meta(dir)
        && (meta.format, meta.events, meta.seed) == (DATASET_FORMAT, events, seed)
    {
        println!("{}", serde_json::to_string(&meta)?);
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("failed to clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    let doc = crate::pipeline()?;
    let stream = open_stream(dir, &doc)?;
    let shards = ShardMap::new(&StreamWriter::shards(&stream).await?);
    let mut aggregators: Vec<Aggregator> = shards
        .shards()
        .iter()
        .map(|_| Aggregator::new(AGGREGATE_BYTES))
        .collect();
    let ndjson_path = dir.join(NDJSON);
    let mut ndjson = BufWriter::new(File::create(&ndjson_path)?);
    let mut pending = Pending::default();
    for event in dataset::Events::new(seed, events) {
        let data = event.to_stream_json();
        ndjson.write_all(&data)?;
        ndjson.write_all(b"\n")?;
        let key = event.partition_key();
        let index = shards
            .shards()
            .iter()
            .position(|s| s.owns(hash_key(key)))
            .context("no shard owns the key")?;
        let aggregator = &mut aggregators[index];
        if aggregator.try_add(key, &data).is_err() {
            pending.seal(aggregator, shards.shards()[index].starting_hash_key);
            aggregator.try_add(key, &data)?;
        }
        if pending.bytes >= MAX_PUT_BYTES {
            pending.put(&stream).await?;
        }
    }
    for (aggregator, shard) in aggregators.iter_mut().zip(shards.shards()) {
        pending.seal(aggregator, shard.starting_hash_key);
    }
    pending.put(&stream).await?;
    ndjson.into_inner()?.sync_all()?;
    let meta = Meta {
        format: DATASET_FORMAT,
        events,
        seed,
        records: pending.records,
        ndjson_bytes: fs::metadata(&ndjson_path)?.len(),
    };
    fs::write(meta_path(dir), serde_json::to_vec(&meta)?)?;
    println!("{}", serde_json::to_string(&meta)?);
    Ok(())
}

/// Aggregates waiting to be put, and how many were put so far.
#[derive(Default)]
struct Pending {
    entries: Vec<PutEntry>,
    bytes: usize,
    records: u64,
}

impl Pending {
    fn seal(&mut self, aggregator: &mut Aggregator, hash_key: u128) {
        if let Some(record) = aggregator.finish() {
            self.bytes += record.data.len();
            self.entries.push(PutEntry {
                partition_key: record.partition_key,
                explicit_hash_key: Some(hash_key),
                data: record.data,
            });
        }
    }

    async fn put(&mut self, stream: &EmbeddedStream) -> anyhow::Result<()> {
        let entries = std::mem::take(&mut self.entries);
        self.bytes = 0;
        for outcome in stream.put(&entries).await? {
            if let PutOutcome::Failed { code, message, .. } = outcome {
                bail!("failed to put a record: {code}: {message}");
            }
        }
        self.records += entries.len() as u64;
        Ok(())
    }
}
