//! Step 6 for plain HTTP: an absolute-form request (`GET http://host/path
//! HTTP/1.1`), decided on host, port and normalised path, is forwarded in
//! origin-form over an HTTP/1.1 connection to the checked address (pooled
//! per worker, [`Pool`]), streaming bodies both ways: by the proxy's own
//! client in this task when the request has no body ([`h1`]), by hyper's
//! client otherwise. A `101` answer to an
//! upgrade (WebSocket) turns the exchange into a relayed tunnel.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

use super::h1;
use super::hello::FirstCheck;
use super::hop::{has_token, strip_hop_by_hop};
use super::parent::{Answer, Parent};
use super::pipeline::{self, refuse};
use super::pool::{Hop, Pool, Transport, Upstream, UpstreamBody};
use super::relay::relay;
use super::respond::{empty, Body, BoxError, ProxyError};
use super::Shared;
use crate::access::{Access, EventKind};

/// The one upgrade passed on: `websocket`. Its path was decided and it
/// carries no further HTTP requests. Any other token, `h2c` above all
/// (whose HTTP/2 connection would carry requests no rule ever saw), is
/// dropped with the rest of the hop-by-hop fields.
fn wants_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    (has_token(headers, header::UPGRADE, "websocket") && has_token(headers, header::CONNECTION, "upgrade"))
        .then(|| HeaderValue::from_static("websocket"))
}

pub async fn handle(
    shared: Arc<Shared>,
    pool: &Arc<Pool>,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let ev = shared.access(client, EventKind::Http, req.method());
    handle_event(shared, pool, req, client, ev).await
}

/// A plain HTTP request on a redirected connection (transparent mode),
/// made absolute from its `Host`; `original` is where the app sent it.
pub async fn handle_transparent(
    shared: Arc<Shared>,
    pool: &Arc<Pool>,
    req: Request<Incoming>,
    client: SocketAddr,
    original: SocketAddr,
) -> Response<Body> {
    let mut ev = shared.access(client, EventKind::Transparent, req.method());
    ev.transparent(original);
    handle_event(shared, pool, req, client, ev).await
}

async fn handle_event(
    shared: Arc<Shared>,
    pool: &Arc<Pool>,
    req: Request<Incoming>,
    client: SocketAddr,
    mut ev: Access,
) -> Response<Body> {
    ev.raw_target(
        req.uri().authority().map_or("", |a| a.as_str()),
        Some(req.uri().path()),
    );
    // Named in error answers only.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    match forward(&shared, pool, req, client, &mut ev).await {
        Ok(sent) => respond(&shared, pool, sent, ev),
        Err(e) => refuse(ev, &request_text(&method, &uri), e),
    }
}

/// `METHOD uri`, as `format!("{method} {uri}")` writes it, by appending:
/// every denial names its request, and `Uri`'s `Display` writes each part
/// through the formatter.
fn request_text(method: &http::Method, uri: &http::Uri) -> String {
    let len = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let mut s = String::with_capacity(len + 24);
    s.push_str(method.as_str());
    s.push(' ');
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(a) = uri.authority() {
        s.push_str(a.as_str());
    }
    s.push_str(uri.path());
    if let Some(q) = uri.query() {
        s.push('?');
        s.push_str(q);
    }
    s
}

/// A request that reached upstream and got a response head: through
/// hyper's client, or the proxy's own ([`h1`], bodyless requests).
pub(super) enum Sent {
    Hyper {
        resp: Response<Incoming>,
        upstream: Upstream,
        /// Request body bytes sent so far.
        up: Arc<AtomicU64>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    },
    Own(h1::Exchanged),
}

/// Steps 1 to 4 for an absolute-form request, then the exchange.
async fn forward(
    shared: &Shared,
    pool: &Pool,
    req: Request<Incoming>,
    client: SocketAddr,
    ev: &mut Access,
) -> Result<Sent, ProxyError> {
    let admitted = match ev.original_dst() {
        Some(_) => pipeline::Admitted::redirected(shared),
        None => pipeline::admit(shared, req.headers(), client.ip())?,
    };
    ev.admitted(admitted.user.clone(), &admitted.policy);
    let cand = pipeline::http_target(req.method(), req.uri(), req.headers())?;
    ev.target(&cand);
    let outcome = pipeline::authorize(shared, &admitted.policy, &cand).await;
    let allowed = pipeline::authorized(ev, &admitted.policy, outcome, |a| a)?;
    // A shared handle on the request's bytes, not a copy.
    let authority = req.uri().authority().cloned();
    let authority = authority.as_ref().map_or("", |a| a.as_str());
    let hop = allowed.route.hop(authority);
    exchange(shared, pool, req, hop, &Transport::Plain, authority, ev).await
}

