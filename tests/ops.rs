//! Operations, against the built binary: admin endpoints, metrics, hot
//! reload (SIGHUP, file change, ConfigMap-style symlink swap, broken
//! policy) under load, and SIGTERM drain with an open tunnel.
//! Everything is on 127.0.0.1; every loop is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A tiny blocking origin: answers every request `200 ok` and closes; or,
/// for a tunnel, echoes what it reads until EOF.
fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                s.set_read_timeout(Some(WAIT)).unwrap();
                let mut buf = [0u8; 4096];
                let Ok(n) = s.read(&mut buf) else { return };
                if buf[..n].starts_with(b"ECHO") {
                    let _ = s.write_all(&buf[..n]);
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                } else {
                    let _ =
                        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                }
            });
        }
    });
    addr
}

struct Egressd {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Egressd {
    // The child is waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    fn start(policy: &Path, extra: &[&str]) -> Egressd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_egressd"))
            .args([
                "run",
                "--policy",
                policy.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json", "--dns", "static"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("egressd listening"))
                .cloned();
            if let Some(l) = found {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                return Egressd {
                    child,
                    proxy: v["listen"].as_str().unwrap().parse().unwrap(),
                    admin: v["admin"].as_str().unwrap().parse().unwrap(),
                    lines,
                };
            }
            assert!(Instant::now() < deadline, "egressd did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait_log(&self, needle: &str) -> String {
        self.wait_log_nth(needle, 1)
    }

    /// The `n`th log line containing `needle`, once written.
    fn wait_log_nth(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .nth(n - 1)
            {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no log line {n} with {needle:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(
            self.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
    }

    /// Status of `GET http://{host}/` through the proxy.
    fn proxy_get(&self, host: &str) -> u16 {
        http_get(
            self.proxy,
            &format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .0
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "egressd did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Egressd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("egressd-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pins(origin: SocketAddr) -> Vec<String> {
    ["a.test", "b.test"]
        .iter()
        .map(|h| format!("--resolve={h}:80={origin}"))
        .collect()
}

#[test]
fn admin_endpoints_and_metrics_after_known_requests() {
    let dir = tmpdir("admin");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [{ name = \"a\", host = \"a.test\" }]\n").unwrap();
    let o = origin();
    let pins = pins(o);
    let e = Egressd::start(&policy, &pins.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(e.admin_get("/healthz"), (200, "ok\n".into()));
    assert_eq!(e.admin_get("/readyz").0, 200);
    assert_eq!(e.proxy_get("a.test"), 200);
    assert_eq!(e.proxy_get("a.test"), 200);
    assert_eq!(e.proxy_get("b.test"), 403);
    let (status, m) = e.admin_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        m.contains(r#"egressd_requests_total{kind="http",decision="allow",method="GET",rule="a"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"egressd_requests_total{kind="http",decision="deny",method="GET",rule=""} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"egressd_denials_total{reason="no_matching_rule"} 1"#),
        "{m}"
    );
    assert!(m.contains("egressd_decision_seconds_count 3"), "{m}");
    assert!(m.contains("egressd_bytes_total{direction=\"down\"} 4"), "{m}");
    assert!(m.contains("egressd_tunnels_active 0"), "{m}");
    assert!(m.contains("egressd_policy{version=\"sha256:"), "{m}");
    let (_, p) = e.admin_get("/policy");
    let v: serde_json::Value = serde_json::from_str(&p).unwrap();
    assert_eq!(v["source"], "allow = [{ name = \"a\", host = \"a.test\" }]\n");
    assert!(v["version"].as_str().unwrap().starts_with("sha256:"));
    let (_, pac) = e.admin_get("/proxy.pac");
    assert!(
        pac.contains("\"a.test\"") && pac.contains(&format!("PROXY {}", e.proxy)),
        "{pac}"
    );
    assert_eq!(e.admin_get("/nope").0, 404);
}

/// The live view's data: refusals grouped by destination with their
/// suggested rules, a cursor over the latest decisions, no query strings;
/// with `--auth` the same credentials as the proxy (as `Authorization`),
/// and never answered to a rebound name.
#[test]
fn live_decisions_need_credentials_keep_no_queries_and_follow_a_cursor() {
    use base64::Engine;
    let dir = tmpdir("live");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let users = dir.join("users.toml");
    let hash = egressd::proxy::auth::hash_password("pw").unwrap();
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"alice\"\npassword = \"{hash}\"\n"),
    )
    .unwrap();
    let pins = pins(origin());
    let mut args: Vec<&str> = pins.iter().map(String::as_str).collect();
    args.extend(["--auth", users.to_str().unwrap()]);
    let e = Egressd::start(&policy, &args);
    let creds = base64::engine::general_purpose::STANDARD.encode("alice:pw");
    let through = |target: &str| {
        let host = target.trim_start_matches("http://").split('/').next().unwrap();
        http_get(
            e.proxy,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {creds}\r\nConnection: close\r\n\r\n"
            ),
        )
        .0
    };
    assert_eq!(through("http://a.test/ok"), 200);
    assert_eq!(through("http://b.test/one?token=s3cret"), 403);
    assert_eq!(through("http://b.test/two"), 403);
    let admin = |path: &str, extra: &str| {
        http_get(
            e.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"),
        )
    };
    let auth = format!("Authorization: Basic {creds}\r\n");
    assert_eq!(admin("/decisions", "").0, 401);
    assert_eq!(admin("/", "").0, 401);
    assert_eq!(
        admin("/decisions", &format!("Proxy-{auth}")).0,
        401,
        "the browser's header, not the proxy's"
    );
    let rebound = http_get(
        e.admin,
        &format!("GET /decisions HTTP/1.1\r\nHost: rebound.example:9\r\n{auth}Connection: close\r\n\r\n"),
    );
    assert_eq!(rebound.0, 421);
    assert_eq!(admin("/healthz", "").0, 200, "probes need no credentials");

    let (status, body) = admin("/decisions", &auth);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("s3cret") && !body.contains("token"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["next"], 3);
    assert_eq!(v["decisions"].as_array().unwrap().len(), 3);
    assert_eq!(v["decisions"][1]["path"], "/one");
    assert_eq!(v["decisions"][1]["user"], "alice");
    let denied = v["denied"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{body}");
    assert_eq!(denied[0]["host"], "b.test");
    assert_eq!(denied[0]["requests"], 2);
    assert_eq!(denied[0]["users"][0], "alice");
    assert_eq!(v["suggestions"][0]["rule"], "b.test");
    assert_eq!(v["policy"]["mode"], "enforce");

    assert_eq!(through("http://b.test/three"), 403);
    let (_, body) = admin("/decisions?since=3", &auth);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seqs: Vec<u64> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4]);
    assert_eq!(v["denied"][0]["requests"], 3);
    assert_eq!(admin("/decisions?since=x", &auth).0, 400);
    let (status, page) = admin("/", &auth);
    assert_eq!(status, 200);
    assert!(page.contains("<h1>egressd live</h1>") && page.contains("/decisions?since="));
}

/// Workers share the listening port (SO_REUSEPORT) with each other, and
/// with nobody else: a second proxy on the same address must fail clearly
/// rather than quietly take half of the connections.
#[test]
fn workers_share_the_port_and_a_second_proxy_cannot() {
    let dir = tmpdir("workers");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [{ name = \"a\", host = \"a.test\" }]\n").unwrap();
    let pins = pins(origin());
    let mut args: Vec<&str> = pins.iter().map(String::as_str).collect();
    args.extend(["--worker-threads", "4"]);
    let e = Egressd::start(&policy, &args);
    assert!(e.wait_log("egressd listening").contains("\"workers\":4"));
    // Every connection is new: the kernel spreads them over the workers.
    for _ in 0..40 {
        assert_eq!(e.proxy_get("a.test"), 200);
        assert_eq!(e.proxy_get("b.test"), 403);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["run", "--policy", policy.to_str().unwrap(), "--admin", "off"])
        .args(["--listen", &e.proxy.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {}", e.proxy)), "{err}");
    assert_eq!(e.proxy_get("a.test"), 200);
}

/// Runs `n` requests to `a.test` from a thread while `during` happens; all must succeed.
fn under_load(e: &Egressd, during: impl FnOnce()) {
    let proxy = e.proxy;
    let load = thread::spawn(move || {
        let mut statuses = Vec::new();
        for _ in 0..300 {
            statuses.push(
                http_get(
                    proxy,
                    "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                )
                .0,
            );
            thread::sleep(Duration::from_millis(3));
        }
        statuses
    });
    during();
    let statuses = load.join().unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a request failed during reload: {statuses:?}"
    );
}

fn wait_status(e: &Egressd, host: &str, want: u16) {
    let deadline = Instant::now() + WAIT;
    while e.proxy_get(host) != want {
        assert!(Instant::now() < deadline, "{host} never became {want}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_by_file_change_sighup_and_broken_policy_under_load() {
    let dir = tmpdir("reload");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let o = origin();
    let pins = pins(o);
    let e = Egressd::start(&policy, &pins.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(e.proxy_get("b.test"), 403);

    // File change: b.test becomes allowed while requests flow.
    under_load(&e, || {
        thread::sleep(Duration::from_millis(200));
        std::fs::write(&policy, "allow = [\"a.test\", \"b.test\"]\n").unwrap();
        wait_status(&e, "b.test", 200);
    });
    e.wait_log("\"trigger\":\"file-change\"");

    // A broken policy is rejected; the old one keeps serving.
    under_load(&e, || {
        std::fs::write(&policy, "allow = [\"a.test\", \"*.com\"]\n").unwrap();
        e.wait_log("policy reload failed");
    });
    assert_eq!(e.proxy_get("b.test"), 200);
    let (_, m) = e.admin_get("/metrics");
    assert!(
        m.contains("egressd_policy_reloads_total{result=\"error\"} 1"),
        "{m}"
    );

    // SIGHUP: rewrite without waiting for the watcher's debounce, then signal.
    under_load(&e, || {
        std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
        e.signal("-HUP");
        wait_status(&e, "b.test", 403);
    });
}

/// One editor save that empties the policy file must not be an outage: a
/// file with no rules is refused over a policy with rules (logged, counted,
/// the old policy serving) unless it says `allow = []`, which is obeyed.
#[test]
fn an_emptied_policy_file_is_refused_unless_it_says_so() {
    let dir = tmpdir("emptied");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let o = origin();
    let pins = pins(o);
    let e = Egressd::start(&policy, &pins.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(e.proxy_get("a.test"), 200);
    for (n, truncated) in ["", "# the team's allowlist\n"].into_iter().enumerate() {
        std::fs::write(&policy, truncated).unwrap();
        e.signal("-HUP");
        let line = e.wait_log_nth("has no rules", n + 1);
        assert!(
            line.contains("\"level\":\"ERROR\"") && line.contains("allow = []"),
            "{line}"
        );
        assert_eq!(e.proxy_get("a.test"), 200, "the old policy keeps serving");
    }
    let (_, m) = e.admin_get("/metrics");
    assert!(
        m.contains("egressd_policy_reloads_total{result=\"error\"} 2"),
        "{m}"
    );
    std::fs::write(&policy, "allow = []   # nothing leaves\n").unwrap();
    e.signal("-HUP");
    wait_status(&e, "a.test", 403);
}

/// SIGHUP rereads the credentials file: a changed password or a removed
/// user loses access at once (a cached verification does not outlive the
/// reload), a new user gets in, and a file that does not load keeps the
/// users as they were.
#[test]
fn sighup_reloads_users_and_a_broken_file_keeps_them() {
    use base64::Engine;
    let dir = tmpdir("users");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let users = dir.join("users.toml");
    let entry = |name: &str, password: &str| {
        let hash = egressd::proxy::auth::hash_password(password).unwrap();
        format!("[[user]]\nname = \"{name}\"\npassword = \"{hash}\"\n")
    };
    std::fs::write(&users, entry("alice", "old-pw") + &entry("carol", "carol-pw")).unwrap();
    let pins = pins(origin());
    let mut args: Vec<&str> = pins.iter().map(String::as_str).collect();
    args.extend(["--auth", users.to_str().unwrap()]);
    let e = Egressd::start(&policy, &args);
    let status = |user: &str, password: &str| {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        http_get(
            e.proxy,
            &format!(
                "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nProxy-Authorization: Basic {creds}\r\nConnection: close\r\n\r\n"
            ),
        )
        .0
    };
    assert_eq!(status("alice", "old-pw"), 200);
    assert_eq!(status("alice", "old-pw"), 200, "verified once, then cached");
    assert_eq!(status("carol", "carol-pw"), 200);
    assert_eq!(status("bob", "bob-pw"), 407);

    std::fs::write(&users, entry("alice", "new-pw") + &entry("bob", "bob-pw")).unwrap();
    e.signal("-HUP");
    e.wait_log("users reloaded");
    assert_eq!(status("alice", "old-pw"), 407, "an old password stops at once");
    assert_eq!(status("alice", "new-pw"), 200);
    assert_eq!(status("carol", "carol-pw"), 407, "a removed user stops at once");
    assert_eq!(status("bob", "bob-pw"), 200);

    std::fs::write(&users, "[[user]]\nname = 1\n").unwrap();
    e.signal("-HUP");
    assert!(e.wait_log("users not reloaded").contains("users.toml"));
    assert_eq!(status("bob", "bob-pw"), 200);
}

#[test]
fn reload_when_a_configmap_swaps_its_data_symlink() {
    // Kubernetes: p.toml -> ..data/p.toml, ..data -> ..v1; an update makes
    // ..v2 and renames a new ..data symlink over the old one.
    let dir = tmpdir("configmap");
    for (v, text) in [
        ("..v1", "allow = [\"a.test\"]\n"),
        ("..v2", "allow = [\"a.test\", \"b.test\"]\n"),
    ] {
        std::fs::create_dir_all(dir.join(v)).unwrap();
        std::fs::write(dir.join(v).join("p.toml"), text).unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/p.toml", dir.join("p.toml")).unwrap();
    let o = origin();
    let pins = pins(o);
    let e = Egressd::start(
        &dir.join("p.toml"),
        &pins.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(e.proxy_get("b.test"), 403);
    under_load(&e, || {
        std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        wait_status(&e, "b.test", 200);
    });
}

#[test]
fn sigterm_drains_an_open_tunnel_then_exits_zero() {
    let dir = tmpdir("drain");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"tunnel.test:7000\"]\n").unwrap();
    let o = origin();
    let pin = format!("--resolve=tunnel.test:7000={o}");
    let mut e = Egressd::start(&policy, &[&pin, "--drain", "5s"]);

    let mut t = TcpStream::connect(e.proxy).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.write_all(b"CONNECT tunnel.test:7000 HTTP/1.1\r\nHost: tunnel.test:7000\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 64];
    let n = t.read(&mut head).unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    t.write_all(b"ECHO one").unwrap();
    let mut buf = [0u8; 8];
    t.read_exact(&mut buf).unwrap();

    e.signal("-TERM");
    e.wait_log("shutting down");
    // Draining: not ready, but alive; the tunnel still carries bytes.
    assert_eq!(e.admin_get("/readyz"), (503, "draining\n".into()));
    assert_eq!(e.admin_get("/healthz").0, 200);
    t.write_all(b" two").unwrap();
    let mut buf = [0u8; 4];
    t.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b" two");
    // New connections are no longer accepted.
    assert!(TcpStream::connect(e.proxy).is_err() || e.proxy_get("tunnel.test:7000") == 0);

    // The tunnel ends: drain completes and the process exits 0.
    drop(t);
    assert_eq!(e.wait_exit(), Some(0));
    e.wait_log("drained: nothing was cut");
}

#[test]
fn drain_period_over_cuts_the_tunnel_and_says_so() {
    let dir = tmpdir("cut");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"tunnel.test:7000\"]\n").unwrap();
    let o = origin();
    let pin = format!("--resolve=tunnel.test:7000={o}");
    let mut e = Egressd::start(&policy, &[&pin, "--drain", "300ms"]);
    let mut t = TcpStream::connect(e.proxy).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.write_all(b"CONNECT tunnel.test:7000 HTTP/1.1\r\nHost: x\r\n\r\nECHO")
        .unwrap();
    let mut head = [0u8; 64];
    let _ = t.read(&mut head).unwrap();
    e.signal("-TERM");
    assert_eq!(e.wait_exit(), Some(0));
    let cut = e.wait_log("drain period over");
    assert!(cut.contains("\"tunnels\":1"), "{cut}");
    let ev = e.wait_log("\"kind\":\"connect\"");
    assert!(ev.contains("\"error\":\"shutdown\""), "{ev}");
}

/// `--access-log FILE`: events go to the file (not stdout), a rotated file
/// is let go at SIGHUP, and every event is in a file at a clean exit.
#[test]
fn access_log_file_rotates_on_sighup_and_loses_nothing_at_exit() {
    let dir = tmpdir("accesslog");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let log = dir.join("access.log");
    let o = origin();
    let mut args = pins(o);
    args.push(format!("--access-log={}", log.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut e = Egressd::start(&policy, &args);
    let lines = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("{err}: {l}")))
            .collect()
    };
    for _ in 0..200 {
        assert_eq!(e.proxy_get("a.test"), 200);
    }
    assert_eq!(e.proxy_get("b.test"), 403);
    let deadline = Instant::now() + WAIT;
    while lines(&log).len() < 201 {
        assert!(
            Instant::now() < deadline,
            "events not written: {}",
            lines(&log).len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let first = lines(&log);
    assert!(first.iter().all(|v| v["target"] == "egressd::access"));
    assert_eq!(first.iter().filter(|v| v["decision"] == "deny").count(), 1);
    assert!(!e
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("egressd::access")));

    // logrotate: move the file, then SIGHUP.
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    e.signal("-HUP");
    while !log.exists() {
        assert!(Instant::now() < deadline, "access log not reopened");
        thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..100 {
        assert_eq!(e.proxy_get("a.test"), 200);
    }
    // Exit at once: what is still buffered is written out first.
    e.signal("-TERM");
    assert_eq!(e.wait_exit(), Some(0));
    assert_eq!(lines(&dir.join("access.log.1")).len(), 201);
    assert_eq!(lines(&log).len(), 100);
}

#[test]
fn an_access_log_that_cannot_be_opened_is_an_error_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["run", "--listen", "127.0.0.1:0", "--admin", "off"])
        .args(["--access-log", "/nonexistent-egressd-dir/access.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-egressd-dir/access.log"), "{err}");
}
