//! The access event's schema: one [`Event`] per request or tunnel, its
//! kinds, classes and reasons, and the [`AccessSink`] trait every consumer
//! of finished events implements (metrics, the log line, the live view).
//! A leaf: it knows the policy's types and nothing of the proxy, so the
//! proxy, the sinks and the readers of logs all build on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::policy::{Flags, Reason, Resolved, Verdict, Via};

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
    /// A question to egressd's DNS listener (`--dns-listen`): its name is
    /// the host, its type the method.
    Dns,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Http => "http",
            EventKind::Inspected => "inspected",
            EventKind::Transparent => "transparent",
            EventKind::Dns => "dns",
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials: 407 asks for them.
    Missing,
    /// Wrong user or password: 407.
    Failed,
    /// Too many failures from this client: 429.
    RateLimited,
}

impl AuthError {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthError::Missing => "auth_required",
            AuthError::Failed => "auth_failed",
            AuthError::RateLimited => "auth_rate_limited",
        }
    }
}

/// Why the event came out as it did: the policy's reason, or a refusal
/// that came before any decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Policy(Reason),
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

/// Who an error class blames, for metrics: only `Upstream` classes count
/// as upstream errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The policy said no, or the client asked for something it may not have.
    Policy,
    Client,
    Upstream,
    /// The proxy's own limits or lifecycle.
    Proxy,
}

macro_rules! classes {
    ($($variant:ident => $name:literal, $party:ident;)*) => {
        /// The class of an error: the RFC 9209 error type where one fits, and
        /// the access log's `error` field.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorClass { $($variant),* }

        impl ErrorClass {
            pub const ALL: &'static [ErrorClass] = &[$(ErrorClass::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorClass::$variant => $name),* }
            }

            pub fn party(self) -> Party {
                match self { $(ErrorClass::$variant => Party::$party),* }
            }
        }
    };
}

classes! {
    HttpRequestError => "http_request_error", Client;
    HttpRequestDenied => "http_request_denied", Policy;
    DestinationIpProhibited => "destination_ip_prohibited", Policy;
    ClientNotAllowed => "client_not_allowed", Policy;
    DnsError => "dns_error", Upstream;
    DnsTimeout => "dns_timeout", Upstream;
    ConnectionRefused => "connection_refused", Upstream;
    ConnectionTimeout => "connection_timeout", Upstream;
    ConnectionTerminated => "connection_terminated", Upstream;
    DestinationUnavailable => "destination_unavailable", Upstream;
    HttpResponseIncomplete => "http_response_incomplete", Upstream;
    ConnectionReadTimeout => "connection_read_timeout", Upstream;
    ConnectionLimitReached => "connection_limit_reached", Proxy;
    ProxyLoopDetected => "proxy_loop_detected", Policy;
    ClientReset => "client_reset", Client;
    ClientClosed => "client_closed", Client;
    ClientError => "client_error", Client;
    UpstreamReset => "upstream_reset", Upstream;
    UpstreamClosed => "upstream_closed", Upstream;
    UpstreamError => "upstream_error", Upstream;
    IdleTimeout => "idle_timeout", Proxy;
    Shutdown => "shutdown", Proxy;
    SniMismatch => "sni_mismatch", Policy;
    NotTls => "not_tls", Policy;
    ClientUpgradeFailed => "client_upgrade_failed", Client;
    UpgradeFailed => "upgrade_failed", Upstream;
    TlsCertificateError => "tls_certificate_error", Upstream;
    TlsProtocolError => "tls_protocol_error", Upstream;
    ClientRejectedCertificate => "client_rejected_certificate", Client;
    ClientTlsError => "client_tls_error", Client;
    Misdirected => "misdirected_request", Client;
    ParentRefused => "parent_refused", Upstream;
    ParentUnreachable => "parent_unreachable", Upstream;
    ParentTimeout => "parent_timeout", Upstream;
}

/// How a request or tunnel that failed says so in its event (the proxy's
/// error type implements it).
pub trait Failure {
    fn class(&self) -> ErrorClass;
    /// Text beside the class, when the class does not say it all.
    fn detail(&self) -> Option<String>;
    /// The reason, for a refusal that came before any decision.
    fn why(&self) -> Option<Why>;
}

/// One finished request or tunnel: what every sink is given.
#[derive(Debug, Clone)]
pub struct Event {
    pub client: SocketAddr,
    pub user: Option<Arc<str>>,
    pub kind: EventKind,
    pub method: Method,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub verdict: Verdict,
    pub why: Option<Why>,
    pub rule: Option<Arc<str>>,
    pub flags: Flags,
    pub policy_version: Arc<str>,
    /// The address dialled (or last tried).
    pub dialled: Option<Resolved>,
    /// Which way an allowed request left: direct, or through the parent.
    pub via: Option<Via>,
    /// Where a redirected connection was going (transparent mode).
    pub original_dst: Option<SocketAddr>,
    /// The original destination is none of the addresses egressd checked
    /// for the name (and so was not dialled).
    pub dst_mismatch: bool,
    /// The server name a tunnel's ClientHello asked for.
    pub sni: Option<String>,
    /// Where the name's addresses came from: `cache`, `upstream`, or
    /// `stale` (the resolver failed and an expired answer was used).
    pub dns: Option<crate::dns::Source>,
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
    pub error: Option<ErrorClass>,
    pub detail: Option<String>,
    /// What the DNS listener answered (kind `dns`).
    pub answer: Option<Box<DnsAnswer>>,
}

/// A DNS listener's answer: its response code, the addresses given and
/// for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub rcode: &'static str,
    pub addrs: Vec<std::net::IpAddr>,
    pub ttl: u32,
}

impl Event {
    /// An event just begun: denied, with nothing known but who asked what.
    pub fn new(client: SocketAddr, kind: EventKind, method: Method, policy_version: Arc<str>) -> Event {
        Event {
            client,
            user: None,
            kind,
            method,
            host: String::new(),
            port: 0,
            path: None,
            verdict: Verdict::Deny,
            why: None,
            rule: None,
            flags: Flags::default(),
            policy_version,
            dialled: None,
            via: None,
            original_dst: None,
            dst_mismatch: false,
            sni: None,
            dns: None,
            status: 0,
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
            error: None,
            detail: None,
            answer: None,
        }
    }

    /// The policy's reason, when the policy decided.
    pub fn reason(&self) -> Option<Reason> {
        match self.why {
            Some(Why::Policy(r)) => Some(r),
            _ => None,
        }
    }
}

/// Where finished events go. Registered once, at start
/// ([`crate::proxy::Shared::new`]); each is told every event, in order.
pub trait AccessSink: Send + Sync {
    fn record(&self, event: &Event);
}

/// The registered sinks, shared by every event.
pub type Sinks = Arc<[Arc<dyn AccessSink>]>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_distinct() {
        let mut names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(ErrorClass::ConnectionRefused.party(), Party::Upstream);
        assert_eq!(ErrorClass::HttpRequestDenied.party(), Party::Policy);
    }
}
