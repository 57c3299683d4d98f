//! Upstream HTTP/1.1 for requests without a body (most of what a proxy
//! forwards: `GET`, `HEAD`), driven in the client connection's own task:
//! the request head is written and the response read straight from the
//! socket, and the body is handed to the client as the client side polls
//! for it.
//!
//! Why not hyper's client here: it runs each upstream connection as a task
//! of its own behind a dispatch channel, and on a keep-alive hop that task,
//! its wake-ups and its body channel were the largest share of the proxy's
//! CPU (see `benches/README.md`, "The own upstream client"). A request
//! without a body needs none of it: no body streams up while the response
//! streams down. It speaks TLS to the origins of inspected tunnels as well
//! (HTTP/1.1; an origin that chooses HTTP/2 is handed to hyper's client).
//! Requests with bodies, upgrades and the parent proxy stay on hyper's
//! client. The message syntax is httparse's; what is written here is the
//! framing of RFC 9112 §6, in the shape of hyper's `proto/h1`, one part
//! per file:
//!
//! - [`head`]: response heads parsed (pure);
//! - [`framing`](mod@framing): how a body is framed, from its head (pure);
//! - [`chunked`]: the chunked decoder (pure);
//! - `conn`: one connection's head I/O;
//! - `body`: the body streamed to the client ([`ResponseBody`]);
//! - here: the exchange, and the idle connections of one worker.

mod body;
pub mod chunked;
mod conn;
pub mod framing;
pub mod head;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use body::{BodyEnd, ResponseBody};
pub use chunked::{Chunked, Step};
use conn::{Conn, Failed, Stream};
pub use framing::{framing, Framing};
pub use head::{parse_head, Parsed};

use super::dial::{dial, DialError, Seeded, TlsOrigin, POOL_IDLE, POOL_PER_ADDR};
use super::respond::ProxyError;
use crate::policy::Resolved;

/// Reads go into at least this much free buffer.
const READ_SPACE: usize = 16 * 1024;

/// Where an idle connection leads: an address, and the TLS origin's name
/// for a TLS connection.
type Key = (SocketAddr, Option<ServerName<'static>>);

/// A [`Key`] borrowed, to look one up without copying the name (a `String`)
/// for every request: hashed as `Key` is.
struct KeyRef<'a>(SocketAddr, Option<&'a ServerName<'static>>);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.hash(h);
        self.1.hash(h);
    }
}

impl hashbrown::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        self.0 == k.0 && self.1 == k.1.as_ref()
    }
}

/// How many TLS origins that chose HTTP/2 are remembered (then forgotten
/// all at once, and learnt again).
const H2_ORIGINS: usize = 4096;

/// The proxy's own idle connections of one worker, by where they lead,
/// and the TLS origins that chose HTTP/2 (their requests go to hyper's
/// client, which multiplexes them on one connection).
#[derive(Default)]
pub struct IdleConns {
    inner: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    by_key: hashbrown::HashMap<Key, Vec<Conn>, Seeded>,
    h2: hashbrown::HashSet<Key, Seeded>,
}

/// A TLS origin known to have chosen HTTP/2.
struct SpeaksH2;

