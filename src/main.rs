//! `adpipe`: run every pipeline on one machine, or check pipeline files.

mod args;
mod local;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// mimalloc instead of glibc's malloc: the hot paths allocate many small, short-lived
/// buffers per event, where glibc spent a fifth of the CPU (`bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    adpipe_runtime::init_logging(&cli.log);
    match cli.command {
        Command::Local(args) => local::main(args),
        Command::Validate(args) => args::validate(&args),
    }
}
