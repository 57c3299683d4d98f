//! The DNS listener (`--dns-listen`), a way in like the others: each
//! question is admitted, decided by the policy ([`Policy::decide_name`]),
//! resolved by egressd's own resolver, its addresses checked
//! ([`Policy::answerable`]) and answered, and leaves one access event of
//! kind `dns`. What it answers is remembered per client
//! ([`crate::dns::answered`]), so that a redirected connection that carries
//! no name of its own is judged by the name the app was told.
//!
//! - a name the policy allows: A/AAAA from the resolver (CNAMEs followed
//!   there, the chain flattened), special-purpose addresses dropped unless
//!   a CIDR rule allows them; CNAME, HTTPS and SVCB answered empty; any
//!   other type REFUSED, so that no record but an address leaves an
//!   allowed zone;
//! - any other name: NXDOMAIN, and nothing is asked upstream (the name
//!   itself would carry data out); a search-list expansion of a longer
//!   name (`ndots:5`) quietly, without a refusal logged;
//! - `--dns-forward-zone` zones: relayed to the DNS servers as they came;
//! - report mode: everything answered (other types relayed), would-deny
//!   logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::ResponseCode;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::resolve::Resolution;
use super::respond::ProxyError;
use super::Shared;
use crate::access::{Access, DnsAnswer, EventKind};
use crate::dns::message::{Ask, Question, NEGATIVE_TTL};
use crate::dns::LookupError;
use crate::policy::Policy;

/// Questions waiting for the DNS servers at once over UDP; more are
/// dropped (the client asks again).
const MAX_IN_FLIGHT: usize = 4096;
/// TCP connections served at once.
const MAX_TCP: usize = 256;
/// A TCP connection with no question for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long a forwarded question waits for each server.
const FORWARD_WAIT: Duration = Duration::from_secs(2);
/// The TTL of a pinned name's answer.
const PIN_TTL: Duration = Duration::from_secs(60);

/// The listener's sockets, bound before anything starts.
pub struct Sockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

/// Binds UDP and TCP on every address.
pub fn bind(addrs: &[SocketAddr]) -> std::io::Result<Sockets> {
    let mut s = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for &a in addrs {
        let in_use = |e: std::io::Error| std::io::Error::new(e.kind(), format!("--dns-listen {a}: {e}"));
        let udp = std::net::UdpSocket::bind(a).map_err(in_use)?;
        // The same port for TCP (an ephemeral UDP port, when 0 was asked).
        let tcp = std::net::TcpListener::bind(udp.local_addr()?).map_err(in_use)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        s.udp.push(udp);
        s.tcp.push(tcp);
    }
    Ok(s)
}

impl Sockets {
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|u| u.local_addr().ok()).collect()
    }
}

/// Serves every socket on the current runtime until shutdown.
pub fn serve(shared: Arc<Shared>, sockets: Sockets) -> std::io::Result<()> {
    let cfg = &shared.config.dns_listen;
    for zone in &cfg.forward_zones {
        tracing::warn!(zone = %zone.name, servers = ?cfg.forward_to, "DNS: this zone is answered from the DNS servers without the policy (--dns-forward-zone)");
    }
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    for udp in sockets.udp {
        let udp = Arc::new(UdpSocket::from_std(udp)?);
        tokio::spawn(serve_udp(shared.clone(), udp, in_flight.clone()));
    }
    let conns = Arc::new(Semaphore::new(MAX_TCP));
    for tcp in sockets.tcp {
        tokio::spawn(serve_tcp(
            shared.clone(),
            TcpListener::from_std(tcp)?,
            conns.clone(),
        ));
    }
    Ok(())
}

async fn serve_udp(shared: Arc<Shared>, sock: Arc<UdpSocket>, in_flight: Arc<Semaphore>) {
    let local_only = sock.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // An ICMP error for an earlier reply, and the like.
                Err(_) => continue,
            },
        };
        if !local_only && !shared.config.client_allowed(peer.ip()) {
            continue;
        }
        let then = match begin(&shared, peer, &buf[..n], true) {
            Ok(Some(reply)) => {
                let _ = sock.send_to(&reply, peer).await;
                continue;
            }
            Ok(None) => continue,
            Err(then) => then,
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let (shared, sock, query) = (shared.clone(), sock.clone(), buf[..n].to_vec());
        tokio::spawn(async move {
            if let Some(reply) = then.run(&shared, &query, true).await {
                let _ = sock.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener, conns: Arc<Semaphore>) {
    let local_only = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !local_only && !shared.config.client_allowed(peer.ip()) {
            continue;
        }
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_conn(&shared, stream, peer).await;
            drop(permit);
        });
    }
}

