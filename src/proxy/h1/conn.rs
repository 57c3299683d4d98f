//! One upstream connection of the proxy's own HTTP/1.1 client: a request
//! head written, a response head read straight from the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use http::header::HeaderMap;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::head::{parse_head, Parsed};
use super::READ_SPACE;
use crate::policy::Resolved;
use crate::proxy::respond::ProxyError;

/// An upstream connection's stream: plain, or TLS to an origin (an
/// inspected tunnel's requests).
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One upstream connection and what it has read past the last message.
pub struct Conn {
    pub(super) io: Stream,
    pub(super) buf: BytesMut,
    /// The request head, encoded into the same allocation each time.
    out: Vec<u8>,
    /// Header spans of the head being parsed, reused.
    spans: Vec<[usize; 4]>,
    pub reached: Resolved,
    /// The TLS origin's name (what the pool tells its connections apart by).
    pub(super) name: Option<ServerName<'static>>,
    /// Idle since (when pooled).
    pub since: Instant,
    /// Has carried a response before: the server may have closed it since.
    pub(super) reused: bool,
}

impl Conn {
    pub(super) fn new(io: Stream, reached: Resolved, name: Option<ServerName<'static>>) -> Conn {
        Conn {
            io,
            name,
            buf: BytesMut::with_capacity(READ_SPACE),
            out: Vec::with_capacity(1024),
            spans: Vec::new(),
            reached,
            since: Instant::now(),
            reused: false,
        }
    }

    /// Whether the connection can carry another request: the server has
    /// neither closed it nor sent anything unasked. The check costs no
    /// system call unless the socket became readable.
    pub fn is_open(&mut self) -> bool {
        match &mut self.io {
            Stream::Tcp(s) => {
                let mut b = [0u8; 1];
                matches!(s.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // Records the server sent since (a session ticket) are read and
            // kept by rustls; anything for the application, a close_notify
            // or a close means the connection cannot carry a request.
            Stream::Tls(s) => {
                let mut b = [0u8; 1];
                let mut buf = ReadBuf::new(&mut b);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                Pin::new(s.as_mut()).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }

    /// Writes a bodyless request head: `method target HTTP/1.1`, then the
    /// fields in order.
    pub(super) async fn write_head(&mut self, parts: &http::request::Parts) -> std::io::Result<()> {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.io.write_all(out).await?;
        // TLS may hold the last record until flushed; TCP's flush is free.
        self.io.flush().await
    }

    /// Reads the response head (skipping interim `1xx` answers). Its
    /// fields go into `reuse`'s allocation, cleared: the request's fields,
    /// already sent, so a response allocates no map of its own (and hyper
    /// parses the client's next request into it). Until a head is
    /// complete `reuse` is left as it is: a request on a connection found
    /// stale is sent again.
    pub(super) async fn read_head(&mut self, reuse: &mut HeaderMap) -> Result<http::response::Parts, Failed> {
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                match parse_head(&mut self.buf, &mut self.spans, reuse)? {
                    Some(Parsed::Interim) => continue,
                    Some(Parsed::Head(parts)) => return Ok(parts),
                    None => {}
                }
            }
            self.buf.reserve(READ_SPACE);
            let n = tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.buf)
                .await
                .map_err(|e| self.failed(received, &e))?;
            if n == 0 {
                if !received && self.reused {
                    return Err(Failed::Stale);
                }
                return Err(upstream("closed before a complete response head"));
            }
        }
    }

    /// A failed read or write: on a reused connection before any answer,
    /// the server had closed it (it may be tried again on a new one).
    pub(super) fn failed(&self, received: bool, e: &std::io::Error) -> Failed {
        use std::io::ErrorKind::*;
        if !received && self.reused && matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) {
            return Failed::Stale;
        }
        Failed::Error(ProxyError::from_connect(e))
    }
}

/// Why an exchange did not get a response.
pub(super) enum Failed {
    /// A pooled connection the server had closed: nothing was answered.
    Stale,
    Error(ProxyError),
}

impl From<ProxyError> for Failed {
    fn from(e: ProxyError) -> Failed {
        Failed::Error(e)
    }
}

fn upstream(msg: &str) -> Failed {
    Failed::Error(ProxyError::UpstreamResponse(msg.into()))
}
