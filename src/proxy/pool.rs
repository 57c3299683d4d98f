//! Upstream HTTP connections of one worker, by where they lead: hyper's
//! client connections (HTTP/1.1 and HTTP/2, to addresses, TLS origins and
//! the parent), and the proxy's own HTTP/1.1 ones ([`h1::IdleConns`]), so
//! that a keep-alive request dials nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

pub use super::dial::TlsOrigin;
use super::dial::{dial, tls, DialError, Seeded, POOL_IDLE, POOL_PER_ADDR};
use super::h1;
use super::parent::Parent;
use super::respond::ProxyError;
use crate::policy::Resolved;

/// A request body on its way upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How requests reach an upstream address: plain TCP, or TLS verified
/// for the name the client asked for (inspected tunnels).
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(Arc<TlsOrigin>),
}

/// Where a connection goes: to one of the checked addresses, or through
/// the parent proxy (plain HTTP to the parent itself; TLS origins through
/// a `CONNECT` tunnel to `authority`).
#[derive(Clone, Copy)]
pub enum Hop<'a> {
    Direct(&'a [Resolved]),
    Parent { parent: &'a Parent, authority: &'a str },
}

/// Pooled connections are told apart by where they lead: an address and
/// TLS name, or the parent (and the origin a tunnel through it reaches).
/// A TLS origin's connections are also told apart by whether HTTP/2 was
/// offered: an upgrade (WebSocket) needs an HTTP/1.1 connection.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Direct(SocketAddr, Option<(ServerName<'static>, bool)>),
    Parent(Option<(String, ServerName<'static>, bool)>),
}

/// The pool key of a connection for `hop` (to `addr`, which a connection
/// through the parent does not depend on).
fn key(hop: &Hop, addr: SocketAddr, transport: &Transport, h2: bool) -> Key {
    let name = match transport {
        Transport::Plain => None,
        Transport::Tls(t) => Some((t.name.clone(), h2 && t.config_h2.is_some())),
    };
    match hop {
        Hop::Direct(_) => Key::Direct(addr, name),
        Hop::Parent { authority, .. } => Key::Parent(name.map(|(n, h2)| (authority.to_string(), n, h2))),
    }
}

/// A client connection upstream: HTTP/1.1, or HTTP/2 (shared by every
/// request to that origin while it lives).
pub enum Sender {
    H1(SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }
    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    /// Sends `req`, made to fit the connection: origin-form with `Host` on
    /// HTTP/1.1, absolute-form (`:authority`) on HTTP/2. A request the
    /// connection could not send comes back in the error.
    pub async fn try_send_request(
        &mut self,
        mut req: Request<UpstreamBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper::client::conn::TrySendError<Request<UpstreamBody>>>
    {
        fit(&mut req, self.is_h2());
        match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        }
    }
}

/// Moves a request between HTTP/1.1's form (origin-form, `Host`) and
/// HTTP/2's (`https://authority/path`, no `Host`).
fn fit(req: &mut Request<UpstreamBody>, h2: bool) {
    use http::{header::HOST, HeaderValue, Uri, Version};
    if h2 && req.version() != Version::HTTP_2 {
        let host = req.headers_mut().remove(HOST);
        let authority = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = format!("https://{authority}{pq}").parse::<Uri>() {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
    } else if !h2 && req.version() == Version::HTTP_2 {
        if let Some(a) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(HOST, a);
        }
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_11;
    }
}

/// An HTTP connection upstream.
pub struct Upstream {
    pub sender: Sender,
    key: Key,
    addr: SocketAddr,
    /// Taken from the pool: it may have been closed by the server meanwhile.
    pub reused: bool,
}

impl Upstream {
    /// The address connected to (the parent's, through a parent).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
    reached: Resolved,
}

/// Idle upstream HTTP/1.1 connections of one worker, by where they lead:
/// hyper's, and the proxy's own for bodyless requests ([`h1`]).
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<Idle>, Seeded>>,
    h1: Arc<h1::IdleConns>,
    /// `SO_MARK` for new upstream sockets (`--mark`).
    mark: Option<u32>,
}

