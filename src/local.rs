//! `adpipe local`: every pipeline on one machine, with the embedded stream and a Parquet lake
//! on disk instead of Kinesis and S3.
//!
//! ```text
//! partner ──HTTP──▶ receiver (all partners, --listen) ──▶ EmbeddedStream per pipeline
//!                                                             {lake}/.adpipe/streams/…
//!        {lake}/{bucket}/{prefix}/partner=…/*.parquet ◀── deliverer per pipeline
//!                                                          {lake}/.adpipe/checkpoints/…
//! metrics of both on --metrics-listen
//! ```
//!
//! Ctrl-C stops taking events, sends what the receiver holds to the stream, lets every
//! deliverer read its stream to the end and flush, then exits. A crash loses nothing that
//! was acknowledged: the stream is durable and the deliverers resume from their checkpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use adpipe_core::enrich::Enricher;
use adpipe_core::group::SoleOwner;
use adpipe_core::lake;
use adpipe_core::spec::{AuthSpec, Enrichment, PipelineDocument};
use adpipe_deliverer::{Deliverer, DelivererOptions};
use adpipe_embedded::{DirectorySink, EmbeddedStream, FileCheckpoints};
use adpipe_receiver::ReceiverState;
use adpipe_receiver::metrics::ReceiverMetrics;
use adpipe_receiver::partner::Partner;
use adpipe_receiver::producer::{Producer, ProducerOptions};
use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::args::LocalArgs;

/// Shards of an embedded stream whose pipeline asks for on-demand capacity.
const DEFAULT_LOCAL_SHARDS: u32 = 2;
/// Where the embedded stream and checkpoints live, inside the lake directory.
const STATE_DIR: &str = ".adpipe";

/// Runs `adpipe local` to completion.
pub fn main(args: LocalArgs) -> ExitCode {
    adpipe_runtime::block_on_main(run(args))
}

/// One pipeline, wired.
struct Wired {
    doc: PipelineDocument,
    partner: Partner,
    producer_task: tokio::task::JoinHandle<()>,
    deliverer: Deliverer,
    geoip_skipped: bool,
}

async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let pipelines = load_pipelines(&args.pipelines)?;
    let state_dir = args.lake.join(STATE_DIR);
    let registry = prometheus::Registry::new();
    let receiver_metrics = ReceiverMetrics::register(&registry)?;

    let mut wired = Vec::new();
    for doc in pipelines {
        wired.push(wire(doc, &args, &state_dir, &registry, &receiver_metrics).await?);
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {} (--listen)", args.listen))?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "failed to listen on {} (--metrics-listen)",
                args.metrics_listen
            )
        })?;
    print_summary(
        &args,
        listener.local_addr()?,
        metrics_listener.local_addr()?,
        &wired,
    );

    let stop_deliverers = CancellationToken::new();
    let mut partners = Vec::new();
    let mut producer_tasks = Vec::new();
    let mut deliverers = Vec::new();
    for w in wired {
        partners.push(w.partner);
        producer_tasks.push(w.producer_task);
        deliverers.push(tokio::spawn(w.deliverer.run(stop_deliverers.child_token())));
    }
    let state = Arc::new(ReceiverState::new(partners));
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

    let shutdown = async {
        adpipe_runtime::shutdown_signal().await;
        eprintln!("adpipe: shutting down: no new events; flushing…");
    };
    adpipe_receiver::serve(
        listener,
        state,
        producer_tasks,
        receiver_metrics.connections(),
        shutdown,
    )
    .await;
    eprintln!("adpipe: receiver drained; delivering what the streams hold…");
    stop_deliverers.cancel();
    for deliverer in deliverers {
        deliverer.await.context("a deliverer task failed")??;
    }
    metrics_server.abort();
    eprintln!("adpipe: every accepted event is in {}", args.lake.display());
    Ok(())
}

