//! Command line: clap definitions and subcommand dispatch. Every option of
//! `run` also reads an `EGRESSD_*` environment variable, for containers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::policy::cases::run_cases;
use crate::policy::{Mode, Pin, Policy};
use crate::proxy::resolve::{DnsMode, Resolver};
use crate::proxy::{self, ProxyConfig, Shared};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "egressd",
    version,
    about = "An HTTP egress proxy that enforces destination allowlists"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup: the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (default policy: the built-in Qualtrics list, on 127.0.0.1:3128).
    Run(RunArgs),
    /// Check a policy and run its expected cases (POLICY.tests.toml beside it).
    TestPolicy(TestPolicyArgs),
    /// Decide targets (URLs or host:port) and say which rule decides. Exit 0 if all are allowed, 1 if any is denied, 2 on bad input.
    Check(CheckArgs),
    /// What would the policy block? Replays HAR files or URL lists.
    Audit(AuditArgs),
    /// Summarise egressd access logs; compare with a candidate policy.
    Report(ReportArgs),
    /// Validate a policy and warn about rules that deserve a second look.
    Lint(LintArgs),
    /// Hash a password (read from stdin) for the --auth credentials file.
    HashPassword,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy file. Default: the built-in policy.
    #[arg(long, env = "EGRESSD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Targets: https://host/path, http://host/path, host:port (CONNECT). `-` reads stdin, one a line.
    pub targets: Vec<String>,
    /// Read targets from a file, one a line (# comments allowed).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Show the normalised request and the near rules that did not match.
    #[arg(long)]
    pub explain: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Policy file. Default: the built-in policy.
    #[arg(long, env = "EGRESSD_POLICY")]
    pub policy: Option<PathBuf>,
    /// HAR files exported from a browser's developer tools.
    #[arg(long)]
    pub har: Vec<PathBuf>,
    /// Plain URL lists, one a line.
    #[arg(long)]
    pub urls: Vec<PathBuf>,
    /// Decide https URLs with their path (as with TLS inspection) instead of as the CONNECT a browser sends.
    #[arg(long)]
    pub with_paths: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::audit::render::Format,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Policy the logs are judged by. Default: the built-in policy.
    #[arg(long, env = "EGRESSD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Access-log files (plain or .gz); `-` or nothing reads stdin.
    pub logs: Vec<String>,
    /// Also replay HAR files.
    #[arg(long)]
    pub har: Vec<PathBuf>,
    /// A second policy: print what it would newly deny or newly allow.
    #[arg(long)]
    pub candidate: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::audit::render::Format,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Policy file. Default: the built-in policy.
    pub policy: Option<PathBuf>,
    /// Exit non-zero on warnings too.
    #[arg(long)]
    pub strict: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Policy file (TOML). Default: the built-in Qualtrics policy.
    #[arg(long, env = "EGRESSD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Address to listen on; repeat for several (IPv4 and IPv6).
    #[arg(long, env = "EGRESSD_LISTEN", value_delimiter = ',', default_value = proxy::DEFAULT_LISTEN)]
    pub listen: Vec<SocketAddr>,
    /// Override the policy's mode.
    #[arg(long, env = "EGRESSD_MODE")]
    pub mode: Option<Mode>,
    /// Pin a name to an address, like curl: HOST[:PORT]=IP[:PORT]. Repeatable.
    /// A pin chooses the address to dial; it never makes a name allowed.
    #[arg(long, env = "EGRESSD_RESOLVE", value_delimiter = ',')]
    pub resolve: Vec<Pin>,
    /// Where addresses come from: the system resolver, or pins only.
    #[arg(long, env = "EGRESSD_DNS", value_enum, default_value = "system")]
    pub dns: DnsMode,
    /// Source networks that may use the proxy; repeatable. Default: loopback.
    #[arg(long = "allow-client", env = "EGRESSD_ALLOW_CLIENTS", value_delimiter = ',')]
    pub allow_client: Vec<IpNet>,
    /// Upstream connect timeout (e.g. 10s, 500ms).
    #[arg(long, env = "EGRESSD_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// DNS lookup timeout.
    #[arg(long, env = "EGRESSD_DNS_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub dns_timeout: Duration,
    /// Time a client has to send a request's headers.
    #[arg(long, env = "EGRESSD_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub header_timeout: Duration,
    /// Close a tunnel after this long with no bytes either way.
    #[arg(long, env = "EGRESSD_TUNNEL_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "15m")]
    pub tunnel_idle_timeout: Duration,
    /// Move tunnel bursts with splice(2): auto = only when neither end is on loopback.
    #[arg(long, env = "EGRESSD_SPLICE", value_enum, default_value = "auto")]
    pub splice: crate::proxy::relay::SpliceMode,
    /// How long a forwarded request waits for the upstream's response head (then 504).
    #[arg(long, env = "EGRESSD_RESPONSE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub response_timeout: Duration,
    /// Maximum request header section, in bytes (larger gets 431).
    #[arg(long, env = "EGRESSD_MAX_HEADER_BYTES", default_value_t = proxy::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Maximum open tunnels per client address; more get 429.
    #[arg(long, env = "EGRESSD_MAX_TUNNELS_PER_CLIENT", default_value_t = proxy::DEFAULT_MAX_TUNNELS_PER_CLIENT)]
    pub max_tunnels_per_client: usize,
    /// Maximum concurrent client connections; more get 503.
    #[arg(long, env = "EGRESSD_MAX_CONNECTIONS", default_value_t = proxy::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, how long requests and tunnels may finish.
    #[arg(long, env = "EGRESSD_DRAIN", value_parser = parse_duration, default_value = "30s")]
    pub drain: Duration,
    /// Log format.
    #[arg(long, env = "EGRESSD_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    /// Admin listener (/healthz /readyz /metrics /policy /proxy.pac), or `off`.
    #[arg(long, env = "EGRESSD_ADMIN", default_value = "127.0.0.1:9090", value_parser = parse_admin)]
    pub admin: AdminAddr,
    /// The proxy address browsers should use, written into /proxy.pac. Default: the first --listen address.
    #[arg(long, env = "EGRESSD_PAC_PROXY")]
    pub pac_proxy: Option<String>,
    /// Where /proxy.pac sends destinations the policy does not allow.
    #[arg(long, env = "EGRESSD_PAC_DEFAULT", value_enum, default_value = "proxy")]
    pub pac_default: crate::admin::PacDefault,
    /// Require proxy authentication; users, password hashes and their policies come from this TOML file.
    #[arg(long, env = "EGRESSD_AUTH")]
    pub auth: Option<PathBuf>,
    /// Worker threads, each with its own runtime and listening socket. Default: one per core.
    #[arg(long, env = "EGRESSD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Do not watch the policy file for changes (SIGHUP still reloads).
    #[arg(long, env = "EGRESSD_NO_WATCH")]
    pub no_watch: bool,
}

