//! Is the allowlist complete? `check`, `audit`, `report` and `lint`, pure
//! over the same [`Policy`] the proxy uses. Readers turn inputs (URLs, HAR
//! files, access logs) into [`Observation`]s; [`Summary`] aggregates their
//! decisions and suggests the rules that would let denied traffic through.

pub mod background;
pub mod har;
pub mod html;
pub mod lint;
pub mod logs;
pub mod netlog;
pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::policy::{Candidate, Decision, Flags, Kind, Policy, Reason, RuleIdx, Verdict};
use crate::target::parse_target;

/// One request seen in the input.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The URL or `CONNECT host:port` as seen.
    pub target: String,
    pub candidate: Candidate,
    /// Client address, when the input knows it (access logs).
    pub client: Option<String>,
    /// Hours since the epoch, when known.
    pub time: Option<i64>,
    /// A tunnel the proxy inspected (its log event says so): decided as a
    /// proxy with a CA decides it.
    pub inspected: bool,
}

/// Whether a URL is a proxy auto-config fetch (`/proxy.pac`, any `.pac`,
/// WPAD's `/wpad.dat`): the browser fetches it itself, never through the
/// proxy it configures, so it is no destination to allow.
pub fn is_proxy_config(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.ends_with(".pac") || path.ends_with("/wpad.dat")
}

impl Observation {
    /// A target as seen. Its query string and fragment are not kept for
    /// showing: they carry tokens and user ids (the live view drops them
    /// too), and decisions never read them.
    pub fn parse(target: &str) -> Option<Observation> {
        let candidate = parse_target(target).ok()?;
        let shown = target.split(['?', '#']).next().unwrap_or(target);
        Some(Observation {
            target: shown.to_string(),
            candidate,
            client: None,
            time: None,
            inspected: false,
        })
    }

    /// The same request with its method (from a HAR file or a log line).
    pub fn with_method(mut self, method: &str) -> Observation {
        if let Ok(m) = http::Method::from_bytes(method.as_bytes()) {
            self.candidate = self.candidate.with_method(m);
        }
        self
    }

    /// The CONNECT a browser behind a proxy sends for an https URL.
    pub fn as_connect(&self) -> Option<Observation> {
        if self.candidate.kind != Kind::Https {
            return None;
        }
        let mut o = self.clone();
        o.candidate.kind = Kind::Connect;
        o.candidate.path = None;
        o.target = format!("CONNECT {}:{}", o.candidate.host, o.candidate.port);
        Some(o)
    }
}

impl Observation {
    /// The decision the proxy that logged this made, under `policy`.
    pub fn decide(&self, policy: &Policy) -> Decision {
        if self.inspected {
            policy.decide_tunnel(&self.candidate, true).0
        } else {
            policy.decide(&self.candidate)
        }
    }
}

/// A destination as grouped in reports: host and port.
pub fn destination(c: &Candidate) -> String {
    format!("{}:{}", c.host, c.port)
}

/// Denied traffic to one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeniedHost {
    pub host: String,
    pub requests: u64,
    pub ports: BTreeSet<u16>,
    pub reasons: BTreeSet<&'static str>,
    /// Up to a few example targets.
    pub examples: Vec<String>,
    /// First path segments seen (for path-level suggestions).
    #[serde(skip)]
    first_segments: BTreeMap<String, u64>,
    #[serde(skip)]
    kinds: BTreeSet<&'static str>,
}

/// Aggregated decisions over a set of observations.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    pub destinations: u64,
    pub allowed: u64,
    pub denied: u64,
    /// Denied in enforce mode, or would-deny in report mode.
    pub would_deny: u64,
    /// Refused, but a staged allow rule would let them through.
    pub would_allow: u64,
    pub path_not_enforced: u64,
    /// Inputs that could not be read as a request.
    pub unreadable: u64,
    /// DNS questions (egressd's DNS listener), and those whose name the
    /// policy refuses.
    pub lookups: u64,
    pub lookups_refused: u64,
    pub denied_hosts: Vec<DeniedHost>,
    pub suggestions: Vec<Suggestion>,
    /// Decisions per rule (by index in the policy), for unused-rule reports.
    #[serde(skip)]
    pub rule_hits: HashMap<RuleIdx, u64>,
    /// Refusals per hour (hours since the epoch), for inputs that carry times.
    #[serde(skip)]
    pub denied_by_hour: BTreeMap<i64, u64>,
    #[serde(skip)]
    seen: BTreeSet<String>,
    #[serde(skip)]
    by_host: HashMap<String, DeniedHost>,
}

