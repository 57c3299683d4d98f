//! The access event: one per request or tunnel, built from the pipeline's
//! typed results and finished once. [`Access::finish`] logs it (on its own
//! tracing target, [`TARGET`]) and counts it in the metrics.
//!
//! This module owns the event's schema: the field names written by
//! [`Access::finish`] are the ones [`Record`] reads back, which is what
//! `egressd report` parses (a test round-trips one through the other).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Method;

use crate::key;
use crate::live::{Finished, Live};
use crate::metrics::{Metrics, Sample};
use crate::policy::{Candidate, Decision, Flags, Policy, Resolved, Verdict, Via};
use crate::proxy::auth::AuthError;
use crate::proxy::respond::{ErrorClass, ProxyError};
use crate::telemetry::Line;

/// Target of access-log events.
pub const TARGET: &str = "egressd::access";

/// What kind of traffic an event describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A `CONNECT` tunnel.
    Connect,
    /// An absolute-form plain HTTP request (and its upgrade, if any).
    Http,
    /// A request inside an inspected TLS tunnel.
    Inspected,
    /// A connection redirected to a transparent listener (or a plain HTTP
    /// request on one): decided by SNI, `Host` or original destination.
    Transparent,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Http => "http",
            EventKind::Inspected => "inspected",
            EventKind::Transparent => "transparent",
        }
    }
}

/// Why the event came out as it did: the policy's reason, or a refusal
/// that came before any decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Policy(crate::policy::Reason),
    Auth(AuthError),
    NotAProxyRequest,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Policy(r) => r.as_str(),
            Why::Auth(a) => a.as_str(),
            Why::NotAProxyRequest => "not_a_proxy_request",
        }
    }
}

/// One request or tunnel, as it goes through the pipeline.
#[derive(Debug)]
pub struct Access {
    start: Instant,
    client: SocketAddr,
    user: Option<Arc<str>>,
    kind: EventKind,
    method: Method,
    host: String,
    port: u16,
    path: Option<String>,
    verdict: Verdict,
    why: Option<Why>,
    rule: Option<Arc<str>>,
    flags: Flags,
    policy_version: Arc<str>,
    dialled: Option<Resolved>,
    via: Option<Via>,
    /// Where a redirected connection was going (transparent mode).
    original_dst: Option<SocketAddr>,
    /// The original destination is none of the addresses egressd checked
    /// for the name (and so was not dialled).
    dst_mismatch: bool,
    sni: Option<String>,
    status: u16,
    bytes_up: u64,
    bytes_down: u64,
    error: Option<ErrorClass>,
    detail: Option<String>,
    metrics: Arc<Metrics>,
    live: Option<Arc<Live>>,
}

impl Access {
    /// Starts the event of a request the client sent under `policy`.
    pub fn start(
        client: SocketAddr,
        kind: EventKind,
        method: &Method,
        policy: &Policy,
        metrics: Arc<Metrics>,
        live: Option<Arc<Live>>,
    ) -> Access {
        Access {
            start: Instant::now(),
            client,
            user: None,
            kind,
            method: method.clone(),
            host: String::new(),
            port: 0,
            path: None,
            verdict: Verdict::Deny,
            why: None,
            rule: None,
            flags: Flags::default(),
            policy_version: policy.version_shared(),
            dialled: None,
            via: None,
            original_dst: None,
            dst_mismatch: false,
            sni: None,
            status: 0,
            bytes_up: 0,
            bytes_down: 0,
            error: None,
            detail: None,
            metrics,
            live,
        }
    }

    /// The authenticated user, and the version of the policy that applies
    /// to them.
    pub fn admitted(&mut self, user: Option<Arc<str>>, policy: &Policy) {
        self.user = user;
        self.policy_version = policy.version_shared();
    }

    /// The target as the client wrote it, before it could be read.
    pub fn raw_target(&mut self, host: &str, path: Option<&str>) {
        self.host.clear();
        self.host.push_str(host);
        self.path = path.map(str::to_string);
    }

    /// The normalised target.
    pub fn target(&mut self, c: &Candidate) {
        use std::fmt::Write as _;
        self.host.clear();
        let _ = write!(self.host, "{}", c.host);
        self.port = c.port;
    }

    /// The decision that let the request through, or stopped it.
    pub fn decided(&mut self, policy: &Policy, d: &Decision) {
        self.verdict = d.verdict;
        self.why = Some(Why::Policy(d.reason));
        self.rule = d.rule.map(|r| policy.rule(r).id.clone());
        self.flags = d.flags;
    }

    /// A redirected connection (transparent mode) and where it was going.
    pub fn transparent(&mut self, original: SocketAddr) {
        self.kind = EventKind::Transparent;
        self.original_dst = Some(original);
    }

    pub fn client(&self) -> SocketAddr {
        self.client
    }

