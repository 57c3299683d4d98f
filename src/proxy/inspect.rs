//! Step 6 for an inspected tunnel: egressd ends the client's TLS with a
//! leaf certificate for the CONNECT host, signed by the local CA, and every
//! request inside walks the pipeline like a plain HTTP one: decided with
//! its path and method (`Kind::Https`), then forwarded over TLS, verified
//! against the system roots and `--upstream-ca`, to the addresses the
//! CONNECT already checked. Only tunnels the policy says need it are
//! inspected ([`crate::policy::Policy::decide_tunnel`]); the rest are
//! spliced untouched.
//!
//! One leaf key pair, made at start, serves every leaf; the server
//! configuration for each host is kept in a bounded LRU cache, so a repeat
//! host costs no signing.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::dial::{Pool, TlsOrigin, Transport};
use super::hello::{FirstCheck, Judgement};
use super::pipeline::{self, refuse};
use super::relay::read_first;
use super::respond::{Body, ProxyError};
use super::{forward, Shared};
use crate::access::{Access, EventKind};
use crate::ca::Authority;
use crate::policy::{Candidate, Kind, Policy, Resolved};
use crate::target;

/// Hosts whose server configuration (leaf certificate) is kept.
pub const LEAF_CACHE: usize = 10_000;
/// How long a leaf is valid; it is signed anew after `LEAF_REFRESH`.
const LEAF_DAYS: i64 = 7;
const LEAF_REFRESH: Duration = Duration::from_secs(6 * 86_400);

/// The CA, the leaf key, the cache of per-host server configurations, and
/// the client configuration for origins.
pub struct Inspector {
    ca: Authority,
    leaf_key: rcgen::KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    configs: Mutex<lru::LruCache<String, (Arc<rustls::ServerConfig>, Instant)>>,
    upstream: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// Loads the CA in `dir` and the extra upstream roots in `upstream_ca`
    /// (PEM files), beside the system roots (webpki-roots).
    pub fn load(dir: &std::path::Path, upstream_ca: &[PathBuf]) -> Result<Inspector, String> {
        let ca = crate::ca::load(dir).map_err(|e| e.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for f in upstream_ca {
            use rustls::pki_types::pem::PemObject;
            let pem = std::fs::read(f).map_err(|e| format!("--upstream-ca {}: {e}", f.display()))?;
            let mut n = 0;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("--upstream-ca {}: {e}", f.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--upstream-ca {}: {e}", f.display()))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!("--upstream-ca {}: no PEM certificates", f.display()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut upstream = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Requests go upstream as HTTP/1.1, whatever the client spoke.
        upstream.alpn_protocols = vec![b"http/1.1".to_vec()];
        let leaf_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let leaf_signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()))
            .map_err(|e| e.to_string())?;
        Ok(Inspector {
            ca,
            leaf_key,
            leaf_signer,
            provider,
            configs: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(LEAF_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            upstream: Arc::new(upstream),
        })
    }

    /// The CA certificate, as clients install it.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    pub fn ca(&self) -> &Authority {
        &self.ca
    }

    /// The server configuration presenting a leaf for `host` (cached; a
    /// miss signs one). Returns whether it was signed now.
    fn server_config(&self, host: &str) -> Result<(Arc<rustls::ServerConfig>, bool), ProxyError> {
        {
            let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((c, made)) = cache.get(host) {
                if made.elapsed() < LEAF_REFRESH {
                    return Ok((c.clone(), false));
                }
            }
        }
        let leaf = self
            .ca
            .sign_leaf(host, &self.leaf_key, LEAF_DAYS)
            .map_err(|e| ProxyError::ClientTls(format!("cannot sign a certificate for {host}: {e}")))?;
        let chain = vec![leaf, self.ca.cert_der.clone()];
        let key = Arc::new(rustls::sign::CertifiedKey::new(chain, self.leaf_signer.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProxyError::ClientTls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCert(key)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        cache.put(host.to_string(), (config.clone(), Instant::now()));
        Ok((config, true))
    }
}

/// Presents the one leaf of a host's configuration, whatever the client asks.
#[derive(Debug)]
struct OneCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// What the requests inside one inspected tunnel share.
pub struct Tunnel {
    pub client: SocketAddr,
    pub policy: Arc<Policy>,
    pub user: Option<Arc<str>>,
    /// The CONNECT target, normalised.
    pub cand: Candidate,
    /// `host:port` as requests inside must name it.
    pub authority: String,
    /// The addresses the CONNECT checked; every request goes to one of them.
    pub targets: Vec<Resolved>,
    pub check: FirstCheck,
}

/// Ends the client's TLS and serves the requests inside until the client
/// is done. `ev` is the tunnel's own event.
pub async fn serve(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    inspector: Arc<Inspector>,
    mut client: TcpStream,
    pre: Vec<u8>,
    tunnel: Tunnel,
    ev: &mut Access,
) -> Result<(), ProxyError> {
    // The same first-bytes judgement as a spliced tunnel (SNI, TLS only).
    let (first, judged) = read_first(&mut client, pre, &tunnel.check, &|| {}).await?;
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
    let io = Rewind {
        pre: first,
        at: 0,
        inner: client,
    };
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
        config: inspector.upstream.clone(),
    });
    let ctx = Arc::new(Inner {
        tunnel,
        transport: Transport::Tls(origin),
    });
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let (shared, pool, ctx) = (svc_shared.clone(), pool.clone(), ctx.clone());
        async move { Ok::<_, std::convert::Infallible>(request(shared, pool, ctx, req).await) }
    });
    let io = TokioIo::new(tls);
    let served = if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc)
            .await
    } else {
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(shared.config.header_timeout)
            .max_header_size(shared.config.max_header_bytes)
            .serve_connection(io, svc)
            .with_upgrades()
            .await
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "inspected connection ended with error");
    }
    Ok(())
}

fn ev_rule(t: &Tunnel) -> Option<String> {
    t.policy
        .decide(&t.cand)
        .rule
        .map(|r| t.policy.rule(r).id.to_string())
}

struct Inner {
    tunnel: Tunnel,
    transport: Transport,
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
    let label = format!("{} https://{}{}", req.method(), t.authority, req.uri().path());
    if let Err(e) = decide(&shared, t, &req, &mut ev) {
        return refuse(ev, &label, e);
    }
    match forward::exchange(
        &shared,
        &pool,
        req,
        &t.targets,
        &ctx.transport,
        &t.authority,
        &mut ev,
    )
    .await
    {
        Ok(sent) => forward::respond(&shared, &pool, sent, ev),
        Err(e) => refuse(ev, &label, e),
    }
}

/// The request must name the tunnel's host (`Host` or `:authority`); it is
/// then decided with its path and method.
fn decide(shared: &Shared, t: &Tunnel, req: &Request<Incoming>, ev: &mut Access) -> Result<(), ProxyError> {
    let named = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            let h = hosts
                .next()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            if hosts.next().is_some() {
                return Err(ProxyError::BadRequest("several Host headers".into()));
            }
            h
        }
    };
    let same = target::candidate(Kind::Https, &named, Some("/"))
        .is_ok_and(|c| c.host == t.cand.host && c.port == t.cand.port);
    if !same {
        return Err(ProxyError::Misdirected(named));
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

/// A stream that first yields bytes already read from it.
struct Rewind<S> {
    pre: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.pre.len() {
            let n = (self.pre.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.pre[at..at + n]);
            self.at += n;
            if self.at == self.pre.len() {
                self.pre = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
