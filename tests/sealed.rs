//! The sealed sidecar against the real kernel. Two network namespaces
//! this test makes: the pod (egressd, and a hostile app under another uid
//! with no proxy settings) and the world it reaches over a veth pair
//! (origins, servers that speak first as SSH does, UDP listeners, and
//! dnsmasq as the pod's real DNS server). The world's addresses exist
//! only in its namespace; nothing leaves the machine. The pod gets exactly
//! the rules `egressd transparent-rules` prints.
//!
//! Needs root, iproute2, nftables, dnsmasq, dig (bind9-dnsutils), curl,
//! bash and setpriv; the test command installs them, and a missing one
//! fails the test saying which.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::dnsmasq::Dnsmasq;
use support::netns::{run, Netns};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MARK: &str = "1337";
/// The app: nobody, with no capability and no exemption.
const APP_UID: &str = "65534";
/// The pod's side of the veth pair, and the world's.
const POD: &str = "10.200.0.2";
const WORLD: &str = "10.200.0.1";
/// A Qualtrics-like range: SSH (22) and HTTPS allowed by a CIDR rule.
const RANGE: &str = "11.0.1.22";
const SFTP: &str = "11.0.2.30";
const WEB: &str = "11.0.3.10";
/// An address no rule allows, with something listening on every port tried.
const REFUSED: &str = "11.0.4.20";
const REFUSED_V6: &str = "2001:db8:4::20";
/// The pod's real DNS server (egressd's upstream).
const DNS: &str = "11.0.5.53";
const REFUSED_TCP: [u16; 4] = [8443, 22, 25, 5432];

const POLICY: &str = r#"allow = [
    "web.allowed.test",
    { host = "sftp.allowed.test", ports = [22] },
    { cidr = "11.0.1.0/24", ports = [22, 443] },
]
"#;

/// The world's listeners and what reached them.
#[derive(Default, Clone)]
struct Seen {
    /// Connections the refused address accepted, on any port, and
    /// datagrams it received.
    refused_tcp: Arc<AtomicUsize>,
    refused_udp: Arc<AtomicUsize>,
    /// Connections to the range's port 2222 (no rule allows it).
    range_2222: Arc<AtomicUsize>,
}

/// The pod and the world, a veth pair between them.
fn pod_and_world() -> (Netns, Netns) {
    let pod = Netns::bare("sp");
    let world = Netns::bare("sw");
    pod.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &world.name,
    ]);
    for (ns, me, v6) in [
        (&pod, POD, "2001:db8:ff::2/64"),
        (&world, WORLD, "2001:db8:ff::1/64"),
    ] {
        ns.ip(&["addr", "add", &format!("{me}/24"), "dev", "eth0"]);
        ns.ip(&["addr", "add", v6, "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    pod.ip(&["route", "add", "default", "via", WORLD]);
    pod.ip(&["-6", "route", "add", "default", "via", "2001:db8:ff::1"]);
    for a in [RANGE, SFTP, WEB, REFUSED, DNS] {
        world.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    world.ip(&["addr", "add", &format!("{REFUSED_V6}/128"), "dev", "lo", "nodad"]);
    (pod, world)
}

/// Servers in the world: HTTP and TLS for web.allowed.test, servers that
/// speak first (an SSH banner) on the range and the SFTP host, and
/// counting listeners on the refused address.
fn start_world(world: &Netns, cert: &TestCert, seen: Seen) {
    let acceptor = cert.acceptor(&[]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    world.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let bind = |a: String| async move {
                tokio::net::TcpListener::bind(a.parse::<SocketAddr>().unwrap())
                    .await
                    .unwrap_or_else(|e| panic!("bind {a} in the world: {e}"))
            };
            for tls in [false, true] {
                let l = bind(format!("{WEB}:{}", if tls { 443 } else { 80 })).await;
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    while let Ok((s, peer)) = l.accept().await {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req: Request<Incoming>| async move {
                                let body =
                                    format!("web saw {} {} from {}", req.method(), req.uri(), peer.ip());
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                            });
                            let http = hyper::server::conn::http1::Builder::new();
                            if !tls {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            } else if let Ok(t) = acceptor.accept(s).await {
                                let _ = http.serve_connection(TokioIo::new(t), svc).await;
                            }
                        });
                    }
                });
            }
            let mut banners: Vec<(String, Option<Arc<AtomicUsize>>)> = vec![
                (format!("{RANGE}:22"), None),
                (format!("{SFTP}:22"), None),
                (format!("{RANGE}:2222"), Some(seen.range_2222.clone())),
                (format!("[{REFUSED_V6}]:8443"), Some(seen.refused_tcp.clone())),
            ];
            for p in REFUSED_TCP {
                banners.push((format!("{REFUSED}:{p}"), Some(seen.refused_tcp.clone())));
            }
            for (addr, count) in banners {
                let l = bind(addr.clone()).await;
                tokio::spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        if let Some(c) = &count {
                            c.fetch_add(1, Ordering::SeqCst);
                        }
                        let banner = format!("SSH-2.0-world_{addr}\r\n");
                        tokio::spawn(async move {
                            let _ = s.write_all(banner.as_bytes()).await;
                            let mut sink = [0u8; 1024];
                            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                        });
                    }
                });
            }
            for port in [443, 123] {
                let u = tokio::net::UdpSocket::bind((REFUSED, port)).await.unwrap();
                let count = seen.refused_udp.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    while u.recv_from(&mut buf).await.is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            ready_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        })
    });
    ready_rx.recv_timeout(WAIT).expect("the world's servers started");
}

