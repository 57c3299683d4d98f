//! Replays the inputs kept in fuzz/regressions/<target>/ through the same
//! checks the fuzz targets make, so a fixed crash stays fixed.

use std::path::Path;

use egressd::policy::{normalize_host, normalize_path, Policy};
use egressd::target::{parse_target, split_host_port};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no regression inputs for {target}");
    v
}

#[test]
fn policy_parse() {
    for (name, data) in inputs("policy_parse") {
        if let Ok(s) = std::str::from_utf8(&data) {
            assert!(
                Policy::from_toml(s, "fuzz.toml").is_err(),
                "{name} should be rejected"
            );
        }
    }
}

#[test]
fn normalize() {
    for (name, data) in inputs("normalize") {
        let s = String::from_utf8_lossy(&data);
        let _ = normalize_host(&s);
        let p = normalize_path(&s);
        if !p.ambiguous {
            assert_eq!(normalize_path(&p.path).path, p.path, "{name}");
        }
    }
}

#[test]
fn matcher() {
    let policy = Policy::from_toml(
        r#"allow = ["www.google.com/recaptcha", { cidr = "10.1.0.0/16", ports = [443] }]
deny = [{ cidr = "10.1.2.0/24" }]"#,
        "fuzz.toml",
    )
    .unwrap();
    for (name, data) in inputs("matcher") {
        let s = String::from_utf8_lossy(&data);
        if let Ok(c) = parse_target(&s) {
            let d = policy.decide(&c);
            assert_eq!(d, policy.decide_naive(&c), "{name}");
            assert_ne!(
                d.verdict,
                egressd::policy::Verdict::Allow,
                "{name} must not be allowed"
            );
        }
    }
}

#[test]
fn target() {
    for (name, data) in inputs("target") {
        let s = String::from_utf8_lossy(&data);
        assert!(parse_target(&s).is_err(), "{name} should be rejected");
        let _ = split_host_port(&s);
    }
}

#[test]
fn client_hello() {
    use egressd::policy::SniMode;
    use egressd::proxy::hello::{inspect, judge, FirstBytes, FirstCheck, Judgement};
    for (name, data) in inputs("client_hello") {
        let whole = inspect(&data);
        for cut in 0..data.len().min(64) {
            match inspect(&data[..cut]) {
                FirstBytes::Incomplete => {}
                early => assert_eq!(early, whole, "{name}: cut at {cut}"),
            }
        }
        let check = FirstCheck {
            target: Some("www.qualtrics.com".into()),
            sni: SniMode::Enforce,
            tls_only: true,
        };
        let verdict = judge(&check, &data);
        match name.rsplit('/').next().unwrap_or("") {
            "sni" => assert!(
                matches!(verdict, Judgement::Pass { mismatch: false, .. }),
                "{name}"
            ),
            "ssh" | "huge-record" | "body-length-overflow" => {
                assert!(matches!(verdict, Judgement::Refuse { .. }), "{name}: {verdict:?}")
            }
            _ => {}
        }
    }
}

#[test]
fn h1_response() {
    use egressd::proxy::h1::read_offline;
    for (name, data) in inputs("h1_response") {
        let whole = read_offline(&data, data.len()).map_err(|e| e.to_string());
        for split in [1, 2, 7, 64] {
            let pieces = read_offline(&data, split).map_err(|e| e.to_string());
            assert_eq!(pieces.is_ok(), whole.is_ok(), "{name}, split {split}: {pieces:?}");
            if let (Ok(a), Ok(b)) = (&pieces, &whole) {
                assert_eq!(a, b, "{name}, split {split}");
            }
        }
        let file = name.rsplit('/').next().unwrap_or("");
        match file {
            "bare-lf-extension" | "bare-cr-trailer" | "size-overflow" | "conflicting-lengths" => {
                assert!(whole.is_err(), "{name} must be refused: {whole:?}")
            }
            "chunked" | "interim-then-length" | "te-and-length" => {
                let r = whole.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(r.ended, "{name}");
                assert_eq!(
                    r.body,
                    if file == "te-and-length" {
                        &b"abc"[..]
                    } else {
                        b"hello"
                    },
                    "{name}"
                );
            }
            _ => {}
        }
    }
}
