//! The first bytes a client sends into a tunnel: a TLS ClientHello, parsed
//! just far enough to read the server name (SNI), and the judgement of
//! those bytes against what the tunnel was allowed for ([`judge`]). Pure:
//! the relay feeds it what it has read so far and learns whether to wait
//! for more, go on, or cut the tunnel.

use super::respond::ProxyError;
use crate::policy::{normalize_host, Host, SniMode};

/// What the first bytes of a tunnel are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBytes {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// Not a TLS handshake.
    NotTls,
    /// A ClientHello, with the server name it asks for, if any.
    ClientHello { sni: Option<String> },
    /// A TLS record that is not a well-formed ClientHello.
    Malformed,
}

/// The most bytes worth buffering to see a whole first record.
pub const MAX_RECORD: usize = 5 + 16 * 1024;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Classifies the first bytes of a tunnel. Only the first record is read;
/// a ClientHello split over several records is reported as `Malformed`.
pub fn inspect(buf: &[u8]) -> FirstBytes {
    let Some(&first) = buf.first() else {
        return FirstBytes::Incomplete;
    };
    if first != 0x16 {
        return FirstBytes::NotTls;
    }
    if buf.len() < 5 {
        return FirstBytes::Incomplete;
    }
    if buf[1] != 3 {
        return FirstBytes::NotTls;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if len > 16 * 1024 + 256 {
        return FirstBytes::Malformed;
    }
    if buf.len() < 5 + len {
        return FirstBytes::Incomplete;
    }
    match client_hello_sni(&buf[5..5 + len]) {
        Some(sni) => FirstBytes::ClientHello { sni },
        None => FirstBytes::Malformed,
    }
}

/// `Some(sni)` for a complete ClientHello handshake message.
fn client_hello_sni(record: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { b: record };
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let body_len = r.u24()?;
    let mut r = Reader { b: r.take(body_len)? };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.b.is_empty() {
        return Some(None); // no extensions
    }
    let mut exts = Reader { b: r.vec16()? };
    while !exts.b.is_empty() {
        let typ = exts.u16()?;
        let data = exts.vec16()?;
        if typ == 0 {
            let mut d = Reader { b: data };
            let mut list = Reader { b: d.vec16()? };
            while !list.b.is_empty() {
                let name_type = list.u8()?;
                let name = list.vec16()?;
                if name_type == 0 {
                    return Some(Some(String::from_utf8(name.to_vec()).ok()?));
                }
            }
            return Some(None);
        }
    }
    Some(None)
}

/// What the first client bytes of a tunnel must show.
#[derive(Debug, Clone)]
pub struct FirstCheck {
    /// The CONNECT target's name; `None` for IP literals (nothing to compare).
    pub target: Option<String>,
    pub sni: SniMode,
    /// The rule allows TLS tunnels only.
    pub tls_only: bool,
}

impl FirstCheck {
    /// A check that lets everything through (upgraded HTTP connections).
    pub const NONE: FirstCheck = FirstCheck {
        target: None,
        sni: SniMode::Off,
        tls_only: false,
    };

    /// Whether there is anything to look at.
    pub fn active(&self) -> bool {
        self.tls_only || (self.sni != SniMode::Off && self.target.is_some())
    }
}

/// The judgement of a tunnel's first bytes.
#[derive(Debug)]
pub enum Judgement {
    /// Not enough bytes to tell yet.
    NeedMore,
    /// Let the tunnel run; `sni` is the server name asked for, if any, and
    /// `mismatch` says it differs from the target (logged, `tunnel_sni = "log"`).
    Pass { sni: Option<String>, mismatch: bool },
    /// Cut the tunnel before anything reaches upstream.
    Refuse { sni: Option<String>, error: ProxyError },
}

/// Judges the first bytes a client sent (all of them so far) against the
/// tunnel's check.
pub fn judge(check: &FirstCheck, first: &[u8]) -> Judgement {
    match inspect(first) {
        FirstBytes::Incomplete if first.len() < MAX_RECORD => Judgement::NeedMore,
        FirstBytes::ClientHello { sni: Some(name) } => {
            let differs = check.sni != SniMode::Off
                && check.target.as_ref().is_some_and(
                    |target| !matches!(normalize_host(&name), Ok(Host::Name(n)) if n == *target),
                );
            match (differs, check.sni, &check.target) {
                (true, SniMode::Enforce, Some(target)) => Judgement::Refuse {
                    error: ProxyError::SniMismatch {
                        sni: name.clone(),
                        target: target.clone(),
                    },
                    sni: Some(name),
                },
                _ => Judgement::Pass {
                    sni: Some(name),
                    mismatch: differs,
                },
            }
        }
        FirstBytes::ClientHello { sni: None } => Judgement::Pass {
            sni: None,
            mismatch: false,
        },
        _ if check.tls_only => Judgement::Refuse {
            sni: None,
            error: ProxyError::NotTls,
        },
        _ => Judgement::Pass {
            sni: None,
            mismatch: false,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello record with the given SNI.
    pub fn hello(sni: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut list = vec![0u8];
            list.extend((n.len() as u16).to_be_bytes());
            list.extend(n);
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            exts.extend(0u16.to_be_bytes());
            exts.extend((data.len() as u16).to_be_bytes());
            exts.extend(data);
        }
        exts.extend(43u16.to_be_bytes()); // supported_versions
        exts.extend(3u16.to_be_bytes());
        exts.extend([2, 3, 4]);
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend(2u16.to_be_bytes());
        body.extend([0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn reads_sni_from_a_client_hello() {
        let h = hello(Some("www.qualtrics.com"));
        assert_eq!(
            inspect(&h),
            FirstBytes::ClientHello {
                sni: Some("www.qualtrics.com".into())
            }
        );
        assert_eq!(inspect(&hello(None)), FirstBytes::ClientHello { sni: None });
        for cut in [0, 1, 4, 5, 20, h.len() - 1] {
            assert_eq!(inspect(&h[..cut]), FirstBytes::Incomplete, "{cut}");
        }
        assert_eq!(inspect(b"SSH-2.0-OpenSSH_9.2\r\n"), FirstBytes::NotTls);
        assert_eq!(inspect(b"GET / HTTP/1.1\r\n"), FirstBytes::NotTls);
        let mut bad = h.clone();
        bad[5] = 2; // ServerHello, not ClientHello
        assert_eq!(inspect(&bad), FirstBytes::Malformed);
        let mut trunc = h.clone();
        let n = trunc.len();
        trunc[4] = (n - 5 - 3) as u8; // record claims less than the handshake needs
        trunc[3] = ((n - 5 - 3) >> 8) as u8;
        assert_eq!(inspect(&trunc[..n - 3]), FirstBytes::Malformed);
    }

    #[test]
    fn judges_sni_and_tls_only() {
        let check = |sni, tls_only| FirstCheck {
            target: Some("a.example.com".into()),
            sni,
            tls_only,
        };
        let h = hello(Some("A.Example.com."));
        assert!(matches!(
            judge(&check(SniMode::Enforce, false), &h),
            Judgement::Pass { mismatch: false, .. }
        ));
        assert!(matches!(
            judge(&check(SniMode::Enforce, false), &h[..9]),
            Judgement::NeedMore
        ));
        let other = hello(Some("b.example.com"));
        assert!(matches!(
            judge(&check(SniMode::Enforce, false), &other),
            Judgement::Refuse {
                error: ProxyError::SniMismatch { .. },
                ..
            }
        ));
        assert!(matches!(
            judge(&check(SniMode::Log, false), &other),
            Judgement::Pass { mismatch: true, .. }
        ));
        assert!(matches!(
            judge(&check(SniMode::Off, true), b"SSH-2.0-x\r\n"),
            Judgement::Refuse {
                error: ProxyError::NotTls,
                ..
            }
        ));
        assert!(matches!(
            judge(&check(SniMode::Off, false), b"SSH-2.0-x\r\n"),
            Judgement::Pass { sni: None, .. }
        ));
        assert!(matches!(
            judge(&check(SniMode::Enforce, true), &vec![0x16; MAX_RECORD]),
            Judgement::Refuse { .. }
        ));
    }
}
