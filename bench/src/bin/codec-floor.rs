//! `codec-floor`: the least CPU any receiver must spend on an acme-video event, measured on
//! the bytes `loadgen` sends, in a tight loop with no I/O:
//!
//! ```text
//! body ─▶ HMAC-SHA256 (the partner's signature)
//!      ─▶ typed serde parse into borrowed structs (the partner's events)
//!      ─▶ MD5 of each partition key (the shard it belongs to)
//!      ─▶ MD5 of the bytes (the KPL aggregate's trailer)
//!      ─▶ base64 of the bytes (the record data in the PutRecords JSON)
//!      ─▶ SHA-256 of the base64 (the SigV4 payload hash of that call)
//! ```
//!
//! Everything a receiver adds to this (HTTP, mapping, validation, the stream JSON, batching)
//! is its own overhead; the benchmark reports the receiver's CPU per event against it.

use std::borrow::Cow;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adpipe_bench::procfs;
use adpipe_bench::workload::{Batch, signature};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The benchmark secret's length; its value does not change the cost.
const SECRET: &[u8] = b"benchmark-acme-video-secret-0123";
/// Requests between two looks at the clock.
const CHECK_EVERY: u64 = 64;

/// Runs the codec floor for each batch size and prints CPU nanoseconds per event as JSON.
#[derive(Debug, Parser)]
#[command(name = "codec-floor")]
struct Args {
    /// Batch sizes to measure.
    #[arg(
        long,
        env = "CODEC_FLOOR_BATCHES",
        value_delimiter = ',',
        default_value = "1,20"
    )]
    batches: Vec<usize>,
    /// Seconds per batch size.
    #[arg(long, env = "CODEC_FLOOR_SECONDS", default_value_t = 3.0)]
    seconds: f64,
    /// Write the JSON here instead of stdout.
    #[arg(long, env = "CODEC_FLOOR_OUT")]
    out: Option<PathBuf>,
}

/// One acme-video event, typed, borrowing from the body where it can.
#[derive(Debug, Deserialize)]
struct AcmeEvent<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    ts: i64,
    #[serde(borrow)]
    session: Cow<'a, str>,
    #[serde(borrow)]
    campaign: Cow<'a, str>,
    #[serde(borrow)]
    placement: Cow<'a, str>,
    #[serde(borrow)]
    creative: Cow<'a, str>,
    #[serde(borrow)]
    ua: Cow<'a, str>,
    #[serde(borrow)]
    ip: Cow<'a, str>,
    #[serde(borrow)]
    deal: Option<Cow<'a, str>>,
}

/// The figures of one batch size.
#[derive(Debug, Serialize)]
struct Figures {
    batch: usize,
    body_bytes: usize,
    requests: u64,
    events: u64,
    cpu_ns_per_event: f64,
    wall_ns_per_event: f64,
    cpu_ns_per_request: f64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        batches,
        seconds,
        out,
    } = args;
    let mut figures = Vec::new();
    for size in batches {
        figures.push(measure(size, Duration::from_secs_f64(seconds))?);
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({ "batches": figures }))?;
    match out {
        Some(path) => std::fs::write(&path, json + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}

fn measure(size: usize, length: Duration) -> anyhow::Result<Figures> {
    let batch = Batch::new(size, 1);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut body = Vec::new();
    batch.fill(&mut body, 0, now_ms);
    let expected = signature(SECRET, &body);
    // Warm caches and the branch predictor.
    for _ in 0..1000 {
        handle(&body, &expected)?;
    }
    let me = std::process::id();
    let cpu_start = procfs::cpu_seconds(me)?;
    let started = Instant::now();
    let mut requests = 0;
    loop {
        for _ in 0..CHECK_EVERY {
            black_box(handle(black_box(&body), &expected)?);
        }
        requests += CHECK_EVERY;
        if started.elapsed() >= length {
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = procfs::cpu_seconds(me)? - cpu_start;
    let events = requests * size as u64;
    Ok(Figures {
        batch: size,
        body_bytes: body.len(),
        requests,
        events,
        cpu_ns_per_event: cpu * 1e9 / events as f64,
        wall_ns_per_event: wall * 1e9 / events as f64,
        cpu_ns_per_request: cpu * 1e9 / requests as f64,
    })
}

/// The floor's work for one request; returns something of every step so none is optimised
/// away.
fn handle(body: &[u8], expected: &str) -> anyhow::Result<usize> {
    anyhow::ensure!(signature(SECRET, body) == expected, "signature mismatch");
    let events: Vec<AcmeEvent<'_>> = serde_json::from_slice(body)?;
    let mut keys = 0u8;
    for event in &events {
        keys ^= Md5::digest(event.session.as_bytes())[0];
        black_box((
            &event.id,
            &event.kind,
            event.ts,
            &event.campaign,
            &event.placement,
        ));
        black_box((&event.creative, &event.ua, &event.ip, &event.deal));
    }
    let trailer = Md5::digest(body);
    let data = STANDARD.encode(body);
    let payload_hash = Sha256::digest(data.as_bytes());
    Ok(events.len() + usize::from(keys ^ trailer[0] ^ payload_hash[0]))
}
