//! Rules that say what they mean, through the real listener: a scheme
//! restricts the request kind, methods restrict plain HTTP, staged rules
//! log what they would change, expired rules stop matching (and say so).
//! Real sockets on 127.0.0.1 only.

mod support;

use http::{Request, StatusCode};
use support::*;

async fn proxy_for(src: &str, names: &[&str]) -> Proxy {
    let origin = start_origin().await;
    let mut opts = ProxyOpts::new(policy(src));
    for n in names {
        opts = opts.pin(&format!("{n}={origin}"));
    }
    start_proxy(opts).await
}

#[tokio::test]
async fn methods_and_kinds_are_enforced() {
    let proxy = proxy_for(
        r#"allow = [{ host = "http://api.rules.test", methods = ["GET", "HEAD"], name = "api-read" }]"#,
        &["api.rules.test:80"],
    )
    .await;
    let resp = get(proxy.addr, "http://api.rules.test/a").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let req = Request::post("http://api.rules.test/b").body(full("x")).unwrap();
    let resp = proxy_request(proxy.addr, req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let ev = wait_access(|v| v["host"] == "api.rules.test" && v["method"] == "POST").await;
    assert_eq!(ev["reason"], "method_not_allowed");
    // `http://` allows plain HTTP only: no opaque tunnel to the same host.
    let resp = connect(proxy.addr, "api.rules.test:80").await.err().unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let ev = wait_access(|v| v["host"] == "api.rules.test" && v["kind"] == "connect").await;
    assert_eq!(ev["reason"], "kind_not_allowed");
}

#[tokio::test]
async fn staged_rules_change_nothing_and_say_what_they_would() {
    let proxy = proxy_for(
        r#"
allow = ["old.rules.test", { host = "new.rules.test", mode = "report", name = "trial" }]
deny = [{ host = "old.rules.test", mode = "report", name = "retire" }]
"#,
        &["old.rules.test:80", "new.rules.test:80"],
    )
    .await;
    // The staged deny rule lets the request through and logs would-deny.
    let resp = get(proxy.addr, "http://old.rules.test/x").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = wait_access(|v| v["host"] == "old.rules.test").await;
    assert_eq!(
        (ev["decision"].as_str(), ev["rule"].as_str()),
        (Some("would-deny"), Some("retire"))
    );
    assert!(ev["flags"].as_str().unwrap().contains("staged_rule"), "{ev}");
    // The staged allow rule does not let it through, and logs would-allow.
    let resp = get(proxy.addr, "http://new.rules.test/x").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let ev = wait_access(|v| v["host"] == "new.rules.test").await;
    assert_eq!(
        (ev["decision"].as_str(), ev["rule"].as_str()),
        (Some("would-allow"), Some("trial"))
    );
    let m = proxy.shared.metrics.encode();
    assert!(m.contains(r#"decision="would-allow""#), "{m}");
}

#[tokio::test]
async fn expired_rules_stop_matching_and_their_expiry_is_a_metric() {
    let proxy = proxy_for(
        r#"allow = [
  { host = "gone.rules.test", expires = 2000-01-01, name = "old-exception" },
  { host = "kept.rules.test", expires = 2999-12-31, name = "long-exception" },
]"#,
        &["gone.rules.test:80", "kept.rules.test:80"],
    )
    .await;
    let resp = get(proxy.addr, "http://gone.rules.test/").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let ev = wait_access(|v| v["host"] == "gone.rules.test").await;
    assert_eq!(ev["reason"], "rule_expired");
    let resp = get(proxy.addr, "http://kept.rules.test/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let m = proxy.shared.metrics.encode();
    // The end of 2000-01-01, UTC.
    assert!(
        m.contains(r#"egressd_rule_expiry_timestamp_seconds{rule="old-exception"} 946771200"#),
        "{m}"
    );
    assert!(m.contains(r#"rule="long-exception""#), "{m}");
}
