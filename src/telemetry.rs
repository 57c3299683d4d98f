//! Logging: the subscriber (JSON or readable) and escaping of values taken
//! from requests. The access event itself is [`crate::access`].

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, readable otherwise.
    Auto,
    Json,
    Text,
}

/// Installs the global subscriber. Lines are written by a background thread
/// so that formatting and I/O stay off the request path; keep the returned
/// guard alive until exit so that buffered lines are flushed.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    // The line queue is allocated up front: a few thousand lines absorb
    // bursts without holding megabytes at idle.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .lossy(false)
        .finish(std::io::stdout());
    let filter = EnvFilter::try_from_env("EGRESSD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
    guard
}

/// Writes a string with control characters escaped, so that no value taken
/// from a request can start a new log line or drive a terminal.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters() {
        assert_eq!(Esc("a\nb\u{1b}[31m").to_string(), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(Esc("plain/ü").to_string(), "plain/ü");
    }
}
