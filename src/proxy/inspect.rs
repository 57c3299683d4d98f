//! Step 6 for an inspected tunnel: egressd ends the client's TLS with a
//! leaf certificate for the CONNECT host, signed by the local CA, and every
//! request inside walks the pipeline like a plain HTTP one: decided with
//! its path and method (`Kind::Https`), then forwarded over TLS, verified
//! against the system roots and `--upstream-ca`, to the addresses the
//! CONNECT already checked. Only tunnels the policy says need it are
//! inspected ([`crate::policy::Policy::decide_tunnel`]); the rest are
//! spliced untouched.
//!
//! The certificates are [`super::certs`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;

use super::certs::Inspector;
use super::hello::{FirstCheck, Judgement};
use super::pipeline::Route;
use super::pipeline::{self, refuse};
use super::pool::{Pool, TlsOrigin, Transport};
use super::relay::{read_first, Rewind};
use super::respond::{Body, ProxyError};
use super::{forward, Shared};
use crate::access::{Access, EventKind};
use crate::policy::{Candidate, Kind, Policy};
use crate::target;

/// What the requests inside one inspected tunnel share.
pub struct Session {
    pub client: SocketAddr,
    pub policy: Arc<Policy>,
    pub user: Option<Arc<str>>,
    /// The CONNECT target, normalised.
    pub cand: Candidate,
    /// `host:port` as requests inside must name it.
    pub authority: String,
    /// Where the CONNECT may go: one of the addresses it checked, or
    /// through the parent; every request inside goes there.
    pub route: Route,
    pub check: FirstCheck,
}

/// Ends the client's TLS and serves the requests inside until the client
/// is done. `ev` is the tunnel's own event.
pub async fn serve<C>(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    inspector: Arc<Inspector>,
    mut client: C,
    pre: Vec<u8>,
    tunnel: Session,
    ev: &mut Access,
) -> Result<(), ProxyError>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The same first-bytes judgement as a spliced tunnel (SNI, TLS only).
    // Bounded like a request's headers: a client that opens a tunnel and
    // never speaks holds no task for ever (a spliced tunnel's idle timer
    // does the same for it).
    let first = read_first(&mut client, pre, &tunnel.check, &|| {});
    let (first, judged) = tokio::time::timeout(shared.config.header_timeout, first)
        .await
        .map_err(|_| ProxyError::ClientTls("no TLS ClientHello in time".into()))??;
    match judged {
        Judgement::Refuse { sni, error } => {
            ev.sni(sni);
            return Err(error);
        }
        Judgement::Pass { sni, .. } => ev.sni(sni),
        Judgement::NeedMore => return Ok(()),
    }
    let host = tunnel.cand.host.to_string();
    let leaf_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let (config, signed) = inspector.server_config(&leaf_host)?;
    shared.metrics.count_leaf(signed);
    let io = Rewind::new(first, client);
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
    let tls = match tokio::time::timeout(shared.config.header_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let e = ProxyError::from_client_tls(&e);
            if matches!(e, ProxyError::ClientRejectedCertificate(_)) {
                shared.metrics.inspection_rejected.inc();
                tracing::warn!(
                    host = %host,
                    rule = ?ev_rule(&tunnel),
                    "the client refused egressd's certificate: it does not trust the CA, or pins its own (exempt the host with inspect = false)"
                );
            }
            return Err(e);
        }
        Err(_) => return Err(ProxyError::ClientTls("no TLS handshake in time".into())),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let origin = Arc::new(TlsOrigin {
        name: ServerName::try_from(leaf_host).map_err(|e| ProxyError::BadRequest(e.to_string()))?,
        config: inspector.upstream(),
        config_h2: Some(inspector.upstream_h2()),
    });
    let (peer, authority) = (tunnel.client, tunnel.authority.clone());
    let ctx = Arc::new(Inner {
        tunnel,
        transport: Transport::Tls(origin),
    });
    let svc_shared = shared.clone();
    // What is in flight matters to HTTP/2's idle limit only (HTTP/1.1 has
    // the header timeout): HTTP/1.1 requests skip the clock and the lock.
    let idle = Arc::new(InFlight::default());
    let seen = h2.then(|| idle.clone());
    let svc = service_fn(move |req| {
        let (shared, pool, ctx, seen) = (svc_shared.clone(), pool.clone(), ctx.clone(), seen.clone());
        async move {
            if let Some(s) = &seen {
                s.begin();
            }
            let resp = request(shared, pool, ctx, req).await;
            if let Some(s) = &seen {
                s.end();
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let served = if h2 {
        let io = TokioIo::new(tls);
        // HTTP/2 has no header timeout between requests: a connection with
        // nothing in flight for the tunnel idle time is asked to go away
        // (GOAWAY; streams still running finish).
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        let limit = shared.config.tunnel_idle;
        let tick = (limit / 4).max(std::time::Duration::from_millis(50));
        let mut asked = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = tokio::time::sleep(tick), if !asked => {
                    if idle.idle_for() >= limit {
                        conn.as_mut().graceful_shutdown();
                        asked = true;
                    }
                }
            }
        }
    } else {
        // The same HTTP/1.1 server as the listeners', so a request that
        // does not parse leaves its event here too.
        super::client::serve_http1(&shared, tls, svc, peer, EventKind::Inspected, &authority).await;
        return Ok(());
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "inspected connection ended with error");
    }
    Ok(())
}

