//! Upstream HTTP/1.1 for requests without a body to plain-HTTP origins
//! (most of what a proxy forwards: `GET`, `HEAD`), driven in the client
//! connection's own task: the request head is written and the response read
//! straight from the socket, and the body is handed to the client as the
//! client side polls for it.
//!
//! Why not hyper's client here: it runs each upstream connection as a task
//! of its own behind a dispatch channel, and on a keep-alive hop that task,
//! its wake-ups and its body channel were a third of the proxy's CPU (see
//! `benches/README.md`). A request without a body needs none of it: no
//! body streams up while the response streams down. Requests with bodies,
//! upgrades, TLS origins (HTTP/2) and the parent proxy stay on hyper's
//! client. The message syntax is httparse's; what is written here is the
//! framing of RFC 9112 §6 ([`framing`], [`Chunked`]), kept pure and tested
//! on its own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::dial::{dial, Pool};
use super::respond::{BoxError, ProxyError};
use crate::access::Access;
use crate::policy::Resolved;

/// Response heads larger than this are refused (hyper's client allows
/// about as much by default).
const MAX_HEAD: usize = 64 * 1024;
/// Header fields in a response head.
const MAX_HEADERS: usize = 100;
/// A chunk-size line, with its extensions; and all trailer lines together.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Reads go into at least this much free buffer.
const READ_SPACE: usize = 16 * 1024;

/// One upstream connection and what it has read past the last message.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The request head, encoded into the same allocation each time.
    out: Vec<u8>,
    /// Header spans of the head being parsed, reused.
    spans: Vec<[usize; 4]>,
    pub reached: Resolved,
    /// Idle since (when pooled).
    pub since: Instant,
    /// Has carried a response before: the server may have closed it since.
    reused: bool,
}

