//! Transparent mode (`--transparent ADDR`): connections that nftables or
//! iptables redirected here (`REDIRECT`: the original destination comes
//! from `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`; `TPROXY`: it is the
//! socket's own local address). The app never asked for a proxy, so its
//! first bytes say what it wants:
//!
//! - a TLS ClientHello: its SNI is the host, decided like `CONNECT
//!   SNI:port` (inspected when the policy says so);
//! - plain HTTP: each request's `Host` and path, decided like an
//!   absolute-form request;
//! - anything else (SSH, databases, SMTP, TLS without SNI): the original
//!   destination, by a name egressd's DNS listener told this client lives
//!   there ([`crate::dns::answered`]), else by CIDR rules.
//!
//! Server-first protocols (SSH, SMTP, MySQL) send nothing until the server
//! speaks, so a connection whose original destination the policy allows
//! on its own (a CIDR rule, or an answered name whose rule needs no SNI,
//! `Host` or path) is dialled at once, without waiting for first bytes;
//! except on ports 80 and 443, where the first bytes name the host. Any
//! other connection waits for its first bytes only briefly
//! ([`FIRST_BYTES_WAIT`]) before it is decided by address.
//!
//! The original destination is never trusted for a name: egressd resolves
//! the name itself, checks the addresses and dials one of its own (the
//! original first, when it is among them); a different original
//! destination is logged (`dst_mismatch`), not dialled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{serve_http1, Client};
use super::hello::{self, FirstBytes};
use super::pipeline::Admitted;
use super::pool::Pool;
use super::relay::Rewind;
use super::respond::ProxyError;
use super::tunnel::{self, TunnelRequest};
use super::{forward, Shared};
use crate::access::{Access, EventKind};
use crate::policy::normalize::canonical_ip;
use crate::policy::{Candidate, Decision, Flags, Host, Kind, Policy, Verdict};

/// The most first bytes read to tell what a connection is.
const MAX_FIRST: usize = 16 * 1024;
/// How long a connection that nothing allows by its destination alone
/// waits for first bytes that could name its host.
pub const FIRST_BYTES_WAIT: Duration = Duration::from_secs(1);
/// A fatal `handshake_failure` alert: how a refused TLS client is told.
const TLS_REFUSAL: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28];

