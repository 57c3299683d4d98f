//! Decisions: a normalised request ([`Candidate`]) against the rules, by
//! name. The compiled lookup and the reference scan feed the same
//! [`Matcher`], so they always agree.

use std::cmp::Reverse;

use super::compiled::Policy;
use super::net::{SpecialRange, METADATA_NAMES};
use super::normalize::{self, normalize_host, normalize_path, Host, HostError, NormPath};
use super::pattern::HostPattern;
use super::rank::{HostSpec, Specificity};
use super::rule::{Action, Day, Inspect, Kind, Mode, OnConnect, Rule, RuleIdx, RuleTarget, Via};
use super::trie::PathTable;

/// A request, normalised once, as every matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub kind: Kind,
    pub host: Host,
    pub port: u16,
    /// `None` for CONNECT.
    pub path: Option<NormPath>,
    /// The request method (`GET` unless said otherwise; `CONNECT` for tunnels).
    pub method: http::Method,
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
            method: match kind {
                Kind::Connect => http::Method::CONNECT,
                _ => http::Method::GET,
            },
        })
    }

    /// The same request with another method (plain HTTP and HTTPS).
    pub fn with_method(mut self, method: http::Method) -> Candidate {
        if self.kind != Kind::Connect {
            self.method = method;
        }
        self
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
    /// Report mode (or a staged deny rule): denied by the policy, let
    /// through and logged.
    WouldDeny,
    /// A staged allow rule would let it through; it is refused.
    WouldAllow,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would-deny",
            Verdict::WouldAllow => "would-allow",
        }
    }

    /// Whether the request goes on.
    pub fn proceeds(self) -> bool {
        matches!(self, Verdict::Allow | Verdict::WouldDeny)
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
    /// The host is allowed for another kind of request only (plain HTTP or TLS).
    KindNotAllowed,
    /// The host is allowed for other methods only.
    MethodNotAllowed,
    /// The rule that matched has expired.
    RuleExpired,
    /// No rule names the destination.
    NoMatch,
    /// The address is special-purpose and no CIDR rule allows it.
    SpecialAddress(SpecialRange),
    /// A DNS question of a type egressd does not answer (TXT, MX, ...):
    /// only addresses are answered, so no other record can carry data.
    QueryType,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::DenyRule => "deny_rule",
            Reason::PathRuleOnConnect => "path_rule_on_connect",
            Reason::PathNotAllowed => "path_not_allowed",
            Reason::PortNotAllowed => "port_not_allowed",
            Reason::KindNotAllowed => "kind_not_allowed",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::RuleExpired => "rule_expired",
            Reason::NoMatch => "no_matching_rule",
            Reason::SpecialAddress(_) => "special_address",
            Reason::QueryType => "dns_type_not_answered",
        }
    }

    /// A sentence for people (403 bodies, `check`); borrowed but for an
    /// address refusal, since every denial writes one.
    pub fn describe(self) -> std::borrow::Cow<'static, str> {
        match self {
            Reason::Allowed => "allowed by rule".into(),
            Reason::DenyRule => "denied by rule".into(),
            Reason::PathRuleOnConnect => {
                "only path rules allow this host, and a CONNECT tunnel hides the path".into()
            }
            Reason::PathNotAllowed => "this path is not allowed for the host".into(),
            Reason::PortNotAllowed => "this port is not allowed for the host".into(),
            Reason::KindNotAllowed => {
                "the host is allowed for the other kind of request only (plain HTTP or TLS)".into()
            }
            Reason::MethodNotAllowed => "this method is not allowed for the host".into(),
            Reason::RuleExpired => "the rule that allowed this has expired".into(),
            Reason::NoMatch => "no rule allows this destination".into(),
            Reason::SpecialAddress(r) => {
                format!("{} address refused (allow it with a cidr rule)", r.as_str()).into()
            }
            Reason::QueryType => "only address questions (A, AAAA) are answered".into(),
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
    /// A staged rule (`mode = "report"` on the rule) changed the verdict.
    pub const STAGED: Flags = Flags(4);
    /// The tunnel is inspected: each request inside is decided on its own.
    pub const INSPECTED: Flags = Flags(8);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Flag names, for logs.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (Flags::PATH_NOT_ENFORCED, "path_not_enforced"),
            (Flags::REPORT, "report_mode"),
            (Flags::STAGED, "staged_rule"),
            (Flags::INSPECTED, "inspected"),
        ]
        .into_iter()
        .filter(move |(f, _)| self.contains(*f))
        .map(|(_, n)| n)
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

impl Decision {
    /// Whether the enforced rules allowed the name: an allow, or a staged
    /// deny rule's would-deny (which changes nothing).
    pub fn name_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
            || (self.verdict == Verdict::WouldDeny
                && self.flags.contains(Flags::STAGED)
                && self.reason == Reason::DenyRule)
    }

    /// Default deny: no rule decided.
    pub const fn denied(reason: Reason, flags: Flags) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason,
            flags,
        }
    }
}

