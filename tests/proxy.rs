//! The forward proxy end to end: real sockets on 127.0.0.1, real upstreams
//! (plain HTTP, TLS with an rcgen certificate), hyper as the client, the
//! built-in Qualtrics policy with pins pointing its names at loopback.

mod support;

use std::time::Duration;

use egressd::proxy::relay::SpliceMode;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn connect_allowed_reaches_tls_origin_with_real_certificate() {
    let cert = test_cert(&["www.qualtrics.com"]);
    let origin = start_tls_origin(&cert).await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("www.qualtrics.com:443={origin}"))).await;

    let tunnel = connect(proxy.addr, "www.qualtrics.com:443")
        .await
        .expect("tunnel");
    let tls = tls_over(tunnel, "www.qualtrics.com", &cert).await;
    let req = Request::get("/jfe/form/SV_1")
        .header("host", "www.qualtrics.com")
        .body(full(""))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_text(resp).await.starts_with("GET /jfe/form/SV_1"));

    let ev = wait_access(|v| v["kind"] == "connect" && v["addr"] == origin.to_string()).await;
    assert_eq!(ev["decision"], "allow");
    assert_eq!(ev["rule"], "qualtrics");
    assert_eq!(ev["host"], "www.qualtrics.com");
    assert_eq!(ev["port"], 443);
    assert_eq!(ev["pinned"], true);
    assert_eq!(ev["status"], 200);
    assert!(ev["bytes_up"].as_u64().unwrap() > 100, "{ev}");
    assert!(ev["bytes_down"].as_u64().unwrap() > 100, "{ev}");
    assert!(ev["policy_version"].as_str().unwrap().starts_with("sha256:"));
}

#[tokio::test]
async fn connect_denied_gets_403_with_proxy_status() {
    let proxy = start_proxy(ProxyOpts::new(builtin_policy())).await;
    let resp = connect(proxy.addr, "denied-connect.example.com:443")
        .await
        .expect_err("denied");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let ps = resp.headers()["proxy-status"].to_str().unwrap().to_string();
    assert!(ps.starts_with("egressd; error=http_request_denied"), "{ps}");
    let body = body_text(resp).await;
    assert!(
        body.contains("denied-connect.example.com:443") && body.contains("no rule allows"),
        "{body}"
    );
    let ev = wait_access(|v| v["host"] == "denied-connect.example.com").await;
    assert_eq!(
        (ev["decision"].as_str(), ev["reason"].as_str()),
        (Some("deny"), Some("no_matching_rule"))
    );
    assert_eq!(ev["status"], 403);
    assert_eq!(ev["error"], "http_request_denied");

    // A port the rule does not allow, and an IP literal outside every CIDR.
    let resp = connect(proxy.addr, "www.qualtrics.com:8443").await.err().unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = connect(proxy.addr, "127.0.0.1:22").await.err().unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("destination_ip_prohibited"));
}