/// A rule to add, with what it would admit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suggestion {
    pub rule: String,
    pub requests: u64,
    pub hosts: Vec<String>,
    /// Every host is one a browser reaches on its own account
    /// ([`background`]): listed last, marked, not pre-selected.
    pub background: bool,
}

impl Suggestion {
    /// The suggestion as an entry of a TOML `allow` list.
    pub fn toml(&self) -> String {
        if self.rule.starts_with('{') {
            self.rule.clone()
        } else {
            format!("{:?}", self.rule)
        }
    }
}

const MAX_EXAMPLES: usize = 3;
/// Distinct first path segments kept per host: enough for suggestions,
/// bounded whatever the paths are.
const MAX_SEGMENTS: usize = 64;

impl DeniedHost {
    pub fn new(host: String) -> DeniedHost {
        DeniedHost {
            host,
            ..Default::default()
        }
    }

    /// Counts one refused request to this host.
    pub fn note(&mut self, c: &Candidate, reason: Reason, target: &str) {
        self.count(c.port, c.kind, reason, target);
        if reason == Reason::PathNotAllowed {
            if let Some(seg) = c.path.as_ref().and_then(|p| p.segments().next()) {
                let room = self.first_segments.len() < MAX_SEGMENTS;
                match self.first_segments.get_mut(seg) {
                    Some(n) => *n += 1,
                    None if room => {
                        self.first_segments.insert(seg.to_string(), 1);
                    }
                    None => {}
                }
            }
        }
    }

    /// [`DeniedHost::note`] for a refusal that was not for its path: only
    /// counters and examples change, so no candidate is needed.
    pub fn count(&mut self, port: u16, kind: Kind, reason: Reason, target: &str) {
        self.requests += 1;
        self.ports.insert(port);
        self.reasons.insert(reason.as_str());
        self.kinds.insert(kind.as_str());
        if self.examples.len() < MAX_EXAMPLES && !self.examples.iter().any(|e| e == target) {
            self.examples.push(target.to_string());
        }
    }

    /// Adds `other`'s counts (the same host seen on another port).
    pub fn merge(&mut self, other: &DeniedHost) {
        self.requests += other.requests;
        self.ports.extend(other.ports.iter().copied());
        self.reasons.extend(other.reasons.iter().copied());
        self.kinds.extend(other.kinds.iter().copied());
        for e in &other.examples {
            if self.examples.len() < MAX_EXAMPLES && !self.examples.contains(e) {
                self.examples.push(e.clone());
            }
        }
        for (seg, n) in &other.first_segments {
            if let Some(m) = self.first_segments.get_mut(seg) {
                *m += n;
            } else if self.first_segments.len() < MAX_SEGMENTS {
                self.first_segments.insert(seg.clone(), *n);
            }
        }
    }
}

impl Summary {
    /// Adds one observation and its decision.
    pub fn add(&mut self, o: &Observation, d: &Decision) {
        self.requests += 1;
        let dest = destination(&o.candidate);
        if !self.seen.contains(&dest) {
            self.seen.insert(dest);
            self.destinations += 1;
        }
        if d.flags.contains(Flags::PATH_NOT_ENFORCED) {
            self.path_not_enforced += 1;
        }
        if let Some(r) = d.rule {
            *self.rule_hits.entry(r).or_default() += 1;
        }
        match d.verdict {
            Verdict::Allow => self.allowed += 1,
            // Refused today; a staged rule already covers it, so no
            // suggestion is needed.
            Verdict::WouldAllow => {
                self.denied += 1;
                self.would_allow += 1;
            }
            Verdict::Deny | Verdict::WouldDeny => {
                if let Some(h) = o.time {
                    *self.denied_by_hour.entry(h).or_default() += 1;
                }
                if d.verdict == Verdict::Deny {
                    self.denied += 1;
                } else {
                    self.would_deny += 1;
                }
                let host = o.candidate.host.to_string();
                self.by_host
                    .entry(host.clone())
                    .or_insert_with(|| DeniedHost::new(host))
                    .note(&o.candidate, d.reason, &o.target);
            }
        }
    }

