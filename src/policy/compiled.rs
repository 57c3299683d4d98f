//! The compiled policy: rules, the lookup structures built from them, and
//! the policy-wide settings. Decisions are in [`super::decision`] and
//! [`super::guard`]; building is [`super::builder`].

use std::sync::Arc;

use super::net::CidrTable;
use super::pin::Pin;
use super::rule::{Day, Inspect, Mode, OnConnect, Rule, RuleIdx, SniMode, Via};
use super::trie::HostTrie;

/// A compiled policy. Cheap to share behind an `Arc`. Its one mutable
/// field is [`Policy::today`], the day rule expiry is judged by: the pure
/// core has no clock, so the caller moves it on ([`Policy::set_today`], at
/// load and as each day begins) and every decision reads it. Everything
/// else is fixed when the policy is built.
#[derive(Debug)]
pub struct Policy {
    pub(super) rules: Vec<Rule>,
    pub(super) hosts: HostTrie,
    pub(super) cidrs: CidrTable,
    pub(super) has_resolved_cidrs: bool,
    /// Some rule is staged (`mode = "report"` on the rule).
    pub(super) has_staged: bool,
    /// The day rule expiry is judged by, set by the caller (the core has no
    /// clock); `u32::MAX` until set: nothing has expired.
    pub(super) today: std::sync::atomic::AtomicU32,
    pub(super) mode: Mode,
    pub(super) on_connect: OnConnect,
    pub(super) sni: SniMode,
    pub(super) inspect: Inspect,
    pub(super) via: Via,
    pub(super) pins: Vec<Pin>,
    pub(super) version: Arc<str>,
    pub(super) origin: String,
    pub(super) source: Arc<str>,
}

impl Policy {
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
    pub fn inspect(&self) -> Inspect {
        self.inspect
    }
    /// Rules that cannot work through a parent proxy: `resolved = true`
    /// CIDR rules admit names by their addresses, and through a parent
    /// egressd never resolves names (unless the rule says `via = "direct"`).
    pub fn unresolvable_through_parent(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| {
            matches!(r.target, super::rule::RuleTarget::Cidr { resolved: true, .. })
                && r.action == super::rule::Action::Allow
                && r.via.unwrap_or(self.via) == Via::Parent
        })
    }

    /// How traffic leaves through a parent when no rule says otherwise.
    pub fn default_via(&self) -> Via {
        self.via
    }
    /// A hash of the policy source: `sha256:` and 12 hex digits.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The version, shared (access events hold it without copying).
    pub fn version_shared(&self) -> Arc<str> {
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
    /// The day expiry is judged by, when one was set.
    pub fn today(&self) -> Option<Day> {
        match self.today.load(std::sync::atomic::Ordering::Relaxed) {
            u32::MAX => None,
            d => Some(Day(d)),
        }
    }

    /// Sets the day (UTC) rule expiry is judged by: at load, and as each
    /// day begins.
    pub fn set_today(&self, day: Day) {
        self.today.store(day.0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Size of the compiled index, for reports.
    pub fn node_count(&self) -> usize {
        self.hosts.node_count()
    }
}