/// Keeps the best candidates while rules are considered one by one. Used by
/// the compiled lookup and by the reference scan alike. With staged rules,
/// two picks run side by side: without them (what is enforced) and with
/// them (what they would change).
pub struct Matcher {
    live: Pick,
    staged: Option<Box<Pick>>,
    today: Option<Day>,
}

/// The best rules of one set, and what the near misses say.
#[derive(Default)]
struct Pick {
    best_deny: Option<(Specificity, Reverse<RuleIdx>)>,
    /// Enforced (path seen) before flagged, then by rank, then file order.
    best_allow: Option<(bool, Specificity, Reverse<RuleIdx>)>,
    host_allowed: bool,
    host_allowed_with_path: bool,
    path_on_connect: bool,
    unenforced_deny: bool,
    kind_refused: bool,
    method_refused: bool,
    expired: bool,
}

impl Matcher {
    /// A matcher for `policy`'s rules as of its day.
    pub fn new(policy: &Policy) -> Matcher {
        Matcher {
            live: Pick::default(),
            staged: policy.has_staged.then(Box::default),
            today: policy.today(),
        }
    }

    /// Notes that the host matched a table with these properties (the
    /// compiled path, for rules its path trie skipped).
    pub(super) fn note_table(&mut self, t: &PathTable, kind: Kind) {
        let seen_path = kind != Kind::Connect;
        self.live.host_allowed |= t.has_live_allow;
        self.live.host_allowed_with_path |= t.has_live_allow_path && seen_path;
        if let Some(p) = self.staged.as_deref_mut() {
            p.host_allowed |= t.has_allow;
            p.host_allowed_with_path |= t.has_allow_path && seen_path;
        }
    }

    /// Considers one rule whose host (or network) matches the candidate
    /// with the given specificity.
    pub fn consider(&mut self, rule: &Rule, idx: RuleIdx, host: HostSpec, c: &Candidate) {
        if !rule.staged {
            self.live.consider(rule, idx, host, c, self.today);
        }
        if let Some(p) = self.staged.as_deref_mut() {
            p.consider(rule, idx, host, c, self.today);
        }
    }

    /// The decision these considerations lead to (before the mode applies).
    pub fn finish(self) -> Decision {
        let live = self.live.finish();
        let Some(with_staged) = self.staged.map(|p| p.finish()) else {
            return live;
        };
        let mut flags = live.flags;
        flags.insert(Flags::STAGED);
        match (live.verdict, with_staged.verdict) {
            (Verdict::Allow, Verdict::Deny) if with_staged.rule.is_some() => Decision {
                verdict: Verdict::WouldDeny,
                rule: with_staged.rule,
                reason: Reason::DenyRule,
                flags,
            },
            (Verdict::Deny, Verdict::Allow) => Decision {
                verdict: Verdict::WouldAllow,
                rule: with_staged.rule,
                reason: live.reason,
                flags,
            },
            _ => live,
        }
    }
}