/// Where a redirected connection was going.
pub fn original_destination(s: &TcpStream) -> SocketAddr {
    let sock = socket2::SockRef::from(s);
    let local = s.local_addr().ok();
    let redirected = match local {
        Some(SocketAddr::V6(_)) => sock.original_dst_v6(),
        _ => sock.original_dst_v4(),
    };
    // No NAT entry: TPROXY, where the socket's own address is the original.
    redirected
        .ok()
        .and_then(|a| a.as_socket())
        .or(local)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// What the first client bytes are.
#[derive(Debug, PartialEq, Eq)]
pub enum First {
    Tls {
        sni: Option<String>,
    },
    Http,
    Other,
    /// More bytes are needed to tell.
    Incomplete,
}

/// Reads what the first bytes say (pure).
pub fn classify(buf: &[u8]) -> First {
    match hello::inspect(buf) {
        FirstBytes::ClientHello { sni } => return First::Tls { sni },
        FirstBytes::Incomplete if buf.len() < MAX_FIRST => return First::Incomplete,
        FirstBytes::Incomplete | FirstBytes::Malformed => return First::Other,
        FirstBytes::NotTls => {}
    }
    // An HTTP/1 request line: a method token, a space.
    let token = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match buf.get(token) {
        Some(b' ') if token > 0 => First::Http,
        None if token == buf.len() && buf.len() < 16 => First::Incomplete,
        _ => First::Other,
    }
}

/// Serves one redirected connection to its end.
pub async fn serve(shared: Arc<Shared>, pool: Arc<Pool>, mut client: TcpStream, peer: SocketAddr) {
    let original = original_destination(&client);
    // The connection's own event; plain HTTP has one per request instead.
    let event = || {
        let mut ev = shared.access(peer, EventKind::Transparent, &Method::CONNECT);
        ev.transparent(original);
        ev.raw_target(&original.ip().to_string(), None);
        ev
    };
    let names_host = [Kind::Http, Kind::Connect]
        .iter()
        .any(|k| k.default_port() == original.port());
    if !names_host {
        if let Some(cand) = allowed_as_is(&shared, peer, original) {
            return by_destination(&shared, pool, client, Vec::new(), cand, event()).await;
        }
    }
    let wait = if names_host {
        shared.config.header_timeout
    } else {
        FIRST_BYTES_WAIT.min(shared.config.header_timeout)
    };
    let first = match sniff(&mut client, wait).await {
        Ok(f) => f,
        Err(e) => return event().finish(Err(&e)),
    };
    match classify(&first) {
        First::Http => serve_http(shared, pool, Rewind::new(first, client), peer, original).await,
        First::Tls { sni: Some(sni) } => tunnel(&shared, pool, client, first, sni, original, event()).await,
        First::Tls { sni: None } | First::Other | First::Incomplete => {
            let cand = destination(&shared, &shared.policy.load(), peer, original).0;
            by_destination(&shared, pool, client, first, cand, event()).await
        }
    }
}

/// The candidate a connection with no name of its own stands for, and its
/// decision: the latest name egressd's DNS listener answered this client
/// with at this address that the policy allows on this port; else the
/// address itself (CIDR rules); else, when names were answered, the first
/// one's refusal, which says more than the address's.
fn destination(
    shared: &Shared,
    policy: &Policy,
    peer: SocketAddr,
    original: SocketAddr,
) -> (Candidate, Decision) {
    let can_inspect = shared.inspector.load().is_some();
    let decide = |host: Host| {
        let c = Candidate {
            kind: Kind::Connect,
            host,
            port: original.port(),
            path: None,
            method: Method::CONNECT,
        };
        let (d, _) = policy.decide_tunnel(&c, can_inspect);
        (c, d)
    };
    let names = shared
        .answered()
        .names(peer.ip(), original.ip(), std::time::Instant::now());
    let mut first_refused = None;
    for name in names {
        let (c, d) = decide(Host::Name(name.to_string()));
        if d.verdict.proceeds() {
            return (c, d);
        }
        first_refused.get_or_insert((c, d));
    }
    let by_address = decide(Host::Ip(canonical_ip(original.ip())));
    match first_refused {
        Some(named) if !by_address.1.verdict.proceeds() => named,
        _ => by_address,
    }
}

/// The candidate of a connection the policy allows by its original
/// destination alone, so it may be dialled before the client speaks: an
/// allow (not report mode's would-deny) that needs no SNI, `Host` or path.
fn allowed_as_is(shared: &Shared, peer: SocketAddr, original: SocketAddr) -> Option<Candidate> {
    let policy = shared.policy.load();
    let (cand, d) = destination(shared, &policy, peer, original);
    let needs_more = d.flags.contains(Flags::PATH_NOT_ENFORCED) || d.flags.contains(Flags::INSPECTED);
    (d.verdict == Verdict::Allow && !needs_more).then_some(cand)
}

/// The first bytes, enough to classify them, within the header timeout.
async fn sniff(client: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, ProxyError> {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = client
                .read(&mut chunk)
                .await
                .map_err(|e| ProxyError::io(super::respond::Side::Client, &e))?;
            if n == 0 {
                return Err(ProxyError::ClientGone);
            }
            buf.extend_from_slice(&chunk[..n]);
            if classify(&buf) != First::Incomplete || buf.len() >= MAX_FIRST {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(e)) => Err(e),
        // A server-first protocol (SSH waits for the server's banner): decided
        // by address with what was sent, which may be nothing.
        Err(_) => Ok(buf),
    }
}

/// A TLS connection by its SNI, like `CONNECT sni:port`, on the one
/// tunnel path (inspected when the policy says so).
async fn tunnel(
    shared: &Arc<Shared>,
    pool: Arc<Pool>,
    client: TcpStream,
    first: Vec<u8>,
    sni: String,
    original: SocketAddr,
    mut ev: Access,
) {
    if shared.own_addresses().contains(&original) {
        return ev.finish(Err(&ProxyError::Loop));
    }
    let authority = format!("{sni}:{}", original.port());
    ev.sni(Some(sni));
    let cand = match crate::target::candidate(Kind::Connect, &authority, None) {
        Ok(c) => c.with_method(Method::CONNECT),
        Err(e) => return ev.finish(Err(&ProxyError::BadRequest(e.to_string()))),
    };
    open_and_run(shared, pool, client, first, cand, true, ev).await
}

/// A connection decided by its original destination ([`destination`]).
async fn by_destination(
    shared: &Arc<Shared>,
    pool: Arc<Pool>,
    client: TcpStream,
    first: Vec<u8>,
    cand: Candidate,
    ev: Access,
) {
    let original = ev.original_dst();
    if original.is_some_and(|o| shared.own_addresses().contains(&o)) {
        return ev.finish(Err(&ProxyError::Loop));
    }
    let tls = classify(&first) == (First::Tls { sni: None });
    open_and_run(shared, pool, client, first, cand, tls, ev).await
}

/// Opens and runs the tunnel for `cand`. It carries no credentials: its
/// network position admitted it, under the proxy's policy. A TLS client
/// that is refused hears a TLS alert: it asked no proxy.
async fn open_and_run(
    shared: &Arc<Shared>,
    pool: Arc<Pool>,
    mut client: TcpStream,
    first: Vec<u8>,
    cand: Candidate,
    tls: bool,
    mut ev: Access,
) {
    ev.target(&cand);
    let req = TunnelRequest {
        client: ev.client(),
        admitted: Admitted::redirected(shared),
        inspectable: cand.host.as_name().is_some() && tls,
        cand,
    };
    let opened = match tunnel::open(shared, req, &mut ev).await {
        Ok(t) => t,
        Err(e) => {
            if tls {
                let _ = client.write_all(&TLS_REFUSAL).await;
            }
            return ev.finish(Err(&e));
        }
    };
    ev.status(200);
    let client = Client::Tcp {
        stream: client,
        pre: first,
    };
    let end = tunnel::run(shared, pool, opened, client, &mut ev).await;
    ev.finish(end.as_ref().map(|_| ()));
}

/// Plain HTTP on a redirected connection: each request's `Host` (on the
/// original port when it names none) and path, decided and forwarded as an
/// absolute-form request would be.
async fn serve_http(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    io: Rewind<TcpStream>,
    peer: SocketAddr,
    original: SocketAddr,
) {
    let svc_shared = shared.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let (shared, pool) = (svc_shared.clone(), pool.clone());
        async move {
            let req = absolute(req, original.port());
            Ok::<_, std::convert::Infallible>(
                forward::handle_transparent(shared, &pool, req, peer, original).await,
            )
        }
    });
    serve_http1(&shared, io, svc, peer, EventKind::Transparent, "").await
}

