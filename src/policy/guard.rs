//! The address guard: the addresses a name resolved to (or an IP literal)
//! against CIDR rules and the special-purpose ranges, before anything is
//! dialled. Pure: the shell resolves, this module judges, the shell dials
//! exactly what it was given back.

use std::net::{IpAddr, SocketAddr};

use super::compiled::Policy;
use super::decision::{Candidate, Decision, Matcher, Reason, Verdict};
use super::net::{embedded_v4, special_range};
use super::normalize::canonical_ip;
use super::rank::HostSpec;
use super::rule::{Action, RuleTarget};

/// An address a destination resolved to, and whether it came from an
/// operator's pin rather than from DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub addr: SocketAddr,
    pub pinned: bool,
}

/// How a resolved address is being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrContext {
    /// The name was allowed by a host rule.
    pub name_allowed: bool,
    /// The address comes from an operator's pin, not from DNS.
    pub pinned: bool,
}

/// The addresses that may be dialled, in order, and the decision that
/// lets them through (the name's, or the CIDR rule's that admitted them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub targets: Vec<Resolved>,
    pub decision: Decision,
}

/// Why no address may be dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every address is the proxy's own listener.
    SelfLoop,
    /// The policy refuses the destination; `by_address` when an address
    /// (not the name) was what it refused.
    Denied { decision: Decision, by_address: bool },
}

/// Whether dialling `addr` would reach one of the proxy's own listeners.
/// Addresses are compared in one spelling, every IPv4 embedding the guard
/// knows unwrapped (`::ffff:127.0.0.1` is `127.0.0.1`), so that no
/// spelling of its own address sends the proxy back to itself.
pub fn is_self(listen: &[SocketAddr], addr: SocketAddr) -> bool {
    let a = unwrapped(addr.ip());
    listen.iter().any(|l| {
        let own = unwrapped(l.ip());
        l.port() == addr.port()
            && (own == a || (own.is_unspecified() && (a.is_loopback() || a.is_unspecified())))
    })
}

/// Whether `ip` is the unspecified address (`0.0.0.0`, `::`), in any
/// spelling the guard unwraps: it means this host, and is never dialled.
pub fn is_this_host(ip: IpAddr) -> bool {
    unwrapped(ip).is_unspecified()
}

fn unwrapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

// === impl Policy ===

impl Policy {
    /// Whether a decision by name lets the request go on to its addresses:
    /// it proceeds, or nothing named it and a `resolved` CIDR rule may
    /// still admit it by address.
    pub fn needs_addresses(&self, cand: &Candidate, by_name: &Decision) -> Result<(), Refusal> {
        let literal = cand.host.as_name().is_none();
        let cidr_may_admit = !literal && by_name.reason == Reason::NoMatch && self.has_resolved_cidrs;
        if by_name.verdict.proceeds() || cidr_may_admit {
            return Ok(());
        }
        Err(Refusal::Denied {
            decision: *by_name,
            by_address: literal,
        })
    }

