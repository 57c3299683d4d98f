//! The start of the request a client is sending, kept so that a request
//! hyper cannot parse (it answers 400 and hands us only its error) is
//! still named in its access event: method, target, or the first bytes,
//! bounded and escaped.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much of a request's start is kept: a request line's worth.
pub const KEPT: usize = 256;

/// The bytes kept, shared with whoever logs the connection's end.
#[derive(Default)]
pub struct Head {
    bytes: Vec<u8>,
}

/// A client stream that keeps the first [`KEPT`] bytes of each request:
/// what arrives after a response was written starts a new one. The cost
/// is one uncontended lock and a copy of at most [`KEPT`] bytes per
/// request, none per read once the start is kept.
pub struct Heard<IO> {
    pub io: IO,
    head: Arc<Mutex<Head>>,
    /// A response went out: the next bytes read start a request.
    fresh: bool,
    /// Still keeping this request's start.
    taking: bool,
}

impl<IO> Heard<IO> {
    pub fn new(io: IO) -> (Heard<IO>, Arc<Mutex<Head>>) {
        let head = Arc::new(Mutex::new(Head {
            bytes: Vec::with_capacity(KEPT),
        }));
        let heard = Heard {
            io,
            head: head.clone(),
            fresh: true,
            taking: false,
        };
        (heard, head)
    }

    fn keep(&mut self, new: &[u8]) {
        if !(self.fresh || self.taking) || new.is_empty() {
            return;
        }
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::take(&mut self.fresh) {
            head.bytes.clear();
        }
        let room = KEPT - head.bytes.len();
        head.bytes.extend_from_slice(&new[..new.len().min(room)]);
        self.taking = head.bytes.len() < KEPT;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Heard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.keep(&buf.filled()[before..]);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Heard<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.fresh = true;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.fresh = true;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What could be read of a request that did not parse.
#[derive(Debug, PartialEq, Eq)]
pub struct Unparsed {
    /// The method, when the request starts with a token and a space.
    pub method: Option<http::Method>,
    /// The request target as written, escaped, when a method came first.
    pub target: Option<String>,
    /// The first bytes, escaped, when not even a method could be read.
    pub start: Option<String>,
}

/// Reads the method and target of a request's kept start; bytes that are
/// not printable ASCII are written `\xNN`.
pub fn read(head: &Head) -> Unparsed {
    let b = &head.bytes;
    let line = &b[..b
        .windows(2)
        .position(|w| w == b"\r\n")
        .or(b.iter().position(|&c| c == b'\n'))
        .unwrap_or(b.len())];
    let mut parts = line.splitn(3, |&c| c == b' ');
    let method = parts
        .next()
        .filter(|m| !m.is_empty() && m.len() <= 32)
        .and_then(|m| http::Method::from_bytes(m).ok());
    let target = match (&method, parts.next()) {
        (Some(_), Some(t)) if !t.is_empty() => Some(escape(t, KEPT)),
        _ => None,
    };
    let start = match method {
        None if !b.is_empty() => Some(escape(b, 64)),
        _ => None,
    };
    Unparsed {
        method,
        target,
        start,
    }
}

/// `bytes` as printable ASCII: `\` and anything outside `!`..=`~` but a
/// space as `\xNN`, at most `max` input bytes.
pub fn escape(bytes: &[u8], max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len().min(max));
    for &c in &bytes[..bytes.len().min(max)] {
        if (c == b' ' || c.is_ascii_graphic()) && c != b'\\' {
            out.push(c as char);
        } else {
            let _ = write!(out, "\\x{c:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn head(b: &[u8]) -> Head {
        Head { bytes: b.to_vec() }
    }

    #[test]
    fn a_request_line_gives_method_and_target() {
        let u = read(&head(b"GET http://a.test/x HTTP/1.1\r\nBad Header\r\n\r\n"));
        assert_eq!(u.method, Some(http::Method::GET));
        assert_eq!(u.target.as_deref(), Some("http://a.test/x"));
        assert_eq!(u.start, None);
        // A bare LF ends the line too; a method alone has no target.
        let u = read(&head(b"PURGE\n"));
        assert_eq!(
            (u.method.as_ref().map(|m| m.as_str()), u.target),
            (Some("PURGE"), None)
        );
    }

    #[test]
    fn garbage_is_kept_as_escaped_first_bytes() {
        let u = read(&head(b"\x16\x03\x01\x02\x00\x01\\ hi"));
        assert_eq!(u.method, None);
        assert_eq!(u.start.as_deref(), Some(r"\x16\x03\x01\x02\x00\x01\x5c hi"));
        let long = vec![0xffu8; 1000];
        assert_eq!(read(&head(&long)).start.unwrap().len(), 64 * 4);
        assert_eq!(escape(b"/a\"b\x7f", 10), "/a\"b\\x7f");
    }

    #[tokio::test]
    async fn each_request_s_start_is_kept_up_to_the_bound() {
        let (mut a, b) = tokio::io::duplex(4096);
        let (mut heard, kept) = Heard::new(b);
        let mut buf = [0u8; 2048];
        a.write_all(b"GET /one HTTP/1.1\r\n").await.unwrap();
        let n = heard.read(&mut buf).await.unwrap();
        assert_eq!(n, 19);
        a.write_all(b"Host: x\r\n\r\n").await.unwrap();
        assert_eq!(heard.read(&mut buf).await.unwrap(), 11);
        assert_eq!(
            kept.lock().unwrap().bytes,
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        // A response, then the next request replaces what was kept, and
        // only its first KEPT bytes are kept.
        heard.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let mut next = b"POST /two HTTP/1.1\r\nX: ".to_vec();
        next.resize(1500, b'a');
        a.write_all(&next).await.unwrap();
        let mut got = 0;
        while got < next.len() {
            got += heard.read(&mut buf).await.unwrap();
        }
        assert_eq!(kept.lock().unwrap().bytes, &next[..KEPT]);
    }
}
