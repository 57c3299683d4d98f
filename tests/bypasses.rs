//! Bypasses found by a hostile client against the release binary, each
//! against the real listener: an h2c upgrade, an absolute-form CONNECT,
//! overlong UTF-8 dot-segments, a backslash in the authority, the proxy's
//! own address in another spelling, punycode that is no name.
//! Real sockets on 127.0.0.1 only.

mod support;

use std::process::Command;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status_of(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A proxy allowing `allowed.test` and `www.google.com/recaptcha`, both
/// pinned to one echoing origin, and `*.qualtrics.com`.
async fn proxy() -> Proxy {
    let origin = start_origin().await;
    let p = policy(r#"allow = ["allowed.test", "www.google.com/recaptcha", "*.qualtrics.com"]"#);
    start_proxy(
        ProxyOpts::new(p)
            .pin(&format!("allowed.test:80={origin}"))
            .pin(&format!("www.google.com:80={origin}")),
    )
    .await
}

#[tokio::test]
async fn an_h2c_upgrade_never_reaches_the_origin() {
    let proxy = proxy().await;
    // The origin echoes the headers it received.
    let r = raw(
        proxy.addr,
        b"GET http://allowed.test/echo HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    let seen = r.to_ascii_lowercase();
    assert!(!seen.contains("upgrade: h2c"), "{r}");
    assert!(!seen.contains("http2-settings"), "{r}");
    // An origin that switches anyway (this one switches on /ws) is not
    // believed: the client never gets a connection to it.
    let r = raw(
        proxy.addr,
        b"GET http://allowed.test/ws/x HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_ne!(status_of(&r), 101, "{r}");
    assert_eq!(status_of(&r), 502, "{r}");
    // WebSocket still upgrades, and the echo comes back through it.
    let mut ws = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    ws.write_all(b"GET http://allowed.test/ws/y HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut ws).await;
    assert_eq!(status_of(&head), 101);
    ws.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(WAIT, ws.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn connect_takes_authority_form_only() {
    let proxy = proxy().await;
    for target in [
        "http://x.qualtrics.com:443/",
        "https://x.qualtrics.com:443",
        "user@x.qualtrics.com:443",
    ] {
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: x.qualtrics.com:443\r\n\r\n");
        let r = raw(proxy.addr, req.as_bytes()).await;
        assert_eq!(status_of(&r), 400, "{target}: {r}");
    }
}

#[tokio::test]
async fn overlong_utf8_dot_segments_do_not_escape_a_path_rule() {
    let proxy = proxy().await;
    for path in [
        "/recaptcha/%c0%ae%c0%ae/search",
        "/recaptcha/%e0%80%ae%e0%80%ae/search",
        "/recaptcha/%C0%AE%C0%AE/search",
    ] {
        let resp = get(proxy.addr, &format!("http://www.google.com{path}")).await;
        assert_eq!(resp.status(), 403, "{path}");
    }
    let resp = get(proxy.addr, "http://www.google.com/recaptcha/api.js").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_backslash_in_the_authority_is_refused_by_proxy_and_check() {
    let proxy = proxy().await;
    let r = raw(
        proxy.addr,
        b"GET http://evil.example\\@allowed.test/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    // `check` reads the target with the same parser: bad input, exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args([
            "check",
            "--format",
            "json",
            "http://evil.example\\@www.qualtrics.com/x",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The malformed target is a result of its own, on stdout.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "error");
    assert!(v["error"].as_str().unwrap().contains("backslash"), "{v}");
}

#[tokio::test]
async fn the_proxy_never_dials_its_own_address_in_another_spelling() {
    init_logs();
    // A listener whose address is spelled IPv4-mapped; a pin sends the
    // allowed name to the same socket as plain IPv4.
    let listener = tokio::net::TcpListener::bind("[::ffff:127.0.0.1]:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = egressd::proxy::ProxyConfig::new(vec![addr]);
    let pin = format!("loop.test=127.0.0.1:{}", addr.port()).parse().unwrap();
    config.resolver = egressd::proxy::resolve::Resolver::new(
        vec![pin],
        egressd::proxy::resolve::DnsMode::Static,
        std::time::Duration::from_secs(2),
    );
    let _shared = egressd::daemon::spawn_proxy(policy(r#"allow = ["loop.test"]"#), config, vec![listener]);
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let resp = get(proxy, "http://loop.test/").await;
    assert_eq!(resp.status(), 403);
    let loop_detected = |ps: &str| ps.contains("proxy_loop_detected");
    assert!(loop_detected(resp.headers()["proxy-status"].to_str().unwrap()));
    let r = raw(
        proxy,
        b"CONNECT loop.test:443 HTTP/1.1\r\nHost: loop.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(loop_detected(&r), "{r}");
}

#[tokio::test]
async fn punycode_that_is_no_name_is_refused() {
    let proxy = proxy().await;
    for host in ["xn--0ca24w.qualtrics.com", "a.xn--zz.qualtrics.com"] {
        let resp = get(proxy.addr, &format!("http://{host}/")).await;
        assert_eq!(resp.status(), 400, "{host}");
    }
}
