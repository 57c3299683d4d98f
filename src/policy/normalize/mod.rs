//! Normalisation of request hosts and paths before matching.
//!
//! Matching is only as safe as its inputs, so every host and path is put into
//! one canonical spelling first, and spellings whose meaning differs between
//! servers are marked *ambiguous* rather than guessed at.
//!
//! Hosts ([`normalize_host`]):
//! - one trailing dot is removed (`example.com.` is `example.com`);
//! - IPv6 literals in brackets and IPv4 literals are recognised and never
//!   matched as names. IPv4 is parsed the way browsers and `inet_aton` do
//!   (`127.1`, `0x7f.0.0.1`, `2130706433`), so that no spelling of an address
//!   reaches the resolver as a "name"; a host whose last label is numeric but
//!   is not a valid address is refused;
//! - ASCII is case-folded; non-ASCII names are converted to punycode (UTS 46),
//!   and punycode labels (`xn--`) must decode and pass UTS 46's checks;
//! - what remains must be a DNS name: labels of 1 to 63 characters from
//!   `a-z 0-9 - _`, 253 characters in all.
//!
//! Paths ([`normalize_path`]):
//! - the query string and fragment are not part of the path;
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded; other escapes are kept, with upper-case hex;
//! - dot-segments (`.`, `..`, also spelled `%2e`) are removed as RFC 3986 says;
//! - the path is *ambiguous* when servers disagree on what it names: it holds
//!   an encoded slash or backslash (`%2F`, `%5C`), a raw backslash, an encoded
//!   NUL or percent (`%00`, `%25`: double encoding), a bad escape, an empty
//!   segment (`//`), a dot-segment hidden behind `;` parameters (`..;x`), or
//!   bytes that, decoded, are not valid UTF-8 (overlong forms such as
//!   `%c0%ae` for `.`, surrogates).
//!   An ambiguous path never matches an allow rule with a path and always
//!   matches a deny rule with a path, so no spelling escapes a prefix.
//! - `;` parameters stay part of their segment for allow rules; deny rules
//!   also see the path with parameters stripped (`/admin;x` is `/admin`).

mod path;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) use path::segments_of;
pub use path::{normalize_path, NormPath};

/// A normalised destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lower-case ASCII (punycode), no trailing dot.
    Name(String),
    /// An IP literal. IPv4-mapped IPv6 addresses are stored as IPv4.
    Ip(IpAddr),
}

impl Host {
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("invalid IPv6 literal")]
    BadIpv6,
    #[error("numeric host that is not a valid IPv4 address")]
    BadIpv4,
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63 characters")]
    LabelTooLong,
    #[error("name longer than 253 characters")]
    NameTooLong,
    #[error("invalid character {0:?} in host")]
    BadChar(char),
    #[error("invalid internationalised name")]
    Idna,
}

/// Normalises a host as received in a request target or `Host` header
/// (without the port). See the module documentation for the rules.
pub fn normalize_host(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
        // Zone ids (`%eth0`) name local interfaces: never a valid egress target.
        let ip: Ipv6Addr = inner.parse().map_err(|_| HostError::BadIpv6)?;
        return Ok(Host::Ip(canonical_ip(IpAddr::V6(ip))));
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() {
        return Err(HostError::Empty);
    }
    let name: std::borrow::Cow<'_, str> = if trimmed.is_ascii() {
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            trimmed.to_ascii_lowercase().into()
        } else {
            trimmed.into()
        }
    } else {
        idna::domain_to_ascii_cow(trimmed.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| HostError::Idna)?
            .into_owned()
            .into()
    };
    if let Some(ip) = parse_ipv4_like(&name)? {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    // Punycode must decode, and pass UTS 46's checks, as browsers require:
    // `xn--0ca24w` is not a name anyone can register or a browser visit.
    if has_punycode_label(&name) {
        let checked = idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| HostError::Idna)?;
        if checked != name {
            return Err(HostError::Idna);
        }
    }
    validate_name(&name)?;
    Ok(Host::Name(name.into_owned()))
}

