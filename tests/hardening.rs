//! Ways around the allowlist that must fail, limits that must hold, and
//! faults that must be told apart. Real sockets on 127.0.0.1 only.

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status_of(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn allowed_proxy() -> Proxy {
    allowed_proxy_with(|_| {}).await
}

/// A proxy allowing `allowed.test` (pinned to a fresh origin) and
/// `*.zone.test`, with `configure` applied to its settings.
async fn allowed_proxy_with(
    configure: impl FnOnce(&mut egressd::proxy::ProxyConfig) + Send + 'static,
) -> Proxy {
    let origin = start_origin().await;
    let p = policy("allow = [\"allowed.test\", \"*.zone.test\"]");
    start_proxy(
        ProxyOpts::new(p)
            .pin(&format!("allowed.test:80={origin}"))
            .config(configure),
    )
    .await
}

#[tokio::test]
async fn host_spellings_cannot_sneak_past() {
    let proxy = allowed_proxy().await;
    let ok = raw(
        proxy.addr,
        b"GET http://ALLOWED.TEST./x HTTP/1.1\r\nHost: ALLOWED.TEST.\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    for (req, want) in [
        (
            &b"GET http://allowed.test.evil.test/ HTTP/1.1\r\nHost: allowed.test.evil.test\r\n\r\n"[..],
            403,
        ),
        (
            b"GET http://allowed.test@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            400,
        ),
        // The fragment is not part of the target: decided (and denied) as evil.test.
        (
            b"GET http://evil.test#allowed.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            403,
        ),
        (
            b"GET http://allowed%2etest/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            400,
        ),
        (
            b"GET http://allowed.test /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            400,
        ),
        (
            "GET http://\u{430}llowed.test/ HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes(),
            400,
        ),
        (
            b"GET http://xn--llowed-2of.test/ HTTP/1.1\r\nHost: xn--llowed-2of.test\r\n\r\n",
            403,
        ),
        (b"CONNECT allowed.test\r\n:443 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT zone.test:443 HTTP/1.1\r\nHost: zone.test\r\n\r\n", 403),
    ] {
        let r = raw(proxy.addr, req).await;
        assert_eq!(status_of(&r), want, "{:?}: {r}", String::from_utf8_lossy(req));
    }
}

/// Credentials in a request target are refused (400), and never copied
/// into the answer or the access event.
#[tokio::test]
async fn credentials_in_a_target_are_refused_and_never_shown() {
    let proxy = allowed_proxy().await;
    for req in [
        &b"GET http://alice:s3cret-pw@allowed.test/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n"[..],
        b"CONNECT alice:s3cret-pw@allowed.test:443 HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    ] {
        let r = raw(proxy.addr, req).await;
        assert_eq!(status_of(&r), 400, "{r}");
        assert!(!r.contains("s3cret"), "the answer shows the password: {r}");
    }
    let ev = wait_access(|v| {
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("credentials (userinfo)"))
    })
    .await;
    assert_eq!(ev["host"], "alice:***@allowed.test", "{ev}");
    let events = access_events();
    assert!(
        events.iter().all(|e| !e.to_string().contains("s3cret")),
        "an access event shows the password"
    );
}

#[tokio::test]
async fn host_header_and_target_must_agree() {
    let proxy = allowed_proxy().await;
    for req in [
        &b"GET http://allowed.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"[..],
        b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nHost: evil.test\r\n\r\n",
        b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n",
    ] {
        let r = raw(proxy.addr, req).await;
        assert_eq!(status_of(&r), 400, "{:?}: {r}", String::from_utf8_lossy(req));
    }
    let r = raw(
        proxy.addr,
        b"GET http://allowed.test:80/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
}

#[tokio::test]
async fn every_spelling_of_a_special_address_is_refused() {
    // Even a policy that allows every port of every listed name refuses these.
    let p = policy("allow = [{ host = \"*.google.internal\", ports = [80] }]");
    let proxy = start_proxy(ProxyOpts::new(p)).await;
    for target in [
        "2130706433:80",
        "0177.0.0.1:80",
        "0x7f.1:80",
        "127.1:80",
        "[::ffff:127.0.0.1]:80",
        "0.0.0.0:80",
        "[::]:80",
        "[::1]:80",
        "169.254.169.254:80",
        "[fe80::1]:80",
        "100.64.0.1:80",
        "10.0.0.1:80",
        "172.16.5.4:80",
        "192.168.1.1:80",
        "224.0.0.1:80",
        "255.255.255.255:80",
        "[fd00::1]:80",
        "[64:ff9b::7f00:1]:80",
        "[2002:7f00:1::]:80",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]:80",
    ] {
        let r = raw(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&r), 403, "{target}: {r}");
        assert!(r.contains("destination_ip_prohibited"), "{target}: {r}");
    }
    // Metadata names are refused by name, whatever they resolve to.
    let r = raw(
        proxy.addr,
        b"CONNECT metadata.google.internal:80 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 403, "{r}");
}

