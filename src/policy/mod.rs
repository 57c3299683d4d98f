//! The policy: a pure library (no I/O) that compiles an allowlist and answers
//! one question: may this request go to this destination?
//!
//! ```
//! use egressd::policy::{Candidate, Kind, Policy, Verdict};
//!
//! let policy = Policy::from_toml(r#"
//!     allow = ["*.qualtrics.com/*", "www.google.com/recaptcha"]
//! "#, "example.toml").unwrap();
//!
//! let ok = Candidate::new(Kind::Http, "WWW.Google.com.", 80, Some("/recaptcha/api.js")).unwrap();
//! assert_eq!(policy.decide(&ok).verdict, Verdict::Allow);
//!
//! let escape = Candidate::new(Kind::Http, "www.google.com", 80, Some("/recaptcha/../search")).unwrap();
//! assert_eq!(policy.decide(&escape).verdict, Verdict::Deny);
//! ```
//!
//! Semantics, in order:
//! 1. A matching `deny` rule wins over any allow rule. Deny rules without
//!    ports apply to every port.
//! 2. Otherwise the most specific matching `allow` rule decides (exact host
//!    before wildcard, deeper zone before shallower, longer path before
//!    shorter, then file order).
//! 3. Otherwise the request is denied, with the nearest reason (a path rule
//!    that cannot be seen inside CONNECT, a path outside the allowed ones, a
//!    port not allowed, or no rule for the host).
//! 4. IP literals are judged only by CIDR rules; special-purpose addresses
//!    (loopback, private, link-local, metadata, ...) are refused unless a
//!    CIDR rule allows them.
//! 5. In `report` mode a denial becomes `would-deny` (the request goes on),
//!    except the special-purpose address guard, which report mode never
//!    relaxes.

pub mod cases;
pub mod file;
pub mod net;
pub mod normalize;
pub mod pattern;
pub mod target;
pub mod tls;
mod trie;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use globset::GlobMatcher;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

pub use net::{special_range, SpecialRange};
pub use normalize::{normalize_host, normalize_path, Host, HostError, NormPath};
pub use pattern::{Destination, HostPattern, PathPattern, PatternError};

use file::{LineIndex, PolicyFile, RuleEntry, RuleTable};
use net::CidrTable;
use trie::HostTrie;

/// Index of a rule in its [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleIdx(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

/// Policy-wide mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Block what no rule allows.
    Enforce,
    /// Let it through, but decide and log it as `would-deny`.
    Report,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "report" => Ok(Mode::Report),
            _ => Err(format!("unknown mode {s:?} (enforce or report)")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        })
    }
}

/// What a CONNECT gets when the rules for its host all carry paths, which a
/// TLS tunnel hides from the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnConnect {
    /// Allow the host and flag the decision `path_not_enforced`.
    AllowHost,
    /// Deny the tunnel.
    Deny,
}

impl OnConnect {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(OnConnect::AllowHost),
            "deny" => Ok(OnConnect::Deny),
            _ => Err(format!("unknown value {s:?} (allow or deny)")),
        }
    }
}

/// What to do when a tunnel's TLS server name differs from its CONNECT target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SniMode {
    /// Close the tunnel (and log it).
    Enforce,
    /// Log it, let the tunnel run.
    Log,
    /// Do not look.
    Off,
}

impl SniMode {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(SniMode::Enforce),
            "log" => Ok(SniMode::Log),
            "off" => Ok(SniMode::Off),
            _ => Err(format!("unknown value {s:?} (enforce, log or off)")),
        }
    }
}

/// The kind of request being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A `CONNECT host:port` tunnel: no path is visible.
    Connect,
    /// A plain-text `http://` request.
    Http,
    /// An `https://` request whose path is known (e.g. from a HAR file).
    Https,
}

impl Kind {
    pub fn default_port(self) -> u16 {
        match self {
            Kind::Http => 80,
            Kind::Https | Kind::Connect => 443,
        }
    }
}

