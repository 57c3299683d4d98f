//! Paths, normalised as the module above describes ([`normalize_path`]).

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
