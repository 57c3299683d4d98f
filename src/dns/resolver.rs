//! The resolver the proxy (and, later, its DNS listener) asks: the cache
//! first, on the asker's own thread; on a miss, one question upstream per
//! name however many ask at once, sent from one DNS thread that owns the
//! stub resolver. No lookup blocks a thread, and a question the asker
//! stopped waiting for still completes and fills the cache (the background
//! refresh that serving stale relies on).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::cache::{Answer, Bounds, Cache, Cached, REFRESH_WINDOW, STALE_TTL};
use super::stats::{stats, Outcome};
use super::upstream::{Reply, Servers, Upstream, UpstreamError};

/// How the resolver is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub servers: Servers,
    pub bounds: Bounds,
    /// Names kept at most.
    pub capacity: usize,
    /// How long an asker waits for the upstream.
    pub timeout: Duration,
    /// `SO_MARK` on the resolver's sockets (`run --mark`), so that redirect
    /// rules let egressd's own questions out.
    pub mark: Option<u32>,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cache, within the answer's TTL.
    Cache,
    /// The upstream, just now.
    Upstream,
    /// The cache, past the TTL: the upstream failed or did not answer.
    Stale,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Upstream => "upstream",
            Source::Stale => "stale",
        }
    }
}

/// A name's addresses, in the order to try them, and how long they hold:
/// what the proxy dials, and what a DNS listener would answer (with this
/// TTL, [`super::cache::STALE_TTL`] for a stale answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub addrs: Arc<[IpAddr]>,
    pub source: Source,
    pub ttl: Duration,
}

/// Why a name has no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0}: no such name")]
    NoSuchName(String),
    #[error("{0} has no addresses")]
    NoAddrs(String),
    #[error("{0}: the DNS servers did not answer in time")]
    Timeout(String),
    #[error("{0}: {1}")]
    Failed(String, String),
}

/// A question for the DNS thread; the reply goes to `reply`.
struct Ask {
    name: Box<str>,
    reply: oneshot::Sender<Result<Reply, UpstreamError>>,
}

/// The resolver. Cheap to share; its DNS thread lives as long as it does.
pub struct Dns {
    cache: Arc<Mutex<Cache>>,
    asks: mpsc::UnboundedSender<Ask>,
    timeout: Duration,
}

impl Dns {
    /// Starts the DNS thread with its stub resolver; a configuration that
    /// cannot work (no servers) is an error here, not at the first request.
    pub fn start(config: Config) -> Result<Dns, String> {
        let cache = Arc::new(Mutex::new(Cache::new(config.capacity, config.bounds)));
        let (asks, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (thread_cache, servers, mark) = (cache.clone(), config.servers.clone(), config.mark);
        std::thread::Builder::new()
            .name("egressd-dns".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                rt.block_on(async move {
                    let upstream = match Upstream::new(&servers, mark) {
                        Ok(u) => Arc::new(u),
                        Err(e) => return drop(ready_tx.send(Err(e))),
                    };
                    let _ = ready_tx.send(Ok(()));
                    serve(upstream, thread_cache, rx).await;
                });
            })
            .map_err(|e| e.to_string())?;
        ready_rx
            .recv()
            .map_err(|_| "the DNS thread ended before it started".to_string())??;
        Ok(Dns {
            cache,
            asks,
            timeout: config.timeout,
        })
    }

    /// `name`'s answer when the cache holds it within its TTL, without
    /// waiting: the DNS listener's fast path. `None` otherwise (ask
    /// [`Dns::lookup`]).
    pub fn cached(&self, name: &str) -> Option<Result<Found, LookupError>> {
        match self.cache().get(name, Instant::now()) {
            Cached::Fresh(answer, left) => Some(found(name, answer, Source::Cache, left)),
            _ => None,
        }
    }

