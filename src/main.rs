//! egressd: parse arguments, run a subcommand, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    egressd::cli::main(egressd::cli::Cli::parse())
}