/// An origin-form request made absolute from its `Host` (which then names
/// the port too, as the pipeline's Host check wants). Without a `Host` it
/// stays origin-form and is refused as not a proxy request.
fn absolute(mut req: Request<Incoming>, port: u16) -> Request<Incoming> {
    if req.uri().scheme().is_some() {
        return req;
    }
    let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return req;
    };
    let has_port = matches!(crate::target::split_host_port(host), Ok((_, Some(_))));
    let authority = if has_port || port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // Several `Host` fields stay as they came: the pipeline's Host check
    // answers them 400 (RFC 9112 §3.2), as on the forward listener.
    let several = req.headers().get_all(header::HOST).iter().nth(1).is_some();
    if let Ok(uri) = format!("http://{authority}{pq}").parse::<Uri>() {
        *req.uri_mut() = uri;
        if let (false, Ok(h)) = (several, HeaderValue::from_str(&authority)) {
            req.headers_mut().insert(header::HOST, h);
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_say_what_a_connection_is() {
        let hello = hello::tests::hello(Some("www.example.com"));
        assert_eq!(
            classify(&hello),
            First::Tls {
                sni: Some("www.example.com".into())
            }
        );
        assert_eq!(classify(&hello[..20]), First::Incomplete);
        assert_eq!(classify(&hello::tests::hello(None)), First::Tls { sni: None });
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), First::Http);
        assert_eq!(classify(b"POS"), First::Incomplete);
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), First::Other);
        assert_eq!(classify(b"\x00\x01binary"), First::Other);
        assert_eq!(classify(b""), First::Incomplete);
    }
}
