//! Compiled rules and the words a policy is written in (actions, modes,
//! request kinds, ports).

use std::fmt;
use std::sync::Arc;

use globset::GlobMatcher;
use ipnet::IpNet;
use serde::Deserialize;

use super::normalize::NormPath;
use super::pattern::{Destination, PathPattern};
use super::rank::{HostSpec, PathSpec, Specificity};

/// Index of a rule in its [`super::Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleIdx(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

/// Policy-wide mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Block what no rule allows.
    Enforce,
    /// Let it through, but decide and log it as `would-deny`.
    Report,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_word("mode", s)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum OnConnect {
    /// Allow the host and flag the decision `path_not_enforced`.
    #[serde(rename = "allow")]
    AllowHost,
    /// Deny the tunnel.
    #[serde(rename = "deny")]
    Deny,
}

/// What to do when a tunnel's TLS server name differs from its CONNECT target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SniMode {
    /// Close the tunnel (and log it).
    Enforce,
    /// Log it, let the tunnel run.
    Log,
    /// Do not look.
    Off,
}

/// Reads one word of a closed set, as the enum's serde derive spells them,
/// with an error that names what was expected: `unknown mode "block"
/// (enforce or report)`. The one parser of every such enum.
pub fn parse_word<T: serde::de::DeserializeOwned>(noun: &str, s: &str) -> Result<T, String> {
    T::deserialize(serde::de::value::StrDeserializer::<WordError>::new(s)).map_err(|e| match e {
        WordError::Unknown(expected) => {
            let mut list = expected.join(", ");
            if let Some(i) = list.rfind(", ") {
                list.replace_range(i..i + 2, " or ");
            }
            format!("unknown {noun} {s:?} ({list})")
        }
        WordError::Other(m) => m,
    })
}

#[derive(Debug)]
enum WordError {
    Unknown(&'static [&'static str]),
    Other(String),
}

impl fmt::Display for WordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WordError::Unknown(e) => write!(f, "expected one of {e:?}"),
            WordError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for WordError {}

impl serde::de::Error for WordError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        WordError::Other(msg.to_string())
    }
    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        WordError::Unknown(expected)
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

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Http => "http",
            Kind::Https => "https",
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
    pub(super) glob: Option<Box<GlobMatcher>>,
}

impl Rule {
    pub(super) fn port_ok(&self, kind: Kind, port: u16) -> bool {
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

    /// The rule's rank when its host matched with `host` specificity.
    pub(super) fn specificity(&self, host: HostSpec) -> Specificity {
        Specificity {
            host,
            path: PathSpec::of(self.path()),
        }
    }

    /// Whether a known (non-CONNECT) path satisfies this rule's path.
    pub(super) fn path_matches(&self, p: &NormPath) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_with_the_expected_set_named() {
        assert_eq!("report".parse::<Mode>(), Ok(Mode::Report));
        assert_eq!(
            "block".parse::<Mode>(),
            Err("unknown mode \"block\" (enforce or report)".to_string())
        );
        assert_eq!(
            parse_word::<OnConnect>("value", "allow"),
            Ok(OnConnect::AllowHost)
        );
        assert_eq!(
            parse_word::<SniMode>("value", "x"),
            Err("unknown value \"x\" (enforce, log or off)".to_string())
        );
    }
}
