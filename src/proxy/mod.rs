//! The I/O shell: listeners, the request pipeline, DNS, dialling, bytes.
//! Every decision is made by [`crate::policy`]; this module carries bytes
//! and reports what happened. The steps are numbered once, in the crate's
//! overview ([`crate`], "The request pipeline"); the modules below are in
//! that order:
//!
//! - ways in: [`server`] (listeners, accept, routing), [`client`] (the
//!   client's connection), [`connect`], [`transparent`] (framing, then the
//!   one tunnel path), [`forward`] and [`inspect`] (HTTP requests);
//! - steps: [`auth`] and [`pipeline`] (1 to 4, 7), [`resolve`] (4), [`dial`],
//!   [`pool`], [`h1`], [`parent`] (5), [`tunnel`], [`relay`], [`hello`],
//!   [`hop`], [`certs`] (6), [`respond`] (every exit).

// In pipeline order (kept out of alphabetical order on purpose).
pub mod server;
// Step 1, per request.
pub mod auth;
pub mod parent;
// Steps 1 to 4, and 7.
pub mod pipeline;
// Step 4.
pub mod resolve;
// Step 5.
pub mod dial;
pub mod pool;
// Step 6.
pub mod forward;
// Step 6, for bodyless plain HTTP.
pub mod h1;
pub mod hop;
// Step 6: every way in that ends in a tunnel parses its framing, then
// calls the one tunnel path.
pub mod client;
pub mod connect;
pub mod dns_listen;
pub mod heard;
pub mod transparent;
pub mod tunnel;
// Step 6.
pub mod relay;
// Step 6.
pub mod inspect;
// Step 6, for inspect.
pub mod certs;
// Step 6.
pub mod hello;
// Every exit.
pub mod respond;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::line::LogLine;
use crate::access::{Access, AccessSink, EventKind, Sinks};
use crate::metrics::Metrics;
use crate::policy::Policy;
use resolve::{DnsMode, Resolver};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3128";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_TUNNELS_PER_CLIENT: usize = 1024;

/// Runtime settings of the proxy (built from the command line).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    /// Listeners where clients speak TLS to egressd (`--listen-tls`).
    pub listen_tls: Vec<SocketAddr>,
    /// The TLS listeners' certificate chain and key (PEM), reread on SIGHUP.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    pub connect_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    /// A tunnel with no bytes either way for this long is closed.
    pub tunnel_idle: Duration,
    /// How long a forwarded request may wait for the response head.
    pub response_timeout: Duration,
    pub max_tunnels_per_client: usize,
    /// When tunnel bursts are spliced in the kernel.
    pub splice: relay::SpliceMode,
    /// Source networks that may use the proxy.
    pub clients: Vec<IpNet>,
    /// Proxy authentication, when required.
    pub auth: Option<Arc<auth::Authenticator>>,
    /// The parent proxy allowed traffic leaves through (`--upstream-proxy`).
    pub parent: Option<Arc<parent::Parent>>,
    /// Transparent listeners (`--transparent`): redirected connections.
    pub transparent: Vec<SocketAddr>,
    /// `SO_MARK` on every upstream socket (`--mark`), for redirect rules.
    pub mark: Option<u32>,
    pub resolver: Resolver,
    /// The CA directory for TLS inspection (`--ca`), reread on SIGHUP.
    pub ca_dir: Option<std::path::PathBuf>,
    /// Extra roots for verifying origins inside inspected tunnels.
    pub upstream_ca: Vec<std::path::PathBuf>,
    /// The DNS listener (`--dns-listen`), when there is one.
    pub dns_listen: crate::dns::args::ListenConfig,
}

impl ProxyConfig {
    /// Defaults: loopback listener and clients, system DNS, no pins.
    pub fn new(listen: Vec<SocketAddr>) -> ProxyConfig {
        ProxyConfig {
            listen,
            listen_tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            tunnel_idle: DEFAULT_TUNNEL_IDLE,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_tunnels_per_client: DEFAULT_MAX_TUNNELS_PER_CLIENT,
            splice: relay::SpliceMode::default(),
            clients: default_clients(),
            auth: None,
            parent: None,
            transparent: Vec::new(),
            mark: None,
            resolver: Resolver::new(Vec::new(), DnsMode::System, DEFAULT_DNS_TIMEOUT),
            ca_dir: None,
            upstream_ca: Vec::new(),
            dns_listen: Default::default(),
        }
    }

    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        let ip = crate::policy::normalize::canonical_ip(ip);
        self.clients.iter().any(|n| n.contains(&ip))
    }
}

