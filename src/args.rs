//! Command-line arguments: every flag long-form, with an environment twin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// adpipe: onboard ad partners onto a streaming ingestion pipeline with one YAML file.
#[derive(Debug, Parser)]
#[command(name = "adpipe", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: adpipe_runtime::LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every pipeline on this machine: receiver, embedded stream, deliverer and a
    /// Parquet lake on local disk. No AWS, no Kubernetes.
    Local(LocalArgs),
    /// Check PartnerPipeline files offline, with the rules the API server enforces.
    Validate(ValidateArgs),
}

/// `adpipe local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// A pipeline file or a directory of them (`*.yaml`, `*.yml`); repeatable.
    #[arg(
        long = "pipelines",
        env = "ADPIPE_PIPELINES",
        value_delimiter = ',',
        default_value = "examples/pipelines"
    )]
    pub pipelines: Vec<PathBuf>,
    /// Address of the partner-facing HTTP server.
    #[arg(long, env = "ADPIPE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "ADPIPE_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: std::net::SocketAddr,
    /// Where the lake (`{bucket}/{prefix}/partner=…`) and the embedded stream (`.adpipe/`) live.
    #[arg(long, env = "ADPIPE_LAKE", default_value = "lake")]
    pub lake: PathBuf,
    /// Where partner secrets are read from, laid out as `{secret name}/{key}`.
    #[arg(long, env = "ADPIPE_SECRETS_DIR", default_value = "examples/secrets")]
    pub secrets_dir: PathBuf,
    /// Close lake files at least this often, overriding `spec.deliverer.sink.maxFileAge`
    /// (e.g. `5s` to see files quickly).
    #[arg(long, env = "ADPIPE_FLUSH_INTERVAL", value_parser = adpipe_runtime::parse_duration)]
    pub flush_interval: Option<Duration>,
    /// A MaxMind GeoIP2/GeoLite2 City database for the `geoip` enrichment.
    #[arg(long, env = "ADPIPE_GEOIP_DATABASE")]
    pub geoip_database: Option<PathBuf>,
}

/// `adpipe validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file to check; repeatable.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
}

/// Runs `adpipe validate`: one line per problem, exit 1 if there is any.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let mut failed = false;
    for file in &args.files {
        match adpipe_core::validate::load_file(file) {
            Ok(docs) => {
                for doc in docs {
                    println!(
                        "{}: {} ({}) is valid",
                        file.display(),
                        doc.metadata.name,
                        doc.spec.partner
                    );
                }
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
