//! Command line: clap definitions and subcommand dispatch, nothing else.
//! Every option of `run` also reads an `EGRESSD_*` environment variable,
//! for containers. The run lifecycle is [`crate::daemon`]; the tools are
//! [`crate::tools`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ipnet::IpNet;

use crate::daemon::{self, RunConfig};
use crate::policy::{Mode, Pin, Policy};
use crate::proxy::resolve::{DnsMode, Resolver};
use crate::proxy::{self, ProxyConfig};
use crate::telemetry::{self, LogFormat};
use crate::tools::{self, OutputFormat};
use crate::units::duration;

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
    /// Decide targets (URLs or host:port) and say which rule decides. Exit 0 if all are allowed, 1 if any is denied, 2 if any is malformed (each still gets its own result line).
    Check(CheckArgs),
    /// What would the policy block? Replays HAR files or URL lists. Exit 1 if anything would be denied, 2 on bad input.
    Audit(AuditArgs),
    /// Summarise egressd access logs; compare with a candidate policy. Exit 1 if anything would be denied, 2 on bad input.
    Report(ReportArgs),
    /// Validate a policy and warn about rules that deserve a second look.
    Lint(LintArgs),
    /// Hash a password (read from stdin) for the --auth credentials file.
    HashPassword,
    /// Print the nftables (or iptables) rules that seal a host's or pod's outbound traffic behind egressd (every TCP port, DNS, UDP refused), and the rules that remove them.
    TransparentRules(crate::tools::transparent_rules::RulesOptions),
    /// The local certificate authority for TLS inspection.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create DIR/ca.pem and DIR/ca.key (ECDSA P-256; the key mode 0600).
    Init(CaInitArgs),
    /// Show the CA's subject, fingerprint and validity, and how to trust it.
    Show(CaDirArg),
}

