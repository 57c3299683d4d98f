//! Specificity: which of several matching rules is the more specific. One
//! named, ordered type instead of numbers computed in several places, in
//! the shape of linkerd2-proxy's `HostMatch`/`PathMatch`: the derived `Ord`
//! is the ranking.

use super::pattern::{HostPattern, PathPattern};

/// How closely a rule's host (or network) fits the request. Compared field
/// by field: a deeper zone wins, then an exact name over a wildcard at the
/// same depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostSpec {
    /// Labels of the pattern's name, or a network's prefix length.
    pub depth: u16,
    /// The pattern names the host itself, not a zone above it.
    pub exact: bool,
}

impl HostSpec {
    /// The specificity of `pattern`, which matches the normalised `host`.
    pub fn of(pattern: &HostPattern, host: &str) -> HostSpec {
        let exact = match pattern {
            HostPattern::Exact(_) => true,
            HostPattern::Subdomains(_) => false,
            HostPattern::ApexAndSubdomains(d) => host == d,
        };
        HostSpec::at(label_count(pattern.domain()), exact)
    }

    /// The specificity of a pattern hanging `depth` labels down the trie.
    pub fn at(depth: usize, exact: bool) -> HostSpec {
        HostSpec {
            depth: depth.min(u16::MAX as usize) as u16,
            exact,
        }
    }

    /// A CIDR rule: longer prefixes are more specific.
    pub fn network(prefix_len: u8) -> HostSpec {
        HostSpec {
            depth: prefix_len as u16,
            exact: false,
        }
    }
}

/// How closely a rule's path fits: more segments win, then a literal prefix
/// over a glob of as many segments; any path is the least specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PathSpec {
    pub segments: u16,
    pub literal: bool,
}

impl PathSpec {
    pub fn of(path: &PathPattern) -> PathSpec {
        let (segments, literal) = match path {
            PathPattern::Any => (0, false),
            PathPattern::Glob(g) => (g.matches('/').count(), false),
            PathPattern::Prefix(s) => (s.len(), true),
        };
        PathSpec {
            segments: segments.min(u16::MAX as usize) as u16,
            literal,
        }
    }
}

/// A rule's rank for one request: host first, then path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Specificity {
    pub host: HostSpec,
    pub path: PathSpec,
}

fn label_count(domain: &str) -> usize {
    domain.bytes().filter(|&b| b == b'.').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(p: &str, h: &str) -> HostSpec {
        HostSpec::of(&super::super::pattern::parse_host_pattern(p).unwrap(), h)
    }

    #[test]
    fn deeper_then_exact_then_longer_path() {
        assert!(host("www.google.com", "www.google.com") > host("*.google.com", "www.google.com"));
        assert!(host("*.a.google.com", "x.a.google.com") > host("google.com", "google.com"));
        assert!(host("a.google.com", "a.google.com") > host("*.a.google.com", "b.a.google.com"));
        assert!(host("*.x.google.com", "a.x.google.com") > host(".google.com", "google.com"));
        assert_eq!(host(".google.com", "google.com"), HostSpec::at(2, true));
        assert_eq!(host(".google.com", "a.google.com"), HostSpec::at(2, false));
        let path = |p: &str| PathSpec::of(&super::super::pattern::parse_path_pattern(p).unwrap());
        assert!(
            path("/a/b") > path("/a/*"),
            "a prefix beats a glob of as many segments"
        );
        assert!(path("/a/*/c") > path("/a/b"), "more segments win");
        assert!(path("/a") > PathSpec::of(&PathPattern::Any));
        assert!(HostSpec::network(24) > HostSpec::network(22));
    }
}