/// Ports a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// The request kind's default port (80 for http, 443 for https and
    /// CONNECT); for deny rules, every port.
    Default,
    List(Box<[u16]>),
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::Default => f.write_str("default"),
            Ports::List(l) => {
                let v: Vec<String> = l.iter().map(u16::to_string).collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

/// What a rule matches.
#[derive(Debug, Clone)]
pub enum RuleTarget {
    Host(Destination),
    Cidr { net: IpNet, resolved: bool },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id: the rule's name, or `file:line`.
    pub id: Arc<str>,
    pub action: Action,
    pub target: RuleTarget,
    pub ports: Ports,
    pub on_connect: OnConnect,
    /// Tunnels allowed by this rule must start with a TLS ClientHello.
    pub tls_only: bool,
    pub comment: Option<String>,
    pub line: usize,
    /// The pattern as written.
    pub pattern: String,
    glob: Option<Box<GlobMatcher>>,
}

impl Rule {
    fn port_ok(&self, kind: Kind, port: u16) -> bool {
        match &self.ports {
            Ports::Default => self.action == Action::Deny || port == kind.default_port(),
            Ports::List(l) => l.contains(&port),
        }
    }

    pub fn path(&self) -> &PathPattern {
        match &self.target {
            RuleTarget::Host(d) => &d.path,
            RuleTarget::Cidr { .. } => &PathPattern::Any,
        }
    }

    fn path_spec(&self) -> u16 {
        match self.path() {
            PathPattern::Any => 0,
            PathPattern::Glob(g) => 2 * g.matches('/').count() as u16,
            PathPattern::Prefix(s) => 2 * s.len() as u16 + 1,
        }
    }

    /// Whether a known (non-CONNECT) path satisfies this rule's path.
    fn path_matches(&self, p: &NormPath) -> bool {
        let one = |path: &str| match self.path() {
            PathPattern::Any => true,
            PathPattern::Prefix(segs) => PathPattern::prefix_matches(segs, path),
            PathPattern::Glob(_) => self.glob.as_ref().is_some_and(|g| g.is_match(path)),
        };
        match self.action {
            _ if self.path().is_any() => true,
            Action::Allow => !p.ambiguous && one(&p.path),
            Action::Deny => p.ambiguous || one(&p.path) || p.stripped.as_deref().is_some_and(one),
        }
    }
}

/// A request, normalised once, as every matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub kind: Kind,
    pub host: Host,
    pub port: u16,
    /// `None` for CONNECT.
    pub path: Option<NormPath>,
}

impl Candidate {
    /// Normalises a raw host and path (see [`normalize`]).
    pub fn new(kind: Kind, host: &str, port: u16, path: Option<&str>) -> Result<Self, HostError> {
        Ok(Candidate {
            kind,
            host: normalize_host(host)?,
            port,
            path: match kind {
                Kind::Connect => None,
                _ => Some(normalize_path(path.unwrap_or("/"))),
            },
        })
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
    /// Report mode: denied by the policy, let through and logged.
    WouldDeny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would-deny",
        }
    }

    /// Whether the request goes on.
    pub fn proceeds(self) -> bool {
        !matches!(self, Verdict::Deny)
    }
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An allow rule matched.
    Allowed,
    /// A deny rule matched.
    DenyRule,
    /// The only rules for the host carry paths, which CONNECT cannot see.
    PathRuleOnConnect,
    /// The host is allowed for other paths only.
    PathNotAllowed,
    /// The host is allowed on other ports only.
    PortNotAllowed,
    /// No rule names the destination.
    NoMatch,
    /// The address is special-purpose and no CIDR rule allows it.
    SpecialAddress(SpecialRange),
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::DenyRule => "deny_rule",
            Reason::PathRuleOnConnect => "path_rule_on_connect",
            Reason::PathNotAllowed => "path_not_allowed",
            Reason::PortNotAllowed => "port_not_allowed",
            Reason::NoMatch => "no_matching_rule",
            Reason::SpecialAddress(_) => "special_address",
        }
    }

    /// A sentence for people (403 bodies, `check`).
    pub fn describe(self) -> String {
        match self {
            Reason::Allowed => "allowed by rule".into(),
            Reason::DenyRule => "denied by rule".into(),
            Reason::PathRuleOnConnect => {
                "only path rules allow this host, and a CONNECT tunnel hides the path".into()
            }
            Reason::PathNotAllowed => "this path is not allowed for the host".into(),
            Reason::PortNotAllowed => "this port is not allowed for the host".into(),
            Reason::NoMatch => "no rule allows this destination".into(),
            Reason::SpecialAddress(r) => {
                format!("{} address refused (allow it with a cidr rule)", r.as_str())
            }
        }
    }
}

