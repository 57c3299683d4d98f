//! The I/O shell: listeners, CONNECT tunnels, forwarded HTTP requests, DNS.
//! Every decision is made by [`crate::policy`]; this module only carries
//! bytes and reports what happened.

pub mod auth;
pub mod connect;
pub mod forward;
pub mod relay;
pub mod resolve;
pub mod respond;
pub mod server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::policy::{AddrContext, Candidate, Decision, Policy, Reason, Verdict};
use crate::telemetry::Access;
use resolve::{DnsMode, Resolver, Target};
use respond::ProxyError;

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
    pub resolver: Resolver,
}

impl ProxyConfig {
    /// Defaults: loopback listener and clients, system DNS, no pins.
    pub fn new(listen: Vec<SocketAddr>) -> ProxyConfig {
        ProxyConfig {
            listen,
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
            resolver: Resolver::new(Vec::new(), DnsMode::System, DEFAULT_DNS_TIMEOUT),
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
    pub config: ProxyConfig,
    /// Tunnels and connections, so that shutdown can drain them.
    pub tasks: TaskTracker,
    /// Cancelled to stop accepting and to close idle keep-alive connections.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain period is over: cuts the remaining tunnels.
    pub cut: CancellationToken,
    /// Open tunnels per client address.
    tunnels_by_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's claim on a tunnel; released when dropped.
pub struct TunnelSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        let mut m = self
            .shared
            .tunnels_by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    pub fn new(policy: Policy, config: ProxyConfig) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            policy: ArcSwap::from_pointee(Policy::from_toml("", "empty").expect("empty policy")),
            loaded_at: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
            config,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            cut: CancellationToken::new(),
            tunnels_by_client: Mutex::new(HashMap::new()),
        });
        shared.store_policy(policy);
        shared
    }

    /// Swaps in a new policy atomically: requests in flight keep the one
    /// they loaded.
    pub fn store_policy(&self, policy: Policy) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.metrics.set_policy(
            policy.version(),
            policy.origin(),
            &policy.mode().to_string(),
            now.as_secs_f64(),
        );
        self.loaded_at.store(now.as_millis() as u64, Ordering::Relaxed);
        self.policy.store(Arc::new(policy));
    }

    /// Claims a tunnel for `ip`, unless it has `max_tunnels_per_client` open.
    pub fn tunnel_slot(self: &Arc<Self>, ip: IpAddr) -> Option<TunnelSlot> {
        let mut m = self.tunnels_by_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= self.config.max_tunnels_per_client {
            return None;
        }
        *n += 1;
        Some(TunnelSlot {
            shared: self.clone(),
            ip,
        })
    }

    /// Authenticates a request when the proxy requires it, and picks the
    /// policy that applies: the user's own, or the proxy's.
    pub fn admit(
        &self,
        headers: &http::HeaderMap,
        client: IpAddr,
    ) -> Result<(Arc<Policy>, Option<Arc<str>>), auth::AuthError> {
        let Some(a) = &self.config.auth else {
            return Ok((self.policy.load_full(), None));
        };
        let p = a.check(headers, client)?;
        let policy = p.policy.unwrap_or_else(|| self.policy.load_full());
        Ok((policy, Some(p.user)))
    }

    /// A new access event for a request, counted in the metrics.
    pub fn access(&self, client: SocketAddr, kind: &'static str, method: &str, policy: &Policy) -> Access {
        let mut a = Access::new(client, kind, method, policy.version_shared());
        a.metrics = Some(self.metrics.clone());
        a
    }
}

/// Records a decision in the access event.
fn record(access: &mut Access, policy: &Policy, d: &Decision) {
    access.decision = d.verdict.as_str();
    access.reason = d.reason.as_str();
    access.rule = d.rule.map(|r| policy.rule(r).id.clone());
    access.flags = d.flags;
}

/// What [`authorize`] lets through.
pub struct Authorized {
    /// Addresses that may be dialled, in order.
    pub targets: Vec<Target>,
    /// The rule that allowed the request, if one did.
    pub rule: Option<crate::policy::RuleIdx>,
}

/// Whether dialling `addr` would reach this proxy's own listener.
fn is_self(listen: &[SocketAddr], addr: SocketAddr) -> bool {
    listen.iter().any(|l| {
        l.port() == addr.port()
            && (l.ip() == addr.ip()
                || (l.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
    })
}

/// Decides a candidate, resolves it and checks every address: returns the
/// addresses that may be dialled, in order. The access event records the
/// decision that let the request through, or the one that stopped it.
pub async fn authorize(
    shared: &Shared,
    policy: &Policy,
    cand: &Candidate,
    access: &mut Access,
) -> Result<Authorized, ProxyError> {
    let started = Instant::now();
    let by_name = policy.decide(cand);
    shared
        .metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    record(access, policy, &by_name);
    let resolved_cidrs_may_admit = by_name.reason == Reason::NoMatch && policy.has_resolved_cidrs();
    if !by_name.verdict.proceeds() && !resolved_cidrs_may_admit {
        return Err(ProxyError::Denied {
            reason: by_name.reason,
            by_address: cand.host.as_name().is_none(),
        });
    }
    let mut targets = shared
        .config
        .resolver
        .resolve(&cand.host, cand.port, policy.pins())
        .await?;
    // Never through ourselves: a pin or a CIDR rule could point back here.
    targets.retain(|t| !is_self(&shared.config.listen, t.addr));
    if targets.is_empty() {
        return Err(ProxyError::Loop);
    }
    if cand.host.as_name().is_none() {
        // IP literals were judged by address already.
        return Ok(Authorized {
            targets,
            rule: by_name.rule,
        });
    }
    let mut ok = Vec::with_capacity(targets.len());
    let mut rule = by_name.rule;
    let mut refusal: Option<Decision> = None;
    for t in targets {
        let ctx = AddrContext {
            name_allowed: by_name.verdict == Verdict::Allow,
            pinned: t.pinned,
        };
        let d = policy.check_addr(t.addr.ip(), cand, ctx);
        if d.verdict.proceeds() {
            if ok.is_empty() && d.rule.is_some() && by_name.verdict != Verdict::Allow {
                // Admitted by a CIDR rule although the name was not.
                record(access, policy, &d);
                rule = d.rule;
            } else if ok.is_empty() && by_name.verdict == Verdict::Allow && d.verdict == Verdict::WouldDeny {
                record(access, policy, &d);
            }
            ok.push(t);
        } else if refusal.is_none() {
            refusal = Some(d);
        }
    }
    if ok.is_empty() {
        let d = refusal.unwrap_or(by_name);
        record(access, policy, &d);
        return Err(ProxyError::Denied {
            reason: d.reason,
            by_address: d.reason != Reason::NoMatch,
        });
    }
    Ok(Authorized { targets: ok, rule })
}

/// Dials the first address that answers, within the connect timeout each.
pub async fn dial(
    targets: &[Target],
    timeout: Duration,
    access: &mut Access,
) -> Result<(TcpStream, Target), ProxyError> {
    let mut last = ProxyError::ConnectOther("no address".into());
    for t in targets {
        access.addr = Some(t.addr);
        access.pinned = t.pinned;
        match tokio::time::timeout(timeout, TcpStream::connect(t.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, *t));
            }
            Ok(Err(e)) => last = ProxyError::from_connect(&e),
            Err(_) => last = ProxyError::ConnectTimeout,
        }
    }
    Err(last)
}
