//! A parent proxy upstream (`--upstream-proxy`): egressd decides first and
//! sends only what it allows to the parent. The parents are a second
//! egressd (the binary, with its own narrower policy and its own access
//! log) and a tiny recording parent that demands credentials. Everything
//! is on 127.0.0.1.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use egressd::proxy::parent::Parent;
use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn tmpdir(name: &str) -> std::path::PathBuf {
    fresh_dir(&format!("parent-{name}"))
}

fn parent(url: &str) -> Arc<Parent> {
    Arc::new(Parent::parse(url, None, || Err("no TLS in this test".into())).unwrap())
}

/// A child egressd (in-process) with `policy`, chained to `parent_url`.
async fn child(policy_src: &str, parent_url: &str, pins: &[String]) -> Proxy {
    let p = parent(parent_url);
    let mut opts = ProxyOpts::new(policy(policy_src)).config(move |c| c.parent = Some(p));
    for pin in pins {
        opts = opts.pin(pin);
    }
    start_proxy(opts).await
}

/// What the recording parent saw: each request head, as text.
type Seen = Arc<Mutex<Vec<String>>>;

/// A parent that wants `Proxy-Authorization: Basic dXNlcjpwdw==`
/// (user:pw): without it 407; with it, a CONNECT is tunnelled to `origin`
/// whatever its target, and a plain request is answered by the parent
/// itself with the request line it saw.
async fn recording_parent(origin: SocketAddr) -> (SocketAddr, Seen) {
    recording_parent_tls(origin, None).await
}

/// The same parent, reached over TLS with `cert` when one is given.
async fn recording_parent_tls(origin: SocketAddr, cert: Option<&TestCert>) -> (SocketAddr, Seen) {
    let acceptor = cert.map(|c| c.acceptor(&[]));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let log = log.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(s).await {
                            serve_parent(tls, origin, log).await;
                        }
                    }
                    None => serve_parent(s, origin, log).await,
                }
            });
        }
    });
    (addr, seen)
}

async fn serve_parent<S>(mut s: S, origin: SocketAddr, log: Seen)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let head = read_request_head(&mut s).await;
        if head.is_empty() {
            return;
        }
        log.lock().unwrap().push(head.clone());
        if !head.contains("Proxy-Authorization: Basic dXNlcjpwdw==")
            && !head.contains("proxy-authorization: Basic dXNlcjpwdw==")
        {
            let _ = s
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n")
                            .await;
            continue;
        }
        if head.starts_with("CONNECT ") {
            let mut up = tokio::net::TcpStream::connect(origin).await.unwrap();
            s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            return;
        }
        let line = head.lines().next().unwrap_or("").to_string();
        let body = format!("parent saw: {line}");
        let _ = s
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
            .await;
    }
}

async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, s.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            _ => return String::new(),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// GET through a tunnel opened by the child.
async fn get_through_tunnel(
    proxy: SocketAddr,
    authority: &str,
) -> Result<String, http::Response<hyper::body::Incoming>> {
    let tunnel = connect(proxy, authority).await?;
    let host = authority.split(':').next().unwrap();
    let req = http::Request::get("/tunnelled")
        .header("host", host)
        .body(full(""))
        .unwrap();
    Ok(body_text(request_over(tunnel, req).await).await)
}

