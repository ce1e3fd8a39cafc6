//! `deliverer-throughput`: what one event costs the deliverer from stream to Parquet, for
//! `bench/deliverer.py`, which pins it to one core and compares it with DuckDB and pyarrow.
//!
//! ```text
//! generate: dataset::Events ─▶ stream JSON ─┬─▶ KPL aggregates ─▶ EmbeddedStream {dir}/stream
//!                                           └─▶ {dir}/events.ndjson (the baselines' input)
//! deliver:  EmbeddedStream ─▶ the real Deliverer ─▶ {lake}/ads-lake/events/…/*.parquet,
//!           one JSON line: rows, CPU seconds, bytes
//! stages:   each step of the worker's path timed alone (where the time goes)
//! floor:    the steps no deliverer on the same crates can skip, timed alone (CPU seconds)
//! ```
//!
//! `dataset` makes the events, `generate` writes them, `deliver` measures one run, `stages`
//! breaks a run down, `floor` measures what the crates alone cost.

mod dataset;
mod deliver;
mod floor;
mod generate;
mod stages;

use std::path::{Path, PathBuf};

use adpipe_core::spec::PipelineDocument;
use anyhow::ensure;
use clap::{Parser, Subcommand};

/// mimalloc, as the deliverer binary uses it: the run measures the allocator that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The pipeline the data belongs to: the design brief's example.
const PIPELINE: &str = include_str!("../../../../examples/pipelines/acme-video.yaml");

#[derive(Debug, Parser)]
#[command(about = "Deliverer throughput: dataset generation and one measured run")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes the dataset (embedded stream and NDJSON) under DIR, unless it is there already.
    Generate {
        /// Dataset directory.
        #[arg(long, env = "ADPIPE_BENCH_DATA")]
        dir: PathBuf,
        /// Events to generate.
        #[arg(long, env = "ADPIPE_BENCH_EVENTS")]
        events: u64,
        /// Seed of the generator.
        #[arg(long, env = "ADPIPE_BENCH_SEED", default_value_t = 1)]
        seed: u64,
    },
    /// Delivers the dataset's stream into LAKE once and prints the measurement as JSON.
    Deliver {
        /// Dataset directory (from `generate`).
        #[arg(long, env = "ADPIPE_BENCH_DATA")]
        dir: PathBuf,
        /// Lake directory to write; should be empty.
        #[arg(long, env = "ADPIPE_BENCH_LAKE")]
        lake: PathBuf,
        /// Skip the pipeline's enrichment (user agent and GeoIP).
        #[arg(long, env = "ADPIPE_BENCH_NO_ENRICH")]
        no_enrich: bool,
        /// MaxMind database for GeoIP enrichment.
        #[arg(long, env = "ADPIPE_BENCH_GEOIP", default_value_os_t = default_geoip())]
        geoip: PathBuf,
    },
    /// Times each step of the deliverer's path separately, through the library functions the
    /// worker calls, and prints nanoseconds per event for each.
    Stages {
        /// Dataset directory (from `generate`).
        #[arg(long, env = "ADPIPE_BENCH_DATA")]
        dir: PathBuf,
        /// MaxMind database for GeoIP enrichment.
        #[arg(long, env = "ADPIPE_BENCH_GEOIP", default_value_os_t = default_geoip())]
        geoip: PathBuf,
    },
    /// Times what no deliverer built on the same crates can skip — the KPL trailer's MD5, the
    /// stream JSON's typed parse, the Parquet encoding — and prints CPU seconds as JSON.
    Floor {
        /// Dataset directory (from `generate`).
        #[arg(long, env = "ADPIPE_BENCH_DATA")]
        dir: PathBuf,
    },
}

fn default_geoip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/geoip/GeoIP2-City-Test.mmdb")
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match Args::parse().command {
        Command::Generate { dir, events, seed } => {
            runtime.block_on(generate::generate(&dir, events, seed))
        }
        Command::Deliver {
            dir,
            lake,
            no_enrich,
            geoip,
        } => runtime.block_on(deliver::deliver(&dir, &lake, !no_enrich, &geoip)),
        Command::Stages { dir, geoip } => runtime.block_on(stages::stages(&dir, &geoip)),
        Command::Floor { dir } => runtime.block_on(floor::floor(&dir)),
    }
}

fn pipeline() -> anyhow::Result<PipelineDocument> {
    let mut docs = adpipe_core::validate::parse(PIPELINE)
        .map_err(|problems| anyhow::anyhow!("failed to parse acme-video.yaml: {problems:?}"))?;
    ensure!(docs.len() == 1, "acme-video.yaml holds one pipeline");
    Ok(docs.remove(0))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Args::command().debug_assert();
    }
}
