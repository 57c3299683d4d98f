//! `egressd transparent-rules`: the exact rules that send a host's (or a
//! pod's) outbound TCP to egressd's transparent listener, for IPv4 and
//! IPv6, and the rules that take them out again. egressd's own upstream
//! sockets are let through by their mark (`run --mark`) or their uid, so
//! they are never redirected back to it; loopback destinations are left
//! alone (the listener itself, the admin port, local services).

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesFormat {
    /// One `inet` table for `nft -f` (IPv4 and IPv6 together).
    Nft,
    /// `iptables` and `ip6tables` commands.
    Iptables,
}

#[derive(Debug, Clone)]
pub struct RulesOptions {
    pub port: u16,
    pub mark: Option<u32>,
    pub uid: Option<u32>,
    pub ports: Vec<u16>,
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
    if o.ports.is_empty() {
        return Err("--ports: no ports to redirect".into());
    }
    let ports: Vec<String> = o.ports.iter().map(u16::to_string).collect();
    Ok(match o.format {
        RulesFormat::Nft => nft(o, &ports),
        RulesFormat::Iptables => iptables(o, &ports),
    })
}

fn nft(o: &RulesOptions, ports: &[String]) -> String {
    let exempt = match (o.mark, o.uid) {
        (Some(m), _) => format!("meta mark 0x{m:x} return    # egressd's own sockets (run --mark {m})"),
        (None, Some(u)) => format!("meta skuid {u} return    # egressd's own sockets (it runs as uid {u})"),
        (None, None) => unreachable!("checked by rules()"),
    };
    format!(
        "#!/usr/sbin/nft -f
# egressd transparent mode: outbound TCP to ports {list} goes to the
# transparent listener on port {port} (egressd run --transparent 127.0.0.1:{port}
# --transparent [::1]:{port}). Install: nft -f THIS_FILE
# Remove: nft delete table inet egressd
table inet egressd {{
  chain output {{
    type nat hook output priority -100; policy accept;
    {exempt}
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    tcp dport {{ {set} }} redirect to :{port}
  }}
}}
",
        list = ports.join(", "),
        set = ports.join(", "),
        port = o.port,
    )
}

fn iptables(o: &RulesOptions, ports: &[String]) -> String {
    let exempt = match (o.mark, o.uid) {
        (Some(m), _) => format!("-m mark --mark 0x{m:x} -j RETURN"),
        (None, Some(u)) => format!("-m owner --uid-owner {u} -j RETURN"),
        (None, None) => unreachable!("checked by rules()"),
    };
    // A shell script: the install commands, then the removal ones
    // commented out (run them by hand, or with `sed -n 's/^#- //p' | sh`).
    let mut out = format!(
        "#!/bin/sh\n# egressd transparent mode: outbound TCP to ports {} goes to port {}.\nset -e\n",
        ports.join(","),
        o.port
    );
    let families = [("iptables", "127.0.0.0/8"), ("ip6tables", "::1/128")];
    for (cmd, lo) in families {
        out += &format!(
            "{cmd} -t nat -N EGRESSD
{cmd} -t nat -A EGRESSD {exempt}
{cmd} -t nat -A EGRESSD -d {lo} -j RETURN
{cmd} -t nat -A EGRESSD -p tcp -m multiport --dports {} -j REDIRECT --to-ports {}
{cmd} -t nat -A OUTPUT -p tcp -j EGRESSD
",
            ports.join(","),
            o.port
        );
    }
    out += "# To remove them:\n";
    for (cmd, _) in families {
        out += &format!(
            "#- {cmd} -t nat -D OUTPUT -p tcp -j EGRESSD
#- {cmd} -t nat -F EGRESSD
#- {cmd} -t nat -X EGRESSD
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
            mark: Some(1337),
            uid: None,
            ports: vec![80, 443],
            format,
        }
    }

    #[test]
    fn rules_exempt_egressd_and_cover_both_families() {
        let nft = rules(&opts(RulesFormat::Nft)).unwrap();
        assert!(nft.contains("meta mark 0x539 return"), "{nft}");
        assert!(nft.contains("tcp dport { 80, 443 } redirect to :15001"), "{nft}");
        assert!(nft.contains("table inet egressd") && nft.contains("nft delete table inet egressd"));
        let ipt = rules(&opts(RulesFormat::Iptables)).unwrap();
        for cmd in ["iptables", "ip6tables"] {
            assert!(
                ipt.contains(&format!("{cmd} -t nat -A EGRESSD -m mark --mark 0x539 -j RETURN")),
                "{ipt}"
            );
            assert!(ipt.contains(&format!("#- {cmd} -t nat -X EGRESSD")), "{ipt}");
        }
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
}