#[tokio::test]
async fn http_allowed_is_forwarded_without_hop_by_hop_headers() {
    let origin = start_origin().await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("js.stripe.com:80={origin}"))).await;
    let req = Request::get("http://js.stripe.com/v3/?x=1")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "drop me")
        .header("keep-alive", "timeout=5")
        .header("x-end-to-end", "keep me")
        .body(full(""))
        .unwrap();
    let resp = proxy_request(proxy.addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = body_text(resp).await;
    assert!(seen.starts_with("GET /v3/?x=1\n"), "origin-form upstream: {seen}");
    assert!(seen.contains("host: js.stripe.com\n"), "{seen}");
    assert!(seen.contains("x-end-to-end: keep me"), "{seen}");
    for gone in ["proxy-authorization", "x-private", "keep-alive:"] {
        assert!(!seen.contains(gone), "{gone} leaked: {seen}");
    }
    let ev = wait_access(|v| v["host"] == "js.stripe.com" && v["path"] == "/v3/").await;
    assert_eq!(ev["decision"], "allow");
    assert_eq!(ev["rule"], "qualtrics-external");
    assert_eq!(ev["status"], 200);
    assert!(ev["bytes_down"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn http_path_rules_apply_on_segment_boundaries() {
    let origin = start_origin().await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("www.google.com:80={origin}"))).await;
    let ok = get(proxy.addr, "http://www.google.com/recaptcha/api.js").await;
    assert_eq!(ok.status(), StatusCode::OK);
    for denied in [
        "http://www.google.com/search",
        "http://www.google.com/recaptchaX",
        "http://www.google.com/recaptcha/../search",
        "http://www.google.com/recaptcha/%2e%2e/search",
        "http://www.google.com/recaptcha%2F..%2Fsearch",
    ] {
        let resp = get(proxy.addr, denied).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{denied}");
    }
    let ev = wait_access(|v| v["host"] == "www.google.com" && v["path"] == "/search").await;
    assert_eq!(ev["reason"], "path_not_allowed");
}

#[tokio::test]
async fn report_mode_forwards_and_logs_would_deny() {
    let origin = start_origin().await;
    let p = policy("mode = \"report\"\nallow = [\"allowed.test\"]");
    let proxy = start_proxy(ProxyOpts::new(p).pin(&format!("unlisted.test:80={origin}"))).await;
    let resp = get(proxy.addr, "http://unlisted.test/report-me").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = wait_access(|v| v["host"] == "unlisted.test").await;
    assert_eq!(ev["decision"], "would-deny");
    assert_eq!(ev["reason"], "no_matching_rule");
    assert!(ev["flags"].as_str().unwrap().contains("report_mode"));
    assert_eq!(ev["status"], 200);
}

#[tokio::test]
async fn streams_64_mib_both_ways_with_checksums() {
    const N: u64 = 64 << 20;
    let origin = start_origin().await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("js.stripe.com:80={origin}"))).await;

    // Up: a streamed (chunked) request body, hashed by the origin.
    let req = Request::post("http://js.stripe.com/upload/64mib")
        .body(BodyExt::boxed(PatternBody::new(N)))
        .unwrap();
    let resp = proxy_request(proxy.addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, format!("{N} {}", pattern_sha256(N)));

    // Down: a streamed response, hashed here frame by frame.
    let resp = get(proxy.addr, &format!("http://js.stripe.com/big/64mib?n={N}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    let mut len = 0u64;
    while let Some(f) = tokio::time::timeout(WAIT, body.frame()).await.unwrap() {
        if let Ok(d) = f.unwrap().into_data() {
            len += d.len() as u64;
            sha2::Digest::update(&mut h, &d);
        }
    }
    assert_eq!(len, N);
    assert_eq!(hex(&sha2::Digest::finalize(h)), pattern_sha256(N));
    let ev = wait_access(|v| v["host"] == "js.stripe.com" && v["path"] == "/big/64mib").await;
    assert_eq!(ev["bytes_down"], N);
    let ev = wait_access(|v| v["host"] == "js.stripe.com" && v["path"] == "/upload/64mib").await;
    assert_eq!(ev["bytes_up"], N);
}

#[tokio::test]
async fn tunnel_half_close_passes_fin_and_keeps_the_other_direction() {
    let origin = start_half_close_origin().await;
    let p = policy("allow = [\"sftp.example.com:22\"]");
    let proxy = start_proxy(ProxyOpts::new(p).pin(&format!("sftp.example.com:22={origin}"))).await;
    let mut tunnel = connect(proxy.addr, "sftp.example.com:22").await.expect("tunnel");
    tunnel.write_all(&[7u8; 100_000]).await.unwrap();
    // Half-close: our FIN must reach the origin, whose answer must still come back.
    tunnel.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tunnel.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "got 100000");
    let ev = wait_access(|v| v["host"] == "sftp.example.com" && v["kind"] == "connect").await;
    assert_eq!(ev["bytes_up"], 100_000);
    assert_eq!(ev["bytes_down"], 10);
}

/// Bulk transfers move through the kernel (splice) once a read fills the
/// copy buffer, everything else through the buffer; a tunnel switches
/// between them as the flow changes. Echoed both ways at once, every byte
/// must come back in order.
#[tokio::test]
async fn tunnel_bursts_and_trickles_arrive_intact_both_ways() {
    // Loopback tunnels copy unless told to splice (SpliceMode::Auto).
    for mode in [SpliceMode::Always, SpliceMode::Never, SpliceMode::Auto] {
        echo_bursts_and_trickles(mode).await;
    }
}

