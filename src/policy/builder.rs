//! Building a policy: the TOML file model compiled, entry by entry, into
//! rules ([`PolicyBuilder`]), then the rules into the lookup structures
//! ([`PolicyBuilder::build`] -> [`Policy`]). Every error names the file,
//! the line and the rule.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::compiled::Policy;
use super::file::{LineIndex, PolicyFile, PortItem, PortsSpec, RuleEntry, RuleTable};
use super::net::CidrTable;
use super::pattern::{Destination, PathPattern, PatternError, Scheme};
use super::pin::Pin;
use super::rule::{
    parse_word, Action, Day, Inspect, Kinds, Mode, OnConnect, Ports, Rule, RuleIdx, RuleTarget, SniMode, Via,
};
use super::trie::HostTrie;

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

/// Rules read from a policy file (or given one by one), with the
/// policy-wide settings, not yet compiled into lookup structures.
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    rules: Vec<Rule>,
    mode: Mode,
    on_connect: OnConnect,
    sni: SniMode,
    inspect: Inspect,
    via: Via,
    pins: Vec<Pin>,
    source: String,
    origin: String,
}

impl PolicyBuilder {
    /// An empty policy (everything denied) named `origin`.
    pub fn new(origin: &str) -> PolicyBuilder {
        PolicyBuilder {
            rules: Vec::new(),
            mode: Mode::Enforce,
            on_connect: OnConnect::Deny,
            sni: SniMode::Enforce,
            inspect: Inspect::Paths,
            via: Via::Parent,
            pins: Vec::new(),
            source: String::new(),
            origin: origin.to_string(),
        }
    }

    /// Reads a policy file; `origin` names the file in errors and rule ids.
    /// Every error of the file is reported, not only the first.
    pub fn parse_toml(src: &str, origin: &str) -> Result<PolicyBuilder, PolicyErrors> {
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
        fn word<T: serde::de::DeserializeOwned>(
            value: &Option<toml::Spanned<String>>,
            key: &str,
            noun: &str,
            lines: &LineIndex,
            errors: &mut Vec<(usize, String)>,
        ) -> Option<T> {
            let v = value.as_ref()?;
            parse_word(noun, v.get_ref())
                .map_err(|e| errors.push((lines.line(v.span().start), format!("{key}: {e}"))))
                .ok()
        }
        let mut bad_words = Vec::new();
        let mode = word(&file.mode, "mode", "mode", &lines, &mut bad_words).unwrap_or(Mode::Enforce);
        let sni =
            word(&file.tunnel_sni, "tunnel_sni", "value", &lines, &mut bad_words).unwrap_or(SniMode::Enforce);
        let inspect =
            word(&file.inspect, "inspect", "value", &lines, &mut bad_words).unwrap_or(Inspect::Paths);
        let via = word(&file.via, "via", "value", &lines, &mut bad_words).unwrap_or(Via::Parent);
        let on_connect = word(
            &file.path_rules_on_connect,
            "path_rules_on_connect",
            "value",
            &lines,
            &mut bad_words,
        )
        .unwrap_or(OnConnect::Deny);
        errors.extend(
            bad_words
                .into_iter()
                .map(|(line, reason)| err(line, None, reason)),
        );

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
        Ok(PolicyBuilder {
            rules,
            mode,
            on_connect,
            sni,
            inspect,
            via,
            pins,
            source: src.to_string(),
            origin: origin.to_string(),
        })
    }

    pub fn mode(mut self, mode: Mode) -> PolicyBuilder {
        self.mode = mode;
        self
    }

    /// What CONNECT gets for hosts only path rules allow (for rules added
    /// with [`PolicyBuilder::rule`] that do not say).
    pub fn on_connect(mut self, on_connect: OnConnect) -> PolicyBuilder {
        self.on_connect = on_connect;
        self
    }

    /// Adds an already compiled rule (e.g. one of another policy's).
    pub fn rule(mut self, rule: Rule) -> PolicyBuilder {
        self.rules.push(rule);
        self
    }

    /// Compiles the rules into the host trie and the CIDR table.
    pub fn build(self) -> Policy {
        let mut hosts = HostTrie::default();
        let mut cidrs = CidrTable::default();
        let mut has_resolved_cidrs = false;
        for (i, r) in self.rules.iter().enumerate() {
            let idx = RuleIdx(i as u32);
            match &r.target {
                RuleTarget::Host(d) => hosts.insert(&d.host, &d.path, r.action, r.staged, idx),
                RuleTarget::Cidr { net, resolved } => {
                    has_resolved_cidrs |= *resolved && r.action == Action::Allow;
                    cidrs.insert(*net, idx);
                }
            }
        }
        let digest = Sha256::digest(self.source.as_bytes());
        let version: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let has_staged = self.rules.iter().any(|r| r.staged);
        Policy {
            has_staged,
            rules: self.rules,
            hosts,
            cidrs,
            has_resolved_cidrs,
            today: std::sync::atomic::AtomicU32::new(u32::MAX),
            mode: self.mode,
            on_connect: self.on_connect,
            sni: self.sni,
            inspect: self.inspect,
            via: self.via,
            pins: self.pins,
            version: format!("sha256:{version}").into(),
            origin: self.origin,
            source: self.source.into(),
        }
    }
}

// === impl Policy ===

