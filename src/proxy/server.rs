//! Listeners and connections: accept, admit the client by source network,
//! cap connections, serve HTTP/1.1 with upgrades, route each request to its
//! handler, drain on shutdown.
//!
//! `egressd run` serves on one single-threaded runtime per worker, each with
//! its own listening socket per address (`SO_REUSEPORT`): the kernel spreads
//! connections over the workers, and a connection's tasks (client side,
//! upstream connection, tunnel) never leave its thread, so no request pays
//! for waking another thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::client::{serve_http1, unparsed, ClientTcp};
use super::pipeline::refuse;
use super::pool::Pool;
use super::respond::{Body, ProxyError};
use super::{connect, forward, Shared};
use crate::access::EventKind;

/// Binds every address once per worker, the sockets of one address sharing
/// its port (`SO_REUSEPORT`). Returns the listeners by worker. An address
/// already in use is an error, even if its holder would share it: each
/// address is first bound alone, which fails against any listener.
pub fn bind_workers(addrs: &[SocketAddr], workers: usize) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
    bind_workers_as(addrs, workers, false)
}

/// [`bind_workers`]; `transparent` listeners also accept `TPROXY`ed
/// connections for foreign addresses (`IP_TRANSPARENT`, which needs
/// `CAP_NET_ADMIN`; without it `REDIRECT` still works).
pub fn bind_workers_as(
    addrs: &[SocketAddr],
    workers: usize,
    transparent: bool,
) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
    let in_use = |a: SocketAddr, e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}"));
    let mut by_worker: Vec<Vec<std::net::TcpListener>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    for &a in addrs {
        // Also turns port 0 into the port the workers share.
        let actual = std::net::TcpListener::bind(a)
            .and_then(|l| l.local_addr())
            .map_err(|e| in_use(a, e))?;
        for w in by_worker.iter_mut() {
            w.push(reuseport_listener(actual, transparent).map_err(|e| in_use(actual, e))?);
        }
    }
    Ok(by_worker)
}

fn reuseport_listener(addr: SocketAddr, transparent: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if transparent {
        let r = if addr.is_ipv6() {
            s.set_ip_transparent_v6(true)
        } else {
            s.set_ip_transparent_v4(true)
        };
        if let Err(e) = r {
            tracing::debug!(listen = %addr, error = %e, "no IP_TRANSPARENT (TPROXY needs CAP_NET_ADMIN); REDIRECT works");
        }
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Inherited by every accepted socket (Linux): no setsockopt for each.
    s.set_tcp_nodelay(true)?;
    if !transparent {
        defer_accept(&s);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// How long the kernel holds a new connection that has sent nothing.
const DEFER_ACCEPT_SECS: libc::c_int = 5;

/// New connections reach `accept(2)` with their first bytes
/// (`TCP_DEFER_ACCEPT`): a proxy's client (and a TLS client) speaks first,
/// so the first read of each connection finds its request instead of
/// `EAGAIN` and a turn through epoll (most new connections took one under
/// load: `benches/README.md`, "Figures the source relies on"). One that stays silent is accepted after [`DEFER_ACCEPT_SECS`],
/// and the header timeout applies. Not on transparent listeners: a
/// redirected protocol may wait for the server to speak.
// The crate's one unsafe block: socket2 and rustix do not wrap this option.
#[allow(unsafe_code)]
fn defer_accept(s: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: a socket descriptor that `s` owns, and an option value of the
    // type and size the kernel reads for TCP_DEFER_ACCEPT.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        // Only an optimisation: serve without it.
        tracing::debug!(error = %io::Error::last_os_error(), "no TCP_DEFER_ACCEPT");
    }
}

/// Runs one worker thread per listener set, each on its own single-threaded
/// runtime, until `shared.shutdown` is cancelled and then until the tasks it
/// holds are drained (or the process ends). Resolves once every worker has
/// stopped accepting.
pub fn serve_workers(
    shared: Arc<Shared>,
    by_worker: Vec<Vec<std::net::TcpListener>>,
    tls_by_worker: Vec<Vec<std::net::TcpListener>>,
    transparent_by_worker: Vec<Vec<std::net::TcpListener>>,
) -> io::Result<impl std::future::Future<Output = ()>> {
    let mut stopped = Vec::with_capacity(by_worker.len());
    let mut tls_by_worker = tls_by_worker.into_iter();
    let mut transparent_by_worker = transparent_by_worker.into_iter();
    for (i, listeners) in by_worker.into_iter().enumerate() {
        let tls_listeners = tls_by_worker.next().unwrap_or_default();
        let transparent_listeners = transparent_by_worker.next().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = shared.clone();
        let (done, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        stopped.push(stopped_rx);
        std::thread::Builder::new()
            .name(format!("egressd-w{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    let register = |ls: Vec<std::net::TcpListener>| {
                        ls.into_iter()
                            .filter_map(|l| match TcpListener::from_std(l) {
                                Ok(l) => Some(l),
                                Err(e) => {
                                    tracing::error!(worker = i, error = %e, "cannot register a listener");
                                    None
                                }
                            })
                            .collect::<Vec<_>>()
                    };
                    let all = vec![
                        (Way::Plain, register(listeners)),
                        (Way::Tls, register(tls_listeners)),
                        (Way::Transparent, register(transparent_listeners)),
                    ];
                    serve_all(shared.clone(), all).await;
                    let _ = done.send(());
                    // Connections and tunnels run on this thread: keep it
                    // turning until they are drained or cut.
                    shared.tasks.wait().await;
                })
            })?;
    }
    Ok(async move {
        for s in stopped {
            let _ = s.await;
        }
    })
}

