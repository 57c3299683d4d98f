//! `egressd transparent-rules`: the exact rules that seal a host's (or a
//! pod's) outbound traffic behind egressd, for IPv4 and IPv6:
//!
//! - every new outbound TCP connection goes to the transparent listener
//!   (`--ports` narrows that, with a warning in the rules);
//! - DNS (UDP and TCP 53) goes to egressd's DNS listener, whatever server
//!   the app asked;
//! - every other UDP datagram is refused with ICMP port unreachable (so
//!   QUIC falls back to TCP at once), and any other protocol (ICMP echo,
//!   SCTP, ...) with administratively prohibited; the ICMP errors path MTU
//!   discovery needs, IPv6 neighbour discovery and replies to inbound
//!   connections pass.
//!
//! egressd's own sockets are let through by their mark (`run --mark`) or
//! their uid; loopback is left alone (the listeners themselves, the admin
//! port, local services; not the host's other addresses, which are
//! treated as any destination), and so is every `--exclude` range: the holes the
//! operator chose, such as the cluster's service and pod networks, named
//! in the rules' header.

use std::process::ExitCode;

use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesFormat {
    /// One `inet` table for `nft -f` (IPv4 and IPv6 together).
    Nft,
    /// `iptables` and `ip6tables` commands.
    Iptables,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RulesOptions {
    /// The transparent listener's port (egressd run --transparent 127.0.0.1:PORT and [::1]:PORT).
    #[arg(long, default_value_t = 15001)]
    pub port: u16,
    /// The DNS listener's port (egressd run --dns-listen 127.0.0.1:PORT and [::1]:PORT).
    #[arg(long, default_value_t = 15053)]
    pub dns_port: u16,
    /// egressd's sockets carry this mark (run --mark): excluded from the rules.
    #[arg(long, value_parser = crate::units::mark, conflicts_with = "uid")]
    pub mark: Option<u32>,
    /// egressd runs as this uid: its sockets are excluded from the rules.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Only these TCP ports are redirected (default: every port); TCP to
    /// other ports then leaves unchecked, and the rules say so.
    #[arg(long, value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// A destination range left alone (TCP and UDP; DNS still goes to
    /// egressd), e.g. the cluster's service and pod networks; repeatable.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<IpNet>,
    #[arg(long, value_enum, default_value = "nft")]
    pub format: RulesFormat,
}

pub fn print(o: &RulesOptions) -> ExitCode {
    match rules(o) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => super::bad_input(e),
    }
}

/// The rules as text (pure).
pub fn rules(o: &RulesOptions) -> Result<String, String> {
    if o.mark.is_none() && o.uid.is_none() {
        return Err(
            "give --mark N (egressd run --mark N) or --uid U (the user egressd runs as): \
             without one, egressd's own connections are redirected back to it"
                .into(),
        );
    }
    if o.ports.contains(&0) {
        return Err("--ports: 0 is not a port".into());
    }
    let header = header(o);
    Ok(match o.format {
        RulesFormat::Nft => nft(o, &header),
        RulesFormat::Iptables => iptables(o, &header),
    })
}

/// What the rules do, and the holes they leave, as comment lines.
fn header(o: &RulesOptions) -> String {
    let tcp = if o.ports.is_empty() {
        "every outbound TCP connection".to_string()
    } else {
        format!("outbound TCP to ports {}", join(&o.ports, ","))
    };
    let mut h = format!(
        "# egressd transparent mode: {tcp} goes to the transparent listener
# (egressd run --transparent 127.0.0.1:{p} --transparent [::1]:{p}), DNS to
# the DNS listener (--dns-listen 127.0.0.1:{d} --dns-listen [::1]:{d});
# other UDP is refused (ICMP port unreachable), other protocols too.
",
        p = o.port,
        d = o.dns_port
    );
    if !o.ports.is_empty() {
        h += "# WARNING: --ports narrows the redirect: TCP to any other port leaves\n# unchecked and unlogged.\n";
    }
    if !o.exclude.is_empty() {
        h += &format!(
            "# Left alone by choice (--exclude): {}. DNS to them still goes\n# to egressd.\n",
            join(&o.exclude, ", ")
        );
    }
    h
}

fn join<T: ToString>(v: &[T], sep: &str) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(sep)
}

