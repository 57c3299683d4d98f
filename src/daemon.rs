//! The run lifecycle, in the shape of mini-redis's `server::run`: the
//! command line builds a [`RunConfig`] and binds the [`Listeners`]
//! ([`bind`]); [`run`] serves until `shutdown` resolves, with the admin
//! listener and reloads on this thread and requests on the workers, then
//! drains and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::AdminConfig;
use crate::policy::{Mode, Policy};
use crate::proxy::{self, ProxyConfig, Shared};

/// Everything `egressd run` was asked for, as plain values.
pub struct RunConfig {
    pub policy: Policy,
    /// The policy's file, reloaded on SIGHUP (none for the built-in one).
    pub policy_path: Option<PathBuf>,
    /// `--mode`, which also applies to reloaded policies.
    pub mode: Option<Mode>,
    pub proxy: ProxyConfig,
    /// The admin listener's address; `None` for `--admin off`.
    pub admin_addr: Option<SocketAddr>,
    /// The PAC file's proxy address; default: the first listener.
    pub pac_proxy: Option<String>,
    pub pac_default: crate::admin::PacDefault,
    pub drain: Duration,
    pub watch: bool,
    pub workers: usize,
}

/// The bound sockets: the proxy's, one set per worker, and the admin one.
pub struct Listeners {
    pub by_worker: Vec<Vec<std::net::TcpListener>>,
    /// The TLS listeners (`--listen-tls`), one set per worker.
    pub tls_by_worker: Vec<Vec<std::net::TcpListener>>,
    /// The transparent listeners (`--transparent`), one set per worker.
    pub transparent_by_worker: Vec<Vec<std::net::TcpListener>>,
    pub admin: Option<tokio::net::TcpListener>,
    /// The DNS listener's sockets (`--dns-listen`).
    pub dns: proxy::dns_listen::Sockets,
}

/// Binds every listener first, so that a port in use is reported before
/// anything starts.
pub async fn bind(config: &RunConfig) -> anyhow::Result<Listeners> {
    let by_worker = proxy::server::bind_workers(&config.proxy.listen, config.workers)?;
    let tls_by_worker = proxy::server::bind_workers(&config.proxy.listen_tls, config.workers)?;
    let transparent_by_worker =
        proxy::server::bind_workers_as(&config.proxy.transparent, config.workers, true)?;
    let dns = proxy::dns_listen::bind(&config.proxy.dns_listen.addrs)?;
    // A taken admin port is a start error, default or not: the README's
    // live view, PAC and metrics URLs would reach whatever holds it.
    let admin = crate::admin::bind(config.admin_addr).await?;
    Ok(Listeners {
        by_worker,
        tls_by_worker,
        transparent_by_worker,
        admin,
        dns,
    })
}

/// Serves until `shutdown` resolves, then stops accepting, turns not
/// ready, lets requests and tunnels finish for the drain period, and cuts
/// what is left.
pub async fn run(
    config: RunConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let fd_limit = raise_fd_limit();
    let addrs = bound(&listeners.by_worker);
    let tls_addrs = bound(&listeners.tls_by_worker);
    let transparent_addrs = bound(&listeners.transparent_by_worker);
    let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    let policy = config.policy;
    tracing::info!(
        listen = %addrs.join(","),
        listen_tls = %tls_addrs.join(","),
        transparent = %transparent_addrs.join(","),
        dns_listen = %listeners.dns.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
        mark = config.proxy.mark,
        admin = %admin_addr.map_or("off".to_string(), |a| a.to_string()),
        policy = policy.origin(),
        policy_version = policy.version(),
        mode = %policy.mode(),
        rules = policy.rules().len(),
        workers = config.workers,
        fd_limit,
        clients = %config.proxy.clients.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
        "egressd listening"
    );
    if let Some(n) = fd_limit.filter(|&n| n < config.proxy.max_connections as u64 + 64) {
        tracing::warn!(
            fd_limit = n,
            max_connections = config.proxy.max_connections,
            "the open-file limit is below --max-connections: accepts will fail before the limit is reached"
        );
    }
    warn_clear_text_credentials(&config.proxy);
    // Started now, so that what it cannot do is said once, at start (a
    // host with no DNS servers can still serve pinned names and addresses).
    if let Err(e) = config.proxy.resolver.start() {
        tracing::warn!(error = %e, "DNS: names without a pin will fail with dns_error");
    }
    let shared = Shared::new(policy, config.proxy);
    // A certificate that does not load stops the start, as a CA does.
    if let Some(fp) = shared.load_listener_tls().map_err(|e| anyhow::anyhow!(e))? {
        tracing::info!(cert_sha256 = %fp, listen_tls = %tls_addrs.join(","), "TLS listener ready");
    }
    // A CA that does not load stops the start: inspection was asked for.
    if let Some(fp) = shared
        .load_inspector()
        .map_err(|e| anyhow::anyhow!("--ca: {e}"))?
    {
        tracing::info!(ca_sha256 = %fp, inspect = ?shared.policy.load().inspect(), "TLS inspection enabled");
    }
    if let Some(p) = &shared.config.parent {
        tracing::info!(parent = %p.display, credentials = p.authorization().is_some(), "allowed traffic leaves through the parent proxy; it resolves names");
        for r in shared.policy.load().unresolvable_through_parent() {
            tracing::warn!(rule = %r.id, line = r.line, "resolved = true admits no name through a parent proxy (egressd does not resolve them): give the rule via = \"direct\"");
        }
    }
    if let Some(l) = listeners.admin {
        // Browsers reach a TLS listener with `HTTPS host:port`: named when
        // it is the only way in.
        let (pac_scheme, first) = match (addrs.first(), tls_addrs.first()) {
            (None, Some(tls)) => (crate::admin::PacScheme::Https, tls.clone()),
            (plain, _) => (crate::admin::PacScheme::Proxy, plain.cloned().unwrap_or_default()),
        };
        let admin = AdminConfig {
            pac_proxy: config.pac_proxy.unwrap_or(first),
            pac_scheme,
            pac_default: config.pac_default,
        };
        tokio::spawn(crate::admin::serve(shared.clone(), l, admin));
    }
    // Reload needs a file: the built-in policy never changes.
    let reloader = config
        .policy_path
        .map(|path| crate::reload::Reloader::new(shared.clone(), path, config.mode));
    crate::reload::on_sighup(shared.clone(), reloader.clone());
    let _watcher = match reloader.filter(|_| config.watch) {
        Some(reloader) => match crate::reload::watch(reloader) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the policy file; SIGHUP still reloads");
                None
            }
        },
        None => None,
    };
    tokio::spawn(turn_days(shared.clone()));
    // DNS questions are answered on this thread: most come from the cache.
    proxy::dns_listen::serve(shared.clone(), listeners.dns)?;
    let server = proxy::server::serve_workers(
        shared.clone(),
        listeners.by_worker,
        listeners.tls_by_worker,
        listeners.transparent_by_worker,
    )?;
    shared.ready.store(true, Ordering::Relaxed);

    shutdown.await;
    shared.ready.store(false, Ordering::Relaxed);
    tracing::info!(
        drain_secs = config.drain.as_secs_f64(),
        "shutting down: not ready, draining"
    );
    shared.shutdown.cancel();
    server.await;
    drain(&shared, config.drain).await;
    tracing::info!("stopped");
    Ok(())
}

