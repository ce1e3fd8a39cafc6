//! `kinesis-sink`: the benchmarks' Kinesis endpoint (see the library's docs).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adpipe_kinesis_sink::api::Sink;
use adpipe_kinesis_sink::ledger::Ledger;
use adpipe_kinesis_sink::server::{ServeOptions, serve};
use adpipe_kinesis_sink::throttle::Throttle;
use anyhow::Context;
use clap::Parser;

/// A Kinesis endpoint that accepts and counts: point AWS_ENDPOINT_URL at it. `GET /stats`
/// answers the counters as JSON.
#[derive(Debug, Parser)]
#[command(name = "kinesis-sink", version)]
struct Args {
    /// Address to serve on; port 0 picks a free one (the address is printed on stdout).
    #[arg(long, env = "KINESIS_SINK_LISTEN", default_value = "127.0.0.1:4567")]
    listen: SocketAddr,
    /// The one stream it holds.
    #[arg(long, env = "KINESIS_SINK_STREAM", default_value = "ads-acme-video")]
    stream: String,
    /// Shards, splitting the hash key space evenly as Kinesis does for a new stream.
    #[arg(long, env = "KINESIS_SINK_SHARDS", default_value_t = 2)]
    shards: u32,
    /// Milliseconds added to every put call, to mimic a Kinesis round trip.
    #[arg(long, env = "KINESIS_SINK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Enforce Kinesis' per-shard write limits (1 MiB and 1 000 records a second).
    #[arg(long, env = "KINESIS_SINK_THROTTLE")]
    throttle: bool,
    /// Write the `event_id` of every stored event to this file, one a line (flushed on each
    /// `GET /stats` and at exit).
    #[arg(long, env = "KINESIS_SINK_RECORD_IDS")]
    record_ids: Option<PathBuf>,
}

fn main() -> ExitCode {
    // NOTE: one thread: the sink is pinned to the load generator's core in benchmarks.
    adpipe_runtime::block_on_main_with(
        tokio::runtime::Builder::new_current_thread(),
        run(Args::parse()),
    )
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        listen,
        stream,
        shards,
        latency_ms,
        throttle,
        record_ids,
    } = args;
    let ids: Option<Box<dyn Write + Send>> = match &record_ids {
        Some(path) => Some(Box::new(BufWriter::new(File::create(path).with_context(
            || format!("failed to create {} (--record-ids)", path.display()),
        )?))),
        None => None,
    };
    let ledger = Ledger::new(&stream, shards, ids);
    let throttle = throttle.then(|| Throttle::new(ledger.shards().len(), Instant::now()));
    let sink = Arc::new(Mutex::new(Sink::new(ledger, throttle)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen} (--listen)"))?;
    println!("kinesis-sink listening on {}", listener.local_addr()?);
    let options = ServeOptions {
        put_latency: Duration::from_millis(latency_ms),
    };
    serve(listener, sink, options, shutdown_signal()).await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("kinesis-sink: failed to watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Args::command().debug_assert();
    }
}