fn nft(o: &RulesOptions, header: &str) -> String {
    let (exempt, why) = match (o.mark, o.uid) {
        (Some(m), _) => (
            format!("meta mark 0x{m:x}"),
            format!("egressd's own sockets (run --mark {m})"),
        ),
        (None, Some(u)) => (
            format!("meta skuid {u}"),
            format!("egressd's own sockets (it runs as uid {u})"),
        ),
        (None, None) => unreachable!("checked by rules()"),
    };
    let tcp = if o.ports.is_empty() {
        "meta l4proto tcp".to_string()
    } else {
        format!("tcp dport {{ {} }}", join(&o.ports, ", "))
    };
    let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) = o.exclude.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let excluded = |verdict: &str| {
        let mut s = String::new();
        for (family, nets) in [("ip", &v4), ("ip6", &v6)] {
            if !nets.is_empty() {
                s += &format!("    {family} daddr {{ {} }} {verdict}\n", join(nets, ", "));
            }
        }
        s
    };
    format!(
        "#!/usr/sbin/nft -f
{header}# Install: nft -f THIS_FILE    Remove: nft delete table inet egressd
table inet egressd {{
  chain divert {{
    type nat hook output priority -100; policy accept;
    {exempt} return    # {why}
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns}
{excl_nat}    {tcp} redirect to :{port}
  }}
  chain seal {{
    type filter hook output priority 0; policy accept;
    {exempt} accept
    ip daddr 127.0.0.0/8 accept    # loopback, and what the redirect sent to egressd
    ip6 daddr ::1 accept
{excl_filter}    ct state established,related accept    # replies to inbound connections
    meta l4proto tcp accept    # new connections were redirected above
    icmp type {{ destination-unreachable, time-exceeded, parameter-problem }} accept
    icmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report }} accept
    meta l4proto udp reject with icmpx type port-unreachable
    reject with icmpx type admin-prohibited
  }}
}}
",
        dns = o.dns_port,
        port = o.port,
        excl_nat = excluded("return"),
        excl_filter = excluded("accept"),
    )
}

