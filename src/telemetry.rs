//! Logging set-up for the binary.

use tracing_subscriber::EnvFilter;

use crate::args::LogArgs;

/// Installs a `tracing` subscriber writing to stderr, filtered by `--log-level`.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
