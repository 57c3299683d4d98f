//! The client's connection: the plain socket type hyper serves (and
//! tunnels take back after an upgrade), HTTP/1.1 on any client stream, and
//! the client side of a tunnel as [`super::tunnel::run`] takes it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::heard::{self, Heard};
use super::respond::{Body, ProxyError};
use super::Shared;
use crate::access::EventKind;

/// A plain client socket while hyper serves it. When hyper ends the
/// connection it shuts the socket down and drops it at once; the `close(2)`
/// of the drop sends the same FIN (data still queued goes first), so the
/// `shutdown(2)` is skipped: one syscall less per closed connection.
/// Tunnels take the socket back from the upgrade ([`Client::upgraded`]) and
/// half-close it for real.
pub struct ClientTcp(pub TcpStream);

impl AsyncRead for ClientTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Whether the proxy's HTTP/1 server (hyper) queues a response's buffers for
/// writev(2): no. Copying them into one buffer instead measured cheaper
/// for small answers and for large ones too, since consecutive chunks then
/// go out in one large write (figures: `benches/README.md`, "Figures the
/// source relies on").
pub(super) const WRITEV: bool = false;

/// HTTP/1.1 with upgrades on a client connection, with the proxy's header
/// limits, closed gracefully at shutdown. A request hyper could not parse
/// (it answers 400, or 431 for a head over the limit) never reaches the
/// pipeline: it gets its own access event here, of `kind`, with what could
/// be read of it ([`heard`]), so that a scanner or a smuggling probe is
/// seen in the log, the metrics and the live view like any refusal.
/// `authority` is the tunnel's, for requests inside one ("" otherwise).
pub(super) async fn serve_http1<IO, S>(
    shared: &Shared,
    stream: IO,
    svc: S,
    peer: SocketAddr,
    kind: EventKind,
    authority: &str,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    // Head and body copied into one buffer and written with one write(2)
    // (see [`WRITEV`]).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout)
        .max_header_size(shared.config.max_header_bytes)
        .keep_alive(true)
        .writev(WRITEV);
    let (stream, head) = Heard::new(stream);
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let shutdown = shared.worker_shutdown();
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_parse() || e.is_parse_too_large() || e.is_parse_version_h2() {
            let heard = heard::read(&head.lock().unwrap_or_else(|e| e.into_inner()));
            let mut ev = match &heard.method {
                Some(m) => shared.access(peer, kind, m),
                None => unparsed(shared, peer, kind),
            };
            name_target(&mut ev, authority, heard.target.as_deref().unwrap_or(""));
            ev.status(if e.is_parse_too_large() { 431 } else { 400 });
            let why = match heard.start {
                Some(start) => format!("malformed request: {e}; first bytes \"{start}\""),
                None => format!("malformed request: {e}"),
            };
            ev.finish(Err(&ProxyError::BadRequest(why)));
            return;
        }
        // Client resets and timeouts are routine: debug only.
        tracing::debug!(client = %peer, error = %e, "connection ended with error");
    }
}

/// Names a request that did not parse by its target as written: as a
/// forwarded request is named when it reads as a URI, else as it came.
fn name_target(ev: &mut crate::access::Access, authority: &str, target: &str) {
    if !authority.is_empty() || target.starts_with('/') {
        return ev.raw_target(authority, Some(target));
    }
    match http::Uri::try_from(target) {
        Ok(uri) if uri.authority().is_some() => {
            ev.raw_target(uri.authority().map_or("", |a| a.as_str()), Some(uri.path()))
        }
        _ => ev.raw_target(target, None),
    }
}

/// The event of a connection refused before any request was read from it:
/// no method (logged as `-`), no target.
pub(super) fn unparsed(shared: &Shared, peer: SocketAddr, kind: EventKind) -> crate::access::Access {
    let unread = http::Method::from_bytes(b"-").unwrap_or_default();
    let mut ev = shared.access(peer, kind, &unread);
    ev.raw_target("", None);
    ev
}

/// Any client stream a tunnel can run over (a TLS listener's connection,
/// an upgraded one hyper keeps).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// The client side of a tunnel.
pub enum Client {
    /// The plain socket, with bytes already read from it (by the HTTP
    /// parser, or to classify a redirected connection): spliceable.
    Tcp { stream: TcpStream, pre: Vec<u8> },
    /// Any other stream (TLS to the proxy), with nothing read ahead.
    Io(Box<dyn ClientIo>),
}

impl Client {
    /// A connection hyper handed back after `CONNECT`: the plain socket
    /// again when it was one (no boxed I/O, no lock between the halves; the
    /// HTTP read buffer is freed unless it holds tunnel bytes).
    pub fn upgraded(upgraded: hyper::upgrade::Upgraded) -> Client {
        match upgraded.downcast::<TokioIo<Heard<ClientTcp>>>() {
            Ok(parts) => Client::Tcp {
                pre: parts.read_buf.to_vec(),
                stream: parts.io.into_inner().io.0,
            },
            Err(upgraded) => Client::Io(Box::new(TokioIo::new(upgraded))),
        }
    }
}
