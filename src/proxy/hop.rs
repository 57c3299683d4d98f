//! Hop-by-hop header fields (RFC 9110 §7.6.1): which fields a proxy never
//! passes on, and the comma-separated tokens of `Connection`-like fields.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop fields (RFC 9110 §7.6.1), and the proxy's own. Names, not
/// strings: removing by a string parses and hashes it on every message.
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Where `k` is in [`HOP_BY_HOP`]: a match on the name's text (a length
/// switch, then one comparison) instead of ten `HeaderName` comparisons
/// for each field of every message.
fn hop_by_hop_index(k: &HeaderName) -> Option<usize> {
    Some(match k.as_str() {
        "connection" => 0,
        "proxy-connection" => 1,
        "keep-alive" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "http2-settings" => 7,
        "proxy-authorization" => 8,
        "proxy-authenticate" => 9,
        _ => return None,
    })
}

/// Removes hop-by-hop fields, including those the `Connection` field names.
/// Fields the proxy sets itself or that carry framing are never removed on
/// a client's say-so (`Connection: Host` does not drop `Host`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry one at most (`Connection: keep-alive`): one pass
    // over the names notes which are present, and only those are removed
    // (a removal hashes its name even when it is absent).
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Fields the `Connection` field names (it is HOP_BY_HOP[0]). `close`
    // names none, and the hop-by-hop names go below anyway: neither makes
    // a name (an unknown name is an allocation), so `Connection:
    // keep-alive` costs nothing.
    let named: Vec<HeaderName> = if present & 1 == 0 {
        Vec::new()
    } else {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP.iter().any(|h| t.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH)
            .collect()
    };
    for n in named {
        headers.remove(n);
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(n);
        }
    }
}

/// The comma-separated tokens of every `name` field, trimmed, empty ones
/// left out. Borrowed: every response's `Connection` is read through it.
pub fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a `name` field lists `token` (case-insensitively).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_names_are_found_by_their_text() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(n), Some(i), "{n}");
        }
        for n in [
            header::HOST,
            header::CONTENT_LENGTH,
            HeaderName::from_static("x-te"),
        ] {
            assert_eq!(hop_by_hop_index(&n), None, "{n}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, Host, Proxy-Authorization"),
            ("x-secret", "1"),
            ("host", "a.example.com"),
            ("proxy-authorization", "Basic abc"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["host", "x-kept"]);
        // An origin's usual `Connection: Keep-Alive` names nothing more.
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "Keep-Alive"),
            ("keep-alive", "timeout=5"),
            ("content-length", "2"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["content-length"]
        );
    }
}
