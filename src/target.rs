//! Targets as people, tools and clients write them: `http://host/path`,
//! `https://host:8443/path`, `CONNECT host:port` or bare `host:port`. The
//! one reader of destinations: the proxy ([`candidate`], [`connect_candidate`])
//! and the tools (`check`, policy cases, audits: [`parse_target`]) share it,
//! so they cannot read one target two ways.

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
    #[error("{0:?}: a backslash in the authority (browsers read the host before it)")]
    Backslash(String),
    /// Holds the target with its credentials cut out: they never reach an
    /// answer, a log line or an event.
    #[error(
        "{0:?}: credentials (userinfo) in the request target; a proxy request must not carry them (400)"
    )]
    Userinfo(String),
    #[error("{0:?}: CONNECT takes host:port only (no scheme, path or credentials)")]
    ConnectForm(String),
    #[error("{0:?}: CONNECT target needs host:port")]
    ConnectPort(String),
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
        // A byte loop: authorities are short, and `rsplit_once` goes
        // through the char searcher and `memrchr` (twice per request).
        match authority.bytes().rposition(|b| b == b':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
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

/// The destination of a request of `kind` to `authority` (`host[:port]`,
/// no userinfo) and `path`: a CONNECT needs its port; http and https take
/// their default one. A backslash anywhere in the authority is refused:
/// WHATWG URL parsers (browsers) end the host at it, others do not.
pub fn candidate(kind: Kind, authority: &str, path: Option<&str>) -> Result<Candidate, TargetError> {
    // One pass for the common case, where neither is present.
    if authority.bytes().any(|b| b == b'\\' || b == b'@') {
        return Err(if authority.contains('\\') {
            TargetError::Backslash(without_userinfo(authority).into_owned())
        } else {
            TargetError::Userinfo(without_userinfo(authority).into_owned())
        });
    }
    let (host, port) = split_host_port(authority).map_err(|_| TargetError::Port(authority.to_string()))?;
    let port = match (port, kind) {
        (Some(p), _) => p,
        (None, Kind::Connect) => return Err(TargetError::ConnectPort(authority.to_string())),
        (None, k) => k.default_port(),
    };
    Candidate::new(kind, host, port, path).map_err(|e| TargetError::Host(authority.to_string(), e))
}

/// A CONNECT request target, which must be in authority-form (RFC 9110
/// 9.3.6): `host:port`, nothing else.
pub fn connect_candidate(uri: &http::Uri) -> Result<Candidate, TargetError> {
    let shown = || without_userinfo(&uri.to_string()).into_owned();
    let authority = match (uri.scheme(), uri.path_and_query(), uri.authority()) {
        (None, None, Some(a)) => a.as_str(),
        _ => return Err(TargetError::ConnectForm(shown())),
    };
    if authority.contains('@') {
        return Err(TargetError::ConnectForm(shown()));
    }
    candidate(Kind::Connect, authority, None)
}

/// `s` with any userinfo in its authority redacted (`user:***@`, or
/// `***@` without a password): what is shown of a target that carried credentials. `s` may be a
/// URL, an authority, or either after a method (`CONNECT a:b@host:443`).
pub fn without_userinfo(s: &str) -> std::borrow::Cow<'_, str> {
    // Every event's target passes here: most have no `@` at all, and one
    // memchr settles them before the substring search below.
    if !s.as_bytes().contains(&b'@') {
        return s.into();
    }
    let start = s
        .find("://")
        .map(|i| i + 3)
        .or_else(|| s.rfind(' ').map(|i| i + 1))
        .unwrap_or(0);
    let rest = &s[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return s.into();
    };
    // `user:***@`: the user is shown, the password never; a userinfo with
    // no password may be a token itself, and is not shown at all.
    let shown = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{}{shown}{}", &s[..start], &rest[at..]).into()
}

