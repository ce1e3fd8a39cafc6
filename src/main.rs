//! `adpipe`: run every pipeline on one machine, or check pipeline files.

mod args;
mod local;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    adpipe_runtime::init_logging(&cli.log);
    match cli.command {
        Command::Local(args) => local::main(args),
        Command::Validate(args) => args::validate(&args),
    }
}