#[tokio::test]
async fn the_proxy_never_dials_itself() {
    let proxy = start_proxy(ProxyOpts::new(policy("allow = []"))).await;
    // A rule that would allow the proxy's own address and port.
    let own = proxy.addr.port();
    proxy.shared.store_policy(policy(&format!(
        "allow = [{{ cidr = \"127.0.0.0/8\", ports = [{own}] }}]"
    )));
    let r = raw(
        proxy.addr,
        format!("CONNECT 127.0.0.1:{own} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(r.contains("proxy_loop_detected"), "{r}");
}

#[tokio::test]
async fn tunnel_sni_must_name_the_connect_target() {
    let cert = test_cert(&["tunnel.test", "evil.test"]);
    let origin = start_tls_origin(&cert).await;
    let p = policy("allow = [\"tunnel.test\"]");
    let proxy = start_proxy(ProxyOpts::new(p).pin(&format!("tunnel.test:443={origin}"))).await;

    // Matching SNI: works, and the log says which name TLS asked for.
    let t = connect(proxy.addr, "tunnel.test:443").await.expect("tunnel");
    let tls = tls_over(t, "tunnel.test", &cert).await;
    let resp = request_over(
        tls,
        Request::get("/sni-ok")
            .header("host", "tunnel.test")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = wait_access(|v| v["host"] == "tunnel.test" && v["sni"] == "tunnel.test").await;
    assert_eq!(ev["decision"], "allow");

    // Domain fronting: CONNECT to an allowed name, TLS to another. Closed
    // before a byte reaches upstream.
    let t = connect(proxy.addr, "tunnel.test:443").await.expect("tunnel");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("evil.test").unwrap();
    let r = tokio::time::timeout(WAIT, connector.connect(name, t))
        .await
        .unwrap();
    assert!(r.is_err(), "TLS to another name through the tunnel must fail");
    let ev = wait_access(|v| v["host"] == "tunnel.test" && v["error"] == "sni_mismatch").await;
    assert_eq!(ev["sni"], "evil.test");
    assert_eq!(ev["bytes_up"], 0);
}

#[tokio::test]
async fn tls_only_rules_refuse_other_bytes_and_plain_rules_pass_them() {
    let origin = start_half_close_origin().await;
    let p = policy("allow = [{ host = \"tls.test:7000\", tls_only = true }, \"plain.test:7000\"]");
    let proxy = start_proxy(
        ProxyOpts::new(p)
            .pin(&format!("tls.test:7000={origin}"))
            .pin(&format!("plain.test:7000={origin}")),
    )
    .await;
    let mut t = connect(proxy.addr, "tls.test:7000").await.expect("tunnel");
    t.write_all(b"SSH-2.0-hello\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, t.read_to_end(&mut buf)).await.unwrap();
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    let ev = wait_access(|v| v["host"] == "tls.test").await;
    assert_eq!(ev["error"], "not_tls");

    let mut t = connect(proxy.addr, "plain.test:7000").await.expect("tunnel");
    t.write_all(b"SSH-2.0-hello\r\n").await.unwrap();
    t.shutdown().await.unwrap();
    let mut s = String::new();
    tokio::time::timeout(WAIT, t.read_to_string(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, "got 15");
}

#[tokio::test]
async fn smuggling_shapes_are_rejected_and_the_proxy_keeps_serving() {
    let proxy = allowed_proxy().await;
    let big = format!(
        "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    // Content-Length with Transfer-Encoding: chunked framing wins (RFC 9112
    // 6.3), upstream gets a freshly framed body, and the connection closes,
    // so the bytes after the chunked body are never read as a request.
    let r = raw(
        proxy.addr,
        b"POST http://allowed.test/upload HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    )
    .await;
    assert!(r.contains("connection: close"), "{r}");
    assert!(
        r.ends_with("0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        "{r}"
    );
    assert_eq!(r.matches("HTTP/1.1").count(), 1, "{r}");
    for (req, want) in [
        (
            b"POST http://allowed.test/upload HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
            &[400, 0, 502][..],
        ),
        (
            b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nX-Fold: a\r\n b\r\n\r\n".to_vec(),
            &[400][..],
        ),
        (
            b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            &[400][..],
        ),
        (big.into_bytes(), &[431][..]),
    ] {
        let r = raw(proxy.addr, &req).await;
        let head: String = r.chars().take(300).collect();
        assert!(want.contains(&status_of(&r)), "{:?}: {head}", String::from_utf8_lossy(&req[..60]));
        // Never a second request smuggled through to a denied host.
        assert!(!r.contains("evil.test"), "{r}");
    }
    let ok = get(proxy.addr, "http://allowed.test/after-smuggling").await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn slowloris_is_cut_and_others_are_served() {
    let proxy = allowed_proxy_with(|c| c.header_timeout = Duration::from_millis(300)).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET http://allowed.test/ HTTP/1.1\r\nHost: allo")
        .await
        .unwrap();
    let ok = get(proxy.addr, "http://allowed.test/meanwhile").await;
    assert_eq!(ok.status(), StatusCode::OK);
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(n.is_ok(), "the slow connection was not closed");
}

#[tokio::test]
async fn connection_limit_answers_503_and_recovers() {
    let proxy = allowed_proxy_with(|c| c.max_connections = 2).await;
    let a = TcpStream::connect(proxy.addr).await.unwrap();
    let b = TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = raw(
        proxy.addr,
        b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 503, "{r}");
    assert!(r.contains("connection_limit_reached"));
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ok = get(proxy.addr, "http://allowed.test/after-limit").await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn tunnels_per_client_are_capped() {
    let origin = start_half_close_origin().await;
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"t.test:7000\"]"))
            .pin(&format!("t.test:7000={origin}"))
            .config(|c| c.max_tunnels_per_client = 1),
    )
    .await;
    let first = connect(proxy.addr, "t.test:7000").await.expect("first tunnel");
    let second = connect(proxy.addr, "t.test:7000")
        .await
        .expect_err("second tunnel");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first);
    // The slot is released when the tunnel ends.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connect(proxy.addr, "t.test:7000").await {
            Ok(_) => break,
            Err(_) => assert!(tokio::time::Instant::now() < deadline, "slot never released"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_tunnels_are_closed() {
    let origin = start_half_close_origin().await;
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"idle.test:7000\"]"))
            .pin(&format!("idle.test:7000={origin}"))
            .config(|c| c.tunnel_idle = Duration::from_millis(300)),
    )
    .await;
    let mut t = connect(proxy.addr, "idle.test:7000").await.expect("tunnel");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "idle tunnel was not closed");
    let ev = wait_access(|v| v["host"] == "idle.test").await;
    assert_eq!(ev["error"], "idle_timeout");
}

#[tokio::test]
async fn upstream_that_never_answers_gets_504() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"silent.test\"]"))
            .pin(&format!("silent.test:80={addr}"))
            .config(|c| c.response_timeout = Duration::from_millis(300)),
    )
    .await;
    let resp = get(proxy.addr, "http://silent.test/").await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("connection_read_timeout"));
    hold.abort();
}

