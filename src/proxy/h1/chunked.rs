//! The chunked transfer coding's decoder (RFC 9112 §7.1), as a state
//! machine over a buffer: pure, fuzzed (`fuzz/fuzz_targets/h1_response.rs`)
//! and tested with hyper's own table of chunk-size lines. Every line must
//! end in CRLF; a bare CR or LF anywhere in a chunk-size line (its
//! extensions included) or a trailer line is refused, as hyper refuses it:
//! a front end and a back end that split such a line differently disagree
//! on where the body ends.

use bytes::{Buf, BytesMut};

use crate::proxy::respond::ProxyError;

/// A chunk-size line, with its extensions; and all trailer lines together.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, with this much left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// In the trailer section, with this many bytes read of it.
    Trailers(usize),
    Done,
}

/// What one step of the chunked decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Data bytes at the front of the buffer: hand on this many.
    Data(usize),
    /// More bytes are needed.
    More,
    Done,
}

fn bad(m: &str) -> ProxyError {
    ProxyError::UpstreamResponse(format!("bad chunked body: {m}"))
}

impl Chunked {
    /// Decodes from the front of `buf`, consuming framing bytes (not data:
    /// [`Step::Data`] says how many to take).
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ProxyError> {
        loop {
            match *self {
                Chunked::Done => return Ok(Step::Done),
                Chunked::Data(0) => *self = Chunked::DataEnd,
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = (buf.len() as u64).min(left);
                    *self = Chunked::Data(left - n);
                    return Ok(Step::Data(n as usize));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Size => {
                    let Some((size, used)) = size_line(buf)? else {
                        return Ok(Step::More);
                    };
                    buf.advance(used);
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Trailers(read) => {
                    let Some(end) = line_end(buf).map_err(bad)? else {
                        if read + buf.len() > MAX_TRAILERS {
                            return Err(bad("trailers too large"));
                        }
                        return Ok(Step::More);
                    };
                    // Trailer fields are not passed on (the client did not
                    // ask for them, `TE: trailers` being hop-by-hop).
                    buf.advance(end + 2);
                    *self = if end == 0 {
                        Chunked::Done
                    } else if read + end + 2 > MAX_TRAILERS {
                        return Err(bad("trailers too large"));
                    } else {
                        Chunked::Trailers(read + end + 2)
                    };
                }
            }
        }
    }
}

/// Reads a chunk-size line from the front of `buf`: the size and the bytes
/// the line takes with its CRLF, or `None` until the line is whole.
/// Hex digits, then only spaces or tabs before `;` extensions, whose
/// content is not read.
pub fn size_line(buf: &[u8]) -> Result<Option<(u64, usize)>, ProxyError> {
    let Some(end) = line_end(buf).map_err(bad)? else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err(bad("chunk-size line too long"));
        }
        return Ok(None);
    };
    if end > MAX_CHUNK_LINE {
        return Err(bad("chunk-size line too long"));
    }
    let line = &buf[..end];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let before_ext = rest.iter().position(|&b| b == b';').map_or(rest, |i| &rest[..i]);
    let rest_ok = before_ext.iter().all(|&b| b == b' ' || b == b'\t');
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(bad("invalid chunk size"));
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        n << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    Ok(Some((size, end + 2)))
}

/// Where the CRLF that ends the first line of `buf` starts, once it is
/// there; a CR or LF that is not such a CRLF is an error.
fn line_end(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    let Some(i) = buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Ok(None);
    };
    match (buf[i], buf.get(i + 1)) {
        (b'\n', _) => Err("bare LF in a line"),
        (_, None) => Ok(None),
        (_, Some(b'\n')) => Ok(Some(i)),
        (_, Some(_)) => Err("bare CR in a line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper's chunk-size table (`proto/h1/decode.rs`,
    /// `test_read_chunk_size`): each line's size, or that it is refused.
    /// hyper tells a short read (`UnexpectedEof`) from a refusal; here a
    /// line still open is `Ok(None)`, to be read on.
    #[test]
    fn chunk_size_lines_as_hyper_reads_them() {
        let sizes = [
            ("1\r\n", 1),
            ("01\r\n", 1),
            ("0\r\n", 0),
            ("00\r\n", 0),
            ("A\r\n", 10),
            ("a\r\n", 10),
            ("Ff\r\n", 255),
            ("Ff   \r\n", 255),
            // Acceptable (if not fully valid) extensions do not change the size.
            ("1;extension\r\n", 1),
            ("a;ext name=value\r\n", 10),
            ("1;extension;extension2\r\n", 1),
            ("1;;;  ;\r\n", 1),
            ("2; extension...\r\n", 2),
            ("3   ; extension=123\r\n", 3),
            ("3   ;\r\n", 3),
            ("3   ;   \r\n", 3),
        ];
        for (line, size) in sizes {
            assert_eq!(
                size_line(line.as_bytes()).unwrap(),
                Some((size, line.len())),
                "{line:?}"
            );
        }
        // Not yet whole (hyper: UnexpectedEof at the end of its input).
        for line in ["F", "1;no CRLF", "1\r"] {
            assert_eq!(size_line(line.as_bytes()).unwrap(), None, "{line:?}");
        }
        let refused = [
            // Missing LF.
            "F\rF",
            // Missing digit.
            "\r\n\r\n",
            "\r\n",
            // Invalid hex digit.
            "X\r\n",
            "1X\r\n",
            "-\r\n",
            "-1\r\n",
            // Invalid extensions.
            "1 invalid extension\r\n",
            "1 A\r\n",
            "1;reject\nnewlines\r\n",
            // Overflow.
            "f0000000000000003\r\n",
        ];
        for line in refused {
            assert!(size_line(line.as_bytes()).is_err(), "{line:?}");
        }
    }

    fn decode(wire: &[u8], split: usize) -> Result<Vec<u8>, ProxyError> {
        let mut c = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(split) {
            buf.extend_from_slice(piece);
            loop {
                match c.step(&mut buf)? {
                    Step::Data(n) => out.extend_from_slice(&buf.split_to(n)),
                    Step::More => break,
                    Step::Done => return Ok(out),
                }
            }
        }
        Err(ProxyError::UpstreamResponse("incomplete".into()))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n1;ext=\"a;b\"\r\n \r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        for split in 1..wire.len() {
            assert_eq!(decode(wire, split).unwrap(), b"hello 0123456789", "split {split}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).unwrap(), b"");
        // hyper's single-read case.
        assert_eq!(
            decode(b"10\r\n1234567890abcdef\r\n0\r\n\r\n", 64).unwrap(),
            b"1234567890abcdef"
        );
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"-1\r\n",
            b"5 x\r\nhello\r\n",
            b"11111111111111111\r\n",
            // hyper: a chunk after which the zero is missing.
            b"1\r\nZ\r\n\r\n\r\n",
            // hyper: a trailer line with a bare CR.
            b"10\r\n1234567890abcdef\r\n0\r\nbad\r\r\n",
            // A bare LF in an extension, whatever the read boundaries.
            b"1;a\nb\r\nZ\r\n0\r\n\r\n",
        ] {
            for split in [1, 3, 64] {
                assert!(
                    decode(wire, split).is_err(),
                    "{:?} in pieces of {split}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }
}