/// The rules `transparent-rules` prints, installed in the pod.
fn seal(pod: &Netns, dir: &std::path::Path) {
    let rules = run(Command::new(env!("CARGO_BIN_EXE_egressd")).args(["transparent-rules", "--mark", MARK]));
    let file = dir.join("rules.nft");
    std::fs::write(&file, rules).unwrap();
    run(pod.exec().args(["nft", "-f", file.to_str().unwrap()]));
}

fn start_egressd(pod: &Netns, dir: &std::path::Path, more: &[&str]) -> Egressd {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut args: Vec<String> = [
        "--policy",
        policy.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--transparent",
        "127.0.0.1:15001",
        "--transparent",
        "[::1]:15001",
        "--dns-listen",
        "127.0.0.1:15053",
        "--dns-listen",
        "[::1]:15053",
        "--dns-server",
        DNS,
        "--mark",
        MARK,
        "--header-timeout",
        "10s",
    ]
    .map(String::from)
    .to_vec();
    args.extend(more.iter().map(|s| s.to_string()));
    Egressd::start_wrapped(dir, &["ip", "netns", "exec", &pod.name], &args)
}

/// A command run by the app: in the pod, as nobody, no proxy settings.
/// Its exit code and output.
fn app(pod: &Netns, cmd: &[&str]) -> (i32, String) {
    let out = pod
        .exec()
        .args([
            "setpriv",
            "--reuid",
            APP_UID,
            "--regid",
            APP_UID,
            "--clear-groups",
            "--",
        ])
        .args(cmd)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run ({e}); the test command installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `dig` as the app: the answer section (`+short`) or the status line.
fn dig(pod: &Netns, args: &[&str]) -> String {
    let mut cmd = vec!["dig", "+time=3", "+tries=1"];
    cmd.extend_from_slice(args);
    app(pod, &cmd).1
}

fn status(pod: &Netns, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.extend(["+noall", "+comments"]);
    let out = dig(pod, &a);
    out.lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| format!("no status: {out}"))
}

/// Connects as the app and reads what the server says first, within
/// `within` seconds (bash's /dev/tcp, as a shell script would).
fn banner(pod: &Netns, addr: &str, port: u16, within: &str) -> (String, Duration) {
    let script =
        format!("exec 3<>/dev/tcp/{addr}/{port} && read -r -t {within} line <&3; printf %s \"$line\"");
    let started = Instant::now();
    let (_, out) = app(pod, &["bash", "-c", &script]);
    (out, started.elapsed())
}

