//! Step 6 for `CONNECT host:port`: after the pipeline's steps 1 to 5 the
//! client gets `200`, then bytes are relayed both ways until both sides are
//! done, the first client bytes judged before anything reaches upstream.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::dial::{dial, Pool};
use super::hello::FirstCheck;
use super::inspect;
use super::parent::ParentStream;
use super::pipeline::Route;
use super::pipeline::{self, refuse};
use super::relay::{relay, relay_halves, Rewind};
use super::respond::{empty, Body, ProxyError};
use super::server::ClientTcp;
use super::{Shared, TunnelSlot};
use crate::access::{Access, EventKind};

pub async fn handle(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let mut ev = shared.access(client, EventKind::Connect, &Method::CONNECT);
    let raw = req.uri().to_string();
    ev.raw_target(req.uri().authority().map_or(&raw, |a| a.as_str()), None);
    match open(&shared, &req, client, &mut ev).await {
        Ok(tunnel) => {
            ev.status(200);
            spawn_relay(&shared, pool, req, tunnel, ev);
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::OK;
            resp
        }
        Err(e) => refuse(ev, &format!("CONNECT {raw}"), e),
    }
}

/// A tunnel ready to relay (the upstream stream and what to check), or to
/// inspect (what its requests share).
struct Tunnel {
    way: Way,
    check: FirstCheck,
    slot: TunnelSlot,
}

enum Way {
    /// To the destination, or to a plain-TCP parent's tunnel; `early` holds
    /// bytes the parent sent past its `200`, for the client.
    Splice {
        upstream: TcpStream,
        splice: bool,
        early: bytes::Bytes,
    },
    /// Through a parent reached over TLS.
    Parent {
        upstream: ParentStream,
        early: bytes::Bytes,
    },
    Inspect(Box<inspect::Tunnel>, Arc<super::certs::Inspector>),
}

/// Steps 1 to 5: admit, parse, decide, check addresses, dial (an inspected
/// tunnel dials per request, from inside).
async fn open(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
    client: SocketAddr,
    ev: &mut Access,
) -> Result<Tunnel, ProxyError> {
    let admitted = pipeline::admit(shared, req.headers(), client.ip())?;
    ev.admitted(admitted.user.clone(), &admitted.policy);
    let policy = &admitted.policy;
    let cand = pipeline::connect_target(req.uri())?;
    ev.target(&cand);
    let slot = shared
        .tunnel_slot(client.ip())
        .ok_or(ProxyError::TooManyTunnels)?;
    let (checked, inspect) = pipeline::authorize_tunnel(shared, policy, &cand, ev).await?;
    let check = FirstCheck {
        target: cand.host.as_name().map(str::to_string),
        sni: policy.tunnel_sni(),
        tls_only: checked.decision.rule.is_some_and(|r| policy.rule(r).tls_only),
    };
    if let (true, Some(inspector)) = (inspect, shared.inspector.load_full()) {
        let authority = format!("{}:{}", cand.host, cand.port);
        let t = inspect::Tunnel {
            client,
            policy: admitted.policy.clone(),
            user: admitted.user.clone(),
            cand,
            authority,
            route: checked.route,
            check: check.clone(),
        };
        return Ok(Tunnel {
            way: Way::Inspect(Box::new(t), inspector),
            check,
            slot,
        });
    }
    let targets = match checked.route {
        Route::Direct(targets) => targets,
        Route::Parent(parent) => {
            let authority = format!("{}:{}", cand.host, cand.port);
            let timeouts = (shared.config.connect_timeout, shared.config.response_timeout);
            let (upstream, early, reached) = parent.tunnel(&authority, timeouts.0, timeouts.1).await?;
            ev.dialled(reached);
            let way = match upstream {
                ParentStream::Plain(upstream) => Way::Splice {
                    splice: shared.config.splice.applies(client.ip(), reached.addr.ip()),
                    upstream,
                    early,
                },
                upstream => Way::Parent { upstream, early },
            };
            return Ok(Tunnel { way, check, slot });
        }
    };
    let (upstream, dialled) = dial(&targets, shared.config.connect_timeout, shared.config.mark)
        .await
        .map_err(|f| f.noted(ev))?;
    ev.dialled(dialled);
    Ok(Tunnel {
        way: Way::Splice {
            upstream,
            splice: shared.config.splice.applies(client.ip(), dialled.addr.ip()),
            early: bytes::Bytes::new(),
        },
        check,
        slot,
    })
}

