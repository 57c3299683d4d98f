//! `CONNECT host:port`: decide, dial the checked address, answer 200, then
//! relay bytes both ways until both sides are done.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::relay::{relay, relay_halves, FirstCheck};
use super::respond::{empty, Body, ProxyError};
use super::{authorize, dial, Shared};
use crate::policy::target::split_host_port;
use crate::policy::{Candidate, Kind};
use crate::telemetry::Access;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
    let (policy, user) = match shared.admit(req.headers(), client.ip()) {
        Ok(x) => x,
        Err(e) => {
            let policy = shared.policy.load_full();
            let mut access = shared.access(client, "connect", "CONNECT", &policy);
            access.reason = e.as_str();
            let target = req.uri().to_string();
            return fail(access, &target, ProxyError::Auth(e));
        }
    };
    let mut access = shared.access(client, "connect", "CONNECT", &policy);
    access.user = user;
    let raw = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    access.host = raw.clone();
    let cand = match parse(&raw) {
        Ok(c) => c,
        Err(e) => return fail(access, &raw, e),
    };
    access.host = cand.host.to_string();
    access.port = cand.port;
    let label = || format!("CONNECT {}:{}", cand.host, cand.port);

    let slot = match shared.tunnel_slot(client.ip()) {
        Some(s) => s,
        None => return fail(access, &label(), ProxyError::TooManyTunnels),
    };
    let allowed = match authorize(&shared, &policy, &cand, &mut access).await {
        Ok(a) => a,
        Err(e) => return fail(access, &label(), e),
    };
    let (upstream, dialled) = match dial(&allowed.targets, shared.config.connect_timeout, &mut access).await {
        Ok(s) => s,
        Err(e) => return fail(access, &label(), e),
    };

    access.status = 200;
    let check = FirstCheck {
        target: cand.host.as_name().map(str::to_string),
        sni: policy.tunnel_sni(),
        tls_only: allowed.rule.is_some_and(|r| policy.rule(r).tls_only),
    };
    let idle = shared.config.tunnel_idle;
    let splice = shared.config.splice.applies(client.ip(), dialled.addr.ip());
    let cut = shared.cut.clone();
    let tunnels = shared.metrics.tunnels_active.clone();
    shared.tasks.spawn(async move {
        tunnels.inc();
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                // Back to the plain socket: no boxed I/O, no lock between the
                // halves, and the HTTP read buffer is freed unless it holds
                // bytes the client already sent into the tunnel.
                let out = match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        let pre = parts.read_buf.to_vec();
                        drop(parts.read_buf);
                        let mut client = parts.io.into_inner();
                        let mut upstream = upstream;
                        let (cr, cw) = client.split();
                        let (ur, uw) = upstream.split();
                        relay_halves(cr, cw, ur, uw, pre, splice, check, idle, cut).await
                    }
                    Err(upgraded) => relay(TokioIo::new(upgraded), upstream, check, idle, cut).await,
                };
                access.bytes_up = out.up;
                access.bytes_down = out.down;
                access.sni = out.sni;
                access.error = out.error;
                access.detail = out.detail;
            }
            Err(e) => {
                access.error = Some("client_upgrade_failed");
                access.detail = Some(e.to_string());
            }
        }
        tunnels.dec();
        drop(slot);
        access.emit();
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

fn parse(authority: &str) -> Result<Candidate, ProxyError> {
    let (host, port) = split_host_port(authority)
        .map_err(|_| ProxyError::BadRequest(format!("invalid CONNECT target {authority:?}")))?;
    let port = port.ok_or_else(|| ProxyError::BadRequest("CONNECT target needs host:port".into()))?;
    Candidate::new(Kind::Connect, host, port, None)
        .map_err(|e| ProxyError::BadRequest(format!("invalid host {host:?}: {e}")))
}

/// Answers with the error and emits the access event.
pub(super) fn fail(mut access: Access, target: &str, e: ProxyError) -> Response<Body> {
    let resp = e.response(target);
    access.status = resp.status().as_u16();
    access.error = Some(e.class());
    if !matches!(e, ProxyError::Denied { .. }) {
        access.detail = Some(e.to_string());
    }
    access.emit();
    resp
}
