//! Addresses: special-purpose ranges that are refused by default, and the
//! CIDR table that rules compile into.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rustc_hash::FxHashMap;

use super::RuleIdx;

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

fn in4(ip: u32, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == u32::from_be_bytes(net) & mask
}

fn special_v4(ip: Ipv4Addr) -> Option<SpecialRange> {
    use SpecialRange::*;
    let v = u32::from(ip);
    let table: &[([u8; 4], u32, SpecialRange)] = &[
        ([169, 254, 169, 254], 32, CloudMetadata),
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 32, Unspecified),
        ([0, 0, 0, 0], 8, ThisNetwork),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedCgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, IetfProtocol),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    table.iter().find(|(net, len, _)| in4(v, *net, *len)).map(|t| t.2)
}

/// The IPv4 address carried inside an IPv6 one by a transition mechanism:
/// IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo
/// `2001::/32` (the client address, stored inverted).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]));
    }
    None
}

/// Classifies an address; `None` for an ordinary public unicast address.
/// IPv6 addresses that embed IPv4 are judged by the IPv4 inside.
pub fn special_range(ip: IpAddr) -> Option<SpecialRange> {
    use SpecialRange::*;
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return special_v4(v4);
            }
            let s = v6.segments();
            if v6.is_unspecified() {
                Some(Unspecified)
            } else if v6.is_loopback() {
                Some(Loopback)
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some(UniqueLocal)
            } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
                Some(LinkLocal)
            } else if s[0] & 0xff00 == 0xff00 {
                Some(Multicast)
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some(Documentation)
            } else if s[..4] == [0x100, 0, 0, 0] {
                Some(Discard)
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                Some(Private)
            } else if s[0] == 0x2001 && s[1] < 0x200 {
                Some(IetfProtocol)
            } else {
                None
            }
        }
    }
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
