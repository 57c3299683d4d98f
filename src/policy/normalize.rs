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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// A normalised request path. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NormPath {
    /// Canonical path, always starting with `/`.
    pub path: String,
    /// The same path with `;` parameters removed from each segment, when it
    /// had any; deny rules match this spelling too.
    pub stripped: Option<String>,
    /// Servers may disagree on what this path names.
    pub ambiguous: bool,
}

impl NormPath {
    /// Segments of the canonical path (a trailing slash gives an empty last
    /// segment, which prefix matching ignores).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        segments_of(&self.path)
    }
}

pub(crate) fn segments_of(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .filter(|s| !s.is_empty())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Whether the path, with every percent-escape decoded, is valid UTF-8
/// (which rules out overlong encodings and surrogates). Paths of plain
/// ASCII with no escape of a byte above 0x7f are, without decoding.
fn decodes_to_utf8(raw: &str) -> bool {
    let b = raw.as_bytes();
    let high = |i: usize| b.get(i + 1).copied().and_then(hex_val).is_some_and(|h| h >= 8);
    if !b
        .iter()
        .enumerate()
        .any(|(i, &c)| c >= 0x80 || (c == b'%' && high(i)))
    {
        return true;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let pair = (
            b.get(i + 1).copied().and_then(hex_val),
            b.get(i + 2).copied().and_then(hex_val),
        );
        match (b[i], pair) {
            (b'%', (Some(h), Some(l))) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&out).is_ok()
}

/// Normalises the path part of a request target (anything from `?` on is
/// dropped). See the module documentation for the rules.
pub fn normalize_path(raw: &str) -> NormPath {
    let raw = raw.split(['?', '#']).next().unwrap_or("");
    // Most paths are already canonical: kept as they are, in one copy.
    if is_canonical(raw) {
        return NormPath {
            path: raw.to_string(),
            stripped: None,
            ambiguous: false,
        };
    }
    normalize_spelled(raw)
}

/// Whether `raw` is what the rules below make of it: it starts with `/`,
/// has no escape, backslash, `;`, control or non-ASCII byte, and no `.`,
/// `..` or empty segment (an empty last one is a trailing slash).
fn is_canonical(raw: &str) -> bool {
    let Some(body) = raw.strip_prefix('/') else {
        return false;
    };
    let plain = |b: u8| b > 0x20 && b < 0x7f && !matches!(b, b'%' | b'\\' | b';');
    if !body.bytes().all(plain) {
        return false;
    }
    let mut segments = body.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg == "." || seg == ".." || (seg.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// [`normalize_path`] for a path that needs its spelling changed (or
/// checked for ambiguity); `raw` is without query and fragment.
fn normalize_spelled(raw: &str) -> NormPath {
    // Bytes beyond ASCII, raw or escaped, must spell valid UTF-8: an
    // overlong form (`%c0%ae` for `.`) or a surrogate means something else
    // to a lenient server than to the matcher.
    let mut ambiguous = !decodes_to_utf8(raw);
    let mut has_params = false;

    // 1. Percent-decoding of unreserved characters, into segments.
    let mut decoded = String::with_capacity(raw.len() + 1);
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_val);
                let lo = bytes.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        let v = h * 16 + l;
                        if is_unreserved(v) {
                            decoded.push(v as char);
                        } else {
                            if matches!(v, b'/' | b'\\' | 0 | b'%') {
                                ambiguous = true;
                            }
                            decoded.push('%');
                            decoded.push(char::from_digit(h as u32, 16).unwrap_or('0').to_ascii_uppercase());
                            decoded.push(char::from_digit(l as u32, 16).unwrap_or('0').to_ascii_uppercase());
                        }
                        i += 3;
                        continue;
                    }
                    _ => {
                        ambiguous = true;
                        decoded.push_str("%25");
                    }
                }
            }
            b'\\' => {
                ambiguous = true;
                decoded.push_str("%5C");
            }
            b';' => {
                has_params = true;
                decoded.push(';');
            }
            // Control characters and non-ASCII bytes are kept, escaped.
            0..=0x20 | 0x7f..=0xff => {
                if b == 0 {
                    ambiguous = true;
                }
                decoded.push('%');
                decoded.push_str(&format!("{b:02X}"));
            }
            _ => decoded.push(b as char),
        }
        i += 1;
    }

    // 2. Dot-segment removal over the segments.
    let body = decoded.strip_prefix('/').unwrap_or(&decoded);
    let parts: Vec<&str> = body.split('/').collect();
    let n = parts.len();
    let mut out: Vec<&str> = Vec::with_capacity(n);
    let mut trailing_slash = false;
    for (idx, seg) in parts.iter().enumerate() {
        let last = idx + 1 == n;
        if has_params {
            let bare = seg.split(';').next().unwrap_or("");
            if seg.contains(';') && (bare == "." || bare == "..") {
                ambiguous = true;
            }
        }
        match *seg {
            "." => trailing_slash = last,
            ".." => {
                out.pop();
                trailing_slash = last;
            }
            "" if !last => {
                // `//` inside a path: some servers merge slashes, some do not.
                if idx > 0 || !decoded.is_empty() {
                    ambiguous = true;
                }
            }
            "" => trailing_slash = true,
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let join = |segs: &mut dyn Iterator<Item = &str>| {
        let mut p = String::with_capacity(decoded.len() + 1);
        for s in segs {
            p.push('/');
            p.push_str(s);
        }
        if p.is_empty() || trailing_slash {
            p.push('/');
        }
        p
    };
    let path = join(&mut out.iter().copied());
    let stripped = has_params.then(|| join(&mut out.iter().map(|s| s.split(';').next().unwrap_or(""))));
    NormPath {
        path,
        stripped,
        ambiguous,
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

    fn p(s: &str) -> (String, bool) {
        let n = normalize_path(s);
        (n.path, n.ambiguous)
    }

    #[test]
    fn paths_remove_dot_segments_and_query() {
        assert_eq!(p("/recaptcha/../search"), ("/search".into(), false));
        assert_eq!(p("/recaptcha/%2e%2E/search"), ("/search".into(), false));
        assert_eq!(p("/a/./b/"), ("/a/b/".into(), false));
        assert_eq!(p("/a/b/.."), ("/a/".into(), false));
        assert_eq!(p("/../../x"), ("/x".into(), false));
        assert_eq!(p("/a?x=/../b"), ("/a".into(), false));
        assert_eq!(p(""), ("/".into(), false));
        assert_eq!(p("/"), ("/".into(), false));
        assert_eq!(p("/%7Euser/%41"), ("/~user/A".into(), false));
        assert_eq!(p("/a%2fb"), ("/a%2Fb".into(), true));
    }

    #[test]
    fn ambiguous_spellings_are_flagged() {
        for s in [
            "/recaptcha%2F..%2Fadmin",
            "/recaptcha\\..\\admin",
            "/recaptcha/..%5Cadmin",
            "/recaptcha/%252e%252e/admin",
            "/recaptcha//../admin",
            "/recaptcha/..;/admin",
            "/recaptcha/%zz",
            "/a%00b",
            // Overlong UTF-8 for `.` (lenient servers decode them as `..`),
            // a surrogate, a lone continuation byte, raw invalid bytes.
            "/recaptcha/%c0%ae%c0%ae/search",
            "/recaptcha/%e0%80%ae%e0%80%ae/search",
            "/recaptcha/%C0%AE./search",
            "/a/%ed%a0%80",
            "/a/%80",
        ] {
            assert!(normalize_path(s).ambiguous, "{s}");
        }
        // Well-formed UTF-8, escaped or not, is not ambiguous.
        for s in ["/caf%C3%A9", "/café", "/%E2%82%AC/x"] {
            assert!(!normalize_path(s).ambiguous, "{s}");
        }
    }

    #[test]
    fn params_are_stripped_for_deny_matching() {
        let n = normalize_path("/admin;jsessionid=1/x");
        assert_eq!(n.path, "/admin;jsessionid=1/x");
        assert_eq!(n.stripped.as_deref(), Some("/admin/x"));
        assert!(!n.ambiguous);
    }

    #[test]
    fn canonical_paths_are_kept_as_the_full_rules_would_write_them() {
        // Every path over an alphabet of the bytes that matter, up to five
        // long: the shortcut agrees with the full rules wherever it applies.
        let alphabet = ["/", "a", ".", "%2e", ";", "\\", " ", "\u{e9}"];
        let mut paths = vec![String::new()];
        let mut kept = 0;
        for _ in 0..5 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for p in &longer {
                if is_canonical(p) {
                    kept += 1;
                    assert_eq!(normalize_spelled(p), normalize_path(p), "{p:?}");
                    assert_eq!(normalize_path(p).path, *p);
                }
            }
            paths = longer;
        }
        assert!(kept > 40, "the shortcut applied to {kept} paths only");
        for p in ["/a/./b", "/a/../b", "/a//b", "//", "/a%2e", "/a;b", "a", ""] {
            assert!(!is_canonical(p), "{p:?}");
        }
        assert_eq!(normalize_path("/x/y/?q=1").path, "/x/y/");
    }
}