#[test]
fn nothing_leaves_the_pod_but_what_the_policy_allows() {
    let dir = fresh_dir("sealed");
    let (pod, world) = pod_and_world();
    let cert = test_cert(&["web.allowed.test"]);
    let (cert_pem, _) = cert.write_pem(&dir, "origin");
    let seen = Seen::default();
    start_world(&world, &cert, seen.clone());
    let hosts = format!(
        "{SFTP} sftp.allowed.test\n{WEB} web.allowed.test\n{REFUSED} evil.test\n{REFUSED} db.svc.test\n"
    );
    let dns_dir = dir.join("dns");
    std::fs::create_dir_all(&dns_dir).unwrap();
    let dnsmasq = Dnsmasq::start_in(
        &dns_dir,
        &hosts,
        60,
        &["ip", "netns", "exec", &world.name],
        SocketAddr::new(DNS.parse().unwrap(), 53),
    );
    seal(&pod, &dir);
    // The cluster's own zone, answered without the policy (as cluster.local).
    let e = start_egressd(&pod, &dir, &["--dns-forward-zone", "svc.test"]);

    // DNS, to whatever server the app asks, is egressd's answer.
    assert_eq!(
        dig(&pod, &["@11.0.5.53", "+short", "web.allowed.test", "A"]).trim(),
        WEB
    );
    assert_eq!(
        dig(&pod, &["@198.18.0.53", "+short", "+tcp", "web.allowed.test"]).trim(),
        WEB,
        "over TCP, to another server"
    );
    assert_eq!(
        status(&pod, &["@2001:db8:ff::1", "web.allowed.test", "AAAA"]),
        "NOERROR",
        "over IPv6"
    );
    let secret = "secret-data-1234.evil.example";
    assert_eq!(status(&pod, &["@11.0.5.53", secret]), "NXDOMAIN");
    assert_eq!(
        status(&pod, &["@203.0.113.53", secret]),
        "NXDOMAIN",
        "a foreign server"
    );
    assert_eq!(
        status(&pod, &["@11.0.5.53", "web.allowed.test", "TXT"]),
        "REFUSED"
    );
    assert_eq!(
        dnsmasq.questions("A", secret),
        0,
        "a refused name is never asked upstream"
    );
    assert_eq!(dnsmasq.questions("TXT", "web.allowed.test"), 0);
    // A forward zone is the DNS servers' answer, whatever the policy says.
    assert_eq!(
        dig(&pod, &["@11.0.5.53", "+short", "db.svc.test"]).trim(),
        REFUSED
    );
    assert_eq!(dnsmasq.questions("A", "db.svc.test"), 1, "relayed as asked");
    assert!(
        dnsmasq.questions("A", "web.allowed.test") >= 1,
        "egressd asked for the allowed name"
    );

    // Allowed HTTP and TLS, by Host and SNI.
    let curl = |port: u16, more: &[&str], url: &str| {
        let resolve = format!("web.allowed.test:{port}:{WEB}");
        let mut cmd = vec!["curl", "-s", "--max-time", "10", "--resolve", &resolve];
        cmd.extend_from_slice(more);
        cmd.push(url);
        app(&pod, &cmd)
    };
    let (rc, body) = curl(80, &[], "http://web.allowed.test/hello");
    assert_eq!(rc, 0, "{body}");
    assert!(body.starts_with("web saw GET /hello from 10.200.0.2"), "{body}");
    let ca = cert_pem.to_str().unwrap();
    let (rc, body) = curl(443, &["--cacert", ca], "https://web.allowed.test/tls");
    assert_eq!(rc, 0, "{body}");
    assert!(body.starts_with("web saw GET /tls"), "{body}");

    // SSH to the range on 22: dialled at once, the banner within a second.
    let (out, took) = banner(&pod, RANGE, 22, "1");
    assert!(
        out.starts_with(&format!("SSH-2.0-world_{RANGE}:22")),
        "{out} after {took:?}"
    );
    let (out, _) = banner(&pod, RANGE, 2222, "3");
    assert!(!out.contains("SSH-2.0"), "the rule allows 22 and 443 only: {out}");
    // SSH to a name the app resolved through egressd.
    assert_eq!(
        dig(&pod, &["@11.0.5.53", "+short", "sftp.allowed.test"]).trim(),
        SFTP
    );
    let (out, took) = banner(&pod, SFTP, 22, "1");
    assert!(
        out.starts_with(&format!("SSH-2.0-world_{SFTP}:22")),
        "{out} after {took:?}"
    );

    // Everything else to an address no rule allows: refused.
    for port in REFUSED_TCP {
        let (out, _) = banner(&pod, REFUSED, port, "3");
        assert!(!out.contains("SSH-2.0"), "TCP {port}: {out}");
    }
    let (out, _) = banner(&pod, REFUSED_V6, 8443, "3");
    assert!(!out.contains("SSH-2.0"), "IPv6 TCP 8443: {out}");
    for port in ["443", "123"] {
        app(
            &pod,
            &["bash", "-c", &format!("echo quic > /dev/udp/{REFUSED}/{port}")],
        );
    }
    // A UDP client hears at once that nothing answers (QUIC falls back).
    let out = dig(&pod, &["-p", "443", &format!("@{REFUSED}"), "x.test"]);
    assert!(
        out.contains("connection refused"),
        "UDP 443 is refused with ICMP: {out}"
    );
    assert_eq!(
        seen.refused_tcp.load(Ordering::SeqCst),
        0,
        "no TCP reached the refused address"
    );
    assert_eq!(seen.refused_udp.load(Ordering::SeqCst), 0, "no UDP reached it");
    assert_eq!(seen.range_2222.load(Ordering::SeqCst), 0);

    // Every attempt egressd saw is one access event.
    let events = e.access_events();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().find(|v| pred(v)).cloned();
    for port in REFUSED_TCP {
        let ev = find(&|v| v["original_dst"] == format!("{REFUSED}:{port}"))
            .unwrap_or_else(|| panic!("no event for TCP {port}: {events:#?}"));
        assert_eq!(
            (ev["kind"].as_str(), ev["decision"].as_str()),
            (Some("transparent"), Some("deny")),
            "{ev}"
        );
    }
    assert!(
        find(&|v| v["original_dst"] == format!("[{REFUSED_V6}]:8443") && v["decision"] == "deny").is_some()
    );
    let ev = find(&|v| v["original_dst"] == format!("{RANGE}:2222")).expect("2222's event");
    assert_eq!(ev["reason"], "port_not_allowed", "{ev}");
    let ev = find(&|v| v["original_dst"] == format!("{SFTP}:22")).expect("the SFTP event");
    assert_eq!(
        (ev["host"].as_str(), ev["decision"].as_str()),
        (Some("sftp.allowed.test"), Some("allow")),
        "{ev}"
    );
    let ev = find(&|v| v["kind"] == "dns" && v["host"] == secret).expect("the refused name's event");
    assert_eq!(
        (ev["decision"].as_str(), ev["rcode"].as_str()),
        (Some("deny"), Some("NXDOMAIN")),
        "{ev}"
    );
    assert_eq!(
        ev["client"].as_str().map(|c| c.starts_with(POD)),
        Some(true),
        "{ev}"
    );
    let ev =
        find(&|v| v["kind"] == "dns" && v["host"] == "db.svc.test").expect("the forwarded question's event");
    assert_eq!(
        (ev["decision"].as_str(), ev["rule"].as_str()),
        (Some("allow"), Some("dns-forward-zone:svc.test"))
    );
    let ev = find(&|v| v["kind"] == "dns" && v["method"] == "TXT").expect("the TXT event");
    assert_eq!(ev["reason"], "dns_type_not_answered");
    let ev = find(&|v| v["kind"] == "dns" && v["host"] == "web.allowed.test" && v["method"] == "A").unwrap();
    assert_eq!(ev["answers"], WEB);
    // `report` lists the name looked up and refused: a destination the app
    // never reached, since its lookup failed.
    let report = run(Command::new(env!("CARGO_BIN_EXE_egressd")).args([
        "report",
        "--exit-zero",
        "--policy",
        dir.join("policy.toml").to_str().unwrap(),
        e.log.to_str().unwrap(),
    ]));
    assert!(report.contains(&format!("e.g. DNS A {secret}")), "{report}");
    assert!(report.contains("refused: listed below as port 0"), "{report}");
    drop(e);

    // Report mode lets it all through, and says what it would deny.
    let e = start_egressd(&pod, &dir, &["--mode", "report"]);
    let (out, _) = banner(&pod, REFUSED, 8443, "5");
    assert!(
        out.starts_with("SSH-2.0-world"),
        "report mode passes TCP 8443: {out}"
    );
    assert_eq!(dig(&pod, &["@11.0.5.53", "+short", "evil.test"]).trim(), REFUSED);
    assert_eq!(dnsmasq.questions("A", "evil.test"), 1, "answered from upstream");
    assert_eq!(
        status(&pod, &["@11.0.5.53", "web.allowed.test", "TXT"]),
        "NOERROR",
        "relayed"
    );
    let events = e.access_events();
    let would = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events.iter().any(|v| v["decision"] == "would-deny" && pred(v))
    };
    assert!(
        would(&|v| v["original_dst"] == format!("{REFUSED}:8443")),
        "{events:#?}"
    );
    assert!(
        would(&|v| v["kind"] == "dns" && v["host"] == "evil.test"),
        "{events:#?}"
    );
    assert!(
        would(&|v| v["kind"] == "dns" && v["method"] == "TXT"),
        "{events:#?}"
    );
}
