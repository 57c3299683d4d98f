//! Logging: the subscriber (JSON or readable), and the access-log event that
//! every request and tunnel emits exactly once, on its own target
//! `egressd::access`.

use std::fmt;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing_subscriber::EnvFilter;

use crate::policy::Flags;

/// Target of access-log events.
pub const ACCESS_TARGET: &str = "egressd::access";

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

/// Everything one access event says. Filled in as the request proceeds and
/// emitted once at its end.
#[derive(Debug)]
pub struct Access {
    pub start: Instant,
    pub client: SocketAddr,
    /// The authenticated user, when the proxy requires authentication.
    pub user: Option<Arc<str>>,
    /// `connect` or `http`.
    pub kind: &'static str,
    pub method: std::borrow::Cow<'static, str>,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub decision: &'static str,
    pub reason: &'static str,
    pub rule: Option<Arc<str>>,
    pub flags: Flags,
    pub policy_version: Arc<str>,
    pub addr: Option<SocketAddr>,
    pub pinned: bool,
    /// The TLS server name a tunnel's client asked for.
    pub sni: Option<String>,
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub error: Option<&'static str>,
    pub detail: Option<String>,
    /// Where the event is also counted.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A request method, borrowed from a static name for the registered ones.
fn method_name(m: &str) -> std::borrow::Cow<'static, str> {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match KNOWN.iter().find(|k| **k == m) {
        Some(k) => std::borrow::Cow::Borrowed(k),
        None => std::borrow::Cow::Owned(m.to_string()),
    }
}

impl Access {
    pub fn new(client: SocketAddr, kind: &'static str, method: &str, policy_version: Arc<str>) -> Access {
        Access {
            start: Instant::now(),
            client,
            user: None,
            kind,
            method: method_name(method),
            host: String::new(),
            port: 0,
            path: None,
            decision: "deny",
            reason: "",
            rule: None,
            flags: Flags::default(),
            policy_version,
            addr: None,
            pinned: false,
            sni: None,
            status: 0,
            bytes_up: 0,
            bytes_down: 0,
            error: None,
            detail: None,
            metrics: None,
        }
    }

    pub fn emit(&self) {
        if let Some(m) = &self.metrics {
            m.record(self);
        }
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return;
        }
        let flags = self.flags.names().join(",");
        tracing::info!(
            target: ACCESS_TARGET,
            client = %self.client,
            user = self.user.as_deref(),
            kind = self.kind,
            method = %Esc(&self.method),
            host = %Esc(&self.host),
            port = self.port,
            path = self.path.as_deref().map(Esc).map(tracing::field::display),
            decision = self.decision,
            reason = self.reason,
            rule = self.rule.as_deref(),
            flags = %flags,
            policy_version = &*self.policy_version,
            addr = self.addr.map(tracing::field::display),
            pinned = self.pinned,
            sni = self.sni.as_deref().map(Esc).map(tracing::field::display),
            status = self.status,
            bytes_up = self.bytes_up,
            bytes_down = self.bytes_down,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            error = self.error,
            detail = self.detail.as_deref().map(Esc).map(tracing::field::display),
            "access"
        );
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
