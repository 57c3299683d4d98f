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

/// Which allowed CONNECT tunnels are inspected when a CA is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Inspect {
    /// Those whose host path rules decide: the path must be seen.
    Paths,
    /// Every allowed tunnel.
    All,
    /// None.
    None,
}

/// How allowed traffic leaves when a parent proxy is configured
/// (`--upstream-proxy`): through it, or straight to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Through the parent proxy (the default when there is one).
    Parent,
    /// Directly: internal ranges, names the parent must not see.
    Direct,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Parent => "parent",
            Via::Direct => "direct",
        }
    }
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
    /// Inclusive ranges, sorted and merged; `1-65535` is `"any"`.
    Set(Box<[(u16, u16)]>),
}

impl Ports {
    /// Every port.
    pub fn any() -> Ports {
        Ports::Set(Box::new([(1, u16::MAX)]))
    }

    /// The set of these ranges (sorted, overlapping ones merged).
    pub fn from_ranges(mut v: Vec<(u16, u16)>) -> Ports {
        v.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ports::Set(merged.into_boxed_slice())
    }

    /// Whether an explicit set holds `port` (`Default` holds none here:
    /// its meaning depends on the request kind).
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Ports::Default => false,
            Ports::Set(r) => r.iter().any(|&(a, b)| (a..=b).contains(&port)),
        }
    }

    /// Whether every port of `other` is in this set.
    pub fn covers(&self, other: &Ports) -> bool {
        match (self, other) {
            (Ports::Default, Ports::Default) => true,
            (Ports::Set(a), Ports::Set(b)) => b
                .iter()
                .all(|&(lo, hi)| a.iter().any(|&(x, y)| x <= lo && hi <= y)),
            _ => false,
        }
    }

    /// The ranges of an explicit set.
    pub fn ranges(&self) -> &[(u16, u16)] {
        match self {
            Ports::Default => &[],
            Ports::Set(r) => r,
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::Default => f.write_str("default"),
            Ports::Set(r) if **r == [(1, u16::MAX)] => f.write_str("any"),
            Ports::Set(r) => {
                let v: Vec<String> = r
                    .iter()
                    .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                    .collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

/// The kinds of request a rule applies to, from the pattern's scheme:
/// `http://host` plain HTTP only, `https://host` TLS only (CONNECT, and
/// HTTPS decided with its path), a bare `host` both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kinds {
    Any,
    Http,
    Tls,
}

impl Kinds {
    pub fn allows(self, kind: Kind) -> bool {
        match self {
            Kinds::Any => true,
            Kinds::Http => kind == Kind::Http,
            Kinds::Tls => kind != Kind::Http,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kinds::Any => "http and tls",
            Kinds::Http => "http only",
            Kinds::Tls => "tls only",
        }
    }
}

/// A calendar day (UTC), as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u32);

impl Day {
    /// The day of a date, if it is one and not before 1970.
    pub fn from_ymd(year: i32, month: u8, day: u8) -> Option<Day> {
        let month = time::Month::try_from(month).ok()?;
        let d = time::Date::from_calendar_date(year, month, day).ok()?;
        let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?;
        u32::try_from((d - epoch).whole_days()).ok().map(Day)
    }

    /// The day of a Unix time.
    pub fn from_unix(secs: u64) -> Day {
        Day((secs / 86_400).min(u32::MAX as u64) as u32)
    }

    /// Unix time at the end of this day (when a rule expiring on it stops).
    pub fn end_unix(self) -> u64 {
        (self.0 as u64 + 1) * 86_400
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).map_err(|_| fmt::Error)?;
        let d = epoch + time::Duration::days(self.0 as i64);
        write!(f, "{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
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
    /// Plain HTTP, TLS, or both (from the pattern's scheme).
    pub kinds: Kinds,
    /// Plain HTTP (and inspected HTTPS) methods this rule applies to; all
    /// when `None`.
    pub methods: Option<Box<[http::Method]>>,
    /// `mode = "report"`: the rule only says what it would change.
    pub staged: bool,
    /// The last day (UTC) the rule matches.
    pub expires: Option<Day>,
    pub on_connect: OnConnect,
    /// Tunnels allowed by this rule must start with a TLS ClientHello.
    pub tls_only: bool,
    /// The rule's hosts may be inspected (`inspect = false` exempts them).
    pub inspect: bool,
    /// `via = "direct"` or `"parent"`; `None`: the policy's default.
    pub via: Option<Via>,
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
            set => set.contains(port),
        }
    }

    /// Whether the rule applies to requests with this method (CONNECT
    /// carries none the proxy can see).
    pub(super) fn method_ok(&self, kind: Kind, method: &http::Method) -> bool {
        match &self.methods {
            Some(list) if kind != Kind::Connect => list.contains(method),
            _ => true,
        }
    }

    /// Whether a CONNECT tunnel hides what the rule looks at (a path, or
    /// methods): only an inspected tunnel lets it be enforced.
    pub fn hidden_in_tunnel(&self) -> bool {
        !self.path().is_any() || self.methods.is_some()
    }

    /// Whether the rule no longer matches on `today`.
    pub fn expired(&self, today: Option<Day>) -> bool {
        matches!((self.expires, today), (Some(e), Some(t)) if t > e)
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
    fn port_sets_merge_and_cover() {
        let p = Ports::from_ranges(vec![(8000, 8999), (443, 443), (8500, 9100), (444, 444)]);
        assert_eq!(p.to_string(), "443-444,8000-9100");
        assert!(p.contains(8080) && p.contains(443) && !p.contains(80));
        assert!(Ports::any().covers(&p));
        assert!(!p.covers(&Ports::any()));
        assert_eq!(Ports::any().to_string(), "any");
    }

    #[test]
    fn days() {
        let d = Day::from_ymd(2027, 3, 31).unwrap();
        assert_eq!(d.to_string(), "2027-03-31");
        assert_eq!(Day::from_unix(d.end_unix() - 1), d);
        assert_eq!(Day::from_unix(d.end_unix()), Day(d.0 + 1));
        assert!(Day::from_ymd(2027, 2, 30).is_none());
    }

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
