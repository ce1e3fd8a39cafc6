//! `loadgen`: an open-loop, fixed-rate HTTP/1.1 load generator for the receiver benchmarks.
//!
//! ```text
//! schedule   request k is due at t0 + k·batch/rate, whether or not earlier ones finished
//! workers    one per keep-alive connection: take the next k ─▶ wait until it is due
//!            ─▶ fill + sign its body ─▶ POST ─▶ answer ─▶ Recorder
//! latency    from the due time, so a slow server is not excused by the client waiting for
//!            it (no coordinated omission)
//! window     [t0 + warmup, t0 + warmup + duration) is measured; afterwards the run waits
//!            `--grace` for requests in flight, and what is left counts as unfinished or unsent
//!            with the time it already waited as its latency
//! ```
//!
//! With `--watch-pid` it also reads the CPU seconds the process under test spends in the
//! window, and its resident memory, from /proc. `--ack-log` writes the events of every `200`
//! (`first_seq count` a line), to check that each acknowledged event reached the stream.

mod report;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adpipe_bench::procfs;
use adpipe_bench::workload::{Batch, signature};
use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::report::{Failure, Header, Recorder, Watched};

/// Connections are sized by Little's law so that they are not what limits a server answering
/// within this time: connections = requests a second × this.
const CONCURRENCY_BUDGET: Duration = Duration::from_millis(250);
/// Fewest connections, whatever the rate.
const MIN_CONNECTIONS: usize = 8;
/// Most connections: below the 2,048 adpipe's receiver serves at once, past which it answers
/// 503 (the overload part, which tests that limit, asks for more with `--connections`).
const MAX_CONNECTIONS: usize = 2000;
/// Connections opened before pausing, so that the server's accept queue never overflows.
const CONNECT_CHUNK: usize = 128;
/// The pause between chunks.
const CONNECT_PAUSE: Duration = Duration::from_millis(5);
/// Time between opening the connections and the first due request.
const START_DELAY: Duration = Duration::from_millis(50);
/// How often the watched process' memory is sampled.
const MEMORY_SAMPLE: Duration = Duration::from_millis(100);

/// Offers acme-video batches at a fixed rate and reports latency, answers and achieved rate
/// as JSON.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Where to POST.
    #[arg(
        long,
        env = "LOADGEN_URL",
        default_value = "http://127.0.0.1:8080/v1/acme-video/events"
    )]
    url: String,
    /// Offered events a second.
    #[arg(long, env = "LOADGEN_RATE")]
    rate: f64,
    /// Events per request.
    #[arg(long, env = "LOADGEN_BATCH", default_value_t = 20)]
    batch: usize,
    /// Seconds of warm-up at the same rate before the measured window.
    #[arg(long, env = "LOADGEN_WARMUP", default_value_t = 3.0)]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait after the window for requests in flight.
    #[arg(long, env = "LOADGEN_GRACE", default_value_t = 5.0)]
    grace: f64,
    /// Seconds after which a request counts as timed out (its connection is closed).
    #[arg(long, env = "LOADGEN_TIMEOUT", default_value_t = 10.0)]
    timeout: f64,
    /// Keep-alive connections; 0 sizes them from the rate.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 0)]
    connections: usize,
    /// File holding the HMAC-SHA256 secret (its bytes as they are).
    #[arg(long, env = "LOADGEN_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Run number, the event id prefix (`evt-{run:04}-{seq:012}`).
    #[arg(long, env = "LOADGEN_RUN", default_value_t = 1)]
    run: u16,
    /// Write `first_seq count` for every acknowledged request to this file.
    #[arg(long, env = "LOADGEN_ACK_LOG")]
    ack_log: Option<PathBuf>,
    /// Measure this process' CPU during the window and its memory during the run.
    #[arg(long, env = "LOADGEN_WATCH_PID")]
    watch_pid: Option<u32>,
    /// Write the JSON report here instead of stdout.
    #[arg(long, env = "LOADGEN_OUT")]
    out: Option<PathBuf>,
}

/// When each request is due and when the run ends.
#[derive(Debug, Clone, Copy)]
struct Plan {
    t0: Instant,
    /// Seconds between two due times.
    interval: f64,
    /// Requests in warm-up and window.
    total: u64,
    window: (Instant, Instant),
    /// Nothing is sent or waited for after this.
    deadline: Instant,
    timeout: Duration,
}