fn ev_rule(t: &Session) -> Option<String> {
    t.policy
        .decide(&t.cand)
        .rule
        .map(|r| t.policy.rule(r).id.to_string())
}

struct Inner {
    tunnel: Session,
    transport: Transport,
}

/// Requests in flight on an inspected connection, and when the last one
/// began or ended.
struct InFlight {
    active: std::sync::atomic::AtomicUsize,
    since: std::sync::Mutex<std::time::Instant>,
}

impl Default for InFlight {
    fn default() -> InFlight {
        InFlight {
            active: std::sync::atomic::AtomicUsize::new(0),
            since: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }
}

impl InFlight {
    fn touch(&self) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }
    fn begin(&self) {
        self.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.touch();
    }
    fn end(&self) {
        self.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.touch();
    }
    /// How long nothing has been in flight (zero while something is).
    fn idle_for(&self) -> std::time::Duration {
        if self.active.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return std::time::Duration::ZERO;
        }
        self.since.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// One request inside the tunnel: the pipeline's steps 2, 3 and 6; the
/// client was admitted and the addresses checked by the CONNECT.
async fn request(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    ctx: Arc<Inner>,
    req: Request<Incoming>,
) -> Response<Body> {
    let t = &ctx.tunnel;
    let mut ev = shared.access(t.client, EventKind::Inspected, req.method());
    ev.admitted(t.user.clone(), &t.policy);
    ev.raw_target(&t.authority, Some(req.uri().path()));
    // Named in error answers only: formatted when one is needed.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let label = || format!("{method} https://{}{}", t.authority, uri.path());
    if let Err(e) = decide(&shared, t, &req, &mut ev) {
        return refuse(ev, &label(), e);
    }
    ev.via(t.route.via());
    // The origin is named as a browser names it: without the default port.
    let host = match t.authority.rsplit_once(':') {
        Some((h, "443")) => h,
        _ => &t.authority,
    };
    match forward::exchange(
        &shared,
        &pool,
        req,
        t.route.hop(&t.authority),
        &ctx.transport,
        host,
        &mut ev,
    )
    .await
    {
        Ok(sent) => forward::respond(&shared, &pool, sent, ev),
        Err(e) => refuse(ev, &label(), e),
    }
}

/// The request must name the tunnel's host (`Host` or `:authority`); it is
/// then decided with its path and method.
fn decide(shared: &Shared, t: &Session, req: &Request<Incoming>, ev: &mut Access) -> Result<(), ProxyError> {
    let named = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            let h = hosts.next().and_then(|h| h.to_str().ok()).unwrap_or("");
            if hosts.next().is_some() {
                return Err(ProxyError::BadRequest("several Host headers".into()));
            }
            h
        }
    };
    // Named as the CONNECT named it (what clients send): the same host
    // without normalising it again.
    let verbatim = named == t.authority || t.authority.strip_suffix(":443") == Some(named);
    let same = verbatim
        || target::candidate(Kind::Https, named, Some("/"))
            .is_ok_and(|c| c.host == t.cand.host && c.port == t.cand.port);
    if !same {
        return Err(ProxyError::Misdirected(named.to_string()));
    }
    let cand = target::candidate(Kind::Https, &t.authority, Some(req.uri().path()))
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?
        .with_method(req.method().clone());
    ev.target(&cand);
    let d = pipeline::decide(shared, &t.policy, &cand);
    ev.decided(&t.policy, &d);
    if !d.verdict.proceeds() {
        return Err(ProxyError::Denied {
            reason: d.reason,
            by_address: false,
        });
    }
    Ok(())
}