impl Pool {
    /// A pool whose new upstream sockets carry `mark`.
    pub fn new(mark: Option<u32>) -> Pool {
        Pool {
            mark,
            ..Pool::default()
        }
    }

    /// `SO_MARK` for new upstream sockets.
    pub fn mark(&self) -> Option<u32> {
        self.mark
    }

    /// The proxy's own idle HTTP/1.1 connections.
    pub fn h1(&self) -> &Arc<h1::IdleConns> {
        &self.h1
    }

    /// Closes the idle connections that servers closed or that idled
    /// longer than [`POOL_IDLE`]; run by each worker once a second.
    pub fn sweep(&self) {
        self.h1.sweep();
        let mut m = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| {
            v.retain(|i| !i.sender.is_closed() && i.since.elapsed() <= POOL_IDLE);
            !v.is_empty()
        });
    }

    /// An idle connection for `hop` (to the first checked address that has one).
    async fn checkout(
        &self,
        hop: &Hop<'_>,
        timeout: Duration,
        transport: &Transport,
        h2: bool,
    ) -> Option<(Upstream, Resolved)> {
        // Each checked address in order, or the parent once: no list is
        // built per request.
        let (targets, parent): (&[Resolved], bool) = match hop {
            Hop::Direct(targets) => (targets, false),
            Hop::Parent { .. } => (&[], true),
        };
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let tried = targets.iter().map(Some).chain(parent.then_some(None));
        for target in tried {
            let key = key(hop, target.map_or(unspecified, |t| t.addr), transport, h2);
            let target = target.copied();
            loop {
                let idle = {
                    let mut m = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                    match m.get_mut(&key) {
                        // An HTTP/2 connection serves many requests at once:
                        // it stays in the pool while it is open.
                        // Its last use is what ages it.
                        Some(v) => match v.last_mut() {
                            Some(Idle {
                                sender: Sender::H2(s),
                                reached,
                                since,
                            }) if !s.is_closed() => {
                                *since = Instant::now();
                                Some(Idle {
                                    sender: Sender::H2(s.clone()),
                                    since: *since,
                                    reached: *reached,
                                })
                            }
                            _ => v.pop(),
                        },
                        None => None,
                    }
                };
                let Some(mut idle) = idle else { break };
                if idle.sender.is_closed() || idle.since.elapsed() > POOL_IDLE {
                    continue;
                }
                // Returned as soon as its last response ended: its connection
                // may not have turned idle yet.
                if !idle.sender.is_ready()
                    && !matches!(
                        tokio::time::timeout(timeout, idle.sender.ready()).await,
                        Ok(Ok(()))
                    )
                {
                    continue;
                }
                let up = Upstream {
                    sender: idle.sender,
                    key,
                    addr: idle.reached.addr,
                    reused: true,
                };
                return Some((up, target.unwrap_or(idle.reached)));
            }
        }
        None
    }

    /// Keeps a connection whose response ended for the next request.
    pub fn checkin(&self, up: Upstream) {
        // HTTP/2 connections never left the pool.
        if up.sender.is_closed() || up.sender.is_h2() {
            return;
        }
        let mut m = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let v = m.entry(up.key).or_default();
        if v.len() < POOL_PER_ADDR {
            v.push(Idle {
                sender: up.sender,
                since: Instant::now(),
                reached: Resolved {
                    addr: up.addr,
                    pinned: false,
                },
            });
        }
    }

    /// A connection for `hop`: an idle one, or a new one (to the checked
    /// addresses in order). The connection task runs on the current worker.
    /// `h2`: HTTP/2 may be offered to a TLS origin (no upgrade is asked).
    pub async fn connect(
        &self,
        hop: &Hop<'_>,
        timeout: Duration,
        transport: &Transport,
        h2: bool,
    ) -> Result<(Upstream, Resolved), DialError> {
        if let Some(found) = self.checkout(hop, timeout, transport, h2).await {
            return Ok(found);
        }
        self.connect_new(hop, timeout, transport, h2).await
    }

    /// A new connection, never one from the pool.
    pub async fn connect_new(
        &self,
        hop: &Hop<'_>,
        timeout: Duration,
        transport: &Transport,
        h2: bool,
    ) -> Result<(Upstream, Resolved), DialError> {
        let (sender, t) = match hop {
            Hop::Direct(targets) => {
                let (stream, t) = dial(targets, timeout, self.mark).await?;
                let failed = |error| DialError { error, last: Some(t) };
                let sender = match transport {
                    Transport::Plain => Sender::H1(handshake(TokioIo::new(stream)).await.map_err(failed)?),
                    Transport::Tls(origin) => {
                        handshake_tls(tls(origin, stream, timeout, h2).await.map_err(failed)?)
                            .await
                            .map_err(failed)?
                    }
                };
                (sender, t)
            }
            Hop::Parent { parent, authority } => {
                let failed = |error| DialError { error, last: None };
                match transport {
                    Transport::Plain => {
                        let (stream, t) = parent.dial(timeout).await.map_err(failed)?;
                        (
                            Sender::H1(handshake(TokioIo::new(stream)).await.map_err(failed)?),
                            t,
                        )
                    }
                    Transport::Tls(origin) => {
                        let (stream, early, t) =
                            parent.tunnel(authority, timeout, timeout).await.map_err(failed)?;
                        if !early.is_empty() {
                            return Err(failed(ProxyError::UpstreamTls(
                                "the origin spoke before the TLS handshake".into(),
                            )));
                        }
                        let tls = tls(origin, stream, timeout, h2).await.map_err(failed)?;
                        (handshake_tls(tls).await.map_err(failed)?, t)
                    }
                }
            }
        };
        let key = key(hop, t.addr, transport, h2);
        if let Sender::H2(s) = &sender {
            self.share_h2(key.clone(), s.clone(), t);
        }
        let up = Upstream {
            sender,
            key,
            addr: t.addr,
            reused: false,
        };
        Ok((up, t))
    }
}

