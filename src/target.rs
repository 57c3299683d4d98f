//! Targets as people and tools write them: `http://host/path`,
//! `https://host:8443/path`, `CONNECT host:port` or bare `host:port`.
//! Used by `check`, policy test cases and the audit tools.

use crate::policy::{Candidate, HostError, Kind};

/// Why a target could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?}: expected http://…, https://…, or host:port")]
    Syntax(String),
    #[error("{0:?}: unsupported scheme (http or https)")]
    Scheme(String),
    #[error("{0:?}: invalid port")]
    Port(String),
    #[error("{0:?}: invalid host: {1}")]
    Host(String, HostError),
}

/// A malformed `host:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid host:port")]
pub struct AuthorityError;

/// Splits `host[:port]` (IPv6 in brackets) into host and optional port.
pub fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), AuthorityError> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => {
                let rest = &authority[i + 1..];
                match rest.strip_prefix(':') {
                    Some(p) => (&authority[..=i], Some(p)),
                    None if rest.is_empty() => (&authority[..=i], None),
                    None => return Err(AuthorityError),
                }
            }
            None => return Err(AuthorityError),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(AuthorityError),
        },
    };
    Ok((host, port))
}

/// Parses a target into a normalised [`Candidate`].
pub fn parse_target(s: &str) -> Result<Candidate, TargetError> {
    let s = s.trim();
    let syntax = || TargetError::Syntax(s.to_string());
    if let Some((scheme, rest)) = s.split_once("://") {
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "http" => Kind::Http,
            "https" => Kind::Https,
            _ => return Err(TargetError::Scheme(s.to_string())),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        // Credentials in a URL are not part of the destination.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = split_host_port(authority).map_err(|_| TargetError::Port(s.to_string()))?;
        let path = if path.starts_with('/') { path } else { "/" };
        return Candidate::new(kind, host, port.unwrap_or(kind.default_port()), Some(path))
            .map_err(|e| TargetError::Host(s.to_string(), e));
    }
    let authority = s
        .strip_prefix("CONNECT ")
        .or_else(|| s.strip_prefix("connect "))
        .unwrap_or(s)
        .trim();
    if authority.is_empty() || authority.contains(['/', ' ']) {
        return Err(syntax());
    }
    let (host, port) = split_host_port(authority).map_err(|_| TargetError::Port(s.to_string()))?;
    let port = port.ok_or_else(syntax)?;
    Candidate::new(Kind::Connect, host, port, None).map_err(|e| TargetError::Host(s.to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Host;

    #[test]
    fn targets() {
        let c = parse_target("https://user:pw@WWW.Google.com:8443/recaptcha/../x?q=1").unwrap();
        assert_eq!(c.kind, Kind::Https);
        assert_eq!(c.host, Host::Name("www.google.com".into()));
        assert_eq!(c.port, 8443);
        assert_eq!(c.path.unwrap().path, "/x");
        let c = parse_target("http://example.com").unwrap();
        assert_eq!((c.port, c.path.unwrap().path.as_str()), (80, "/"));
        let c = parse_target("CONNECT [::1]:443").unwrap();
        assert_eq!(c.kind, Kind::Connect);
        assert_eq!(c.host, Host::Ip("::1".parse().unwrap()));
        assert!(parse_target("sftp.example.com:22").is_ok());
        for bad in [
            "example.com",
            "ftp://x",
            "http://x:0/",
            "http://x:99999/",
            "http://[::1/",
            "a b:1",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