fn iptables(o: &RulesOptions, header: &str) -> String {
    let exempt = match (o.mark, o.uid) {
        (Some(m), _) => format!("-m mark --mark 0x{m:x}"),
        (None, Some(u)) => format!("-m owner --uid-owner {u}"),
        (None, None) => unreachable!("checked by rules()"),
    };
    let tcp = if o.ports.is_empty() {
        "-p tcp".to_string()
    } else {
        format!("-p tcp -m multiport --dports {}", join(&o.ports, ","))
    };
    // A shell script: the install commands, then the removal ones
    // commented out (run them by hand, or with `sed -n 's/^#- //p' | sh`).
    let mut out = format!("#!/bin/sh\n{header}set -e\n");
    let families = [
        (
            "iptables",
            "127.0.0.0/8",
            "icmp",
            "icmp-port-unreachable",
            "icmp-admin-prohibited",
        ),
        (
            "ip6tables",
            "::1/128",
            "icmpv6",
            "icmp6-port-unreachable",
            "icmp6-adm-prohibited",
        ),
    ];
    for (cmd, lo, icmp, unreachable, prohibited) in families {
        let v6 = cmd == "ip6tables";
        let excluded: Vec<&IpNet> = o
            .exclude
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .collect();
        let nat = format!("{cmd} -t nat -A EGRESSD");
        let fence = format!("{cmd} -A EGRESSD");
        out += &format!("{cmd} -t nat -N EGRESSD\n{nat} {exempt} -j RETURN\n{nat} -d {lo} -j RETURN\n");
        for proto in ["udp", "tcp"] {
            out += &format!(
                "{nat} -p {proto} --dport 53 -j REDIRECT --to-ports {}\n",
                o.dns_port
            );
        }
        for n in &excluded {
            out += &format!("{nat} -d {n} -j RETURN\n");
        }
        out += &format!("{nat} {tcp} -j REDIRECT --to-ports {}\n", o.port);
        out += &format!("{cmd} -t nat -A OUTPUT -j EGRESSD\n");
        out += &format!("{cmd} -N EGRESSD\n{fence} {exempt} -j RETURN\n{fence} -d {lo} -j RETURN\n");
        for n in &excluded {
            out += &format!("{fence} -d {n} -j RETURN\n");
        }
        out += &format!(
            "{fence} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n{fence} -p tcp -j RETURN\n"
        );
        let passing: &[&str] = if v6 {
            &[
                "destination-unreachable",
                "packet-too-big",
                "time-exceeded",
                "parameter-problem",
                "router-solicitation",
                "neighbour-solicitation",
                "neighbour-advertisement",
                "143",
            ]
        } else {
            &["destination-unreachable", "time-exceeded", "parameter-problem"]
        };
        for t in passing {
            out += &format!("{fence} -p {icmp} --{icmp}-type {t} -j RETURN\n");
        }
        out += &format!(
            "{fence} -p udp -j REJECT --reject-with {unreachable}\n{fence} -j REJECT --reject-with {prohibited}\n{cmd} -A OUTPUT -j EGRESSD\n"
        );
    }
    out += "# To remove them:\n";
    for (cmd, ..) in families {
        out += &format!(
            "#- {cmd} -t nat -D OUTPUT -j EGRESSD
#- {cmd} -t nat -F EGRESSD
#- {cmd} -t nat -X EGRESSD
#- {cmd} -D OUTPUT -j EGRESSD
#- {cmd} -F EGRESSD
#- {cmd} -X EGRESSD
"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: RulesFormat) -> RulesOptions {
        RulesOptions {
            port: 15001,
            dns_port: 15053,
            mark: Some(1337),
            uid: None,
            ports: Vec::new(),
            exclude: Vec::new(),
            format,
        }
    }

    #[test]
    fn rules_seal_every_port_and_protocol_in_both_families() {
        let nft = rules(&opts(RulesFormat::Nft)).unwrap();
        for line in [
            "meta mark 0x539 return",
            "meta mark 0x539 accept",
            "meta l4proto tcp redirect to :15001",
            "meta l4proto { tcp, udp } th dport 53 redirect to :15053",
            "meta l4proto udp reject with icmpx type port-unreachable",
            "reject with icmpx type admin-prohibited",
            "nft delete table inet egressd",
        ] {
            assert!(nft.contains(line), "{line}\n{nft}");
        }
        assert!(!nft.contains("WARNING"));
        let ipt = rules(&opts(RulesFormat::Iptables)).unwrap();
        for cmd in ["iptables", "ip6tables"] {
            for line in [
                format!("{cmd} -t nat -A EGRESSD -m mark --mark 0x539 -j RETURN"),
                format!("{cmd} -t nat -A EGRESSD -p udp --dport 53 -j REDIRECT --to-ports 15053"),
                format!("{cmd} -t nat -A EGRESSD -p tcp -j REDIRECT --to-ports 15001"),
                format!("{cmd} -A EGRESSD -m mark --mark 0x539 -j RETURN"),
                format!("{cmd} -A OUTPUT -j EGRESSD"),
                format!("#- {cmd} -X EGRESSD"),
            ] {
                assert!(ipt.contains(&line), "{line}\n{ipt}");
            }
        }
        assert!(ipt.contains("ip6tables -A EGRESSD -p udp -j REJECT --reject-with icmp6-port-unreachable"));
        assert!(ipt.contains("ip6tables -A EGRESSD -p icmpv6 --icmpv6-type neighbour-solicitation -j RETURN"));
        let by_uid = rules(&RulesOptions {
            mark: None,
            uid: Some(1000),
            ..opts(RulesFormat::Nft)
        })
        .unwrap();
        assert!(by_uid.contains("meta skuid 1000 return"));
        assert!(rules(&RulesOptions {
            mark: None,
            ..opts(RulesFormat::Nft)
        })
        .is_err());
    }

    #[test]
    fn narrowed_ports_and_excluded_ranges_are_named_in_the_rules() {
        let o = RulesOptions {
            ports: vec![80, 443],
            exclude: vec!["10.96.0.0/12".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..opts(RulesFormat::Nft)
        };
        let nft = rules(&o).unwrap();
        assert!(nft.contains("tcp dport { 80, 443 } redirect to :15001"), "{nft}");
        assert!(nft.contains("WARNING: --ports narrows"));
        assert!(nft.contains("(--exclude): 10.96.0.0/12, fd00::/8"));
        assert!(
            nft.contains("ip daddr { 10.96.0.0/12 } return") && nft.contains("ip6 daddr { fd00::/8 } accept")
        );
        // DNS is redirected before the excluded ranges are let go.
        assert!(nft.find("th dport 53").unwrap() < nft.find("ip daddr { 10.96.0.0/12 } return").unwrap());
        let ipt = rules(&RulesOptions {
            format: RulesFormat::Iptables,
            ..o
        })
        .unwrap();
        assert!(ipt.contains("iptables -t nat -A EGRESSD -d 10.96.0.0/12 -j RETURN"));
        assert!(ipt.contains("ip6tables -A EGRESSD -d fd00::/8 -j RETURN"));
        assert!(!ipt.contains("iptables -A EGRESSD -d fd00::/8"));
        assert!(ipt.contains("-p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports 15001"));
    }
}
