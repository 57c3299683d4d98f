//! Policy lint: rules that load fine but deserve a second look.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::policy::net::special_nets;
use crate::policy::{Action, HostPattern, Kinds, OnConnect, PathPattern, Policy, Rule, RuleTarget};

/// One finding, tied to a rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub line: usize,
    pub rule: String,
    pub pattern: String,
    /// A short stable name: `duplicate`, `shadowed`, `ineffective-deny`, ...
    pub kind: &'static str,
    pub message: String,
}

fn host_covers(broad: &HostPattern, narrow: &HostPattern) -> bool {
    use HostPattern::*;
    let under = |zone: &str, d: &str| {
        d.len() > zone.len() && d.ends_with(zone) && d.as_bytes()[d.len() - zone.len() - 1] == b'.'
    };
    match (broad, narrow) {
        (Exact(a), Exact(b)) => a == b,
        (Subdomains(z), Exact(d)) => under(z, d),
        (Subdomains(z), Subdomains(d)) => z == d || under(z, d),
        (Subdomains(z), ApexAndSubdomains(d)) => under(z, d),
        (ApexAndSubdomains(z), Exact(d)) => z == d || under(z, d),
        (ApexAndSubdomains(z), Subdomains(d)) | (ApexAndSubdomains(z), ApexAndSubdomains(d)) => {
            z == d || under(z, d)
        }
        (Exact(_), _) => false,
    }
}

fn hosts_overlap(a: &HostPattern, b: &HostPattern) -> bool {
    host_covers(a, b) || host_covers(b, a)
}

fn path_covers(broad: &PathPattern, narrow: &PathPattern) -> bool {
    match (broad, narrow) {
        (PathPattern::Any, _) => true,
        (PathPattern::Prefix(a), PathPattern::Prefix(b)) => b.len() >= a.len() && b[..a.len()] == a[..],
        (a, b) => a == b,
    }
}

/// Whether `broad` applies to every request kind, method and day that
/// `narrow` does, staged or not alike.
fn applies_as_widely(broad: &Rule, narrow: &Rule) -> bool {
    let kinds = broad.kinds == Kinds::Any || broad.kinds == narrow.kinds;
    let methods = match (&broad.methods, &narrow.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.iter().all(|m| a.contains(m)),
    };
    let days = match (broad.expires, narrow.expires) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    };
    kinds && methods && days && broad.staged == narrow.staged
}

fn covers(broad: &Rule, narrow: &Rule) -> bool {
    // A broad rule with a path covers only rules treated alike on CONNECT.
    if broad.action != narrow.action || (broad.on_connect != narrow.on_connect && !broad.path().is_any()) {
        return false;
    }
    if !applies_as_widely(broad, narrow) {
        return false;
    }
    match (&broad.target, &narrow.target) {
        (RuleTarget::Host(a), RuleTarget::Host(b)) => {
            host_covers(&a.host, &b.host)
                && path_covers(&a.path, &b.path)
                && broad.ports.covers(&narrow.ports)
        }
        (RuleTarget::Cidr { net: a, resolved: ra }, RuleTarget::Cidr { net: b, resolved: rb }) => {
            a.contains(b) && (*ra || !*rb) && broad.ports.covers(&narrow.ports)
        }
        _ => false,
    }
}

fn same(a: &Rule, b: &Rule) -> bool {
    covers(a, b) && covers(b, a)
}

/// The name a host pattern hangs from: the host itself, or its zone.
fn anchor(h: &HostPattern) -> &str {
    match h {
        HostPattern::Exact(d) | HostPattern::Subdomains(d) | HostPattern::ApexAndSubdomains(d) => d,
    }
}

/// `a.b.c`, `b.c`, `c`.
fn self_and_parents(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |n| n.split_once('.').map(|(_, rest)| rest))
}

