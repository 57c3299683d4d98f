//! Relaying a tunnel: two directions, each passing on its end-of-stream as a
//! half-close, with the first client bytes judged ([`super::hello::judge`])
//! before anything reaches upstream, an idle timeout, and errors told apart
//! by side so that a firewall reset is not mistaken for a timeout.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hello::{judge, FirstCheck, Judgement};
use super::respond::{ProxyError, Side};

/// The copy buffer: what one read may take while data flows. A read that
/// fills it is a bulk transfer (spliced where splicing applies).
const BUF: usize = 64 * 1024;
/// Bytes a tunnel's first read takes while its client's first bytes are
/// judged (a ClientHello takes a few of these).
const IDLE_BUF: usize = 512;

thread_local! {
    /// Each thread's one copy buffer, lent to a direction for one read and
    /// the writes of what it read, within one poll: no tunnel holds a
    /// buffer while it waits, and a response of any size up to [`BUF`]
    /// moves with one read and one write.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// When tunnel bursts move with splice(2) instead of being copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SpliceMode {
    /// Only when neither end is a loopback address. On loopback the
    /// receiving process pays more for spliced pages than the proxy saves
    /// (measured: benches/README.md); between network interfaces splicing
    /// spares the proxy two copies of every byte.
    #[default]
    Auto,
    /// Whatever the addresses (for measuring, or hosts where the proxy's
    /// CPU is what runs out).
    Always,
    /// Copy every burst through a 64 KiB buffer.
    Never,
}

impl SpliceMode {
    /// Whether a tunnel between these two peers splices its bursts.
    pub fn applies(self, client: std::net::IpAddr, upstream: std::net::IpAddr) -> bool {
        let lo = |ip| crate::policy::normalize::canonical_ip(ip).is_loopback();
        match self {
            SpliceMode::Auto => !lo(client) && !lo(upstream),
            SpliceMode::Always => true,
            SpliceMode::Never => false,
        }
    }
}

/// The socket under one half of a tunnel, when it is a plain TCP socket:
/// bursts between two of those are moved with splice(2).
pub trait AsTcp {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl AsTcp for tokio::net::tcp::ReadHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}
impl AsTcp for tokio::net::tcp::WriteHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}
impl<T> AsTcp for tokio::io::ReadHalf<T> {}
impl<T> AsTcp for tokio::io::WriteHalf<T> {}

/// Copies `r` to `w` until end of stream, through the thread's copy buffer
/// (or, between two TCP sockets, a pipe while a bulk transfer lasts).
/// Returns on EOF (after passing it on as a shutdown of `w`).
///
/// Each read takes up to [`BUF`] and is written on in the same poll; only
/// what `w` does not take at once is copied out and held, until written.
/// So a waiting tunnel holds no buffer, and a message of any size up to
/// [`BUF`] costs one read and one write.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    splice: bool,
    count: &AtomicU64,
    touch: &(impl Fn() + ?Sized),
    from: Side,
    to: Side,
) -> Result<(), ProxyError>
where
    R: AsyncRead + AsTcp + Unpin,
    W: AsyncWrite + AsTcp + Unpin,
{
    let mut can_splice = splice && cfg!(target_os = "linux") && r.tcp().is_some() && w.tcp().is_some();
    // What the last read brought that the writer did not take at once.
    let mut rest: Vec<u8> = Vec::new();
    loop {
        let n = std::future::poll_fn(|cx| copy_once(r, w, cx, &mut rest))
            .await
            .map_err(|e| e.blame(from, to))?;
        touch();
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        if !rest.is_empty() {
            w.write_all(&rest).await.map_err(|e| ProxyError::io(to, &e))?;
            rest = Vec::new();
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        if n < BUF || !can_splice {
            continue;
        }
        // A full buffer: a bulk transfer, moved inside the kernel until it
        // slows down.
        if let (Some(rt), Some(wt)) = (r.tcp(), w.tcp()) {
            match splice::burst(rt, wt, count, touch).await {
                Ok(BurstEnd::Eof) => {
                    let _ = w.shutdown().await;
                    return Ok(());
                }
                Ok(BurstEnd::Slowed | BurstEnd::NoPipe) => {}
                // The kernel cannot splice these sockets: copy from now on.
                Ok(BurstEnd::Unavailable) => can_splice = false,
                Err(e) => return Err(e.blame(from, to)),
            }
        }
    }
}

/// One read from `r` into the thread's copy buffer, and as much of it
/// written to `w` as `w` takes without waiting; the rest goes to `rest`.
/// Ready with the bytes read (0 at end of stream).
fn copy_once<R, W>(
    r: &mut R,
    w: &mut W,
    cx: &mut Context<'_>,
    rest: &mut Vec<u8>,
) -> Poll<Result<usize, SideError>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    SCRATCH.with(|cell| {
        // Lent within this call only, so never lent twice; should that
        // change, a buffer of the call's own keeps the relay working.
        let mut own = Vec::new();
        let mut lent = cell.try_borrow_mut().ok();
        let buf: &mut Vec<u8> = match lent.as_deref_mut() {
            Some(b) => b,
            None => &mut own,
        };
        if buf.len() < BUF {
            buf.resize(BUF, 0);
        }
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).map_err(SideError::Read)?;
        let data = rb.filled();
        let mut at = 0;
        while at < data.len() {
            match Pin::new(&mut *w).poll_write(cx, &data[at..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(SideError::Write(std::io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(m)) => at += m,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SideError::Write(e))),
                // The writer's wake-up is registered; the caller writes the
                // rest once it can.
                Poll::Pending => break,
            }
        }
        rest.extend_from_slice(&data[at..]);
        Poll::Ready(Ok(data.len()))
    })
}