impl Pool {
    /// Takes a new TLS connection to an origin that chose HTTP/2 (the
    /// proxy's own client found out, and cannot speak it): shared from now
    /// on by every request to that origin.
    pub async fn adopt_h2(
        &self,
        hop: &Hop<'_>,
        transport: &Transport,
        tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        t: Resolved,
    ) -> Result<(), ProxyError> {
        if let Sender::H2(s) = handshake_tls(tls).await? {
            self.share_h2(key(hop, t.addr, transport, true), s, t);
        }
        Ok(())
    }

    /// An HTTP/2 connection every request to its origin shares.
    fn share_h2(&self, key: Key, s: http2::SendRequest<UpstreamBody>, t: Resolved) {
        let mut m = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key).or_default().push(Idle {
            sender: Sender::H2(s),
            since: Instant::now(),
            reached: t,
        });
    }
}

/// The client connection the origin chose in ALPN: HTTP/2 or HTTP/1.1.
async fn handshake_tls<IO>(tls: tokio_rustls::client::TlsStream<IO>) -> Result<Sender, ProxyError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Ok(Sender::H1(handshake(TokioIo::new(tls)).await?));
    }
    let (sender, conn) = http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(|e| ProxyError::ConnectOther(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with error");
        }
    });
    Ok(Sender::H2(sender))
}

/// An HTTP/1.1 client connection over `io`, driven on the current worker.
async fn handshake<T>(io: T) -> Result<SendRequest<UpstreamBody>, ProxyError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| ProxyError::ConnectOther(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: SocketAddr) -> Resolved {
        Resolved { addr, pinned: false }
    }

    #[tokio::test]
    async fn plain_http_dials_through_the_same_order() {
        let dead = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let pool = Pool::default();
        let (up, reached) = pool
            .connect(
                &Hop::Direct(&[target(dead), target(live_addr)]),
                Duration::from_secs(2),
                &Transport::Plain,
                false,
            )
            .await
            .unwrap();
        assert_eq!((up.addr(), reached.addr), (live_addr, live_addr));
        assert!(!up.reused);
    }
}
