//! `adpipe-operator`: `run` the controller, or print the `crd` it serves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use adpipe_operator::children::WorkloadSettings;
use adpipe_operator::controller::{self, Context};
use adpipe_operator::leader::LeaderElector;
use adpipe_operator::metrics::OperatorMetrics;
use adpipe_operator::stream::Kinesis;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use tokio::net::TcpListener;

/// The adpipe operator: reconciles PartnerPipelines into receivers, deliverers and Kinesis
/// streams.
#[derive(Debug, Parser)]
#[command(name = "adpipe-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the controller (KUBECONFIG or in-cluster config; AWS from the SDK's standard chain).
    Run(RunArgs),
    /// Prints the PartnerPipeline CRD that `crds/` holds.
    Crd,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Image of the receiver pods.
    #[arg(
        long,
        env = "ADPIPE_RECEIVER_IMAGE",
        default_value = "ghcr.io/adpipe/adpipe-receiver:0.1.0"
    )]
    receiver_image: String,
    /// Image of the deliverer pods.
    #[arg(
        long,
        env = "ADPIPE_DELIVERER_IMAGE",
        default_value = "ghcr.io/adpipe/adpipe-deliverer:0.1.0"
    )]
    deliverer_image: String,
    /// `KEY=VALUE` annotation for every pipeline's ServiceAccount (repeatable), e.g.
    /// `eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/adpipe-workloads`.
    #[arg(long = "workload-service-account-annotation", value_parser = parse_key_value)]
    service_account_annotations: Vec<(String, String)>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "ADPIPE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Namespace of the leader Lease; default: the pod's namespace (POD_NAMESPACE), else the
    /// kubeconfig's.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// This replica's name in the leader Lease; default: the pod name (POD_NAME), else the
    /// host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[command(flatten)]
    log: adpipe_runtime::LogArgs,
}

/// The Lease the replicas compete for.
const LEASE_NAME: &str = "adpipe-operator";
/// Environment the operator passes on to every workload it creates.
const FORWARDED_ENV: [&str; 2] = ["AWS_REGION", "AWS_ENDPOINT_URL"];

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, found `{text}`")),
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => match adpipe_operator::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("failed to render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            adpipe_runtime::init_logging(&args.log);
            adpipe_runtime::block_on_main(run(args))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("failed to configure the Kubernetes client (KUBECONFIG or in-cluster)")?;
    let registry = prometheus::Registry::new();
    let metrics = OperatorMetrics::register(&registry)?;
    let listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "failed to listen on {} (--metrics-listen)",
                args.metrics_listen
            )
        })?;
    tokio::spawn(adpipe_runtime::serve_metrics(
        listener,
        registry,
        Arc::new(|| {}),
    ));

    let identity = match args.identity {
        Some(identity) => identity,
        None => adpipe_runtime::hostname(),
    };
    let namespace = args
        .leader_election_namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let elector = LeaderElector::new(
        Api::<Lease>::namespaced(client.clone(), &namespace),
        LEASE_NAME,
        &identity,
    );
    tokio::select! {
        acquired = elector.acquire() => acquired.context("failed to take part in leader election")?,
        () = adpipe_runtime::shutdown_signal() => return Ok(()),
    }

    let aws = adpipe_aws::config::load().await;
    let settings = WorkloadSettings {
        receiver_image: args.receiver_image,
        deliverer_image: args.deliverer_image,
        service_account_annotations: args.service_account_annotations.into_iter().collect(),
        env: FORWARDED_ENV
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)))
            .collect::<BTreeMap<_, _>>(),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: adpipe_operator::MANAGER.to_owned(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(Kinesis(adpipe_aws::config::kinesis_client(&aws))),
        settings,
        recorder,
        metrics,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut controller = tokio::spawn(controller::run(ctx, async move {
        let _ = stopped.await;
    }));
    let lost = tokio::select! {
        () = elector.hold() => true,
        () = adpipe_runtime::shutdown_signal() => false,
        _ = &mut controller => false,
    };
    let _ = stop.send(());
    let _ = controller.await;
    if lost {
        anyhow::bail!("lost the leader lease; exiting so a restart competes again");
    }
    elector.release().await;
    Ok(())
}