#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// Directory for ca.pem and ca.key (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Days the CA is valid.
    #[arg(long, default_value_t = crate::ca::DEFAULT_CA_DAYS)]
    pub days: u32,
    /// Replace an existing CA.
    #[arg(long)]
    pub force: bool,
    /// Limit the CA to these domains (X.509 name constraints), so a stolen key cannot sign for others. Repeatable.
    #[arg(long, num_args = 1..)]
    pub permit: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CaDirArg {
    /// Directory holding ca.pem and ca.key.
    #[arg(long)]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy file. Default: the built-in policy.
    #[arg(long, env = "EGRESSD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Targets: https://host/path, http://host/path, host:port (CONNECT), optionally after a method (POST https://...). `-` reads stdin, one a line; blank lines and lines starting with # are skipped.
    pub targets: Vec<String>,
    /// Read targets from a file, one a line (blank lines and # comments skipped).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Show the normalised request and the near rules that did not match.
    #[arg(long)]
    pub explain: bool,
    /// Decide as a proxy running with a CA (run --ca; also when EGRESSD_CA is set): https URLs of hosts it inspects are decided with their path.
    #[arg(long)]
    pub inspect: bool,
    /// Resolve each allowed name (egressd's resolver: the system's DNS servers, or --dns-server) and judge its addresses as the proxy does before dialling: localhost, private and metadata answers are refused.
    #[arg(long)]
    pub resolve_names: bool,
    /// With --resolve-names: a DNS server to ask (IP or IP:PORT); repeatable.
    #[arg(long, value_parser = crate::dns::args::server, requires = "resolve_names")]
    pub dns_server: Vec<std::net::SocketAddr>,
    /// With --resolve-names: how long each lookup may take.
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub dns_timeout: Duration,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
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
    /// Chromium NetLog files (chrome://net-export, or chromium --log-net-log=FILE): every request the browser started.
    #[arg(long, visible_alias = "net-log")]
    pub netlog: Vec<PathBuf>,
    /// Decide every https URL with its path, as if every tunnel were inspected, instead of as the running proxy would.
    #[arg(long)]
    pub with_paths: bool,
    /// Decide as a proxy running with a CA (run --ca; also when EGRESSD_CA is set): https URLs of hosts it inspects are decided with their path.
    #[arg(long)]
    pub inspect: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::audit::render::Format,
    /// Exit 0 even when something would be denied (default: 1, as `check`).
    #[arg(long)]
    pub exit_zero: bool,
    /// Show URLs with their query strings (tokens, user ids); by default
    /// they stop at the path, so that the report can go into a ticket.
    #[arg(long)]
    pub keep_query: bool,
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
    /// Exit 0 even when something would be denied (default: 1, as `check`).
    #[arg(long)]
    pub exit_zero: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Policy file. Default: the built-in policy.
    pub policy: Option<PathBuf>,
    /// The policy file, as the other tools take it.
    #[arg(long = "policy", value_name = "POLICY", conflicts_with = "policy")]
    pub policy_flag: Option<PathBuf>,
    /// Exit non-zero on warnings too.
    #[arg(long)]
    pub strict: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Lint for a proxy that runs with this parent proxy (as `run --upstream-proxy`; the same environment variable).
    #[arg(long, env = "EGRESSD_UPSTREAM_PROXY")]
    pub upstream_proxy: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Policy file (TOML). Default: the built-in Qualtrics policy.
    #[arg(long, env = "EGRESSD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Address to listen on; repeat for several (IPv4 and IPv6).
    #[arg(long, env = "EGRESSD_LISTEN", value_delimiter = ',', default_value = proxy::DEFAULT_LISTEN)]
    pub listen: Vec<SocketAddr>,
    /// Address where clients speak TLS to the proxy (curl --proxy https://..., PAC `HTTPS host:port`); repeatable. With it and no --listen, there is no plain listener.
    #[arg(long, env = "EGRESSD_LISTEN_TLS", value_delimiter = ',', requires_all = ["tls_cert", "tls_key"])]
    pub listen_tls: Vec<SocketAddr>,
    /// A transparent listener for connections redirected by nftables/iptables (REDIRECT or TPROXY); repeatable. See `egressd transparent-rules`.
    #[arg(long, env = "EGRESSD_TRANSPARENT", value_delimiter = ',')]
    pub transparent: Vec<SocketAddr>,
    /// SO_MARK on every upstream socket (decimal or 0x hex), so that redirect rules can let egressd's own connections pass.
    #[arg(long, env = "EGRESSD_MARK", value_parser = crate::units::mark)]
    pub mark: Option<u32>,
    /// The TLS listener's certificate chain (PEM); SIGHUP rereads it.
    #[arg(long, env = "EGRESSD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS listener's private key (PEM); SIGHUP rereads it.
    #[arg(long, env = "EGRESSD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Override the policy's mode.
    #[arg(long, env = "EGRESSD_MODE")]
    pub mode: Option<Mode>,
    /// Pin a name to an address, like curl: HOST[:PORT]=IP[:PORT]. Repeatable.
    /// A pin chooses the address to dial; it never makes a name allowed.
    #[arg(long, env = "EGRESSD_RESOLVE", value_delimiter = ',')]
    pub resolve: Vec<Pin>,
    /// Where addresses come from: egressd's caching resolver (with the
    /// system's DNS servers unless --dns-server is given), or pins only.
    #[arg(long, env = "EGRESSD_DNS", value_enum, default_value = "system")]
    pub dns: DnsMode,
    /// Source networks that may use the proxy; repeatable. Default: loopback.
    #[arg(long = "allow-client", env = "EGRESSD_ALLOW_CLIENTS", value_delimiter = ',')]
    pub allow_client: Vec<IpNet>,
    /// Upstream connect timeout (e.g. 10s, 500ms).
    #[arg(long, env = "EGRESSD_CONNECT_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// DNS lookup timeout.
    #[arg(long, env = "EGRESSD_DNS_TIMEOUT", value_parser = duration, default_value = "5s")]
    pub dns_timeout: Duration,
    #[command(flatten)]
    pub dns_args: crate::dns::args::DnsArgs,
    /// Time a client has to send a request's headers.
    #[arg(long, env = "EGRESSD_HEADER_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub header_timeout: Duration,
    /// Close a tunnel after this long with no bytes either way.
    #[arg(long, env = "EGRESSD_TUNNEL_IDLE_TIMEOUT", value_parser = duration, default_value = "15m")]
    pub tunnel_idle_timeout: Duration,
    /// Move tunnel bursts with splice(2): auto = only when neither end is on loopback.
    #[arg(long, env = "EGRESSD_SPLICE", value_enum, default_value = "auto")]
    pub splice: crate::proxy::relay::SpliceMode,
    /// How long a forwarded request waits for the upstream's response head (then 504).
    #[arg(long, env = "EGRESSD_RESPONSE_TIMEOUT", value_parser = duration, default_value = "60s")]
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
    #[arg(long, env = "EGRESSD_DRAIN", value_parser = duration, default_value = "30s")]
    pub drain: Duration,
    /// Log format.
    #[arg(long, env = "EGRESSD_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    /// Where access events go: `-` (standard output, with the other logs) or a file (JSON), appended to and reopened on SIGHUP after rotation.
    #[arg(long, env = "EGRESSD_ACCESS_LOG", default_value = "-")]
    pub access_log: String,
    /// Admin listener (/ live view, /decisions, /healthz /readyz /metrics /policy /proxy.pac /ca.pem), or `off`.
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
    /// Inspect TLS where path rules need it, with the CA in this directory (egressd ca init); SIGHUP rereads it.
    #[arg(long, env = "EGRESSD_CA")]
    pub ca: Option<PathBuf>,
    /// Extra root certificates (PEM) for verifying origins inside inspected tunnels, beside the system roots. Repeatable.
    #[arg(long = "upstream-ca", env = "EGRESSD_UPSTREAM_CA", value_delimiter = ',')]
    pub upstream_ca: Vec<PathBuf>,
    /// A parent proxy for allowed traffic: http://[user:pass@]host:port, or https:// (verified with the system roots and --upstream-ca). Rules with via = "direct" bypass it.
    #[arg(long, env = "EGRESSD_UPSTREAM_PROXY")]
    pub upstream_proxy: Option<String>,
    /// The parent proxy's password, from the first line of this file (not on the command line, where `ps` shows it).
    #[arg(
        long,
        env = "EGRESSD_UPSTREAM_PROXY_PASSWORD_FILE",
        requires = "upstream_proxy"
    )]
    pub upstream_proxy_password_file: Option<PathBuf>,
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

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    dispatch(cli, &matches)
}