/// How a spliced burst ended.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum BurstEnd {
    Eof,
    /// A short transfer: the flow is interactive again; the pipe is closed.
    Slowed,
    /// Out of descriptors, or of the user's pipe budget.
    NoPipe,
    /// The kernel cannot splice these sockets.
    Unavailable,
}

/// A copy or a spliced burst failed on the side that read or that wrote.
enum SideError {
    Read(std::io::Error),
    Write(std::io::Error),
}

impl SideError {
    /// The relay's error, blaming the side that read (`from`) or wrote (`to`).
    fn blame(self, from: Side, to: Side) -> ProxyError {
        match self {
            SideError::Read(e) => ProxyError::io(from, &e),
            SideError::Write(e) => ProxyError::io(to, &e),
        }
    }
}

/// Bursts moved socket to pipe to socket inside the kernel: the bytes of a
/// bulk transfer never enter user space.
#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};

    use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{BurstEnd as End, SideError as Error};

    /// Pipe size asked for, and asked of the source per splice. Larger
    /// sizes measured no better on loopback; smaller ones mean more calls.
    const PIPE_SIZE: usize = 256 << 10;
    const CHUNK: usize = PIPE_SIZE;
    /// Below this a pipe moves less per call than the copy buffer.
    const MIN_PIPE: usize = super::BUF;

    /// Moves bytes from `r` to `w` until `r` ends or the flow slows to
    /// small transfers. The pipe is a ring between the sockets: it is
    /// refilled whenever the writer moves, so neither side waits for the
    /// other to drain it completely.
    pub async fn burst(
        r: &TcpStream,
        w: &TcpStream,
        count: &AtomicU64,
        touch: &(impl Fn() + ?Sized),
    ) -> Result<End, Error> {
        let Ok((pipe_r, pipe_w)) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) else {
            return Ok(End::NoPipe);
        };
        // Larger moves mean fewer wake-ups of the reader. An unprivileged
        // user's pipes share a page budget (pipe-user-pages-soft); once it
        // is spent, new pipes are tiny and copying through the large buffer
        // is faster.
        let _ = rustix::pipe::fcntl_setpipe_size(&pipe_w, PIPE_SIZE);
        if rustix::pipe::fcntl_getpipe_size(&pipe_w).map_or(true, |n| n < MIN_PIPE) {
            return Ok(End::NoPipe);
        }
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let would_block = |e: &io::Error| e.kind() == io::ErrorKind::WouldBlock;
        let (mut held, mut eof, mut moved, mut last_in) = (0usize, false, false, usize::MAX);
        loop {
            let mut fill_blocked = false;
            if !eof {
                let filled = if held == 0 {
                    // Empty pipe: "would block" means the socket is drained,
                    // and tokio may forget its readiness.
                    r.try_io(Interest::READABLE, || {
                        into_io(splice(r, None, &pipe_w, None, CHUNK, flags))
                    })
                } else {
                    // The pipe may be full: a "would block" proves nothing
                    // about the socket, whose readiness must stay as it is.
                    into_io(splice(r, None, &pipe_w, None, CHUNK, flags))
                };
                match filled {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        held += n;
                        last_in = n;
                        touch();
                    }
                    Err(e) if would_block(&e) => fill_blocked = true,
                    // Only before anything entered the pipe: nothing may be lost.
                    Err(e)
                        if held == 0
                            && !moved
                            && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                    {
                        return Ok(End::Unavailable)
                    }
                    Err(e) => return Err(Error::Read(e)),
                }
            }
            let mut blocked = false;
            if held > 0 {
                match w.try_io(Interest::WRITABLE, || {
                    into_io(splice(&pipe_r, None, w, None, held, flags))
                }) {
                    Ok(m) => {
                        held -= m;
                        moved = true;
                        count.fetch_add(m as u64, Ordering::Relaxed);
                    }
                    Err(e) if would_block(&e) => blocked = true,
                    Err(e) => return Err(Error::Write(e)),
                }
            }
            if held == 0 {
                if eof {
                    return Ok(End::Eof);
                }
                if last_in < super::IDLE_BUF {
                    return Ok(End::Slowed);
                }
                if fill_blocked {
                    r.readable().await.map_err(Error::Read)?;
                }
            } else if blocked {
                w.writable().await.map_err(Error::Write)?;
            }
        }
    }

    fn into_io(r: rustix::io::Result<usize>) -> io::Result<usize> {
        r.map_err(io::Error::from)
    }
}