/// Steps 5 and 6 for a request that was decided: in origin-form, `Host`
/// naming `authority`, to the first checked address that answers, over
/// `transport`; or, plain HTTP through the parent, in absolute-form with
/// egressd's credentials for the parent.
pub(super) async fn exchange(
    shared: &Shared,
    pool: &Pool,
    mut req: Request<Incoming>,
    hop: Hop<'_>,
    transport: &Transport,
    authority: &str,
    ev: &mut Access,
) -> Result<Sent, ProxyError> {
    let upgrade = wants_upgrade(req.headers());
    let timeouts = (shared.config.connect_timeout, shared.config.response_timeout);
    // Nothing to stream up: the proxy's own client, in this task (over TLS
    // to an inspected tunnel's origin, unless that origin speaks HTTP/2).
    if let (Hop::Direct(targets), None) = (hop, &upgrade) {
        if req.body().is_end_stream() && !req.headers().contains_key(header::TRANSFER_ENCODING) {
            let tls = match transport {
                Transport::Plain => None,
                Transport::Tls(origin) => Some(&**origin),
            };
            let (mut parts, body) = req.into_parts();
            to_origin_form(&mut parts, authority, None);
            match h1::exchange(pool.h1(), pool.mark(), targets, tls, parts, timeouts).await {
                Ok(exchanged) => {
                    ev.dialled(exchanged.reached);
                    return Ok(Sent::Own(exchanged));
                }
                Err(h1::NotOwn::Failed(f)) => return Err(pipeline::dial_failed(f, ev)),
                Err(h1::NotOwn::H2(handoff)) => {
                    let h1::Handoff { parts, new } = *handoff;
                    if let Some((stream, t)) = new {
                        if let Err(error) = pool.adopt_h2(&hop, transport, stream, t).await {
                            let f = super::dial::DialError { error, last: Some(t) };
                            return Err(pipeline::dial_failed(f, ev));
                        }
                    }
                    req = Request::from_parts(parts, body);
                }
            }
        }
    }
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    to_origin_form(&mut parts, authority, upgrade);
    let to_parent = match (hop, transport) {
        (Hop::Parent { parent, .. }, Transport::Plain) => Some(parent),
        _ => None,
    };
    if let Some(parent) = to_parent {
        to_absolute_form(&mut parts, authority, parent);
    }
    let up = Arc::new(AtomicU64::new(0));
    let body = Metered {
        inner: body,
        meter: up.clone(),
    }
    .boxed_unsync();
    let request = Request::from_parts(parts, body);
    // HTTP/2 may be offered to a TLS origin unless the request upgrades.
    let h2 = client_upgrade.is_none();
    // Boxed: hyper's client path (dial, TLS, HTTP/2 handshake) is a large
    // future, and each async caller up to the connection's service holds
    // its callee about twice over: inline it made the service future many
    // times larger, and hyper moves that into a box of its own on every new
    // client connection. Boxed, only this path pays an allocation (sizes
    // and cost: `benches/README.md`, "Figures the source relies on").
    match Box::pin(send(pool, &hop, request, transport, timeouts, h2, ev)).await {
        Ok((resp, upstream)) => Ok(Sent::Hyper {
            resp,
            upstream,
            up,
            client_upgrade,
        }),
        Err(e) => {
            ev.bytes(up.load(Ordering::Relaxed), 0);
            Err(e)
        }
    }
}

/// The upstream request: origin-form, `Host` from the request target (a
/// `Host` that disagreed was refused), hop-by-hop fields removed.
fn to_origin_form(parts: &mut http::request::Parts, authority: &str, upgrade: Option<HeaderValue>) {
    strip_hop_by_hop(&mut parts.headers);
    // The proxy answers `Expect: 100-continue` itself when it reads the body.
    parts.headers.remove(header::EXPECT);
    if parts.headers.get(header::HOST).map(|h| h.as_bytes()) != Some(authority.as_bytes()) {
        if let Ok(h) = HeaderValue::from_str(authority) {
            parts.headers.insert(header::HOST, h);
        }
    }
    if let Some(proto) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    // The path and query kept as they are (sharing the client's bytes):
    // only scheme and authority go. An empty path is `/` (RFC 9112 3.2.1).
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = None;
    uri.authority = None;
    if let Some(pq) = uri.path_and_query.take() {
        uri.path_and_query = Some(if pq.as_str().starts_with('/') {
            pq
        } else {
            format!("/{}", pq.as_str())
                .parse()
                .unwrap_or_else(|_| PathAndQuery::from_static("/"))
        });
    }
    parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
}

