//! Addresses: special-purpose ranges that are refused by default, and the
//! CIDR table that rules compile into.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use rustc_hash::FxHashMap;

use super::rule::RuleIdx;

/// A special-purpose range: destinations in it are refused unless a CIDR rule
/// allows them explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialRange {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    CloudMetadata,
    IetfProtocol,
    Documentation,
    Benchmarking,
    Multicast,
    Reserved,
    Broadcast,
    UniqueLocal,
    Discard,
}

impl SpecialRange {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialRange::Unspecified => "unspecified",
            SpecialRange::ThisNetwork => "this-network",
            SpecialRange::Loopback => "loopback",
            SpecialRange::Private => "private",
            SpecialRange::SharedCgnat => "shared-cgnat",
            SpecialRange::LinkLocal => "link-local",
            SpecialRange::CloudMetadata => "cloud-metadata",
            SpecialRange::IetfProtocol => "ietf-protocol",
            SpecialRange::Documentation => "documentation",
            SpecialRange::Benchmarking => "benchmarking",
            SpecialRange::Multicast => "multicast",
            SpecialRange::Reserved => "reserved",
            SpecialRange::Broadcast => "broadcast",
            SpecialRange::UniqueLocal => "unique-local",
            SpecialRange::Discard => "discard",
        }
    }
}

/// The one table of special-purpose networks (RFC 6890 and successors),
/// most specific first: the first entry containing an address classifies
/// it. The address guard and `lint` both read it.
pub const SPECIAL_NETS: &[(&str, SpecialRange)] = {
    use SpecialRange::*;
    &[
        ("169.254.169.254/32", CloudMetadata),
        ("255.255.255.255/32", Broadcast),
        ("0.0.0.0/32", Unspecified),
        ("0.0.0.0/8", ThisNetwork),
        ("10.0.0.0/8", Private),
        ("100.64.0.0/10", SharedCgnat),
        ("127.0.0.0/8", Loopback),
        ("169.254.0.0/16", LinkLocal),
        ("172.16.0.0/12", Private),
        ("192.0.0.0/24", IetfProtocol),
        ("192.0.2.0/24", Documentation),
        ("192.88.99.0/24", Reserved),
        ("192.168.0.0/16", Private),
        ("198.18.0.0/15", Benchmarking),
        ("198.51.100.0/24", Documentation),
        ("203.0.113.0/24", Documentation),
        ("224.0.0.0/4", Multicast),
        ("240.0.0.0/4", Reserved),
        ("::/128", Unspecified),
        ("::1/128", Loopback),
        ("fc00::/7", UniqueLocal),
        ("fe80::/10", LinkLocal),
        ("fec0::/10", LinkLocal),
        ("ff00::/8", Multicast),
        ("2001:db8::/32", Documentation),
        ("100::/64", Discard),
        ("64:ff9b:1::/48", Private),
        ("2001::/23", IetfProtocol),
    ]
};

/// IPv6 ranges that carry an IPv4 address (transition mechanisms): an
/// address in one is judged by the IPv4 address inside. Name, network, the
/// byte where the IPv4 address starts, and whether it is stored inverted.
pub const EMBEDDINGS: &[(&str, &str, usize, bool)] = &[
    ("ipv4-mapped", "::ffff:0:0/96", 12, false),
    ("ipv4-compatible", "::/96", 12, false),
    ("nat64", "64:ff9b::/96", 12, false),
    ("6to4", "2002::/16", 2, false),
    ("teredo", "2001::/32", 12, true),
];

/// Host names under which cloud metadata services answer; refused unless a
/// rule names them exactly.
pub const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// [`SPECIAL_NETS`], parsed once.
fn special_table() -> &'static [(IpNet, SpecialRange)] {
    static TABLE: std::sync::OnceLock<Vec<(IpNet, SpecialRange)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        SPECIAL_NETS
            .iter()
            .map(|(n, r)| (n.parse().expect("special-purpose table entry"), *r))
            .collect()
    })
}

/// [`EMBEDDINGS`], parsed once.
fn embedding_table() -> &'static [(&'static str, Ipv6Net, usize, bool)] {
    static TABLE: std::sync::OnceLock<Vec<(&'static str, Ipv6Net, usize, bool)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        EMBEDDINGS
            .iter()
            .map(|(name, n, at, inv)| (*name, n.parse().expect("embedding table entry"), *at, *inv))
            .collect()
    })
}

/// Every network an allow rule should not reach by accident, named: the
/// special-purpose ranges and the IPv6 ranges that embed IPv4 ones.
pub fn special_nets() -> impl Iterator<Item = (IpNet, &'static str)> {
    special_table().iter().map(|(n, r)| (*n, r.as_str())).chain(
        embedding_table()
            .iter()
            .map(|(name, n, _, _)| (IpNet::V6(*n), *name)),
    )
}