impl Policy {
    /// Parses and compiles a policy; `origin` names the file in errors and
    /// rule ids.
    pub fn from_toml(src: &str, origin: &str) -> Result<Policy, PolicyErrors> {
        Ok(PolicyBuilder::parse_toml(src, origin)?.build())
    }

    /// A policy of this one rule alone, in enforce mode: used to explain why
    /// a rule did or did not match a request.
    pub fn from_rule(rule: &Rule) -> Policy {
        PolicyBuilder::new("explain")
            .on_connect(rule.on_connect)
            .rule(rule.clone())
            .build()
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
        Some(spec) => Some(parse_ports(spec).map_err(fail)?),
    };
    let methods = match &t.methods {
        None => None,
        Some(list) => Some(parse_methods(list).map_err(fail)?),
    };
    let staged = match &t.mode {
        None => false,
        Some(m) => parse_word::<Mode>("mode", m).map_err(|e| fail(format!("mode: {e}")))? == Mode::Report,
    };
    let expires = match &t.expires {
        None => None,
        Some(d) => Some(parse_day(d).map_err(fail)?),
    };
    let on_connect = match &t.on_connect {
        None => policy_on_connect,
        Some(s) => parse_word("value", s).map_err(|e| fail(format!("on_connect: {e}")))?,
    };
    let via = match &t.via {
        None => None,
        Some(s) => Some(parse_word::<Via>("value", s).map_err(|e| fail(format!("via: {e}")))?),
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

    // What the table gives every rule it makes.
    let rule = |target, ports, kinds, methods, line, pattern: &String, glob| Rule {
        id: id(line),
        action,
        target,
        ports,
        kinds,
        methods,
        staged,
        expires,
        on_connect,
        tls_only: t.tls_only,
        inspect: t.inspect.unwrap_or(true),
        via,
        comment: t.comment.clone(),
        line,
        pattern: pattern.clone(),
        glob,
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
            (Some(l), None) => l.clone(),
            (None, Some(p)) => Ports::from_ranges(vec![(p, p)]),
            (None, None) => Ports::Default,
        };
        let kinds = match dest.scheme {
            None => Kinds::Any,
            Some(Scheme::Http) => Kinds::Http,
            Some(Scheme::Https) => Kinds::Tls,
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
        out.push(rule(
            RuleTarget::Host(dest),
            rule_ports,
            kinds,
            methods.clone(),
            line,
            pattern,
            glob,
        ));
    }
    if methods.is_some() && !cidrs.is_empty() {
        return Err(fail(METHODS_ON_CONNECT.into()));
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
        let target = RuleTarget::Cidr {
            net,
            resolved: t.resolved,
        };
        let ports = ports.clone().unwrap_or(Ports::Default);
        out.push(rule(target, ports, Kinds::Any, None, line, text, None));
    }
    Ok(())
}

const METHODS_ON_CONNECT: &str = "methods cannot be seen inside a CONNECT tunnel to an address: \
    give methods on host rules (http://HOST for plain HTTP; TLS hosts are inspected to see them)";

/// `ports = [443, "8000-8999"]` or `ports = "any"`.
fn parse_ports(spec: &PortsSpec) -> Result<Ports, String> {
    let list = match spec {
        PortsSpec::Word(w) if w == "any" => return Ok(Ports::any()),
        PortsSpec::Word(w) => return Err(format!("ports: {w:?} is not a list of ports or \"any\"")),
        PortsSpec::List(l) => l,
    };
    if list.is_empty() {
        return Err("ports is empty".into());
    }
    let mut ranges = Vec::with_capacity(list.len());
    for item in list {
        ranges.push(match item {
            PortItem::Port(p) => {
                let p = u16::try_from(*p)
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("invalid port {p} (must be 1-65535)"))?;
                (p, p)
            }
            PortItem::Range(r) => parse_range(r)?,
        });
    }
    Ok(Ports::from_ranges(ranges))
}

/// `"A-B"`, both ends included.
fn parse_range(r: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid port range {r:?} (write \"A-B\", e.g. \"8000-8999\")");
    let (a, b) = r.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (a, b) = (num(a)?, num(b)?);
    if a > b {
        return Err(format!("port range {r:?} is reversed"));
    }
    if a == 0 || b > 65535 {
        return Err(format!("port range {r:?} is beyond 1-65535"));
    }
    Ok((a as u16, b as u16))
}

/// `methods = ["GET", "HEAD"]`: upper-case tokens, as requests send them.
fn parse_methods(list: &[String]) -> Result<Box<[http::Method]>, String> {
    if list.is_empty() {
        return Err("methods is empty".into());
    }
    let mut v = Vec::with_capacity(list.len());
    for m in list {
        if m.is_empty()
            || !m
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        {
            return Err(format!("method {m:?}: methods are upper-case tokens (GET, POST)"));
        }
        if m == "CONNECT" {
            return Err(METHODS_ON_CONNECT.into());
        }
        v.push(http::Method::from_bytes(m.as_bytes()).map_err(|e| format!("method {m:?}: {e}"))?);
    }
    Ok(v.into_boxed_slice())
}

/// `expires = 2027-03-31`: a date, without a time.
fn parse_day(d: &toml::value::Datetime) -> Result<Day, String> {
    let bad = || format!("expires: {d} is not a date (write e.g. expires = 2027-03-31)");
    match (d.date, d.time, d.offset) {
        (Some(date), None, None) => Day::from_ymd(date.year as i32, date.month, date.day).ok_or_else(bad),
        _ => Err(bad()),
    }
}
