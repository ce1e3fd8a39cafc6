//! `sdk-put`: the CPU one `PutRecords` call costs the receiver in the AWS SDK, measured
//! through the same writer the receiver uses (`adpipe_aws::KinesisStream`) against the
//! benchmark's Kinesis sink, one call at a time:
//!
//! ```text
//! entries ─▶ KinesisStream::put ─▶ SDK: serialise (base64 + JSON), sign (SigV4), send,
//!                                       read and parse the answer ─▶ sink (other core)
//! ```
//!
//! The receiver cannot do without these calls, so their cost bounds how far below the
//! reference design its CPU per event can go: `bench/receiver.py` adds it, per call it makes,
//! to a bare HTTP server's cost and the codec floor.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use adpipe_bench::procfs;
use adpipe_core::stream::{PutEntry, PutOutcome, StreamWriter};
use anyhow::Context;
use clap::Parser;
use serde::Serialize;

/// The receiver's allocator, so the SDK's many small allocations cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Calls made before measuring: connections open, credentials and endpoint resolved.
const WARM_UP_CALLS: usize = 100;

/// Measures CPU per `PutRecords` call for each shape and prints it as JSON. The endpoint,
/// region and credentials come from the SDK's standard chain (`AWS_ENDPOINT_URL`, …).
#[derive(Debug, Parser)]
#[command(name = "sdk-put")]
struct Args {
    /// The stream to put to.
    #[arg(long, env = "SDK_PUT_STREAM", default_value = "ads-acme-video")]
    stream: String,
    /// Entries per call, one shape each.
    #[arg(
        long,
        env = "SDK_PUT_ENTRIES",
        value_delimiter = ',',
        default_value = "1,4"
    )]
    entries: Vec<usize>,
    /// Bytes of each entry: a full 25 KiB billing unit, what the receiver's aggregates hold.
    #[arg(long, env = "SDK_PUT_ENTRY_BYTES", default_value_t = 25 * 1024)]
    entry_bytes: usize,
    /// Seconds per shape.
    #[arg(long, env = "SDK_PUT_SECONDS", default_value_t = 3.0)]
    seconds: f64,
    /// Write the JSON here instead of stdout.
    #[arg(long, env = "SDK_PUT_OUT")]
    out: Option<PathBuf>,
}

/// The figures of one shape.
#[derive(Debug, Serialize)]
struct Shape {
    entries: usize,
    entry_bytes: usize,
    calls: usize,
    cpu_us_per_call: f64,
    wall_us_per_call: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    adpipe_runtime::block_on_main_with(tokio::runtime::Builder::new_current_thread(), run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = adpipe_aws::config::load().await;
    let stream =
        adpipe_aws::KinesisStream::new(adpipe_aws::config::kinesis_client(&config), &args.stream);
    let mut shapes = Vec::new();
    for &count in &args.entries {
        let entries = entries(count, args.entry_bytes);
        shapes.push(measure(&stream, &entries, args.seconds).await?);
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({ "shapes": shapes }))?;
    match &args.out {
        Some(path) => std::fs::write(path, json)
            .with_context(|| format!("failed to write {}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}

/// `count` entries of `bytes` each, under distinct keys as aggregates of different shards are.
fn entries(count: usize, bytes: usize) -> Vec<PutEntry> {
    (0..count)
        .map(|i| PutEntry {
            partition_key: format!("session-{i:04}"),
            explicit_hash_key: None,
            data: vec![b'a' + (i % 26) as u8; bytes].into(),
        })
        .collect()
}

async fn measure(
    stream: &adpipe_aws::KinesisStream,
    entries: &[PutEntry],
    seconds: f64,
) -> anyhow::Result<Shape> {
    let me = std::process::id();
    for _ in 0..WARM_UP_CALLS {
        put(stream, entries).await?;
    }
    let until = Duration::from_secs_f64(seconds);
    let (cpu_start, started) = (procfs::cpu_seconds(me)?, Instant::now());
    let mut calls = 0;
    while started.elapsed() < until {
        put(stream, entries).await?;
        calls += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = procfs::cpu_seconds(me)? - cpu_start;
    Ok(Shape {
        entries: entries.len(),
        entry_bytes: entries.first().map_or(0, |e| e.data.len()),
        calls,
        cpu_us_per_call: cpu * 1e6 / calls.max(1) as f64,
        wall_us_per_call: wall * 1e6 / calls.max(1) as f64,
    })
}

async fn put(stream: &adpipe_aws::KinesisStream, entries: &[PutEntry]) -> anyhow::Result<()> {
    let outcomes = stream
        .put(entries)
        .await
        .context("PutRecords to the sink failed")?;
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, PutOutcome::Accepted { .. }))
        .count();
    anyhow::ensure!(
        accepted == entries.len(),
        "the sink accepted {accepted} of {} entries",
        entries.len()
    );
    Ok(())
}