/// Elsewhere bursts are copied through the large buffer.
#[cfg(not(target_os = "linux"))]
mod splice {
    use std::sync::atomic::AtomicU64;

    use super::{BurstEnd as End, SideError as Error};
    pub async fn burst(
        _: &super::TcpStream,
        _: &super::TcpStream,
        _: &AtomicU64,
        _: &(impl Fn() + ?Sized),
    ) -> Result<End, Error> {
        Ok(End::Unavailable)
    }
}

/// How a relay ended.
#[derive(Debug)]
pub struct Outcome {
    pub up: u64,
    pub down: u64,
    /// The server name the client asked for, when it sent a ClientHello.
    pub sni: Option<String>,
    /// How it ended: both sides done, or why it was cut.
    pub end: Result<(), ProxyError>,
}

/// Reads the client's first bytes until `check` can judge them, or the
/// client ends its side. Small reads: a tunnel whose client has not spoken
/// yet holds no large buffer (a ClientHello takes a few of these). `pre`
/// holds bytes already read (by the HTTP parser), which may hold it all.
pub async fn read_first<R: AsyncRead + Unpin>(
    cr: &mut R,
    pre: Vec<u8>,
    check: &FirstCheck,
    touch: &(impl Fn() + ?Sized),
) -> Result<(Vec<u8>, Judgement), ProxyError> {
    let mut buf = [0u8; IDLE_BUF];
    let mut first = pre;
    let mut judged = if first.is_empty() {
        Judgement::NeedMore
    } else {
        judge(check, &first)
    };
    while matches!(judged, Judgement::NeedMore) {
        let n = cr
            .read(&mut buf)
            .await
            .map_err(|e| ProxyError::io(Side::Client, &e))?;
        touch();
        if n == 0 {
            break;
        }
        first.extend_from_slice(&buf[..n]);
        judged = judge(check, &first);
    }
    Ok((first, judged))
}

/// Relays two whole streams (e.g. an upgraded WebSocket connection).
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    check: FirstCheck,
    idle: Duration,
    cut: CancellationToken,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    relay_halves(cr, cw, ur, uw, Vec::new(), false, check, idle, cut).await
}