#[tokio::test]
async fn upstream_reset_mid_body_is_logged() {
    // An origin that promises 1 MB, sends part of it, then resets.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                .await;
            let _ = s.write_all(&[b'x'; 1000]).await;
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"resets.test\"]")).pin(&format!("resets.test:80={addr}")),
    )
    .await;
    let resp = get(proxy.addr, "http://resets.test/big").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(WAIT, http_body_util::BodyExt::collect(resp.into_body()))
        .await
        .unwrap();
    assert!(body.is_err(), "a truncated body must not look complete");
    let ev = wait_access(|v| v["host"] == "resets.test").await;
    assert_eq!(ev["error"], "http_response_incomplete", "{ev}");
}

#[tokio::test]
async fn proxy_auth_maps_users_to_policies_and_rate_limits_failures() {
    use base64::Engine;
    let dir = std::env::temp_dir().join(format!("egressd-auth-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("team-a.toml"), "allow = [\"a.test\"]\n").unwrap();
    let alice = egressd::proxy::auth::hash_password("alice-pw").unwrap();
    let bob = egressd::proxy::auth::hash_password("bob-pw").unwrap();
    std::fs::write(
        dir.join("users.toml"),
        format!(
            "[[user]]\nname = \"alice\"\npassword = \"{alice}\"\npolicy = \"team-a.toml\"\n\n[[user]]\nname = \"bob\"\npassword = \"{bob}\"\n"
        ),
    )
    .unwrap();
    let auth =
        std::sync::Arc::new(egressd::proxy::auth::Authenticator::load(&dir.join("users.toml")).unwrap());
    let origin = start_origin().await;
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"b.test\"]"))
            .pin(&format!("a.test:80={origin}"))
            .pin(&format!("b.test:80={origin}"))
            .config(move |c| c.auth = Some(auth)),
    )
    .await;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let req = |host: &str, cred: Option<String>| {
        let mut r = format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n");
        if let Some(c) = cred {
            r += &format!("Proxy-Authorization: {c}\r\n");
        }
        r + "\r\n"
    };
    let r = raw(proxy.addr, req("a.test", None).as_bytes()).await;
    assert_eq!(status_of(&r), 407, "{r}");
    assert!(r.contains("proxy-authenticate: Basic realm=\"egressd\""), "{r}");
    assert_eq!(
        status_of(
            &raw(
                proxy.addr,
                req("a.test", Some(basic("alice", "alice-pw"))).as_bytes()
            )
            .await
        ),
        200
    );
    assert_eq!(
        status_of(
            &raw(
                proxy.addr,
                req("b.test", Some(basic("alice", "alice-pw"))).as_bytes()
            )
            .await
        ),
        403
    );
    assert_eq!(
        status_of(&raw(proxy.addr, req("b.test", Some(basic("bob", "bob-pw"))).as_bytes()).await),
        200
    );
    assert_eq!(
        status_of(&raw(proxy.addr, req("a.test", Some(basic("bob", "bob-pw"))).as_bytes()).await),
        403
    );
    let ev = wait_access(|v| v["user"] == "alice" && v["host"] == "a.test").await;
    assert_eq!(ev["decision"], "allow");
    // The credentials never reach upstream.
    let seen = raw(proxy.addr, req("b.test", Some(basic("bob", "bob-pw"))).as_bytes()).await;
    assert!(
        !seen.to_ascii_lowercase().contains("proxy-authorization"),
        "{seen}"
    );
    // Guessing is rate-limited per client.
    for _ in 0..egressd::proxy::auth::MAX_FAILURES {
        let r = raw(
            proxy.addr,
            req("a.test", Some(basic("alice", "guess"))).as_bytes(),
        )
        .await;
        assert_eq!(status_of(&r), 407);
    }
    let r = raw(
        proxy.addr,
        req("a.test", Some(basic("alice", "alice-pw"))).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 429, "{r}");
}