pub fn dispatch(cli: Cli, matches: &ArgMatches) -> ExitCode {
    match cli.command {
        Command::Run(args) => {
            let _guard =
                match telemetry::init(args.log_format, &crate::logsink::Dest::parse(&args.access_log)) {
                    Ok(g) => g,
                    Err(e) => {
                        eprintln!("egressd: cannot open the log: {e}");
                        return ExitCode::from(2);
                    }
                };
            let mut args = args;
            let listen_explicit = matches
                .subcommand_matches("run")
                .and_then(|m| m.value_source("listen"))
                .is_some_and(|s| s != ValueSource::DefaultValue);
            // TLS listeners alone: the default plain listener is not opened.
            if !listen_explicit && !args.listen_tls.is_empty() {
                args.listen.clear();
            }
            match run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("egressd: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::TestPolicy(a) => tools::test_policy::test_policy(tools::test_policy::TestPolicyOptions {
            policies: a.policies,
            cases: a.cases,
        }),
        Command::Check(a) => tools::check::check(tools::check::CheckOptions {
            policy: a.policy,
            targets: a.targets,
            file: a.file,
            explain: a.explain,
            json: a.format == OutputFormat::Json,
            inspect: inspection_assumed(a.inspect),
            resolve_names: a.resolve_names,
            dns_server: a.dns_server,
            dns_timeout: a.dns_timeout,
        }),
        Command::Audit(a) => tools::audit::audit(tools::audit::AuditOptions {
            policy: a.policy,
            har: a.har,
            urls: a.urls,
            netlog: a.netlog,
            with_paths: a.with_paths,
            inspect: inspection_assumed(a.inspect),
            format: a.format,
            exit_zero: a.exit_zero,
            keep_query: a.keep_query,
        }),
        Command::Report(a) => tools::report::report(tools::report::ReportOptions {
            policy: a.policy,
            logs: a.logs,
            har: a.har,
            candidate: a.candidate,
            format: a.format,
            exit_zero: a.exit_zero,
        }),
        Command::Lint(a) => tools::lint::lint(tools::lint::LintOptions {
            policy: a.policy.or(a.policy_flag),
            strict: a.strict,
            format: a.format,
            with_parent: a.upstream_proxy.is_some(),
        }),
        Command::HashPassword => hash_password(),
        Command::TransparentRules(a) => crate::tools::transparent_rules::print(&a),
        Command::Ca(c) => ca(c),
    }
}