/// Decision flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// A path rule took part but the path was not visible (CONNECT).
    pub const PATH_NOT_ENFORCED: Flags = Flags(1);
    /// Decided in report mode.
    pub const REPORT: Flags = Flags(2);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Flag names, for logs.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.contains(Flags::PATH_NOT_ENFORCED) {
            v.push("path_not_enforced");
        }
        if self.contains(Flags::REPORT) {
            v.push("report_mode");
        }
        v
    }
}

/// The answer to "may this request go there?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    pub verdict: Verdict,
    /// The rule that decided, if one did.
    pub rule: Option<RuleIdx>,
    pub reason: Reason,
    pub flags: Flags,
}

/// A static resolve entry: `host[:port] = ip[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub host: String,
    /// Applies to this port only, when given.
    pub port: Option<u16>,
    pub addr: IpAddr,
    /// Dial this port instead of the requested one, when given.
    pub to_port: Option<u16>,
}

impl std::str::FromStr for Pin {
    type Err = String;
    /// Parses `host[:port]=ip[:port]` (curl's `--resolve` / `--connect-to`).
    fn from_str(s: &str) -> Result<Self, String> {
        let (lhs, rhs) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected host[:port]=ip[:port]"))?;
        Pin::parse(lhs, rhs)
    }
}

impl Pin {
    pub fn parse(lhs: &str, rhs: &str) -> Result<Pin, String> {
        let port = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("invalid port {p:?}"))
        };
        let (host, hport) = match lhs.rsplit_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (lhs, None),
        };
        let host = match normalize_host(host).map_err(|e| format!("{host:?}: {e}"))? {
            Host::Name(n) => n,
            Host::Ip(_) => return Err(format!("{host:?}: pins map names, not addresses")),
        };
        let (addr, to_port) = if let Ok(ip) = rhs.parse::<IpAddr>() {
            (ip, None)
        } else if let Ok(sa) = rhs.parse::<std::net::SocketAddr>() {
            (sa.ip(), Some(sa.port()).filter(|&p| p != 0))
        } else {
            return Err(format!("{rhs:?}: expected ip or ip:port"));
        };
        Ok(Pin {
            host,
            port: hport,
            addr: normalize::canonical_ip(addr),
            to_port,
        })
    }
}

