//! Rule patterns in the notation vendors publish.
//!
//! A destination pattern is `[scheme://]HOST[:PORT][/PATH]`:
//!
//! | HOST              | matches                                         |
//! |-------------------|-------------------------------------------------|
//! | `unpkg.com`       | that host only                                  |
//! | `*.qualtrics.com` | any subdomain, at any depth, **not** the apex   |
//! | `.qualtrics.com`  | the apex **and** any subdomain (Squid notation) |
//!
//! | PATH                          | matches                                   |
//! |-------------------------------|-------------------------------------------|
//! | none, `/`, `/*`, `/**`        | any path                                  |
//! | `/recaptcha`, `/recaptcha/*`  | `/recaptcha` and below, on segment bounds |
//! | `/v1/*/files` (other globs)   | glob: `*` stays in a segment, `**` spans  |
//!
//! Without a port a rule allows the scheme's default port: 80 for `http://`
//! requests, 443 for `https://` and `CONNECT`. A scheme in the pattern
//! (`https://host`) stands for its default port.

use std::fmt;
use std::str::FromStr;

use super::normalize::{normalize_host, normalize_path, validate_name, Host, HostError};

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `example.com`: that host.
    Exact(String),
    /// `*.example.com`: subdomains at any depth, not the apex.
    Subdomains(String),
    /// `.example.com`: the apex and its subdomains.
    ApexAndSubdomains(String),
}

impl HostPattern {
    /// The domain the pattern is anchored at.
    pub fn domain(&self) -> &str {
        match self {
            HostPattern::Exact(d) | HostPattern::Subdomains(d) | HostPattern::ApexAndSubdomains(d) => d,
        }
    }

    /// Naive check used by the reference matcher and by tools.
    pub fn is_match(&self, host: &str) -> bool {
        let sub = |d: &str| {
            host.len() > d.len() + 1 && host.ends_with(d) && host.as_bytes()[host.len() - d.len() - 1] == b'.'
        };
        match self {
            HostPattern::Exact(d) => host == d,
            HostPattern::Subdomains(d) => sub(d),
            HostPattern::ApexAndSubdomains(d) => host == d || sub(d),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(d) => f.write_str(d),
            HostPattern::Subdomains(d) => write!(f, "*.{d}"),
            HostPattern::ApexAndSubdomains(d) => write!(f, ".{d}"),
        }
    }
}

/// The path part of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Any,
    /// Normalised segments; matches the path itself and anything below it.
    Prefix(Vec<String>),
    /// A real glob, matched with `globset` against the normalised path.
    Glob(String),
}

impl PathPattern {
    pub fn is_any(&self) -> bool {
        matches!(self, PathPattern::Any)
    }

    /// Whether a canonical path (see [`super::normalize::NormPath::path`])
    /// lies under this prefix. Globs are matched elsewhere.
    pub fn prefix_matches(segs: &[String], path: &str) -> bool {
        let mut it = super::normalize::segments_of(path);
        segs.iter().all(|s| it.next() == Some(s.as_str()))
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Any => Ok(()),
            PathPattern::Prefix(segs) => {
                for s in segs {
                    write!(f, "/{s}")?;
                }
                Ok(())
            }
            PathPattern::Glob(g) => f.write_str(g),
        }
    }
}

/// The scheme a pattern was written with: it restricts the request kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed destination pattern: scheme, host, optional port, path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Option<Scheme>,
    pub host: HostPattern,
    /// The port written in the pattern, if any.
    pub port: Option<u16>,
    pub path: PathPattern,
}

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("unsupported scheme {0:?} (use http:// or https://, or none)")]
    Scheme(String),
    #[error("`*` matches every host; list the domains instead")]
    MatchAll,
    #[error("`*` may only stand alone as the first label (`*.example.com`)")]
    MisplacedWildcard,
    #[error("wildcard on the public suffix {0:?} would allow every domain under it")]
    PublicSuffixWildcard(String),
    #[error("{0:?} is an IP address: write it as a `cidr` rule")]
    IpAsHost(String),
    #[error("invalid host: {0}")]
    Host(#[from] HostError),
    #[error("invalid port {0:?} (must be 1-65535)")]
    Port(String),
    #[error("path must start with `/`")]
    PathStart,
    #[error("path {0:?} is ambiguous (encoded slash, backslash, `//`, double encoding or `;` dot-segment)")]
    AmbiguousPath(String),
    #[error("invalid glob: {0}")]
    Glob(String),
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', ']', '{', '}'])
}

/// Parses a host pattern (no port, no path).
pub fn parse_host_pattern(s: &str) -> Result<HostPattern, PatternError> {
    if s.is_empty() {
        return Err(PatternError::Empty);
    }
    if s == "*" || s == "*." || s == "." {
        return Err(PatternError::MatchAll);
    }
    let (ctor, rest, wildcard): (fn(String) -> HostPattern, &str, bool) =
        if let Some(r) = s.strip_prefix("*.") {
            (HostPattern::Subdomains, r, true)
        } else if let Some(r) = s.strip_prefix('.') {
            (HostPattern::ApexAndSubdomains, r, true)
        } else {
            (HostPattern::Exact, s, false)
        };
    if rest.contains('*') {
        return Err(PatternError::MisplacedWildcard);
    }
    let name = match normalize_host(rest)? {
        Host::Ip(_) => return Err(PatternError::IpAsHost(rest.to_string())),
        Host::Name(n) => n,
    };
    validate_name(&name)?;
    if wildcard {
        if let Some(suffix) = psl::suffix(name.as_bytes()) {
            if suffix.is_known() && suffix.as_bytes().len() == name.len() {
                return Err(PatternError::PublicSuffixWildcard(name));
            }
        }
    }
    Ok(ctor(name))
}

