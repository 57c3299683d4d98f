//! Asking the upstream resolvers, with hickory's stub resolver: the
//! servers, search list, `ndots`, timeout and attempts of
//! `/etc/resolv.conf` (and the names of `/etc/hosts`), or the servers given
//! with `--dns-server`. Its own cache is off: [`super::cache`] is the one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::Resolver;

use super::cache::Answer;
use super::socket::Marked;

/// Where the upstream servers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// `/etc/resolv.conf` (or the file named), and `/etc/hosts`.
    System(std::path::PathBuf),
    /// These servers, and `/etc/hosts`.
    Given(Vec<SocketAddr>),
}

impl Servers {
    /// The servers' addresses, for relaying a question as it came.
    pub fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        match self {
            Servers::Given(a) => Ok(a.clone()),
            Servers::System(path) => {
                let (config, _) = system(path)?;
                let mut out: Vec<SocketAddr> = Vec::new();
                for ns in config.name_servers() {
                    let port = ns.connections.first().map_or(53, |c| c.port);
                    let a = SocketAddr::new(ns.ip, port);
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// The search domains of `path` (a resolv.conf): the suffixes the
/// system's stub resolver appends to a name with fewer dots than `ndots`.
pub fn system_search(path: &std::path::Path) -> Vec<String> {
    let Ok((config, _)) = system(path) else {
        return Vec::new();
    };
    config
        .search()
        .iter()
        .map(|n| n.to_ascii().trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// `/etc/resolv.conf` (or the file named), read as the system would.
fn system(path: &std::path::Path) -> Result<(ResolverConfig, ResolverOpts), String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    hickory_resolver::system_conf::parse_resolv_conf(text).map_err(|e| format!("{}: {e}", path.display()))
}

/// An upstream's answer: addresses or none, and for how long it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub answer: Answer,
    pub ttl: Duration,
}

/// Why there is no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the DNS servers did not answer in time")]
    Timeout,
    #[error("DNS: {0}")]
    Failed(String),
}

/// The stub resolver, built once, on the DNS thread's runtime.
pub struct Upstream {
    resolver: Resolver<Marked>,
}

impl Upstream {
    /// The stub resolver for `servers`, its sockets marked with `mark`.
    pub fn new(servers: &Servers, mark: Option<u32>) -> Result<Upstream, String> {
        let (config, mut opts) = match servers {
            Servers::System(path) => system(path)?,
            Servers::Given(addrs) => {
                let mut config = ResolverConfig::default();
                for a in addrs {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    config.add_name_server(ns);
                }
                (config, ResolverOpts::default())
            }
        };
        if config.name_servers().is_empty() {
            return Err(
                "no DNS servers configured (resolv.conf has no nameserver; give --dns-server)".into(),
            );
        }
        // egressd's cache is the one: answers are kept, bounded and served
        // stale there.
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Always;
        // The order of addresses to try is the dialler's.
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        let mut builder = Resolver::builder_with_config(config, Marked::new(mark));
        *builder.options_mut() = opts;
        let resolver = builder.build().map_err(|e| e.to_string())?;
        Ok(Upstream { resolver })
    }

    /// Asks for `name`'s A and AAAA records at once. A name with a dot is
    /// asked as it is, fully qualified: requests name hosts in full, and
    /// walking the search list would turn one question into many (a pod's
    /// `ndots:5` and three search domains made eight). A single label goes
    /// through the search list, as the system resolver would take it.
    pub async fn query(&self, name: &str) -> Result<Reply, UpstreamError> {
        let qname = if name.contains('.') {
            Name::from_ascii(format!("{name}."))
        } else {
            Name::from_ascii(name)
        }
        .map_err(|e| UpstreamError::Failed(format!("{name}: {e}")))?;
        let (v4, v6) = tokio::join!(
            self.resolver.lookup(qname.clone(), RecordType::A),
            self.resolver.lookup(qname, RecordType::AAAA)
        );
        combine(one(v4), one(v6))
    }
}

/// One record type's outcome: addresses with their TTL, none (with the
/// negative TTL and whether the name does not exist), or a failure.
enum Part {
    Addrs(Vec<IpAddr>, u32),
    /// `ttl`: the SOA's negative TTL, when the reply carried one.
    None {
        ttl: Option<u32>,
        nxdomain: bool,
    },
    Failed(UpstreamError),
}

fn one(r: Result<hickory_resolver::lookup::Lookup, NetError>) -> Part {
    match r {
        Ok(lookup) => {
            let mut ttl = u32::MAX;
            let addrs: Vec<IpAddr> = lookup
                .answers()
                .iter()
                .filter_map(|rec| {
                    let ip = rec.data.ip_addr()?;
                    ttl = ttl.min(rec.ttl);
                    Some(ip)
                })
                .collect();
            if addrs.is_empty() {
                Part::None {
                    ttl: None,
                    nxdomain: false,
                }
            } else {
                Part::Addrs(addrs, ttl)
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => Part::None {
            // Without an SOA there is no negative TTL (RFC 2308 §5): the
            // cache's minimum applies.
            ttl: nr.negative_ttl,
            nxdomain: nr.response_code == ResponseCode::NXDomain,
        },
        Err(NetError::Timeout) => Part::Failed(UpstreamError::Timeout),
        Err(e) => Part::Failed(UpstreamError::Failed(e.to_string())),
    }
}

/// The name's reply from its two parts: the addresses of both (AAAA and A
/// interleaved, RFC 8305 §4) for the shorter TTL; no addresses when
/// neither has any; a failure of either fails the whole only when the
/// other gave nothing.
fn combine(v4: Part, v6: Part) -> Result<Reply, UpstreamError> {
    let secs = |t: u32| Duration::from_secs(u64::from(t));
    match (v4, v6) {
        (Part::Addrs(a, t4), Part::Addrs(b, t6)) => Ok(Reply {
            answer: Answer::Addrs(interleave(b, a).into()),
            ttl: secs(t4.min(t6)),
        }),
        (Part::Addrs(a, t), other) | (other, Part::Addrs(a, t)) => {
            // The other family's negative TTL, when it has one, also bounds
            // how long "it has none" holds.
            let t = match other {
                Part::None { ttl: Some(n), .. } => t.min(n),
                _ => t,
            };
            Ok(Reply {
                answer: Answer::Addrs(a.into()),
                ttl: secs(t),
            })
        }
        (
            Part::None {
                ttl: t4,
                nxdomain: n4,
            },
            Part::None {
                ttl: t6,
                nxdomain: n6,
            },
        ) => Ok(Reply {
            answer: Answer::NoAddrs { nxdomain: n4 || n6 },
            ttl: secs(t4.into_iter().chain(t6).min().unwrap_or(0)),
        }),
        (Part::Failed(e), _) | (_, Part::Failed(e)) => Err(e),
    }
}

/// `first` and `second` alternating, starting with `first`.
fn interleave(first: Vec<IpAddr>, second: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(first.len() + second.len());
    let (mut a, mut b) = (first.into_iter(), second.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn both_families_combine_for_the_shorter_ttl() {
        let r = combine(
            Part::Addrs(ips(&["192.0.2.1", "192.0.2.2"]), 60),
            Part::Addrs(ips(&["2001:db8::1"]), 30),
        )
        .unwrap();
        assert_eq!(
            r.answer,
            Answer::Addrs(ips(&["2001:db8::1", "192.0.2.1", "192.0.2.2"]).into())
        );
        assert_eq!(r.ttl, Duration::from_secs(30));
        // One family with none: its negative TTL bounds the answer.
        let r = combine(
            Part::Addrs(ips(&["192.0.2.1"]), 300),
            Part::None {
                ttl: Some(20),
                nxdomain: false,
            },
        )
        .unwrap();
        assert_eq!(r.ttl, Duration::from_secs(20));
        // Without an SOA the other family bounds nothing.
        let r = combine(
            Part::Addrs(ips(&["192.0.2.1"]), 300),
            Part::None {
                ttl: None,
                nxdomain: false,
            },
        );
        assert_eq!(r.unwrap().ttl, Duration::from_secs(300));
        // Addresses from one family survive the other's failure.
        let r = combine(
            Part::Failed(UpstreamError::Timeout),
            Part::Addrs(ips(&["2001:db8::1"]), 9),
        );
        assert_eq!(r.unwrap().ttl, Duration::from_secs(9));
        let none = |nxdomain| Part::None {
            ttl: Some(5),
            nxdomain,
        };
        assert_eq!(
            combine(none(true), none(true)).unwrap().answer,
            Answer::NoAddrs { nxdomain: true }
        );
        assert_eq!(
            combine(none(false), Part::Failed(UpstreamError::Timeout)),
            Err(UpstreamError::Timeout)
        );
    }
}