/// One error in a policy file: where, which rule, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub origin: String,
    pub line: usize,
    pub rule: Option<String>,
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.origin, self.line)?;
        if let Some(r) = &self.rule {
            write!(f, "rule {r:?}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Every error found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// A compiled policy. Cheap to share behind an `Arc`; never mutated.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    hosts: HostTrie,
    cidrs: CidrTable,
    has_resolved_cidrs: bool,
    mode: Mode,
    on_connect: OnConnect,
    sni: SniMode,
    pins: Vec<Pin>,
    version: std::sync::Arc<str>,
    origin: String,
    source: Arc<str>,
}

/// Keeps the best candidates while rules are considered one by one. Used by
/// the compiled lookup and by the reference scan alike.
#[derive(Default)]
pub struct Matcher {
    best_deny: Option<(u16, u16, std::cmp::Reverse<RuleIdx>)>,
    best_allow: Option<(bool, u16, u16, std::cmp::Reverse<RuleIdx>)>,
    host_allowed: bool,
    host_allowed_with_path: bool,
    path_on_connect: bool,
    unenforced_deny: bool,
}

impl Matcher {
    /// Notes that the host matched a table with these properties (the
    /// compiled path, for rules its path trie skipped).
    fn note_table(&mut self, has_allow: bool, has_allow_path: bool, kind: Kind) {
        self.host_allowed |= has_allow;
        self.host_allowed_with_path |= has_allow_path && kind != Kind::Connect;
    }

    /// Considers one rule whose host pattern matches the candidate.
    pub fn consider(
        &mut self,
        rule: &Rule,
        idx: RuleIdx,
        host_spec: u16,
        kind: Kind,
        port: u16,
        path: Option<&NormPath>,
    ) {
        let allow = rule.action == Action::Allow;
        let has_path = !rule.path().is_any();
        if allow {
            self.host_allowed = true;
            self.host_allowed_with_path |= has_path && kind != Kind::Connect;
        }
        if !rule.port_ok(kind, port) {
            return;
        }
        let flagged = match path {
            None if has_path => {
                if !allow {
                    self.unenforced_deny = true;
                    return;
                }
                if rule.on_connect == OnConnect::Deny {
                    self.path_on_connect = true;
                    return;
                }
                true
            }
            None => false,
            Some(p) => {
                if !rule.path_matches(p) {
                    return;
                }
                false
            }
        };
        let rev = std::cmp::Reverse(idx);
        if allow {
            let key = (!flagged, host_spec, rule.path_spec(), rev);
            if self.best_allow.is_none_or(|b| key > b) {
                self.best_allow = Some(key);
            }
        } else {
            let key = (host_spec, rule.path_spec(), rev);
            if self.best_deny.is_none_or(|b| key > b) {
                self.best_deny = Some(key);
            }
        }
    }

    /// The decision these considerations lead to (before the mode applies).
    pub fn finish(self) -> Decision {
        let mut flags = Flags::default();
        if let Some((_, _, std::cmp::Reverse(r))) = self.best_deny {
            return Decision {
                verdict: Verdict::Deny,
                rule: Some(r),
                reason: Reason::DenyRule,
                flags,
            };
        }
        if let Some((unflagged, _, _, std::cmp::Reverse(r))) = self.best_allow {
            if !unflagged || self.unenforced_deny {
                flags.insert(Flags::PATH_NOT_ENFORCED);
            }
            return Decision {
                verdict: Verdict::Allow,
                rule: Some(r),
                reason: Reason::Allowed,
                flags,
            };
        }
        let reason = if self.path_on_connect {
            Reason::PathRuleOnConnect
        } else if self.host_allowed_with_path {
            Reason::PathNotAllowed
        } else if self.host_allowed {
            Reason::PortNotAllowed
        } else {
            Reason::NoMatch
        };
        Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason,
            flags,
        }
    }
}

/// How a resolved address is being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrContext {
    /// The name was allowed by a host rule.
    pub name_allowed: bool,
    /// The address comes from an operator's pin, not from DNS.
    pub pinned: bool,
}