/// Loopback only: a proxy is never open to a network unless configured so.
pub fn default_clients() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("literal"),
        "::1/128".parse().expect("literal"),
    ]
}

/// State shared by every connection.
pub struct Shared {
    pub policy: ArcSwap<Policy>,
    /// When the current policy was loaded (Unix milliseconds).
    pub loaded_at: AtomicU64,
    /// Listening with a policy loaded, and not draining.
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// The admin listener's live view of decisions.
    pub live: Arc<crate::live::Live>,
    /// Where every finished access event goes.
    sinks: Sinks,
    pub config: ProxyConfig,
    /// Tunnels and connections, so that shutdown can drain them.
    pub tasks: TaskTracker,
    /// Cancelled to stop accepting and to close idle keep-alive connections.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain period is over: cuts the remaining tunnels.
    pub cut: CancellationToken,
    /// Each worker thread's children of `shutdown` and `cut` (see
    /// [`Shared::worker_shutdown`]).
    worker_tokens: crate::shard::Sharded<Option<(CancellationToken, CancellationToken)>>,
    /// TLS inspection, when a CA is loaded (swapped whole on reload).
    pub inspector: arc_swap::ArcSwapOption<certs::Inspector>,
    /// The TLS listeners' server configuration (swapped whole on reload).
    pub listener_tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    own: Vec<SocketAddr>,
    /// Open tunnels per client address.
    tunnels_by_client: Mutex<HashMap<IpAddr, usize>>,
    /// The names the DNS listener answered, per client and address.
    answered: Mutex<crate::dns::answered::Answered>,
}

/// An open tunnel's claim: counted in `egressd_tunnels_active` and, for a
/// tunnel a client asked for, one of its `--max-tunnels-per-client`.
/// Dropping it gives both back, however the tunnel ends.
pub struct TunnelGuard {
    shared: Arc<Shared>,
    /// The client whose slot this holds.
    client: Option<IpAddr>,
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.shared.metrics.tunnels_active.dec();
        let Some(ip) = self.client else { return };
        let mut m = self
            .shared
            .tunnels_by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

impl Shared {
    pub fn new(policy: Policy, config: ProxyConfig) -> Arc<Shared> {
        let own: Vec<SocketAddr> = config
            .listen
            .iter()
            .chain(&config.listen_tls)
            .chain(&config.transparent)
            .copied()
            .collect();
        let metrics = Arc::new(Metrics::new());
        let live: Arc<crate::live::Live> = Arc::default();
        // The access event's sinks, told every event in this order. A new
        // sink is one file implementing `AccessSink` and one line here.
        let sinks: Sinks = Arc::new([
            metrics.clone() as Arc<dyn AccessSink>,
            Arc::new(LogLine),
            live.clone(),
        ]);
        let shared = Arc::new(Shared {
            policy: ArcSwap::from_pointee(crate::policy::PolicyBuilder::new("empty").build()),
            loaded_at: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            metrics,
            live,
            sinks,
            config,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            cut: CancellationToken::new(),
            worker_tokens: Default::default(),
            tunnels_by_client: Mutex::new(HashMap::new()),
            answered: Mutex::new(crate::dns::answered::Answered::new(
                crate::dns::answered::DEFAULT_CAPACITY,
            )),
            inspector: arc_swap::ArcSwapOption::empty(),
            listener_tls: arc_swap::ArcSwapOption::empty(),
            own,
        });
        shared.store_policy(policy);
        shared
    }