/// Questions on one TCP connection, each with its two-byte length, in turn.
async fn serve_tcp_conn(shared: &Shared, mut s: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, s.read_u16()).await {
            Ok(Ok(n)) => usize::from(n),
            _ => return Ok(()),
        };
        let mut query = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let Some(reply) = answer(shared, peer, &query, false).await else {
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        s.write_all(&n.to_be_bytes()).await?;
        s.write_all(&reply).await?;
    }
}

/// One question's answer (none for a message not worth one), and its event.
pub async fn answer(shared: &Shared, client: SocketAddr, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    match begin(shared, client, query, udp) {
        Ok(reply) => reply,
        Err(then) => then.run(shared, query, udp).await,
    }
}

/// What a question still needs once everything that could be answered at
/// once was: the resolver's answer, or the DNS servers' (relayed).
pub enum Then {
    Lookup {
        q: Question,
        ev: Access,
        policy: Arc<Policy>,
        v6: bool,
    },
    Relay {
        q: Question,
        ev: Access,
    },
}

impl Then {
    pub async fn run(self: Box<Self>, shared: &Shared, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        match *self {
            Then::Lookup { q, ev, policy, v6 } => {
                let found = shared.config.resolver.lookup(&q.name, 0, policy.pins()).await;
                Some(addresses(shared, &policy, &q, v6, udp, ev, found))
            }
            Then::Relay { q, ev } => relay(shared, &q, query, udp, ev).await,
        }
    }
}