impl Policy {
    /// Parses and compiles a policy; `origin` names the file in errors and
    /// rule ids.
    pub fn from_toml(src: &str, origin: &str) -> Result<Policy, PolicyErrors> {
        let err = |line: usize, rule: Option<String>, reason: String| PolicyError {
            origin: origin.to_string(),
            line,
            rule,
            reason,
        };
        let lines = LineIndex::new(src);
        let file: PolicyFile = toml::from_str(src).map_err(|e| {
            let line = e.span().map_or(1, |s| lines.line(s.start));
            PolicyErrors(vec![err(line, None, e.message().to_string())])
        })?;
        let short_origin = std::path::Path::new(origin)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(origin)
            .to_string();

        let mut errors = Vec::new();
        let mode = match &file.mode {
            None => Mode::Enforce,
            Some(m) => m.get_ref().parse().unwrap_or_else(|e| {
                errors.push(err(lines.line(m.span().start), None, format!("mode: {e}")));
                Mode::Enforce
            }),
        };
        let sni = match &file.tunnel_sni {
            None => SniMode::Enforce,
            Some(m) => SniMode::parse(m.get_ref()).unwrap_or_else(|e| {
                errors.push(err(lines.line(m.span().start), None, format!("tunnel_sni: {e}")));
                SniMode::Enforce
            }),
        };
        let on_connect = match &file.path_rules_on_connect {
            None => OnConnect::Deny,
            Some(m) => OnConnect::parse(m.get_ref()).unwrap_or_else(|e| {
                errors.push(err(
                    lines.line(m.span().start),
                    None,
                    format!("path_rules_on_connect: {e}"),
                ));
                OnConnect::Deny
            }),
        };

        let mut rules = Vec::new();
        let mut names = std::collections::HashMap::new();
        for (action, list) in [(Action::Allow, &file.allow), (Action::Deny, &file.deny)] {
            for entry in list {
                let line = lines.line(entry.span().start);
                let at = Place {
                    line,
                    lines: &lines,
                    origin: &short_origin,
                };
                if let Err(e) = compile_entry(entry.get_ref(), action, &at, on_connect, &mut rules) {
                    errors.push(err(e.line, Some(e.rule), e.reason));
                }
                if let RuleEntry::Table(t) = entry.get_ref() {
                    let Some(n) = &t.name else { continue };
                    if let Some(prev) = names.insert(n.clone(), line) {
                        errors.push(err(
                            line,
                            Some(n.clone()),
                            format!("duplicate rule name (first on line {prev})"),
                        ));
                    }
                }
            }
        }

        let mut pins = Vec::new();
        for (lhs, rhs) in &file.resolve {
            match Pin::parse(lhs, rhs.get_ref()) {
                Ok(p) => pins.push(p),
                Err(e) => errors.push(err(
                    lines.line(rhs.span().start),
                    Some(lhs.clone()),
                    format!("resolve: {e}"),
                )),
            }
        }

        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        drop(file);
        let mut p = Policy::compile(rules, mode, on_connect, pins, src, origin);
        p.sni = sni;
        Ok(p)
    }

    fn compile(
        rules: Vec<Rule>,
        mode: Mode,
        on_connect: OnConnect,
        pins: Vec<Pin>,
        src: &str,
        origin: &str,
    ) -> Policy {
        let mut hosts = HostTrie::default();
        let mut cidrs = CidrTable::default();
        let mut has_resolved_cidrs = false;
        for (i, r) in rules.iter().enumerate() {
            let idx = RuleIdx(i as u32);
            match &r.target {
                RuleTarget::Host(d) => hosts.insert(&d.host, &d.path, r.action, idx),
                RuleTarget::Cidr { net, resolved } => {
                    has_resolved_cidrs |= *resolved && r.action == Action::Allow;
                    cidrs.insert(*net, idx);
                }
            }
        }
        let digest = Sha256::digest(src.as_bytes());
        let version: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Policy {
            rules,
            hosts,
            cidrs,
            has_resolved_cidrs,
            mode,
            on_connect,
            sni: SniMode::Enforce,
            pins,
            version: format!("sha256:{version}").into(),
            origin: origin.to_string(),
            source: src.into(),
        }
    }

    /// A policy of this one rule alone, in enforce mode: used to explain why
    /// a rule did or did not match a request.
    pub fn from_rule(rule: &Rule) -> Policy {
        Policy::compile(
            vec![rule.clone()],
            Mode::Enforce,
            rule.on_connect,
            Vec::new(),
            "",
            "explain",
        )
    }

