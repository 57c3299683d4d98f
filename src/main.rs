//! egressd: parse arguments, run a subcommand, exit with its code.

fn main() -> std::process::ExitCode {
    egressd::cli::main()
}
