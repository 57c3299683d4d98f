//! `check`, `audit`, `report`, `lint` and `test-policy`, run as the built
//! binary on files the tests create; output and exit codes are checked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn egressd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egressd"))
}

fn run(args: &[&str]) -> Output {
    egressd().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("egressd-tools-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A HAR shaped like a Chrome export after using a Qualtrics survey.
fn sample_har() -> String {
    let urls = [
        ("GET", "https://co1.qualtrics.com/jfe/form/SV_abc"),
        ("GET", "https://co1.qualtrics.com/jfe/static/dist/jfeLib.js"),
        ("POST", "https://co1.qualtrics.com/jfe/form/SV_abc/next"),
        ("GET", "https://www.google.com/recaptcha/api.js?render=explicit"),
        (
            "GET",
            "https://www.gstatic.com/recaptcha/releases/x/recaptcha__en.js",
        ),
        ("GET", "https://fonts.googleapis.com/css?family=Roboto"),
        (
            "GET",
            "https://ajax.googleapis.com/ajax/libs/jquery/3.7.1/jquery.min.js",
        ),
        ("GET", "https://ssl.gstatic.com/images/x.png"),
        (
            "GET",
            "https://fonts.gstatic.com/s/roboto/v30/KFOmCnqEu92Fr1Mu4mxK.woff2",
        ),
        (
            "GET",
            "https://fonts.gstatic.com/s/roboto/v30/KFOlCnqEu92Fr1MmEU9fBBc4.woff2",
        ),
        ("GET", "https://cdn.jsdelivr.net/npm/x@1/dist/x.js"),
        ("GET", "data:image/png;base64,iVBORw0KGgo="),
        ("GET", "https://unpkg.com/react@18/umd/react.production.min.js"),
    ];
    let entries: Vec<String> = urls
        .iter()
        .enumerate()
        .map(|(i, (m, u))| {
            format!(
                r#"{{"_initiator":{{"type":"script"}},"_priority":"High","_resourceType":"script","cache":{{}},"connection":"{}","pageref":"page_1","request":{{"method":"{m}","url":"{u}","httpVersion":"h2","headers":[{{"name":":authority","value":"x"}}],"queryString":[],"cookies":[],"headersSize":-1,"bodySize":0}},"response":{{"status":200,"statusText":"","httpVersion":"h2","headers":[],"cookies":[],"content":{{"size":5,"mimeType":"text/javascript","text":"x=1;\n"}},"redirectURL":"","headersSize":-1,"bodySize":-1,"_transferSize":300}},"serverIPAddress":"203.0.113.{i}","startedDateTime":"2026-11-25T10:00:0{i}.000Z","time":12.5,"timings":{{"blocked":1,"dns":-1,"ssl":-1,"connect":-1,"send":0.1,"wait":10,"receive":1.4}}}}"#,
                1000 + i
            )
        })
        .collect();
    format!(
        r#"{{"log":{{"version":"1.2","creator":{{"name":"WebInspector","version":"537.36"}},"pages":[{{"startedDateTime":"2026-11-25T10:00:00.000Z","id":"page_1","title":"Survey","pageTimings":{{"onContentLoad":500,"onLoad":900}}}}],"entries":[{}]}}}}"#,
        entries.join(",")
    )
}

#[test]
fn check_exit_codes_and_formats() {
    let o = run(&["check", "https://www.qualtrics.com/", "www.google.com:443"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("allow      https://www.qualtrics.com/  rule=qualtrics"),
        "{out}"
    );
    assert!(out.contains("flags=path_not_enforced"), "{out}");

    let o = run(&["check", "https://www.qualtrics.com/", "https://qualtrics.com/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("deny       https://qualtrics.com/  reason=no_matching_rule"));

    // As the proxy decides: without a CA an https URL arrives as a
    // CONNECT, whose path nobody sees; with one (--inspect, or EGRESSD_CA
    // set) the hosts path rules decide are inspected and decided by path.
    let o = run(&["check", "--format", "json", "https://www.google.com/search"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["flags"][0], "path_not_enforced");
    let o = run(&[
        "check",
        "--format",
        "json",
        "--inspect",
        "https://www.google.com/search",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["decision"].as_str(), v["flags"][0].as_str()),
        (Some("deny"), Some("inspected"))
    );
    let o = run(&[
        "check",
        "--format",
        "json",
        "--explain",
        "--inspect",
        "https://www.google.com/maps",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "path_not_allowed");
    assert!(v["explain"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("www.google.com/maps/api")));

    let o = run(&["check", "ftp://example.com/"]);
    assert_eq!(o.status.code(), Some(2));
    // A malformed target is a result of its own; the others are decided.
    let o = run(&[
        "check",
        "--format",
        "json",
        "unpkg.com:443",
        "ftp://example.com/",
        "example.org:443",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let results: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<&str> = results.iter().map(|v| v["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["allow", "error", "deny"]);
    assert!(
        results[1]["error"].as_str().unwrap().contains("scheme"),
        "{}",
        results[1]
    );
    let o = run(&["check", "unpkg.com:443", "not a target"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o)
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("error      not a target"),
        "{}",
        stdout(&o)
    );
    let o = run(&["check"]);
    assert_eq!(o.status.code(), Some(2));

    // Targets from stdin.
    let mut child = egressd()
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"# comment\nunpkg.com:443\njs.stripe.com:443\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().count(), 2);
}

#[test]
fn audit_of_a_chrome_har() {
    let dir = tmpdir("har");
    let har = write(&dir, "survey.har", &sample_har());
    // Requests the policy would deny fail the audit, as they fail `check`;
    // --exit-zero is for those who only want the report.
    let o = run(&["audit", "--har", har.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let quiet = run(&["audit", "--har", har.to_str().unwrap(), "--exit-zero"]);
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(stdout(&quiet), stdout(&o));
    let out = stdout(&o);
    // 12 http(s) entries; the data: URL never reaches a proxy.
    assert!(out.contains("requests:           12"), "{out}");
    assert!(out.contains("denied:             6"), "{out}");
    assert!(out.contains("path not enforced:  2"), "{out}");
    // Grouped by host, sorted by impact, with examples.
    let fonts = out.find("      2  fonts.gstatic.com").expect(&out);
    let cdn = out.find("      1  cdn.jsdelivr.net").expect(&out);
    assert!(fonts < cdn, "{out}");
    assert!(out.contains("e.g. CONNECT fonts.gstatic.com:443"), "{out}");
    // Siblings under one registrable domain become one wildcard...
    assert!(out.contains("\"*.gstatic.com\","), "{out}");
    // ...but never on a public suffix: googleapis.com is one (PSL private section).
    assert!(out.contains("\"fonts.googleapis.com\","), "{out}");
    assert!(out.contains("\"ajax.googleapis.com\","), "{out}");
    assert!(!out.contains("*.googleapis.com"), "{out}");
    assert!(out.contains("\"cdn.jsdelivr.net\","), "{out}");
    assert!(!out.contains("\"*.com\""), "{out}");

    let o = run(&["audit", "--har", har.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requests"], 12);
    assert_eq!(v["denied_hosts"][0]["host"], "fonts.gstatic.com");

    let o = run(&["audit", "--har", har.to_str().unwrap(), "--format", "markdown"]);
    assert!(stdout(&o).contains("| requests | host | ports | reasons | example |"));

    // Paths known (as with TLS inspection): path rules apply.
    let o = run(&["audit", "--har", har.to_str().unwrap(), "--with-paths"]);
    assert!(stdout(&o).contains("path not enforced:  0"), "{}", stdout(&o));

    // Query strings (tokens, user ids) are never shown; the browser's own
    // fetch of its PAC file is no destination.
    let o = run(&[
        "audit",
        "--har",
        har.to_str().unwrap(),
        "--with-paths",
        "--format",
        "json",
    ]);
    let text = stdout(&o);
    assert!(text.contains("https://fonts.googleapis.com/css"), "{text}");
    assert!(
        !text.contains("family=Roboto") && !text.contains("render=explicit"),
        "{text}"
    );
    let o = run(&[
        "audit",
        "--har",
        har.to_str().unwrap(),
        "--with-paths",
        "--keep-query",
        "--format",
        "json",
    ]);
    assert!(stdout(&o).contains("family=Roboto"), "--keep-query keeps them");
    let pac = sample_har().replace(
        "https://unpkg.com/react@18/umd/react.production.min.js",
        "http://127.0.0.1:9090/proxy.pac",
    );
    let pac = write(&dir, "pac.har", &pac);
    let out = stdout(&run(&["audit", "--har", pac.to_str().unwrap()]));
    assert!(out.contains("requests:           11"), "{out}");
    assert!(!out.contains("127.0.0.1"), "{out}");

    let bad = write(&dir, "bad.har", "{\"log\": {\"entries\": [1]}}");
    let o = run(&["audit", "--har", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

/// Waits for `child` (at most 120 s) while polling its peak RSS (VmHWM,
/// KiB); returns it with the child's output.
fn peak_rss(mut child: std::process::Child) -> (u64, Output) {
    let status = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak_kib = peak_kib.max(v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    (peak_kib, child.wait_with_output().unwrap())
}

#[test]
fn audit_streams_a_large_har() {
    // ~60 MB of entries with response bodies: read as a stream, not loaded whole.
    let dir = tmpdir("bighar");
    let path = dir.join("big.har");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(
            br#"{"log":{"version":"1.2","creator":{"name":"WebInspector","version":"537.36"},"entries":["#,
        )
        .unwrap();
        let body = "a".repeat(6000);
        for i in 0..10_000 {
            if i > 0 {
                f.write_all(b",").unwrap();
            }
            let host = if i % 10 == 0 {
                format!("cdn{}.example.net", i % 7)
            } else {
                "co1.qualtrics.com".into()
            };
            write!(
                f,
                r#"{{"request":{{"method":"GET","url":"https://{host}/r/{i}","headers":[]}},"response":{{"status":200,"content":{{"size":6000,"text":"{body}"}}}}}}"#
            )
            .unwrap();
        }
        f.write_all(b"]}}").unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 55_000_000);
    let child = egressd()
        .args(["audit", "--har", path.to_str().unwrap(), "--format", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (peak_kib, o) = peak_rss(child);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the generated HAR holds denied requests"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requests"], 10_000);
    assert_eq!(v["denied"], 1_000);
    assert_eq!(v["suggestions"][0]["rule"], "*.example.net");
    assert!(peak_kib > 0);
    assert!(
        peak_kib * 1024 < size / 2,
        "peak RSS {peak_kib} KiB for a {size}-byte HAR"
    );
    std::fs::remove_file(&path).unwrap();
}

const LOG: &str = r#"{"timestamp":"2026-11-25T09:10:00.1Z","level":"INFO","message":"egressd listening","target":"egressd::cli"}
{"timestamp":"2026-11-25T09:15:00.1Z","level":"INFO","message":"access","target":"egressd::access","client":"10.1.1.5:50000","kind":"connect","method":"CONNECT","host":"www.qualtrics.com","port":443,"decision":"allow","status":200}
{"timestamp":"2026-11-25T09:16:00.1Z","level":"INFO","message":"access","target":"egressd::access","client":"10.1.1.5:50001","kind":"connect","method":"CONNECT","host":"fonts.gstatic.com","port":443,"decision":"would-deny","status":200}
{"timestamp":"2026-11-25T10:01:00.1Z","level":"INFO","message":"access","target":"egressd::access","client":"10.1.1.6:50002","kind":"connect","method":"CONNECT","host":"fonts.gstatic.com","port":443,"decision":"would-deny","status":200}
{"timestamp":"2026-11-25T10:02:00.1Z","level":"INFO","message":"access","target":"egressd::access","client":"10.1.1.6:50003","kind":"http","method":"GET","host":"www.google.com","port":80,"path":"/search","decision":"would-deny","status":200}
"#;

#[test]
fn report_on_access_logs_plain_gzipped_and_with_a_candidate() {
    let dir = tmpdir("report");
    let log = write(&dir, "access.log", LOG);
    let o = run(&["report", log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "the log holds would-deny requests");
    assert_eq!(
        run(&["report", log.to_str().unwrap(), "--exit-zero"])
            .status
            .code(),
        Some(0)
    );
    let out = stdout(&o);
    assert!(out.contains("requests:           4"), "{out}");
    assert!(out.contains("      2  fonts.gstatic.com"), "{out}");
    assert!(out.contains("\"www.google.com/search\","), "{out}");
    assert!(
        out.contains("Denied by client:\n        2  10.1.1.6\n        1  10.1.1.5"),
        "{out}"
    );
    assert!(
        out.contains("2026-11-25T09:00Z") && out.contains("2026-11-25T10:00Z"),
        "{out}"
    );
    assert!(out.contains("Rules nothing matched"), "{out}");
    assert!(out.contains("qualtrics-servers"), "{out}");

    // Rotated and gzipped logs read the same.
    let gz = dir.join("access.log.1.gz");
    {
        let mut e =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
        e.write_all(LOG.as_bytes()).unwrap();
        e.finish().unwrap();
    }
    let o = run(&[
        "report",
        gz.to_str().unwrap(),
        log.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requests"], 8);

    // A candidate that adds fonts.gstatic.com and drops the product rule.
    let cand = write(&dir, "candidate.toml", "allow = [\"fonts.gstatic.com\"]\n");
    let o = run(&[
        "report",
        log.to_str().unwrap(),
        "--candidate",
        cand.to_str().unwrap(),
    ]);
    let out = stdout(&o);
    assert!(
        out.contains("newly denied: 1\n          1  www.qualtrics.com:443"),
        "{out}"
    );
    assert!(
        out.contains("newly allowed: 1\n          2  fonts.gstatic.com:443"),
        "{out}"
    );

    // Stdin works too.
    let mut child = egressd()
        .args(["report", "-", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(LOG.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requests"], 4);
}

/// A report of nothing must not pass for a report of no refusals: input
/// with no readable access event (journalctl's default format, any other
/// file) exits 2, saying what it read and how to feed it; so does one with
/// more than 1% of its access lines unreadable.
#[test]
fn report_fails_loudly_when_it_could_read_nothing() {
    let dir = tmpdir("report-nothing");
    let journal: String = LOG
        .lines()
        .map(|l| format!("Nov 25 09:15:00 host egressd[811]: {l}\n"))
        .collect();
    let journal = write(&dir, "journal.txt", &journal);
    let o = run(&["report", "--exit-zero", journal.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no access event could be read (4 unreadable"),
        "{err}"
    );
    assert!(
        err.contains("the first: Nov 25 09:15:00 host egressd[811]:"),
        "{err}"
    );
    assert!(err.contains("journalctl -u egressd -o cat"), "{err}");
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let o = run(&["report", "--exit-zero", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("(0 unreadable)"));
    // One bad line among four: too many to sum up the rest.
    let mixed = write(
        &dir,
        "mixed.log",
        &format!("{LOG}{{\"target\":\"egressd::access\",\"kind\":\n"),
    );
    let o = run(&["report", "--exit-zero", mixed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 5 access event lines could not be read"));
}

/// `--format html`: one file that needs nothing from elsewhere, with the
/// summary, refused destinations, suggested change, unused rules, a
/// candidate's diff and charts as inline SVG; input text is escaped.
#[test]
fn html_reports_are_self_contained() {
    let dir = tmpdir("html");
    let hostile = r#"{"timestamp":"2026-11-25T11:00:00.1Z","target":"egressd::access","client":"10.1.1.7:1","kind":"http","method":"GET","host":"x.example.org","port":80,"path":"/<script>alert(1)</script>","decision":"deny"}"#;
    let log = write(&dir, "access.log", &format!("{LOG}{hostile}\n"));
    let cand = write(&dir, "candidate.toml", "allow = [\"fonts.gstatic.com\"]\n");
    let o = run(&[
        "report",
        log.to_str().unwrap(),
        "--candidate",
        cand.to_str().unwrap(),
        "--format",
        "html",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let html = stdout(&o);
    assert!(
        html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"),
        "{html}"
    );
    for part in [
        "<h2>Summary</h2>",
        "<h2>Refusals per hour</h2>",
        "<h2>Top refused destinations</h2>",
        "<h2>Refused destinations</h2>",
        "<h2>Suggested change to the policy</h2>",
        "+  &quot;fonts.gstatic.com&quot;,",
        "<h2>Rules nothing matched</h2>",
        "<h2>Candidate",
        "Newly allowed: 1",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
    ] {
        assert!(html.contains(part), "{part} missing:\n{html}");
    }
    assert_eq!(html.matches("<svg").count(), 2);
    let lower = html.to_ascii_lowercase();
    assert!(
        !lower.contains("<script"),
        "no scripts, and input never becomes markup"
    );
    assert!(!lower.contains("src=") && !lower.contains("href=") && !lower.contains("@import"));

    let har = write(&dir, "a.har", &sample_har());
    let o = run(&["audit", "--har", har.to_str().unwrap(), "--format", "html"]);
    let html = stdout(&o);
    assert!(
        html.contains("<h1>egressd audit: policy builtin:qualtrics.toml"),
        "{html}"
    );
    assert!(html.contains("<h2>Refused destinations</h2>"), "{html}");
}

/// A script that asked for JSON gets JSON even when the tool cannot run.
#[test]
fn bad_input_under_json_is_json_too() {
    for args in [
        vec![
            "check",
            "--policy",
            "/nonexistent/p.toml",
            "--format",
            "json",
            "a.test:443",
        ],
        vec!["audit", "--har", "/nonexistent/a.har", "--format", "json"],
        vec!["report", "/nonexistent/access.log", "--format", "json"],
        vec!["lint", "/nonexistent/p.toml", "--format", "json"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)));
        assert!(v["error"].as_str().unwrap().contains("/nonexistent/"), "{v}");
        assert_eq!(v["exit_code"], 2);
        assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/"));
    }
    let o = run(&["check", "--policy", "/nonexistent/p.toml", "a.test:443"]);
    assert!(o.stdout.is_empty(), "text stays on stderr");
}

/// The Kubernetes example installs exactly what `transparent-rules` prints.
#[test]
fn the_transparent_sidecar_manifest_carries_the_printed_rules() {
    let o = run(&[
        "transparent-rules",
        "--uid",
        "1337",
        "--port",
        "15001",
        "--exclude",
        "10.96.0.0/12",
        "--exclude",
        "10.244.0.0/16",
        "--format",
        "iptables",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let printed = stdout(&o);
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sidecar-transparent.yaml"),
    )
    .unwrap();
    let start = manifest.find("  redirect.sh: |\n").unwrap() + "  redirect.sh: |\n".len();
    let embedded: String = manifest[start..]
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert_eq!(embedded, printed);
    let o = run(&["transparent-rules"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "without --mark or --uid egressd would loop"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--mark"));
}

/// `report` counts as it reads: its memory follows destinations, not lines.
#[test]
fn report_memory_does_not_grow_with_lines() {
    let dir = tmpdir("biglog");
    let path = dir.join("access.log");
    let lines = 300_000u64;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..lines {
            let host = format!("h{}.example.{}", i % 500, if i % 10 == 0 { "org" } else { "com" });
            writeln!(
                f,
                r#"{{"timestamp":"2026-11-25T{:02}:00:00.1Z","target":"egressd::access","client":"10.0.{}.{}:5","kind":"http","method":"GET","host":"{host}","port":80,"path":"/r/{}","decision":"allow"}}"#,
                i % 24,
                i % 7,
                i % 200,
                i % 97
            )
            .unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let policy = write(&dir, "p.toml", "allow = [\"*.example.com\"]\n");
    let child = egressd()
        .args([
            "report",
            "--policy",
            policy.to_str().unwrap(),
            path.to_str().unwrap(),
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (peak_kib, o) = peak_rss(child);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requests"], lines);
    assert_eq!(v["denied"], lines / 10);
    assert_eq!(v["suggestions"][0]["rule"], "*.example.org");
    assert!(peak_kib > 0);
    // Keeping every line (as report once did) took ~300 bytes a line: about
    // 90 MiB here; counting takes a fixed few MiB over the binary's own.
    assert!(
        peak_kib < 48 * 1024,
        "peak RSS {peak_kib} KiB for a {size}-byte log of {lines} lines"
    );
    std::fs::remove_file(&path).unwrap();
}

/// A log where every line is a refusal (report mode over a week, or a pod
/// retrying a blocked host), 4,000 destinations, client ports varying as
/// they do in real logs: `report`'s memory is the same for 100,000 lines
/// as for 1,000,000.
#[test]
fn report_memory_is_flat_on_a_refusal_only_log() {
    let dir = tmpdir("refusals");
    let policy = write(&dir, "p.toml", "allow = [\"*.example.com\"]\n");
    let mut peaks = Vec::new();
    for lines in [100_000u64, 1_000_000] {
        let path = dir.join("refused.log");
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            for i in 0..lines {
                // A cheap spread of clients, ports and destinations.
                let x = i.wrapping_mul(2_654_435_761) % 1_000_003;
                writeln!(
                    f,
                    r#"{{"timestamp":"2026-11-2{}T{:02}:00:00.1Z","target":"egressd::access","client":"10.{}.{}.{}:{}","kind":"connect","method":"CONNECT","host":"svc{}.example.net","port":443,"decision":"deny"}}"#,
                    i % 7,
                    i % 24,
                    x % 4,
                    x % 10,
                    x % 20 + 1,
                    1024 + x % 64_000,
                    x % 4_000
                )
                .unwrap();
            }
        }
        // The answer is larger than a pipe holds: to a file, so that the
        // child never waits for this thread to read it.
        let answer = dir.join("report.json");
        let child = egressd()
            .args(["report", "--exit-zero", "--format", "json", "--policy"])
            .args([policy.to_str().unwrap(), path.to_str().unwrap()])
            .stdout(std::fs::File::create(&answer).unwrap())
            .spawn()
            .unwrap();
        let (peak_kib, o) = peak_rss(child);
        assert_eq!(o.status.code(), Some(0));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
        assert_eq!(v["denied"], lines);
        assert_eq!(v["denied_hosts"].as_array().unwrap().len(), 4_000);
        peaks.push(peak_kib);
        std::fs::remove_file(&path).unwrap();
    }
    assert!(
        peaks[1] < 64 * 1024,
        "peak RSS {} KiB on 1,000,000 refused lines",
        peaks[1]
    );
    // Flat, with room for how far parsing runs ahead of merging on a busy
    // machine (bounded); keeping lines would take ten times as much.
    assert!(
        peaks[1] < peaks[0] + peaks[0] / 2,
        "peak RSS grew with lines: {} KiB at 100,000, {} KiB at 1,000,000",
        peaks[0],
        peaks[1]
    );
}

#[test]
fn lint_warns_and_strict_fails() {
    let dir = tmpdir("lint");
    let p = write(
        &dir,
        "p.toml",
        "allow = [\"*.example.com\", \"www.example.com\", { cidr = \"10.0.0.0/8\", ports = [443] }]\n",
    );
    let o = run(&["lint", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains(":1: warning[shadowed]: rule"), "{out}");
    assert!(out.contains("warning[special-cidr]"), "{out}");
    let o = run(&["lint", "--strict", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let bad = write(&dir, "bad.toml", "allow = [\"*.com\"]\n");
    let o = run(&["lint", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.toml:1: rule \"*.com\""));

    // Through a parent proxy, names are not resolved: `resolved = true`
    // admits none, unless the rule goes direct.
    let r = write(
        &dir,
        "resolved.toml",
        "allow = [\n  { cidr = \"203.0.113.0/24\", resolved = true },\n  { cidr = \"198.51.100.0/24\", resolved = true, via = \"direct\" },\n]\n",
    );
    let out = stdout(&run(&["lint", r.to_str().unwrap()]));
    assert!(!out.contains("resolved-through-parent"), "{out}");
    let out = stdout(&run(&[
        "lint",
        "--upstream-proxy",
        "http://proxy.corp:3128",
        r.to_str().unwrap(),
    ]));
    assert!(out.contains(":2: warning[resolved-through-parent]"), "{out}");
    assert!(!out.contains(":3: warning[resolved-through-parent]"), "{out}");
}

#[test]
fn test_policy_runs_the_shipped_cases() {
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/policy/qualtrics.toml");
    let o = run(&["test-policy", policy]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("0 failed"));
    let dir = tmpdir("cases");
    let cases = write(
        &dir,
        "c.toml",
        "cases = [{ target = \"https://qualtrics.com/\", expect = \"allow\" }]\n",
    );
    let o = run(&["test-policy", policy, "--cases", cases.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FAIL"));
}

#[test]
fn ca_init_and_show() {
    let d = tmpdir("ca");
    let dir = d.join("ca");
    let dir_s = dir.to_str().unwrap();
    let o = run(&[
        "ca",
        "init",
        "--dir",
        dir_s,
        "--permit",
        "qualtrics.com",
        "--days",
        "365",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // Never overwritten by accident.
    let o = run(&["ca", "init", "--dir", dir_s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    let o = run(&["ca", "show", "--dir", dir_s]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for want in [
        "sha-256:",
        "qualtrics.com",
        "update-ca-certificates",
        "certutil",
        "NODE_EXTRA_CA_CERTS",
        "keytool",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    // A key others can read is refused, naming the file and the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = run(&["ca", "show", "--dir", dir_s]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ca.key") && err.contains("chmod 600"), "{err}");
    }
}

#[test]
fn run_refuses_a_ca_key_others_can_read() {
    let d = tmpdir("run-ca");
    let dir = d.join("ca");
    let o = run(&["ca", "init", "--dir", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = run(&[
            "run",
            "--ca",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--log-format",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ca.key") && err.contains("chmod 600"), "{err}");
    }
}

/// `localhost` names are loopback (RFC 6761): allowed by name, `check` says
/// what the proxy does after resolving them, without asking any server.
#[test]
fn check_judges_localhost_names_as_the_proxy_does() {
    let dir = tmpdir("check-localhost");
    let p = write(
        &dir,
        "p.toml",
        r#"allow = ["localhost", "a.localhost", "www.qualtrics.com"]"#,
    );
    let o = run(&[
        "check",
        "--policy",
        p.to_str().unwrap(),
        "http://localhost/",
        "https://a.localhost/",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().filter(|l| l.starts_with("deny ")).count(), 2, "{out}");
    assert!(
        out.contains("addresses=127.0.0.1 (refused: special_address)"),
        "{out}"
    );
    // With a CIDR rule for loopback, the proxy would dial it: so does check.
    let p = write(
        &dir,
        "q.toml",
        r#"allow = ["localhost", { cidr = "127.0.0.0/8" }, { cidr = "::1" }]"#,
    );
    let o = run(&["check", "--policy", p.to_str().unwrap(), "http://localhost/"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// Names `check` allows by the policy alone are judged again by their
/// addresses in the proxy: it says so, and hints at `.internal` names,
/// whose addresses are private.
#[test]
fn check_says_allowed_names_are_judged_again_after_resolution() {
    let dir = tmpdir("check-internal");
    let p = write(&dir, "p.toml", r#"allow = ["*.internal", "www.qualtrics.com"]"#);
    let o = run(&[
        "check",
        "--policy",
        p.to_str().unwrap(),
        "db.internal:443",
        "www.qualtrics.com:443",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let db = out.lines().find(|l| l.contains("db.internal")).unwrap();
    assert!(db.contains("hint=.internal names are private-use"), "{out}");
    let q = out.lines().find(|l| l.contains("www.qualtrics.com")).unwrap();
    assert!(!q.contains("hint="), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resolve-names"));
    let o = run(&[
        "check",
        "--format",
        "json",
        "--policy",
        p.to_str().unwrap(),
        "db.internal:443",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["hint"].as_str().unwrap().contains("private-use"), "{v}");
}

/// An empty (or emptied) policy file is valid and denies everything: lint
/// says so, and `--strict` fails on it.
#[test]
fn lint_warns_on_a_policy_without_rules() {
    let dir = tmpdir("lint-empty");
    let p = write(&dir, "empty.toml", "# the team's allowlist\n");
    let o = run(&["lint", "--strict", p.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    let out = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("no rules") && out.contains("allow = []"), "{out}");
}

/// An https URL goes through a tunnel that hides its path: of the path
/// rules that let the tunnel through, `check` credits the one the URL's
/// path matches, and `--explain` says why the verdict is allow.
#[test]
fn check_credits_the_path_rule_the_url_matches() {
    let o = run(&["check", "--explain", "https://www.google.com/recaptcha/api.js"]);
    let out = stdout(&o);
    let first = out.lines().next().unwrap();
    assert!(first.contains("(www.google.com/recaptcha, line 36)"), "{out}");
    let o = run(&["check", "--explain", "https://www.google.com/search"]);
    let out = stdout(&o);
    assert!(out.contains("flags=path_not_enforced"), "{out}");
    assert!(out.contains("the CONNECT tunnel hides the path"), "{out}");
}
