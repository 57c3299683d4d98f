//! Absolute-form HTTP requests (`GET http://host/path HTTP/1.1`): decide on
//! host, port and normalised path, then forward through a pooled client that
//! dials exactly the checked address, streaming bodies both ways.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::connect::fail;
use super::relay::{relay, FirstCheck};
use super::respond::{Body, ProxyError};
use super::{authorize, ProxyConfig, Shared};
use crate::policy::target::split_host_port;
use crate::policy::{Candidate, Kind, SniMode};
use crate::telemetry::Access;

pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;
pub type UpstreamClient = Client<Connector, UpstreamBody>;

/// Dials the IP literal in the request URI (the address the policy checked)
/// and nothing else: the pool is keyed by that address.
#[derive(Clone, Debug)]
pub struct Connector {
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.timeout;
        Box::pin(async move {
            let host = uri.host().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = host.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "connector dials checked IPs only")
            })?;
            let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(80));
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}

pub fn upstream_client(config: &ProxyConfig) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .set_host(false)
        .build(Connector {
            timeout: config.connect_timeout,
        })
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), and the proxy's own.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes hop-by-hop fields, including those the `Connection` field names.
/// Fields the proxy sets itself or that carry framing are never removed on
/// a client's say-so (`Connection: Host` does not drop `Host`).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a
    // lookup per hop-by-hop name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH)
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
}

fn wants_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if conn_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    upstream: &UpstreamClient,
    mut req: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let (policy, user) = match shared.admit(req.headers(), client.ip()) {
        Ok(x) => x,
        Err(e) => {
            let policy = shared.policy.load_full();
            let mut access = shared.access(client, "http", req.method().as_str(), &policy);
            access.reason = e.as_str();
            let target = req.uri().to_string();
            return fail(access, &target, ProxyError::Auth(e));
        }
    };
    let mut access = shared.access(client, "http", req.method().as_str(), &policy);
    access.user = user;
    let uri = req.uri().clone();
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let path = uri.path();
    access.host = authority.to_string();
    access.path = Some(path.to_string());
    // Named in error answers only: formatted when one is needed.
    let method = req.method().clone();
    let label = || format!("{method} {uri}");

    if uri.scheme_str() != Some("http") {
        let e = ProxyError::BadRequest(format!(
            "unsupported scheme {:?}: send https through CONNECT",
            uri.scheme_str().unwrap_or("")
        ));
        return fail(access, &label(), e);
    }
    let Ok((host, port)) = split_host_port(authority) else {
        return fail(
            access,
            &label(),
            ProxyError::BadRequest(format!("invalid authority {authority:?}")),
        );
    };
    let cand = match Candidate::new(Kind::Http, host, port.unwrap_or(80), Some(path)) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                access,
                &label(),
                ProxyError::BadRequest(format!("invalid host {host:?}: {e}")),
            )
        }
    };
    // The normalised name, in the buffer the raw one used.
    access.host.clear();
    let _ = write!(access.host, "{}", cand.host);
    access.port = cand.port;
    if let Err(e) = check_host_header(req.headers(), &cand) {
        return fail(access, &label(), e);
    }

    let target = match authorize(&shared, &policy, &cand, &mut access).await {
        Ok(a) => a.targets[0],
        Err(e) => return fail(access, &label(), e),
    };
    access.addr = Some(target.addr);
    access.pinned = target.pinned;

    // Build the upstream request: origin-form to the checked address, Host
    // from the request URI, hop-by-hop fields removed.
    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The proxy answers `Expect: 100-continue` itself when it reads the body.
    parts.headers.remove(header::EXPECT);
    // Host names the request target (a Host that disagreed was refused).
    if parts.headers.get(header::HOST).map(|h| h.as_bytes()) != Some(authority.as_bytes()) {
        if let Ok(h) = HeaderValue::from_str(authority) {
            parts.headers.insert(header::HOST, h);
        }
    }
    if let Some(proto) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto.clone());
    }
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let dial_uri = match format!("http://{}{pq}", target.addr).parse::<Uri>() {
        Ok(u) => u,
        Err(e) => return fail(access, &label(), ProxyError::BadRequest(e.to_string())),
    };
    parts.uri = dial_uri;
    parts.version = Version::HTTP_11;
    let up_count = Arc::new(AtomicU64::new(0));
    let body = CountUp {
        inner: body,
        count: up_count.clone(),
    }
    .boxed_unsync();

    let sent = upstream.request(Request::from_parts(parts, body));
    let resp = match tokio::time::timeout(shared.config.response_timeout, sent).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            access.bytes_up = up_count.load(Ordering::Relaxed);
            return fail(access, &label(), classify(&e));
        }
        Err(_) => {
            access.bytes_up = up_count.load(Ordering::Relaxed);
            return fail(access, &label(), ProxyError::ResponseTimeout);
        }
    };
    access.status = resp.status().as_u16();

    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            return switch_protocols(&shared, resp, client_upgrade, access);
        }
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = LoggedBody {
        inner: body,
        access: Some(Box::new(access)),
        up: up_count,
    };
    Response::from_parts(parts, BodyExt::boxed(body))
}

