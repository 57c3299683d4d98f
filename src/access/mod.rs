//! The access event: one per request or tunnel, built from the pipeline's
//! typed results by the code that walks the steps, and finished once.
//! [`Access::finish`] hands the [`Event`] to every registered
//! [`AccessSink`]: the metrics, the log line ([`line::LogLine`]) and the
//! live view, registered at start in [`crate::proxy::Shared::new`].
//!
//! A new sink (an OpenTelemetry exporter, say) is one new file that
//! implements [`AccessSink`] and one line in that registration.
//! [`event`] holds the schema and is a leaf.

pub mod event;
pub mod line;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Method;

pub use event::{AccessSink, AuthError, DnsAnswer, ErrorClass, Event, EventKind, Failure, Party, Sinks, Why};
pub use line::{Record, TARGET};

use crate::policy::{Candidate, Decision, Policy, Resolved, Via};

/// One request or tunnel, as it goes through the pipeline.
pub struct Access {
    start: Instant,
    event: Event,
    sinks: Sinks,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.event.fmt(f)
    }
}

impl Access {
    /// Starts the event of a request the client sent under `policy`.
    pub fn start(
        client: SocketAddr,
        kind: EventKind,
        method: &Method,
        policy: &Policy,
        sinks: Sinks,
    ) -> Access {
        Access {
            start: Instant::now(),
            event: Event::new(client, kind, method.clone(), policy.version_shared()),
            sinks,
        }
    }

    /// The authenticated user, and the version of the policy that applies
    /// to them.
    pub fn admitted(&mut self, user: Option<Arc<str>>, policy: &Policy) {
        self.event.user = user;
        self.event.policy_version = policy.version_shared();
    }

    /// The target as the client wrote it, before it could be read (any
    /// credentials in it cut out).
    pub fn raw_target(&mut self, host: &str, path: Option<&str>) {
        self.event.host.clear();
        self.event.host.push_str(&crate::target::without_userinfo(host));
        self.event.path = path.map(str::to_string);
    }

    /// The normalised target.
    pub fn target(&mut self, c: &Candidate) {
        use std::fmt::Write as _;
        self.event.host.clear();
        let _ = write!(self.event.host, "{}", c.host);
        self.event.port = c.port;
    }

    /// The decision that let the request through, or stopped it.
    pub fn decided(&mut self, policy: &Policy, d: &Decision) {
        self.event.verdict = d.verdict;
        self.event.why = Some(Why::Policy(d.reason));
        self.event.rule = d.rule.map(|r| policy.rule(r).id.clone());
        self.event.flags = d.flags;
    }

    /// A DNS question in a `--dns-forward-zone` zone: answered from the
    /// DNS servers, without the policy; `rule` names the zone.
    pub fn forwarded(&mut self, policy: &Policy, rule: &Arc<str>) {
        self.event.verdict = crate::policy::Verdict::Allow;
        self.event.why = Some(Why::Policy(crate::policy::Reason::Allowed));
        self.event.rule = Some(rule.clone());
        self.event.policy_version = policy.version_shared();
    }

    /// A redirected connection (transparent mode) and where it was going.
    pub fn transparent(&mut self, original: SocketAddr) {
        self.event.kind = EventKind::Transparent;
        self.event.original_dst = Some(original);
    }

    pub fn client(&self) -> SocketAddr {
        self.event.client
    }

    pub fn original_dst(&self) -> Option<SocketAddr> {
        self.event.original_dst
    }

    /// The app's own idea of the address differs from egressd's answer.
    pub fn dst_mismatch(&mut self) {
        self.event.dst_mismatch = true;
    }

    /// Which way the allowed request left: direct, or through the parent.
    pub fn via(&mut self, via: Via) {
        self.event.via = Some(via);
    }

    /// The address dialled (or last tried).
    pub fn dialled(&mut self, t: Resolved) {
        self.event.dialled = Some(t);
    }

    pub fn status(&mut self, status: u16) {
        self.event.status = status;
    }

    pub fn bytes(&mut self, up: u64, down: u64) {
        self.event.bytes_up += up;
        self.event.bytes_down += down;
    }

    /// Where the name's addresses came from, when they were looked up.
    pub fn dns(&mut self, source: Option<crate::dns::Source>) {
        self.event.dns = source;
    }

    /// Text beside the outcome, for an event that did not fail.
    pub fn note(&mut self, detail: String) {
        self.event.detail = Some(detail);
    }

    /// What the DNS listener answered.
    pub fn answered(&mut self, answer: DnsAnswer) {
        self.event.answer = Some(Box::new(answer));
    }

    /// The server name a tunnel's ClientHello asked for.
    pub fn sni(&mut self, sni: Option<String>) {
        self.event.sni = sni;
    }

    /// Ends the event: how it ended, told to every sink once.
    pub fn finish<F: Failure + ?Sized>(mut self, end: Result<(), &F>) {
        let e = &mut self.event;
        if let Err(f) = end {
            e.error = Some(f.class());
            e.detail = f.detail();
            if e.why.is_none() {
                e.why = f.why();
            }
        }
        e.duration = self.start.elapsed();
        for sink in self.sinks.iter() {
            sink.record(&self.event);
        }
    }
}
