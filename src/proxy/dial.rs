//! Step 5: dialling. One dialer for every kind of request: it tries each
//! checked address in order, within the connect timeout each. A leaf: the
//! pools ([`super::pool`], [`super::h1`]) and the parent build on it.

use std::net::SocketAddr;
use std::time::Duration;

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

/// Dials the first of `targets` that answers, in order, within `timeout`
/// each (sockets marked with `mark`). Returns the stream and the address
/// it reached.
pub async fn dial(
    targets: &[Resolved],
    timeout: Duration,
    mark: Option<u32>,
) -> Result<(TcpStream, Resolved), DialError> {
    let mut failed = DialError {
        error: ProxyError::ConnectOther("no address".into()),
        last: None,
    };
    for t in targets {
        failed.last = Some(*t);
        match tokio::time::timeout(timeout, connect_tcp(t.addr, mark)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, *t));
            }
            Ok(Err(e)) => failed.error = ProxyError::from_connect(&e),
            Err(_) => failed.error = ProxyError::ConnectTimeout,
        }
    }
    Err(failed)
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
}