/// The request target decides; a `Host` header that names something else,
/// or several `Host` headers, make the request ambiguous: refuse it.
fn check_host_header(headers: &HeaderMap, cand: &Candidate) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(h) = hosts.next() else { return Ok(()) };
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("several Host headers".into()));
    }
    let bad = || ProxyError::BadRequest("the Host header disagrees with the request target".into());
    let h = h.to_str().map_err(|_| bad())?;
    let (host, port) = split_host_port(h).map_err(|_| bad())?;
    let same_host = crate::policy::normalize_host(host).is_ok_and(|n| n == cand.host);
    if !same_host || port.unwrap_or(80) != cand.port {
        return Err(bad());
    }
    Ok(())
}

/// Relays an upgraded connection (WebSocket) after a 101 from upstream.
fn switch_protocols(
    shared: &Arc<Shared>,
    mut resp: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut access: Access,
) -> Response<Body> {
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let cut = shared.cut.clone();
    let idle = shared.config.tunnel_idle;
    let tunnels = shared.metrics.tunnels_active.clone();
    shared.tasks.spawn(async move {
        tunnels.inc();
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((c, u)) => {
                let check = FirstCheck {
                    target: None,
                    sni: SniMode::Off,
                    tls_only: false,
                };
                let out = relay(TokioIo::new(c), TokioIo::new(u), check, idle, cut).await;
                access.bytes_up += out.up;
                access.bytes_down += out.down;
                access.error = out.error;
                access.detail = out.detail;
            }
            Err(e) => {
                access.error = Some("upgrade_failed");
                access.detail = Some(e.to_string());
            }
        }
        tunnels.dec();
        access.emit();
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, super::respond::empty())
}

/// Maps a client error to what the user should hear.
fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if e.is_connect() {
                return ProxyError::from_connect(io);
            }
            if io.kind() == io::ErrorKind::ConnectionReset {
                return ProxyError::ConnectReset;
            }
        }
        source = s.source();
    }
    if e.is_connect() {
        return ProxyError::ConnectOther(e.to_string());
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    ProxyError::UpstreamResponse(msg)
}

/// Counts request body bytes on their way upstream.
struct CountUp {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl HttpBody for CountUp {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body on its way to the client; emits the access event when
/// it ends, fails, or is dropped (the client went away).
struct LoggedBody {
    inner: Incoming,
    access: Option<Box<Access>>,
    up: Arc<AtomicU64>,
}

impl LoggedBody {
    fn finish(&mut self, error: Option<(&'static str, String)>) {
        if let Some(mut a) = self.access.take() {
            a.bytes_up = self.up.load(Ordering::Relaxed);
            if let Some((class, detail)) = error {
                a.error = Some(class);
                a.detail = Some(detail);
            }
            a.emit();
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(a)) = (f.data_ref(), self.access.as_mut()) {
                    a.bytes_down += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let detail = e.to_string();
                self.finish(Some(("http_response_incomplete", detail)));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.finish(None);
        } else {
            self.finish(Some((
                "client_closed",
                "client went away before the response ended".into(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, Host, Proxy-Authorization"),
            ("x-secret", "1"),
            ("host", "a.example.com"),
            ("proxy-authorization", "Basic abc"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["host", "x-kept"]);
    }
}