/// `--admin ADDR` or `--admin off`.
#[derive(Debug, Clone, Copy)]
pub struct AdminAddr(pub Option<SocketAddr>);

fn parse_admin(s: &str) -> Result<AdminAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminAddr(None));
    }
    s.parse()
        .map(|a| AdminAddr(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (or `off`)"))
}

#[derive(Debug, Args)]
pub struct TestPolicyArgs {
    /// Policy files; each runs the cases in NAME.tests.toml beside it. Default: the built-in policy.
    pub policies: Vec<PathBuf>,
    /// Case file to use instead of the one beside the policy.
    #[arg(long)]
    pub cases: Option<PathBuf>,
}

/// Parses `10s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}

/// Reads and compiles a policy file, or the built-in one.
pub fn load_policy(path: Option<&std::path::Path>) -> anyhow::Result<Policy> {
    match path {
        None => Policy::from_toml(crate::DEFAULT_POLICY, crate::DEFAULT_POLICY_ORIGIN)
            .map_err(|e| anyhow::anyhow!("built-in policy: {e}")),
        Some(p) => {
            let src =
                std::fs::read_to_string(p).with_context(|| format!("cannot read policy {}", p.display()))?;
            Policy::from_toml(&src, &p.display().to_string()).map_err(|e| anyhow::anyhow!("{e}"))
        }
    }
}

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => {
            let _guard = telemetry::init(args.log_format);
            match run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("egressd: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::TestPolicy(args) => test_policy(args),
        Command::Check(args) => crate::tools::check(args),
        Command::Audit(args) => crate::tools::audit(args),
        Command::Report(args) => crate::tools::report(args),
        Command::Lint(args) => crate::tools::lint(args),
        Command::HashPassword => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err()
                || line.trim_end_matches(['\r', '\n']).is_empty()
            {
                eprintln!("egressd: give the password on stdin");
                return ExitCode::from(2);
            }
            match crate::proxy::auth::hash_password(line.trim_end_matches(['\r', '\n'])) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("egressd: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut policy = load_policy(args.policy.as_deref())?;
    if let Some(m) = args.mode {
        policy = policy.with_mode(m);
    }
    let mut config = ProxyConfig::new(args.listen.clone());
    config.connect_timeout = args.connect_timeout;
    config.header_timeout = args.header_timeout;
    config.max_connections = args.max_connections.max(1);
    config.tunnel_idle = args.tunnel_idle_timeout;
    config.splice = args.splice;
    config.response_timeout = args.response_timeout;
    config.max_header_bytes = args.max_header_bytes;
    config.max_tunnels_per_client = args.max_tunnels_per_client.max(1);
    if !args.allow_client.is_empty() {
        config.clients = args.allow_client.clone();
    }
    config.resolver = Resolver::new(args.resolve.clone(), args.dns, args.dns_timeout);
    if let Some(path) = &args.auth {
        let a = crate::proxy::auth::Authenticator::load(path).map_err(|e| anyhow::anyhow!(e))?;
        config.auth = Some(Arc::new(a));
    }

    let workers = args
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let fd_limit = raise_fd_limit();
    // Binding first: a port in use is reported before anything starts.
    let by_worker = proxy::server::bind_workers(&config.listen, workers)?;
    // The main thread only waits for signals and runs the admin listener
    // and reloads; requests are served on the worker threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        // The admin port is optional on a developer's machine: when it was
        // not asked for explicitly and is taken, say so and run without it.
        let explicit_admin = std::env::var_os("EGRESSD_ADMIN").is_some()
            || std::env::args().any(|a| a == "--admin" || a.starts_with("--admin="));
        let admin_listener = match crate::admin::bind(args.admin.0).await {
            Ok(l) => l,
            Err(e) if !explicit_admin => {
                tracing::warn!(error = %e, "admin listener unavailable; running without it (set --admin)");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let addrs: Vec<String> = by_worker[0]
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        tracing::info!(
            listen = %addrs.join(","),
            admin = %admin_addr.map_or("off".to_string(), |a| a.to_string()),
            policy = policy.origin(),
            policy_version = policy.version(),
            mode = %policy.mode(),
            rules = policy.rules().len(),
            workers,
            fd_limit,
            clients = %config.clients.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
            "egressd listening"
        );
        if let Some(n) = fd_limit.filter(|&n| n < config.max_connections as u64 + 64) {
            tracing::warn!(
                fd_limit = n,
                max_connections = config.max_connections,
                "the open-file limit is below --max-connections: accepts will fail before the limit is reached"
            );
        }
        let shared = Shared::new(policy, config);
        if let Some(l) = admin_listener {
            let admin = crate::admin::AdminConfig {
                pac_proxy: args
                    .pac_proxy
                    .clone()
                    .unwrap_or_else(|| addrs.first().cloned().unwrap_or_default()),
                pac_default: args.pac_default,
            };
            tokio::spawn(crate::admin::serve(shared.clone(), l, admin));
        }
        // Reload needs a file: the built-in policy never changes.
        let reloader = args
            .policy
            .as_ref()
            .map(|path| crate::reload::Reloader::new(shared.clone(), path.clone(), args.mode));
        crate::reload::on_sighup(shared.clone(), reloader.clone());
        let _watcher = match reloader {
            Some(reloader) => {
                if args.no_watch {
                    None
                } else {
                    match crate::reload::watch(reloader) {
                        Ok(w) => Some(w),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot watch the policy file; SIGHUP still reloads");
                            None
                        }
                    }
                }
            }
            None => None,
        };
        let server = proxy::server::serve_workers(shared.clone(), by_worker)?;
        shared.ready.store(true, std::sync::atomic::Ordering::Relaxed);

        wait_for_signal().await;
        shared.ready.store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            drain_secs = args.drain.as_secs_f64(),
            "shutting down: not ready, draining"
        );
        shared.shutdown.cancel();
        let _ = server.await;
        shared.tasks.close();
        if tokio::time::timeout(args.drain, shared.tasks.wait())
            .await
            .is_err()
        {
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
        tracing::info!("stopped");
        Ok::<(), anyhow::Error>(())
    })
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

async fn wait_for_signal() {
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

fn test_policy(args: TestPolicyArgs) -> ExitCode {
    let targets: Vec<Option<PathBuf>> = if args.policies.is_empty() {
        vec![None]
    } else {
        args.policies.into_iter().map(Some).collect()
    };
    let mut failed = false;
    for path in targets {
        let policy = match load_policy(path.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let (cases_src, cases_origin) = match (&args.cases, &path) {
            (Some(c), _) => (std::fs::read_to_string(c), c.display().to_string()),
            (None, Some(p)) => {
                let c = p.with_extension("tests.toml");
                (std::fs::read_to_string(&c), c.display().to_string())
            }
            (None, None) => (
                Ok(include_str!("../policy/qualtrics.tests.toml").to_string()),
                "builtin:qualtrics.tests.toml".to_string(),
            ),
        };
        let cases_src = match cases_src {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "{}: policy is valid ({} rules), but no cases: {cases_origin}: {e}",
                    policy.origin(),
                    policy.rules().len()
                );
                return ExitCode::from(2);
            }
        };
        match run_cases(&policy, &cases_src, &cases_origin) {
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            Ok(report) => {
                for f in &report.failures {
                    println!(
                        "FAIL {cases_origin}:{}: {}: expected {}, got {}",
                        f.line, f.target, f.expected, f.got
                    );
                }
                println!(
                    "{}: {} ({}): {} passed, {} failed",
                    policy.origin(),
                    policy.version(),
                    cases_origin,
                    report.passed,
                    report.failures.len()
                );
                failed |= !report.failures.is_empty();
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts a proxy in this process on already-bound listeners; for tests and
/// embedding. Returns the shared state (cancel `shutdown` to stop).
pub fn spawn_proxy(
    policy: Policy,
    config: ProxyConfig,
    listeners: Vec<tokio::net::TcpListener>,
) -> Arc<Shared> {
    let shared = Shared::new(policy, config);
    tokio::spawn(proxy::server::serve(shared.clone(), listeners));
    shared.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