    /// Adds the observations that came after this summary's (before
    /// [`Summary::finish`]): the result is the summary of both in order.
    pub fn merge(&mut self, later: Summary) {
        self.requests += later.requests;
        self.allowed += later.allowed;
        self.denied += later.denied;
        self.would_deny += later.would_deny;
        self.would_allow += later.would_allow;
        self.path_not_enforced += later.path_not_enforced;
        self.unreadable += later.unreadable;
        self.lookups += later.lookups;
        self.lookups_refused += later.lookups_refused;
        for (r, n) in later.rule_hits {
            *self.rule_hits.entry(r).or_default() += n;
        }
        for (h, n) in later.denied_by_hour {
            *self.denied_by_hour.entry(h).or_default() += n;
        }
        for dest in later.seen {
            if self.seen.insert(dest) {
                self.destinations += 1;
            }
        }
        for (host, h) in later.by_host {
            match self.by_host.get_mut(&host) {
                Some(mine) => mine.merge(&h),
                None => {
                    self.by_host.insert(host, h);
                }
            }
        }
    }

    /// Adds one DNS question and the policy's decision on its name: a
    /// refused name is listed with the denied hosts on port 0 (a lookup),
    /// since the app never reached it and no request shows it.
    pub fn add_lookup(&mut self, l: &logs::Lookup, d: &Decision) {
        self.lookups += 1;
        if !matches!(d.verdict, Verdict::Deny | Verdict::WouldDeny) {
            return;
        }
        self.lookups_refused += 1;
        if let Some(h) = l.time {
            *self.denied_by_hour.entry(h).or_default() += 1;
        }
        let mut example = String::new();
        logs::write_lookup(&mut example, &l.qtype, &l.name);
        self.by_host
            .entry(l.name.clone())
            .or_insert_with(|| DeniedHost::new(l.name.clone()))
            .count(0, Kind::Connect, d.reason, &example);
    }

    /// Sorts denied hosts by impact and computes the suggested rules.
    pub fn finish(&mut self) {
        let mut hosts: Vec<DeniedHost> = self.by_host.drain().map(|(_, v)| v).collect();
        hosts.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.host.cmp(&b.host)));
        self.suggestions = suggest(&hosts);
        self.denied_hosts = hosts;
    }
}

/// The registrable domain of a name (from the Public Suffix List), if any.
pub fn registrable_domain(name: &str) -> Option<&str> {
    let d = psl::domain(name.as_bytes())?;
    if !d.suffix().is_known() {
        return None;
    }
    std::str::from_utf8(d.as_bytes()).ok()
}

