//! Response heads: parsed from the bytes an upstream sent (untrusted),
//! with httparse, into `http`'s types. Pure: fuzzed (`fuzz/fuzz_targets/
//! h1_response.rs`) and tested on its own.

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use crate::proxy::respond::ProxyError;

/// Response heads larger than this are refused (hyper's client allows
/// about as much by default).
pub const MAX_HEAD: usize = 64 * 1024;
/// Header fields in a response head.
const MAX_HEADERS: usize = 100;

/// What the front of the buffer held.
#[derive(Debug)]
pub enum Parsed {
    /// An interim `1xx` answer, consumed: a final one follows.
    Interim,
    Head(http::response::Parts),
}

fn bad(msg: &str) -> ProxyError {
    ProxyError::UpstreamResponse(msg.into())
}

/// One response head from the front of `buf`, if it holds a whole one
/// (consumed). Its fields go into `reuse`'s allocation, cleared: the
/// request's fields, already sent, so a response allocates no map of its
/// own. Until a head is complete `reuse` is left as it is. `spans` is
/// scratch space kept between calls.
pub fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<[usize; 4]>,
    reuse: &mut HeaderMap,
) -> Result<Option<Parsed>, ProxyError> {
    // Uninitialised: filling the empty fields cost more than parsing a
    // typical head.
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let n = match config.parse_response_with_uninit_headers(&mut r, buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(bad("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(&format!("malformed response head: {e}"))),
    };
    let code = r.code.unwrap_or(0);
    if (100..200).contains(&code) {
        if code == 101 {
            return Err(bad("the upstream switched protocols unasked"));
        }
        buf.advance(n);
        return Ok(Some(Parsed::Interim));
    }
    let status = StatusCode::from_u16(code).map_err(|_| bad("bad status code"))?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let reason = r
        .reason
        .filter(|&r| Some(r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes().to_vec()).ok());
    // Offsets first: the field values then share the head's bytes
    // instead of each being copied.
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(r.headers.iter().map(|h| {
        [
            h.name.as_ptr() as usize - base,
            h.name.len(),
            h.value.as_ptr() as usize - base,
            h.value.len(),
        ]
    }));
    let head = buf.split_to(n).freeze();
    let mut headers = std::mem::take(reuse);
    headers.clear();
    headers.reserve(spans.len());
    for &[ns, nl, vs, vl] in spans.iter() {
        let name = &head[ns..ns + nl];
        let name = match usual_name(name) {
            Some(n) => n,
            None => HeaderName::from_bytes(name).map_err(|_| bad("bad header name"))?,
        };
        let value =
            HeaderValue::from_maybe_shared(head.slice(vs..vs + vl)).map_err(|_| bad("bad header value"))?;
        headers.append(name, value);
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    if let Some(reason) = reason {
        resp.extensions_mut().insert(reason);
    }
    Ok(Some(Parsed::Head(resp.into_parts().0)))
}

/// The fields nearly every response carries, spelled as servers spell
/// them (Capitalised or lower case): matched whole, without
/// `HeaderName::from_bytes`' lowering copy and search of all standard
/// names. Anything else goes through that.
fn usual_name(name: &[u8]) -> Option<HeaderName> {
    Some(match name {
        b"Date" | b"date" => header::DATE,
        b"Server" | b"server" => header::SERVER,
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Connection" | b"connection" => header::CONNECTION,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"ETag" | b"etag" => header::ETAG,
        b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Vary" | b"vary" => header::VARY,
        b"Expires" | b"expires" => header::EXPIRES,
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Location" | b"location" => header::LOCATION,
        b"Age" | b"age" => header::AGE,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_names_are_the_names_http_parses() {
        // Every standard name, as servers spell it and in lower case, and a
        // few that only look alike.
        let standard = [
            "Accept-Ranges",
            "Age",
            "Cache-Control",
            "Connection",
            "Content-Encoding",
            "Content-Length",
            "Content-Type",
            "Date",
            "ETag",
            "Expires",
            "Last-Modified",
            "Location",
            "Server",
            "Set-Cookie",
            "Transfer-Encoding",
            "Vary",
        ];
        let mut seen = 0;
        for n in standard {
            for spelled in [n.to_string(), n.to_ascii_lowercase()] {
                let want = HeaderName::from_bytes(spelled.as_bytes()).unwrap();
                assert_eq!(usual_name(spelled.as_bytes()), Some(want), "{spelled}");
                seen += 1;
            }
        }
        assert_eq!(seen, 32);
        // Others take the long way, or at least come out the same.
        for other in [
            "DATE",
            "Etag",
            "X-Date",
            "Dates",
            "date ",
            "Content-Length2",
            "",
            "Keep-Alive",
        ] {
            let got = usual_name(other.as_bytes());
            assert!(
                got.is_none() || got == HeaderName::from_bytes(other.as_bytes()).ok(),
                "{other}"
            );
        }
    }

    fn parse(wire: &[u8]) -> Result<Option<Parsed>, ProxyError> {
        let mut buf = BytesMut::from(wire);
        parse_head(&mut buf, &mut Vec::new(), &mut HeaderMap::new())
    }

    #[test]
    fn heads_parse_or_are_refused() {
        let Ok(Some(Parsed::Head(h))) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok")
        else {
            panic!("a plain head");
        };
        assert_eq!((h.status, h.version), (StatusCode::OK, Version::HTTP_11));
        assert_eq!(h.headers["content-length"], "2");
        assert_eq!(h.headers["x-a"], "b");
        assert!(matches!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Ok(Some(Parsed::Interim))
        ));
        assert!(matches!(parse(b"HTTP/1.1 200 OK\r\nX: y"), Ok(None)));
        for wire in [
            &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(parse(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert!(parse(&big).is_err(), "a head over the limit");
    }
}
