//! End to end with a real browser: headless Chromium (Debian's `chromium`)
//! behind the egressd binary, configured by the PAC file from the admin
//! listener, loading a page from a local TLS origin whose sub-resources
//! come from allowed, denied and inspected hosts. Every name is pinned to
//! 127.0.0.1 by the proxy's static resolve map; Chromium trusts the test
//! root and egressd's CA through an NSS database in its own HOME, as a user
//! would (`egressd ca show` prints the same certutil command).
//!
//! What a completeness session relies on is checked against what the
//! browser did: the page's DOM, the access log, `report` on that log, the
//! live view rendered by Chromium, and `audit` on Chromium's NetLog.
//! If Chromium or certutil is missing the test fails and says why.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod support;

use support::{fresh_dir, Egressd as Proxy};

const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSER_WAIT: Duration = Duration::from_secs(60);

fn tmpdir(name: &str) -> std::path::PathBuf {
    fresh_dir(&format!("browser-{name}"))
}

/// A test root and one leaf for every name the page uses.
struct Pki {
    root_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki(names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.distinguished_name
        .push(DnType::CommonName, "egressd browser-test root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&leaf_key, &root_cert, &root_key).unwrap();
    Pki {
        root_pem: root_cert.pem(),
        chain: vec![leaf_cert.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    }
}

/// The page and its parts, by host. Scripts write into the DOM what they
/// could load, so `--dump-dom` shows it.
fn route(req: &Request<Incoming>, port: u16) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
        .to_string();
    let (ctype, body) = match (host.as_str(), req.uri().path()) {
        ("app.test", "/") => (
            "text/html",
            format!(
                r#"<!doctype html><html><head><title>app</title></head><body>
<p id="cdn">cdn not loaded</p><p id="ads">ads not loaded</p>
<p id="api-v1">v1 pending</p><p id="api-v2">v2 pending</p>
<img id="pixel" src="https://tracker.test:{port}/p.gif">
<script src="https://cdn.test:{port}/lib.js"></script>
<script src="https://ads.test:{port}/ads.js"></script>
<script src="https://app.test:{port}/app.js"></script>
</body></html>"#
            ),
        ),
        ("app.test", "/app.js") => (
            "text/javascript",
            format!(
                r#"function show(id, p) {{ p.then(function (r) {{ return r.ok ? r.text() : "status " + r.status; }})
  .catch(function () {{ return "blocked"; }})
  .then(function (t) {{ document.getElementById(id).textContent = t; }}); }}
show("api-v1", fetch("https://api.test:{port}/v1/data"));
show("api-v2", fetch("https://api.test:{port}/v2/data"));"#
            ),
        ),
        ("cdn.test", "/lib.js") => (
            "text/javascript",
            r#"document.getElementById("cdn").textContent = "cdn loaded";"#.to_string(),
        ),
        ("ads.test", "/ads.js") => (
            "text/javascript",
            r#"document.getElementById("ads").textContent = "ads loaded";"#.to_string(),
        ),
        ("api.test", p) => ("text/plain", format!("{} data", &p[1..3])),
        _ => ("text/plain", "nothing here".to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, ctype.parse().unwrap());
    r.headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".parse().unwrap());
    r
}

async fn start_origin(pki: &Pki) -> SocketAddr {
    let acceptor = support::tls_acceptor(pki.chain.clone(), pki.key.clone_key(), &[]);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = service_fn(move |req| async move { Ok::<_, Infallible>(route(&req, addr.port())) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn egressd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egressd"))
}

/// An NSS database in `home` trusting `roots`, as Chromium on Linux reads it.
fn trust(home: &Path, roots: &[(&str, &Path)]) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let run = |args: &[&str]| {
        let out = Command::new("certutil").args(args).output().unwrap_or_else(|e| {
            panic!("certutil (Debian: libnss3-tools, installed by .ci/run) cannot run: {e}")
        });
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["-N", "-d", &db, "--empty-password"]);
    for (name, pem) in roots {
        run(&[
            "-A",
            "-d",
            &db,
            "-n",
            name,
            "-t",
            "C,,",
            "-i",
            pem.to_str().unwrap(),
        ]);
    }
}

/// Runs headless Chromium on `url` and returns the DOM it dumps.
fn chromium(home: &Path, tag: &str, args: &[String], url: &str) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
    );
    let profile = home.join(format!("profile-{tag}"));
    let out = home.join(format!("dom-{tag}.html"));
    let err = home.join(format!("chromium-{tag}.err"));
    let mut child = Command::new(CHROMIUM)
        .env("HOME", home)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .args(["--dump-dom", url])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMIUM} cannot start: {e}"));
    let deadline = Instant::now() + BROWSER_WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {BROWSER_WAIT:?}; its stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success() && !dom.is_empty(),
        "chromium failed ({status}); its stderr:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    dom
}

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in\n{dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    rest[open..open + close].to_string()
}

/// Test hosts (`*.test`) among `hosts`: Chromium's own background requests
/// also go through the proxy and are not the page's.
fn test_hosts<'a>(hosts: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    hosts
        .filter(|h| h.ends_with(".test"))
        .map(str::to_string)
        .collect()
}

fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.code() == Some(1),
        "{cmd:?} should find refusals (exit 1): {out:?}"
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_behind_egressd_is_logged_reported_and_shown_live() {
    let dir = tmpdir("session");
    let names = ["app.test", "cdn.test", "api.test", "ads.test", "tracker.test"];
    let pki = pki(&names);
    let origin = start_origin(&pki).await;
    let port = origin.port();
    let root = dir.join("test-root.pem");
    std::fs::write(&root, &pki.root_pem).unwrap();

    let ca = dir.join("ca");
    let out = egressd()
        .args(["ca", "init", "--dir", ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // app and cdn are spliced (the browser sees the origin's certificate);
    // api has path rules, so its tunnels are inspected with egressd's CA.
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "allow = [\n  {{ host = \"app.test\", ports = [{port}] }},\n  {{ host = \"cdn.test\", ports = [{port}] }},\n  \"https://api.test:{port}/v1\",\n]\n"
        ),
    )
    .unwrap();
    let pins: Vec<String> = names
        .iter()
        .map(|n| format!("--resolve={n}:{port}={origin}"))
        .collect();
    let proxy = Proxy::start(
        &dir,
        &policy,
        &pins,
        &[
            "--ca",
            ca.to_str().unwrap(),
            "--upstream-ca",
            root.to_str().unwrap(),
        ],
    );
    trust(&dir, &[("test-root", &root), ("egressd-ca", &ca.join("ca.pem"))]);

    let pac_text = proxy.admin_get("/proxy.pac");
    assert!(pac_text.contains(&format!("PROXY {}", proxy.proxy)), "{pac_text}");

    let netlog = dir.join("netlog.json");
    let pac = format!("http://{}/proxy.pac", proxy.admin);
    let page_args = vec![
        format!("--proxy-pac-url={pac}"),
        format!("--log-net-log={}", netlog.display()),
    ];
    let page = format!("https://app.test:{port}/");
    let dom = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || chromium(&dir, "page", &page_args, &page)
    })
    .await
    .unwrap();

    // 1. What the page could load.
    assert_eq!(text_of(&dom, "cdn"), "cdn loaded", "allowed host (spliced)");
    assert_eq!(
        text_of(&dom, "api-v1"),
        "v1 data",
        "allowed path inside inspected TLS (h2 to the browser)"
    );
    assert_eq!(text_of(&dom, "ads"), "ads not loaded", "denied host");
    assert_eq!(
        text_of(&dom, "api-v2"),
        "blocked",
        "denied path inside inspected TLS"
    );

    // 2. The access log has the refusals.
    let events = proxy.access_events();
    let refused = |v: &serde_json::Value| v["decision"] == "deny";
    let denied_in_log = test_hosts(
        events
            .iter()
            .filter(|v| refused(v))
            .filter_map(|v| v["host"].as_str()),
    );
    let expected: BTreeSet<String> = ["ads.test", "api.test", "tracker.test"].map(String::from).into();
    assert_eq!(denied_in_log, expected, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|v| v["kind"] == "inspected" && v["path"] == "/v2/data" && refused(v)),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .any(|v| v["kind"] == "inspected" && v["path"] == "/v1/data" && v["status"] == 200));

    // 3. `report` on that log lists exactly those hosts, with suggestions.
    let report = json_of(egressd().args([
        "report",
        "--policy",
        policy.to_str().unwrap(),
        proxy.log.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let reported = test_hosts(
        report["denied_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["host"].as_str()),
    );
    assert_eq!(reported, expected, "{report:#}");
    let rules: BTreeSet<&str> = report["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["rule"].as_str())
        .collect();
    for want in [
        format!("ads.test:{port}"),
        format!("tracker.test:{port}"),
        format!("api.test:{port}/v2"),
    ] {
        assert!(rules.contains(want.as_str()), "{want} not in {rules:?}");
    }

    // 4. The live view, rendered by Chromium, lists them too.
    let live = format!("http://{}/", proxy.admin);
    let live_dom = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || chromium(&dir, "live", &["--no-proxy-server".to_string()], &live)
    })
    .await
    .unwrap();
    assert!(
        live_dom.contains("data-rendered="),
        "the page's script did not run:\n{live_dom}"
    );
    for host in &expected {
        assert!(
            live_dom.contains(&format!("<tr data-host=\"{host}\">")),
            "{host} not shown:\n{live_dom}"
        );
    }
    assert!(
        live_dom.contains(&format!("data-rule=\"api.test:{port}/v2\"")),
        "{live_dom}"
    );

    // 5. The NetLog of the same run gives `audit` the same hosts.
    let audit = json_of(egressd().args([
        "audit",
        "--policy",
        policy.to_str().unwrap(),
        "--netlog",
        netlog.to_str().unwrap(),
        "--inspect",
        "--format",
        "json",
    ]));
    let audited = test_hosts(
        audit["denied_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["host"].as_str()),
    );
    assert_eq!(audited, expected, "{audit:#}");
}