impl Plan {
    fn due(&self, k: u64) -> Instant {
        self.t0 + Duration::from_secs_f64(k as f64 * self.interval)
    }
}

/// What the workers share.
struct Shared {
    plan: Plan,
    next: AtomicU64,
    batch: Batch,
    secret: Vec<u8>,
    authority: String,
    path: String,
    recorder: Mutex<Recorder>,
    acknowledged: Mutex<Vec<u64>>,
}

fn main() -> std::process::ExitCode {
    // NOTE: one thread: the generator is pinned to its own core in benchmarks.
    adpipe_runtime::block_on_main_with(
        tokio::runtime::Builder::new_current_thread(),
        run(Args::parse()),
    )
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        url,
        rate,
        batch,
        warmup,
        duration,
        grace,
        timeout,
        connections,
        secret_file,
        run,
        ack_log,
        watch_pid,
        out,
    } = args;
    anyhow::ensure!(
        rate > 0.0 && batch > 0,
        "--rate and --batch must be positive"
    );
    let uri: http::Uri = url.parse().with_context(|| format!("--url {url}"))?;
    let authority = uri
        .authority()
        .map(ToString::to_string)
        .context("--url needs host:port")?;
    let address: SocketAddr = tokio::net::lookup_host(&authority)
        .await?
        .next()
        .with_context(|| format!("failed to resolve {authority}"))?;
    let secret = match &secret_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("failed to read {} (--secret-file)", path.display()))?,
        None => Vec::new(),
    };
    let requests_per_s = rate / batch as f64;
    let connections = if connections == 0 {
        ((requests_per_s * CONCURRENCY_BUDGET.as_secs_f64()).ceil() as usize)
            .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
    } else {
        connections
    };
    let mut opened = Vec::with_capacity(connections);
    for i in 0..connections {
        if i > 0 && i % CONNECT_CHUNK == 0 {
            tokio::time::sleep(CONNECT_PAUSE).await;
        }
        opened.push(connect(address).await.ok());
    }

    let t0 = Instant::now() + START_DELAY;
    let window = (
        t0 + Duration::from_secs_f64(warmup),
        t0 + Duration::from_secs_f64(warmup + duration),
    );
    let interval = 1.0 / requests_per_s;
    let plan = Plan {
        t0,
        interval,
        total: ((warmup + duration) / interval).ceil() as u64,
        window,
        deadline: window.1 + Duration::from_secs_f64(grace),
        timeout: Duration::from_secs_f64(timeout),
    };
    let workload = Batch::new(batch, run);
    let header = Header {
        url: url.clone(),
        batch,
        body_bytes: workload.body_len(),
        rate_events_per_s: rate,
        warmup_s: warmup,
        duration_s: duration,
        connections,
    };
    let shared = Arc::new(Shared {
        plan,
        next: AtomicU64::new(0),
        batch: workload,
        secret,
        authority,
        path: uri
            .path_and_query()
            .map_or("/".to_owned(), ToString::to_string),
        recorder: Mutex::new(Recorder::new(window, batch)?),
        acknowledged: Mutex::new(Vec::new()),
    });
    let watcher = watch_pid.map(|pid| tokio::spawn(watch(pid, plan)));
    let workers: Vec<_> = opened
        .into_iter()
        .map(|conn| tokio::spawn(worker(shared.clone(), address, conn)))
        .collect();
    for w in workers {
        w.await.context("a worker failed")?;
    }
    let watched = match (watcher, watch_pid) {
        (Some(w), Some(pid)) => {
            let (cpu_seconds, rss_max_kib) = w.await.context("the watcher failed")??;
            let memory = procfs::memory(pid)?;
            Some(Watched {
                pid,
                cpu_seconds,
                rss_max_kib: rss_max_kib.max(memory.rss_kib),
                peak_kib: memory.peak_kib,
            })
        }
        _ => None,
    };

    let mut recorder = shared
        .recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let taken = shared.next.load(Ordering::Relaxed).min(plan.total);
    for k in taken..plan.total {
        recorder.failed(plan.due(k), plan.deadline, Failure::Unsent);
    }
    let report = recorder.report(header, watched);
    if let Some(path) = &ack_log {
        let acknowledged = shared
            .acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        write_ack_log(path, &acknowledged, batch as u64)?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    match &out {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?,
        None => println!("{json}"),
    }
    eprintln!(
        "loadgen: {:.0} ev/s offered, {:.0} acknowledged; p50 {:.1} ms, p99 {:.1} ms; error rate {:.4}",
        rate,
        report.achieved_events_per_s,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.error_rate
    );
    Ok(())
}

