//! How a response body is framed (RFC 9112 §6.3), from its head: pure.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};

use super::chunked::Chunked;
use crate::proxy::hop::{has_token, tokens};
use crate::proxy::respond::ProxyError;

/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (none for `HEAD`, `204`, `304`).
    Length(u64),
    Chunked(Chunked),
    /// Until the server closes the connection.
    Close,
}

/// How a response of `status` to a `method` request is framed, from its
/// fields; and whether the connection may carry another request after it.
/// A `Content-Length` beside `Transfer-Encoding` is removed: the latter
/// frames the message, and the next hop must not see both.
pub fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), ProxyError> {
    let bad = |m: &str| ProxyError::UpstreamResponse(m.into());
    let mut keep_alive = match version {
        Version::HTTP_10 => has_token(headers, header::CONNECTION, "keep-alive"),
        _ => !has_token(headers, header::CONNECTION, "close"),
    };
    if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 response"));
        }
        let chunked = tokens(headers, header::TRANSFER_ENCODING)
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        return Ok(if chunked {
            (Framing::Chunked(Chunked::Size), keep_alive)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                .ok_or_else(|| bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn fields(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let get = Method::GET;
        let ok = StatusCode::OK;
        let v11 = Version::HTTP_11;
        let f =
            |m: &Method, s, v, pairs: &[(&'static str, &'static str)]| framing(m, s, v, &mut fields(pairs));
        use Framing::{Close, Length};
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "5")]).unwrap(),
            (Length(5), true)
        );
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "5, 5")]).unwrap(),
            (Length(5), true)
        );
        assert!(f(&get, ok, v11, &[("content-length", "5"), ("content-length", "6")]).is_err());
        assert!(f(&get, ok, v11, &[("content-length", "+5")]).is_err());
        assert!(f(&get, ok, v11, &[("content-length", "")]).is_err());
        assert_eq!(
            f(&Method::HEAD, ok, v11, &[("content-length", "5")]).unwrap(),
            (Length(0), true)
        );
        assert_eq!(
            f(&get, StatusCode::NOT_MODIFIED, v11, &[("content-length", "5")]).unwrap(),
            (Length(0), true)
        );
        assert_eq!(
            f(&get, StatusCode::NO_CONTENT, v11, &[]).unwrap(),
            (Length(0), true)
        );
        assert_eq!(
            f(&get, ok, v11, &[("transfer-encoding", "gzip, Chunked")]).unwrap(),
            (Framing::Chunked(Chunked::Size), true)
        );
        assert_eq!(
            f(&get, ok, v11, &[("transfer-encoding", "gzip")]).unwrap(),
            (Close, false)
        );
        assert!(f(&get, ok, Version::HTTP_10, &[("transfer-encoding", "chunked")]).is_err());
        assert_eq!(f(&get, ok, v11, &[]).unwrap(), (Close, false));
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "5"), ("connection", "Close")]).unwrap(),
            (Length(5), false)
        );
        assert_eq!(
            f(&get, ok, Version::HTTP_10, &[("content-length", "5")]).unwrap(),
            (Length(5), false)
        );
        assert_eq!(
            f(
                &get,
                ok,
                Version::HTTP_10,
                &[("content-length", "5"), ("connection", "keep-alive")]
            )
            .unwrap(),
            (Length(5), true)
        );
        // Both: the coding frames it, the length is dropped, and the
        // connection is not trusted with another request.
        let mut h = fields(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        assert_eq!(
            framing(&get, ok, v11, &mut h).unwrap(),
            (Framing::Chunked(Chunked::Size), false)
        );
        assert!(!h.contains_key("content-length"));
    }
}