impl Pick {
    fn consider(&mut self, rule: &Rule, idx: RuleIdx, host: HostSpec, c: &Candidate, today: Option<Day>) {
        let allow = rule.action == Action::Allow;
        let has_path = !rule.path().is_any();
        let kind = c.kind;
        if allow {
            self.host_allowed = true;
            self.host_allowed_with_path |= has_path && kind != Kind::Connect;
        }
        if !rule.kinds.allows(kind) {
            self.kind_refused |= allow;
            return;
        }
        if !rule.port_ok(kind, c.port) {
            return;
        }
        let flagged = match &c.path {
            None if rule.hidden_in_tunnel() => {
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
        if !rule.method_ok(kind, &c.method) {
            self.method_refused |= allow;
            return;
        }
        if rule.expired(today) {
            self.expired = true;
            return;
        }
        let rank = rule.specificity(host);
        if allow {
            let key = (!flagged, rank, Reverse(idx));
            if self.best_allow.is_none_or(|b| key > b) {
                self.best_allow = Some(key);
            }
        } else {
            let key = (rank, Reverse(idx));
            if self.best_deny.is_none_or(|b| key > b) {
                self.best_deny = Some(key);
            }
        }
    }

    fn finish(self) -> Decision {
        let mut flags = Flags::default();
        if let Some((_, Reverse(r))) = self.best_deny {
            return Decision {
                verdict: Verdict::Deny,
                rule: Some(r),
                reason: Reason::DenyRule,
                flags,
            };
        }
        if let Some((enforced, _, Reverse(r))) = self.best_allow {
            if !enforced || self.unenforced_deny {
                flags.insert(Flags::PATH_NOT_ENFORCED);
            }
            return Decision {
                verdict: Verdict::Allow,
                rule: Some(r),
                reason: Reason::Allowed,
                flags,
            };
        }
        let reason = if self.expired {
            Reason::RuleExpired
        } else if self.path_on_connect {
            Reason::PathRuleOnConnect
        } else if self.method_refused {
            Reason::MethodNotAllowed
        } else if self.host_allowed_with_path {
            Reason::PathNotAllowed
        } else if self.kind_refused {
            Reason::KindNotAllowed
        } else if self.host_allowed {
            Reason::PortNotAllowed
        } else {
            Reason::NoMatch
        };
        Decision::denied(reason, flags)
    }
}

// === impl Policy ===

impl Policy {
    /// How traffic `d` allows leaves when a parent proxy is configured:
    /// its rule's `via`, else the policy's.
    pub fn via(&self, d: &Decision) -> Via {
        d.rule
            .and_then(|r| self.rule(r).via)
            .unwrap_or(self.default_via())
    }

    /// Decides a request on its host, port and path. Expired rules are
    /// judged by [`Policy::today`], the policy's one mutable field.
    pub fn decide(&self, c: &Candidate) -> Decision {
        let d = match &c.host {
            Host::Ip(ip) => self.decide_literal(*ip, c),
            Host::Name(name) => {
                let mut m = Matcher::new(self);
                self.hosts.for_each_table(name, |reached| {
                    let t = reached.table;
                    let hs = reached.host_spec;
                    m.note_table(t, c.kind);
                    let mut consider = |idx: RuleIdx| m.consider(self.rule(idx), idx, hs, c);
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

    /// Decides a CONNECT tunnel, and whether to inspect it when a CA is
    /// loaded (`can_inspect`): with `inspect = "paths"`, when path rules
    /// decide its host (so the path must be seen), with `"all"` whenever it
    /// is allowed; never for a rule with `inspect = false`. An inspected
    /// tunnel is allowed (its requests are decided one by one), even where
    /// only path rules name the host.
    pub fn decide_tunnel(&self, c: &Candidate, can_inspect: bool) -> (Decision, bool) {
        let mut d = self.decide(c);
        if !can_inspect || c.kind != Kind::Connect || self.inspect == Inspect::None {
            return (d, false);
        }
        let exempt = match d.rule {
            Some(r) => !self.rule(r).inspect,
            // Refused because only path rules name the host: inspected if
            // one of them may be.
            None => !self.path_rules_inspectable(&c.host),
        };
        if exempt {
            return (d, false);
        }
        let path_decided =
            d.flags.contains(Flags::PATH_NOT_ENFORCED) || d.reason == Reason::PathRuleOnConnect;
        let inspect = path_decided || (self.inspect == Inspect::All && d.verdict.proceeds());
        if !inspect {
            return (d, false);
        }
        d.flags.remove(Flags::PATH_NOT_ENFORCED);
        d.flags.insert(Flags::INSPECTED);
        if d.reason == Reason::PathRuleOnConnect {
            d.verdict = Verdict::Allow;
            d.reason = Reason::Allowed;
        }
        (d, true)
    }

    /// Whether some allow rule for `host` with a path or methods may be
    /// inspected.
    fn path_rules_inspectable(&self, host: &Host) -> bool {
        let Host::Name(name) = host else { return false };
        let mut any = false;
        self.hosts.for_each_table(name, |reached| {
            let t = reached.table;
            any |= t.with_path.iter().chain(&t.any).any(|&r| {
                let rule = self.rule(r);
                rule.action == Action::Allow && rule.inspect && rule.hidden_in_tunnel()
            });
        });
        any
    }

    /// Reference matcher: tests every rule in turn. Slow; for tests and for
    /// `check --explain`. Always agrees with [`Policy::decide`].
    pub fn decide_naive(&self, c: &Candidate) -> Decision {
        let d = match &c.host {
            Host::Ip(ip) => self.decide_literal(*ip, c),
            Host::Name(name) => {
                let mut m = Matcher::new(self);
                for (i, r) in self.rules.iter().enumerate() {
                    if let RuleTarget::Host(d) = &r.target {
                        if d.host.is_match(name) {
                            m.consider(r, RuleIdx(i as u32), HostSpec::of(&d.host, name), c);
                        }
                    }
                }
                self.guard_name(name, m.finish())
            }
        };
        self.apply_mode(d)
    }

    /// Cloud metadata services answer under well-known names; they are
    /// refused unless an exact host rule names them (a wildcard is not enough).
    pub(super) fn guard_name(&self, name: &str, d: Decision) -> Decision {
        if !METADATA_NAMES.contains(&name) || d.verdict != Verdict::Allow {
            return d;
        }
        let exact = d.rule.is_some_and(|r| {
            matches!(&self.rule(r).target, RuleTarget::Host(dest) if dest.host == HostPattern::Exact(name.to_string()))
        });
        if exact {
            return d;
        }
        Decision::denied(Reason::SpecialAddress(SpecialRange::CloudMetadata), d.flags)
    }

    /// Report mode lets everything through but the address guard: a
    /// denial becomes would-deny (a staged allow rule too, since the
    /// request goes on either way).
    pub(super) fn apply_mode(&self, mut d: Decision) -> Decision {
        if self.mode == Mode::Report {
            d.flags.insert(Flags::REPORT);
            let guarded = matches!(d.reason, Reason::SpecialAddress(_));
            if d.verdict == Verdict::WouldAllow {
                d.rule = None;
            }
            if matches!(d.verdict, Verdict::Deny | Verdict::WouldAllow) && !guarded {
                d.verdict = Verdict::WouldDeny;
            }
        }
        d
    }
}
