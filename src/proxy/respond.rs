//! One mapping from proxy errors to what the client sees: a status, a
//! `Proxy-Status` header (RFC 9209) and a short text body.

use std::io;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

use crate::policy::Reason;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// Everything that stops a request before or while it reaches upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
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
    Auth(super::auth::AuthError),
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

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::NotAProxyRequest => StatusCode::BAD_REQUEST,
            ProxyError::Denied { .. } => StatusCode::FORBIDDEN,
            ProxyError::DnsTimeout | ProxyError::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TooManyTunnels => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Loop => StatusCode::FORBIDDEN,
            ProxyError::Auth(super::auth::AuthError::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Auth(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The RFC 9209 error type; also the access log's `error` class.
    pub fn class(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) | ProxyError::NotAProxyRequest => "http_request_error",
            ProxyError::Denied { by_address: true, .. } => "destination_ip_prohibited",
            ProxyError::Denied { .. } => "http_request_denied",
            ProxyError::Dns(_) => "dns_error",
            ProxyError::DnsTimeout => "dns_timeout",
            ProxyError::ConnectRefused => "connection_refused",
            ProxyError::ConnectTimeout => "connection_timeout",
            ProxyError::ConnectReset => "connection_terminated",
            ProxyError::ConnectOther(_) => "destination_unavailable",
            ProxyError::UpstreamResponse(_) => "http_response_incomplete",
            ProxyError::Overloaded | ProxyError::TooManyTunnels => "connection_limit_reached",
            ProxyError::ResponseTimeout => "connection_read_timeout",
            ProxyError::Loop => "proxy_loop_detected",
            ProxyError::Auth(_) => "http_request_denied",
        }
    }

    /// The response a client gets; `target` names the destination.
    pub fn response(&self, target: &str) -> Response<Body> {
        let text = self.to_string();
        let body = format!("egressd: {target}: {text}\n");
        let mut resp = error_response(self.status(), self.class(), &text, body);
        if resp.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            resp.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"egressd\""),
            );
        }
        resp
    }
}

/// A response with a `Proxy-Status` header naming `class` and `details`.
pub fn error_response(status: StatusCode, class: &str, details: &str, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let value = format!("egressd; error={class}; details={}", sf_string(details));
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert("proxy-status", v);
    }
    resp
}

/// A structured-field string (RFC 8941): printable ASCII, quoted, with `"`
/// and `\` escaped. Other characters are dropped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
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
        assert_eq!(sf_string("a \"b\" \\ c\n"), "\"a \\\"b\\\" \\\\ c\"");
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
}
