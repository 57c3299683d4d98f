//! egressd: parse arguments, run a subcommand, exit with its code.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    egressd::cli::main()
}