    /// The same policy in another mode (e.g. `--mode report`).
    pub fn with_mode(mut self, mode: Mode) -> Policy {
        self.mode = mode;
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn on_connect(&self) -> OnConnect {
        self.on_connect
    }
    pub fn tunnel_sni(&self) -> SniMode {
        self.sni
    }
    /// A hash of the policy source: `sha256:` and 12 hex digits.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The version, shared (access events hold it without copying).
    pub fn version_shared(&self) -> std::sync::Arc<str> {
        self.version.clone()
    }
    pub fn origin(&self) -> &str {
        &self.origin
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    pub fn rule(&self, idx: RuleIdx) -> &Rule {
        &self.rules[idx.0 as usize]
    }
    pub fn pins(&self) -> &[Pin] {
        &self.pins
    }
    /// Whether some CIDR rule allows names by their resolved address, so that
    /// names no host rule allows must still be resolved and checked.
    pub fn has_resolved_cidrs(&self) -> bool {
        self.has_resolved_cidrs
    }
    /// Size of the compiled index, for reports.
    pub fn node_count(&self) -> usize {
        self.hosts.node_count()
    }

    /// Decides a request on its host, port and path.
    pub fn decide(&self, c: &Candidate) -> Decision {
        let d = match &c.host {
            Host::Ip(ip) => self.decide_ip(
                *ip,
                c,
                AddrContext {
                    name_allowed: false,
                    pinned: false,
                },
                false,
            ),
            Host::Name(name) => {
                let mut m = Matcher::default();
                self.hosts.for_each_table(name, |reached| {
                    let t = reached.table;
                    let hs = reached.host_spec;
                    m.note_table(t.has_allow, t.has_allow_path, c.kind);
                    let mut consider =
                        |idx: RuleIdx| m.consider(self.rule(idx), idx, hs, c.kind, c.port, c.path.as_ref());
                    match &c.path {
                        // CONNECT, or a path that no prefix rule may vouch for.
                        None => {
                            t.any.iter().copied().for_each(&mut consider);
                            t.with_path.iter().copied().for_each(&mut consider);
                        }
                        Some(p) if p.ambiguous => {
                            t.any.iter().copied().for_each(&mut consider);
                            t.with_path.iter().copied().for_each(&mut consider);
                        }
                        Some(p) => {
                            self.hosts.for_each_prefix(t, p.segments(), &mut consider);
                            if let Some(s) = &p.stripped {
                                self.hosts
                                    .for_each_prefix(t, normalize::segments_of(s), &mut consider);
                            }
                            t.globs.iter().copied().for_each(&mut consider);
                        }
                    }
                });
                self.guard_name(name, m.finish())
            }
        };
        self.apply_mode(d)
    }

    /// Checks an address a name resolved to (or was pinned to) before it is
    /// dialled. Deny CIDR rules always apply; an allow CIDR rule admits the
    /// address if the name was allowed or the rule is marked `resolved`;
    /// special-purpose addresses are refused unless so admitted or pinned.
    pub fn check_addr(&self, ip: IpAddr, c: &Candidate, ctx: AddrContext) -> Decision {
        let d = self.decide_ip(ip, c, ctx, true);
        self.apply_mode(d)
    }

    fn decide_ip(&self, ip: IpAddr, c: &Candidate, ctx: AddrContext, resolved: bool) -> Decision {
        let ip = normalize::canonical_ip(ip);
        let mut m = Matcher::default();
        self.cidrs.for_each_match(ip, |idx| {
            let rule = self.rule(idx);
            let admits = match rule.target {
                RuleTarget::Cidr { resolved: r, .. } => {
                    !resolved || r || ctx.name_allowed || rule.action == Action::Deny
                }
                RuleTarget::Host(_) => false,
            };
            if admits {
                let spec = match rule.target {
                    RuleTarget::Cidr { net, .. } => net.prefix_len() as u16,
                    RuleTarget::Host(_) => 0,
                };
                m.consider(rule, idx, spec, c.kind, c.port, None);
            }
        });
        let mut d = m.finish();
        if d.verdict == Verdict::Deny && d.reason != Reason::DenyRule {
            if let (false, Some(range)) = (ctx.pinned, special_range(ip)) {
                d.reason = Reason::SpecialAddress(range);
            } else if ctx.name_allowed {
                d = Decision {
                    verdict: Verdict::Allow,
                    rule: None,
                    reason: Reason::Allowed,
                    flags: d.flags,
                };
            }
        }
        d
    }

    /// Cloud metadata services answer under these names; they are refused
    /// unless an exact host rule names them (a wildcard is not enough).
    fn guard_name(&self, name: &str, d: Decision) -> Decision {
        const METADATA_NAMES: &[&str] = &[
            "metadata",
            "metadata.google.internal",
            "metadata.goog",
            "instance-data",
            "instance-data.ec2.internal",
        ];
        if !METADATA_NAMES.contains(&name) || d.verdict != Verdict::Allow {
            return d;
        }
        let exact = d.rule.is_some_and(|r| {
            matches!(&self.rule(r).target, RuleTarget::Host(dest) if dest.host == HostPattern::Exact(name.to_string()))
        });
        if exact {
            return d;
        }
        Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason: Reason::SpecialAddress(SpecialRange::CloudMetadata),
            flags: d.flags,
        }
    }

    fn apply_mode(&self, mut d: Decision) -> Decision {
        if self.mode == Mode::Report {
            d.flags.insert(Flags::REPORT);
            if d.verdict == Verdict::Deny && !matches!(d.reason, Reason::SpecialAddress(_)) {
                d.verdict = Verdict::WouldDeny;
            }
        }
        d
    }

    /// Reference matcher: tests every rule in turn. Slow; for tests and for
    /// `check --explain`. Always agrees with [`Policy::decide`].
    pub fn decide_naive(&self, c: &Candidate) -> Decision {
        let d = match &c.host {
            Host::Ip(ip) => self.decide_ip(
                *ip,
                c,
                AddrContext {
                    name_allowed: false,
                    pinned: false,
                },
                false,
            ),
            Host::Name(name) => {
                let mut m = Matcher::default();
                for (i, r) in self.rules.iter().enumerate() {
                    if let RuleTarget::Host(d) = &r.target {
                        if d.host.is_match(name) {
                            m.consider(
                                r,
                                RuleIdx(i as u32),
                                trie::host_spec(&d.host, name),
                                c.kind,
                                c.port,
                                c.path.as_ref(),
                            );
                        }
                    }
                }
                self.guard_name(name, m.finish())
            }
        };
        self.apply_mode(d)
    }
}

/// Where an entry stands in its file.
struct Place<'a> {
    /// The entry's first line.
    line: usize,
    lines: &'a LineIndex,
    /// The file name used in default rule ids.
    origin: &'a str,
}