impl Conn {
    fn new(io: TcpStream, reached: Resolved) -> Conn {
        Conn {
            io,
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
    pub fn is_open(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.io.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Writes a bodyless request head: `method target HTTP/1.1`, then the
    /// fields in order.
    async fn write_head(&mut self, parts: &http::request::Parts) -> std::io::Result<()> {
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
        self.io.write_all(out).await
    }

    /// Reads the response head (skipping interim `1xx` answers). Its
    /// fields go into `reuse`'s allocation, cleared: the request's fields,
    /// already sent, so a response allocates no map of its own (and hyper
    /// parses the client's next request into it). Until a head is
    /// complete `reuse` is left as it is: a request on a connection found
    /// stale is sent again.
    async fn read_head(&mut self, reuse: &mut HeaderMap) -> Result<http::response::Parts, Failed> {
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                match self.parse_head(reuse)? {
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
    fn failed(&self, received: bool, e: &std::io::Error) -> Failed {
        use std::io::ErrorKind::*;
        if !received && self.reused && matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) {
            return Failed::Stale;
        }
        Failed::Error(ProxyError::from_connect(e))
    }

    /// One response head from the buffer, if it holds a whole one.
    fn parse_head(&mut self, reuse: &mut HeaderMap) -> Result<Option<Parsed>, Failed> {
        // Uninitialised: filling 100 empty fields (3 KiB) cost more than
        // parsing a typical head.
        let mut fields = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let n = match config.parse_response_with_uninit_headers(&mut r, &self.buf, &mut fields) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                return Err(upstream("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(upstream(&format!("malformed response head: {e}"))),
        };
        let code = r.code.unwrap_or(0);
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(upstream("the upstream switched protocols unasked"));
            }
            self.buf.advance(n);
            return Ok(Some(Parsed::Interim));
        }
        let status = StatusCode::from_u16(code).map_err(|_| upstream("bad status code"))?;
        let version = if r.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let reason = r
            .reason
            .filter(|&r| Some(r) != status.canonical_reason())
            .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes().to_vec()).ok());
        // Offsets first: the field values then share the head's bytes
        // instead of each being copied.
        let base = self.buf.as_ptr() as usize;
        self.spans.clear();
        self.spans.extend(r.headers.iter().map(|h| {
            [
                h.name.as_ptr() as usize - base,
                h.name.len(),
                h.value.as_ptr() as usize - base,
                h.value.len(),
            ]
        }));
        let head = self.buf.split_to(n).freeze();
        let mut headers = std::mem::take(reuse);
        headers.clear();
        headers.reserve(self.spans.len());
        for &[ns, nl, vs, vl] in &self.spans {
            let name = &head[ns..ns + nl];
            let name = match usual_name(name) {
                Some(n) => n,
                None => HeaderName::from_bytes(name).map_err(|_| upstream("bad header name"))?,
            };
            let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
                .map_err(|_| upstream("bad header value"))?;
            headers.append(name, value);
        }
        let mut resp = http::Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        if let Some(reason) = reason {
            resp.extensions_mut().insert(reason);
        }
        Ok(Some(Parsed::Head(resp.into_parts().0)))
    }
}

/// The fields nearly every response carries, spelled as servers spell
/// them (Capitalised or lower case): matched whole, without
/// `HeaderName::from_bytes`' lowering copy and search of all standard
/// names. Anything else goes through that.
fn usual_name(name: &[u8]) -> Option<HeaderName> {
    Some(match name {
        b"Date" | b"date" => header::DATE,
        b"Server" | b"server" => header::SERVER,
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Connection" | b"connection" => header::CONNECTION,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"ETag" | b"etag" => header::ETAG,
        b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Vary" | b"vary" => header::VARY,
        b"Expires" | b"expires" => header::EXPIRES,
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Location" | b"location" => header::LOCATION,
        b"Age" | b"age" => header::AGE,
        _ => return None,
    })
}

enum Parsed {
    Interim,
    Head(http::response::Parts),
}

/// Why an exchange did not get a response.
enum Failed {
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

/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (none for `HEAD`, `204`, `304`).
    Length(u64),
    Chunked(Chunked),
    /// Until the server closes the connection.
    Close,
}

/// How a response of `status` to a `method` request is framed, from its
/// fields; and whether the connection may carry another request after it.
/// A `Content-Length` beside `Transfer-Encoding` is removed: the latter
/// frames the message, and the next hop must not see both.
pub fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), ProxyError> {
    let bad = |m: &str| ProxyError::UpstreamResponse(m.into());
    let mut keep_alive = match version {
        Version::HTTP_10 => has_token(headers, header::CONNECTION, "keep-alive"),
        _ => !has_token(headers, header::CONNECTION, "close"),
    };
    if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 response"));
        }
        let chunked = tokens(headers, header::TRANSFER_ENCODING)
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        return Ok(if chunked {
            (Framing::Chunked(Chunked::Size), keep_alive)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                .ok_or_else(|| bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// The comma-separated tokens of every `name` field, trimmed, empty ones
/// left out. Borrowed: every response's `Connection` is read through it.
fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a `name` field lists `token` (case-insensitively).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, with this much left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// In the trailer section, with this many bytes read of it.
    Trailers(usize),
    Done,
}

/// What one step of the chunked decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Data bytes at the front of the buffer: hand on this many.
    Data(usize),
    /// More bytes are needed.
    More,
    Done,
}

impl Chunked {
    /// Decodes from the front of `buf`, consuming framing bytes (not data:
    /// [`Step::Data`] says how many to take).
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ProxyError> {
        let bad = |m: &str| ProxyError::UpstreamResponse(format!("bad chunked body: {m}"));
        loop {
            match *self {
                Chunked::Done => return Ok(Step::Done),
                Chunked::Data(0) => *self = Chunked::DataEnd,
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = (buf.len() as u64).min(left);
                    *self = Chunked::Data(left - n);
                    return Ok(Step::Data(n as usize));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Size => {
                    let Some(end) = line_end(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(bad("chunk-size line too long"));
                        }
                        return Ok(Step::More);
                    };
                    let line = &buf[..end];
                    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                    let rest = &line[digits..];
                    // After the size: only whitespace before `;` extensions.
                    let rest_ok = rest
                        .iter()
                        .position(|&b| b == b';')
                        .map_or(rest, |i| &rest[..i])
                        .iter()
                        .all(|&b| b == b' ' || b == b'\t');
                    if digits == 0 || digits > 16 || !rest_ok {
                        return Err(bad("invalid chunk size"));
                    }
                    let size = line[..digits].iter().fold(0u64, |n, &d| {
                        n << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
                    });
                    buf.advance(end + 2);
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Trailers(read) => {
                    let Some(end) = line_end(buf) else {
                        if read + buf.len() > MAX_TRAILERS {
                            return Err(bad("trailers too large"));
                        }
                        return Ok(Step::More);
                    };
                    // Trailer fields are not passed on (the client did not
                    // ask for them, `TE: trailers` being hop-by-hop).
                    buf.advance(end + 2);
                    *self = if end == 0 {
                        Chunked::Done
                    } else {
                        Chunked::Trailers(read + end + 2)
                    };
                }
            }
        }
    }
}

/// Where the CRLF that ends the first line of `buf` starts.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A response whose head was read: its head, and its body still on the
/// connection.
pub struct Exchanged {
    pub head: http::response::Parts,
    conn: Conn,
    framing: Framing,
    keep_alive: bool,
}

/// Sends a request without a body to the first of `targets` that answers
/// (over an idle connection if the pool holds one) and reads the response
/// head within `response_timeout`. A pooled connection the server had
/// closed is replaced once by a new one, if the method is idempotent.
pub async fn exchange(
    pool: &Pool,
    targets: &[Resolved],
    mut parts: http::request::Parts,
    (connect_timeout, response_timeout): (std::time::Duration, std::time::Duration),
    ev: &mut Access,
) -> Result<Exchanged, ProxyError> {
    let mut pooled = pool.checkout_h1(targets);
    loop {
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => {
                let (io, t) = dial(targets, connect_timeout, pool.mark())
                    .await
                    .map_err(|f| f.noted(ev))?;
                Conn::new(io, t)
            }
        };
        ev.dialled(conn.reached);
        let once = async {
            conn.write_head(&parts)
                .await
                .map_err(|e| conn.failed(false, &e))?;
            conn.read_head(&mut parts.headers).await
        };
        match tokio::time::timeout(response_timeout, once).await {
            Err(_) => return Err(ProxyError::ResponseTimeout),
            Ok(Ok(mut head)) => {
                let (framing, keep_alive) =
                    framing(&parts.method, head.status, head.version, &mut head.headers)?;
                return Ok(Exchanged {
                    head,
                    conn,
                    framing,
                    keep_alive,
                });
            }
            Ok(Err(Failed::Stale)) if parts.method.is_idempotent() => continue,
            Ok(Err(Failed::Stale)) => {
                return Err(ProxyError::UpstreamResponse(
                    "the upstream closed an idle connection as the request was sent".into(),
                ))
            }
            Ok(Err(Failed::Error(e))) => return Err(e),
        }
    }
}

