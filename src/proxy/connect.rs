//! `CONNECT host:port`: decide, dial the checked address, answer 200, then
//! relay bytes both ways until both sides are done.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::respond::{empty, Body, ProxyError};
use super::{authorize, dial, Shared};
use crate::policy::target::split_host_port;
use crate::policy::{Candidate, Kind};
use crate::telemetry::Access;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
    let policy = shared.policy.load_full();
    let mut access = shared.access(client, "connect", "CONNECT", &policy);
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
    let label = format!("CONNECT {}:{}", cand.host, cand.port);

    let targets = match authorize(&shared, &policy, &cand, &mut access).await {
        Ok(t) => t,
        Err(e) => return fail(access, &label, e),
    };
    let (upstream, _) = match dial(&targets, shared.config.connect_timeout, &mut access).await {
        Ok(s) => s,
        Err(e) => return fail(access, &label, e),
    };

    access.status = 200;
    let cut = shared.cut.clone();
    let tunnels = shared.metrics.tunnels_active.clone();
    shared.tasks.spawn(async move {
        tunnels.inc();
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut down = Counted::new(TokioIo::new(upgraded));
                let mut up = Counted::new(upstream);
                let result = tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut down, &mut up) => r.map(|_| ()),
                    _ = cut.cancelled() => Err(io::Error::other("cut at shutdown")),
                };
                access.bytes_up = down.count;
                access.bytes_down = up.count;
                if let Err(e) = result {
                    access.error = Some(match e.kind() {
                        io::ErrorKind::ConnectionReset => "connection_reset",
                        io::ErrorKind::BrokenPipe => "broken_pipe",
                        io::ErrorKind::Other => "shutdown",
                        _ => "tunnel_error",
                    });
                    access.detail = Some(e.to_string());
                }
            }
            Err(e) => {
                access.error = Some("client_upgrade_failed");
                access.detail = Some(e.to_string());
            }
        }
        tunnels.dec();
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

/// Counts the bytes read through a stream.
pub(super) struct Counted<T> {
    inner: T,
    pub count: u64,
}

impl<T> Counted<T> {
    pub fn new(inner: T) -> Self {
        Counted { inner, count: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.count += (buf.filled().len() - before) as u64;
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
