//! Policy semantics: the shipped policies' own cases, invalid policies that
//! must be rejected, table tests of the matcher, and property tests of the
//! compiled trie against the reference scan.

use std::net::IpAddr;

use egressd::policy::*;
use egressd::target::parse_target;
use egressd::tools::cases::run_cases;

fn policy(src: &str) -> Policy {
    Policy::from_toml(src, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn decide(p: &Policy, target: &str) -> Decision {
    let c = parse_target(target).unwrap_or_else(|e| panic!("{e}"));
    let d = p.decide(&c);
    assert_eq!(d, p.decide_naive(&c), "trie and reference disagree on {target}");
    d
}

fn verdict(p: &Policy, target: &str) -> &'static str {
    decide(p, target).verdict.as_str()
}

fn policy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy")
}

#[test]
fn shipped_policies_pass_their_cases() {
    let mut checked = 0;
    for entry in std::fs::read_dir(policy_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name.strip_suffix(".tests.toml") else {
            continue;
        };
        let policy_path = policy_dir().join(format!("{stem}.toml"));
        let src = std::fs::read_to_string(&policy_path).unwrap();
        let p = Policy::from_toml(&src, policy_path.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
        let cases = std::fs::read_to_string(&path).unwrap();
        let report = run_cases(&p, &cases, &name).unwrap_or_else(|e| panic!("{e}"));
        for f in &report.failures {
            eprintln!(
                "{name}:{}: {}: expected {}, got {}",
                f.line, f.target, f.expected, f.got
            );
        }
        assert!(
            report.failures.is_empty(),
            "{name}: {} failures",
            report.failures.len()
        );
        assert!(report.passed >= 40, "{name}: only {} cases", report.passed);
        // The reference matcher agrees on every case too.
        for line in cases.lines().filter_map(|l| l.split("target = \"").nth(1)) {
            let t = line.split("\", expect").next().unwrap().replace("\\\\", "\\");
            let c = parse_target(&t).unwrap();
            assert_eq!(p.decide(&c), p.decide_naive(&c), "{t}");
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn invalid_policies_are_rejected_with_file_line_and_rule() {
    let dir = policy_dir().join("invalid");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let expect = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: line N: text`", path.display()));
        let (line, text) = expect.split_once(": ").unwrap();
        let origin = path.to_str().unwrap();
        let err = Policy::from_toml(&src, origin).expect_err(origin).to_string();
        let at = format!("{origin}:{}: ", line.trim_start_matches("line "));
        assert!(
            err.starts_with(&at) && err.contains(text.trim()),
            "{}\n got: {err}\nwant: {at}…{text}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 15);
}

#[test]
fn wildcards_and_apex() {
    let p = policy(r#"allow = ["*.example.com", ".example.org", "exact.example.net"]"#);
    assert_eq!(verdict(&p, "https://a.example.com/"), "allow");
    assert_eq!(verdict(&p, "https://a.b.c.example.com/"), "allow");
    assert_eq!(verdict(&p, "https://example.com/"), "deny");
    assert_eq!(verdict(&p, "https://example.org/"), "allow");
    assert_eq!(verdict(&p, "https://x.example.org/"), "allow");
    assert_eq!(verdict(&p, "https://xexample.org/"), "deny");
    assert_eq!(verdict(&p, "https://exact.example.net/"), "allow");
    assert_eq!(verdict(&p, "https://a.exact.example.net/"), "deny");
    assert_eq!(verdict(&p, "https://bücher.example.com/"), "allow");
}

#[test]
fn deny_overrides_allow_on_every_port() {
    let p = policy(
        r#"
allow = ["*.example.com", { host = "*.example.com", ports = [8443] }]
deny = ["bad.example.com", "good.example.com/admin"]
"#,
    );
    let d = decide(&p, "https://bad.example.com/");
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::DenyRule));
    assert_eq!(p.rule(d.rule.unwrap()).id.as_ref(), "test.toml:3");
    assert_eq!(verdict(&p, "CONNECT bad.example.com:8443"), "deny");
    assert_eq!(verdict(&p, "CONNECT x.bad.example.com:443"), "allow");
    assert_eq!(verdict(&p, "https://good.example.com/admin/x"), "deny");
    assert_eq!(verdict(&p, "https://good.example.com/admin;x=1/y"), "deny");
    assert_eq!(verdict(&p, "https://good.example.com/a/..%2fadmin"), "deny");
    assert_eq!(verdict(&p, "https://good.example.com/administrator"), "allow");
    // A path deny cannot be enforced inside a tunnel: allowed, and flagged.
    let d = decide(&p, "CONNECT good.example.com:443");
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.flags.contains(Flags::PATH_NOT_ENFORCED));
}

#[test]
fn path_rules_on_connect_policy_wide_and_per_rule() {
    let deny = policy(r#"allow = ["www.google.com/recaptcha"]"#);
    let d = decide(&deny, "CONNECT www.google.com:443");
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::PathRuleOnConnect));

    let allow = policy("path_rules_on_connect = \"allow\"\nallow = [\"www.google.com/recaptcha\"]");
    let d = decide(&allow, "CONNECT www.google.com:443");
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.flags.names().collect::<Vec<_>>(), vec!["path_not_enforced"]);

    let per_rule = policy(
        r#"
path_rules_on_connect = "allow"
allow = [{ host = "www.google.com/recaptcha", on_connect = "deny" }, "maps.example.com/api"]
"#,
    );
    assert_eq!(verdict(&per_rule, "CONNECT www.google.com:443"), "deny");
    assert_eq!(verdict(&per_rule, "CONNECT maps.example.com:443"), "allow");
    // A path-less rule for the same host wins without a flag.
    let both = policy("allow = [\"a.example.com/x\", \"a.example.com\"]\npath_rules_on_connect = \"allow\"");
    let d = decide(&both, "CONNECT a.example.com:443");
    assert!(d.flags.is_empty());
    assert_eq!(both.rule(d.rule.unwrap()).pattern, "a.example.com");
}

#[test]
fn globs_are_real_globs() {
    let p = policy(r#"allow = ["api.example.com/v1/*/files", "api.example.com/v2/**/raw"]"#);
    assert_eq!(verdict(&p, "https://api.example.com/v1/abc/files"), "allow");
    assert_eq!(verdict(&p, "https://api.example.com/v1/a/b/files"), "deny");
    assert_eq!(verdict(&p, "https://api.example.com/v1/abc/files/x"), "deny");
    assert_eq!(verdict(&p, "https://api.example.com/v2/a/b/raw"), "allow");
    assert_eq!(
        verdict(&p, "https://api.example.com/v1/x/../../admin/files"),
        "deny"
    );
}

#[test]
fn most_specific_allow_reports_the_rule() {
    let p = policy(
        r#"
[[allow]]
name = "zone"
host = "*.example.com"
[[allow]]
name = "exact"
host = "www.example.com"
[[allow]]
name = "path"
host = "www.example.com/api"
"#,
    );
    let id = |t: &str| p.rule(decide(&p, t).rule.unwrap()).id.to_string();
    assert_eq!(id("https://a.example.com/"), "zone");
    assert_eq!(id("https://www.example.com/"), "exact");
    assert_eq!(id("https://www.example.com/api/x"), "path");
}

#[test]
fn cidr_rules_and_special_addresses() {
    let p = policy(
        r#"
allow = [
  { cidr = "10.1.0.0/16", ports = [5432] },
  { cidr = "2001:db8::/32", ports = [443] },
  { cidr = "162.247.216.0/22", ports = [443], resolved = true },
  "api.example.com",
]
deny = [{ cidr = "10.1.2.0/24" }]
"#,
    );
    assert_eq!(verdict(&p, "CONNECT 10.1.9.9:5432"), "allow");
    assert_eq!(verdict(&p, "CONNECT 10.1.2.3:5432"), "deny");
    assert_eq!(verdict(&p, "CONNECT 10.2.0.1:5432"), "deny");
    assert_eq!(verdict(&p, "CONNECT [2001:db8::1]:443"), "allow");
    // Host rules never match IP literals, and names never match CIDRs.
    assert_eq!(verdict(&p, "CONNECT 93.184.216.34:443"), "deny");

    let name = parse_target("CONNECT api.example.com:443").unwrap();
    let other = parse_target("CONNECT other.example.net:443").unwrap();
    let ctx = |name_allowed| AddrContext {
        name_allowed,
        pinned: false,
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // The allowed name resolving somewhere public: fine.
    assert_eq!(
        p.check_addr(ip("93.184.216.34"), &name, ctx(true)).verdict,
        Verdict::Allow
    );
    // ... to loopback or metadata: refused, unless pinned by the operator.
    let d = p.check_addr(ip("127.0.0.1"), &name, ctx(true));
    assert_eq!(d.reason, Reason::SpecialAddress(SpecialRange::Loopback));
    let d = p.check_addr(ip("::ffff:169.254.169.254"), &name, ctx(true));
    assert_eq!(d.reason, Reason::SpecialAddress(SpecialRange::CloudMetadata));
    let pinned = AddrContext {
        name_allowed: true,
        pinned: true,
    };
    assert_eq!(
        p.check_addr(ip("127.0.0.1"), &name, pinned).verdict,
        Verdict::Allow
    );
    // ... into a denied range: refused.
    assert_eq!(
        p.check_addr(ip("10.1.2.5"), &name, ctx(true)).verdict,
        Verdict::Deny
    );
    // A name no rule allows, resolving into a `resolved = true` range.
    assert_eq!(
        p.check_addr(ip("162.247.216.1"), &other, ctx(false)).verdict,
        Verdict::Allow
    );
    assert_eq!(
        p.check_addr(ip("10.1.9.9"), &other, ctx(false)).verdict,
        Verdict::Deny
    );
    assert!(p.has_resolved_cidrs());
}

#[test]
fn report_mode_would_deny_but_keeps_the_address_guard() {
    let p = policy("mode = \"report\"\nallow = [\"a.example.com\"]");
    let d = decide(&p, "https://b.example.com/");
    assert_eq!(d.verdict, Verdict::WouldDeny);
    assert!(d.flags.contains(Flags::REPORT));
    assert_eq!(decide(&p, "https://a.example.com/").verdict, Verdict::Allow);
    assert_eq!(decide(&p, "CONNECT 127.0.0.1:443").verdict, Verdict::Deny);
    let enforce = policy("allow = [\"a.example.com\"]").with_mode(Mode::Report);
    assert_eq!(
        decide(&enforce, "https://b.example.com/").verdict,
        Verdict::WouldDeny
    );
}

#[test]
fn version_and_rule_ids_are_stable() {
    let src = "allow = [\"a.example.com\", { name = \"b\", host = \"b.example.com\" }]";
    let a = policy(src);
    let b = policy(src);
    assert_eq!(a.version(), b.version());
    assert!(a.version().starts_with("sha256:") && a.version().len() == 19);
    assert_ne!(a.version(), policy("allow = [\"a.example.com\"]").version());
    assert_eq!(a.rules()[0].id.as_ref(), "test.toml:1");
    assert_eq!(a.rules()[1].id.as_ref(), "b");

    // A list keeps each entry's line; a name covers the whole list.
    let list = policy("[[allow]]\nhosts = [\n  \"c.example.com\",\n  \"d.example.com\",\n]\n[[allow]]\nname = \"e\"\ncidrs = [\"192.0.2.0/24\",\n  \"198.51.100.0/24\"]\n");
    let ids: Vec<(&str, usize)> = list.rules().iter().map(|r| (r.id.as_ref(), r.line)).collect();
    assert_eq!(
        ids,
        [("test.toml:3", 3), ("test.toml:4", 4), ("e", 8), ("e", 9)],
        "{ids:?}"
    );
}

#[test]
fn an_ip_literal_is_never_let_through_by_a_resolved_cidr_rule() {
    // A `resolved` CIDR rule admits names by their addresses; it must not
    // turn an IP literal that no rule allows into a dialled address.
    let p = policy("allow = [{ cidr = \"162.247.216.0/22\", resolved = true }]");
    let c = parse_target("CONNECT 8.8.8.8:443").unwrap();
    let d = p.decide(&c);
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(matches!(
        p.needs_addresses(&c, &d),
        Err(Refusal::Denied { by_address: true, .. })
    ));
    let t = Resolved {
        addr: "8.8.8.8:443".parse().unwrap(),
        pinned: false,
    };
    assert!(p.decide_addresses(&c, d, vec![t], &[]).is_err());
    // A name no host rule allows still reaches the address check.
    let n = parse_target("CONNECT cdn.example.com:443").unwrap();
    let dn = p.decide(&n);
    assert!(p.needs_addresses(&n, &dn).is_ok());
    let inside = Resolved {
        addr: "162.247.217.1:443".parse().unwrap(),
        pinned: false,
    };
    let checked = p.decide_addresses(&n, dn, vec![t, inside], &[]).unwrap();
    assert_eq!(checked.targets, vec![inside]);
    assert_eq!(checked.decision.verdict, Verdict::Allow);
}

#[test]
fn pins_parse() {
    let p: Pin = "www.qualtrics.com:443=127.0.0.1:40443".parse().unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.to_port),
        ("www.qualtrics.com", Some(443), Some(40443))
    );
    let p: Pin = "WWW.Example.com=::1".parse().unwrap();
    assert_eq!(
        (p.host.as_str(), p.addr),
        ("www.example.com", "::1".parse().unwrap())
    );
    let p: Pin = "a.example.com=[::1]:8443".parse().unwrap();
    assert_eq!(p.to_port, Some(8443));
    for bad in [
        "a.example.com",
        "a.example.com=x",
        "1.2.3.4=1.2.3.4",
        "a.example.com:0=1.2.3.4",
    ] {
        assert!(bad.parse::<Pin>().is_err(), "{bad}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Addresses a name may resolve to: public, special-purpose, in the
    /// generated CIDR rules, embedding others, and the proxy's own.
    const ADDRS: &[&str] = &[
        "162.247.216.9",
        "8.8.8.8",
        "10.1.2.3",
        "10.0.0.1",
        "127.0.0.1",
        "169.254.169.254",
        "fd00::1",
        "::ffff:10.1.2.3",
        "64:ff9b::a9fe:a9fe",
        "2606:4700::1111",
    ];

    const LABELS: &[&str] = &["a", "b", "www", "xn--bcher-kva", "example", "com", "org"];
    const SEGS: &[&str] = &[
        "x", "y", "api", "x;p", "%78", "..", ".", "%2e%2e", "%2F", "", "\\", "%252e", "X",
    ];

    fn domain(min: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(LABELS), min..4)
            .prop_map(|l| format!("{}.com", l.join(".")))
    }

    fn rule() -> impl Strategy<Value = String> {
        let host = (0..3u8, domain(1)).prop_map(|(k, d)| match k {
            0 => d,
            1 => format!("*.{d}"),
            _ => format!(".{d}"),
        });
        let path = prop::collection::vec(prop::sample::select(&["x", "y", "api", "*", "**"][..]), 0..3)
            .prop_map(|s| {
                if s.is_empty() {
                    String::new()
                } else {
                    format!("/{}", s.join("/"))
                }
            });
        let ports = prop::sample::select(
            &[
                "",
                "ports = [80]",
                "ports = [443, 8443]",
                "ports = [\"8000-8999\", 443]",
                "ports = \"any\"",
            ][..],
        );
        // Options of the rule: staged, expiring, plain HTTP with methods.
        let on_connect = prop::sample::select(
            &[
                "",
                "on_connect = \"allow\"",
                "on_connect = \"deny\"",
                "mode = \"report\"",
                "expires = 2000-01-01",
                "expires = 2999-01-01",
            ][..],
        );
        let scheme = prop::sample::select(&["", "", "http://", "https://"][..]);
        let cidr = (
            prop::sample::select(&["10.0.0.0", "10.1.0.0", "162.247.216.0", "0.0.0.0", "fd00::"][..]),
            0..4u8,
        )
            .prop_map(|(net, k)| {
                let len = if net.contains(':') {
                    [8, 16, 64, 128][k as usize]
                } else {
                    [0, 8, 16, 24][k as usize]
                };
                let ip: IpAddr = net.parse().unwrap();
                ipnet::IpNet::new(ip, len).unwrap().trunc().to_string()
            });
        prop_oneof![
            4 => (scheme, host, path, ports.clone(), on_connect, any::<bool>()).prop_map(|(sc, h, p, ports, oc, m)| {
                let sep = |s: &str| if s.is_empty() { String::new() } else { format!(", {s}") };
                let methods = if m && sc == "http://" { ", methods = [\"GET\"]" } else { "" };
                format!("{{ host = \"{sc}{h}{p}\"{}{}{methods} }}", sep(ports), sep(oc))
            }),
            1 => (cidr, ports, any::<bool>()).prop_map(|(c, ports, r)| {
                let sep = if ports.is_empty() { String::new() } else { format!(", {ports}") };
                format!("{{ cidr = \"{c}\"{sep}, resolved = {r} }}")
            }),
        ]
    }

    fn policy_src() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(rule(), 0..12),
            prop::collection::vec(rule(), 0..4),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(allow, deny, report, oc)| {
                format!(
                    "mode = \"{}\"\npath_rules_on_connect = \"{}\"\nallow = [\n{}\n]\ndeny = [\n{}\n]\n",
                    if report { "report" } else { "enforce" },
                    if oc { "allow" } else { "deny" },
                    allow.join(",\n"),
                    deny.join(",\n")
                )
            })
    }

    fn request() -> impl Strategy<Value = String> {
        let host = prop_oneof![
            6 => (domain(0), any::<bool>()).prop_map(|(d, up)| if up { d.to_uppercase() + "." } else { d }),
            1 => prop::sample::select(&["10.0.0.1", "10.1.2.3", "162.247.216.9", "[fd00::1]", "127.0.0.1", "[::ffff:10.0.0.1]"][..])
                .prop_map(str::to_string),
        ];
        let path =
            prop::collection::vec(prop::sample::select(SEGS), 0..5).prop_map(|s| format!("/{}", s.join("/")));
        let port = prop::sample::select(&[80u16, 443, 8443, 22, 8080][..]);
        (0..4u8, host, port, path).prop_map(|(k, h, port, p)| match k {
            0 => format!("CONNECT {h}:{port}"),
            1 => format!("http://{h}:{port}{p}"),
            2 => format!("POST http://{h}:{port}{p}"),
            _ => format!("https://{h}:{port}{p}"),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn compiled_trie_agrees_with_reference_scan(src in policy_src(), reqs in prop::collection::vec(request(), 1..24)) {
            let p = match Policy::from_toml(&src, "gen.toml") {
                Ok(p) => p,
                // Generated rules may be invalid (e.g. a glob that is not one).
                Err(_) => return Ok(()),
            };
            // Rules that expired by the day the policy is judged on, too.
            p.set_today(Day::from_ymd(2026, 12, 2).unwrap());
            for r in &reqs {
                let Ok(c) = parse_target(r) else { continue };
                prop_assert_eq!(p.decide(&c), p.decide_naive(&c), "{}\n{}", r, src);
            }
        }

        #[test]
        fn address_checks_keep_exactly_the_addresses_that_pass(
            src in policy_src(),
            reqs in prop::collection::vec(request(), 1..8),
            addrs in prop::collection::vec((prop::sample::select(ADDRS), any::<bool>()), 0..6),
        ) {
            let Ok(p) = Policy::from_toml(&src, "gen.toml") else { return Ok(()) };
            let own: Vec<std::net::SocketAddr> = vec!["127.0.0.1:3128".parse().unwrap()];
            for r in &reqs {
                let Ok(c) = parse_target(r) else { continue };
                let by_name = p.decide(&c);
                if p.needs_addresses(&c, &by_name).is_err() {
                    // Only a decision that stops the request stops it here.
                    prop_assert!(!by_name.verdict.proceeds() || c.host.as_name().is_none(), "{}", r);
                    continue;
                }
                let resolved: Vec<Resolved> = match &c.host {
                    Host::Ip(ip) => vec![Resolved { addr: std::net::SocketAddr::new(*ip, c.port), pinned: false }],
                    Host::Name(_) => addrs
                        .iter()
                        .map(|(a, pinned)| Resolved { addr: std::net::SocketAddr::new(a.parse().unwrap(), c.port), pinned: *pinned })
                        .collect(),
                };
                let ctx = |t: &Resolved| AddrContext { name_allowed: by_name.name_allowed(), pinned: t.pinned };
                let passes = |t: &Resolved| {
                    !is_self(&own, t.addr)
                        && !is_this_host(t.addr.ip())
                        && (c.host.as_name().is_none() || p.check_addr(t.addr.ip(), &c, ctx(t)).verdict.proceeds())
                };
                let want: Vec<Resolved> = resolved.iter().copied().filter(passes).collect();
                match p.decide_addresses(&c, by_name, resolved.clone(), &own) {
                    Ok(checked) => {
                        // In order, none dropped that passes, none kept that does not.
                        prop_assert_eq!(&checked.targets, &want, "{}\n{}", r, src);
                        prop_assert!(checked.decision.verdict.proceeds(), "{}", r);
                    }
                    Err(Refusal::SelfLoop) => {
                        prop_assert!(resolved.iter().all(|t| is_self(&own, t.addr) || is_this_host(t.addr.ip())), "{}", r);
                    }
                    Err(Refusal::Denied { decision, .. }) => {
                        prop_assert!(want.is_empty(), "{}: refused although {:?} pass", r, want);
                        prop_assert!(!decision.verdict.proceeds(), "{}", r);
                    }
                }
            }
        }

        #[test]
        fn no_spelling_escapes_a_prefix(segs in prop::collection::vec(prop::sample::select(SEGS), 0..6)) {
            // Whatever the spelling, an allowed path normalises to one under the prefix.
            let p = policy("allow = [\"www.example.com/api\"]");
            let raw = format!("/api/{}", segs.join("/"));
            let c = parse_target(&format!("http://www.example.com{raw}")).unwrap();
            if p.decide(&c).verdict == Verdict::Allow {
                let np = c.path.as_ref().unwrap();
                prop_assert!(!np.ambiguous);
                prop_assert!(np.path == "/api" || np.path.starts_with("/api/"), "{} -> {}", raw, np.path);
                prop_assert!(!np.path.split('/').any(|s| s == ".." || s == "." || s.contains("%2F") || s.contains("%5C")));
            }
        }

        #[test]
        fn normalisation_is_idempotent(segs in prop::collection::vec(prop::sample::select(SEGS), 0..6)) {
            let once = normalize_path(&format!("/{}", segs.join("/")));
            if !once.ambiguous {
                prop_assert_eq!(normalize_path(&once.path).path, once.path.clone());
            }
        }
    }
}

fn reason(p: &Policy, target: &str) -> &'static str {
    decide(p, target).reason.as_str()
}

#[test]
fn a_scheme_restricts_the_kind_of_request() {
    let p = policy(
        r#"allow = ["http://plain.example.com:8080", "https://tls.example.com", "both.example.com", "https://alt.example.com:8443"]"#,
    );
    assert_eq!(verdict(&p, "http://plain.example.com:8080/x"), "allow");
    assert_eq!(verdict(&p, "CONNECT plain.example.com:8080"), "deny");
    assert_eq!(reason(&p, "CONNECT plain.example.com:8080"), "kind_not_allowed");
    assert_eq!(verdict(&p, "CONNECT tls.example.com:443"), "allow");
    assert_eq!(verdict(&p, "https://tls.example.com/x"), "allow");
    assert_eq!(reason(&p, "http://tls.example.com/"), "kind_not_allowed");
    assert_eq!(verdict(&p, "http://both.example.com/"), "allow");
    assert_eq!(verdict(&p, "CONNECT both.example.com:443"), "allow");
    assert_eq!(verdict(&p, "CONNECT alt.example.com:8443"), "allow");
    assert_eq!(reason(&p, "CONNECT alt.example.com:443"), "port_not_allowed");
    assert_eq!(reason(&p, "http://alt.example.com:8443/"), "kind_not_allowed");
}

#[test]
fn port_ranges_and_any() {
    let p = policy(
        r#"allow = [
  { host = "dev.example.com", ports = [443, "8000-8999"] },
  { host = "lab.example.com", ports = "any" },
]"#,
    );
    assert_eq!(verdict(&p, "CONNECT dev.example.com:8000"), "allow");
    assert_eq!(verdict(&p, "CONNECT dev.example.com:8999"), "allow");
    assert_eq!(verdict(&p, "http://dev.example.com:8500/"), "allow");
    assert_eq!(reason(&p, "CONNECT dev.example.com:9000"), "port_not_allowed");
    assert_eq!(reason(&p, "CONNECT dev.example.com:80"), "port_not_allowed");
    assert_eq!(verdict(&p, "CONNECT lab.example.com:22"), "allow");
    assert_eq!(verdict(&p, "http://lab.example.com:1/"), "allow");
    assert_eq!(p.rules()[0].ports.to_string(), "443,8000-8999");
}

#[test]
fn methods_restrict_plain_http() {
    let p = policy(r#"allow = [{ host = "http://api.example.com/v1", methods = ["GET", "HEAD"] }]"#);
    assert_eq!(verdict(&p, "http://api.example.com/v1/x"), "allow");
    assert_eq!(verdict(&p, "HEAD http://api.example.com/v1/x"), "allow");
    assert_eq!(verdict(&p, "POST http://api.example.com/v1/x"), "deny");
    assert_eq!(
        reason(&p, "POST http://api.example.com/v1/x"),
        "method_not_allowed"
    );
    assert_eq!(reason(&p, "GET http://api.example.com/v2"), "path_not_allowed");
}

#[test]
fn staged_rules_say_what_they_would_change() {
    let p = policy(
        r#"
allow = ["*.example.com", { host = "new.example.org", mode = "report", name = "trial" }]
deny = [{ host = "uploads.example.com", mode = "report", name = "uploads-off" }]
"#,
    );
    // A staged deny rule: the request goes on, logged as would-deny by it.
    let d = decide(&p, "CONNECT uploads.example.com:443");
    assert_eq!((d.verdict, d.verdict.proceeds()), (Verdict::WouldDeny, true));
    assert_eq!(p.rule(d.rule.unwrap()).id.as_ref(), "uploads-off");
    assert!(d.flags.names().any(|n| n == "staged_rule"));
    // A staged allow rule: refused, logged as would-allow by it.
    let d = decide(&p, "CONNECT new.example.org:443");
    assert_eq!((d.verdict, d.verdict.proceeds()), (Verdict::WouldAllow, false));
    assert_eq!(p.rule(d.rule.unwrap()).id.as_ref(), "trial");
    assert_eq!(d.reason, Reason::NoMatch);
    // Everything else is decided as without them.
    assert_eq!(verdict(&p, "CONNECT www.example.com:443"), "allow");
    assert_eq!(verdict(&p, "CONNECT other.example.net:443"), "deny");
}

#[test]
fn expired_rules_no_longer_match() {
    let p = policy(
        r#"allow = [{ host = "temp.example.com", expires = 2027-03-31, name = "temp" }, "keep.example.com"]"#,
    );
    assert_eq!(
        p.rules()[0].expires.map(|d| d.to_string()).as_deref(),
        Some("2027-03-31")
    );
    // Without a day the core knows nothing has expired.
    assert_eq!(verdict(&p, "CONNECT temp.example.com:443"), "allow");
    p.set_today(Day::from_ymd(2027, 3, 31).unwrap());
    assert_eq!(
        verdict(&p, "CONNECT temp.example.com:443"),
        "allow",
        "the last day still matches"
    );
    p.set_today(Day::from_ymd(2027, 4, 1).unwrap());
    assert_eq!(verdict(&p, "CONNECT temp.example.com:443"), "deny");
    assert_eq!(reason(&p, "CONNECT temp.example.com:443"), "rule_expired");
    assert_eq!(verdict(&p, "CONNECT keep.example.com:443"), "allow");
}

#[test]
fn which_tunnels_are_inspected() {
    let p = policy(
        r#"
allow = ["www.google.com/recaptcha", "unpkg.com", { host = "pinned.example.com/api", inspect = false }]
"#,
    );
    let c = |t: &str| parse_target(t).unwrap();
    // Only path rules name the host: without a CA the tunnel is refused
    // (path_rules_on_connect = "deny"); with one it is inspected.
    let (d, inspect) = p.decide_tunnel(&c("CONNECT www.google.com:443"), false);
    assert_eq!((d.verdict, inspect), (Verdict::Deny, false));
    let (d, inspect) = p.decide_tunnel(&c("CONNECT www.google.com:443"), true);
    assert_eq!((d.verdict, inspect), (Verdict::Allow, true));
    assert!(d.flags.names().any(|n| n == "inspected"));
    // A host no path rule decides is spliced.
    assert!(!p.decide_tunnel(&c("CONNECT unpkg.com:443"), true).1);
    // A rule may exempt its hosts.
    assert!(!p.decide_tunnel(&c("CONNECT pinned.example.com:443"), true).1);
    let all = policy("inspect = \"all\"\nallow = [\"unpkg.com\"]");
    assert!(all.decide_tunnel(&c("CONNECT unpkg.com:443"), true).1);
    assert!(
        !all.decide_tunnel(&c("CONNECT other.example.com:443"), true).1,
        "denied tunnels are not inspected"
    );
    let none = policy("inspect = \"none\"\nallow = [\"www.google.com/recaptcha\"]");
    assert!(!none.decide_tunnel(&c("CONNECT www.google.com:443"), true).1);
}

#[test]
fn methods_on_tls_rules_are_seen_by_inspection() {
    let p =
        policy(r#"allow = [{ host = "https://api.example.com", methods = ["GET"], name = "read-only" }]"#);
    let c = |t: &str| parse_target(t).unwrap();
    // Without a CA the tunnel hides the method: refused, as path rules are.
    let (d, inspect) = p.decide_tunnel(&c("CONNECT api.example.com:443"), false);
    assert_eq!(
        (d.verdict, d.reason, inspect),
        (Verdict::Deny, Reason::PathRuleOnConnect, false)
    );
    // With one it is inspected, and each request's method decides.
    let (d, inspect) = p.decide_tunnel(&c("CONNECT api.example.com:443"), true);
    assert_eq!((d.verdict, inspect), (Verdict::Allow, true));
    assert_eq!(verdict(&p, "https://api.example.com/x"), "allow");
    assert_eq!(reason(&p, "POST https://api.example.com/x"), "method_not_allowed");
}

/// Every policy the documentation shows loads: the first one a newcomer
/// copies once mixed `allow = [...]` and `[[allow]]` (a TOML error).
#[test]
fn the_policies_in_the_documentation_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for doc in ["README.md", "policy/README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + "```toml\n".len()..];
            let end = body.find("```").unwrap();
            let block = &body[..end];
            rest = &body[end..];
            // Case files and users files are other formats.
            if block.contains("cases = [") || block.contains("[[user]]") {
                continue;
            }
            seen += 1;
            let lines: Vec<&str> = block.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect();
            if let Err(e) = Policy::from_toml(&lines.join("\n"), doc) {
                panic!("{doc}: a policy example does not load: {e}\n{block}");
            }
        }
    }
    assert!(seen >= 2, "found {seen} policy examples");
}