impl Exchanged {
    /// The body, streamed from the connection; its end finishes `ev` and
    /// returns the connection to `pool` when it can carry another request.
    pub fn into_body(self, ev: Access, pool: Arc<Pool>) -> (http::response::Parts, ResponseBody) {
        let body = ResponseBody {
            conn: Some(self.conn),
            framing: self.framing,
            keep_alive: self.keep_alive,
            down: 0,
            access: Some(ev),
            pool,
            failing: None,
        };
        (self.head, body)
    }
}

/// A response body read from the upstream connection as the client side
/// polls it.
pub struct ResponseBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    down: u64,
    /// Inline: the body is boxed once, by the client side, with it.
    access: Option<Access>,
    pool: Arc<Pool>,
    /// The error to return at the next poll ([`ResponseBody::fail`]).
    failing: Option<String>,
}

impl ResponseBody {
    fn at_end(&self) -> bool {
        matches!(self.framing, Framing::Length(0) | Framing::Chunked(Chunked::Done))
    }

    /// Finishes the event once; a connection whose body ended cleanly,
    /// with nothing read past it, goes back to the pool.
    fn end(&mut self, end: Result<(), ProxyError>) {
        if let Some(mut a) = self.access.take() {
            a.bytes(0, self.down);
            a.finish(end.as_ref().map(|_| ()));
        }
        if let Some(mut conn) = self.conn.take() {
            if end.is_ok() && self.keep_alive && self.framing != Framing::Close && conn.buf.is_empty() {
                conn.reused = true;
                self.pool.checkin_h1(conn);
            }
        }
    }

