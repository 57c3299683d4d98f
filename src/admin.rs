//! The admin listener: health, readiness, metrics, the loaded policy and a
//! PAC file for browsers. Separate from the proxy listener, loopback by
//! default; it keeps answering during drain so probes see "not ready".

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::policy::{Action, HostPattern, Policy, RuleTarget};
use crate::proxy::respond::{full, Body};
use crate::proxy::Shared;

/// Where a PAC file sends destinations no rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PacDefault {
    /// Through the proxy too, which refuses them with a clear answer.
    Proxy,
    /// Directly, bypassing the proxy.
    Direct,
}

/// How a PAC file names the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacScheme {
    /// `PROXY host:port`: plain HTTP to the proxy.
    Proxy,
    /// `HTTPS host:port`: TLS to the proxy (`--listen-tls`).
    Https,
}

/// Settings of the admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// What browsers should use as the proxy in the PAC file (`host:port`).
    pub pac_proxy: String,
    pub pac_scheme: PacScheme,
    pub pac_default: PacDefault,
}

pub async fn serve(shared: Arc<Shared>, listener: TcpListener, config: AdminConfig) {
    let config = Arc::new(config);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.cut.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                let config = config.clone();
                async move { Ok::<_, Infallible>(route(&shared, &config, peer, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn route(shared: &Shared, config: &AdminConfig, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/" | "/decisions" => match guard_live(shared, peer, &req) {
            Some(refusal) => refusal,
            None if req.uri().path() == "/" => live_page(),
            None => decisions(shared, req.uri().query()),
        },
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if shared.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else if shared.shutdown.is_cancelled() {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n".into())
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(),
        ),
        "/policy" => match guard_live(shared, peer, &req) {
            Some(refusal) => refusal,
            None => {
                let p = shared.policy.load();
                let body = serde_json::json!({
                    "origin": p.origin(),
                    "version": p.version(),
                    "mode": p.mode().to_string(),
                    "rules": p.rules().len(),
                    "loaded_at_unix_ms": shared.loaded_at.load(Ordering::Relaxed),
                    "source": p.source(),
                });
                text(StatusCode::OK, "application/json", format!("{body:#}\n"))
            }
        },
        "/ca.pem" => match shared.inspector.load_full() {
            // The certificate only: the key never leaves the process.
            Some(i) => text(StatusCode::OK, "application/x-pem-file", i.ca_pem().to_string()),
            None => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "no CA loaded (egressd run --ca DIR)\n".into(),
            ),
        },
        "/proxy.pac" => text(
            StatusCode::OK,
            "application/x-ns-proxy-autoconfig",
            pac(
                &shared.policy.load(),
                &config.pac_proxy,
                config.pac_scheme,
                config.pac_default,
            ),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: / /decisions /healthz /readyz /metrics /policy /proxy.pac /ca.pem\n".into(),
        ),
    }
}

/// The live view's pages and `/policy` show what clients asked for, who
/// they are, and the whole policy: with `--auth` they need the same
/// credentials (as `Authorization`, which a browser sends to a server),
/// without it a loopback client; and they answer only to an IP address or
/// `localhost` as `Host`, so that a web page whose name was rebound to the
/// admin address cannot read them.
fn guard_live(shared: &Shared, peer: SocketAddr, req: &Request<Incoming>) -> Option<Response<Body>> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(h) = host {
        if !local_host_name(h) {
            return Some(text(
                StatusCode::MISDIRECTED_REQUEST,
                "text/plain",
                "the live view answers only to an IP address or localhost as Host\n".into(),
            ));
        }
    }
    let Some(auth) = &shared.config.auth else {
        // Without the proxy's users to ask for, only this host's own
        // clients see who asked for what (and the policy's source).
        if peer.ip().is_loopback() || crate::policy::normalize::canonical_ip(peer.ip()).is_loopback() {
            return None;
        }
        return Some(text(
            StatusCode::FORBIDDEN,
            "text/plain",
            "the live view and the policy answer loopback clients, or the proxy's users with --auth\n".into(),
        ));
    };
    match auth.check_field(req.headers(), header::AUTHORIZATION, peer.ip()) {
        Ok(_) => None,
        Err(crate::proxy::auth::AuthError::RateLimited) => Some(text(
            StatusCode::TOO_MANY_REQUESTS,
            "text/plain",
            "too many failed logins; try again later\n".into(),
        )),
        Err(_) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "credentials required\n".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"egressd admin\", charset=\"UTF-8\""),
            );
            Some(r)
        }
    }
}

/// `Host` is an IP literal or `localhost` (with or without a port).
fn local_host_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(n, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || name.ends_with(".localhost")
}