/// The addresses one worker's listeners are bound to (all workers share them).
fn bound(by_worker: &[Vec<std::net::TcpListener>]) -> Vec<String> {
    by_worker
        .first()
        .into_iter()
        .flatten()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect()
}

/// Basic credentials cross the network in clear text on a plain listener
/// that other hosts can reach: say so once, at start.
fn warn_clear_text_credentials(config: &crate::proxy::ProxyConfig) {
    if config.auth.is_none() {
        return;
    }
    for a in config.listen.iter().filter(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            listen = %a,
            "--auth on a plain listener reachable from other hosts: Basic credentials travel in clear text; use --listen-tls"
        );
    }
}

/// At each midnight (UTC), moves rule expiry on a day, until the proxy is cut.
async fn turn_days(shared: Arc<Shared>) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let to_midnight = Duration::from_secs(86_400 - now.as_secs() % 86_400);
        tokio::select! {
            _ = shared.cut.cancelled() => return,
            _ = tokio::time::sleep(to_midnight) => {}
        }
        let day = crate::load::today();
        shared.set_today(day);
        tracing::info!(day = %day, "a new day: rules past their expiry no longer match");
    }
}

/// Waits for connections and tunnels to end, for at most `grace`, then
/// cuts the rest.
async fn drain(shared: &Shared, grace: Duration) {
    shared.tasks.close();
    if tokio::time::timeout(grace, shared.tasks.wait()).await.is_err() {
        tracing::warn!(
            connections_and_tunnels = shared.tasks.len(),
            tunnels = shared.metrics.tunnels_active.get(),
            "drain period over: cutting what is left"
        );
        shared.cut.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), shared.tasks.wait()).await;
    } else {
        tracing::info!("drained: nothing was cut");
    }
    shared.cut.cancel();
}

/// Starts a proxy in this process on already-bound listeners, on the
/// current runtime; for tests and embedding. Returns the shared state
/// (cancel `shutdown` to stop).
pub fn spawn_proxy(
    policy: Policy,
    config: ProxyConfig,
    listeners: Vec<tokio::net::TcpListener>,
) -> Arc<Shared> {
    let shared = Shared::new(policy, config);
    tokio::spawn(proxy::server::serve(shared.clone(), listeners));
    shared.ready.store(true, Ordering::Relaxed);
    shared
}

/// Raises the soft open-file limit to the hard one, as a server expecting
/// thousands of connections must (a tunnel holds two sockets, and a pipe
/// while a burst flows). Returns the limit in force.
fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let lim = getrlimit(Resource::Nofile);
        if lim.current.is_some() && lim.current != lim.maximum {
            let raised = Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                return lim.maximum.or(Some(u64::MAX));
            }
        }
        Some(lim.current.unwrap_or(u64::MAX))
    }
    #[cfg(not(unix))]
    None
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