/// Reads every pipeline file named by `--pipelines`; refuses partners or streams that two
/// pipelines share, since their events would mix.
fn load_pipelines(paths: &[PathBuf]) -> anyhow::Result<Vec<PipelineDocument>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| {
                    format!("failed to read --pipelines directory {}", path.display())
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        bail!("no pipeline files (*.yaml) in {}", display_paths(paths));
    }
    let mut problems = Vec::new();
    let mut pipelines = Vec::new();
    for file in &files {
        match adpipe_core::validate::load_file(file) {
            Ok(docs) => pipelines.extend(docs.into_iter().map(|d| (file.clone(), d))),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        bail!("invalid pipelines:\n{}", problems.join("\n"));
    }
    let mut partners = BTreeMap::new();
    let mut streams = BTreeMap::new();
    for (file, doc) in &pipelines {
        if let Some(other) = partners.insert(doc.spec.partner.clone(), file) {
            bail!(
                "{}: spec.partner: `{}` is already served by {}",
                file.display(),
                doc.spec.partner,
                other.display()
            );
        }
        if let Some(other) = streams.insert(doc.spec.stream.name.clone(), file) {
            bail!(
                "{}: spec.stream.name: `{}` is already used by {}",
                file.display(),
                doc.spec.stream.name,
                other.display()
            );
        }
    }
    Ok(pipelines.into_iter().map(|(_, d)| d).collect())
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn wire(
    doc: PipelineDocument,
    args: &LocalArgs,
    state_dir: &Path,
    registry: &prometheus::Registry,
    receiver_metrics: &ReceiverMetrics,
) -> anyhow::Result<Wired> {
    let spec = &doc.spec;
    let name = doc.metadata.name.clone();
    let stream = {
        let (dir, stream_name) = (state_dir.to_owned(), spec.stream.name.clone());
        let shards = spec.stream.shards.unwrap_or(DEFAULT_LOCAL_SHARDS);
        tokio::task::spawn_blocking(move || EmbeddedStream::open(&dir, &stream_name, shards))
            .await?
            .with_context(|| format!("pipeline {name}: failed to open its embedded stream"))?
    };
    let stream = Arc::new(stream);
    let partner_metrics = receiver_metrics.partner(&spec.partner);
    let (producer, producer_task) = Producer::start(
        stream.clone(),
        ProducerOptions::default(),
        partner_metrics.clone(),
    );
    let partner = Partner::new(&doc, &args.secrets_dir, producer, partner_metrics)
        .with_context(|| format!("pipeline {name}: failed to read its secret (--secrets-dir)"))?;

    let checkpoints = {
        let (dir, stream_name, group) = (
            state_dir.to_owned(),
            spec.stream.name.clone(),
            format!("adpipe-{name}"),
        );
        tokio::task::spawn_blocking(move || FileCheckpoints::open(&dir, &stream_name, &group))
            .await?
            .with_context(|| format!("pipeline {name}: failed to open its checkpoints"))?
    };
    let sink = DirectorySink::new(args.lake.join(&spec.deliverer.sink.bucket));
    let enricher = Enricher::new(&spec.deliverer.enrich, args.geoip_database.as_deref())
        .with_context(|| format!("pipeline {name}: failed to prepare enrichment"))?;
    let geoip_skipped =
        spec.deliverer.enrich.contains(&Enrichment::Geoip) && !enricher.geoip_enabled();
    let options = DelivererOptions {
        flush_interval: args.flush_interval,
        drain_on_shutdown: true,
        ..DelivererOptions::default()
    };
    let deliverer = Deliverer::new(
        spec,
        stream,
        Arc::new(SoleOwner::new(Arc::new(checkpoints))),
        None,
        Arc::new(sink),
        enricher,
        options,
        registry,
    )
    .with_context(|| format!("pipeline {name}: failed to start its deliverer"))?;
    Ok(Wired {
        doc,
        partner,
        producer_task,
        deliverer,
        geoip_skipped,
    })
}

fn print_summary(args: &LocalArgs, listen: SocketAddr, metrics: SocketAddr, wired: &[Wired]) {
    let base = format!("http://{listen}");
    println!("adpipe local: {} pipeline(s)", wired.len());
    for w in wired {
        let spec = &w.doc.spec;
        println!();
        println!(
            "  {} ({}, ack {})",
            spec.partner,
            spec.source.format.as_str(),
            spec.receiver.ack.as_str()
        );
        for (method, route) in spec.source.format.routes() {
            println!("    {method:<4} {base}/v1/{}/{route}", spec.partner);
        }
        if let Some(line) = sample_curl(&base, &w.doc, &args.secrets_dir) {
            println!("    try: {line}");
        }
        let lake = args
            .lake
            .join(&spec.deliverer.sink.bucket)
            .join(lake::partner_root(
                &spec.deliverer.sink.prefix,
                &spec.partner,
            ));
        println!("    lake: {}", lake.display());
        if w.geoip_skipped {
            println!("    note: geoip enrichment is skipped (no --geoip-database)");
        }
    }
    println!();
    println!("  metrics: http://{metrics}/metrics");
    println!("  health:  {base}/healthz  {base}/readyz");
    println!("  Ctrl-C flushes every open file and exits.");
}

/// A ready-to-paste `curl` that sends one valid, correctly signed event.
fn sample_curl(base: &str, doc: &PipelineDocument, secrets_dir: &Path) -> Option<String> {
    let spec = &doc.spec;
    let secret = spec
        .source
        .auth
        .secret_ref()
        .and_then(|r| adpipe_core::secrets::SecretFile::open(secrets_dir, r).ok())
        .map(|f| f.get());
    let sample = adpipe_core::source::sample_request(spec, adpipe_core::event::EpochMillis::now())?;
    let url = format!("{base}/v1/{}/{}", spec.partner, sample.route);
    let mut line = String::from("curl -sS");
    match (&spec.source.auth, &secret) {
        (AuthSpec::ApiKey { secret_ref }, Some(_)) => {
            // The key is read from its file by the shell: secrets are never printed.
            let file = secrets_dir.join(&secret_ref.name).join(&secret_ref.key);
            line.push_str(&format!(" -H \"x-api-key: $(cat '{}')\"", file.display()));
        }
        (AuthSpec::HmacSha256 { .. }, Some(s)) if sample.body.is_some() => {
            let body = sample.body.as_deref().unwrap_or_default();
            line.push_str(&format!(
                " -H 'x-hub-signature-256: sha256={}'",
                adpipe_core::auth::sign(s.expose(), body.as_bytes())
            ));
        }
        _ => {}
    }
    match (&sample.body, &spec.source.auth, &secret) {
        (Some(body), _, _) => {
            line.push_str(&format!(
                " -H 'content-type: application/json' --data '{body}' '{url}'"
            ));
        }
        (None, AuthSpec::HmacSha256 { .. }, Some(s)) => {
            let sig = adpipe_core::auth::sign(s.expose(), sample.query.as_bytes());
            line.push_str(&format!(
                " -o /dev/null -w '%{{http_code}}\\n' '{url}?{}&sig={sig}'",
                sample.query
            ));
        }
        (None, _, _) => line.push_str(&format!(
            " -o /dev/null -w '%{{http_code}}\\n' '{url}?{}'",
            sample.query
        )),
    }
    Some(line)
}
