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
use super::pipeline::{self, refuse};
use super::relay::{relay, relay_halves};
use super::respond::{empty, Body, ProxyError};
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
    Splice { upstream: TcpStream, splice: bool },
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
            targets: checked.targets,
            check: check.clone(),
        };
        return Ok(Tunnel {
            way: Way::Inspect(Box::new(t), inspector),
            check,
            slot,
        });
    }
    let (upstream, dialled) = dial(&checked.targets, shared.config.connect_timeout)
        .await
        .map_err(|f| {
            if let Some(t) = f.last {
                ev.dialled(t);
            }
            f.error
        })?;
    ev.dialled(dialled);
    Ok(Tunnel {
        way: Way::Splice {
            upstream,
            splice: shared.config.splice.applies(client.ip(), dialled.addr.ip()),
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
            Ok(upgraded) => match (upgraded.downcast::<TokioIo<TcpStream>>(), t.way) {
                // Back to the plain socket: no boxed I/O, no lock between the
                // halves, and the HTTP read buffer is freed unless it holds
                // bytes the client already sent into the tunnel.
                (Ok(parts), Way::Splice { mut upstream, splice }) => {
                    let pre = parts.read_buf.to_vec();
                    drop(parts.read_buf);
                    let mut client = parts.io.into_inner();
                    let (cr, cw) = client.split();
                    let (ur, uw) = upstream.split();
                    let out = relay_halves(cr, cw, ur, uw, pre, splice, t.check, idle, cut).await;
                    ev.bytes(out.up, out.down);
                    ev.sni(out.sni);
                    out.end
                }
                (Ok(parts), Way::Inspect(tunnel, inspector)) => {
                    let pre = parts.read_buf.to_vec();
                    let client = parts.io.into_inner();
                    tokio::select! {
                        r = inspect::serve(shared.clone(), pool, inspector, client, pre, *tunnel, &mut ev) => r,
                        _ = cut.cancelled() => Err(ProxyError::Shutdown),
                    }
                }
                (Err(upgraded), Way::Splice { upstream, .. }) => {
                    let out = relay(TokioIo::new(upgraded), upstream, t.check, idle, cut).await;
                    ev.bytes(out.up, out.down);
                    ev.sni(out.sni);
                    out.end
                }
                (Err(_), Way::Inspect(..)) => Err(ProxyError::ClientUpgrade("not a TCP connection".into())),
            },
            Err(e) => Err(ProxyError::ClientUpgrade(e.to_string())),
        };
        tunnels.dec();
        drop(t.slot);
        ev.finish(end.as_ref().map(|_| ()));
    });
}
