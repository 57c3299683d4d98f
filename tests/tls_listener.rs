//! TLS to the proxy itself (`--listen-tls`): curl with `--proxy https://`
//! through CONNECT and plain HTTP, a client that does not trust the
//! certificate refuses it, Basic credentials over TLS, the certificate
//! reloaded on SIGHUP, and the PAC file naming `HTTPS`. The egressd binary
//! and curl, on 127.0.0.1 only.

mod support;

use std::process::Command;

use support::*;

fn tmpdir(name: &str) -> std::path::PathBuf {
    fresh_dir(&format!("tls-listener-{name}"))
}

/// curl's exit code, the status it printed, and its body.
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl cannot run (CI installs it): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.to_string(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_tls_to_the_proxy() {
    let dir = tmpdir("curl");
    let origin = start_origin().await;
    let tls_cert = test_cert(&["tls.test"]);
    let tls_origin = start_tls_origin(&tls_cert).await;
    let (origin_pem, _) = tls_cert.write_pem(&dir, "origin");
    let proxy_cert = test_cert(&["localhost", "127.0.0.1"]);
    let (cert, key) = proxy_cert.write_pem(&dir, "proxy");
    let stranger = test_cert(&["localhost", "127.0.0.1"]);
    let (stranger_pem, _) = stranger.write_pem(&dir, "stranger");

    let users = users_file(&dir, &[("alice", "pw")]);
    let policy = dir.join("p.toml");
    let (p1, p2) = (origin.port(), tls_origin.port());
    std::fs::write(
        &policy,
        format!(
            "allow = [{{ host = \"a.test\", ports = [{p1}] }}, {{ host = \"tls.test\", ports = [{p2}] }}]\n"
        ),
    )
    .unwrap();
    let pins = vec![
        format!("--resolve=a.test:{p1}={origin}"),
        format!("--resolve=tls.test:{p2}={tls_origin}"),
    ];
    let e = Egressd::start(
        &dir,
        &policy,
        &pins,
        &[
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--auth",
            users.to_str().unwrap(),
        ],
    );
    let proxy = format!("https://127.0.0.1:{}", e.proxy_tls.unwrap().port());
    let ca = cert.to_str().unwrap();
    let stranger_ca = stranger_pem.to_str().unwrap();
    // curl through the TLS listener, trusting `trust`, as alice or no one.
    let through = |trust: &str, user: bool, extra: &[&str], url: &str| {
        let mut args = vec!["--proxy", proxy.as_str(), "--proxy-cacert", trust];
        if user {
            args.extend(["--proxy-user", "alice:pw"]);
        }
        args.extend(extra);
        args.push(url);
        curl(&args)
    };

    // Plain HTTP and a CONNECT tunnel, both inside TLS to the proxy.
    let (rc, code, body) = through(ca, true, &[], &format!("http://a.test:{p1}/plain"));
    assert_eq!((rc, code.as_str()), (0, "200"), "{body}");
    assert!(body.starts_with("GET /plain"), "{body}");
    let (rc, code, body) = through(
        ca,
        true,
        &["--cacert", origin_pem.to_str().unwrap()],
        &format!("https://tls.test:{p2}/tunnelled"),
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{body}");
    assert!(body.starts_with("GET /tunnelled"), "{body}");

    // Basic credentials over TLS: 407 without them.
    let (_, code, _) = through(ca, false, &[], &format!("http://a.test:{p1}/x"));
    assert_eq!(code, "407");

    // A client that does not trust the proxy's certificate refuses it.
    let (rc, _, _) = through(stranger_ca, false, &[], &format!("http://a.test:{p1}/x"));
    assert_ne!(rc, 0, "curl must refuse an untrusted proxy certificate");
    // Plain HTTP to the TLS listener: refused, and both refusals logged.
    let (rc, _, _) = curl(&[
        "--proxy",
        &format!("http://127.0.0.1:{}", e.proxy_tls.unwrap().port()),
        &format!("http://a.test:{p1}/cleartext"),
    ]);
    assert_ne!(rc, 0);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events = e.access_events();
        let classes: Vec<&str> = events
            .iter()
            .filter(|v| v["method"] == "-")
            .filter_map(|v| v["error"].as_str())
            .collect();
        if classes.contains(&"client_rejected_certificate") && classes.contains(&"client_tls_error") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{classes:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A plain listener exists too: the PAC file names it.
    assert!(e.admin_get("/proxy.pac").contains(&format!("PROXY {}", e.proxy)));

    // SIGHUP rereads the certificate; a broken one keeps the old.
    std::fs::write(&cert, "not a certificate").unwrap();
    e.signal("-HUP");
    e.wait_log("TLS listener certificate not reloaded");
    proxy_cert.write_pem(&dir, "proxy");
    let (_, code, _) = through(ca, true, &[], &format!("http://a.test:{p1}/still"));
    assert_eq!(code, "200", "the loaded certificate stays");
    let (new_cert, new_key) = stranger.write_pem(&dir, "proxy");
    assert_eq!((new_cert, new_key), (cert.clone(), key.clone()));
    e.signal("-HUP");
    e.wait_log("TLS listener certificate reloaded");
    let (rc, code, _) = through(stranger_ca, true, &[], &format!("http://a.test:{p1}/new"));
    assert_eq!((rc, code.as_str()), (0, "200"), "the new certificate serves");
}

/// With TLS listeners only, no plain listener opens and the PAC file says HTTPS.
#[test]
fn tls_only_proxies_are_named_https_in_the_pac_file() {
    let dir = tmpdir("pac");
    let cert = test_cert(&["localhost", "127.0.0.1"]);
    let (c, k) = cert.write_pem(&dir, "proxy");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let args: Vec<String> = [
        "--policy",
        policy.to_str().unwrap(),
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        c.to_str().unwrap(),
        "--tls-key",
        k.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let e = Egressd::start_with(&dir, &args);
    let v: serde_json::Value = serde_json::from_str(&e.wait_log("egressd listening")).unwrap();
    assert_eq!(v["listen"], "", "no plain listener");
    let tls = e.proxy_tls.unwrap();
    let pac = e.admin_get("/proxy.pac");
    assert!(pac.contains(&format!("var PROXY = \"HTTPS {tls}\";")), "{pac}");
}

/// A client that offers only the hybrid post-quantum key exchange
/// (X25519MLKEM768, what current browsers and curl offer first) completes
/// its handshake with the TLS listener, with that group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_speaks_post_quantum_key_exchange() {
    let dir = tmpdir("pq");
    let proxy_cert = test_cert(&["localhost", "127.0.0.1"]);
    let (cert, key) = proxy_cert.write_pem(&dir, "proxy");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "allow = [\"a.test\"]\n").unwrap();
    let e = Egressd::start(
        &dir,
        &policy,
        &[],
        &[
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let tcp = tokio::net::TcpStream::connect(e.proxy_tls.unwrap())
        .await
        .unwrap();
    let config = client_config_with(post_quantum_only(), &[&proxy_cert.der], &[]);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(WAIT, tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await
        .unwrap()
        .expect("the TLS listener accepts X25519MLKEM768 alone");
    let group = tls.get_ref().1.negotiated_key_exchange_group().unwrap().name();
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
}