fn ca(c: CaCommand) -> ExitCode {
    let shown = match &c {
        CaCommand::Init(a) => crate::ca::init(&crate::ca::InitOptions {
            dir: a.dir.clone(),
            days: a.days,
            force: a.force,
            permit: a.permit.clone(),
        })
        .map(|ca| (ca, a.dir.clone(), true)),
        CaCommand::Show(a) => crate::ca::load(&a.dir).map(|ca| (ca, a.dir.clone(), false)),
    };
    match shown {
        Ok((ca, dir, created)) => {
            if created {
                println!(
                    "created {} and {} (key mode 0600)\n",
                    dir.join(crate::ca::CERT_FILE).display(),
                    dir.join(crate::ca::KEY_FILE).display()
                );
            }
            print!("{}", ca.describe(&dir));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egressd: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether the tools decide as a proxy with a CA: `--inspect`, or the
/// `EGRESSD_CA` that `run` would read.
fn inspection_assumed(flag: bool) -> bool {
    flag || std::env::var_os("EGRESSD_CA").is_some()
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() || line.trim_end_matches(['\r', '\n']).is_empty() {
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

/// `egressd run`: the arguments as a [`RunConfig`], then the lifecycle.
fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut policy = Policy::load(args.policy.as_deref())?;
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
    let mut dns = args.dns_args.config(args.dns_timeout);
    dns.mark = args.mark;
    config.dns_listen = args
        .dns_args
        .listener(&dns.servers)
        .map_err(|e| anyhow::anyhow!(e))?;
    config.resolver = Resolver::with_config(args.resolve.clone(), args.dns, dns);
    config.ca_dir = args.ca.clone();
    config.upstream_ca = args.upstream_ca.clone();
    config.listen_tls = args.listen_tls.clone();
    config.transparent = args.transparent.clone();
    config.mark = args.mark;
    if let Some(mark) = args.mark {
        crate::proxy::dial::check_mark(mark).map_err(|e| anyhow::anyhow!(e))?;
    }
    config.tls_cert = args.tls_cert.clone();
    config.tls_key = args.tls_key.clone();
    if let Some(url) = &args.upstream_proxy {
        let upstream_ca = args.upstream_ca.clone();
        let parent =
            crate::proxy::parent::Parent::parse(url, args.upstream_proxy_password_file.as_deref(), || {
                crate::proxy::certs::upstream_client_config(&upstream_ca)
            })
            .map_err(|e| anyhow::anyhow!(e))?;
        config.parent = Some(Arc::new(parent));
    }
    if let Some(path) = &args.auth {
        let a = crate::proxy::auth::Authenticator::load(path).map_err(|e| anyhow::anyhow!(e))?;
        config.auth = Some(Arc::new(a));
    }
    let workers = args
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let run_config = RunConfig {
        policy,
        policy_path: args.policy,
        mode: args.mode,
        proxy: config,
        admin_addr: args.admin.0,
        pac_proxy: args.pac_proxy,
        pac_default: args.pac_default,
        drain: args.drain,
        watch: !args.no_watch,
        workers,
    };
    // The main thread only waits for signals and runs the admin listener
    // and reloads; requests are served on the worker threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let listeners = daemon::bind(&run_config).await?;
        daemon::run(run_config, listeners, daemon::shutdown_signal()).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The README's list of `run`'s environment variables names them all:
    /// a hand-kept list drifted by eleven.
    #[test]
    fn every_run_environment_variable_is_listed_in_the_readme() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("Every `run` option has an environment variable")
            .unwrap();
        let list = &readme[start..start + readme[start..].find("\n\n").unwrap()];
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        let missing: Vec<String> = run
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .filter(|e| !list.contains(&format!("`{e}`")))
            .collect();
        assert!(missing.is_empty(), "README's list lacks {missing:?}");
    }
}