async fn echo_bursts_and_trickles(mode: SpliceMode) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
    // One name per mode, to find each run's access event.
    let host = format!("{mode:?}.echo.example.com").to_lowercase();
    let p = policy(&format!("allow = [\"{host}:7\"]"));
    let opts = ProxyOpts::new(p)
        .pin(&format!("{host}:7={origin}"))
        .config(move |c| c.splice = mode);
    let proxy = start_proxy(opts).await;
    let tunnel = connect(proxy.addr, &format!("{host}:7")).await.expect("tunnel");
    let (mut r, mut w) = tokio::io::split(tunnel);

    // Chunk sizes around the switch points (a full 64 KiB read starts a
    // spliced burst, a transfer under 512 bytes ends it), with pauses that
    // drain the flow.
    let sizes = [
        1usize,
        100,
        511,
        512,
        513,
        4096,
        65_535,
        65_536,
        65_537,
        1 << 20,
        3,
        2 << 20,
        512,
        77,
        300_000,
    ];
    let total: u64 = sizes.iter().map(|&n| n as u64).sum::<u64>() * 4;
    let writer = tokio::spawn(async move {
        let mut off = 0u64;
        for round in 0..4 {
            for &n in &sizes {
                w.write_all(&pattern_chunk(off, n)).await.unwrap();
                off += n as u64;
                if round % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        w.shutdown().await.unwrap();
        off
    });
    let mut got = Vec::with_capacity(total as usize);
    tokio::time::timeout(WAIT, r.read_to_end(&mut got))
        .await
        .expect("echo ends")
        .unwrap();
    assert_eq!(writer.await.unwrap(), total);
    assert_eq!(got.len() as u64, total);
    assert!(got == pattern_chunk(0, total as usize), "echoed bytes differ");
    let ev = wait_access(|v| v["host"] == host.as_str() && v["kind"] == "connect").await;
    assert_eq!(ev["bytes_up"], total);
    assert_eq!(ev["bytes_down"], total);
    assert!(ev["error"].is_null(), "{ev}");
}

/// A reader slower than the writer fills the relay's pipe, or leaves part
/// of a copied read unwritten: the tunnel must wait for it, neither
/// dropping bytes nor stalling once it catches up.
#[tokio::test]
async fn tunnel_to_a_slow_reader_loses_nothing() {
    for mode in [SpliceMode::Always, SpliceMode::Never] {
        slow_reader(mode).await;
    }
}

async fn slow_reader(mode: SpliceMode) {
    const N: u64 = 8 << 20;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let (mut buf, mut len, mut reads) = (vec![0u8; 16 << 10], 0u64, 0u32);
        // Answers after N bytes, without waiting for EOF: the last bytes
        // must come through although no further event follows them.
        while len < N {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "tunnel ended early");
            sha2::Digest::update(&mut h, &buf[..n]);
            len += n as u64;
            reads += 1;
            if reads % 8 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let answer = format!("{len} {}", hex(&sha2::Digest::finalize(h)));
        s.write_all(answer.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let p = policy("allow = [\"sink.example.com:9\"]");
    let opts = ProxyOpts::new(p)
        .pin(&format!("sink.example.com:9={origin}"))
        .config(move |c| c.splice = mode);
    let proxy = start_proxy(opts).await;
    let mut tunnel = connect(proxy.addr, "sink.example.com:9").await.expect("tunnel");
    let mut off = 0u64;
    while off < N {
        let chunk = pattern_chunk(off, 1 << 20);
        tunnel.write_all(&chunk).await.unwrap();
        off += chunk.len() as u64;
    }
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tunnel.read_to_string(&mut answer))
        .await
        .expect("the slow reader finishes")
        .unwrap();
    assert_eq!(answer, format!("{N} {}", pattern_sha256(N)));
}

#[tokio::test]
async fn websocket_upgrade_through_allowed_http_request() {
    let origin = start_origin().await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("js.stripe.com:80={origin}"))).await;
    let req = Request::get("http://js.stripe.com/ws")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(full(""))
        .unwrap();
    let resp = proxy_request(proxy.addr, req).await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let up = tokio::time::timeout(WAIT, hyper::upgrade::on(resp))
        .await
        .unwrap()
        .unwrap();
    let mut io = hyper_util::rt::TokioIo::new(up);
    io.write_all(b"ping over upgrade").await.unwrap();
    let mut buf = [0u8; 17];
    tokio::time::timeout(WAIT, io.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over upgrade");
}