/// Minimal rules that admit the denied hosts: exact hosts, or a wildcard when
/// several siblings share a registrable domain (never on a public suffix);
/// `host/segment` when only paths were refused; CIDRs for IP literals.
/// Denials of special-purpose addresses get no suggestion.
pub fn suggest(hosts: &[DeniedHost]) -> Vec<Suggestion> {
    let mut out: Vec<Suggestion> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&DeniedHost>> = BTreeMap::new();
    for h in hosts {
        if h.reasons.contains("special_address") || h.reasons.contains("deny_rule") {
            continue;
        }
        let port_suffix = port_suffix_for(h);
        if h.host.starts_with('[') || h.host.parse::<std::net::IpAddr>().is_ok() {
            let ip = h.host.trim_start_matches('[').trim_end_matches(']');
            let len = if ip.contains(':') { 128 } else { 32 };
            let ports: Vec<String> = h.ports.iter().map(u16::to_string).collect();
            out.push(Suggestion {
                rule: format!("{{ cidr = \"{ip}/{len}\", ports = [{}] }}", ports.join(", ")),
                requests: h.requests,
                hosts: vec![h.host.clone()],
                background: false,
            });
            continue;
        }
        if h.reasons.iter().all(|r| *r == "path_not_allowed") && !h.first_segments.is_empty() {
            for (seg, n) in &h.first_segments {
                out.push(Suggestion {
                    rule: format!("{}{port_suffix}/{seg}", h.host),
                    requests: *n,
                    hosts: vec![h.host.clone()],
                    background: false,
                });
            }
            continue;
        }
        let key = match registrable_domain(&h.host) {
            Some(d) => format!("{d}{port_suffix}"),
            None => format!("{}{port_suffix}", h.host),
        };
        groups.entry(key).or_default().push(h);
    }
    for (key, members) in groups {
        let requests = members.iter().map(|h| h.requests).sum();
        let names: Vec<String> = members.iter().map(|h| h.host.clone()).collect();
        let (domain, port_suffix) = match key.rsplit_once(':') {
            Some((d, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (d.to_string(), format!(":{p}")),
            _ => (key.clone(), String::new()),
        };
        let siblings = members.len() >= 2 && registrable_domain(&domain) == Some(domain.as_str());
        if siblings {
            let apex = names.contains(&domain);
            let prefix = if apex { "." } else { "*." };
            out.push(Suggestion {
                rule: format!("{prefix}{domain}{port_suffix}"),
                requests,
                hosts: names,
                background: false,
            });
        } else {
            for h in members {
                out.push(Suggestion {
                    rule: format!("{}{}", h.host, port_suffix_for(h)),
                    requests: h.requests,
                    hosts: vec![h.host.clone()],
                    background: false,
                });
            }
        }
    }
    for s in &mut out {
        s.background = s.hosts.iter().all(|h| background::is_browser_background(h));
    }
    out.sort_by(|a, b| {
        (a.background, std::cmp::Reverse(a.requests), &a.rule).cmp(&(
            b.background,
            std::cmp::Reverse(b.requests),
            &b.rule,
        ))
    });
    out
}

/// `:port` when the host was used on one non-default port only.
fn port_suffix_for(h: &DeniedHost) -> String {
    let default = |p: u16| p == 443 || (p == 80 && !h.kinds.contains("connect"));
    // Port 0 is a DNS lookup: it names no port.
    match h.ports.iter().filter(|p| **p != 0).collect::<Vec<_>>().as_slice() {
        [p] if !default(**p) => format!(":{p}"),
        _ => String::new(),
    }
}

/// How https requests are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpsAs {
    /// As the running proxy decides them: the CONNECT a browser sends,
    /// or, where the proxy inspects that host (`inspect`: it runs with a
    /// CA), with their path and method.
    Proxy { inspect: bool },
    /// Always with their path (as if every tunnel were inspected).
    Path,
}

/// How the running proxy decides `c`: an https request arrives inside a
/// CONNECT, which is decided first; only an inspected tunnel's requests
/// are decided with their path (flagged `inspected`).
pub fn decide_like_proxy(policy: &Policy, c: &Candidate, inspect: bool) -> (Decision, bool) {
    if c.kind != Kind::Https {
        return (policy.decide(c), false);
    }
    let connect = Candidate {
        kind: Kind::Connect,
        path: None,
        method: http::Method::CONNECT,
        ..c.clone()
    };
    let (mut d, inspected) = policy.decide_tunnel(&connect, inspect);
    if !inspected {
        // The tunnel goes through on its host alone; of the path rules that
        // let it, credit the one this request's path matches (the tunnel's
        // own pick is by specificity, blind to the path).
        if d.verdict.proceeds() && d.flags.contains(Flags::PATH_NOT_ENFORCED) {
            let by_path = policy.decide(c);
            if by_path.verdict == Verdict::Allow && by_path.rule.is_some() {
                d.rule = by_path.rule;
            }
        }
        return (d, false);
    }
    let mut inner = policy.decide(c);
    inner.flags.insert(Flags::INSPECTED);
    (inner, true)
}

/// Decides every observation as `https` says, feeding `summary`.
pub fn audit<'a>(
    policy: &Policy,
    observations: impl Iterator<Item = Observation> + 'a,
    https: HttpsAs,
    summary: &mut Summary,
) {
    for o in observations {
        match https {
            HttpsAs::Path => {
                let d = policy.decide(&o.candidate);
                summary.add(&o, &d);
            }
            HttpsAs::Proxy { inspect } => {
                let (d, inspected) = decide_like_proxy(policy, &o.candidate, inspect);
                // Reported as what the proxy saw: the request, or its CONNECT.
                match (inspected, o.as_connect()) {
                    (false, Some(c)) => summary.add(&c, &d),
                    _ => summary.add(&o, &d),
                }
            }
        }
    }
}

/// Extra sections a report adds to the summary.
#[derive(Debug, Default, serde::Serialize)]
pub struct Extras {
    /// Denials by client address.
    pub denied_by_client: Vec<(String, u64)>,
    /// Denials by hour (`YYYY-MM-DDTHH:00Z`).
    pub denied_by_hour: Vec<(String, u64)>,
    /// Rules of the policy that nothing matched.
    pub unused_rules: Vec<String>,
}