    /// The addresses of `name` (lower case, no trailing dot): from the cache
    /// within its TTL; else from the upstream within the timeout; else,
    /// when the upstream fails or is late, an expired answer within the
    /// stale bound.
    pub async fn lookup(&self, name: &str) -> Result<Found, LookupError> {
        let now = Instant::now();
        let cached = self.cache().get(name, now);
        let (stale, wait) = match cached {
            Cached::Fresh(answer, left) => return found(name, answer, Source::Cache, left),
            // Another asker waits for a refresh, or one failed lately (the
            // upstream is not asked again before RFC 8767's failure recheck):
            // this asker is served at once and asks nothing.
            Cached::Stale {
                addrs,
                serve_now: true,
            } => {
                stats().lookup(Outcome::Stale);
                return Ok(Found {
                    addrs,
                    source: Source::Stale,
                    ttl: STALE_TTL,
                });
            }
            // This asker waits for the refresh, at most RFC 8767's client
            // response timer; the others are served the stale answer.
            Cached::Stale { addrs, .. } => {
                self.cache().refreshing(name, now);
                (Some(addrs), self.timeout.min(REFRESH_WINDOW))
            }
            Cached::Missing => (None, self.timeout),
        };
        let reply = self.ask(name);
        let err = match tokio::time::timeout(wait, reply).await {
            Ok(Ok(Ok(r))) => {
                let b = self.cache().bounds();
                let ttl = r.ttl.clamp(b.min_ttl, b.max_ttl.max(b.min_ttl));
                return found(name, r.answer, Source::Upstream, ttl);
            }
            Ok(Ok(Err(e))) => e,
            Ok(Err(_)) => UpstreamError::Failed("the DNS thread is gone".into()),
            Err(_) => UpstreamError::Timeout,
        };
        if let Some(addrs) = stale {
            // Askers after this one are served the stale answer at once
            // while the question goes on.
            self.cache().failed(name, Instant::now());
            stats().lookup(Outcome::Stale);
            return Ok(Found {
                addrs,
                source: Source::Stale,
                ttl: STALE_TTL,
            });
        }
        stats().lookup(Outcome::Failed);
        Err(match err {
            UpstreamError::Timeout => LookupError::Timeout(name.into()),
            UpstreamError::Failed(m) => LookupError::Failed(name.into(), m),
        })
    }

    /// Sends one question to the DNS thread; its reply.
    fn ask(&self, name: &str) -> oneshot::Receiver<Result<Reply, UpstreamError>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.asks.send(Ask {
            name: name.into(),
            reply,
        });
        rx
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names cached now.
    pub fn cached_names(&self) -> usize {
        self.cache().len()
    }
}

/// An answer as the asker gets it, counted by where it came from.
fn found(name: &str, answer: Answer, source: Source, ttl: Duration) -> Result<Found, LookupError> {
    match answer {
        Answer::Addrs(addrs) => {
            stats().lookup(match source {
                Source::Cache => Outcome::Hit,
                Source::Upstream => Outcome::Miss,
                Source::Stale => Outcome::Stale,
            });
            Ok(Found { addrs, source, ttl })
        }
        Answer::NoAddrs { nxdomain } => {
            stats().lookup(Outcome::Negative);
            Err(if nxdomain {
                LookupError::NoSuchName(name.into())
            } else {
                LookupError::NoAddrs(name.into())
            })
        }
    }
}

/// The DNS thread: one question upstream per name at a time; every asker
/// of that name gets its reply, and the cache gets it first.
async fn serve(upstream: Arc<Upstream>, cache: Arc<Mutex<Cache>>, mut asks: mpsc::UnboundedReceiver<Ask>) {
    type Waiters = Vec<oneshot::Sender<Result<Reply, UpstreamError>>>;
    let mut waiting: HashMap<Box<str>, Waiters> = HashMap::new();
    let (done_tx, mut done) = mpsc::unbounded_channel::<(Box<str>, Result<Reply, UpstreamError>)>();
    loop {
        tokio::select! {
            ask = asks.recv() => {
                let Some(Ask { name, reply }) = ask else { return };
                if let Some(w) = waiting.get_mut(&name) {
                    w.push(reply);
                    continue;
                }
                waiting.insert(name.clone(), vec![reply]);
                let (upstream, done_tx) = (upstream.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let r = upstream.query(&name).await;
                    stats().upstream(&r, started.elapsed());
                    let _ = done_tx.send((name, r));
                });
            }
            Some((name, r)) = done.recv() => {
                {
                    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                    match &r {
                        Ok(reply) => c.insert(&name, reply.answer.clone(), reply.ttl, Instant::now()),
                        Err(_) => c.failed(&name, Instant::now()),
                    }
                }
                for w in waiting.remove(&name).unwrap_or_default() {
                    let _ = w.send(r.clone());
                }
            }
        }
    }
}
