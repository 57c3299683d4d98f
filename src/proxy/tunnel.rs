//! The one tunnel path. Every way in that ends in a byte stream to a
//! destination parses its own framing (a `CONNECT` on a plain or TLS
//! listener in [`super::connect`], a redirected connection's first bytes in
//! [`super::transparent`]; a SOCKS listener would be one more such module),
//! then calls [`open`] and [`run`], which walk the pipeline's steps for it:
//!
//! - [`open`]: claim a tunnel slot for the client, decide by name and check
//!   every address ([`pipeline::authorize_tunnel`]), route (direct, or through
//!   the parent), dial; or, when the policy inspects the tunnel, prepare
//!   the session whose requests dial from inside;
//! - [`run`]: judge the first client bytes ([`super::hello::judge`]), then
//!   splice, relay or inspect until both sides are done.
//!
//! The caller answers a refusal in its own framing (an HTTP status, a TLS
//! alert) and finishes the event.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::certs::Inspector;
use super::client::{Client, ClientIo};
use super::dial::dial;
use super::hello::FirstCheck;
use super::inspect;
use super::parent::ParentStream;
use super::pipeline::{self, Admitted, Route};
use super::pool::Pool;
use super::relay::{relay, relay_halves, Outcome, Rewind};
use super::respond::{ProxyError, Side};
use super::{Shared, TunnelGuard};
use crate::access::Access;
use crate::policy::Candidate;

/// What a way in asks for, once its framing is parsed.
pub struct TunnelRequest {
    pub client: SocketAddr,
    /// Who asked, and the policy that applies to them.
    pub admitted: Admitted,
    /// The destination, normalised.
    pub cand: Candidate,
    /// Whether the client's TLS may be ended here when the policy inspects
    /// the destination: it named a host (a `CONNECT`, or a ClientHello
    /// with SNI), not only an address.
    pub inspectable: bool,
}

/// A tunnel allowed through, ready to [`run`].
pub struct Opened {
    link: Link,
    check: FirstCheck,
    /// Holds the client's slot and the gauge until the tunnel ends.
    guard: TunnelGuard,
}

/// Where an opened tunnel's bytes go.
enum Link {
    /// To the destination, or to a plain-TCP parent's tunnel; `early` holds
    /// bytes the parent sent past its `200`, for the client.
    Splice {
        upstream: TcpStream,
        splice: bool,
        early: Bytes,
    },
    /// Through a parent reached over TLS.
    Parent { upstream: ParentStream, early: Bytes },
    /// Ended here: each request inside walks the pipeline.
    Inspect(Box<inspect::Session>, Arc<Inspector>),
}

/// Admits, decides, checks addresses, routes and dials a tunnel (an
/// inspected one dials per request, from inside). The event gets the
/// decision and the address dialled.
pub async fn open(shared: &Arc<Shared>, req: TunnelRequest, ev: &mut Access) -> Result<Opened, ProxyError> {
    let TunnelRequest {
        client,
        admitted,
        cand,
        inspectable,
    } = req;
    let guard = shared
        .claim_tunnel(client.ip())
        .ok_or(ProxyError::TooManyTunnels)?;
    let policy = &admitted.policy;
    let outcome = pipeline::authorize_tunnel(shared, policy, &cand).await;
    let (mut checked, inspect) = pipeline::authorized(ev, policy, outcome, |(a, _)| a)?;
    // A redirected connection goes where the app chose, when egressd
    // checked that address too.
    if let (Some(orig), Route::Direct(targets)) = (ev.original_dst(), &mut checked.route) {
        if let Some(i) = targets.iter().position(|t| t.addr == orig) {
            targets[..=i].rotate_right(1);
        }
    }
    let check = FirstCheck {
        target: cand.host.as_name().map(str::to_string),
        sni: policy.tunnel_sni(),
        tls_only: checked.decision.rule.is_some_and(|r| policy.rule(r).tls_only),
    };
    let authority = format!("{}:{}", cand.host, cand.port);
    if let (true, Some(inspector)) = (inspect && inspectable, shared.inspector.load_full()) {
        let session = inspect::Session {
            client,
            policy: admitted.policy,
            user: admitted.user,
            cand,
            authority,
            route: checked.route,
            check: check.clone(),
        };
        return Ok(Opened {
            link: Link::Inspect(Box::new(session), inspector),
            check,
            guard,
        });
    }
    let splice = |upstream: SocketAddr| shared.config.splice.applies(client.ip(), upstream.ip());
    let link = match checked.route {
        Route::Parent(parent) => {
            let (connect, response) = (shared.config.connect_timeout, shared.config.response_timeout);
            let (upstream, early, reached) = parent.tunnel(&authority, connect, response).await?;
            ev.dialled(reached);
            match upstream {
                ParentStream::Plain(upstream) => Link::Splice {
                    splice: splice(reached.addr),
                    upstream,
                    early,
                },
                upstream => Link::Parent { upstream, early },
            }
        }
        Route::Direct(targets) => {
            let dialled = dial(&targets, shared.config.connect_timeout, shared.config.mark).await;
            let (upstream, reached) = dialled.map_err(|f| pipeline::dial_failed(f, ev))?;
            ev.dialled(reached);
            Link::Splice {
                splice: splice(reached.addr),
                upstream,
                early: Bytes::new(),
            }
        }
    };
    Ok(Opened { link, check, guard })
}

