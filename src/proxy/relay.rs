//! Relaying a tunnel: two directions, each passing on its end-of-stream as a
//! half-close, with the first client bytes inspected (TLS server name, TLS
//! only) before anything reaches upstream, an idle timeout, and errors told
//! apart by side so that a firewall reset is not mistaken for a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::policy::tls::{inspect, FirstBytes, MAX_RECORD};
use crate::policy::{normalize_host, Host, SniMode};

/// Bytes read at a time while data flows.
const BUF: usize = 64 * 1024;
/// Bytes held per direction while a tunnel waits: an idle tunnel keeps no
/// large buffers.
const IDLE_BUF: usize = 512;

/// Copies `r` to `w` until end of stream, holding a large buffer only while
/// data flows. Returns on EOF (after passing it on as a shutdown of `w`).
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    count: &AtomicU64,
    touch: &(impl Fn() + ?Sized),
    from: Side,
    to: Side,
) -> Result<(), Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; IDLE_BUF];
    // Empty while idle; a full small read means a burst: borrow a large
    // buffer until a read comes back short, then give it back.
    let mut big: Vec<u8> = Vec::new();
    loop {
        let buf: &mut [u8] = if big.is_empty() { &mut small } else { &mut big };
        let n = r
            .read(buf)
            .await
            .map_err(|e| (io_class(&e, from), e.to_string()))?;
        touch();
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        w.write_all(&buf[..n])
            .await
            .map_err(|e| (io_class(&e, to), e.to_string()))?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        if big.is_empty() && n == IDLE_BUF {
            big = vec![0u8; BUF];
        } else if !big.is_empty() && n < BUF {
            big = Vec::new();
        }
    }
}

/// What to check in the first bytes a client sends.
#[derive(Debug, Clone)]
pub struct FirstCheck {
    /// The CONNECT target's name; `None` for IP literals (nothing to compare).
    pub target: Option<String>,
    pub sni: SniMode,
    pub tls_only: bool,
}

impl FirstCheck {
    fn active(&self) -> bool {
        self.tls_only || (self.sni != SniMode::Off && self.target.is_some())
    }
}

/// How a relay ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub up: u64,
    pub down: u64,
    /// The server name the client asked for, when it sent a ClientHello.
    pub sni: Option<String>,
    pub error: Option<&'static str>,
    pub detail: Option<String>,
}

type Fail = (&'static str, String);

fn io_class(e: &std::io::Error, side: Side) -> &'static str {
    use std::io::ErrorKind::*;
    match (e.kind(), side) {
        (ConnectionReset | ConnectionAborted, Side::Client) => "client_reset",
        (ConnectionReset | ConnectionAborted, Side::Upstream) => "upstream_reset",
        (BrokenPipe, Side::Client) => "client_closed",
        (BrokenPipe, Side::Upstream) => "upstream_closed",
        (_, Side::Client) => "client_error",
        (_, Side::Upstream) => "upstream_error",
    }
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Upstream,
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
    relay_halves(cr, cw, ur, uw, Vec::new(), check, idle, cut).await
}

/// Relays until both directions are done, the tunnel idles for `idle`, a
/// check fails, or `cut` is cancelled. `pre` holds client bytes already read
/// (by the HTTP parser) that come before anything still in `cr`.
#[allow(clippy::too_many_arguments)]
pub async fn relay_halves<CR, CW, UR, UW>(
    mut cr: CR,
    mut cw: CW,
    mut ur: UR,
    mut uw: UW,
    pre: Vec<u8>,
    check: FirstCheck,
    idle: Duration,
    cut: CancellationToken,
) -> Outcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let up_n = AtomicU64::new(0);
    let down_n = AtomicU64::new(0);
    let mut sni = None;
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);

    let up = async {
        if check.active() {
            // Small reads: a tunnel whose client has not spoken yet holds no
            // large buffer (a ClientHello takes a few of these).
            let mut buf = [0u8; IDLE_BUF];
            let mut first = pre;
            // Bytes the HTTP parser already read may hold the whole ClientHello.
            let mut ready = !first.is_empty() && !matches!(inspect(&first), FirstBytes::Incomplete);
            loop {
                if ready {
                    ready = false;
                } else {
                    let n = cr
                        .read(&mut buf)
                        .await
                        .map_err(|e| (io_class(&e, Side::Client), e.to_string()))?;
                    touch();
                    if n == 0 {
                        break;
                    }
                    first.extend_from_slice(&buf[..n]);
                }
                match inspect(&first) {
                    FirstBytes::Incomplete if first.len() < MAX_RECORD => continue,
                    FirstBytes::ClientHello { sni: name } => {
                        if let (Some(name), Some(target)) = (&name, &check.target) {
                            let same = matches!(normalize_host(name), Ok(Host::Name(n)) if n == *target);
                            if !same && check.sni != SniMode::Off {
                                let detail = format!(
                                    "TLS server name {name:?} differs from CONNECT target {target:?}"
                                );
                                if check.sni == SniMode::Enforce {
                                    sni = Some(name.clone());
                                    return Err(("sni_mismatch", detail));
                                }
                                tracing::warn!(target_host = %target, sni = %name, "tunnel SNI mismatch (logged only)");
                            }
                        }
                        sni = name;
                        break;
                    }
                    FirstBytes::NotTls | FirstBytes::Malformed | FirstBytes::Incomplete if check.tls_only => {
                        return Err(("not_tls", "the rule allows TLS tunnels only".to_string()));
                    }
                    _ => break,
                }
            }
            uw.write_all(&first)
                .await
                .map_err(|e| (io_class(&e, Side::Upstream), e.to_string()))?;
            up_n.fetch_add(first.len() as u64, Ordering::Relaxed);
            if first.is_empty() {
                let _ = uw.shutdown().await;
                return Ok::<(), Fail>(());
            }
        } else if !pre.is_empty() {
            uw.write_all(&pre)
                .await
                .map_err(|e| (io_class(&e, Side::Upstream), e.to_string()))?;
            up_n.fetch_add(pre.len() as u64, Ordering::Relaxed);
        }
        // Half-close: each direction passes its FIN on; the other goes on.
        pump(&mut cr, &mut uw, &up_n, &touch, Side::Client, Side::Upstream).await
    };
    let down = pump(&mut ur, &mut cw, &down_n, &touch, Side::Upstream, Side::Client);
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
    let result: Result<(), Fail> = tokio::select! {
        r = async { tokio::try_join!(up, down) } => r.map(|_| ()),
        _ = idle_watch => Err(("idle_timeout", format!("no bytes either way for {idle:?}"))),
        _ = cut.cancelled() => Err(("shutdown", "cut at shutdown".to_string())),
    };
    let mut out = Outcome {
        up: up_n.load(Ordering::Relaxed),
        down: down_n.load(Ordering::Relaxed),
        sni,
        ..Default::default()
    };
    if let Err((class, detail)) = result {
        out.error = Some(class);
        out.detail = Some(detail);
    }
    out
}
