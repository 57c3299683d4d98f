//! `CONNECT host:port`: the way in for clients that know they speak to a
//! proxy. The request is admitted and its target read here; the tunnel
//! itself is the one tunnel path's ([`super::tunnel`]): on `open` the
//! client gets `200`, and once hyper hands the connection back it runs.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::client::Client;
use super::pipeline::{self, refuse};
use super::pool::Pool;
use super::respond::{empty, Body, ProxyError};
use super::tunnel::{self, TunnelRequest};
use super::Shared;
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
    let opened = match ask(&shared, &req, client, &mut ev) {
        Ok(t) => tunnel::open(&shared, t, &mut ev).await,
        Err(e) => Err(e),
    };
    let opened = match opened {
        Ok(t) => t,
        Err(e) => return refuse(ev, &format!("CONNECT {raw}"), e),
    };
    ev.status(200);
    let task_shared = shared.clone();
    shared.tasks.spawn(async move {
        let end = match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                tunnel::run(&task_shared, pool, opened, Client::upgraded(upgraded), &mut ev).await
            }
            Err(e) => Err(ProxyError::ClientUpgrade(e.to_string())),
        };
        ev.finish(end.as_ref().map(|_| ()));
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// Steps 1 and 2: admits the client and reads the authority-form target.
fn ask(
    shared: &Shared,
    req: &Request<Incoming>,
    client: SocketAddr,
    ev: &mut Access,
) -> Result<TunnelRequest, ProxyError> {
    let admitted = pipeline::admit(shared, req.headers(), client.ip())?;
    ev.admitted(admitted.user.clone(), &admitted.policy);
    let cand = pipeline::connect_target(req.uri())?;
    ev.target(&cand);
    Ok(TunnelRequest {
        client,
        admitted,
        cand,
        inspectable: true,
    })
}