/// Carries an opened tunnel's bytes until both sides are done, it idles
/// out, its first bytes fail their check, or the drain period is over.
/// The event gets the bytes and the server name the client asked for.
pub async fn run(
    shared: &Arc<Shared>,
    pool: Arc<Pool>,
    t: Opened,
    client: Client,
    ev: &mut Access,
) -> Result<(), ProxyError> {
    let Opened { link, check, guard } = t;
    let (idle, cut) = (shared.config.tunnel_idle, shared.worker_cut());
    let end = match (link, client) {
        (Link::Inspect(session, inspector), client) => {
            let (io, pre) = match client {
                Client::Tcp { stream, pre } => (Box::new(stream) as Box<dyn ClientIo>, pre),
                Client::Io(io) => (io, Vec::new()),
            };
            tokio::select! {
                r = inspect::serve(shared.clone(), pool, inspector, io, pre, *session, ev) => r,
                _ = cut.cancelled() => Err(ProxyError::Shutdown),
            }
        }
        // Two plain sockets: no boxed I/O, no lock between the halves, and
        // bursts spliced where that pays.
        (
            Link::Splice {
                mut upstream,
                splice,
                early,
            },
            Client::Tcp { mut stream, pre },
        ) => {
            send_early(&mut stream, &early).await?;
            let (cr, cw) = stream.split();
            let (ur, uw) = upstream.split();
            let out = relay_halves(cr, cw, ur, uw, pre, splice, check, idle, cut).await;
            recorded(out, early.len(), ev)
        }
        (Link::Splice { upstream, early, .. }, client) => {
            relay_after(client.into_io(), upstream, early, check, idle, cut, ev).await
        }
        (Link::Parent { upstream, early }, client) => {
            relay_after(client.into_io(), upstream, early, check, idle, cut, ev).await
        }
    };
    drop(guard);
    end
}

impl Client {
    /// The client as one stream, bytes already read coming first.
    fn into_io(self) -> Box<dyn ClientIo> {
        match self {
            Client::Tcp { stream, pre } if pre.is_empty() => Box::new(stream),
            Client::Tcp { stream, pre } => Box::new(Rewind::new(pre, stream)),
            Client::Io(io) => io,
        }
    }
}

/// Relays between any two streams (no splice), after passing on the bytes
/// a parent sent past its `200`.
async fn relay_after<U>(
    mut client: Box<dyn ClientIo>,
    upstream: U,
    early: Bytes,
    check: FirstCheck,
    idle: std::time::Duration,
    cut: tokio_util::sync::CancellationToken,
    ev: &mut Access,
) -> Result<(), ProxyError>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    send_early(&mut client, &early).await?;
    let out = relay(client, upstream, check, idle, cut).await;
    recorded(out, early.len(), ev)
}

/// A relay's outcome in the event; the early bytes count as sent down.
fn recorded(out: Outcome, early: usize, ev: &mut Access) -> Result<(), ProxyError> {
    ev.bytes(out.up, out.down + early as u64);
    // A redirected connection's SNI is known before the relay reads it.
    if out.sni.is_some() {
        ev.sni(out.sni);
    }
    out.end
}

/// Bytes a parent sent past its `200`, passed on to the client first.
async fn send_early<W: AsyncWrite + Unpin + ?Sized>(client: &mut W, early: &[u8]) -> Result<(), ProxyError> {
    if early.is_empty() {
        return Ok(());
    }
    client
        .write_all(early)
        .await
        .map_err(|e| ProxyError::io(Side::Client, &e))
}