/// Checks that `name` (lower-case ASCII, no trailing dot) is a DNS name.
/// One pass over the bytes: every request's host goes through it.
pub(crate) fn validate_name(name: &str) -> Result<(), HostError> {
    if name.len() > 253 {
        return Err(HostError::NameTooLong);
    }
    let bytes = name.as_bytes();
    let (mut start, mut bad) = (0, None);
    for i in 0..=bytes.len() {
        match bytes.get(i) {
            Some(b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => {}
            Some(b) if *b != b'.' => {
                // The first byte of a character (the ones before are ASCII).
                bad = bad.or(Some(i));
            }
            // The end of a label: checked as a whole, emptiness first.
            _ => {
                let len = i - start;
                if len == 0 {
                    return Err(HostError::EmptyLabel);
                }
                if len > 63 {
                    return Err(HostError::LabelTooLong);
                }
                if let Some(j) = bad {
                    let c = name.get(j..).and_then(|s| s.chars().next()).unwrap_or('?');
                    return Err(HostError::BadChar(c));
                }
                start = i + 1;
            }
        }
    }
    Ok(())
}

/// Whether a label of `name` is punycode (`xn--`).
fn has_punycode_label(name: &str) -> bool {
    name.starts_with("xn--") || name.as_bytes().windows(5).any(|w| w == b".xn--")
}

/// WHATWG "ends in a number" check and IPv4 parser: returns `Ok(None)` for a
/// name, `Ok(Some(ip))` for any IPv4 spelling, `Err` for a numeric-looking
/// host that is not a valid address.
fn parse_ipv4_like(name: &str) -> Result<Option<Ipv4Addr>, HostError> {
    let last = name
        .bytes()
        .rposition(|b| b == b'.')
        .map_or(name, |i| &name[i + 1..]);
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || ((last.starts_with("0x") || last.starts_with("0X"))
                && last[2..].bytes().all(|b| b.is_ascii_hexdigit())));
    if !numeric {
        return Ok(None);
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 4 {
        return Err(HostError::BadIpv4);
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        nums.push(parse_ipv4_number(p).ok_or(HostError::BadIpv4)?);
    }
    let (last, head) = nums.split_last().ok_or(HostError::BadIpv4)?;
    if head.iter().any(|&n| n > 255) {
        return Err(HostError::BadIpv4);
    }
    let width = 8 * (5 - nums.len() as u32);
    if width < 32 && *last >= (1u64 << width) {
        return Err(HostError::BadIpv4);
    }
    if *last > u32::MAX as u64 {
        return Err(HostError::BadIpv4);
    }
    let mut v: u64 = *last;
    for (i, n) in head.iter().enumerate() {
        v += n << (8 * (3 - i));
    }
    Ok(Some(Ipv4Addr::from(v as u32)))
}

fn parse_ipv4_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Stores IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 address
/// they are, so that one address has one spelling in every table.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_string())
    }

    #[test]
    fn names_are_checked_label_by_label() {
        let long = "a".repeat(63);
        assert_eq!(validate_name(&format!("{long}.com")), Ok(()));
        assert_eq!(
            validate_name(&format!("{long}b.com")),
            Err(HostError::LabelTooLong)
        );
        // Per label: emptiness, then length, then the first bad character.
        assert_eq!(
            validate_name(&format!("x*.{long}b.com")),
            Err(HostError::BadChar('*'))
        );
        assert_eq!(
            validate_name(&format!("{long}*.com")),
            Err(HostError::LabelTooLong)
        );
        assert_eq!(validate_name("a*b!.com"), Err(HostError::BadChar('*')));
        assert_eq!(validate_name("b\u{fc}cher.de"), Err(HostError::BadChar('\u{fc}')));
        assert_eq!(validate_name("a.-"), Ok(()));
        assert_eq!(validate_name("."), Err(HostError::EmptyLabel));
        assert_eq!(validate_name(""), Err(HostError::EmptyLabel));
        assert_eq!(validate_name(&"a.".repeat(127)), Err(HostError::NameTooLong));
        assert!(has_punycode_label("xn--bcher-kva.de") && has_punycode_label("a.xn--b.de"));
        assert!(!has_punycode_label("axn--b.de") && !has_punycode_label("xn-.de"));
    }

    #[test]
    fn hosts_fold_case_and_trailing_dot() {
        assert_eq!(normalize_host("WWW.Google.COM."), Ok(name("www.google.com")));
        assert_eq!(normalize_host("a_b.example.com"), Ok(name("a_b.example.com")));
        assert_eq!(normalize_host("."), Err(HostError::Empty));
        assert_eq!(normalize_host("a..b"), Err(HostError::EmptyLabel));
        assert_eq!(normalize_host("a.b.."), Err(HostError::EmptyLabel));
        assert_eq!(normalize_host("*.example.com"), Err(HostError::BadChar('*')));
        assert_eq!(normalize_host("exa mple.com"), Err(HostError::BadChar(' ')));
        assert_eq!(normalize_host("exa\u{0}mple.com"), Err(HostError::BadChar('\0')));
        assert!(normalize_host(&"a".repeat(64)).is_err());
        assert!(normalize_host(&format!("{}.com", "a.".repeat(130))).is_err());
    }

    #[test]
    fn hosts_idn_to_punycode() {
        assert_eq!(
            normalize_host("bücher.example"),
            Ok(name("xn--bcher-kva.example"))
        );
        assert_eq!(
            normalize_host("BÜCHER.example."),
            Ok(name("xn--bcher-kva.example"))
        );
    }

    #[test]
    fn ip_literals_in_every_spelling() {
        let lo = Host::Ip("127.0.0.1".parse().unwrap());
        for s in [
            "127.0.0.1",
            "127.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "127.0.0.1.",
            "0x7F000001",
        ] {
            assert_eq!(normalize_host(s), Ok(lo.clone()), "{s}");
        }
        assert_eq!(normalize_host("[::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(normalize_host("[::ffff:127.0.0.1]"), Ok(lo.clone()));
        assert_eq!(normalize_host("[::1"), Err(HostError::BadIpv6));
        assert_eq!(normalize_host("[fe80::1%eth0]"), Err(HostError::BadIpv6));
        assert_eq!(normalize_host("256.0.0.1"), Err(HostError::BadIpv4));
        assert_eq!(normalize_host("1.2.3.4.5"), Err(HostError::BadIpv4));
        assert_eq!(normalize_host("example.123"), Err(HostError::BadIpv4));
        assert_eq!(normalize_host("4294967296"), Err(HostError::BadIpv4));
        // Punycode that does not decode, or fails UTS 46, is no name.
        assert_eq!(normalize_host("xn--bcher-kva.com"), Ok(name("xn--bcher-kva.com")));
        assert_eq!(normalize_host("XN--Bcher-KVA.com"), Ok(name("xn--bcher-kva.com")));
        for bad in [
            "xn--0ca24w",
            "xn--0ca24w.example.com",
            "a.xn--zz.com",
            "xn--abc-.com",
        ] {
            assert_eq!(normalize_host(bad), Err(HostError::Idna), "{bad}");
        }
        // A name that merely contains digits is a name.
        assert_eq!(normalize_host("123.example"), Ok(name("123.example")));
    }
}
