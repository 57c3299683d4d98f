//! The resolver's command-line options (`egressd run`), and the
//! configuration they make.

use std::net::SocketAddr;
use std::time::Duration;

use super::cache::{Bounds, DEFAULT_CAPACITY};
use super::resolver::Config;
use super::upstream::Servers;
use crate::units::duration;

#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    /// A DNS server to ask instead of those of /etc/resolv.conf: IP or
    /// IP:PORT; repeatable (/etc/hosts is read either way).
    #[arg(long = "dns-server", env = "EGRESSD_DNS_SERVER", value_delimiter = ',', value_parser = server)]
    pub dns_server: Vec<SocketAddr>,
    /// The shortest time an answer is kept: a lower TTL is raised to it.
    #[arg(long, env = "EGRESSD_DNS_MIN_TTL", value_parser = duration, default_value = "1s")]
    pub dns_min_ttl: Duration,
    /// The longest time an answer is kept: a higher TTL is lowered to it.
    #[arg(long, env = "EGRESSD_DNS_MAX_TTL", value_parser = duration, default_value = "1h")]
    pub dns_max_ttl: Duration,
    /// How long past its TTL an answer is still used while the DNS servers
    /// fail or do not answer (logged as dns=stale); 0 turns it off.
    #[arg(long, env = "EGRESSD_DNS_STALE", value_parser = duration, default_value = "1h")]
    pub dns_stale: Duration,
    /// Names the cache keeps at most (the least recently used go first).
    #[arg(long, env = "EGRESSD_DNS_CACHE_SIZE", default_value_t = DEFAULT_CAPACITY)]
    pub dns_cache_size: usize,
}

impl DnsArgs {
    /// The resolver's configuration; `timeout` bounds each lookup.
    pub fn config(&self, timeout: Duration) -> Config {
        Config {
            servers: if self.dns_server.is_empty() {
                Servers::System("/etc/resolv.conf".into())
            } else {
                Servers::Given(self.dns_server.clone())
            },
            bounds: Bounds {
                min_ttl: self.dns_min_ttl,
                max_ttl: self.dns_max_ttl.max(self.dns_min_ttl),
                stale: self.dns_stale,
            },
            capacity: self.dns_cache_size.max(1),
            timeout,
        }
    }
}

/// `IP` (port 53) or `IP:PORT`.
pub fn server(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?}: not IP or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_addresses_with_port_53_by_default() {
        assert_eq!(server("192.0.2.53"), Ok("192.0.2.53:53".parse().unwrap()));
        assert_eq!(server("127.0.0.1:5353"), Ok("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(server("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(server("[::1]:5353"), Ok("[::1]:5353".parse().unwrap()));
        assert!(server("dns.example").is_err());
    }
}
