//! `adpipe-receiver`: one partner's receiver, writing to its Kinesis stream.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use adpipe_receiver::ReceiverState;
use adpipe_receiver::metrics::ReceiverMetrics;
use adpipe_receiver::partner::Partner;
use adpipe_receiver::producer::{Producer, ProducerOptions};
use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: the hot paths allocate many small, short-lived
/// buffers per event, where glibc spent a fifth of the CPU (`bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One partner's receiver: authenticates, validates and maps the partner's events and puts
/// them, KPL-aggregated, into the pipeline's Kinesis stream. AWS access uses the SDK's
/// standard chain (AWS_REGION, AWS_ENDPOINT_URL, credentials from env, profile or IRSA).
#[derive(Debug, Parser)]
#[command(name = "adpipe-receiver", version)]
struct Args {
    /// The PartnerPipeline file (the operator mounts it from the `{name}-pipeline` ConfigMap).
    #[arg(long, env = "ADPIPE_PIPELINE")]
    pipeline: PathBuf,
    /// Address of the partner-facing HTTP server.
    #[arg(long, env = "ADPIPE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "ADPIPE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: std::net::SocketAddr,
    /// Where partner secrets are mounted, as `{secret name}/{key}`.
    #[arg(
        long,
        env = "ADPIPE_SECRETS_DIR",
        default_value = "/etc/adpipe/secrets"
    )]
    secrets_dir: PathBuf,
    #[command(flatten)]
    log: adpipe_runtime::LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    adpipe_runtime::init_logging(&args.log);
    adpipe_runtime::block_on_main(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        pipeline,
        listen,
        metrics_listen,
        secrets_dir,
        log: _,
    } = args;
    let doc = adpipe_core::validate::load_single(&pipeline)?;
    let spec = &doc.spec;
    let config = adpipe_aws::config::load().await;
    let stream = adpipe_aws::KinesisStream::new(
        adpipe_aws::config::kinesis_client(&config),
        &spec.stream.name,
    );
    let registry = prometheus::Registry::new();
    let receiver_metrics = ReceiverMetrics::register(&registry)?;
    let metrics = receiver_metrics.partner(&spec.partner);
    let (producer, producer_task) = Producer::start(
        Arc::new(stream),
        ProducerOptions::default(),
        metrics.clone(),
    );
    let partner = Partner::new(&doc, &secrets_dir, producer, metrics).with_context(|| {
        format!(
            "failed to read the partner's secret under {}",
            secrets_dir.display()
        )
    })?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen} (--listen)"))?;
    let metrics_listener = TcpListener::bind(metrics_listen)
        .await
        .with_context(|| format!("failed to listen on {metrics_listen} (--metrics-listen)"))?;
    let state = Arc::new(ReceiverState::new([partner]));
    let scraped = state.clone();
    let refresh = Arc::new(move || {
        for partner in scraped.partners() {
            partner
                .metrics
                .set_buffered_bytes(partner.producer.buffered_bytes());
        }
    });
    let metrics_server = tokio::spawn(adpipe_runtime::serve_metrics(
        metrics_listener,
        registry,
        refresh,
    ));
    tracing::info!(partner = %spec.partner, stream = %spec.stream.name, %listen, "receiving");
    adpipe_receiver::serve(
        listener,
        state,
        vec![producer_task],
        receiver_metrics.connections(),
        adpipe_runtime::shutdown_signal(),
    )
    .await;
    metrics_server.abort();
    Ok(())
}
