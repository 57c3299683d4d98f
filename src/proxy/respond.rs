//! The one exit: every way a request or tunnel can stop, as one typed error
//! ([`ProxyError`]), and one mapping from it to what the client sees (a
//! status, a `Proxy-Status` header per RFC 9209 and a short text body) and
//! to what the log and the metrics say ([`ErrorClass`]).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

use super::auth::AuthError;
use crate::access::event::{ErrorClass, Failure, Why};
use crate::policy::Reason;

/// What a response body can fail with: hyper's errors (bodies relayed from
/// hyper's client) and the proxy's own (bodies it reads itself).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Body = BoxBody<Bytes, BoxError>;

/// Which end of a tunnel failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// Everything that stops a request before, while or after it reaches
/// upstream, from a refused connection to a tunnel cut at shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("this client may not use the proxy")]
    ClientNotAllowed,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("this is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port")]
    NotAProxyRequest,
    #[error("{}", .reason.describe())]
    Denied { reason: Reason, by_address: bool },
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    #[error("DNS lookup timed out")]
    DnsTimeout,
    #[error("upstream refused the connection")]
    ConnectRefused,
    #[error("upstream connection timed out")]
    ConnectTimeout,
    #[error("upstream reset the connection")]
    ConnectReset,
    #[error("upstream unreachable: {0}")]
    ConnectOther(String),
    #[error("upstream closed or failed before a complete response: {0}")]
    UpstreamResponse(String),
    #[error("too many connections")]
    Overloaded,
    #[error("too many open tunnels from this client")]
    TooManyTunnels,
    #[error("upstream sent no response in time")]
    ResponseTimeout,
    #[error("the destination is this proxy itself")]
    Loop,
    #[error("proxy authentication: {}", .0.as_str())]
    Auth(AuthError),
    // After the answer: tunnels, upgraded connections, response bodies.
    /// A read or write on one side of a tunnel failed.
    #[error("{detail}")]
    Io {
        side: Side,
        kind: io::ErrorKind,
        detail: String,
    },
    #[error("no bytes either way for {0:?}")]
    IdleTimeout(Duration),
    #[error("cut at shutdown")]
    Shutdown,
    #[error("TLS server name {sni:?} differs from CONNECT target {target:?}")]
    SniMismatch { sni: String, target: String },
    #[error("the rule allows TLS tunnels only")]
    NotTls,
    #[error("{0}")]
    ClientUpgrade(String),
    #[error("{0}")]
    Upgrade(String),
    #[error("client went away before the response ended")]
    ClientGone,
    #[error("the upstream's TLS certificate is not valid: {0}")]
    UpstreamCertificate(String),
    #[error("TLS with the upstream failed: {0}")]
    UpstreamTls(String),
    #[error("the client refused egressd's certificate ({0}): it does not trust egressd's CA, or pins its own; exempt the host with inspect = false on its rule")]
    ClientRejectedCertificate(String),
    #[error("TLS with the client failed: {0}")]
    ClientTls(String),
    #[error("the request names {0:?}, not the tunnel's host")]
    Misdirected(String),
    #[error("{}", parent_refusal_text(*.status))]
    ParentRefused {
        status: u16,
        proxy_status: Option<String>,
    },
    #[error("the parent proxy is unreachable: {0}")]
    ParentUnreachable(String),
    #[error("the parent proxy did not answer in time")]
    ParentTimeout,
}

fn parent_refusal_text(status: u16) -> String {
    match status {
        407 => "the parent proxy refused egressd's credentials (407): check --upstream-proxy".into(),
        403 => "the parent proxy refused this destination (403)".into(),
        s => format!("the parent proxy answered {s}"),
    }
}