/// Relays (or inspects) the tunnel once the client's connection is
/// upgraded, and finishes the event when it ends.
fn spawn_relay(shared: &Arc<Shared>, pool: Arc<Pool>, req: Request<Incoming>, t: Tunnel, mut ev: Access) {
    let idle = shared.config.tunnel_idle;
    let cut = shared.cut.clone();
    let tunnels = shared.metrics.tunnels_active.clone();
    let shared = shared.clone();
    shared.clone().tasks.spawn(async move {
        tunnels.inc();
        let end = match hyper::upgrade::on(req).await {
            Ok(upgraded) => match (upgraded.downcast::<TokioIo<ClientTcp>>(), t.way) {
                // Back to the plain socket: no boxed I/O, no lock between the
                // halves, and the HTTP read buffer is freed unless it holds
                // bytes the client already sent into the tunnel.
                (Ok(parts), Way::Splice { mut upstream, splice, early }) => {
                    let pre = parts.read_buf.to_vec();
                    drop(parts.read_buf);
                    let mut client = parts.io.into_inner().0;
                    if let Err(e) = send_early(&mut client, &early).await {
                        tunnels.dec();
                        ev.finish(Err(&e));
                        return;
                    }
                    let (cr, cw) = client.split();
                    let (ur, uw) = upstream.split();
                    let out = relay_halves(cr, cw, ur, uw, pre, splice, t.check, idle, cut).await;
                    ev.bytes(out.up, out.down);
                    ev.sni(out.sni);
                    out.end
                }
                (Ok(parts), Way::Inspect(tunnel, inspector)) => {
                    let pre = parts.read_buf.to_vec();
                    let client = parts.io.into_inner().0;
                    tokio::select! {
                        r = inspect::serve(shared.clone(), pool, inspector, client, pre, *tunnel, &mut ev) => r,
                        _ = cut.cancelled() => Err(ProxyError::Shutdown),
                    }
                }
                (Err(upgraded), Way::Splice { upstream, early, .. }) => {
                    relay_after(TokioIo::new(upgraded), upstream, &early, t.check, idle, cut, &mut ev).await
                }
                (upgraded, Way::Parent { upstream, early }) => {
                    let client: Box<dyn ClientIo> = match upgraded {
                        // Bytes hyper had already read (sent into the tunnel
                        // before the `200` arrived) come first.
                        Ok(parts) => Box::new(Rewind::new(parts.read_buf.to_vec(), parts.io.into_inner().0)),
                        Err(upgraded) => Box::new(TokioIo::new(upgraded)),
                    };
                    relay_after(client, upstream, &early, t.check, idle, cut, &mut ev).await
                }
                // A client on a TLS listener: its upgraded connection as it is.
                (Err(upgraded), Way::Inspect(tunnel, inspector)) => {
                    let client = TokioIo::new(upgraded);
                    tokio::select! {
                        r = inspect::serve(shared.clone(), pool, inspector, client, Vec::new(), *tunnel, &mut ev) => r,
                        _ = cut.cancelled() => Err(ProxyError::Shutdown),
                    }
                }
            },
            Err(e) => Err(ProxyError::ClientUpgrade(e.to_string())),
        };
        tunnels.dec();
        drop(t.slot);
        ev.finish(end.as_ref().map(|_| ()));
    });
}

/// Relays between any two streams (no splice), after passing on the bytes
/// a parent sent past its `200`.
async fn relay_after<C, U>(
    mut client: C,
    upstream: U,
    early: &[u8],
    check: FirstCheck,
    idle: std::time::Duration,
    cut: tokio_util::sync::CancellationToken,
    ev: &mut Access,
) -> Result<(), ProxyError>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    send_early(&mut client, early).await?;
    let out = relay(client, upstream, check, idle, cut).await;
    ev.bytes(out.up, out.down + early.len() as u64);
    ev.sni(out.sni);
    out.end
}

/// Bytes a parent sent past its `200`, passed on to the client first.
async fn send_early<W: tokio::io::AsyncWrite + Unpin>(
    client: &mut W,
    early: &[u8],
) -> Result<(), ProxyError> {
    use tokio::io::AsyncWriteExt;
    if early.is_empty() {
        return Ok(());
    }
    client
        .write_all(early)
        .await
        .map_err(|e| ProxyError::io(super::respond::Side::Client, &e))
}

trait ClientIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientIo for T {}