/// Everything a question's answer needs that does not wait: parsing, the
/// policy, and a cached (or pinned) name's addresses. Most questions are
/// answered here, on the listener's own task, without a task of their own.
pub fn begin(
    shared: &Shared,
    client: SocketAddr,
    query: &[u8],
    udp: bool,
) -> Result<Option<Vec<u8>>, Box<Then>> {
    let q = match Question::read(query) {
        Ok(q) => q,
        Err(u) => {
            let ev = shared.access(client, EventKind::Dns, &Method::GET);
            ev.finish(Err(&ProxyError::BadRequest(u.why.into())));
            return Ok(u.reply);
        }
    };
    let method = Method::from_bytes(<&'static str>::from(q.qtype).as_bytes()).unwrap_or(Method::GET);
    let mut ev = shared.access(client, EventKind::Dns, &method);
    ev.raw_target(&q.name, None);
    let policy = shared.policy.load_full();
    let cfg = &shared.config.dns_listen;
    if let Some(zone) = cfg.forward_zones.iter().find(|z| in_zone(&q.name, &z.name)) {
        ev.forwarded(&policy, &zone.rule);
        return Err(Box::new(Then::Relay { q, ev }));
    }
    let by_name = policy.decide_name(&q.name);
    if !by_name.verdict.proceeds() {
        let reply = q.reply(ResponseCode::NXDomain, &[], Duration::ZERO, udp);
        // The stub resolver's own suffixes on a longer name: its last try,
        // the name as written, is the one logged.
        if is_search_expansion(&q.name, &cfg.search) {
            return Ok(Some(reply));
        }
        ev.decided(&policy, &by_name);
        ev.answered(DnsAnswer {
            rcode: "NXDOMAIN",
            addrs: Vec::new(),
            ttl: NEGATIVE_TTL,
        });
        ev.finish(Ok::<(), &ProxyError>(()));
        return Ok(Some(reply));
    }
    match q.ask() {
        Ask::Other => {
            let d = policy.decide_query_type();
            ev.decided(&policy, &d);
            if d.verdict.proceeds() {
                return Err(Box::new(Then::Relay { q, ev }));
            }
            finish(ev, "REFUSED", Vec::new(), 0);
            Ok(Some(q.reply(ResponseCode::Refused, &[], Duration::ZERO, udp)))
        }
        Ask::Empty => {
            ev.decided(&policy, &by_name);
            finish(ev, "NOERROR", Vec::new(), NEGATIVE_TTL);
            Ok(Some(q.reply(ResponseCode::NoError, &[], Duration::ZERO, udp)))
        }
        Ask::Addresses { v6 } => {
            ev.decided(&policy, &by_name);
            match shared.config.resolver.lookup_now(&q.name, 0, policy.pins()) {
                Some(found) => Ok(Some(addresses(shared, &policy, &q, v6, udp, ev, found))),
                None => Err(Box::new(Then::Lookup { q, ev, policy, v6 })),
            }
        }
    }
}

/// An address question for an answerable name, answered with what
/// egressd's resolver found.
fn addresses(
    shared: &Shared,
    policy: &Policy,
    q: &Question,
    v6: bool,
    udp: bool,
    mut ev: Access,
    found: Result<Resolution, LookupError>,
) -> Vec<u8> {
    let (res, code) = match found {
        Ok(r) => (r, ResponseCode::NoError),
        Err(LookupError::NoSuchName(_)) => {
            finish(ev, "NXDOMAIN", Vec::new(), NEGATIVE_TTL);
            return q.reply(ResponseCode::NXDomain, &[], Duration::ZERO, udp);
        }
        Err(LookupError::NoAddrs(_)) => {
            finish(ev, "NOERROR", Vec::new(), NEGATIVE_TTL);
            return q.reply(ResponseCode::NoError, &[], Duration::ZERO, udp);
        }
        Err(e) => {
            let err = match e {
                LookupError::Timeout(_) => ProxyError::DnsTimeout,
                e => ProxyError::Dns(e.to_string()),
            };
            return servfail(ev, q, udp, err);
        }
    };
    ev.dns(res.dns);
    let ttl = res.ttl.unwrap_or(PIN_TTL);
    // An operator's pin is answered as it is dialled; DNS's special-purpose
    // addresses only under a CIDR rule (DNS rebinding), the rest logged.
    let (addrs, dropped): (Vec<&crate::policy::Resolved>, Vec<_>) = res
        .targets
        .iter()
        .filter(|t| t.addr.ip().is_ipv6() == v6)
        .partition(|t| t.pinned || policy.answerable(t.addr.ip()));
    let addrs: Vec<std::net::IpAddr> = addrs.iter().map(|t| t.addr.ip()).collect();
    if !dropped.is_empty() {
        let list: Vec<String> = dropped.iter().map(|t| t.addr.ip().to_string()).collect();
        ev.note(format!(
            "special-purpose addresses left out of the answer: {}",
            list.join(" ")
        ));
    }
    shared
        .answered()
        .record(ev.client().ip(), &q.name, &addrs, ttl, Instant::now());
    let secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
    let reply = q.reply(code, &addrs, ttl, udp);
    finish(ev, code_name(code), addrs, secs);
    reply
}

/// A question relayed to the DNS servers as it came (a forward zone, or
/// report mode's other types).
async fn relay(shared: &Shared, q: &Question, query: &[u8], udp: bool, ev: Access) -> Option<Vec<u8>> {
    let cfg = &shared.config.dns_listen;
    let forwarded =
        crate::dns::socket::forward(query, &cfg.forward_to, shared.config.mark, FORWARD_WAIT, !udp).await;
    match forwarded {
        Ok(reply) => {
            let rcode = reply.get(3).map_or(0, |b| b & 0x0f);
            finish(ev, code_name(ResponseCode::from_low(rcode)), Vec::new(), 0);
            Some(reply)
        }
        Err(e) => Some(servfail(ev, q, udp, ProxyError::Dns(e.to_string()))),
    }
}

/// Ends the event of an answered question.
fn finish(mut ev: Access, rcode: &'static str, addrs: Vec<std::net::IpAddr>, ttl: u32) {
    ev.answered(DnsAnswer { rcode, addrs, ttl });
    ev.finish(Ok::<(), &ProxyError>(()));
}

/// SERVFAIL: the DNS servers failed; the event says how.
fn servfail(mut ev: Access, q: &Question, udp: bool, err: ProxyError) -> Vec<u8> {
    ev.answered(DnsAnswer {
        rcode: "SERVFAIL",
        addrs: Vec::new(),
        ttl: 0,
    });
    ev.finish(Err(&err));
    q.reply(ResponseCode::ServFail, &[], Duration::ZERO, udp)
}

fn code_name(c: ResponseCode) -> &'static str {
    match c {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "OTHER",
    }
}

/// Whether `name` is `zone` or below it.
fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|r| r.ends_with('.'))
}

/// Whether `name` is a longer name with a search domain appended, as a
/// stub resolver with `ndots:5` tries before the name itself.
fn is_search_expansion(name: &str, search: &[String]) -> bool {
    search.iter().any(|s| {
        name.strip_suffix(s.as_str())
            .and_then(|r| r.strip_suffix('.'))
            .is_some_and(|r| r.contains('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_and_search_expansions() {
        assert!(in_zone("cluster.local", "cluster.local"));
        assert!(in_zone("db.ns.svc.cluster.local", "cluster.local"));
        assert!(!in_zone("evilcluster.local", "cluster.local"));
        let search = vec![
            "default.svc.cluster.local".to_string(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ];
        assert!(is_search_expansion(
            "api.qualtrics.com.default.svc.cluster.local",
            &search
        ));
        assert!(is_search_expansion("api.qualtrics.com.cluster.local", &search));
        // A short name with a search domain is a service's name, not an expansion.
        assert!(!is_search_expansion("db.default.svc.cluster.local", &search[..1]));
        assert!(!is_search_expansion("api.qualtrics.com", &search));
    }
}