/// The IPv4 address carried inside an IPv6 one by a transition mechanism
/// ([`EMBEDDINGS`]); `::` and `::1` are IPv6's own.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if ip.is_unspecified() || ip.is_loopback() {
        return None;
    }
    let o = ip.octets();
    let (_, _, at, inverted) = embedding_table().iter().find(|e| e.1.contains(&ip))?;
    let b = |i: usize| if *inverted { !o[at + i] } else { o[at + i] };
    Some(Ipv4Addr::new(b(0), b(1), b(2), b(3)))
}

/// Classifies an address; `None` for an ordinary public unicast address.
/// IPv6 addresses that embed IPv4 are judged by the IPv4 inside.
pub fn special_range(ip: IpAddr) -> Option<SpecialRange> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    special_table()
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|e| e.1)
}

/// Rules keyed by network, looked up by address in time bounded by the
/// number of distinct prefix lengths (at most 33 for IPv4, 129 for IPv6),
/// whatever the number of rules. Longest prefixes are tried first.
#[derive(Debug, Default)]
pub struct CidrTable {
    v4: Vec<(u8, FxHashMap<u32, Vec<RuleIdx>>)>,
    v6: Vec<(u8, FxHashMap<u128, Vec<RuleIdx>>)>,
}

fn mask4(ip: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - len))
    }
}

fn mask6(ip: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        ip & (u128::MAX << (128 - len))
    }
}

impl CidrTable {
    pub fn insert(&mut self, net: IpNet, rule: RuleIdx) {
        fn slot<K>(
            v: &mut Vec<(u8, FxHashMap<K, Vec<RuleIdx>>)>,
            len: u8,
        ) -> &mut FxHashMap<K, Vec<RuleIdx>> {
            let i = match v.iter().position(|(l, _)| *l == len) {
                Some(i) => i,
                None => {
                    v.push((len, FxHashMap::default()));
                    v.sort_by_key(|e| std::cmp::Reverse(e.0));
                    v.iter().position(|(l, _)| *l == len).unwrap_or(0)
                }
            };
            &mut v[i].1
        }
        match net.trunc() {
            IpNet::V4(n) => slot(&mut self.v4, n.prefix_len())
                .entry(u32::from(n.network()))
                .or_default()
                .push(rule),
            IpNet::V6(n) => slot(&mut self.v6, n.prefix_len())
                .entry(u128::from(n.network()))
                .or_default()
                .push(rule),
        }
    }

    /// Calls `f` for every rule whose network contains `ip`, most specific
    /// network first.
    pub fn for_each_match(&self, ip: IpAddr, mut f: impl FnMut(RuleIdx)) {
        match ip {
            IpAddr::V4(v4) => {
                let v = u32::from(v4);
                for (len, map) in &self.v4 {
                    if let Some(rules) = map.get(&mask4(v, *len)) {
                        rules.iter().copied().for_each(&mut f);
                    }
                }
            }
            IpAddr::V6(v6) => {
                let v = u128::from(v6);
                for (len, map) in &self.v6 {
                    if let Some(rules) = map.get(&mask6(v, *len)) {
                        rules.iter().copied().for_each(&mut f);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(s: &str) -> Option<&'static str> {
        special_range(s.parse().unwrap()).map(SpecialRange::as_str)
    }

    #[test]
    fn special_ranges() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("cloud-metadata")),
            ("169.254.1.1", Some("link-local")),
            ("100.64.0.1", Some("shared-cgnat")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("this-network")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("broadcast")),
            ("240.0.0.1", Some("reserved")),
            ("162.247.216.1", None),
            ("8.8.8.8", None),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fd00:ec2::254", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("cloud-metadata")),
            ("64:ff9b::a9fe:a9fe", Some("cloud-metadata")),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::", Some("loopback")),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some("loopback")),
            ("::10.0.0.1", Some("private")),
            ("2001:db8::1", Some("documentation")),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(sr(ip), want, "{ip}");
        }
    }

    #[test]
    fn cidr_table_longest_first() {
        let mut t = CidrTable::default();
        t.insert("162.247.216.0/22".parse().unwrap(), RuleIdx(0));
        t.insert("162.247.219.0/24".parse().unwrap(), RuleIdx(1));
        t.insert("0.0.0.0/0".parse().unwrap(), RuleIdx(2));
        t.insert("2001:db8::/32".parse().unwrap(), RuleIdx(3));
        let hits = |ip: &str| {
            let mut v = vec![];
            t.for_each_match(ip.parse().unwrap(), |r| v.push(r.0));
            v
        };
        assert_eq!(hits("162.247.219.7"), vec![1, 0, 2]);
        assert_eq!(hits("162.247.216.7"), vec![0, 2]);
        assert_eq!(hits("1.1.1.1"), vec![2]);
        assert_eq!(hits("2001:db8::5"), vec![3]);
        assert_eq!(hits("2001:db9::5"), Vec::<u32>::new());
    }
}