/// Relays until both directions are done, the tunnel idles for `idle`, a
/// check fails, or `cut` is cancelled. `pre` holds client bytes already read
/// (by the HTTP parser) that come before anything still in `cr`. With
/// `splice`, bursts between two TCP sockets stay in the kernel.
#[allow(clippy::too_many_arguments)]
pub async fn relay_halves<CR, CW, UR, UW>(
    mut cr: CR,
    mut cw: CW,
    mut ur: UR,
    mut uw: UW,
    pre: Vec<u8>,
    splice: bool,
    check: FirstCheck,
    idle: Duration,
    cut: CancellationToken,
) -> Outcome
where
    CR: AsyncRead + AsTcp + Unpin,
    CW: AsyncWrite + AsTcp + Unpin,
    UR: AsyncRead + AsTcp + Unpin,
    UW: AsyncWrite + AsTcp + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let up_n = AtomicU64::new(0);
    let down_n = AtomicU64::new(0);
    let mut sni = None;
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);

    let up = async {
        if check.active() {
            let (first, judged) = read_first(&mut cr, pre, &check, &touch).await?;
            match judged {
                Judgement::Refuse { sni: name, error } => {
                    sni = name;
                    return Err(error);
                }
                Judgement::Pass { sni: name, mismatch } => {
                    if mismatch {
                        tracing::warn!(target_host = ?check.target, sni = ?name, "tunnel SNI mismatch (logged only)");
                    }
                    sni = name;
                }
                Judgement::NeedMore => {}
            }
            uw.write_all(&first)
                .await
                .map_err(|e| ProxyError::io(Side::Upstream, &e))?;
            up_n.fetch_add(first.len() as u64, Ordering::Relaxed);
            if first.is_empty() {
                let _ = uw.shutdown().await;
                return Ok::<(), ProxyError>(());
            }
        } else if !pre.is_empty() {
            uw.write_all(&pre)
                .await
                .map_err(|e| ProxyError::io(Side::Upstream, &e))?;
            up_n.fetch_add(pre.len() as u64, Ordering::Relaxed);
        }
        // Half-close: each direction passes its FIN on; the other goes on.
        pump(
            &mut cr,
            &mut uw,
            splice,
            &up_n,
            &touch,
            Side::Client,
            Side::Upstream,
        )
        .await
    };
    let down = pump(
        &mut ur,
        &mut cw,
        splice,
        &down_n,
        &touch,
        Side::Upstream,
        Side::Client,
    );
    let idle_watch = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let end: Result<(), ProxyError> = tokio::select! {
        r = async { tokio::try_join!(up, down) } => r.map(|_| ()),
        _ = idle_watch => Err(ProxyError::IdleTimeout(idle)),
        _ = cut.cancelled() => Err(ProxyError::Shutdown),
    };
    Outcome {
        up: up_n.load(Ordering::Relaxed),
        down: down_n.load(Ordering::Relaxed),
        sni,
        end,
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    pre: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.pre.len() {
            let n = (self.pre.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.pre[at..at + n]);
            self.at += n;
            if self.at == self.pre.len() {
                self.pre = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Rewind<S> {
    pub fn new(pre: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind { pre, at: 0, inner }
    }
}

#[cfg(test)]
mod tests {
    use super::SpliceMode;

    #[test]
    fn auto_splices_only_between_non_loopback_peers() {
        let ip = |s: &str| s.parse().unwrap();
        let auto = SpliceMode::Auto;
        assert!(auto.applies(ip("10.1.2.3"), ip("162.247.217.20")));
        assert!(!auto.applies(ip("127.0.0.1"), ip("162.247.217.20")));
        assert!(!auto.applies(ip("10.1.2.3"), ip("::1")));
        assert!(!auto.applies(ip("::ffff:127.0.0.1"), ip("162.247.217.20")));
        assert!(SpliceMode::Always.applies(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(!SpliceMode::Never.applies(ip("10.1.2.3"), ip("10.9.9.9")));
    }
}