impl IdleConns {
    /// An idle connection to the first of `targets` that has one, still
    /// open and not idle too long; or that the origin speaks HTTP/2.
    fn checkout(
        &self,
        targets: &[Resolved],
        name: Option<&ServerName<'static>>,
    ) -> Result<Option<Conn>, SpeaksH2> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for t in targets {
            let key = KeyRef(t.addr, name);
            if name.is_some() && m.h2.contains(&key) {
                return Err(SpeaksH2);
            }
            let Some(idle) = m.by_key.get_mut(&key) else {
                continue;
            };
            while let Some(mut c) = idle.pop() {
                if c.since.elapsed() <= POOL_IDLE && c.is_open() {
                    // This request's check of the address, not the last one's.
                    c.reached = *t;
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// Keeps a connection whose response ended.
    fn checkin(&self, mut c: Conn) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.since = std::time::Instant::now();
        // The name is copied for a key only the first time.
        match m.by_key.get_mut(&KeyRef(c.reached.addr, c.name.as_ref())) {
            Some(v) if v.len() >= POOL_PER_ADDR => {}
            Some(v) => v.push(c),
            None => {
                let key = (c.reached.addr, c.name.clone());
                m.by_key.insert(key, vec![c]);
            }
        }
    }

    /// Remembers that the TLS origin at `addr` chose HTTP/2.
    fn speaks_h2(&self, addr: SocketAddr, name: &ServerName<'static>) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.h2.len() >= H2_ORIGINS {
            m.h2.clear();
        }
        m.h2.insert((addr, Some(name.clone())));
    }

    /// Closes the connections that servers closed or that idled too long.
    pub fn sweep(&self) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.by_key.retain(|_, v| {
            v.retain_mut(|c| c.since.elapsed() <= POOL_IDLE && c.is_open());
            !v.is_empty()
        });
    }
}

/// A response whose head was read: its head, and its body still on the
/// connection.
pub struct Exchanged {
    pub head: http::response::Parts,
    /// The address that answered.
    pub reached: Resolved,
    conn: Conn,
    framing: Framing,
    keep_alive: bool,
}

/// Why a request did not go over the proxy's own client.
pub enum NotOwn {
    /// No response: the dial or the exchange failed.
    Failed(DialError),
    /// The TLS origin speaks HTTP/2: the request goes to hyper's client.
    H2(Box<Handoff>),
}

/// A request for hyper's client, with the new connection that found out
/// its origin speaks HTTP/2, if one did.
pub struct Handoff {
    pub parts: http::request::Parts,
    pub new: Option<(TlsStream<TcpStream>, Resolved)>,
}

impl From<DialError> for NotOwn {
    fn from(e: DialError) -> NotOwn {
        NotOwn::Failed(e)
    }
}

/// Sends a request without a body to the first of `targets` that answers
/// (over an idle connection if the pool holds one), over TLS to `tls`
/// when given, and reads the response head within `response_timeout`. A
/// pooled connection the server had closed is replaced once by a new one,
/// if the method is idempotent. A TLS origin is offered HTTP/2 where it may
/// be; if it takes it, the request is handed back ([`NotOwn::H2`]).
pub async fn exchange(
    idle: &IdleConns,
    mark: Option<u32>,
    targets: &[Resolved],
    tls: Option<&TlsOrigin>,
    mut parts: http::request::Parts,
    (connect_timeout, response_timeout): (std::time::Duration, std::time::Duration),
) -> Result<Exchanged, NotOwn> {
    let name = tls.map(|t| &t.name);
    let Ok(mut pooled) = idle.checkout(targets, name) else {
        return Err(NotOwn::H2(Box::new(Handoff { parts, new: None })));
    };
    loop {
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => {
                let (io, t) = dial(targets, connect_timeout, mark).await?;
                match tls {
                    None => Conn::new(Stream::Tcp(io), t, None),
                    Some(origin) => {
                        let s = super::dial::tls(origin, io, connect_timeout, true)
                            .await
                            .map_err(|error| DialError { error, last: Some(t) })?;
                        if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                            idle.speaks_h2(t.addr, &origin.name);
                            let new = Some((s, t));
                            return Err(NotOwn::H2(Box::new(Handoff { parts, new })));
                        }
                        Conn::new(Stream::Tls(Box::new(s)), t, Some(origin.name.clone()))
                    }
                }
            }
        };
        let reached = conn.reached;
        let failed = |error| DialError {
            error,
            last: Some(reached),
        };
        let once = async {
            conn.write_head(&parts)
                .await
                .map_err(|e| conn.failed(false, &e))?;
            conn.read_head(&mut parts.headers).await
        };
        match tokio::time::timeout(response_timeout, once).await {
            Err(_) => return Err(failed(ProxyError::ResponseTimeout).into()),
            Ok(Ok(mut head)) => {
                let (framing, keep_alive) =
                    framing(&parts.method, head.status, head.version, &mut head.headers).map_err(failed)?;
                return Ok(Exchanged {
                    head,
                    reached,
                    conn,
                    framing,
                    keep_alive,
                });
            }
            Ok(Err(Failed::Stale)) if parts.method.is_idempotent() => continue,
            Ok(Err(Failed::Stale)) => {
                return Err(failed(ProxyError::UpstreamResponse(
                    "the upstream closed an idle connection as the request was sent".into(),
                ))
                .into())
            }
            Ok(Err(Failed::Error(e))) => return Err(failed(e).into()),
        }
    }
}

