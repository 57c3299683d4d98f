//! egressd's own resolver against a real DNS server the test starts:
//! dnsmasq on 127.0.0.1 (Debian's dnsmasq-base), answering names from a
//! hosts file the test writes and logging every question it gets, so the
//! questions that reached the server are counted from its log. Origins
//! listen on 127.0.0.x; nothing leaves the machine.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use egressd::dns;
use egressd::proxy::resolve::{DnsMode, Resolver};
use http::StatusCode;
use support::dnsmasq::Dnsmasq;
use support::*;

/// A resolver asking only `server`.
fn resolver(server: SocketAddr, timeout: Duration, stale: Duration) -> Resolver {
    let config = dns::Config {
        servers: dns::Servers::Given(vec![server]),
        bounds: dns::Bounds {
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
            stale,
        },
        capacity: 1000,
        timeout,
        mark: None,
    };
    Resolver::with_config(Vec::new(), DnsMode::System, config)
}

async fn proxy_with(policy_src: &str, r: Resolver) -> Proxy {
    start_proxy(ProxyOpts::new(policy(policy_src)).config(move |c| c.resolver = r)).await
}

/// Loopback origins are refused unless a CIDR rule allows them: the test's
/// names answer 127.0.0.x, allowed so.
const POLICY: &str = r#"allow = [
    { hosts = ["a.test", "b.test", "c.test", "nx.test"], ports = "any" },
    { cidr = "127.0.0.0/8", ports = "any" },
]"#;