/// The request as a parent proxy takes it: absolute-form, with egressd's
/// own credentials for the parent (the client's were removed as hop-by-hop).
fn to_absolute_form(parts: &mut http::request::Parts, authority: &str, parent: &Parent) {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = format!("http://{authority}{pq}").parse() {
        parts.uri = uri;
    }
    if let Some(auth) = parent.authorization() {
        parts.headers.insert(header::PROXY_AUTHORIZATION, auth.clone());
    }
}

/// Sends the request on a connection for `hop`. A pooled connection the
/// server closed meanwhile gives the request back unsent; it then goes on
/// a new connection. Through a parent, the parent's own refusal (not the
/// origin's answer) becomes [`ProxyError::ParentRefused`].
async fn send(
    pool: &Pool,
    hop: &Hop<'_>,
    mut request: Request<UpstreamBody>,
    transport: &Transport,
    (connect_timeout, response_timeout): (Duration, Duration),
    h2: bool,
    ev: &mut Access,
) -> Result<(Response<Incoming>, Upstream), ProxyError> {
    let mut fresh = false;
    loop {
        let got = if fresh {
            pool.connect_new(hop, connect_timeout, transport, h2).await
        } else {
            pool.connect(hop, connect_timeout, transport, h2).await
        };
        let (mut upstream, dialled) = got.map_err(|f| pipeline::dial_failed(f, ev))?;
        ev.dialled(dialled);
        match tokio::time::timeout(response_timeout, upstream.sender.try_send_request(request)).await {
            Ok(Ok(resp)) => {
                if let (Hop::Parent { .. }, Transport::Plain) = (hop, transport) {
                    if let Some(answer) = Answer::of_response(&resp) {
                        return Err(answer.refusal());
                    }
                }
                return Ok((resp, upstream));
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) if upstream.reused => {
                    request = unsent;
                    fresh = true;
                }
                _ => return Err(upstream_error(&e.into_error())),
            },
            Err(_) => return Err(ProxyError::ResponseTimeout),
        }
    }
}

/// Step 6 on the way back: the response streams to the client; its end
/// finishes the event and returns the connection to the pool.
pub(super) fn respond(shared: &Arc<Shared>, pool: &Arc<Pool>, sent: Sent, mut ev: Access) -> Response<Body> {
    let (mut resp, upstream, up, client_upgrade) = match sent {
        Sent::Hyper {
            resp,
            upstream,
            up,
            client_upgrade,
        } => (resp, upstream, up, client_upgrade),
        Sent::Own(exchanged) => {
            ev.status(exchanged.head.status.as_u16());
            let (mut parts, body) = exchanged.into_body(ev, pool.h1().clone());
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, BodyExt::boxed(body));
        }
    };
    ev.status(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // A switch nobody asked for would hand the client a connection to
        // the origin that the proxy no longer reads.
        let Some(client_upgrade) = client_upgrade else {
            let e = ProxyError::UpstreamResponse("the upstream switched protocols unasked".into());
            return refuse(ev, "", e);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        ev.bytes(up.load(Ordering::Relaxed), 0);
        spawn_upgraded(shared, client_upgrade, upstream_upgrade, ev);
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Metered {
        inner: body,
        meter: ResponseMeter {
            access: Some(Box::new(ev)),
            up,
            down: 0,
            upstream: Some((upstream, pool.clone())),
        },
    };
    Response::from_parts(parts, BodyExt::boxed(body.map_err(BoxError::from)))
}

/// The event of a request whose body the proxy's own client streams.
impl h1::BodyEnd for Access {
    fn ended(mut self, down: u64, end: Result<(), &ProxyError>) {
        self.bytes(0, down);
        self.finish(end);
    }
}

/// Relays an upgraded connection (WebSocket) after a 101 from upstream.
fn spawn_upgraded(
    shared: &Arc<Shared>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    upstream_upgrade: hyper::upgrade::OnUpgrade,
    mut ev: Access,
) {
    let cut = shared.worker_cut();
    let idle = shared.config.tunnel_idle;
    let guard = shared.count_tunnel();
    shared.tasks.spawn(async move {
        let end = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((c, u)) => {
                let out = relay(TokioIo::new(c), TokioIo::new(u), FirstCheck::NONE, idle, cut).await;
                ev.bytes(out.up, out.down);
                out.end
            }
            Err(e) => Err(ProxyError::Upgrade(e.to_string())),
        };
        drop(guard);
        ev.finish(end.as_ref().map(|_| ()));
    });
}

