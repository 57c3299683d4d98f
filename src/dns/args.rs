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
    /// Answer DNS here, UDP and TCP (repeatable): names the policy allows
    /// get their A/AAAA records from egressd's resolver, other names
    /// NXDOMAIN without a question sent upstream, other record types
    /// REFUSED. `transparent-rules` sends the pod's DNS here.
    #[arg(long = "dns-listen", env = "EGRESSD_DNS_LISTEN", value_delimiter = ',')]
    pub dns_listen: Vec<SocketAddr>,
    /// A zone answered from the DNS servers as asked, without the policy
    /// (e.g. cluster.local, for the cluster's services); repeatable. A hole
    /// the operator chooses: logged at start.
    #[arg(long = "dns-forward-zone", env = "EGRESSD_DNS_FORWARD_ZONE", value_delimiter = ',', value_parser = zone)]
    pub dns_forward_zone: Vec<String>,
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
            mark: None,
        }
    }
}

/// The DNS listener's settings, when `--dns-listen` was given.
#[derive(Debug, Clone, Default)]
pub struct ListenConfig {
    pub addrs: Vec<SocketAddr>,
    /// Zones forwarded without the policy.
    pub forward_zones: Vec<ForwardZone>,
    /// Where forwarded questions go.
    pub forward_to: Vec<SocketAddr>,
    /// The stub resolver's search domains: a name the policy refuses that
    /// is an allowed name with one appended is a search expansion,
    /// answered NXDOMAIN without a refusal logged.
    pub search: Vec<String>,
}

/// A zone answered from the DNS servers without the policy.
#[derive(Debug, Clone)]
pub struct ForwardZone {
    /// Lower case, no final dot.
    pub name: String,
    /// What its questions' events name as their rule: made once, so that
    /// every event shares it (the metrics count by it).
    pub rule: std::sync::Arc<str>,
}

impl ForwardZone {
    pub fn new(name: &str) -> ForwardZone {
        ForwardZone {
            name: name.to_string(),
            rule: format!("dns-forward-zone:{name}").into(),
        }
    }
}

impl DnsArgs {
    /// The DNS listener's settings; a forward zone needs servers to ask.
    pub fn listener(&self, servers: &Servers) -> Result<ListenConfig, String> {
        if self.dns_listen.is_empty() {
            if !self.dns_forward_zone.is_empty() {
                return Err("--dns-forward-zone needs --dns-listen".into());
            }
            return Ok(ListenConfig::default());
        }
        // Forward zones need servers to ask; report mode relays other
        // record types to them too.
        let forward_to = match servers.addresses() {
            Ok(a) => a,
            Err(e) if !self.dns_forward_zone.is_empty() => return Err(format!("--dns-forward-zone: {e}")),
            Err(_) => Vec::new(),
        };
        Ok(ListenConfig {
            addrs: self.dns_listen.clone(),
            forward_zones: self
                .dns_forward_zone
                .iter()
                .map(|z| ForwardZone::new(z))
                .collect(),
            forward_to,
            search: super::upstream::system_search(std::path::Path::new("/etc/resolv.conf")),
        })
    }
}

/// A zone name: lower case, no final dot.
fn zone(s: &str) -> Result<String, String> {
    let z = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() < 64
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if z.is_empty() || !z.split('.').all(label_ok) {
        return Err(format!("{s:?}: not a DNS zone name"));
    }
    Ok(z)
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
