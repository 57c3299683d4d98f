//! The access log line: one sink that writes each event as one line (JSON
//! or readable text) on its own tracing target ([`TARGET`]), and the
//! reader of such lines ([`Record`]). The field names written here are the
//! ones [`Record`] reads back, which is what `egressd report` parses (a
//! test round-trips one through the other).

use super::event::{AccessSink, Event, Why};
use crate::key;
use crate::policy::Via;
use crate::telemetry::Line;

/// Target of access-log events.
pub const TARGET: &str = "egressd::access";

/// The log line sink: to the access log's file or stream, when one is set
/// up, and unless `EGRESSD_LOG` turned access events off (`warn`).
pub struct LogLine;

impl AccessSink for LogLine {
    fn record(&self, e: &Event) {
        if let Some((sink, json)) = crate::logsink::access() {
            if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
                sink.line(|b| write_line(e, b, json));
            }
        }
    }
}

/// Writes the event as one log line (JSON or readable text).
pub fn write_line(e: &Event, b: &mut Vec<u8>, json: bool) {
    let mut l = Line::start(b, json, TARGET, "access");
    l.addr(key!("client"), e.client);
    l.opt_str(key!("user"), e.user.as_deref());
    l.token(key!("kind"), e.kind.as_str());
    l.token(key!("method"), e.method.as_str());
    l.str(key!("host"), &e.host);
    l.u64(key!("port"), u64::from(e.port));
    l.opt_str(key!("path"), e.path.as_deref());
    l.token(key!("decision"), e.verdict.as_str());
    l.token(key!("reason"), e.why.map_or("", Why::as_str));
    l.opt_str(key!("rule"), e.rule.as_deref());
    l.list(key!("flags"), e.flags.names());
    l.token(key!("policy_version"), &e.policy_version);
    if let Some(t) = e.dialled {
        l.addr(key!("addr"), t.addr);
    }
    l.bool(key!("pinned"), e.dialled.is_some_and(|t| t.pinned));
    if let Some(v) = e.via {
        l.token(key!("via"), Via::as_str(v));
    }
    if let Some(o) = e.original_dst {
        l.addr(key!("original_dst"), o);
    }
    if e.dst_mismatch {
        l.bool(key!("dst_mismatch"), true);
    }
    l.opt_str(key!("sni"), e.sni.as_deref());
    if let Some(d) = e.dns {
        l.token(key!("dns"), d.as_str());
    }
    l.u64(key!("status"), u64::from(e.status));
    l.u64(key!("bytes_up"), e.bytes_up);
    l.u64(key!("bytes_down"), e.bytes_down);
    l.millis(key!("duration_ms"), e.duration);
    if let Some(c) = e.error {
        l.token(key!("error"), c.as_str());
    }
    l.opt_str(key!("detail"), e.detail.as_deref());
    if let Some(a) = &e.answer {
        l.token(key!("rcode"), a.rcode);
        let addrs: Vec<String> = a.addrs.iter().map(|ip| ip.to_string()).collect();
        l.list(key!("answers"), addrs.iter().map(String::as_str));
        l.u64(key!("ttl"), u64::from(a.ttl));
    }
    l.end(TARGET);
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
    pub kind: super::event::EventKind,
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
