//! Transparent mode against the real kernel, inside a network namespace
//! this test makes (`ip netns add`): documentation addresses
//! (198.51.100.0/24, 2001:db8::/32) on its loopback exist only there,
//! origins listen on them, `egressd transparent-rules | nft -f -` redirects
//! TCP 80/443 to egressd's transparent listener, and curl runs without any
//! proxy setting. Nothing leaves the namespace. Needs root, iproute2 and
//! nftables (CI installs them); if the namespace cannot be made, the test
//! fails and says why.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::netns::{run, Netns};
use support::*;

const MARK: &str = "1337";
const PORT: u16 = 15001;

/// An origin that names itself: `origin ADDR saw METHOD PATH host=HOST`.
async fn origin_service(req: Request<Incoming>, me: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = format!("origin {me} saw {} {} host={host}", req.method(), req.uri());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// Plain HTTP origins and TLS origins (with `cert`) on the namespace's
/// documentation addresses, served from a thread inside it.
fn start_origins(ns: &Netns, cert: &TestCert) {
    let acceptor = cert.acceptor(&[]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let plain: Vec<SocketAddr> = ["198.51.100.10:80", "198.51.100.20:80", "[2001:db8::10]:80"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
            let tls: Vec<SocketAddr> = ["198.51.100.10:443", "198.51.100.20:443"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
            for (addr, secure) in plain
                .into_iter()
                .map(|a| (a, false))
                .chain(tls.into_iter().map(|a| (a, true)))
            {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("bind an origin in the namespace");
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| origin_service(req, addr));
                            let http = hyper::server::conn::http1::Builder::new();
                            if secure {
                                if let Ok(tls) = acceptor.accept(s).await {
                                    let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                                }
                            } else {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        });
                    }
                });
            }
            ready_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        })
    });
    ready_rx
        .recv_timeout(WAIT)
        .expect("origins started in the namespace");
}

/// The redirect in the namespace, exactly as `transparent-rules` prints it.
fn redirect(ns: &Netns, dir: &std::path::Path) {
    let rules = run(Command::new(env!("CARGO_BIN_EXE_egressd")).args([
        "transparent-rules",
        "--mark",
        MARK,
        "--port",
        &PORT.to_string(),
    ]));
    let rules_file = dir.join("rules.nft");
    std::fs::write(&rules_file, rules).unwrap();
    run(ns.exec().args(["nft", "-f", rules_file.to_str().unwrap()]));
}

/// `egressd run` arguments for a transparent listener on [`PORT`] whose
/// marked sockets the redirect lets pass, names pinned statically.
fn transparent_args(policy: &std::path::Path, more: &[&str]) -> Vec<String> {
    let port = format!("127.0.0.1:{PORT}");
    let mut args = vec![
        "--policy",
        policy.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--transparent",
        &port,
        "--mark",
        MARK,
        "--dns",
        "static",
    ];
    args.extend_from_slice(more);
    args.into_iter().map(String::from).collect()
}