    /// Judges every address of a destination, in order: the proxy's own
    /// listeners are never dialled; IP literals were judged by address
    /// already; a name's addresses are checked against CIDR rules and the
    /// special-purpose ranges. Returns the addresses that pass, in order.
    pub fn decide_addresses(
        &self,
        cand: &Candidate,
        by_name: Decision,
        resolved: Vec<Resolved>,
        own: &[SocketAddr],
    ) -> Result<Checked, Refusal> {
        let literal = cand.host.as_name().is_none();
        if literal && !by_name.verdict.proceeds() {
            return Err(Refusal::Denied {
                decision: by_name,
                by_address: true,
            });
        }
        let mut targets = resolved;
        // The unspecified address (`0.0.0.0`, `::`, in any spelling) means
        // this host: dialled, it reaches the proxy host's own services,
        // whatever CIDR rule covers it (`0.0.0.0/0`). Never dialled.
        targets.retain(|t| !is_self(own, t.addr) && !is_this_host(t.addr.ip()));
        if targets.is_empty() {
            return Err(Refusal::SelfLoop);
        }
        if literal {
            return Ok(Checked {
                targets,
                decision: by_name,
            });
        }
        let name_allowed = by_name.name_allowed();
        let mut decision = by_name;
        let mut refusal: Option<Decision> = None;
        // The addresses that pass are kept in place, in order.
        let mut kept = 0;
        for i in 0..targets.len() {
            let t = targets[i];
            let ctx = AddrContext {
                name_allowed,
                pinned: t.pinned,
            };
            let d = self.check_addr(t.addr.ip(), cand, ctx);
            if !d.verdict.proceeds() {
                refusal.get_or_insert(d);
                continue;
            }
            // The first address that passes says how: by a CIDR rule for a
            // name no host rule allowed, or as would-deny in report mode.
            if kept == 0
                && ((d.rule.is_some() && !name_allowed) || (name_allowed && d.verdict == Verdict::WouldDeny))
            {
                decision = d;
            }
            targets[kept] = t;
            kept += 1;
        }
        targets.truncate(kept);
        let ok = targets;
        if ok.is_empty() {
            let d = refusal.unwrap_or(by_name);
            return Err(Refusal::Denied {
                decision: d,
                by_address: d.reason != Reason::NoMatch,
            });
        }
        Ok(Checked {
            targets: ok,
            decision,
        })
    }

    /// Checks an address a name resolved to (or was pinned to) before it is
    /// dialled. Deny CIDR rules always apply; an allow CIDR rule admits the
    /// address if the name was allowed or the rule is marked `resolved`;
    /// special-purpose addresses are refused unless so admitted or pinned.
    pub fn check_addr(&self, ip: IpAddr, c: &Candidate, ctx: AddrContext) -> Decision {
        let d = self.decide_ip(ip, c, ctx, true);
        self.apply_mode(d)
    }

    /// An IP literal's decision: CIDR rules only (before the mode applies).
    pub(super) fn decide_literal(&self, ip: IpAddr, c: &Candidate) -> Decision {
        let ctx = AddrContext {
            name_allowed: false,
            pinned: false,
        };
        self.decide_ip(ip, c, ctx, false)
    }

    fn decide_ip(&self, ip: IpAddr, c: &Candidate, ctx: AddrContext, resolved: bool) -> Decision {
        let ip = canonical_ip(ip);
        let mut m = Matcher::new(self);
        self.cidrs.for_each_match(ip, |idx| {
            let rule = self.rule(idx);
            let RuleTarget::Cidr { net, resolved: r } = rule.target else {
                return;
            };
            if !resolved || r || ctx.name_allowed || rule.action == Action::Deny {
                m.consider(rule, idx, HostSpec::network(net.prefix_len()), c);
            }
        });
        let mut d = m.finish();
        let refused = matches!(d.verdict, Verdict::Deny | Verdict::WouldAllow);
        if refused && d.reason != Reason::DenyRule {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_s_own_address_in_every_spelling() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let own = [
            sa("10.0.0.5:3128"),
            sa("[::ffff:127.0.0.1]:8080"),
            sa("0.0.0.0:9000"),
        ];
        for spelling in [
            "10.0.0.5:3128",
            "[::ffff:10.0.0.5]:3128",
            "[::ffff:a00:5]:3128",
            "[64:ff9b::a00:5]:3128",
            "[2002:a00:5::]:3128",
            "127.0.0.1:8080",
            "[::ffff:127.0.0.1]:8080",
            "127.0.0.9:9000",
            "[::1]:9000",
            "[::ffff:127.0.0.2]:9000",
        ] {
            assert!(is_self(&own, sa(spelling)), "{spelling}");
        }
        for other in [
            "10.0.0.5:3129",
            "10.0.0.6:3128",
            "[::ffff:10.0.0.6]:3128",
            "127.0.0.2:8080",
        ] {
            assert!(!is_self(&own, sa(other)), "{other}");
        }
    }
}
