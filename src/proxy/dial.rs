//! Step 5: dialling. One dialer for every kind of request: it tries each
//! checked address in order, within the connect timeout each. A leaf: the
//! pools ([`super::pool`], [`super::h1`]) and the parent build on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use tokio::net::TcpStream;

use super::respond::ProxyError;
use crate::policy::Resolved;

/// How long an idle upstream connection is kept (by either pool).
pub const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream address.
pub const POOL_PER_ADDR: usize = 64;

/// The pools' hasher: seeded, as clients pick addresses within allowed
/// networks, and a tenth of SipHash's cost on every checkout and checkin.
pub type Seeded = foldhash::fast::RandomState;

/// A dial (or an exchange over what it dialled) that failed, with the last
/// address tried, for the caller to record.
#[derive(Debug)]
pub struct DialError {
    pub error: ProxyError,
    pub last: Option<Resolved>,
}

/// A TLS origin: the name its certificate must carry, and how to verify it
/// (HTTP/1.1 only, and, when the origin may be offered HTTP/2, with ALPN
/// `h2` first).
pub struct TlsOrigin {
    pub name: ServerName<'static>,
    pub config: Arc<rustls::ClientConfig>,
    pub config_h2: Option<Arc<rustls::ClientConfig>>,
}

/// TLS to an origin over `io`, verified for the origin's name; offering
/// HTTP/2 when `h2`.
pub async fn tls<IO>(
    origin: &TlsOrigin,
    io: IO,
    timeout: Duration,
    h2: bool,
) -> Result<tokio_rustls::client::TlsStream<IO>, ProxyError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let config = match (&origin.config_h2, h2) {
        (Some(c), true) => c.clone(),
        _ => origin.config.clone(),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(timeout, connector.connect(origin.name.clone(), io))
        .await
        .map_err(|_| ProxyError::ConnectTimeout)?
        .map_err(|e| ProxyError::from_tls(&e))
}

/// A TCP connection to `addr`; with `mark`, its socket carries that
/// `SO_MARK`, so that transparent mode's redirect rules let egressd's own
/// upstream connections pass instead of sending them back to it.
pub async fn connect_tcp(addr: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let Some(mark) = mark else {
        return TcpStream::connect(addr).await;
    };
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_mark(mark)?;
    s.set_nonblocking(true)?;
    tokio::net::TcpSocket::from_std_stream(s.into())
        .connect(addr)
        .await
}

/// Whether sockets can carry `mark` here: `SO_MARK` needs CAP_NET_ADMIN.
/// Checked at start, so that a missing capability is one clear error
/// rather than every upstream connection failing.
pub fn check_mark(mark: u32) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
    s.set_mark(mark).map_err(|e| {
        format!(
            "--mark {mark}: cannot mark sockets ({e}); it needs CAP_NET_ADMIN. Without it, exempt egressd by \
             its uid instead: egressd transparent-rules --uid UID"
        )
    })
}

/// RFC 8305 §5's connection attempt delay: while an address is still
/// connecting, the next is tried this long after it started.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Dials `targets` in order (sockets marked with `mark`), each within
/// `timeout`, as Happy Eyeballs does (RFC 8305): the next address starts
/// [`ATTEMPT_DELAY`] after the last one while that one is still
/// connecting, or at once when it fails; the first to connect wins and the
/// others are dropped. An address that drops packets (an IPv6 route that
/// leads nowhere) then costs a quarter second, not the connect timeout.
/// Returns the stream and the address it reached.
pub async fn dial(
    targets: &[Resolved],
    timeout: Duration,
    mark: Option<u32>,
) -> Result<(TcpStream, Resolved), DialError> {
    let attempt = move |t: Resolved| async move {
        let r = match tokio::time::timeout(timeout, connect_tcp(t.addr, mark)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(ProxyError::from_connect(&e)),
            Err(_) => Err(ProxyError::ConnectTimeout),
        };
        (t, r)
    };
    let mut failed = DialError {
        error: ProxyError::ConnectOther("no address".into()),
        last: None,
    };
    // One address (a pin, most names): no race to run.
    if let [t] = targets {
        let (t, r) = attempt(*t).await;
        return r
            .map(|s| (s, t))
            .map_err(|error| DialError { error, last: Some(t) });
    }
    let mut racing = tokio::task::JoinSet::new();
    let mut next = targets.iter().copied();
    let mut more = true;
    let mut start = |racing: &mut tokio::task::JoinSet<_>, more: &mut bool| match next.next() {
        Some(t) => {
            racing.spawn(attempt(t));
        }
        None => *more = false,
    };
    start(&mut racing, &mut more);
    loop {
        tokio::select! {
            done = racing.join_next() => match done {
                Some(Ok((t, Ok(s)))) => return Ok((s, t)),
                Some(Ok((t, Err(e)))) => {
                    failed = DialError { error: e, last: Some(t) };
                    if more {
                        start(&mut racing, &mut more);
                    }
                }
                Some(Err(_)) => {}
                None if more => start(&mut racing, &mut more),
                None => return Err(failed),
            },
            _ = tokio::time::sleep(ATTEMPT_DELAY), if more => start(&mut racing, &mut more),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address on loopback where nothing listens.
    pub(crate) async fn closed_port() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    fn target(addr: SocketAddr) -> Resolved {
        Resolved { addr, pinned: false }
    }

    #[tokio::test]
    async fn each_checked_address_is_tried_in_order() {
        let dead = closed_port().await;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let (_, reached) = dial(&[target(dead), target(live_addr)], Duration::from_secs(2), None)
            .await
            .unwrap();
        assert_eq!(reached.addr, live_addr);

        let failed = dial(&[target(live_addr), target(dead)], Duration::from_secs(2), None).await;
        assert_eq!(failed.unwrap().1.addr, live_addr, "the first that answers wins");

        let dead2 = closed_port().await;
        let e = dial(&[target(dead), target(dead2)], Duration::from_secs(2), None)
            .await
            .unwrap_err();
        assert!(matches!(e.error, ProxyError::ConnectRefused), "{:?}", e.error);
        assert_eq!(
            e.last.map(|t| t.addr),
            Some(dead2),
            "the last address tried is reported"
        );
    }

    /// An address that never answers (a listener whose backlog is full
    /// drops the handshake) costs the attempt delay, not the timeout.
    #[tokio::test]
    async fn an_address_that_drops_packets_does_not_hold_up_the_next() {
        let (silent, _listener, _held) = full_backlog().await;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let started = std::time::Instant::now();
        let (_, reached) = dial(
            &[target(silent), target(live_addr)],
            Duration::from_secs(30),
            None,
        )
        .await
        .unwrap();
        assert_eq!(reached.addr, live_addr);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}: the second address waited for the first's timeout",
            started.elapsed()
        );
    }

    /// A loopback listener that never accepts, its backlog filled: further
    /// handshakes get no answer.
    async fn full_backlog() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        let mut held = vec![];
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(c)) => held.push(c),
                _ => break,
            }
        }
        (addr, s, held)
    }
}
