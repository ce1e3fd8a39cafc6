//! One measured run of the real deliverer over the dataset's stream.
//!
//! ```text
//! EmbeddedStream ─▶ Deliverer (SoleOwner + FileCheckpoints of a group of its own,
//!                   DirectorySink, enrichment on or off), one-thread runtime
//!   └─ poll the metrics: every user record read? ─▶ shutdown: drain, last flush, commit
//! CPU = user + system time of the process (/proc/self/stat) from Deliverer::new to run's end
//! ```
//!
//! Prints one JSON line: rows, cpu_s, wall_s, files, bytes (of the Parquet files), enrich,
//! records.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adpipe_bench::procfs;
use adpipe_core::enrich::Enricher;
use adpipe_core::group::SoleOwner;
use adpipe_deliverer::{Deliverer, DelivererOptions};
use adpipe_embedded::{DirectorySink, FileCheckpoints};
use anyhow::{Context, bail, ensure};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::generate::{STREAM_DIR, open_stream, read_meta};

/// Aggregates per read: about the 10 MB a Kinesis GetRecords call returns at most.
pub const READ_LIMIT: usize = 400;
/// Longer than any run, so that each shard becomes one file, flushed at shutdown, as each
/// baseline writes one file.
const FLUSH_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the run checks whether every user record has been read.
const PROGRESS_POLL: Duration = Duration::from_millis(20);

/// Delivers the stream of the dataset in `dir` into `lake` once and prints the measurement.
pub async fn deliver(dir: &Path, lake: &Path, enrich: bool, geoip: &Path) -> anyhow::Result<()> {
    let meta = read_meta(dir).with_context(|| {
        format!(
            "no dataset in {}: run `deliverer-throughput generate` first",
            dir.display()
        )
    })?;
    let doc = crate::pipeline()?;
    let spec = &doc.spec;
    let state = dir.join(STREAM_DIR);
    let stream = open_stream(dir, &doc)?;
    let group = format!("bench-{}", std::process::id());
    let checkpoints = FileCheckpoints::open(&state, &spec.stream.name, &group)?;
    let enricher = if enrich {
        Enricher::new(&spec.deliverer.enrich, Some(geoip))?
    } else {
        Enricher::new(&[], None)?
    };
    ensure!(
        !enrich || enricher.geoip_enabled(),
        "GeoIP enrichment is off"
    );
    let registry = Registry::new();
    let options = DelivererOptions {
        flush_interval: Some(FLUSH_INTERVAL),
        read_limit: READ_LIMIT,
        drain_on_shutdown: true,
        ..DelivererOptions::default()
    };

    let cpu_before = procfs::cpu_seconds(std::process::id())?;
    let started = Instant::now();
    let deliverer = Deliverer::new(
        spec,
        Arc::new(stream),
        Arc::new(SoleOwner::new(Arc::new(checkpoints))),
        None,
        Arc::new(DirectorySink::new(lake.join(&spec.deliverer.sink.bucket))),
        enricher,
        options,
        &registry,
    )?;
    let shutdown = CancellationToken::new();
    let mut run = tokio::spawn(deliverer.run(shutdown.clone()));
    while counter(&registry, "adpipe_deliverer_user_records_total") < meta.events {
        tokio::select! {
            ended = &mut run => bail!("the deliverer stopped before reading the stream: {ended:?}"),
            () = tokio::time::sleep(PROGRESS_POLL) => {}
        }
    }
    shutdown.cancel();
    run.await??;
    let cpu = procfs::cpu_seconds(std::process::id())? - cpu_before;
    let wall = started.elapsed().as_secs_f64();

    let rows = counter(&registry, "adpipe_deliverer_events_written_total");
    ensure!(
        rows == meta.events,
        "the lake holds {rows} events, not {}",
        meta.events
    );
    let (files, bytes) = parquet_files(lake)?;
    fs::remove_dir_all(
        state
            .join("checkpoints")
            .join(&spec.stream.name)
            .join(&group),
    )?;
    let report = serde_json::json!({
        "rows": rows, "cpu_s": cpu, "wall_s": wall, "files": files, "bytes": bytes,
        "enrich": enrich, "records": meta.records,
    });
    println!("{report}");
    Ok(())
}

/// The sum of a counter family over its labels.
fn counter(registry: &Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

/// How many Parquet files are under `dir`, and their bytes.
fn parquet_files(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if entry.path().extension().is_some_and(|e| e == "parquet") {
                files += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((files, bytes))
}