    /// Swaps in a new policy atomically: requests in flight keep the one
    /// they loaded.
    pub fn store_policy(&self, policy: Policy) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        policy.set_today(crate::policy::Day::from_unix(now.as_secs()));
        self.metrics.set_rule_expiries(
            policy
                .rules()
                .iter()
                .filter_map(|r| r.expires.map(|d| (r.id.clone(), d.end_unix()))),
        );
        self.metrics.set_policy(
            policy.version(),
            policy.origin(),
            &policy.mode().to_string(),
            now.as_secs_f64(),
        );
        self.loaded_at.store(now.as_millis() as u64, Ordering::Relaxed);
        self.policy.store(Arc::new(policy));
    }

    /// Loads (or reloads) the CA and upstream roots for TLS inspection,
    /// when `--ca` was given. On error the loaded ones stay.
    pub fn load_inspector(&self) -> Result<Option<String>, String> {
        let Some(dir) = &self.config.ca_dir else {
            return Ok(None);
        };
        let inspector = certs::Inspector::load(dir, &self.config.upstream_ca)?;
        let fingerprint = inspector.ca().fingerprint();
        self.inspector.store(Some(Arc::new(inspector)));
        Ok(Some(fingerprint))
    }

    /// Loads (or reloads) the TLS listeners' certificate and key, when
    /// `--listen-tls` was given; returns the certificate's SHA-256. On error
    /// the loaded ones stay.
    pub fn load_listener_tls(&self) -> Result<Option<String>, String> {
        let (Some(cert), Some(key)) = (&self.config.tls_cert, &self.config.tls_key) else {
            return Ok(None);
        };
        let (config, fingerprint) = certs::listener_config(cert, key)?;
        self.listener_tls.store(Some(Arc::new(config)));
        Ok(Some(fingerprint))
    }

    /// Every address the proxy listens on, plain and TLS: never dialled.
    pub fn own_addresses(&self) -> &[SocketAddr] {
        &self.own
    }

    /// Moves rule expiry on to `day`, in the proxy's policy and the users'.
    pub fn set_today(&self, day: crate::policy::Day) {
        self.policy.load().set_today(day);
        if let Some(a) = &self.config.auth {
            a.for_each_policy(|p| p.set_today(day));
        }
    }

    /// Starts the access event of a request (under the proxy's policy until
    /// the request is admitted under its user's).
    pub fn access(&self, client: SocketAddr, kind: EventKind, method: &http::Method) -> Access {
        Access::start(client, kind, method, &self.policy.load(), self.sinks.clone())
    }

    /// `shutdown` as this worker thread waits on it: a child token of its
    /// own. A task waiting on a token locks the token's waiter list each
    /// time it is polled, and every connection's task is polled at every
    /// wake-up: on the one shared token that lock, and the cache line of
    /// its state, went back and forth between the cores per request.
    pub fn worker_shutdown(&self) -> CancellationToken {
        self.worker_tokens(|(shutdown, _)| shutdown.clone())
    }

    /// `cut` as this worker thread waits on it (see [`Self::worker_shutdown`]).
    pub fn worker_cut(&self) -> CancellationToken {
        self.worker_tokens(|(_, cut)| cut.clone())
    }

    fn worker_tokens<R>(&self, f: impl FnOnce(&(CancellationToken, CancellationToken)) -> R) -> R {
        self.worker_tokens
            .with(|t| f(t.get_or_insert_with(|| (self.shutdown.child_token(), self.cut.child_token()))))
    }

    /// The names the DNS listener answered, per client and address.
    pub fn answered(&self) -> std::sync::MutexGuard<'_, crate::dns::answered::Answered> {
        self.answered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims a tunnel for `ip`, unless it has `max_tunnels_per_client` open.
    pub fn claim_tunnel(self: &Arc<Self>, ip: IpAddr) -> Option<TunnelGuard> {
        let mut m = self.tunnels_by_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= self.config.max_tunnels_per_client {
            return None;
        }
        *n += 1;
        self.metrics.tunnels_active.inc();
        Some(TunnelGuard {
            shared: self.clone(),
            client: Some(ip),
        })
    }

    /// Counts a tunnel that holds no client slot: an upgraded HTTP
    /// connection (WebSocket), which the client's request limits already
    /// bound.
    pub fn count_tunnel(self: &Arc<Self>) -> TunnelGuard {
        self.metrics.tunnels_active.inc();
        TunnelGuard {
            shared: self.clone(),
            client: None,
        }
    }
}