/// Where to look for the rules that may cover a rule, so that lint stays
/// near-linear in the rule count: a host pattern is covered only by one
/// hanging from the same name or a zone above it, a network only by one of
/// its supernets.
struct Index<'a> {
    by_anchor: HashMap<&'a str, Vec<usize>>,
    by_net: HashMap<IpNet, Vec<usize>>,
    /// Allow host rules by every name at or above their anchor: the allow
    /// rules a deny rule's pattern may cover.
    allows_below: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(rules: &'a [Rule]) -> Index<'a> {
        let mut ix = Index {
            by_anchor: HashMap::new(),
            by_net: HashMap::new(),
            allows_below: HashMap::new(),
        };
        for (i, r) in rules.iter().enumerate() {
            match &r.target {
                RuleTarget::Host(d) => {
                    let a = anchor(&d.host);
                    ix.by_anchor.entry(a).or_default().push(i);
                    if r.action == Action::Allow {
                        for z in self_and_parents(a) {
                            ix.allows_below.entry(z).or_default().push(i);
                        }
                    }
                }
                RuleTarget::Cidr { net, .. } => ix.by_net.entry(*net).or_default().push(i),
            }
        }
        ix
    }

    /// Indices of the rules that may cover `r` (itself included), in order.
    fn above(&self, r: &Rule) -> Vec<usize> {
        let mut v: Vec<usize> = match &r.target {
            RuleTarget::Host(d) => self_and_parents(anchor(&d.host))
                .filter_map(|z| self.by_anchor.get(z))
                .flatten()
                .copied()
                .collect(),
            RuleTarget::Cidr { net, .. } => (0..=net.prefix_len())
                .filter_map(|len| IpNet::new(net.addr(), len).ok().map(|n| n.trunc()))
                .filter_map(|n| self.by_net.get(&n))
                .flatten()
                .copied()
                .collect(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn finding(r: &Rule, kind: &'static str, message: String) -> Finding {
    Finding {
        line: r.line,
        rule: r.id.to_string(),
        pattern: r.pattern.clone(),
        kind,
        message,
    }
}

/// Rules expiring within this many days are pointed out.
pub const EXPIRY_WARNING_DAYS: u32 = 14;

/// Lints a compiled policy (expiry as of the policy's day). Findings are
/// ordered by line.
/// Findings that only a proxy with a parent (`--upstream-proxy`) has.
pub fn through_parent(policy: &Policy) -> Vec<Finding> {
    policy
        .unresolvable_through_parent()
        .map(|r| Finding {
            line: r.line,
            rule: r.id.to_string(),
            pattern: r.pattern.clone(),
            kind: "resolved-through-parent",
            message:
                "through a parent proxy egressd does not resolve names, so `resolved = true` admits none; \
                      give the rule via = \"direct\" or list the names"
                    .into(),
        })
        .collect()
}

pub fn lint(policy: &Policy) -> Vec<Finding> {
    let rules = policy.rules();
    let mut out = Vec::new();
    // Valid, and denies everything: what an emptied or truncated file
    // leaves. The running proxy refuses to reload one over a policy with
    // rules unless it says `allow = []`.
    if rules.is_empty() {
        out.push(Finding {
            line: 1,
            rule: String::new(),
            pattern: String::new(),
            kind: "no-rules",
            message: "the policy has no rules: every request is denied (write `allow = []` if that is meant)"
                .into(),
        });
    }
    let index = Index::new(rules);
    for (i, r) in rules.iter().enumerate() {
        // Duplicates of an earlier rule, or rules a broader one already covers.
        let above = index.above(r);
        if let Some(other) = above
            .iter()
            .find(|&&j| j < i && same(&rules[j], r))
            .map(|&j| &rules[j])
        {
            out.push(finding(
                r,
                "duplicate",
                format!("same as rule {:?} on line {}", other.id, other.line),
            ));
        } else if let Some(other) = above
            .iter()
            .find(|&&j| j != i && covers(&rules[j], r) && !same(&rules[j], r))
            .map(|&j| &rules[j])
        {
            out.push(finding(
                r,
                "shadowed",
                format!(
                    "already covered by rule {:?} ({}) on line {}",
                    other.id, other.pattern, other.line
                ),
            ));
        }
        match &r.target {
            RuleTarget::Host(d) => {
                if r.action == Action::Deny {
                    // An allow rule overlapping this one hangs from a name at,
                    // above or below this rule's own.
                    let below = index.allows_below.get(anchor(&d.host)).into_iter().flatten();
                    let overlaps = above.iter().chain(below).any(|&j| {
                        let o = &rules[j];
                        o.action == Action::Allow
                            && matches!(&o.target, RuleTarget::Host(od) if hosts_overlap(&od.host, &d.host))
                    });
                    if !overlaps {
                        out.push(finding(r, "ineffective-deny", "no allow rule matches what this deny rule matches; default deny already refuses it".into()));
                    }
                }
                if r.action == Action::Allow && r.hidden_in_tunnel() && r.kinds != Kinds::Http {
                    let what = match r.on_connect {
                        OnConnect::AllowHost => {
                            "CONNECT to this host is allowed for every path (flagged path_not_enforced)"
                        }
                        OnConnect::Deny => {
                            "CONNECT to this host is denied unless a rule without a path allows it"
                        }
                    };
                    out.push(finding(
                        r,
                        "path-on-connect",
                        format!(
                            "the path or methods cannot be seen inside a CONNECT tunnel without TLS inspection (run --ca): {what}"
                        ),
                    ));
                }
                if let HostPattern::Subdomains(z) | HostPattern::ApexAndSubdomains(z) = &d.host {
                    if super::registrable_domain(z).is_none() {
                        out.push(finding(
                            r,
                            "broad-wildcard",
                            format!("{z:?} is not under a known public suffix: the wildcard may cover more than one organisation"),
                        ));
                    }
                }
            }
            RuleTarget::Cidr { net, .. } => {
                if r.action == Action::Allow {
                    // Every special range it opens, named: `0.0.0.0/0`
                    // opens loopback and metadata, not only "this network".
                    let opened: Vec<String> = special_nets()
                        .filter(|(s, _)| nets_overlap(s, net))
                        .map(|(s, kind)| format!("{kind} {s}"))
                        .collect();
                    if !opened.is_empty() {
                        out.push(finding(
                            r,
                            "special-cidr",
                            format!(
                                "{net} overlaps special ranges ({}): such destinations become reachable \
                                 (0.0.0.0 and :: never are: they mean this host)",
                                opened.join(", ")
                            ),
                        ));
                    }
                    if net.prefix_len() < 8
                        || (matches!(net.network(), IpAddr::V6(_)) && net.prefix_len() < 32)
                    {
                        out.push(finding(r, "broad-cidr", format!("{net} is a very large range")));
                    }
                }
            }
        }
        if r.action == Action::Allow {
            let odd: Vec<String> = r
                .ports
                .ranges()
                .iter()
                .filter(|&&(a, b)| !(a == b && (a == 80 || a == 443)))
                .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                .collect();
            if !odd.is_empty() {
                out.push(finding(
                    r,
                    "unusual-port",
                    format!(
                        "port(s) {} beyond 80/443: check they are intended",
                        odd.join(", ")
                    ),
                ));
            }
            // `host:8080` without a scheme allows an opaque tunnel there too.
            if let RuleTarget::Host(d) = &r.target {
                if let (None, Some(p)) = (d.scheme, d.port.filter(|&p| p != 443)) {
                    out.push(finding(
                        r,
                        "connect-port",
                        format!(
                            "{}:{p} also allows CONNECT tunnels to port {p}: write http://{0}:{p} for plain HTTP only, or https://{0}:{p} if tunnels are meant",
                            d.host
                        ),
                    ));
                }
            }
        }
        if let (Some(end), Some(today)) = (r.expires, policy.today()) {
            if today > end {
                out.push(finding(
                    r,
                    "expired",
                    format!("expired on {end}: it no longer matches"),
                ));
            } else if end.0 - today.0 <= EXPIRY_WARNING_DAYS {
                let days = end.0 - today.0;
                out.push(finding(
                    r,
                    "expiring",
                    format!("expires on {end}, in {days} day(s): renew it or let it go"),
                ));
            }
        }
    }
    out.sort_by_key(|f| f.line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(&'static str, String)> {
        let p = Policy::from_toml(src, "lint.toml").unwrap();
        lint(&p).into_iter().map(|f| (f.kind, f.pattern)).collect()
    }

    #[test]
    fn a_cidr_rule_names_every_special_range_it_opens() {
        let p = Policy::from_toml(r#"allow = [{ cidr = "0.0.0.0/0" }]"#, "lint.toml").unwrap();
        let f = lint(&p);
        let special: Vec<&str> = f
            .iter()
            .filter(|f| f.kind == "special-cidr")
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(special.len(), 1, "{special:?}");
        for range in ["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8"] {
            assert!(special[0].contains(range), "{range} not named: {}", special[0]);
        }
    }

    #[test]
    fn finds_what_deserves_a_look() {
        let k = kinds(
            r#"
allow = [
  "*.example.com",
  "www.example.com",
  "a.example.org",
  "a.example.org",
  "www.google.com/recaptcha",
  { cidr = "10.0.0.0/8", ports = [5432] },
  { cidr = "2001:db8::/32" },
  { cidr = "64:ff9b::/96" },
  { cidr = "203.0.113.0/24" },
  "*.corp.internal",
]
deny = ["nothing.example.net", "bad.example.com"]
"#,
        );
        assert!(k.contains(&("shadowed", "www.example.com".into())), "{k:?}");
        assert!(k.contains(&("duplicate", "a.example.org".into())), "{k:?}");
        assert!(
            k.contains(&("path-on-connect", "www.google.com/recaptcha".into())),
            "{k:?}"
        );
        assert!(k.contains(&("special-cidr", "10.0.0.0/8".into())), "{k:?}");
        // The guard's own table: documentation and NAT64 nets too.
        for net in ["2001:db8::/32", "64:ff9b::/96", "203.0.113.0/24"] {
            assert!(k.contains(&("special-cidr", net.into())), "{net}: {k:?}");
        }
        assert!(k.contains(&("unusual-port", "10.0.0.0/8".into())), "{k:?}");
        assert!(k.contains(&("broad-wildcard", "*.corp.internal".into())), "{k:?}");
        assert!(
            k.contains(&("ineffective-deny", "nothing.example.net".into())),
            "{k:?}"
        );
        assert!(!k.iter().any(|(_, p)| p == "bad.example.com"), "{k:?}");
        assert!(!k.iter().any(|(_, p)| p == "*.example.com"), "{k:?}");
    }

    #[test]
    fn wildcards_and_networks_are_compared_too() {
        let k = kinds(
            r#"
allow = [
  "*.example.com",
  "*.example.com",
  "*.a.example.com",
  ".example.org",
  "*.example.org",
  { cidr = "192.0.2.0/24" },
  { cidr = "192.0.2.128/25" },
  { cidr = "192.0.2.0/24" },
]
deny = ["*.example.net", ".example.com", "x.example.org"]
"#,
        );
        let has = |kind: &str, p: &str| k.iter().any(|(k, q)| *k == kind && q == p);
        assert!(has("duplicate", "*.example.com"), "{k:?}");
        assert!(has("shadowed", "*.a.example.com"), "{k:?}");
        assert!(has("shadowed", "*.example.org"), "{k:?}");
        assert!(!k.iter().any(|(_, p)| p == ".example.org"), "{k:?}");
        assert!(has("shadowed", "192.0.2.128/25"), "{k:?}");
        assert!(has("duplicate", "192.0.2.0/24"), "{k:?}");
        // A deny rule overlapping allow rules above or below it is effective.
        assert!(has("ineffective-deny", "*.example.net"), "{k:?}");
        assert!(!k.iter().any(|(_, p)| p == ".example.com"), "{k:?}");
        assert!(!k.iter().any(|(_, p)| p == "x.example.org"), "{k:?}");
    }

    #[test]
    fn implicit_tunnel_ports_and_expiry() {
        let p = Policy::from_toml(
            r#"
allow = [
  "internal.example.com:8080",
  "http://plain.example.com:8080",
  "https://tls.example.com:8443",
  { host = "soon.example.com", expires = 2027-03-31 },
  { host = "gone.example.com", expires = 2027-01-01 },
  { host = "later.example.com", expires = 2028-01-01 },
]
"#,
            "lint.toml",
        )
        .unwrap();
        p.set_today(crate::policy::Day::from_ymd(2027, 3, 20).unwrap());
        let k: Vec<(&str, String)> = lint(&p).into_iter().map(|f| (f.kind, f.pattern)).collect();
        let has = |kind: &str, pat: &str| k.iter().any(|(a, b)| *a == kind && b == pat);
        assert!(has("connect-port", "internal.example.com:8080"), "{k:?}");
        assert!(!has("connect-port", "http://plain.example.com:8080"), "{k:?}");
        assert!(!has("connect-port", "https://tls.example.com:8443"), "{k:?}");
        assert!(has("expiring", "soon.example.com"), "{k:?}");
        assert!(has("expired", "gone.example.com"), "{k:?}");
        assert!(!k.iter().any(|(_, b)| b == "later.example.com"), "{k:?}");
    }
}
