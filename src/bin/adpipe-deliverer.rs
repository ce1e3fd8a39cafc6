//! `adpipe-deliverer`: one worker of a partner's consumer group, from Kinesis to the S3 lake.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use adpipe_core::enrich::Enricher;
use adpipe_core::group::Catalog;
use adpipe_core::spec::{Enrichment, PipelineDocument};
use adpipe_deliverer::{Deliverer, DelivererOptions};
use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: the hot paths allocate many small, short-lived
/// buffers per event, where glibc spent a fifth of the CPU (`bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One worker of a partner's deliverer group: takes shard leases in DynamoDB, reads its
/// shards of the Kinesis stream, enriches every event and writes Parquet into the S3 lake,
/// registering partitions in Glue. AWS access uses the SDK's standard chain.
#[derive(Debug, Parser)]
#[command(name = "adpipe-deliverer", version)]
struct Args {
    /// The PartnerPipeline file (the operator mounts it from the `{name}-pipeline` ConfigMap).
    #[arg(long, env = "ADPIPE_PIPELINE")]
    pipeline: PathBuf,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "ADPIPE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: std::net::SocketAddr,
    /// This worker's name in the lease table; default: the host name (the pod name).
    #[arg(long, env = "ADPIPE_WORKER_ID")]
    worker_id: Option<String>,
    /// Close lake files at least this often, overriding `spec.deliverer.sink.maxFileAge`.
    #[arg(long, env = "ADPIPE_FLUSH_INTERVAL", value_parser = adpipe_runtime::parse_duration)]
    flush_interval: Option<Duration>,
    /// A MaxMind GeoIP2/GeoLite2 City database for the `geoip` enrichment.
    #[arg(long, env = "ADPIPE_GEOIP_DATABASE")]
    geoip_database: Option<PathBuf>,
    #[command(flatten)]
    log: adpipe_runtime::LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    adpipe_runtime::init_logging(&args.log);
    adpipe_runtime::block_on_main(run(args))
}

/// The lease table: `spec.deliverer.leaseTable`, else `adpipe-{namespace}-{name}` in a
/// cluster, else `adpipe-{partner}`.
fn lease_table(doc: &PipelineDocument) -> String {
    if let Some(table) = &doc.spec.deliverer.lease_table {
        return table.clone();
    }
    match &doc.metadata.namespace {
        Some(namespace) => format!("adpipe-{namespace}-{}", doc.metadata.name),
        None => format!("adpipe-{}", doc.spec.partner),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        pipeline,
        metrics_listen,
        worker_id,
        flush_interval,
        geoip_database,
        log: _,
    } = args;
    let doc = adpipe_core::validate::load_single(&pipeline)?;
    let spec = &doc.spec;
    let worker_id = worker_id.unwrap_or_else(adpipe_runtime::hostname);
    let config = adpipe_aws::config::load().await;

    let table = lease_table(&doc);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    adpipe_leases::LeaseTable::ensure(&dynamodb, &table)
        .await
        .with_context(|| format!("failed to create or find the lease table {table}"))?;
    let coordinator = adpipe_leases::DynamoCoordinator::new(
        dynamodb,
        &table,
        &worker_id,
        adpipe_leases::LeaseSettings::default(),
    );
    let reader = adpipe_aws::KinesisStream::new(
        adpipe_aws::config::kinesis_client(&config),
        &spec.stream.name,
    );
    let sink = adpipe_aws::S3Sink::new(
        adpipe_aws::config::s3_client(&config),
        &spec.deliverer.sink.bucket,
    );
    let catalog: Option<Arc<dyn Catalog>> = spec.deliverer.catalog.as_ref().map(|c| {
        let location = adpipe_aws::glue::lake_location(
            &spec.deliverer.sink.bucket,
            &spec.deliverer.sink.prefix,
        );
        let glue = adpipe_aws::config::glue_client(&config);
        Arc::new(adpipe_aws::GlueCatalog::new(
            glue,
            &c.database,
            &c.table,
            &location,
        )) as Arc<dyn Catalog>
    });
    let enricher = Enricher::new(&spec.deliverer.enrich, geoip_database.as_deref())?;
    if spec.deliverer.enrich.contains(&Enrichment::Geoip) && !enricher.geoip_enabled() {
        tracing::warn!(
            "geoip enrichment is configured but no --geoip-database is given; skipping it"
        );
    }
    let registry = prometheus::Registry::new();
    let options = DelivererOptions {
        flush_interval,
        ..DelivererOptions::default()
    };
    let deliverer = Deliverer::new(
        spec,
        Arc::new(reader),
        Arc::new(coordinator),
        catalog,
        Arc::new(sink),
        enricher,
        options,
        &registry,
    )?;
    let metrics_listener = TcpListener::bind(metrics_listen)
        .await
        .with_context(|| format!("failed to listen on {metrics_listen} (--metrics-listen)"))?;
    let metrics_server = tokio::spawn(adpipe_runtime::serve_metrics(
        metrics_listener,
        registry,
        Arc::new(|| {}),
    ));
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        adpipe_runtime::shutdown_signal().await;
        signal.cancel();
    });
    tracing::info!(partner = %spec.partner, stream = %spec.stream.name, worker = %worker_id, %table, "delivering");
    deliverer.run(stop).await?;
    metrics_server.abort();
    Ok(())
}
