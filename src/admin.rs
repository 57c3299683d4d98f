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

/// Settings of the admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// What browsers should use as the proxy in the PAC file (`host:port`).
    pub pac_proxy: String,
    pub pac_default: PacDefault,
}

pub async fn serve(shared: Arc<Shared>, listener: TcpListener, config: AdminConfig) {
    let config = Arc::new(config);
    loop {
        let (stream, _) = tokio::select! {
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
                async move { Ok::<_, Infallible>(route(&shared, &config, req)) }
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

fn route(shared: &Shared, config: &AdminConfig, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
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
        "/policy" => {
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
            pac(&shared.policy.load(), &config.pac_proxy, config.pac_default),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /healthz /readyz /metrics /policy /proxy.pac /ca.pem\n".into(),
        ),
    }
}

/// A PAC file that sends the policy's allowed hosts through the proxy.
/// Deny rules and paths are left to the proxy, which sees every request.
pub fn pac(policy: &Policy, proxy: &str, default: PacDefault) -> String {
    let via = format!("PROXY {proxy}");
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
        Some(a) => TcpListener::bind(a)
            .await
            .map(Some)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {a} (admin): {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pac_lists_allowed_hosts_zones_and_nets() {
        let p = Policy::from_toml(crate::DEFAULT_POLICY, "q.toml").unwrap();
        let pac = pac(&p, "proxy.corp:3128", PacDefault::Direct);
        assert!(pac.contains("var PROXY = \"PROXY proxy.corp:3128\";"));
        assert!(pac.contains("\"unpkg.com\""));
        assert!(pac.contains("\"www.google.com\""));
        assert!(pac.contains("\".qualtrics.com\""));
        assert!(pac.contains("[\"162.247.216.0\", \"255.255.252.0\"]"));
        assert!(pac.contains("return \"DIRECT\";"));
    }
}