/// A rule that did not compile: its line, its text, and why.
struct EntryError {
    line: usize,
    rule: String,
    reason: String,
}

/// Compiles one `allow`/`deny` entry into rules. Patterns listed in `hosts`
/// or `cidrs` each keep their own line (in errors, and in the rule id when
/// the table has no name).
fn compile_entry(
    entry: &RuleEntry,
    action: Action,
    at: &Place,
    policy_on_connect: OnConnect,
    out: &mut Vec<Rule>,
) -> Result<(), EntryError> {
    let table;
    let t = match entry {
        RuleEntry::Pattern(p) => {
            table = RuleTable {
                host: Some(p.clone()),
                ..Default::default()
            };
            &table
        }
        RuleEntry::Table(t) => &**t,
    };
    // Each pattern with its line.
    let listed = |single: &Option<String>, list: &[toml::Spanned<String>]| -> Vec<(String, usize)> {
        single
            .iter()
            .map(|p| (p.clone(), at.line))
            .chain(
                list.iter()
                    .map(|p| (p.get_ref().clone(), at.lines.line(p.span().start))),
            )
            .collect()
    };
    let hosts = listed(&t.host, &t.hosts);
    let cidrs = listed(&t.cidr, &t.cidrs);
    let label = t
        .name
        .clone()
        .or_else(|| hosts.first().map(|h| h.0.clone()))
        .or_else(|| cidrs.first().map(|c| c.0.clone()))
        .unwrap_or_default();
    let fail = |reason: String| EntryError {
        line: at.line,
        rule: label.clone(),
        reason,
    };
    let fail_at = |(rule, line): &(String, usize), reason: String| EntryError {
        line: *line,
        rule: rule.clone(),
        reason,
    };

    if hosts.is_empty() == cidrs.is_empty() {
        return Err(fail("give exactly one of host, hosts, cidr, cidrs".into()));
    }
    let ports = match &t.ports {
        None => None,
        Some(list) if list.is_empty() => return Err(fail("ports is empty".into())),
        Some(list) => {
            let mut v = Vec::with_capacity(list.len());
            for &p in list {
                if !(1..=65535).contains(&p) {
                    return Err(fail(format!("invalid port {p} (must be 1-65535)")));
                }
                v.push(p as u16);
            }
            v.sort_unstable();
            v.dedup();
            Some(v.into_boxed_slice())
        }
    };
    let on_connect = match &t.on_connect {
        None => policy_on_connect,
        Some(s) => OnConnect::parse(s).map_err(|e| fail(format!("on_connect: {e}")))?,
    };
    if t.resolved && cidrs.is_empty() {
        return Err(fail("`resolved` applies to cidr rules only".into()));
    }
    let named: Option<Arc<str>> = t.name.as_deref().map(Arc::from);
    let id = |line: usize| -> Arc<str> {
        named
            .clone()
            .unwrap_or_else(|| format!("{}:{line}", at.origin).into())
    };

    for h in &hosts {
        let (pattern, line) = (&h.0, h.1);
        let dest: Destination = pattern
            .parse()
            .map_err(|e: PatternError| fail_at(h, e.to_string()))?;
        let rule_ports = match (&ports, dest.port) {
            (Some(_), Some(_)) => {
                return Err(fail_at(h, "port given both in the pattern and in `ports`".into()));
            }
            (Some(l), None) => Ports::List(l.clone()),
            (None, Some(p)) => Ports::List(Box::new([p])),
            (None, None) => Ports::Default,
        };
        let glob = match &dest.path {
            PathPattern::Glob(g) => Some(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| fail_at(h, e.to_string()))?
                    .compile_matcher()
                    .into(),
            ),
            _ => None,
        };
        out.push(Rule {
            id: id(line),
            action,
            target: RuleTarget::Host(dest),
            ports: rule_ports,
            on_connect,
            tls_only: t.tls_only,
            comment: t.comment.clone(),
            line,
            pattern: pattern.clone(),
            glob,
        });
    }
    for c in &cidrs {
        let (text, line) = (&c.0, c.1);
        let net: IpNet = text
            .parse()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| fail_at(c, format!("invalid CIDR {text:?}")))?;
        if net.trunc() != net {
            return Err(fail_at(
                c,
                format!("host bits set in {text:?} (did you mean {}?)", net.trunc()),
            ));
        }
        out.push(Rule {
            id: id(line),
            action,
            target: RuleTarget::Cidr {
                net,
                resolved: t.resolved,
            },
            ports: ports.clone().map_or(Ports::Default, Ports::List),
            on_connect,
            tls_only: t.tls_only,
            comment: t.comment.clone(),
            line,
            pattern: text.clone(),
            glob: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
