//! Static resolve entries: `host[:port] = ip[:port]`, from the policy's
//! `[resolve]` table or `--resolve`.

use std::net::IpAddr;

use super::normalize::{canonical_ip, normalize_host, Host};

/// A static resolve entry: `host[:port] = ip[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub host: String,
    /// Applies to this port only, when given.
    pub port: Option<u16>,
    pub addr: IpAddr,
    /// Dial this port instead of the requested one, when given.
    pub to_port: Option<u16>,
}

impl std::str::FromStr for Pin {
    type Err = String;
    /// Parses `host[:port]=ip[:port]` (curl's `--resolve` / `--connect-to`).
    fn from_str(s: &str) -> Result<Self, String> {
        let (lhs, rhs) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected host[:port]=ip[:port]"))?;
        Pin::parse(lhs, rhs)
    }
}

impl Pin {
    pub fn parse(lhs: &str, rhs: &str) -> Result<Pin, String> {
        let port = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("invalid port {p:?}"))
        };
        let (host, hport) = match lhs.rsplit_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (lhs, None),
        };
        let host = match normalize_host(host).map_err(|e| format!("{host:?}: {e}"))? {
            Host::Name(n) => n,
            Host::Ip(_) => return Err(format!("{host:?}: pins map names, not addresses")),
        };
        let (addr, to_port) = if let Ok(ip) = rhs.parse::<IpAddr>() {
            (ip, None)
        } else if let Ok(sa) = rhs.parse::<std::net::SocketAddr>() {
            (sa.ip(), Some(sa.port()).filter(|&p| p != 0))
        } else {
            return Err(format!("{rhs:?}: expected ip or ip:port"));
        };
        Ok(Pin {
            host,
            port: hport,
            addr: canonical_ip(addr),
            to_port,
        })
    }
}