/// Parses a target into a normalised [`Candidate`]. Credentials in a URL
/// (`https://user:pw@host/`) are refused, as the proxy answers them 400;
/// the error does not show them.
pub fn parse_target(s: &str) -> Result<Candidate, TargetError> {
    let s = s.trim();
    // `POST https://host/path`: a method, then a URL.
    if let Some((method, url)) = s.split_once(' ') {
        let is_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
        let url = url.trim_start();
        if is_method && method != "CONNECT" && url.contains("://") {
            let m = http::Method::from_bytes(method.as_bytes())
                .map_err(|_| TargetError::Syntax(s.to_string()))?;
            return parse_target(url).map(|c| c.with_method(m));
        }
    }
    let syntax = || TargetError::Syntax(s.to_string());
    let with = |e: TargetError| match e {
        TargetError::Host(_, h) => TargetError::Host(s.to_string(), h),
        TargetError::Port(_) => TargetError::Port(s.to_string()),
        TargetError::Backslash(_) => TargetError::Backslash(s.to_string()),
        other => other,
    };
    if let Some((scheme, rest)) = s.split_once("://") {
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "http" => Kind::Http,
            "https" => Kind::Https,
            _ => return Err(TargetError::Scheme(s.to_string())),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('\\') {
            return Err(TargetError::Backslash(s.to_string()));
        }
        if authority.contains('@') {
            return Err(TargetError::Userinfo(without_userinfo(s).into_owned()));
        }
        let path = if path.starts_with('/') { path } else { "/" };
        return candidate(kind, authority, Some(path)).map_err(with);
    }
    let authority = s
        .strip_prefix("CONNECT ")
        .or_else(|| s.strip_prefix("connect "))
        .unwrap_or(s)
        .trim();
    if authority.is_empty() || authority.contains(['/', ' ']) {
        return Err(syntax());
    }
    candidate(Kind::Connect, authority, None).map_err(|e| match e {
        TargetError::ConnectPort(_) => syntax(),
        e => with(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Host;

    #[test]
    fn connect_takes_authority_form_only() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(connect_candidate(&uri("a.example.com:443")).is_ok());
        for bad in [
            "http://a.example.com:443/",
            "https://a.example.com:443",
            "a.example.com",
            "/x",
        ] {
            assert!(connect_candidate(&uri(bad)).is_err(), "{bad}");
        }
        let e = candidate(Kind::Http, "user:secret@a.example.com", Some("/")).unwrap_err();
        assert_eq!(
            e.to_string(),
            TargetError::Userinfo("user:***@a.example.com".into()).to_string()
        );
        let e = connect_candidate(&uri("user:secret@a.example.com:443")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn targets() {
        let e = parse_target("https://user:pw@WWW.Google.com:8443/x").unwrap_err();
        assert!(matches!(e, TargetError::Userinfo(_)));
        assert!(!e.to_string().contains("pw"), "{e}");
        assert!(
            e.to_string().contains("https://user:***@WWW.Google.com:8443/x"),
            "{e}"
        );
        assert_eq!(
            without_userinfo("https://ghp_token@github.com/x"),
            "https://***@github.com/x"
        );
        assert_eq!(without_userinfo("CONNECT a:b@h:443"), "CONNECT a:***@h:443");
        assert_eq!(without_userinfo("https://h/x?u=a@b"), "https://h/x?u=a@b");
        let c = parse_target("https://WWW.Google.com:8443/recaptcha/../x?q=1").unwrap();
        assert_eq!(c.kind, Kind::Https);
        assert_eq!(c.host, Host::Name("www.google.com".into()));
        assert_eq!(c.port, 8443);
        assert_eq!(c.path.unwrap().path, "/x");
        let c = parse_target("POST https://example.com/x").unwrap();
        assert_eq!((c.kind, c.method.as_str()), (Kind::Https, "POST"));
        assert_eq!(
            parse_target("https://example.com/x").unwrap().method,
            http::Method::GET
        );
        let c = parse_target("http://example.com").unwrap();
        assert_eq!((c.port, c.path.unwrap().path.as_str()), (80, "/"));
        let c = parse_target("CONNECT [::1]:443").unwrap();
        assert_eq!(c.kind, Kind::Connect);
        assert_eq!(c.host, Host::Ip("::1".parse().unwrap()));
        assert!(parse_target("sftp.example.com:22").is_ok());
        for bad in [
            "example.com",
            "http://evil.example\\@good.example/x",
            "https://a\\b.example/",
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