#[tokio::test]
async fn clients_that_vanish_mid_tunnel_free_everything() {
    let origin = start_half_close_origin().await;
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"gone.test:7000\"]")).pin(&format!("gone.test:7000={origin}")),
    )
    .await;
    // A bounded batch: tunnels whose clients reset, and plain requests.
    for i in 0..20 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"CONNECT gone.test:7000 HTTP/1.1\r\nHost: gone.test:7000\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 39];
        s.read_exact(&mut head).await.unwrap();
        s.write_all(&vec![i as u8; 1000]).await.unwrap();
        #[allow(deprecated)] // zero linger: the close is a reset, as when a client vanishes
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    let ev = wait_access(|v| v["host"] == "gone.test" && v["error"].is_string()).await;
    let class = ev["error"].as_str().unwrap();
    assert!(
        class.starts_with("client_") || class.starts_with("upstream_"),
        "{ev}"
    );
    // Every task (connection or tunnel) ends, and no tunnel is left counted.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !proxy.shared.tasks.is_empty() || proxy.shared.metrics.tunnels_active.get() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks left",
            proxy.shared.tasks.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let proxy = allowed_proxy_with(|c| c.header_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET http://allowed.test/ka HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(status_of(&r), 200, "{r}");
    // Kept alive, then idle: the proxy closes it after the header timeout.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "idle keep-alive connection still open: {n:?}"
    );
}