impl Exchanged {
    /// The body, streamed from the connection; its end is told to `end`,
    /// and the connection goes back to `idle` when it can carry another
    /// request.
    pub fn into_body<E: BodyEnd>(
        self,
        end: E,
        idle: Arc<IdleConns>,
    ) -> (http::response::Parts, ResponseBody<E>) {
        let body = ResponseBody {
            conn: Some(self.conn),
            framing: self.framing,
            keep_alive: self.keep_alive,
            down: 0,
            end: Some(end),
            idle,
            failing: None,
        };
        (self.head, body)
    }
}

/// What [`read_offline`] read: the final status (once the head was whole),
/// the body bytes decoded, and whether the body ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Offline {
    pub status: Option<http::StatusCode>,
    pub body: Vec<u8>,
    pub ended: bool,
}

/// Reads a response to a `GET` from `wire`, handed over in pieces of
/// `split` bytes as reads would hand it, through the same head parser,
/// framing and chunked decoder as a connection. For the fuzz target and
/// its replays in `cargo test`: whatever the bytes, no panic, and the same
/// answer (or refusal) whatever the read boundaries.
pub fn read_offline(wire: &[u8], split: usize) -> Result<Offline, ProxyError> {
    let (mut buf, mut spans, mut fields) = (bytes::BytesMut::new(), Vec::new(), http::HeaderMap::new());
    let mut pieces = wire.chunks(split.max(1));
    let mut read = Offline {
        status: None,
        body: Vec::new(),
        ended: false,
    };
    let mut body: Option<Framing> = None;
    loop {
        match &mut body {
            None => match parse_head(&mut buf, &mut spans, &mut fields)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Head(mut head)) => {
                    let (f, _) = framing(&http::Method::GET, head.status, head.version, &mut head.headers)?;
                    read.status = Some(head.status);
                    body = Some(f);
                    continue;
                }
                None => {}
            },
            Some(Framing::Length(left)) => {
                let n = (buf.len() as u64).min(*left);
                read.body.extend_from_slice(&buf.split_to(n as usize));
                *left -= n;
                if *left == 0 {
                    read.ended = true;
                    return Ok(read);
                }
            }
            Some(Framing::Close) => read.body.extend_from_slice(&buf.split()),
            Some(Framing::Chunked(c)) => loop {
                match c.step(&mut buf)? {
                    Step::Data(n) => read.body.extend_from_slice(&buf.split_to(n)),
                    Step::More => break,
                    Step::Done => {
                        read.ended = true;
                        return Ok(read);
                    }
                }
            },
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None => break,
        }
    }
    read.ended = body == Some(Framing::Close);
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_key_finds_what_an_owned_one_stored() {
        let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let a = ServerName::try_from("a.test".to_string()).unwrap();
        let b = ServerName::try_from("b.test".to_string()).unwrap();
        let mut m: hashbrown::HashMap<Key, u8, Seeded> = Default::default();
        m.insert((addr, Some(a.clone())), 1);
        m.insert((addr, None), 2);
        assert_eq!(m.get(&KeyRef(addr, Some(&a))), Some(&1));
        assert_eq!(m.get(&KeyRef(addr, None)), Some(&2));
        assert_eq!(m.get(&KeyRef(addr, Some(&b))), None);
        assert_eq!(m.get(&KeyRef("127.0.0.1:80".parse().unwrap(), Some(&a))), None);
    }
}
