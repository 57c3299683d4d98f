//! TLS inspection: a TLS origin with a certificate from a test root,
//! egressd with a CA from `ca init` and `--upstream-ca` for the test root,
//! and rustls clients that trust egressd's CA (or do not). Real sockets on
//! 127.0.0.1 only.

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;

struct Setup {
    proxy: Proxy,
    /// egressd's CA, as a client would trust it.
    ca: TestCert,
    /// The origin's own certificate (its test root).
    origin: TestCert,
}

async fn setup(policy_src: &str, tag: &str) -> Setup {
    setup_with(policy_src, tag, std::time::Duration::from_secs(30), None).await
}

async fn setup_with(
    policy_src: &str,
    tag: &str,
    header_timeout: std::time::Duration,
    tunnel_idle: Option<std::time::Duration>,
) -> Setup {
    let origin_cert = test_cert(&["inspect.test", "plain.test"]);
    let origin = start_tls_origin(&origin_cert).await;
    let dir = std::env::temp_dir().join(format!("egressd-inspect-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = test_ca(&dir);
    let roots = roots_pem(dir.join("origin-root.pem"), &[&origin_cert]);
    let ca_dir = dir.join("ca");
    let mut opts = ProxyOpts::new(policy(policy_src)).config(move |c| {
        c.ca_dir = Some(ca_dir);
        c.upstream_ca = vec![roots];
        c.header_timeout = header_timeout;
        if let Some(idle) = tunnel_idle {
            c.tunnel_idle = idle;
        }
    });
    for name in ["inspect.test", "plain.test", "wrong.test"] {
        opts = opts.pin(&format!("{name}:443={origin}"));
    }
    let proxy = start_proxy(opts).await;
    proxy.shared.load_inspector().unwrap();
    Setup {
        proxy,
        ca: TestCert {
            der: ca.cert_der.clone(),
            key: origin_cert.key.clone_key(),
        },
        origin: origin_cert,
    }
}

const POLICY: &str = r#"allow = ["inspect.test/allowed", "inspect.test/big", "inspect.test/upload", "inspect.test/ws", "plain.test", "wrong.test/x"]"#;

async fn get_inside(s: &Setup, host: &str, path: &str) -> http::Response<hyper::body::Incoming> {
    let tunnel = connect(s.proxy.addr, &format!("{host}:443"))
        .await
        .expect("tunnel");
    let tls = tls_over(tunnel, host, &s.ca).await;
    let req = Request::get(path).header("host", host).body(full("")).unwrap();
    request_over(tls, req).await
}

#[tokio::test]
async fn path_rules_are_enforced_inside_https() {
    let s = setup(POLICY, "paths").await;
    let resp = get_inside(&s, "inspect.test", "/allowed/x?q=1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The origin echoes what it received: origin-form, the tunnel's host.
    let body = body_text(resp).await;
    assert!(body.starts_with("GET /allowed/x?q=1"), "{body}");
    assert!(body.contains("host: inspect.test"), "{body}");
    let resp = get_inside(&s, "inspect.test", "/search?q=x").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("http_request_denied"));
    assert!(body_text(resp).await.contains("path is not allowed"));
    let ev = wait_access(|v| v["kind"] == "inspected" && v["path"] == "/search").await;
    assert_eq!(
        (ev["decision"].as_str(), ev["reason"].as_str()),
        (Some("deny"), Some("path_not_allowed"))
    );
    let ev = wait_access(|v| v["kind"] == "inspected" && v["path"] == "/allowed/x").await;
    assert_eq!(ev["status"], 200);
    let tunnel = wait_access(|v| v["kind"] == "connect" && v["host"] == "inspect.test").await;
    assert!(
        tunnel["flags"].as_str().unwrap().contains("inspected"),
        "{tunnel}"
    );
    // A second tunnel to the same host signs nothing.
    let _ = get_inside(&s, "inspect.test", "/allowed/y").await;
    let m = s.proxy.shared.metrics.encode();
    assert!(
        m.contains(r#"egressd_inspection_leaves_total{result="signed"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"egressd_inspection_leaves_total{result="cached"}"#),
        "{m}"
    );
}

#[tokio::test]
async fn hosts_without_path_rules_are_spliced() {
    let s = setup(POLICY, "splice").await;
    // The client trusts only the origin's own certificate: it sees it.
    let tunnel = connect(s.proxy.addr, "plain.test:443").await.expect("tunnel");
    let tls = tls_over(tunnel, "plain.test", &s.origin).await;
    let req = Request::get("/anything")
        .header("host", "plain.test")
        .body(full(""))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn http2_inside_the_tunnel() {
    let s = setup(POLICY, "h2").await;
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let config = client_config(&[&s.ca.der], &[b"h2"]);
    let name = rustls::pki_types::ServerName::try_from("inspect.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tunnel)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (path, want) in [("/allowed/h2", StatusCode::OK), ("/other", StatusCode::FORBIDDEN)] {
        let req = Request::get(format!("https://inspect.test{path}"))
            .body(full(""))
            .unwrap();
        let resp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), want, "{path}");
    }
}

/// HTTP/2 has no header timeout between requests: an inspected h2
/// connection with nothing in flight for the tunnel idle time is sent away.
#[tokio::test]
async fn an_idle_http2_connection_inside_is_closed() {
    let s = setup_with(
        POLICY,
        "h2-idle",
        std::time::Duration::from_secs(30),
        Some(std::time::Duration::from_millis(300)),
    )
    .await;
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let config = client_config(&[&s.ca.der], &[b"h2"]);
    let name = rustls::pki_types::ServerName::try_from("inspect.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tunnel)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("https://inspect.test/allowed/once")
        .body(full(""))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(body_text(resp).await);
    // The proxy ends the connection on its own, well within the wait.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");
}

#[tokio::test]
async fn large_bodies_both_ways_are_byte_exact() {
    let s = setup(POLICY, "big").await;
    const N: u64 = 8 << 20;
    let resp = get_inside(&s, "inspect.test", &format!("/big/x?n={N}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(body.len() as u64, N);
    assert_eq!(
        hex(&<sha2::Sha256 as sha2::Digest>::digest(&body)),
        pattern_sha256(N)
    );
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let tls = tls_over(tunnel, "inspect.test", &s.ca).await;
    let req = Request::post("/upload/x")
        .header("host", "inspect.test")
        .body(full(pattern_chunk(0, N as usize)))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_eq!(body_text(resp).await, format!("{N} {}", pattern_sha256(N)));
}

#[tokio::test]
async fn wrong_origin_certificate_wrong_host_and_untrusting_clients() {
    let s = setup(POLICY, "errors").await;
    // The origin's certificate does not name wrong.test: 502, with the reason.
    let resp = get_inside(&s, "wrong.test", "/x").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let ps = resp.headers()["proxy-status"].to_str().unwrap().to_string();
    assert!(
        ps.contains("tls_certificate_error") && ps.contains("name mismatch"),
        "{ps}"
    );
    // A request naming another host than the tunnel's: 421.
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let tls = tls_over(tunnel, "inspect.test", &s.ca).await;
    let req = Request::get("/allowed/x")
        .header("host", "plain.test")
        .body(full(""))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    // A client that does not trust egressd's CA: its own class, counted.
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let config = client_config(&[&s.origin.der], &[]);
    let name = rustls::pki_types::ServerName::try_from("inspect.test").unwrap();
    let refused = tokio_rustls::TlsConnector::from(config)
        .connect(name, tunnel)
        .await;
    assert!(refused.is_err());
    let ev = wait_access(|v| v["kind"] == "connect" && v["error"] == "client_rejected_certificate").await;
    assert_eq!(ev["host"], "inspect.test");
    let m = s.proxy.shared.metrics.encode();
    assert!(m.contains("egressd_inspection_client_rejections_total 1"), "{m}");
}

#[tokio::test]
async fn websocket_inside_inspected_tls_and_no_h2c() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(POLICY, "ws").await;
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let mut tls = tls_over(tunnel, "inspect.test", &s.ca).await;
    tls.write_all(
        b"GET /ws/chat HTTP/1.1\r\nHost: inspect.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
    // h2c never passes: the upgrade is dropped, and an origin switching
    // anyway is not believed.
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let tls = tls_over(tunnel, "inspect.test", &s.ca).await;
    let req = Request::get("/ws/h2c")
        .header("host", "inspect.test")
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")
        .body(full(""))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_ne!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
}

#[tokio::test]
async fn methods_are_enforced_inside_https() {
    let s = setup(
        r#"allow = [{ host = "https://inspect.test", methods = ["GET", "HEAD"] }]"#,
        "methods",
    )
    .await;
    let resp = get_inside(&s, "inspect.test", "/anything").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let tls = tls_over(tunnel, "inspect.test", &s.ca).await;
    let req = Request::post("/anything")
        .header("host", "inspect.test")
        .body(full("x"))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Another test POSTs (allowed) inside its tunnels: this one's path.
    let ev =
        wait_access(|v| v["kind"] == "inspected" && v["method"] == "POST" && v["path"] == "/anything").await;
    assert_eq!(ev["reason"], "method_not_allowed");
}

#[tokio::test]
async fn a_tunnel_whose_client_never_speaks_is_closed() {
    use tokio::io::AsyncReadExt;
    let s = setup_with(POLICY, "silent", std::time::Duration::from_millis(300), None).await;
    let mut tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(WAIT, tunnel.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the silent tunnel was not closed");
    let ev = wait_access(|v| v["kind"] == "connect" && v["error"] == "client_tls_error").await;
    assert!(ev["detail"].as_str().unwrap().contains("ClientHello"), "{ev}");
}

/// A request inside an inspected tunnel that does not parse is refused
/// like one on the listener: 400 and an event of its own, named by the
/// tunnel's host and the path as written.
#[tokio::test]
async fn a_malformed_request_inside_leaves_an_event() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(POLICY, "malformed").await;
    let tunnel = connect(s.proxy.addr, "inspect.test:443").await.expect("tunnel");
    let mut tls = tls_over(tunnel, "inspect.test", &s.ca).await;
    tls.write_all(b"GET /allowed/bad HTTP/1.1\r\nBad Header\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let ev = wait_access(|v| v["kind"] == "inspected" && v["path"] == "/allowed/bad").await;
    assert_eq!(
        (ev["host"].as_str(), ev["method"].as_str(), ev["error"].as_str()),
        (Some("inspect.test:443"), Some("GET"), Some("http_request_error")),
        "{ev}"
    );
}

/// A TLS origin speaking what `alpn` offers (HTTP/1.1 without ALPN),
/// counting its connections; it answers with the version, authority (or
/// `Host`) and path it saw. An HTTP/1.1 connection idle for `idle` is
/// closed (close_notify, then FIN), as servers close kept connections.
async fn counting_tls_origin(
    cert: &TestCert,
    alpn: &[&[u8]],
    idle: std::time::Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let acceptor = cert.acceptor(alpn);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc =
                    hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let host = req.headers().get("host").and_then(|h| h.to_str().ok());
                        let text = format!(
                            "{:?} {} {}",
                            req.version(),
                            req.uri().authority().map(|a| a.as_str()).or(host).unwrap_or("-"),
                            req.uri().path()
                        );
                        Ok::<_, std::convert::Infallible>(http::Response::new(full(text)))
                    });
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(idle)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    });
    (origin, connections)
}

/// egressd inspecting every tunnel to `name`, pinned to `origin` whose
/// certificate is `origin_cert`; and the CA its clients trust.
async fn inspecting_proxy(
    tag: &str,
    name: &str,
    origin: std::net::SocketAddr,
    origin_cert: &TestCert,
) -> (Proxy, TestCert) {
    let dir = std::env::temp_dir().join(format!("egressd-inspect-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = test_ca(&dir);
    let roots = roots_pem(dir.join("origin-root.pem"), &[origin_cert]);
    let ca_dir = dir.join("ca");
    let proxy = start_proxy(
        ProxyOpts::new(policy(&format!(r#"allow = ["{name}/api"]"#)))
            .config(move |c| {
                c.ca_dir = Some(ca_dir);
                c.upstream_ca = vec![roots];
            })
            .pin(&format!("{name}:443={origin}")),
    )
    .await;
    proxy.shared.load_inspector().unwrap();
    let trust = TestCert {
        der: ca.cert_der.clone(),
        key: origin_cert.key.clone_key(),
    };
    (proxy, trust)
}

/// `GET path` in a new inspected tunnel to `name`: the status and body.
async fn get_in_new_tunnel(proxy: &Proxy, trust: &TestCert, name: &str, path: &str) -> (StatusCode, String) {
    let tunnel = connect(proxy.addr, &format!("{name}:443")).await.unwrap();
    let tls = tls_over(tunnel, name, trust).await;
    let req = Request::get(path).header("host", name).body(full("")).unwrap();
    let resp = request_over(tls, req).await;
    (resp.status(), body_text(resp).await)
}

/// An origin that speaks HTTP/2 (ALPN h2 only) gets inspected requests
/// over HTTP/2, several of them on one connection, whatever the client
/// spoke; it answers with the version and authority it saw.
#[tokio::test]
async fn origins_that_speak_http2_get_http2() {
    let origin_cert = test_cert(&["h2.test"]);
    let (origin, connections) = counting_tls_origin(&origin_cert, &[b"h2"], WAIT).await;
    let (proxy, trust) = inspecting_proxy("h2", "h2.test", origin, &origin_cert).await;
    for i in 0..3 {
        let (status, body) = get_in_new_tunnel(&proxy, &trust, "h2.test", &format!("/api/{i}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("HTTP/2.0 h2.test /api/{i}"));
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one HTTP/2 connection serves every request"
    );
}

/// An HTTP/1.1 TLS origin: the requests of every tunnel reuse one kept
/// TLS connection (the proxy's own client, in the tunnel's task); one the
/// origin closed while it idled is not used again.
#[tokio::test]
async fn http1_origins_keep_their_tls_connection_across_tunnels() {
    let origin_cert = test_cert(&["h1.test"]);
    let idle = std::time::Duration::from_millis(300);
    let (origin, connections) = counting_tls_origin(&origin_cert, &[b"http/1.1"], idle).await;
    let (proxy, trust) = inspecting_proxy("h1", "h1.test", origin, &origin_cert).await;
    let count = || connections.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..3 {
        let (status, body) = get_in_new_tunnel(&proxy, &trust, "h1.test", &format!("/api/{i}")).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, format!("HTTP/1.1 h1.test /api/{i}"))
        );
    }
    assert_eq!(count(), 1, "one kept TLS connection serves every tunnel");
    // The origin closes it after 300 ms idle: the next request dials anew.
    tokio::time::sleep(idle * 3).await;
    let (status, _) = get_in_new_tunnel(&proxy, &trust, "h1.test", "/api/after-idle").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(), 2);
    let ev = wait_access(|v| v["kind"] == "inspected" && v["path"] == "/api/after-idle").await;
    assert_eq!(
        (ev["status"].as_u64(), ev["error"].as_str()),
        (Some(200), None),
        "{ev}"
    );
}

/// Origins are verified against the system's trust store too (what curl,
/// cargo and pip trust): a root installed there, as a corporate TLS
/// gateway's is, works without `--upstream-ca`. `SSL_CERT_FILE` stands in
/// for the store, so the machine's own is never touched.
#[tokio::test]
async fn origins_are_verified_against_the_system_trust_store() {
    let dir = fresh_dir("inspect-system-roots");
    let origin_cert = test_cert(&["sys.test"]);
    let origin = start_tls_origin(&origin_cert).await;
    let ca = test_ca(&dir);
    let store = roots_pem(dir.join("system-store.pem"), &[&origin_cert]);
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "inspect = \"all\"\nallow = [\"sys.test\"]\n").unwrap();
    let args: Vec<String> = [
        "--policy",
        policy.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--ca",
        dir.join("ca").to_str().unwrap(),
        "--dns",
        "static",
        "--resolve",
        &format!("sys.test:443={origin}"),
    ]
    .map(String::from)
    .to_vec();
    let client_ca = TestCert {
        der: ca.cert_der.clone(),
        key: origin_cert.key.clone_key(),
    };
    let status = |proxy: std::net::SocketAddr| {
        let client_ca = &client_ca;
        async move {
            let tunnel = connect(proxy, "sys.test:443").await.expect("tunnel");
            let tls = tls_over(tunnel, "sys.test", client_ca).await;
            let req = Request::get("/x")
                .header("host", "sys.test")
                .body(full(""))
                .unwrap();
            request_over(tls, req).await.status()
        }
    };
    // The test root in the store: verified, 200.
    let store_env = format!("SSL_CERT_FILE={}", store.display());
    let with = Egressd::start_wrapped(&dir, &["env", &store_env], &args);
    assert_eq!(status(with.proxy).await, StatusCode::OK);
    assert!(with.settled_log().contains("roots for verifying origins"));
    drop(with);
    // Not in the store (an empty one): the origin is refused.
    let empty = roots_pem(dir.join("empty-store.pem"), &[]);
    let empty_env = format!("SSL_CERT_FILE={}", empty.display());
    let without = Egressd::start_wrapped(&dir, &["env", &empty_env], &args);
    assert_eq!(status(without.proxy).await, StatusCode::BAD_GATEWAY);
}

/// Current browsers and curl offer the hybrid post-quantum key exchange
/// (X25519MLKEM768) first; an inspecting proxy that answers them with a
/// classical one downgrades every client, and is noticed. A client that
/// offers nothing else completes its handshake with the inspecting side,
/// and egressd reaches an origin that accepts nothing else.
#[tokio::test]
async fn post_quantum_key_exchange_on_both_sides_of_an_inspected_tunnel() {
    let origin_cert = test_cert(&["pq.test"]);
    let acceptor = tls_acceptor_with(
        post_quantum_only(),
        vec![origin_cert.der.clone()],
        origin_cert.key.clone_key(),
        &[],
    );
    let origin = start_tls_origin_on(acceptor).await;
    let dir = fresh_dir("inspect-pq");
    let ca = test_ca(&dir);
    let roots = roots_pem(dir.join("origin-root.pem"), &[&origin_cert]);
    let ca_dir = dir.join("ca");
    let opts = ProxyOpts::new(policy(r#"allow = ["pq.test/ok"]"#))
        .config(move |c| {
            c.ca_dir = Some(ca_dir);
            c.upstream_ca = vec![roots];
        })
        .pin(&format!("pq.test:443={origin}"));
    let proxy = start_proxy(opts).await;
    proxy.shared.load_inspector().unwrap();

    let tunnel = connect(proxy.addr, "pq.test:443").await.expect("tunnel");
    let config = client_config_with(post_quantum_only(), &[&ca.cert_der], &[]);
    let name = rustls::pki_types::ServerName::try_from("pq.test").unwrap();
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tunnel),
    )
    .await
    .unwrap()
    .expect("the inspecting side accepts X25519MLKEM768 alone");
    let group = tls.get_ref().1.negotiated_key_exchange_group().unwrap().name();
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
    let req = Request::get("/ok/pq")
        .header("host", "pq.test")
        .body(full(""))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the origin accepts X25519MLKEM768 alone"
    );
}
