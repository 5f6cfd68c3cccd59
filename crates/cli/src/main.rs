//! The `keyward` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keyward_cli::run(keyward_cli::Cli::parse())
}