#[tokio::test]
async fn answers_are_cached_for_their_ttl_then_asked_again() {
    let dir = fresh_dir("dns-ttl");
    let origin = start_origin().await;
    let dns = Dnsmasq::start(&dir, "127.0.0.1 a.test\n", 1);
    let proxy = proxy_with(POLICY, resolver(dns.addr, Duration::from_secs(2), Duration::ZERO)).await;
    let url = format!("http://a.test:{}/ttl", origin.port());
    for _ in 0..20 {
        assert_eq!(get(proxy.addr, &url).await.status(), StatusCode::OK);
    }
    assert_eq!(dns.questions("A", "a.test"), 1, "one question for 20 requests");
    assert_eq!(dns.questions("AAAA", "a.test"), 1, "AAAA asked beside A");
    let ev = wait_access(|v| v["path"] == "/ttl" && v["dns"] == "cache").await;
    assert_eq!(ev["addr"], format!("127.0.0.1:{}", origin.port()));

    // The answer changes; after its TTL the new address is followed.
    dns.answer("127.0.0.2 a.test\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = get(proxy.addr, &format!("http://a.test:{}/moved", origin.port())).await;
    // Nothing listens on 127.0.0.2 now: refused, but dialled there.
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let ev = wait_access(|v| v["path"] == "/moved").await;
    assert_eq!(ev["addr"], format!("127.0.0.2:{}", origin.port()), "{ev}");
    assert_eq!(ev["dns"], "upstream");
    assert_eq!(dns.questions("A", "a.test"), 2);
}

#[tokio::test]
async fn negative_answers_are_cached() {
    let dir = fresh_dir("dns-negative");
    let dns = Dnsmasq::start(&dir, "127.0.0.1 a.test\n", 60);
    let proxy = proxy_with(POLICY, resolver(dns.addr, Duration::from_secs(2), Duration::ZERO)).await;
    for _ in 0..5 {
        let r = get(proxy.addr, "http://nx.test/").await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    }
    let ev = wait_access(|v| v["host"] == "nx.test").await;
    assert_eq!(ev["error"], "dns_error");
    assert!(ev["detail"].as_str().unwrap().contains("no such name"), "{ev}");
    assert_eq!(
        dns.questions("A", "nx.test"),
        1,
        "NXDOMAIN kept for the minimum TTL"
    );
}

#[tokio::test]
async fn a_silent_server_means_stale_answers_or_a_timeout_and_no_threads() {
    let dir = fresh_dir("dns-stale");
    let origin = start_origin().await;
    let dns = Dnsmasq::start(&dir, "127.0.0.1 a.test\n", 1);
    let r = resolver(dns.addr, Duration::from_millis(500), Duration::from_secs(3600));
    let proxy = proxy_with(POLICY, r).await;
    let url = format!("http://a.test:{}/known", origin.port());
    assert_eq!(get(proxy.addr, &url).await.status(), StatusCode::OK);

    // The server goes silent (stopped, its socket still open).
    dns.signal("STOP");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let threads = thread_count();
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (proxy, port) = (proxy.addr, origin.port());
        asks.spawn(async move {
            let known = get(proxy, &format!("http://a.test:{port}/stale{i}"))
                .await
                .status();
            let unknown = get(proxy, &format!("http://b.test:{port}/never{i}"))
                .await
                .status();
            (known, unknown)
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = thread_count();
    while let Some(r) = asks.join_next().await {
        let (known, unknown) = r.unwrap();
        assert_eq!(
            known,
            StatusCode::OK,
            "a known name is served from the stale answer"
        );
        assert_eq!(
            unknown,
            StatusCode::GATEWAY_TIMEOUT,
            "a name never answered times out"
        );
    }
    assert!(
        during <= threads + 1,
        "lookups hold no threads: {threads} before, {during} while 30 waited"
    );
    let stale = wait_access(|v| v["path"] == "/stale0").await;
    assert_eq!(stale["dns"], "stale", "{stale}");
    let timeout = wait_access(|v| v["path"] == "/never0").await;
    assert_eq!(timeout["error"], "dns_timeout", "{timeout}");
    // 30 asked for b.test: the questions that reached the server are the
    // stub resolver's own retries (UDP, then TCP), not one per asker.
    dns.signal("CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = dns.questions("A", "b.test");
    assert!((1..=4).contains(&asked), "{asked} questions for 30 askers");
}

#[tokio::test]
async fn concurrent_askers_share_one_question() {
    let dir = fresh_dir("dns-flight");
    let origin = start_origin().await;
    let dns = Dnsmasq::start(&dir, "127.0.0.1 c.test\n", 60);
    let proxy = proxy_with(POLICY, resolver(dns.addr, Duration::from_secs(4), Duration::ZERO)).await;
    // Held back until every asker waits.
    dns.signal("STOP");
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..25 {
        let (proxy, port) = (proxy.addr, origin.port());
        asks.spawn(async move { get(proxy, &format!("http://c.test:{port}/{i}")).await.status() });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.signal("CONT");
    while let Some(r) = asks.join_next().await {
        assert_eq!(r.unwrap(), StatusCode::OK);
    }
    assert_eq!(dns.questions("A", "c.test"), 1, "25 askers, one question");
}

#[tokio::test]
async fn cached_addresses_are_judged_by_the_policy_of_the_moment() {
    let dir = fresh_dir("dns-guard");
    let origin = start_origin().await;
    let dns = Dnsmasq::start(&dir, "127.0.0.1 a.test\n", 60);
    let proxy = proxy_with(POLICY, resolver(dns.addr, Duration::from_secs(2), Duration::ZERO)).await;
    let url = |p: &str| format!("http://a.test:{}/{p}", origin.port());
    assert_eq!(get(proxy.addr, &url("before")).await.status(), StatusCode::OK);
    // The loopback CIDR rule goes: the cached loopback answer is refused
    // (a rebinding answer, from the cache as from the server).
    proxy
        .shared
        .store_policy(policy(r#"allow = [{ host = "a.test", ports = "any" }]"#));
    for p in ["after", "again"] {
        let r = get(proxy.addr, &url(p)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{p}");
    }
    let ev = wait_access(|v| v["path"] == "/again").await;
    assert_eq!(
        (ev["error"].as_str(), ev["dns"].as_str()),
        (Some("destination_ip_prohibited"), Some("cache")),
        "{ev}"
    );
    assert_eq!(dns.questions("A", "a.test"), 1);
}

/// Threads of this process now.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// `check --resolve-names` asks the same resolver and refuses what the
/// guard would: a name answering loopback or the metadata address.
#[test]
fn check_resolves_names_when_asked() {
    let dir = fresh_dir("dns-check");
    let dns = Dnsmasq::start(
        &dir,
        "162.247.216.10 public.test\n127.0.0.1 rebind.test\n169.254.169.254 meta.test\n",
        60,
    );
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, r#"allow = ["public.test", "rebind.test", "meta.test"]"#).unwrap();
    let check = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_egressd"))
            .args(["check", "--policy", policy.to_str().unwrap()])
            .args(extra)
            .args([
                "https://public.test/",
                "https://rebind.test/",
                "https://meta.test/",
            ])
            .output()
            .unwrap()
    };
    // By name alone, all three are allowed.
    assert_eq!(check(&[]).status.code(), Some(0));
    let server = dns.addr.to_string();
    let out = check(&["--resolve-names", "--dns-server", &server, "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["decision"], "allow", "{:#?}", lines[0]);
    assert_eq!(lines[0]["addresses"][0]["addr"], "162.247.216.10");
    for v in &lines[1..] {
        assert_eq!(v["decision"], "deny", "{v:#}");
        assert_eq!(v["addresses"][0]["decision"], "deny", "{v:#}");
    }
    let text = check(&["--resolve-names", "--dns-server", &server]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("addresses=127.0.0.1 (refused: "), "{text}");
}
