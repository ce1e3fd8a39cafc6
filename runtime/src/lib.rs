//! The edge every adpipe binary shares: logging set-up, shutdown signals, and the
//! Prometheus endpoint, so `adpipe local`, `adpipe-receiver` and `adpipe-deliverer` behave
//! the same way at start and stop.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use warp::{Filter, Reply};

/// Runs a binary's async `main` on a multi-threaded runtime and turns its result into the
/// exit code, printing the whole error chain on failure.
pub fn block_on_main<F>(main: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    block_on_main_with(tokio::runtime::Builder::new_multi_thread(), main)
}

/// [`block_on_main`] on a runtime of the caller's kind: the benchmark's load generator and
/// Kinesis sink run on one thread, pinned to their own core.
pub fn block_on_main_with<F>(mut runtime: tokio::runtime::Builder, main: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a flag such as `--flush-interval 5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 5s or 1m: {e}"))
}

/// Logging flags, flattened into each binary's arguments.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `adpipe_receiver=debug,info`.
    #[arg(long, env = "ADPIPE_LOG", default_value = "info", global = true)]
    pub log_level: String,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "ADPIPE_LOG_JSON", global = true)]
    pub log_json: bool,
}

/// Installs the `tracing` subscriber: stderr, filtered by `--log-level`.
pub fn init_logging(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before it stops a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

/// This machine's name: the pod name inside Kubernetes, which makes it a good default identity
/// for leases.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| format!("process-{}", std::process::id()))
}

/// Serves `GET /metrics` (Prometheus text format), `GET /healthz` and `GET /readyz` on
/// `listener` until the task is dropped. Readiness here means the process serves; workloads
/// with a richer notion of ready (the receiver) answer it on their own port. `refresh` runs before each scrape, to set gauges read at scrape time.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: prometheus::Registry,
    refresh: Arc<dyn Fn() + Send + Sync>,
) {
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        refresh();
        let mut text = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text) {
            tracing::error!(error = %e, "failed to encode metrics");
        }
        warp::reply::with_header(text, "content-type", prometheus::TEXT_FORMAT).into_response()
    });
    let health = warp::path!("healthz")
        .or(warp::path!("readyz"))
        .unify()
        .and(warp::get())
        .map(|| String::from("ok").into_response());
    // NOTE: boxing erases the filter's type, which rustc otherwise cannot prove `Send` for
    // every lifetime when the server future is spawned.
    let routes = metrics.or(health).unify().boxed();
    warp::serve(routes).incoming(listener).run().await;
}