/// A flood of requests that never parse, of every kind hyper refuses:
/// each is one access event with what could be read of it (method and
/// target, or its first bytes escaped), and each moves the counter.
#[tokio::test]
async fn a_flood_of_malformed_requests_leaves_one_event_each() {
    let proxy = allowed_proxy_with(|c| c.max_header_bytes = 1024).await;
    let denied = |m: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with("egressd_requests_total{") && l.contains(r#"decision="deny""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = denied(&proxy.shared.metrics.encode());
    const EACH: usize = 10;
    type Make = fn(usize) -> Vec<u8>;
    let kinds: [(&str, Make); 5] = [
        ("bad-header", |i| {
            format!("GET http://allowed.test/flood/h{i} HTTP/1.1\r\nBad Header\r\n\r\n").into_bytes()
        }),
        ("too-large", |i| {
            format!(
                "GET http://allowed.test/flood/l{i} HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(2048)
            )
            .into_bytes()
        }),
        ("two-lengths", |i| {
            format!("POST http://allowed.test/flood/c{i} HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
                .into_bytes()
        }),
        ("bad-target", |i| {
            format!("GET http://allowed.test/flood/t{i}\x01 HTTP/1.1\r\n\r\n").into_bytes()
        }),
        ("garbage", |i| {
            let mut b = b"\x16\x03\x01\x00\xa5\x01\\".to_vec();
            b.extend_from_slice(format!(" flood-g{i}\r\n\r\n").as_bytes());
            b
        }),
    ];
    for (kind, make) in &kinds {
        for i in 0..EACH {
            let r = raw(proxy.addr, &make(i)).await;
            let want = if *kind == "too-large" { 431 } else { 400 };
            assert_eq!(status_of(&r), want, "{kind} {i}: {r}");
        }
    }
    let events = |needle: &str| {
        access_events()
            .into_iter()
            .filter(|v| v.to_string().contains(needle))
            .collect::<Vec<_>>()
    };
    for i in 0..EACH {
        for (marker, method) in [("/flood/h", "GET"), ("/flood/l", "GET"), ("/flood/c", "POST")] {
            let path = format!("{marker}{i}");
            let ev = wait_access(|v| v["path"] == path.as_str()).await;
            assert_eq!(events(&format!("\"{path}\"")).len(), 1, "{path}");
            assert_eq!(
                (ev["method"].as_str(), ev["host"].as_str()),
                (Some(method), Some("allowed.test")),
                "{ev}"
            );
            assert_eq!(ev["error"], "http_request_error", "{ev}");
        }
        // A target hyper refuses is kept, its control bytes escaped.
        let t = format!("/flood/t{i}\\x01");
        let ev = wait_access(|v| v["path"] == t.as_str() && v["host"] == "allowed.test").await;
        assert_eq!(
            (ev["method"].as_str(), ev["status"].as_u64()),
            (Some("GET"), Some(400)),
            "{ev}"
        );
        // Garbage: no method, its first bytes escaped in the detail.
        let g = format!(r#"\x16\x03\x01\x00\xa5\x01\x5c flood-g{i}\x0d\x0a"#);
        let ev = wait_access(|v| v["detail"].as_str().is_some_and(|d| d.contains(g.as_str()))).await;
        assert_eq!(
            (ev["method"].as_str(), ev["host"].as_str()),
            (Some("-"), Some("")),
            "{ev}"
        );
        assert_eq!(events(&format!("flood-g{i}\\")).len(), 1);
    }
    let after = denied(&proxy.shared.metrics.encode());
    assert_eq!(
        after - before,
        (kinds.len() * EACH) as u64,
        "every refusal counted"
    );
}

/// `0.0.0.0` and `::` mean this host: dialled, they reach the proxy host's
/// own services. A CIDR rule covering them (`0.0.0.0/0`) does not make
/// them a destination.
#[tokio::test]
async fn the_unspecified_address_is_never_dialled() {
    let origin = start_origin().await;
    let p = policy(r#"allow = [{ cidrs = ["0.0.0.0/0", "::/0"], ports = "any" }]"#);
    let proxy = start_proxy(ProxyOpts::new(p)).await;
    // The origin itself is allowed by the same rule.
    let ok = get(proxy.addr, &format!("http://127.0.0.1:{}/direct", origin.port())).await;
    assert_eq!(ok.status(), StatusCode::OK);
    for host in ["0", "0.0.0.0", "[::]", "[::ffff:0.0.0.0]"] {
        let r = get(proxy.addr, &format!("http://{host}:{}/this-host", origin.port())).await;
        assert_ne!(r.status(), StatusCode::OK, "{host}");
        let status = r.headers()["proxy-status"].to_str().unwrap();
        assert!(
            status.starts_with("egressd; error=proxy_loop_detected"),
            "{host}: {status}"
        );
    }
}

/// A client's malformed chunked body is the client's error: 400 with the
/// proxy's own short text, class http_request_error; never a 502 blaming
/// the origin, nor hyper's internal words.
#[tokio::test]
async fn a_client_s_malformed_body_is_a_400() {
    let proxy = allowed_proxy().await;
    for (i, body) in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"1;a\nb\r\nZ\r\n0\r\n\r\n",
        b"fffffffffffffffff\r\n",
    ]
    .iter()
    .enumerate()
    {
        let mut req = format!(
            "POST http://allowed.test/body{i} HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(body);
        let r = raw(proxy.addr, &req).await;
        assert_eq!(status_of(&r), 400, "{:?}: {r}", String::from_utf8_lossy(body));
        assert!(!r.contains("hyper") && !r.contains("error from user"), "{r}");
        let path = format!("/body{i}");
        let ev = wait_access(|v| v["path"] == path.as_str()).await;
        assert_eq!(ev["error"], "http_request_error", "{ev}");
    }
}