/// Maps a failed exchange with upstream to what the user should hear.
fn upstream_error(e: &hyper::Error) -> ProxyError {
    // The request body hyper's client was sending is the client's: its
    // failure is the client's (a malformed chunked body, a reset), never
    // the origin's.
    if e.is_user() {
        return client_body_error(e);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::ConnectionReset {
                return ProxyError::ConnectReset;
            }
        }
        source = s.source();
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

/// A client's request body that failed while it was sent upstream: a
/// client that went (reset, closed) or a malformed body (400, with the
/// framing error in a few words and nothing of hyper's wording).
fn client_body_error(e: &hyper::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return ProxyError::io(super::respond::Side::Client, io);
            }
        }
        last = Some(s);
        source = s.source();
    }
    let why = last.map(|s| s.to_string()).unwrap_or_default();
    ProxyError::BadRequest(format!("malformed request body: {}", why.to_lowercase()))
}

/// What a [`Metered`] body reports: each data frame's size, and how the
/// body ended (once).
trait Meter {
    fn data(&mut self, n: usize);
    fn end(&mut self, _: Result<(), ProxyError>) {}
}

/// The request body's count, read when the exchange ends.
impl Meter for Arc<AtomicU64> {
    fn data(&mut self, n: usize) {
        self.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The response on its way to the client: finishes the event when the body
/// ends, fails, or is dropped (the client went away). A connection whose
/// response ended goes back to the pool.
struct ResponseMeter {
    access: Option<Box<Access>>,
    up: Arc<AtomicU64>,
    down: u64,
    upstream: Option<(Upstream, Arc<Pool>)>,
}

impl Meter for ResponseMeter {
    fn data(&mut self, n: usize) {
        self.down += n as u64;
    }

    fn end(&mut self, end: Result<(), ProxyError>) {
        if let Some(mut a) = self.access.take() {
            a.bytes(self.up.load(Ordering::Relaxed), self.down);
            a.finish(end.as_ref().map(|_| ()));
        }
        if let Some((upstream, pool)) = self.upstream.take() {
            if end.is_ok() {
                pool.checkin(upstream);
            }
        }
    }
}

/// A body passed through, counted, its end reported to the meter.
struct Metered<M: Meter> {
    inner: Incoming,
    meter: M,
}

impl<M: Meter + Unpin> HttpBody for Metered<M> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let n = d.len();
                    self.meter.data(n);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let e = ProxyError::UpstreamResponse(e.to_string());
                self.meter.end(Err(e));
            }
            Poll::Ready(None) => self.meter.end(Ok(())),
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

impl<M: Meter> Drop for Metered<M> {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.meter.end(Ok(()));
        } else {
            self.meter.end(Err(ProxyError::ClientGone));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_named_as_display_names_it() {
        for (m, u) in [
            ("GET", "http://a.test/x?y=1"),
            ("GET", "http://a.test"),
            ("GET", "http://a.test?q"),
            ("POST", "https://u@a.test:8443/p/q"),
            ("OPTIONS", "*"),
            ("GET", "/relative?z"),
            ("CONNECT", "a.test:443"),
            ("BREW", "http://[::1]:80/pot"),
        ] {
            let (m, u): (http::Method, http::Uri) = (m.parse().unwrap(), u.parse().unwrap());
            assert_eq!(request_text(&m, &u), format!("{m} {u}"));
        }
    }

    #[test]
    fn the_upstream_gets_the_origin_form() {
        for (absolute, origin) in [
            ("http://a.test", "/"),
            ("http://a.test/", "/"),
            ("http://a.test:8080/x/y?q=1&r", "/x/y?q=1&r"),
            ("http://a.test?q", "/?q"),
        ] {
            let (mut parts, ()) = Request::get(absolute).body(()).unwrap().into_parts();
            to_origin_form(&mut parts, "a.test", None);
            assert_eq!(parts.uri.to_string(), origin, "{absolute}");
            assert_eq!(parts.uri.path_and_query().unwrap().as_str(), origin, "{absolute}");
            assert_eq!(parts.headers[header::HOST], "a.test");
        }
    }
}
