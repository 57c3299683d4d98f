//! The admin listener is closed to what it must not serve: a port it
//! cannot bind stops the start, and the live view and the policy answer
//! loopback clients only (without `--auth`), while health, readiness,
//! metrics and the PAC file stay open to whoever reaches the port. The
//! other host is an address in a network namespace the test makes.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use support::netns::Netns;
use support::*;

/// `GET path` from `from` to `to`: the status.
fn status(from: &str, to: SocketAddr, path: &str) -> u16 {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&from.parse::<SocketAddr>().unwrap().into()).unwrap();
    s.connect(&to.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// `run`'s arguments but the admin listener's, with a policy in `dir`.
fn run_args(dir: &std::path::Path) -> Vec<String> {
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let policy = policy.to_str().unwrap();
    ["--policy", policy, "--listen", "127.0.0.1:0", "--dns", "static"]
        .map(String::from)
        .to_vec()
}

#[test]
fn the_live_view_and_policy_answer_loopback_clients_only() {
    let dir = fresh_dir("admin-closed");
    let ns = Netns::bare("adm");
    ns.ip(&["addr", "add", "198.51.100.10/32", "dev", "lo"]);
    let args = run_args(&dir);
    let e = Egressd::start_admin(&dir, &["ip", "netns", "exec", &ns.name], &args, "0.0.0.0:0");
    let port = e.admin.port();
    let answers = ns
        .enter(move || {
            let other = SocketAddr::from(([198, 51, 100, 10], port));
            let local = SocketAddr::from(([127, 0, 0, 1], port));
            let paths = [
                "/",
                "/decisions",
                "/policy",
                "/metrics",
                "/healthz",
                "/readyz",
                "/proxy.pac",
            ];
            let from_other: Vec<u16> = paths
                .iter()
                .map(|p| status("198.51.100.10:0", other, p))
                .collect();
            let from_loopback: Vec<u16> = paths.iter().map(|p| status("127.0.0.1:0", local, p)).collect();
            (from_other, from_loopback)
        })
        .join()
        .unwrap();
    assert_eq!(
        answers.0,
        vec![403, 403, 403, 200, 200, 200, 200],
        "from another host"
    );
    assert_eq!(
        answers.1,
        vec![200, 200, 200, 200, 200, 200, 200],
        "from loopback"
    );
}

#[test]
fn an_admin_port_that_cannot_be_bound_stops_the_start() {
    let dir = fresh_dir("admin-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_egressd"))
        .arg("run")
        .args(run_args(&dir))
        .args(["--admin", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("egressd kept running with its admin port taken");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains(&addr) && err.contains("--admin off"), "{err}");
    drop(taken);
}
