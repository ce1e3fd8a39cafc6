//! Where a delivered event's time goes: each step of the worker's path timed on its own,
//! through the same library functions the worker calls, over the whole dataset.
//!
//! ```text
//! read (EmbeddedStream) ─▶ kpl::deaggregate_shared ─▶ decode::decode ─▶ Enricher (user agent, GeoIP)
//!                                                              ─▶ ParquetFile (chunks of 8192)
//! ```
//!
//! Each enrichment step is timed twice: asking the parser or the database for every event
//! ([`Enricher::enrich`]) and through a worker's caches ([`Enricher::caching`]), which is what
//! the deliverer runs. Wall-clock times on one thread: pin the process and run it on a quiet
//! machine.

use std::path::Path;
use std::time::Instant;

use adpipe_core::enrich::Enricher;
use adpipe_core::kpl;
use adpipe_core::spec::{Enrichment, PipelineDocument};
use adpipe_core::stream::{StartPosition, StreamReader, StreamRecord};
use adpipe_deliverer::decode::{Split, decode};
use adpipe_deliverer::parquet_file::ParquetFile;
use adpipe_embedded::EmbeddedStream;
use anyhow::{Context, ensure};

use crate::deliver::READ_LIMIT;
use crate::generate::{Meta, open_stream, read_meta};

/// Rows handed to the Parquet writer at once, as the deliverer's batch does.
const STAGED_ROWS: usize = 8192;

/// Times every step over the dataset in `dir` and prints nanoseconds per event for each.
pub async fn stages(dir: &Path, geoip: &Path) -> anyhow::Result<()> {
    let (meta, doc, stream) = open_dataset(dir)?;
    let spec = &doc.spec;
    let mut times = Vec::new();
    let mut timed = |name: &'static str, started: Instant| {
        times.push((name, started.elapsed().as_secs_f64()));
    };

    let started = Instant::now();
    let records = read_all(&stream).await?;
    timed("read the stream", started);

    let started = Instant::now();
    let mut user_records = 0;
    for record in &records {
        user_records += kpl::deaggregate_shared(&record.data, &record.partition_key)?.len();
    }
    timed("de-aggregate (KPL)", started);
    ensure!(
        user_records as u64 == meta.events,
        "the stream holds {user_records} events"
    );

    let started = Instant::now();
    let splits: Vec<Split> = records.iter().map(Split::of).collect();
    let mut events = Vec::with_capacity(user_records);
    for (record, split) in records.iter().zip(&splits) {
        events.extend(decode("shardId-000000000000", &spec.partner, record, split).events);
    }
    timed("de-aggregate + decode", started);

    let user_agent = Enricher::new(&[Enrichment::UserAgent], None)?;
    let geoip = Enricher::new(&[Enrichment::Geoip], Some(geoip))?;
    let plain = events.clone();
    let mut uncached = plain.clone();
    let started = Instant::now();
    uncached.iter_mut().for_each(|e| user_agent.enrich(e));
    timed("enrich: user agent, uncached", started);
    let started = Instant::now();
    uncached.iter_mut().for_each(|e| geoip.enrich(e));
    timed("enrich: GeoIP, uncached", started);

    let started = Instant::now();
    let mut caching = user_agent.caching();
    events.iter_mut().for_each(|e| caching.enrich(e));
    timed("enrich: user agent", started);
    let started = Instant::now();
    let mut caching = geoip.caching();
    events.iter_mut().for_each(|e| caching.enrich(e));
    timed("enrich: GeoIP", started);
    ensure!(events == uncached, "the caches changed the events");

    let mut sizes = Vec::new();
    for (name, rows) in [
        ("Parquet, enriched rows", &events),
        ("Parquet, plain rows", &plain),
    ] {
        let started = Instant::now();
        let mut file = ParquetFile::new()?;
        for chunk in rows.chunks(STAGED_ROWS) {
            file.write(chunk)?;
        }
        let body = file.finish()?;
        timed(name, started);
        sizes.push((name, body.len() as f64 / rows.len() as f64));
    }

    for (name, seconds) in times {
        println!(
            "{name:32} {:7.0} ns/event",
            seconds * 1e9 / meta.events as f64
        );
    }
    for (name, bytes) in sizes {
        println!("{name:32} {bytes:7.2} bytes/row");
    }
    Ok(())
}

/// The dataset in `dir`: its description, its pipeline and its stream.
pub(crate) fn open_dataset(dir: &Path) -> anyhow::Result<(Meta, PipelineDocument, EmbeddedStream)> {
    let meta = read_meta(dir).context("no dataset: run `deliverer-throughput generate` first")?;
    let doc = crate::pipeline()?;
    let stream = open_stream(dir, &doc)?;
    Ok((meta, doc, stream))
}

/// Every record of every shard of `stream`, in shard order.
pub(crate) async fn read_all(stream: &EmbeddedStream) -> anyhow::Result<Vec<StreamRecord>> {
    let mut records = Vec::new();
    for shard in StreamReader::shards(stream).await? {
        let mut from = StartPosition::TrimHorizon;
        loop {
            let read = stream.read(&shard.id, &from, READ_LIMIT).await?;
            let Some(last) = read.records.last() else {
                break;
            };
            from = StartPosition::After(last.sequence.clone());
            records.extend(read.records);
        }
    }
    Ok(records)
}
