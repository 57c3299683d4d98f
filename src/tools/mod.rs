//! The tools as commands: reading inputs, printing results and choosing
//! exit codes around the pure [`crate::audit`] functions. Each command takes
//! plain values (its `*Options`), not the command line's types.

pub mod audit;
pub mod cases;
pub mod check;
pub mod check_names;
pub mod lint;
pub mod report;
pub mod test_policy;
pub mod transparent_rules;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use crate::policy::Policy;

pub const EXIT_DENIED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

/// Output for scripts or for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The exit code of a completeness report: 1 when anything was (or would
/// be) denied, as `check` answers, unless `--exit-zero`.
fn denied_exit(summary: &crate::audit::Summary, exit_zero: bool) -> ExitCode {
    if !exit_zero && summary.denied + summary.would_deny > 0 {
        ExitCode::from(EXIT_DENIED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads the policy a tool judges by (the built-in one for `None`), or
/// says why not with the bad-input exit code.
fn load(path: Option<&Path>) -> Result<Policy, ExitCode> {
    Policy::load(path).map_err(bad_input)
}

/// Whether a bad-input error is also written to stdout as JSON: a tool
/// asked for `--format json` answers in JSON even when it cannot run. Set
/// once by the tool that runs (one per process).
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn errors_as_json(json: bool) {
    JSON_ERRORS.store(json, std::sync::atomic::Ordering::Relaxed);
}

/// Says why the input cannot be used (stderr, and stdout as
/// `{"error": ..., "exit_code": 2}` under `--format json`) and gives the
/// bad-input exit code.
pub(crate) fn bad_input(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("egressd: {msg}");
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        println!(
            "{}",
            serde_json::json!({"error": msg.to_string(), "exit_code": EXIT_BAD_INPUT})
        );
    }
    ExitCode::from(EXIT_BAD_INPUT)
}

pub(crate) fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let f = std::fs::File::open(path)?;
    lines_of(BufReader::new(f))
}

pub(crate) fn lines_of(r: impl BufRead) -> std::io::Result<Vec<String>> {
    let mut v = Vec::new();
    for line in r.lines() {
        let line = line?;
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            v.push(t.to_string());
        }
    }
    Ok(v)
}

/// A progress bar on stderr sized to the input, shown only when stderr is
/// a terminal and only once the input has taken more than two seconds
/// (a quick run stays quiet).
pub(crate) fn progress(len: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::hidden());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    ) {
        pb.set_style(style);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let later = pb.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(2));
            if !later.is_finished() {
                later.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
        });
    }
    pb
}