    pub fn original_dst(&self) -> Option<SocketAddr> {
        self.original_dst
    }

    /// The app's own idea of the address differs from egressd's answer.
    pub fn dst_mismatch(&mut self) {
        self.dst_mismatch = true;
    }

    /// Which way the allowed request left: direct, or through the parent.
    pub fn via(&mut self, via: Via) {
        self.via = Some(via);
    }

    /// The address dialled (or last tried).
    pub fn dialled(&mut self, t: Resolved) {
        self.dialled = Some(t);
    }

    pub fn status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn bytes(&mut self, up: u64, down: u64) {
        self.bytes_up += up;
        self.bytes_down += down;
    }

    /// The server name a tunnel's ClientHello asked for.
    pub fn sni(&mut self, sni: Option<String>) {
        self.sni = sni;
    }

    /// Ends the event: how it ended, logged once and counted once.
    pub fn finish(mut self, end: Result<(), &ProxyError>) {
        if let Err(e) = end {
            self.error = Some(e.class());
            self.detail = e.detail();
            if self.why.is_none() {
                self.why = match e {
                    ProxyError::Auth(a) => Some(Why::Auth(*a)),
                    ProxyError::NotAProxyRequest => Some(Why::NotAProxyRequest),
                    _ => None,
                };
            }
        }
        self.metrics.record(&Sample {
            kind: self.kind.as_str(),
            verdict: self.verdict,
            method: &self.method,
            rule: self.rule.as_ref(),
            reason: self.why.map(Why::as_str),
            error: self.error,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            via: self.via.map(Via::as_str),
        });
        if let Some((sink, json)) = crate::logsink::access() {
            // EGRESSD_LOG can still turn access events off (`warn`).
            if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
                sink.line(|b| self.write_line(b, json));
            }
        }
        if let Some(live) = self.live.take() {
            live.record(Finished {
                client: self.client.ip(),
                user: self.user.take(),
                kind: self.kind,
                method: &self.method,
                host: std::mem::take(&mut self.host),
                port: self.port,
                path: self.path.take(),
                verdict: self.verdict,
                reason: match self.why {
                    Some(Why::Policy(r)) => Some(r),
                    _ => None,
                },
                why: self.why.map_or("", Why::as_str),
                rule: self.rule.take(),
                status: self.status,
            });
        }
    }

    /// Writes the event as one log line (JSON or readable text).
    pub fn write_line(&self, b: &mut Vec<u8>, json: bool) {
        let mut l = Line::start(b, json, TARGET, "access");
        l.addr(key!("client"), self.client);
        l.opt_str(key!("user"), self.user.as_deref());
        l.token(key!("kind"), self.kind.as_str());
        l.token(key!("method"), self.method.as_str());
        l.str(key!("host"), &self.host);
        l.u64(key!("port"), u64::from(self.port));
        l.opt_str(key!("path"), self.path.as_deref());
        l.token(key!("decision"), self.verdict.as_str());
        l.token(key!("reason"), self.why.map_or("", Why::as_str));
        l.opt_str(key!("rule"), self.rule.as_deref());
        l.list(key!("flags"), self.flags.names());
        l.token(key!("policy_version"), &self.policy_version);
        if let Some(t) = self.dialled {
            l.addr(key!("addr"), t.addr);
        }
        l.bool(key!("pinned"), self.dialled.is_some_and(|t| t.pinned));
        if let Some(v) = self.via {
            l.token(key!("via"), v.as_str());
        }
        if let Some(o) = self.original_dst {
            l.addr(key!("original_dst"), o);
        }
        if self.dst_mismatch {
            l.bool(key!("dst_mismatch"), true);
        }
        l.opt_str(key!("sni"), self.sni.as_deref());
        l.u64(key!("status"), u64::from(self.status));
        l.u64(key!("bytes_up"), self.bytes_up);
        l.u64(key!("bytes_down"), self.bytes_down);
        l.millis(key!("duration_ms"), self.start.elapsed());
        if let Some(e) = self.error {
            l.token(key!("error"), e.as_str());
        }
        l.opt_str(key!("detail"), self.detail.as_deref());
        l.end(TARGET);
    }
}

/// An access event read back from a JSON log line: the fields `report`
/// needs, borrowed from the line where they need no unescaping.
#[derive(Debug, serde::Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub target: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub client: Option<std::borrow::Cow<'a, str>>,
    pub kind: EventKind,
    #[serde(borrow, default)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub host: std::borrow::Cow<'a, str>,
    pub port: u16,
    #[serde(borrow, default)]
    pub path: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub flags: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> Record<'a> {
    /// Reads one log line; `None` for lines that are not access events.
    pub fn parse(line: &'a str) -> Option<Record<'a>> {
        let r: Record = serde_json::from_str(line).ok()?;
        (r.target == TARGET).then_some(r)
    }
}
