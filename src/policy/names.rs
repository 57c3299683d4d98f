//! What egressd's DNS listener may say about a name (pure): whether the
//! policy lets the name be answered at all, and which addresses of an
//! answer may reach the app. A connection to an answered address is still
//! decided by its own port and kind; answering only lets the app find it.

use std::cmp::Reverse;
use std::net::IpAddr;

use super::compiled::Policy;
use super::decision::{Decision, Flags, Reason, Verdict};
use super::guard::is_this_host;
use super::net::special_range;
use super::normalize::canonical_ip;
use super::rank::HostSpec;
use super::rule::{Action, Kinds, Ports, Rule, RuleIdx, RuleTarget};

impl Policy {
    /// Whether `name` (normalised) may be answered: some allow rule names
    /// it, on any port, kind or path, and no deny rule refuses the whole
    /// host. The rule that names it most specifically decides; a cloud
    /// metadata name needs an exact rule, as for requests. Report mode
    /// turns a refusal into would-deny.
    pub fn decide_name(&self, name: &str) -> Decision {
        let today = self.today();
        let (mut allow, mut deny) = (None::<(HostSpec, Reverse<RuleIdx>)>, None::<RuleIdx>);
        let mut expired = false;
        self.hosts.for_each_table(name, |reached| {
            let t = reached.table;
            for &idx in t.any.iter().chain(&t.with_path) {
                let rule = self.rule(idx);
                if rule.staged {
                    continue;
                }
                if rule.expired(today) {
                    expired = true;
                    continue;
                }
                match rule.action {
                    Action::Deny if whole_host(rule) => deny = deny.or(Some(idx)),
                    Action::Deny => {}
                    Action::Allow => {
                        let key = (reached.host_spec, Reverse(idx));
                        if allow.is_none_or(|a| key > a) {
                            allow = Some(key);
                        }
                    }
                }
            }
        });
        let d = match (deny, allow) {
            (Some(r), _) => Decision {
                verdict: Verdict::Deny,
                rule: Some(r),
                reason: Reason::DenyRule,
                flags: Flags::default(),
            },
            (None, Some((_, Reverse(r)))) => Decision {
                verdict: Verdict::Allow,
                rule: Some(r),
                reason: Reason::Allowed,
                flags: Flags::default(),
            },
            (None, None) if expired => Decision::denied(Reason::RuleExpired, Flags::default()),
            (None, None) => Decision::denied(Reason::NoMatch, Flags::default()),
        };
        self.apply_mode(self.guard_name(name, d))
    }

    /// The decision for a DNS question of a type other than an address's
    /// (TXT, MX, ...): refused, would-deny in report mode.
    pub fn decide_query_type(&self) -> Decision {
        self.apply_mode(Decision::denied(Reason::QueryType, Flags::default()))
    }

    /// Whether `ip` may be given out in an answer: never the unspecified
    /// address; a special-purpose address (private, loopback, link-local,
    /// metadata, ...) only where an allow CIDR rule covers it, since a
    /// public name that answers one is how DNS rebinding reaches inside.
    pub fn answerable(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        if is_this_host(ip) {
            return false;
        }
        if special_range(ip).is_none() {
            return true;
        }
        let mut allowed = false;
        let today = self.today();
        self.cidrs.for_each_match(ip, |idx| {
            let rule = self.rule(idx);
            let cidr = matches!(rule.target, RuleTarget::Cidr { .. });
            allowed |= cidr && rule.action == Action::Allow && !rule.staged && !rule.expired(today);
        });
        allowed
    }
}

/// A deny rule that refuses the host on every port, kind, path and method:
/// the name itself is refused.
fn whole_host(rule: &Rule) -> bool {
    let every_port = matches!(rule.ports, Ports::Default) || rule.ports == Ports::any();
    every_port && rule.kinds == Kinds::Any && rule.path().is_any() && rule.methods.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(toml, "names.toml").unwrap()
    }

    #[test]
    fn a_name_is_answered_when_some_rule_could_allow_it() {
        let p = policy(
            r#"
            allow = ["*.qualtrics.com/*", "www.google.com/recaptcha", "http://plain.test",
                     { host = "sftp.test", ports = [22] }]
            deny = ["evil.qualtrics.com", "www.qualtrics.com/admin"]
            "#,
        );
        for name in [
            "x.qualtrics.com",
            "www.google.com",
            "plain.test",
            "sftp.test",
            "www.qualtrics.com",
        ] {
            assert_eq!(p.decide_name(name).verdict, Verdict::Allow, "{name}");
        }
        let evil = p.decide_name("evil.qualtrics.com");
        assert_eq!((evil.verdict, evil.reason), (Verdict::Deny, Reason::DenyRule));
        for name in [
            "qualtrics.com.evil.test",
            "google.com",
            "secret-1234.evil.example",
        ] {
            let d = p.decide_name(name);
            assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::NoMatch), "{name}");
        }
        let report = policy("mode = \"report\"\nallow = [\"a.test\"]\n");
        assert_eq!(report.decide_name("b.test").verdict, Verdict::WouldDeny);
    }

    #[test]
    fn metadata_names_need_an_exact_rule() {
        let p = policy("allow = [\"*.internal\"]\n");
        assert!(!p.decide_name("metadata.google.internal").verdict.proceeds());
        assert_eq!(p.decide_name("db.internal").verdict, Verdict::Allow);
    }

    #[test]
    fn special_addresses_are_answered_only_under_a_cidr_rule() {
        let p = policy("allow = [\"a.test\", { cidr = \"10.1.0.0/16\" }]\n");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.answerable(ip("93.184.216.34")));
        assert!(p.answerable(ip("10.1.2.3")));
        for refused in [
            "10.2.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "fd00::1",
        ] {
            assert!(!p.answerable(ip(refused)), "{refused}");
        }
    }
}