/// curl inside the namespace, with no proxy: exit code, status, body.
fn curl(ns: &Netns, args: &[&str]) -> (i32, String, String) {
    let out = ns
        .exec()
        .args([
            "curl",
            "-s",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .unwrap_or_else(|e| panic!("curl cannot run ({e}); CI installs it"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.to_string(),
        body.to_string(),
    )
}

#[test]
fn redirected_connections_are_decided_by_sni_host_and_path() {
    let dir = fresh_dir("transparent");
    let ns = Netns::create("t");
    let cert = test_cert(&["allowed.test", "denied.test"]);
    let (cert_pem, _) = cert.write_pem(&dir, "origin");
    start_origins(&ns, &cert);

    redirect(&ns, &dir);

    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "allow = [\"http://allowed.test/ok\", \"https://allowed.test\", \"http://v6.test\"]\n",
    )
    .unwrap();
    let v6 = format!("[::1]:{PORT}");
    let args = transparent_args(
        &policy,
        &[
            "--transparent",
            &v6,
            "--resolve",
            "allowed.test=198.51.100.10",
            "--resolve",
            "denied.test=198.51.100.10",
            "--resolve",
            "v6.test=2001:db8::10",
        ],
    );
    let e = Egressd::start_wrapped(&dir, &["ip", "netns", "exec", &ns.name], &args);

    // Plain HTTP: Host and path decide.
    let (_, code, body) = curl(
        &ns,
        &[
            "--resolve",
            "allowed.test:80:198.51.100.10",
            "http://allowed.test/ok/1",
        ],
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(body, "origin 198.51.100.10:80 saw GET /ok/1 host=allowed.test");
    let (_, code, body) = curl(
        &ns,
        &[
            "--resolve",
            "allowed.test:80:198.51.100.10",
            "http://allowed.test/other",
        ],
    );
    assert_eq!(code, "403", "path rules apply to redirected HTTP: {body}");
    let (_, code, _) = curl(
        &ns,
        &["--resolve", "denied.test:80:198.51.100.10", "http://denied.test/"],
    );
    assert_eq!(code, "403");

    // TLS: the SNI decides; the client sees the origin's own certificate.
    let ca = cert_pem.to_str().unwrap();
    let (rc, code, body) = curl(
        &ns,
        &[
            "--cacert",
            ca,
            "--resolve",
            "allowed.test:443:198.51.100.10",
            "https://allowed.test/tls",
        ],
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{body}");
    assert_eq!(body, "origin 198.51.100.10:443 saw GET /tls host=allowed.test");
    let (rc, _, _) = curl(
        &ns,
        &[
            "--cacert",
            ca,
            "--resolve",
            "denied.test:443:198.51.100.10",
            "https://denied.test/",
        ],
    );
    assert_ne!(rc, 0, "a denied TLS connection is closed");

    // An allowed SNI sent to the wrong address reaches egressd's own answer.
    let (rc, _, body) = curl(
        &ns,
        &[
            "--cacert",
            ca,
            "--resolve",
            "allowed.test:443:198.51.100.20",
            "https://allowed.test/where",
        ],
    );
    assert_eq!(rc, 0, "{body}");
    assert!(
        body.starts_with("origin 198.51.100.10:443 "),
        "dialled egressd's address, not the app's: {body}"
    );

    // IPv6 redirect.
    let (_, code, body) = curl(
        &ns,
        &["--resolve", "v6.test:80:[2001:db8::10]", "http://v6.test/six"],
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(body, "origin [2001:db8::10]:80 saw GET /six host=v6.test");

    // Two Host fields: 400 (RFC 9112 §3.2), as on the forward listener.
    let twice = ns.enter(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("198.51.100.10:80").unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(
            b"GET /ok/twice HTTP/1.1\r\nHost: allowed.test\r\nHost: denied.test\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    let twice = twice.join().unwrap();
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");

    let events = e.access_events();
    let one = |pred: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let found: Vec<&serde_json::Value> = events.iter().filter(|v| pred(v)).collect();
        assert_eq!(found.len(), 1, "{events:#?}");
        found[0].clone()
    };
    // Exactly one event each: egressd's marked upstream sockets were not
    // redirected back to it.
    let ok = one(&|v| v["path"] == "/ok/1");
    assert_eq!(ok["kind"], "transparent");
    assert_eq!(ok["original_dst"], "198.51.100.10:80");
    assert_eq!(ok["decision"], "allow");
    let denied = one(&|v| v["host"] == "denied.test" && v["port"] == 443);
    assert_eq!(
        (denied["decision"].as_str(), denied["sni"].as_str()),
        (Some("deny"), Some("denied.test"))
    );
    let wrong = one(&|v| v["original_dst"] == "198.51.100.20:443");
    assert_eq!(wrong["dst_mismatch"], true, "{wrong}");
    assert_eq!(wrong["addr"], "198.51.100.10:443");
    assert_eq!(one(&|v| v["path"] == "/six")["original_dst"], "[2001:db8::10]:80");
    assert!(events.iter().all(|v| v["kind"] == "transparent"), "{events:#?}");

    // report reads transparent events like the rest.
    let out = Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args([
            "report",
            "--policy",
            policy.to_str().unwrap(),
            e.log.to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts: Vec<&str> = v["denied_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["host"].as_str())
        .collect();
    assert!(
        hosts.contains(&"denied.test") && hosts.contains(&"allowed.test"),
        "{v:#}"
    );
}

/// Redirected tunnels walk the same tunnel path as CONNECT ones, so they
/// are held to `--max-tunnels-per-client` too: a second TLS connection
/// while one is open is refused (and logged), and the slot comes back when
/// the first ends.
#[test]
fn redirected_tunnels_are_capped_per_client() {
    let dir = fresh_dir("transparent-cap");
    let ns = Netns::create("c");
    let cert = test_cert(&["allowed.test"]);
    let (cert_pem, _) = cert.write_pem(&dir, "origin");
    start_origins(&ns, &cert);
    redirect(&ns, &dir);
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "allow = [\"https://allowed.test\"]\n").unwrap();
    let args = transparent_args(
        &policy,
        &[
            "--resolve",
            "allowed.test=198.51.100.10",
            "--max-tunnels-per-client",
            "1",
        ],
    );
    let e = Egressd::start_wrapped(&dir, &["ip", "netns", "exec", &ns.name], &args);

    // One TLS connection held open through egressd, from inside the namespace.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let held = ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let s = tokio::net::TcpStream::connect("198.51.100.10:443").await.unwrap();
            let tls = tls_over(s, "allowed.test", &cert).await;
            ready_tx.send(()).unwrap();
            let _ = tokio::task::spawn_blocking(move || release_rx.recv_timeout(WAIT)).await;
            drop(tls);
        })
    });
    ready_rx.recv_timeout(WAIT).expect("the first tunnel is open");

    let ca = cert_pem.to_str().unwrap();
    let https = [
        "--cacert",
        ca,
        "--resolve",
        "allowed.test:443:198.51.100.10",
        "https://allowed.test/second",
    ];
    let (rc, _, _) = curl(&ns, &https);
    assert_ne!(rc, 0, "a second tunnel from the same client is refused");
    release_tx.send(()).unwrap();
    held.join().unwrap();
    // The slot is released when the first tunnel ends.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (rc, code, _) = curl(&ns, &https);
        if rc == 0 && code == "200" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never released");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let events = e.access_events();
    assert!(
        events
            .iter()
            .any(|v| v["error"] == "connection_limit_reached" && v["kind"] == "transparent"),
        "{events:#?}"
    );
}