/// Serves until `shared.shutdown` is cancelled, then stops accepting.
/// Connections and tunnels live on in `shared.tasks` for the caller to drain.
/// Upstream connections are pooled per call (per worker).
pub async fn serve(shared: Arc<Shared>, listeners: Vec<TcpListener>) {
    serve_all(shared, vec![(Way::Plain, listeners)]).await
}

/// How clients come in on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Clients that know they speak to a proxy.
    Plain,
    /// The same, over TLS to the proxy (`--listen-tls`).
    Tls,
    /// Redirected connections (`--transparent`).
    Transparent,
}

/// [`serve`], with listeners of every way in.
pub async fn serve_all(shared: Arc<Shared>, listeners: Vec<(Way, Vec<TcpListener>)>) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let pool = Arc::new(Pool::new(shared.config.mark));
    let mut loops = tokio::task::JoinSet::new();
    for (way, ls) in listeners {
        for l in ls {
            loops.spawn(accept_loop(shared.clone(), l, way, limit.clone(), pool.clone()));
        }
    }
    loops.spawn(housekeeping(shared.clone(), pool));
    while loops.join_next().await.is_some() {}
}

/// Once a second, until shutdown: closes the worker's pooled upstream
/// connections that idled too long or that their servers closed.
///
/// The tick also spares a syscall per request. Arming a tokio timer that
/// is due before every other pending one wakes the runtime's driver
/// through its eventfd, even from the driver's own thread; with the
/// header timeout shorter than the response timeout that was a write to
/// the eventfd on a share of keep-alive requests (`benches/README.md`,
/// "Figures the source relies on"). With this tick pending, no request
/// deadline over a second is ever the earliest.
async fn housekeeping(shared: Arc<Shared>, pool: Arc<Pool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shared.worker_shutdown();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => pool.sweep(),
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    way: Way,
    limit: Arc<Semaphore>,
    pool: Arc<Pool>,
) {
    // A transparent listener on loopback is reached only by this host's
    // (this pod's) own redirected connections, whatever their source
    // address: the client networks do not apply to it.
    let local_only = way == Way::Transparent && listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    // Responses go out without waiting for ACKs (no Nagle): set on the
    // listener already when Linux passes it on to accepted sockets.
    let inherits_nodelay =
        cfg!(target_os = "linux") && socket2::SockRef::from(&listener).tcp_nodelay().unwrap_or(false);
    let shutdown = shared.worker_shutdown();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match admit_connection(&shared, &limit, peer, local_only) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(client = %peer, error = e.class().as_str(), "{e}; connection refused");
                shared.tasks.spawn(refuse_connection(stream, e));
                continue;
            }
        };
        if !inherits_nodelay {
            let _ = stream.set_nodelay(true);
        }
        let shared2 = shared.clone();
        let pool = pool.clone();
        shared.tasks.spawn(async move {
            match way {
                Way::Plain => serve_connection(shared2, pool, ClientTcp(stream), peer).await,
                Way::Tls => serve_tls_connection(shared2, pool, stream, peer).await,
                Way::Transparent => super::transparent::serve(shared2, pool, stream, peer).await,
            }
            drop(permit);
        });
    }
}

