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

mod builder;
mod compiled;
mod decision;
pub mod file;
mod guard;
mod names;
pub mod net;
pub mod normalize;
pub mod pattern;
mod pin;
mod rank;
mod rule;
mod trie;

pub use builder::{PolicyBuilder, PolicyError, PolicyErrors};
pub use compiled::Policy;
pub use decision::{Candidate, Decision, Flags, Matcher, Reason, Verdict};
pub use guard::{is_self, is_this_host, AddrContext, Checked, Refusal, Resolved};
pub use net::{special_range, SpecialRange};
pub use normalize::{normalize_host, normalize_path, Host, HostError, NormPath};
pub use pattern::{Destination, HostPattern, PathPattern, PatternError, Scheme};
pub use pin::Pin;
pub use rank::{HostSpec, PathSpec, Specificity};
pub use rule::{
    parse_word, Action, Day, Inspect, Kind, Kinds, Mode, OnConnect, Ports, Rule, RuleIdx, RuleTarget,
    SniMode, Via,
};