async fn connect(address: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when the server closes it or the sender is dropped.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn worker(
    shared: Arc<Shared>,
    address: SocketAddr,
    mut conn: Option<SendRequest<Full<Bytes>>>,
) {
    let plan = shared.plan;
    let mut body = Vec::with_capacity(shared.batch.body_len());
    loop {
        let k = shared.next.fetch_add(1, Ordering::Relaxed);
        if k >= plan.total {
            return;
        }
        let due = plan.due(k);
        tokio::time::sleep_until(due.into()).await;
        if Instant::now() >= plan.deadline {
            record_failure(&shared, due, Failure::Unsent);
            return;
        }
        let sender = match conn.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => match connect(address).await {
                Ok(sender) => sender,
                Err(_) => {
                    record_failure(&shared, due, Failure::Connect);
                    continue;
                }
            },
        };
        conn = send(&shared, k, due, sender, &mut body).await;
    }
}

/// Sends request `k`; returns the connection if it can be used again.
async fn send(
    shared: &Shared,
    k: u64,
    due: Instant,
    mut sender: SendRequest<Full<Bytes>>,
    body: &mut Vec<u8>,
) -> Option<SendRequest<Full<Bytes>>> {
    let plan = shared.plan;
    let size = shared.batch.size() as u64;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    shared.batch.fill(body, k * size, now_ms);
    let request = Request::post(shared.path.as_str())
        .header(header::HOST, shared.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-hub-signature-256", signature(&shared.secret, body))
        .body(Full::new(Bytes::copy_from_slice(body)));
    let Ok(request) = request else {
        record_failure(shared, due, Failure::Io);
        return Some(sender);
    };
    let limit = (Instant::now() + plan.timeout).min(plan.deadline);
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, incoming) = response.into_parts();
        incoming.collect().await?;
        Ok::<_, hyper::Error>(parts)
    };
    match tokio::time::timeout_at(limit.into(), exchange).await {
        Ok(Ok(parts)) => {
            let done = Instant::now();
            let status = parts.status;
            let retry_after = parts.headers.contains_key(header::RETRY_AFTER);
            let close = parts
                .headers
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            shared
                .recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .answered(due, done, status.as_u16(), retry_after);
            if status == StatusCode::OK {
                shared
                    .acknowledged
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(k);
            }
            (!close).then_some(sender)
        }
        Ok(Err(_)) => {
            record_failure(shared, due, Failure::Io);
            None
        }
        Err(_) => {
            let failure = if limit >= plan.deadline {
                Failure::Unfinished
            } else {
                Failure::Timeout
            };
            record_failure(shared, due, failure);
            None
        }
    }
}

fn record_failure(shared: &Shared, due: Instant, failure: Failure) {
    shared
        .recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .failed(due, Instant::now(), failure);
}

/// Samples `pid`'s memory until the window ends and reads its CPU time at the window's
/// edges: CPU seconds in the window and the largest resident size seen.
async fn watch(pid: u32, plan: Plan) -> anyhow::Result<(f64, u64)> {
    let mut rss_max = 0;
    let mut cpu_start = None;
    loop {
        let now = Instant::now();
        if cpu_start.is_none() && now >= plan.window.0 {
            cpu_start = Some(procfs::cpu_seconds(pid)?);
        }
        if now >= plan.window.1 {
            let cpu_end = procfs::cpu_seconds(pid)?;
            return Ok((cpu_end - cpu_start.unwrap_or(cpu_end), rss_max));
        }
        let memory = procfs::memory(pid).with_context(|| format!("failed to read pid {pid}"))?;
        rss_max = rss_max.max(memory.rss_kib);
        let edge = if cpu_start.is_none() {
            plan.window.0
        } else {
            plan.window.1
        };
        tokio::time::sleep_until((now + MEMORY_SAMPLE).min(edge).into()).await;
    }
}

fn write_ack_log(path: &PathBuf, acknowledged: &[u64], batch: u64) -> anyhow::Result<()> {
    let file =
        File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for k in acknowledged {
        writeln!(out, "{} {batch}", k * batch)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Args::command().debug_assert();
    }
}