#[tokio::test]
async fn upstream_failures_are_told_apart() {
    let refused = closed_port().await;
    let reset = start_origin().await;
    let proxy = start_proxy(
        ProxyOpts::new(builtin_policy())
            .pin(&format!("unpkg.com:443={refused}"))
            .pin(&format!("cdn.amplitude.com:80={reset}")),
    )
    .await;

    // DNS: an allowed name with no address (pins-only resolver).
    let resp = connect(proxy.addr, "www.gravatar.com:443").await.err().unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=dns_error"));

    // Refused.
    let resp = connect(proxy.addr, "unpkg.com:443").await.err().unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=connection_refused"));
    let ev = wait_access(|v| v["host"] == "unpkg.com").await;
    assert_eq!(ev["error"], "connection_refused");
    assert_eq!(ev["addr"], refused.to_string());

    // Reset by the origin before any answer.
    let resp = get(proxy.addr, "http://cdn.amplitude.com/reset").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let ps = resp.headers()["proxy-status"].to_str().unwrap().to_string();
    assert!(
        ps.contains("error=connection_terminated") || ps.contains("http_response_incomplete"),
        "{ps}"
    );
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener whose backlog is full drops further SYNs: the connect hangs.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let proxy = start_proxy(
        ProxyOpts::new(builtin_policy())
            .pin(&format!("www.xm-apps-static.com:443={addr}"))
            .config(|c| c.connect_timeout = Duration::from_millis(300)),
    )
    .await;
    let resp = connect(proxy.addr, "www.xm-apps-static.com:443")
        .await
        .err()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=connection_timeout"));
    drop(listener);
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused() {
    // `localhost` resolves through /etc/hosts: no query leaves the machine.
    let origin = start_origin().await;
    let p = policy(&format!("allow = [\"localhost:{}\"]", origin.port()));
    let proxy = start_proxy(ProxyOpts::new(p).dns(egressd::proxy::resolve::DnsMode::System)).await;
    let resp = get(proxy.addr, &format!("http://localhost:{}/", origin.port())).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let ps = resp.headers()["proxy-status"].to_str().unwrap().to_string();
    assert!(ps.contains("destination_ip_prohibited"), "{ps}");
    let ev = wait_access(|v| v["host"] == "localhost").await;
    assert_eq!(ev["reason"], "special_address");

    // The same address allowed explicitly by a CIDR rule goes through.
    let p = policy(&format!(
        "allow = [\"localhost:{0}\", {{ cidr = \"127.0.0.0/8\", ports = [{0}] }}]",
        origin.port()
    ));
    let proxy = start_proxy(ProxyOpts::new(p).dns(egressd::proxy::resolve::DnsMode::System)).await;
    let resp = get(proxy.addr, &format!("http://localhost:{}/", origin.port())).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn pins_never_make_a_name_allowed() {
    let origin = start_origin().await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("pinned-but-denied.test:80={origin}")))
            .await;
    let resp = get(proxy.addr, "http://pinned-but-denied.test/").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn origin_form_and_malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let origin = start_origin().await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("js.stripe.com:80={origin}"))).await;
    let r = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("this is a proxy"), "{r}");
    for bad in [
        &b"CONNECT :443 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"CONNECT bad_host!:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://exa mple.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET https://js.stripe.com/ HTTP/1.1\r\nHost: js.stripe.com\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    ] {
        let r = raw(proxy.addr, bad).await;
        assert!(
            r.starts_with("HTTP/1.1 400") || r.starts_with("HTTP/1.1 403"),
            "{:?}: {r}",
            String::from_utf8_lossy(bad)
        );
    }
    let ok = get(proxy.addr, "http://js.stripe.com/still-serving").await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn expect_continue_and_chunked_bodies() {
    let origin = start_origin().await;
    let proxy =
        start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("js.stripe.com:80={origin}"))).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"POST http://js.stripe.com/upload HTTP/1.1\r\nHost: js.stripe.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"hello").await.unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.ends_with("5 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"),
        "{r}"
    );

    let r = raw(
        proxy.addr,
        b"POST http://js.stripe.com/upload HTTP/1.1\r\nHost: js.stripe.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        r.ends_with("5 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"),
        "{r}"
    );
}

#[tokio::test]
async fn clients_outside_the_allowed_networks_are_refused() {
    let proxy = start_proxy(
        ProxyOpts::new(builtin_policy()).config(|c| c.clients = vec!["10.0.0.0/8".parse().unwrap()]),
    )
    .await;
    let r = raw(
        proxy.addr,
        b"CONNECT www.qualtrics.com:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("client_not_allowed"), "{r}");
}

#[tokio::test]
async fn access_log_values_cannot_forge_lines() {
    let proxy = start_proxy(ProxyOpts::new(builtin_policy())).await;
    let resp = get(proxy.addr, "http://forge.example.com/a%0Ab%1B%5B31m").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let ev = wait_access(|v| v["host"] == "forge.example.com").await;
    let path = ev["path"].as_str().unwrap();
    assert!(!path.contains('\n') && !path.contains('\u{1b}'), "{path}");
}
