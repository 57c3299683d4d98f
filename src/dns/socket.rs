//! egressd's own DNS sockets, marked with `run --mark` so that the sealed
//! sidecar's rules, which send every other DNS packet of the pod to
//! egressd's DNS listener, let them out: hickory's (through [`Marked`], a
//! runtime provider that marks what hickory's tokio provider would open)
//! and the forwarder's, which relays `--dns-forward-zone` questions as
//! they came.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// hickory's tokio runtime, with every socket marked.
#[derive(Clone, Default)]
pub struct Marked {
    inner: TokioRuntimeProvider,
    mark: Option<u32>,
}

impl Marked {
    pub fn new(mark: Option<u32>) -> Marked {
        Marked {
            inner: TokioRuntimeProvider::default(),
            mark,
        }
    }
}

type Boxed<T> = Pin<Box<dyn Send + Future<Output = io::Result<T>>>>;

impl RuntimeProvider for Marked {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = UdpSocket;
    type Tcp = AsyncIoTokioAsStd<TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.inner.create_handle()
    }

    fn connect_tcp(
        &self,
        server: SocketAddr,
        bind: Option<SocketAddr>,
        wait: Option<Duration>,
    ) -> Boxed<Self::Tcp> {
        let Some(mark) = self.mark else {
            return self.inner.connect_tcp(server, bind, wait);
        };
        Box::pin(async move {
            let s = tcp_stream(server, bind, mark, wait.unwrap_or(Duration::from_secs(5))).await?;
            Ok(AsyncIoTokioAsStd(s))
        })
    }

    fn bind_udp(&self, local: SocketAddr, server: SocketAddr) -> Boxed<Self::Udp> {
        let mark = self.mark;
        Box::pin(async move { udp_socket(local, mark).map_err(|e| with_peer(e, server)) })
    }
}

fn with_peer(e: io::Error, peer: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("DNS socket for {peer}: {e}"))
}

/// A UDP socket bound to `local`, marked.
pub fn udp_socket(local: SocketAddr, mark: Option<u32>) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(m) = mark {
        s.set_mark(m)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&local.into())?;
    UdpSocket::from_std(s.into())
}

async fn tcp_stream(
    server: SocketAddr,
    bind: Option<SocketAddr>,
    mark: u32,
    wait: Duration,
) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(server), Type::STREAM, Some(Protocol::TCP))?;
    s.set_mark(mark)?;
    s.set_nonblocking(true)?;
    if let Some(b) = bind {
        s.bind(&b.into())?;
    }
    let s = tokio::net::TcpSocket::from_std_stream(s.into());
    let stream = tokio::time::timeout(wait, s.connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Relays `query` to the first of `servers` that answers within `wait`
/// (over UDP; over TCP when the client asked over TCP and the UDP answer
/// was truncated), and returns the answer as it came.
pub async fn forward(
    query: &[u8],
    servers: &[SocketAddr],
    mark: Option<u32>,
    wait: Duration,
    tcp: bool,
) -> io::Result<Vec<u8>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no DNS server to forward to");
    for &server in servers {
        let answer = tokio::time::timeout(wait, forward_udp(query, server, mark)).await;
        let answer = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                last = with_peer(e, server);
                continue;
            }
            Err(_) => {
                last = io::Error::new(io::ErrorKind::TimedOut, format!("{server} did not answer"));
                continue;
            }
        };
        let truncated = answer.get(2).is_some_and(|flags| flags & 0x02 != 0);
        if !(tcp && truncated) {
            return Ok(answer);
        }
        match tokio::time::timeout(wait, forward_tcp(query, server, mark, wait)).await {
            Ok(Ok(a)) => return Ok(a),
            Ok(Err(e)) => last = with_peer(e, server),
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{server} did not answer over TCP"),
                )
            }
        }
    }
    Err(last)
}

async fn forward_udp(query: &[u8], server: SocketAddr, mark: Option<u32>) -> io::Result<Vec<u8>> {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = udp_socket(any, mark)?;
    s.connect(server).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = s.recv(&mut buf).await?;
        // The answer to this query: the same ID (a connected socket hears
        // only the server).
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(
    query: &[u8],
    server: SocketAddr,
    mark: Option<u32>,
    wait: Duration,
) -> io::Result<Vec<u8>> {
    let mut s = match mark {
        Some(m) => tcp_stream(server, None, m, wait).await?,
        None => TcpStream::connect(server).await?,
    };
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(query).await?;
    let n = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}