    /// Ends the event with `e`; the error itself is returned at the next
    /// poll. Until a body is pending the client side has not written the
    /// response head: failing at once would close the client's connection
    /// with nothing sent, where the client should see the status and the
    /// bytes that came before the cut.
    fn fail(&mut self, e: ProxyError, cx: &Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failing = Some(e.to_string());
        self.end(Err(e));
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn data(&mut self, n: usize) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.down += n as u64;
        // A body being read has its connection: it goes only at the end.
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(n).freeze()))))
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(msg) = this.failing.take() {
            return Poll::Ready(Some(Err(msg.into())));
        }
        loop {
            if this.at_end() {
                this.end(Ok(()));
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = conn.buf.len();
            match &mut this.framing {
                Framing::Length(left) if buffered > 0 => {
                    let n = (buffered as u64).min(*left);
                    *left -= n;
                    return this.data(n as usize);
                }
                Framing::Close if buffered > 0 => return this.data(buffered),
                Framing::Chunked(c) => match c.step(&mut conn.buf) {
                    Ok(Step::Data(n)) => return this.data(n),
                    Ok(Step::Done) => continue,
                    Ok(Step::More) => {}
                    Err(e) => return this.fail(e, cx),
                },
                _ => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if conn.buf.capacity() - conn.buf.len() < READ_SPACE / 4 {
                conn.buf.reserve(READ_SPACE);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) if this.framing == Framing::Close => {
                    this.end(Ok(()));
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(
                        ProxyError::UpstreamResponse("closed before the end of the response body".into()),
                        cx,
                    )
                }
                Ok(_) => {}
                Err(e) => return this.fail(ProxyError::UpstreamResponse(e.to_string()), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.at_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Not polled to the end: a body known to be empty has ended (the
        // server side does not poll those); otherwise the client went.
        if self.at_end() {
            self.end(Ok(()));
        } else {
            self.end(Err(ProxyError::ClientGone));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_names_are_the_names_http_parses() {
        // Every standard name, as servers spell it and in lower case, and a
        // few that only look alike.
        let standard = [
            "Accept-Ranges",
            "Age",
            "Cache-Control",
            "Connection",
            "Content-Encoding",
            "Content-Length",
            "Content-Type",
            "Date",
            "ETag",
            "Expires",
            "Last-Modified",
            "Location",
            "Server",
            "Set-Cookie",
            "Transfer-Encoding",
            "Vary",
        ];
        let mut seen = 0;
        for n in standard {
            for spelled in [n.to_string(), n.to_ascii_lowercase()] {
                let want = HeaderName::from_bytes(spelled.as_bytes()).unwrap();
                assert_eq!(usual_name(spelled.as_bytes()), Some(want), "{spelled}");
                seen += 1;
            }
        }
        assert_eq!(seen, 32);
        // Others take the long way, or at least come out the same.
        for other in [
            "DATE",
            "Etag",
            "X-Date",
            "Dates",
            "date ",
            "Content-Length2",
            "",
            "Keep-Alive",
        ] {
            let got = usual_name(other.as_bytes());
            assert!(
                got.is_none() || got == HeaderName::from_bytes(other.as_bytes()).ok(),
                "{other}"
            );
        }
    }

    fn decode(wire: &[u8], split: usize) -> Result<Vec<u8>, ProxyError> {
        let mut c = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(split) {
            buf.extend_from_slice(piece);
            loop {
                match c.step(&mut buf)? {
                    Step::Data(n) => out.extend_from_slice(&buf.split_to(n)),
                    Step::More => break,
                    Step::Done => return Ok(out),
                }
            }
        }
        Err(ProxyError::UpstreamResponse("incomplete".into()))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n1;ext=\"a;b\"\r\n \r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        for split in 1..wire.len() {
            assert_eq!(decode(wire, split).unwrap(), b"hello 0123456789", "split {split}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).unwrap(), b"");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"-1\r\n",
            b"5 x\r\nhello\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(decode(wire, 64).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    fn fields(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let get = Method::GET;
        let ok = StatusCode::OK;
        let v11 = Version::HTTP_11;
        let f =
            |m: &Method, s, v, pairs: &[(&'static str, &'static str)]| framing(m, s, v, &mut fields(pairs));
        use Framing::*;
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "5")]).unwrap(),
            (Length(5), true)
        );
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "5, 5")]).unwrap(),
            (Length(5), true)
        );
        assert!(f(&get, ok, v11, &[("content-length", "5"), ("content-length", "6")]).is_err());
        assert!(f(&get, ok, v11, &[("content-length", "+5")]).is_err());
        assert!(f(&get, ok, v11, &[("content-length", "")]).is_err());
        assert_eq!(
            f(&Method::HEAD, ok, v11, &[("content-length", "5")]).unwrap(),
            (Length(0), true)
        );
        assert_eq!(
            f(&get, StatusCode::NOT_MODIFIED, v11, &[("content-length", "5")]).unwrap(),
            (Length(0), true)
        );
        assert_eq!(
            f(&get, StatusCode::NO_CONTENT, v11, &[]).unwrap(),
            (Length(0), true)
        );
        assert_eq!(
            f(&get, ok, v11, &[("transfer-encoding", "gzip, Chunked")]).unwrap(),
            (Chunked(self::Chunked::Size), true)
        );
        assert_eq!(
            f(&get, ok, v11, &[("transfer-encoding", "gzip")]).unwrap(),
            (Close, false)
        );
        assert!(f(&get, ok, Version::HTTP_10, &[("transfer-encoding", "chunked")]).is_err());
        assert_eq!(f(&get, ok, v11, &[]).unwrap(), (Close, false));
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "5"), ("connection", "Close")]).unwrap(),
            (Length(5), false)
        );
        assert_eq!(
            f(&get, ok, Version::HTTP_10, &[("content-length", "5")]).unwrap(),
            (Length(5), false)
        );
        assert_eq!(
            f(
                &get,
                ok,
                Version::HTTP_10,
                &[("content-length", "5"), ("connection", "keep-alive")]
            )
            .unwrap(),
            (Length(5), true)
        );
        // Both: the coding frames it, the length is dropped, and the
        // connection is not trusted with another request.
        let mut h = fields(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        assert_eq!(
            framing(&get, ok, v11, &mut h).unwrap(),
            (Chunked(self::Chunked::Size), false)
        );
        assert!(!h.contains_key("content-length"));
    }
}