/// The live view's page, assembled once, with a Content-Security-Policy
/// that allows exactly its own inline script and style and nothing else.
fn live_page() -> Response<Body> {
    use base64::Engine as _;
    use sha2::Digest as _;
    static PAGE: std::sync::OnceLock<(String, HeaderValue)> = std::sync::OnceLock::new();
    let (html, csp) = PAGE.get_or_init(|| {
        let script = include_str!("live/page.js");
        let style = include_str!("live/page.css");
        let hash =
            |s: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s.as_bytes()));
        let html = include_str!("live/page.html")
            .replace("{STYLE}", style)
            .replace("{SCRIPT}", script);
        let csp = format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(script),
            hash(style)
        );
        (html, HeaderValue::from_str(&csp).expect("CSP is ASCII"))
    });
    let mut r = text(StatusCode::OK, "text/html; charset=utf-8", html.clone());
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `/decisions?since=N`: the live view's data (see [`crate::live`]).
fn decisions(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let mut since = 0;
    for pair in query.unwrap_or("").split('&') {
        if let Some(("since", v)) = pair.split_once('=') {
            match v.parse() {
                Ok(n) => since = n,
                Err(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("since must be a decision number, not {v:?}\n"),
                    )
                }
            }
        }
    }
    let snapshot = shared.live.snapshot(since);
    let p = shared.policy.load();
    let mut v = serde_json::to_value(&snapshot).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "policy".into(),
            serde_json::json!({"origin": p.origin(), "version": p.version(), "mode": p.mode().to_string()}),
        );
    }
    let mut r = text(StatusCode::OK, "application/json", v.to_string());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A PAC file that sends the policy's allowed hosts through the proxy.
/// Deny rules and paths are left to the proxy, which sees every request.
pub fn pac(policy: &Policy, proxy: &str, scheme: PacScheme, default: PacDefault) -> String {
    let via = match scheme {
        PacScheme::Proxy => format!("PROXY {proxy}"),
        PacScheme::Https => format!("HTTPS {proxy}"),
    };
    let mut exact = Vec::new();
    let mut zones = Vec::new();
    let mut nets = Vec::new();
    for r in policy.rules().iter().filter(|r| r.action == Action::Allow) {
        match &r.target {
            RuleTarget::Host(d) => match &d.host {
                HostPattern::Exact(h) => exact.push(h.clone()),
                HostPattern::Subdomains(z) => zones.push(format!(".{z}")),
                HostPattern::ApexAndSubdomains(z) => {
                    exact.push(z.clone());
                    zones.push(format!(".{z}"));
                }
            },
            RuleTarget::Cidr {
                net: ipnet::IpNet::V4(n),
                ..
            } => nets.push(format!("[\"{}\", \"{}\"]", n.network(), n.netmask())),
            RuleTarget::Cidr { .. } => {}
        }
    }
    exact.sort();
    exact.dedup();
    zones.sort();
    zones.dedup();
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(",\n    ")
    };
    let rest = match default {
        PacDefault::Proxy => via.clone(),
        PacDefault::Direct => "DIRECT".to_string(),
    };
    format!(
        r#"// Generated by egressd from policy {origin} ({version}).
// Destinations the policy allows go through the proxy; the rest: {rest}.
var PROXY = "{via}";
var HOSTS = [
    {hosts}
];
var ZONES = [
    {zones}
];
var NETS = [
    {nets}
];

function FindProxyForURL(url, host) {{
    host = host.toLowerCase().replace(/\.$/, "");
    for (var i = 0; i < HOSTS.length; i++) {{
        if (host == HOSTS[i]) return PROXY;
    }}
    for (var j = 0; j < ZONES.length; j++) {{
        if (dnsDomainIs(host, ZONES[j]) && host.length > ZONES[j].length) return PROXY;
    }}
    if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) {{
        for (var k = 0; k < NETS.length; k++) {{
            if (isInNet(host, NETS[k][0], NETS[k][1])) return PROXY;
        }}
    }}
    return "{rest}";
}}
"#,
        origin = policy.origin(),
        version = policy.version(),
        hosts = list(&exact),
        zones = list(&zones),
        nets = nets.join(",\n    "),
    )
}

/// Binds the admin listener, if one is configured.
pub async fn bind(addr: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        Some(a) => TcpListener::bind(a).await.map(Some).map_err(|e| {
            let hint = "give another --admin ADDR, or --admin off";
            std::io::Error::new(e.kind(), format!("cannot listen on {a} (admin): {e}; {hint}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_view_answers_to_local_names_only() {
        for h in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "[::1]:9090",
            "localhost:9090",
            "LOCALHOST.",
            "a.localhost",
            "10.1.2.3:80",
        ] {
            assert!(local_host_name(h), "{h}");
        }
        for h in [
            "evil.example:9090",
            "evil.example",
            "[::1",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
        ] {
            assert!(!local_host_name(h), "{h}");
        }
    }

    #[test]
    fn pac_lists_allowed_hosts_zones_and_nets() {
        let p = Policy::from_toml(crate::DEFAULT_POLICY, "q.toml").unwrap();
        let pac = pac(&p, "proxy.corp:3128", PacScheme::Proxy, PacDefault::Direct);
        assert!(pac.contains("var PROXY = \"PROXY proxy.corp:3128\";"));
        assert!(pac.contains("\"unpkg.com\""));
        assert!(pac.contains("\"www.google.com\""));
        assert!(pac.contains("\".qualtrics.com\""));
        assert!(pac.contains("[\"162.247.216.0\", \"255.255.252.0\"]"));
        assert!(pac.contains("return \"DIRECT\";"));
        let tls = super::pac(&p, "proxy.corp:3129", PacScheme::Https, PacDefault::Proxy);
        assert!(tls.contains("var PROXY = \"HTTPS proxy.corp:3129\";"), "{tls}");
    }
}