impl ProxyError {
    /// Classifies a failed connect.
    pub fn from_connect(e: &io::Error) -> ProxyError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ProxyError::ConnectRefused,
            io::ErrorKind::TimedOut => ProxyError::ConnectTimeout,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ProxyError::ConnectReset,
            _ => ProxyError::ConnectOther(e.to_string()),
        }
    }

    /// Classifies a failed TLS handshake with the upstream: a certificate
    /// that does not verify names its reason (expired, unknown issuer,
    /// name mismatch).
    pub fn from_tls(e: &io::Error) -> ProxyError {
        use rustls::CertificateError as C;
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(c)) => ProxyError::UpstreamCertificate(
                match c {
                    C::Expired | C::ExpiredContext { .. } => "expired",
                    C::NotValidYet | C::NotValidYetContext { .. } => "not yet valid",
                    C::UnknownIssuer => "unknown issuer",
                    C::NotValidForName | C::NotValidForNameContext { .. } => "name mismatch",
                    C::Revoked => "revoked",
                    C::BadSignature => "bad signature",
                    _ => "invalid",
                }
                .to_string(),
            ),
            Some(other) => ProxyError::UpstreamTls(other.to_string()),
            None if e.kind() == io::ErrorKind::ConnectionReset => ProxyError::ConnectReset,
            None => ProxyError::UpstreamTls(e.to_string()),
        }
    }

    /// Classifies a failed TLS handshake with the client: an alert that
    /// says it does not accept egressd's certificate is its own class.
    pub fn from_client_tls(e: &io::Error) -> ProxyError {
        use rustls::AlertDescription as A;
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(
                a @ (A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate),
            )) => ProxyError::ClientRejectedCertificate(format!("{a:?}")),
            Some(other) => ProxyError::ClientTls(other.to_string()),
            None => ProxyError::io(Side::Client, e),
        }
    }

    /// A failed read or write on one side of a tunnel.
    pub fn io(side: Side, e: &io::Error) -> ProxyError {
        ProxyError::Io {
            side,
            kind: e.kind(),
            detail: e.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            BadRequest(_) | NotAProxyRequest => StatusCode::BAD_REQUEST,
            Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Denied { .. } | Loop | ClientNotAllowed | SniMismatch { .. } | NotTls => StatusCode::FORBIDDEN,
            DnsTimeout | ConnectTimeout | ResponseTimeout | ParentTimeout => StatusCode::GATEWAY_TIMEOUT,
            Overloaded | Shutdown => StatusCode::SERVICE_UNAVAILABLE,
            TooManyTunnels | Auth(AuthError::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
            Auth(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The RFC 9209 error type; also the access log's `error` class.
    pub fn class(&self) -> ErrorClass {
        use io::ErrorKind::*;
        use ErrorClass as C;
        match self {
            ProxyError::ClientNotAllowed => C::ClientNotAllowed,
            ProxyError::BadRequest(_) | ProxyError::NotAProxyRequest => C::HttpRequestError,
            ProxyError::Denied { by_address: true, .. } => C::DestinationIpProhibited,
            ProxyError::Denied { .. } | ProxyError::Auth(_) => C::HttpRequestDenied,
            ProxyError::Dns(_) => C::DnsError,
            ProxyError::DnsTimeout => C::DnsTimeout,
            ProxyError::ConnectRefused => C::ConnectionRefused,
            ProxyError::ConnectTimeout => C::ConnectionTimeout,
            ProxyError::ConnectReset => C::ConnectionTerminated,
            ProxyError::ConnectOther(_) => C::DestinationUnavailable,
            ProxyError::UpstreamResponse(_) => C::HttpResponseIncomplete,
            ProxyError::Overloaded | ProxyError::TooManyTunnels => C::ConnectionLimitReached,
            ProxyError::ResponseTimeout => C::ConnectionReadTimeout,
            ProxyError::Loop => C::ProxyLoopDetected,
            ProxyError::Io { side, kind, .. } => match (kind, side) {
                (ConnectionReset | ConnectionAborted, Side::Client) => C::ClientReset,
                (ConnectionReset | ConnectionAborted, Side::Upstream) => C::UpstreamReset,
                (BrokenPipe, Side::Client) => C::ClientClosed,
                (BrokenPipe, Side::Upstream) => C::UpstreamClosed,
                (_, Side::Client) => C::ClientError,
                (_, Side::Upstream) => C::UpstreamError,
            },
            ProxyError::IdleTimeout(_) => C::IdleTimeout,
            ProxyError::Shutdown => C::Shutdown,
            ProxyError::SniMismatch { .. } => C::SniMismatch,
            ProxyError::NotTls => C::NotTls,
            ProxyError::ClientUpgrade(_) => C::ClientUpgradeFailed,
            ProxyError::Upgrade(_) => C::UpgradeFailed,
            ProxyError::ClientGone => C::ClientClosed,
            ProxyError::UpstreamCertificate(_) => C::TlsCertificateError,
            ProxyError::UpstreamTls(_) => C::TlsProtocolError,
            ProxyError::ClientRejectedCertificate(_) => C::ClientRejectedCertificate,
            ProxyError::ClientTls(_) => C::ClientTlsError,
            ProxyError::Misdirected(_) => C::Misdirected,
            ProxyError::ParentRefused { .. } => C::ParentRefused,
            ProxyError::ParentUnreachable(_) => C::ParentUnreachable,
            ProxyError::ParentTimeout => C::ParentTimeout,
        }
    }

    /// The text a log line carries beside the class; denials say it all
    /// with their reason.
    pub fn detail(&self) -> Option<String> {
        match self {
            ProxyError::Denied { .. } => None,
            e => Some(e.to_string()),
        }
    }

    /// The response a client gets; `target` names the destination (empty
    /// when no request was read).
    pub fn response(&self, target: &str) -> Response<Body> {
        let mut headers = http::HeaderMap::new();
        let (status, body) = self.answer(target, &mut headers);
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// The same answer as raw HTTP/1.1 bytes, for connections refused
    /// before any request is read; the connection closes after it.
    pub fn refusal_bytes(&self) -> Vec<u8> {
        let mut headers = http::HeaderMap::new();
        let (status, body) = self.answer("", &mut headers);
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in &headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(
            format!(
                "content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        out
    }

    /// The status, the headers (into `h`) and the body of the answer. Built
    /// by appending, not `format!`: every denial pays for this.
    fn answer(&self, target: &str, h: &mut http::HeaderMap) -> (StatusCode, String) {
        use std::fmt::Write as _;
        let status = self.status();
        // The sentence is written once, into the body, and read back from
        // there for the Proxy-Status details.
        let mut body = String::with_capacity(target.len() + 96);
        body.push_str("egressd: ");
        if !target.is_empty() {
            // Credentials in the target are never repeated.
            body.push_str(&crate::target::without_userinfo(target));
            body.push_str(": ");
        }
        let start = body.len();
        let _ = write!(body, "{self}");
        let text = &body[start..];
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // RFC 9209: one entry per intermediary, the one nearest the origin
        // first; a parent's refusal keeps its own entry and status.
        let mut value = String::with_capacity(text.len() + 64);
        let parent = match self {
            ProxyError::ParentRefused { status, proxy_status } => Some((status, proxy_status)),
            _ => None,
        };
        if let Some((_, Some(p))) = parent {
            value.push_str(p);
            value.push_str(", ");
        }
        value.push_str("egressd; error=");
        value.push_str(self.class().as_str());
        if let Some((status, _)) = parent {
            value.push_str("; received-status=");
            value.push_str(itoa::Buffer::new().format(*status));
        }
        value.push_str("; details=");
        sf_string(text, &mut value);
        body.push('\n');
        if let Ok(v) = HeaderValue::try_from(value) {
            h.insert(PROXY_STATUS, v);
        }
        if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            h.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"egressd\""),
            );
        }
        (status, body)
    }
}

/// RFC 9209's field, not among `http`'s standard names: made once.
const PROXY_STATUS: http::HeaderName = http::HeaderName::from_static("proxy-status");

/// What an event says of a request or tunnel that ended with this error.
impl Failure for ProxyError {
    fn class(&self) -> ErrorClass {
        ProxyError::class(self)
    }

    fn detail(&self) -> Option<String> {
        ProxyError::detail(self)
    }

    fn why(&self) -> Option<Why> {
        match self {
            ProxyError::Auth(a) => Some(Why::Auth(*a)),
            ProxyError::NotAProxyRequest => Some(Why::NotAProxyRequest),
            _ => None,
        }
    }
}

/// A structured-field string (RFC 8941): printable ASCII, quoted, with `"`
/// and `\` escaped. Other characters are dropped. Plain runs are copied
/// whole: every denial's Proxy-Status passes here.
fn sf_string(s: &str, out: &mut String) {
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        if (' '..='~').contains(&c) && c != '"' && c != '\\' {
            continue;
        }
        out.push_str(&s[plain..i]);
        if c == '"' || c == '\\' {
            out.push('\\');
            out.push(c);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_is_a_valid_structured_field() {
        let mut out = String::from("x=");
        sf_string("a \"b\" \\ c\n", &mut out);
        assert_eq!(out, "x=\"a \\\"b\\\" \\\\ c\"");
        let mut out = String::new();
        sf_string("é\tx~\u{7f}ü\"", &mut out);
        assert_eq!(out, "\"x~\\\"\"");
        let r = ProxyError::Denied {
            reason: Reason::NoMatch,
            by_address: false,
        }
        .response("CONNECT evil.example:443");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            r.headers()["proxy-status"],
            "egressd; error=http_request_denied; details=\"no rule allows this destination\""
        );
    }

    #[test]
    fn a_parent_s_refusal_keeps_its_entry_and_status() {
        let r = ProxyError::ParentRefused {
            status: 403,
            proxy_status: Some("corp; error=http_request_denied".into()),
        }
        .response("CONNECT x.example:443");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            r.headers()["proxy-status"],
            "corp; error=http_request_denied, egressd; error=parent_refused; received-status=403; \
             details=\"the parent proxy refused this destination (403)\""
        );
        assert_eq!(ProxyError::ParentTimeout.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn refusals_are_whole_responses() {
        let raw = String::from_utf8(ProxyError::Overloaded.refusal_bytes()).unwrap();
        assert!(raw.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{raw}");
        assert!(
            raw.contains("proxy-status: egressd; error=connection_limit_reached"),
            "{raw}"
        );
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{raw}");
        assert!(head.contains("connection: close"));
    }
}