#[tokio::test]
async fn chained_to_a_second_egressd_each_decides_and_refusals_say_whose() {
    let origin = start_origin().await;
    let dir = tmpdir("chain");
    // The parent allows a.test only; the child allows a.test and b.test.
    let parent_policy = dir.join("parent.toml");
    std::fs::write(
        &parent_policy,
        "allow = [{ host = \"a.test\", ports = \"any\" }]\n",
    )
    .unwrap();
    let port = origin.port();
    let pins: Vec<String> = ["a.test", "b.test", "c.test"]
        .iter()
        .map(|h| format!("--resolve={h}:{port}={origin}"))
        .collect();
    let p = Egressd::start(&dir, &parent_policy, &pins, &[]);
    let c = child(
        &format!(
            "allow = [{{ host = \"a.test\", ports = [{port}] }}, {{ host = \"b.test\", ports = [{port}] }}]"
        ),
        &format!("http://{}", p.proxy),
        &[],
    )
    .await;

    // Allowed by both: plain HTTP and a tunnel reach the origin.
    let resp = get(c.addr, &format!("http://a.test:{port}/x")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        body_text(resp).await.starts_with("GET /x"),
        "the parent forwards in origin-form"
    );
    let body = get_through_tunnel(c.addr, &format!("a.test:{port}"))
        .await
        .unwrap();
    assert!(body.starts_with("GET /tunnelled"), "{body}");
    let ev = wait_access(|v| v["kind"] == "connect" && v["host"] == "a.test" && v["port"] == port).await;
    assert_eq!(ev["via"], "parent");
    assert_eq!(ev["addr"], p.proxy.to_string(), "the child dialled its parent");

    // Allowed by the child, denied by the parent: 502 carrying the parent's reason.
    let resp = get(c.addr, &format!("http://b.test:{port}/y")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let ps = resp.headers()["proxy-status"].to_str().unwrap().to_string();
    assert!(
        ps.starts_with("egressd; error=http_request_denied")
            && ps.contains(", egressd; error=parent_refused; received-status=403"),
        "{ps}"
    );
    let refused = connect(c.addr, &format!("b.test:{port}")).await.unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    let ps = refused.headers()["proxy-status"].to_str().unwrap();
    assert!(
        ps.contains("received-status=403") && ps.contains("no rule allows"),
        "{ps}"
    );
    let ev = wait_access(|v| v["kind"] == "connect" && v["host"] == "b.test" && v["port"] == port).await;
    assert_eq!(ev["error"], "parent_refused");

    // Denied by the child: never reaches the parent.
    assert_eq!(
        get(c.addr, &format!("http://c.test:{port}/z")).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        connect(c.addr, &format!("c.test:{port}"))
            .await
            .unwrap_err()
            .status(),
        StatusCode::FORBIDDEN
    );
    let parent_log = p.settled_log();
    assert!(parent_log.contains("\"host\":\"a.test\"") && parent_log.contains("\"host\":\"b.test\""));
    assert!(!parent_log.contains("c.test"), "{parent_log}");

    // Names are the parent's to resolve: the child has no pins at all, and
    // still refuses special-purpose IP literals itself.
    assert_eq!(
        get(c.addr, "http://169.254.169.254/latest/").await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn credentials_direct_rules_and_a_dead_parent() {
    let origin = start_origin().await;
    let (rec, seen) = recording_parent(origin).await;
    let port = origin.port();
    let policy_src =
        format!("allow = [\"a.test\", {{ host = \"inside.test\", ports = [{port}], via = \"direct\" }}]");
    // Without credentials the parent answers 407: egressd says whose.
    let c = child(&policy_src, &format!("http://{rec}"), &[]).await;
    let resp = get(c.addr, "http://a.test/x").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let ps = resp.headers()["proxy-status"].to_str().unwrap().to_string();
    assert!(ps.contains("error=parent_refused; received-status=407"), "{ps}");
    assert!(
        !resp.headers().contains_key("proxy-authenticate"),
        "the client is not asked for the parent's password"
    );
    assert!(body_text(resp).await.contains("refused egressd's credentials"));

    // With them: plain HTTP goes to the parent in absolute-form with
    // egressd's credentials, never the client's.
    let c = child(
        &policy_src,
        &format!("http://user:pw@{rec}"),
        &[format!("inside.test:{port}={origin}")],
    )
    .await;
    let req = http::Request::get("http://a.test/page?q=1")
        .header("proxy-authorization", "Basic Y2xpZW50OnNlY3JldA==")
        .body(full(""))
        .unwrap();
    let resp = proxy_request(c.addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body_text(resp).await,
        "parent saw: GET http://a.test/page?q=1 HTTP/1.1"
    );
    let body = get_through_tunnel(c.addr, "a.test:443").await.unwrap();
    assert!(body.starts_with("GET /tunnelled"), "{body}");
    {
        let seen = seen.lock().unwrap();
        let last_two = &seen[seen.len() - 2..];
        assert!(
            last_two[0].contains("Basic dXNlcjpwdw==") && !last_two[0].contains("Y2xpZW50"),
            "{last_two:?}"
        );
        assert!(
            last_two[1].starts_with("CONNECT a.test:443 HTTP/1.1\r\n"),
            "{last_two:?}"
        );
    }

    // Keep-alive: two requests, one connection to the parent.
    let before = seen.lock().unwrap().len();
    for _ in 0..2 {
        assert_eq!(get(c.addr, "http://a.test/again").await.status(), StatusCode::OK);
    }
    assert_eq!(seen.lock().unwrap().len(), before + 2);

    // via = "direct" bypasses the parent (and resolves as usual: the pin).
    let n = seen.lock().unwrap().len();
    let resp = get(c.addr, &format!("http://inside.test:{port}/direct")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_text(resp).await.starts_with("GET /direct"));
    assert_eq!(seen.lock().unwrap().len(), n, "the parent saw nothing");
    let ev = wait_access(|v| v["host"] == "inside.test").await;
    assert_eq!(ev["via"], "direct");

    // A dead parent is its own class.
    let dead = child(&policy_src, &format!("http://{}", closed_port().await), &[]).await;
    let resp = get(dead.addr, "http://a.test/x").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=parent_unreachable"));
    let refused = connect(dead.addr, "a.test:443").await.unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    let ev = wait_access(|v| v["kind"] == "connect" && v["error"] == "parent_unreachable").await;
    assert_eq!(ev["decision"], "allow");
    let m = dead.shared.metrics.encode();
    assert!(
        m.contains("egressd_upstream_errors_total{class=\"parent_unreachable\"}"),
        "{m}"
    );
}

/// A parent reached over TLS (`https://`), verified with --upstream-ca's
/// roots; and an inspected tunnel whose requests go out through the parent
/// (a CONNECT to the parent, then TLS to the origin inside it).
#[tokio::test]
async fn a_tls_parent_and_inspected_requests_through_it() {
    let dir = tmpdir("tls");
    let origin_cert = test_cert(&["inspect.test", "plain.test"]);
    let tls_origin = start_tls_origin(&origin_cert).await;
    let parent_cert = test_cert(&["localhost"]);
    let (rec, seen) = recording_parent_tls(tls_origin, Some(&parent_cert)).await;
    let roots = roots_pem(dir.join("roots.pem"), &[&parent_cert, &origin_cert]);
    let ca = test_ca(&dir);
    let url = format!("https://user:pw@localhost:{}", rec.port());
    let roots_for_parent = vec![roots.clone()];
    let p = Arc::new(
        Parent::parse(&url, None, || {
            egressd::proxy::certs::upstream_client_config(&roots_for_parent)
        })
        .unwrap(),
    );
    let ca_dir = dir.join("ca");
    let proxy = start_proxy(
        ProxyOpts::new(policy(r#"allow = ["inspect.test/allowed", "plain.test"]"#)).config(move |c| {
            c.parent = Some(p);
            c.ca_dir = Some(ca_dir);
            c.upstream_ca = vec![roots];
        }),
    )
    .await;
    proxy.shared.load_inspector().unwrap();

    // A spliced tunnel through the TLS parent.
    let tunnel = connect(proxy.addr, "plain.test:443").await.unwrap();
    let tls = tls_over(tunnel, "plain.test", &origin_cert).await;
    let req = http::Request::get("/spliced")
        .header("host", "plain.test")
        .body(full(""))
        .unwrap();
    assert!(body_text(request_over(tls, req).await)
        .await
        .starts_with("GET /spliced"));

    // An inspected tunnel: each allowed request goes out through the parent.
    let client_trust = TestCert {
        der: ca.cert_der.clone(),
        key: origin_cert.key.clone_key(),
    };
    let tunnel = connect(proxy.addr, "inspect.test:443").await.unwrap();
    let tls = tls_over(tunnel, "inspect.test", &client_trust).await;
    let req = http::Request::get("/allowed/x")
        .header("host", "inspect.test")
        .body(full(""))
        .unwrap();
    let resp = request_over(tls, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_text(resp).await.starts_with("GET /allowed/x"));
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|h| h.starts_with("CONNECT plain.test:443 ")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|h| h.starts_with("CONNECT inspect.test:443 ")),
        "{seen:?}"
    );
    let ev = wait_access(|v| v["kind"] == "inspected" && v["path"] == "/allowed/x").await;
    assert_eq!(ev["via"], "parent");
}