/// Step 1 at accept: the client's source network, then the connection cap.
fn admit_connection(
    shared: &Shared,
    limit: &Arc<Semaphore>,
    peer: SocketAddr,
    local_only: bool,
) -> Result<tokio::sync::OwnedSemaphorePermit, ProxyError> {
    if !local_only && !shared.config.client_allowed(peer.ip()) {
        return Err(ProxyError::ClientNotAllowed);
    }
    limit
        .clone()
        .try_acquire_owned()
        .map_err(|_| ProxyError::Overloaded)
}

/// Answers a refused connection (the same answer a request would get) and
/// closes it, without reading a request.
async fn refuse_connection(mut stream: TcpStream, e: ProxyError) {
    let msg = e.refusal_bytes();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&msg)).await;
    let _ = stream.shutdown().await;
}

/// A connection on a TLS listener: the handshake (bounded like a
/// request's headers), then the same HTTP/1.1 service as a plain one.
async fn serve_tls_connection(shared: Arc<Shared>, pool: Arc<Pool>, stream: TcpStream, peer: SocketAddr) {
    let Some(config) = shared.listener_tls.load_full() else {
        return;
    };
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    // A handshake that fails (or never comes) is a refusal like any other:
    // one access event, in the metrics and the live view.
    let refused = match tokio::time::timeout(shared.config.header_timeout, accept).await {
        Ok(Ok(tls)) => return serve_connection(shared, pool, tls, peer).await,
        Ok(Err(e)) => ProxyError::from_client_tls(&e),
        Err(_) => ProxyError::ClientTls("no TLS handshake in time".into()),
    };
    unparsed(&shared, peer, EventKind::Http).finish(Err(&refused));
}

async fn serve_connection<IO>(shared: Arc<Shared>, pool: Arc<Pool>, stream: IO, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| route(svc_shared.clone(), pool.clone(), req, peer));
    serve_http1(&shared, stream, svc, peer, EventKind::Http, "").await
}

/// Sends each request to the handler of its kind.
async fn route(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, std::convert::Infallible> {
    let resp = if req.method() == Method::CONNECT {
        connect::handle(shared, pool, req, peer).await
    } else if req.uri().scheme().is_some() {
        forward::handle(shared, &pool, req, peer).await
    } else {
        let mut ev = shared.access(peer, EventKind::Http, req.method());
        ev.raw_target("", Some(req.uri().path()));
        refuse(ev, &req.uri().to_string(), ProxyError::NotAProxyRequest)
    };
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_come_with_no_delay_and_their_first_bytes() {
        let mut by_worker = bind_workers(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
        let listener = TcpListener::from_std(by_worker.remove(0).remove(0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Silent, the connection is held by the kernel (TCP_DEFER_ACCEPT).
        let early = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(early.is_err(), "accepted before the client spoke");
        client.write_all(b"GET").await.unwrap();
        let (accepted, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted once the client spoke")
            .unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY inherited from the listener"
        );
        let mut buf = [0u8; 3];
        accepted.readable().await.unwrap();
        assert_eq!(accepted.try_read(&mut buf).unwrap(), 3);
    }
}
