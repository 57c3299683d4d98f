//! The TOML model of a policy file (serde), kept apart from the compiled
//! runtime types. Every rule keeps its byte span so that errors and rule ids
//! can name the line it came from.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A whole policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `enforce` (default) or `report`.
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// What a CONNECT to a host whose matching rules all carry paths gets:
    /// `allow` (flagged `path_not_enforced`) or `deny` (default).
    #[serde(default)]
    pub path_rules_on_connect: Option<Spanned<String>>,
    /// CONNECT tunnels whose TLS ClientHello names another host than the
    /// CONNECT target: `enforce` (close them, default), `log`, or `off`.
    #[serde(default)]
    pub tunnel_sni: Option<Spanned<String>>,
    /// Which allowed CONNECT tunnels a loaded CA inspects: `paths`
    /// (default: those whose host path rules decide), `all`, or `none`.
    #[serde(default)]
    pub inspect: Option<Spanned<String>>,
    /// With a parent proxy (`--upstream-proxy`): how allowed traffic
    /// leaves by default, `parent` (default) or `direct`.
    #[serde(default)]
    pub via: Option<Spanned<String>>,
    /// Optional human description.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub allow: Vec<Spanned<RuleEntry>>,
    #[serde(default)]
    pub deny: Vec<Spanned<RuleEntry>>,
    /// Static resolve map: `"host[:port]" = "ip[:port]"`.
    #[serde(default)]
    pub resolve: BTreeMap<String, Spanned<String>>,
}

/// One entry of `allow` or `deny`: either a bare pattern string, as vendors
/// publish them, or a table with options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleEntry {
    Pattern(String),
    Table(Box<RuleTable>),
}

/// A rule written as a table. Exactly one of `host`, `hosts`, `cidr`,
/// `cidrs` is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    pub name: Option<String>,
    pub comment: Option<String>,
    pub host: Option<String>,
    /// Each with its place in the file: a long list reports the line of
    /// the entry, not of the table.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    pub cidr: Option<String>,
    #[serde(default)]
    pub cidrs: Vec<Spanned<String>>,
    /// Ports; replaces the default ports (and conflicts with a port written
    /// in the pattern): a list of ports and `"A-B"` ranges, or `"any"`.
    pub ports: Option<PortsSpec>,
    /// Plain HTTP methods the rule applies to.
    pub methods: Option<Vec<String>>,
    /// `"report"`: stage the rule (log what it would change, change nothing).
    pub mode: Option<String>,
    /// The last day the rule matches (a TOML date, UTC).
    pub expires: Option<toml::value::Datetime>,
    /// CIDR rules only: also allow names whose resolved address is inside.
    #[serde(default)]
    pub resolved: bool,
    /// Per-rule override of `path_rules_on_connect`.
    pub on_connect: Option<String>,
    /// Tunnels this rule allows must carry TLS (a ClientHello first).
    #[serde(default)]
    pub tls_only: bool,
    /// `false` exempts the rule's hosts from TLS inspection (pinned apps, mTLS).
    pub inspect: Option<bool>,
    /// `direct`: never through the parent proxy; `parent`: always.
    pub via: Option<String>,
}

/// `ports = [443, "8000-8999"]` or `ports = "any"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortsSpec {
    Word(String),
    List(Vec<PortItem>),
}

/// One entry of a ports list: a port, or a range `"A-B"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortItem {
    Port(i64),
    Range(String),
}

impl<'de> Deserialize<'de> for RuleEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RuleEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a destination pattern string or a rule table")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RuleEntry, E> {
                Ok(RuleEntry::Pattern(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RuleEntry, A::Error> {
                RuleTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| RuleEntry::Table(Box::new(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RuleEntry, A::Error> {
                Err(de::Error::custom(
                    "nested list: give each rule as a string or a table",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// Maps byte offsets to 1-based line numbers in O(log lines).
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(src: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            src.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

/// 1-based line of a byte offset (for one-off lookups).
pub fn line_of(src: &str, offset: usize) -> usize {
    LineIndex::new(src).line(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_tables_mix() {
        let src = r#"
mode = "report"
allow = [
  "unpkg.com",
  { host = "sftp.example.com", ports = [22], name = "sftp" },
]
[[deny]]
host = "bad.example.com"
"#;
        let f: PolicyFile = toml::from_str(src).unwrap();
        assert_eq!(f.allow.len(), 2);
        assert_eq!(f.allow[0].get_ref(), &RuleEntry::Pattern("unpkg.com".into()));
        assert_eq!(line_of(src, f.allow[0].span().start), 4);
        assert_eq!(line_of(src, f.allow[1].span().start), 5);
        assert!(f.deny.len() == 1);
        assert_eq!(line_of(src, 0), 1);
        assert_eq!(line_of(src, 1), 2);
        assert_eq!(line_of(src, src.len()), src.lines().count() + 1);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = toml::from_str::<PolicyFile>("allow = [{ hots = \"a.com\" }]").unwrap_err();
        assert!(e.to_string().contains("hots"), "{e}");
        let e = toml::from_str::<PolicyFile>("mod = \"report\"").unwrap_err();
        assert!(e.to_string().contains("mod"), "{e}");
    }
}