/// Parses a path pattern (starting with `/`).
pub fn parse_path_pattern(p: &str) -> Result<PathPattern, PatternError> {
    if p.is_empty() {
        return Ok(PathPattern::Any);
    }
    if !p.starts_with('/') {
        return Err(PatternError::PathStart);
    }
    // A trailing `/*` or `/**` on a plain prefix is prefix notation, not a glob.
    let base = p
        .strip_suffix("/**")
        .or_else(|| p.strip_suffix("/*"))
        .unwrap_or(p);
    if is_glob(base) {
        globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| PatternError::Glob(e.kind().to_string()))?;
        return Ok(PathPattern::Glob(p.to_string()));
    }
    let norm = normalize_path(base);
    if norm.ambiguous || norm.path.contains(';') {
        return Err(PatternError::AmbiguousPath(p.to_string()));
    }
    let segs: Vec<String> = norm.segments().map(str::to_string).collect();
    if segs.is_empty() {
        Ok(PathPattern::Any)
    } else {
        Ok(PathPattern::Prefix(segs))
    }
}

fn parse_port(s: &str) -> Result<u16, PatternError> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(PatternError::Port(s.to_string())),
    }
}

impl FromStr for Destination {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Some(Scheme::Http), rest),
                "https" => (Some(Scheme::Https), rest),
                other => return Err(PatternError::Scheme(other.to_string())),
            },
            None => (None, s),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                (&authority[..i], Some(parse_port(&authority[i + 1..])?))
            }
            _ => (authority, None),
        };
        if host.starts_with('[') {
            return Err(PatternError::IpAsHost(host.to_string()));
        }
        Ok(Destination {
            scheme,
            host: parse_host_pattern(host)?,
            port,
            path: parse_path_pattern(path)?,
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Some(Scheme::Http) => f.write_str("http://")?,
            Some(Scheme::Https) => f.write_str("https://")?,
            None => {}
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Destination {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn vendor_notation() {
        assert_eq!(d("unpkg.com").host, HostPattern::Exact("unpkg.com".into()));
        assert_eq!(d("unpkg.com").path, PathPattern::Any);
        assert_eq!(
            d("*.qualtrics.com/*").host,
            HostPattern::Subdomains("qualtrics.com".into())
        );
        assert_eq!(d("*.qualtrics.com/*").path, PathPattern::Any);
        assert_eq!(
            d(".qualtrics.com").host,
            HostPattern::ApexAndSubdomains("qualtrics.com".into())
        );
        assert_eq!(
            d("www.google.com/recaptcha").path,
            PathPattern::Prefix(vec!["recaptcha".into()])
        );
        assert_eq!(
            d("www.google.com/recaptcha/").path,
            PathPattern::Prefix(vec!["recaptcha".into()])
        );
        assert_eq!(
            d("www.google.com/maps/api/*").path,
            PathPattern::Prefix(vec!["maps".into(), "api".into()])
        );
        assert_eq!(d("sftp.example.com:22").port, Some(22));
        assert_eq!(d("a.example.com:8443/x").port, Some(8443));
        // A scheme restricts the kind of request; the port stays the kind's default.
        let https = d("https://a.example.com/x");
        assert_eq!((https.scheme, https.port), (Some(Scheme::Https), None));
        assert_eq!(d("http://a.example.com:8080").scheme, Some(Scheme::Http));
        assert_eq!(
            d("https://a.example.com:8443").to_string(),
            "https://a.example.com:8443"
        );
        assert_eq!(
            d("WWW.Example.COM.").host,
            HostPattern::Exact("www.example.com".into())
        );
        assert_eq!(
            d("api.example.com/v1/*/files").path,
            PathPattern::Glob("/v1/*/files".into())
        );
    }

    #[test]
    fn rejects_what_it_cannot_mean() {
        let bad = [
            ("", "empty"),
            ("*", "every host"),
            ("*.com", "public suffix"),
            ("*.co.uk", "public suffix"),
            ("*.github.io", "public suffix"),
            ("a.*.com", "first label"),
            ("foo*.example.com", "first label"),
            ("a..example.com", "empty label"),
            ("example.com:0", "port"),
            ("example.com:65536", "port"),
            ("example.com:http", "port"),
            ("10.0.0.1", "cidr"),
            ("[::1]:443", "cidr"),
            ("ftp://example.com", "scheme"),
            ("example.com/a/../..%2f", "ambiguous"),
            ("example.com/v1/[", "glob"),
        ];
        for (s, why) in bad {
            let err = s.parse::<Destination>().expect_err(s).to_string();
            assert!(err.contains(why), "{s}: {err}");
        }
    }
}
