//! `egressd check --resolve-names`: a name allowed by the rules is resolved
//! through the proxy's own resolver and every address judged as the proxy
//! judges it before dialling, so that `check` refuses what the proxy would
//! refuse (`localhost`, a name that answers a private or metadata address).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::dns;
use crate::policy::{AddrContext, Candidate, Decision, Host, Policy, Refusal, Resolved};
use crate::proxy::resolve::{DnsMode, Resolver};

/// One address of a name, and what the guard says of it.
pub struct Judged {
    pub addr: std::net::IpAddr,
    pub decision: Decision,
}

/// What resolving a name changed.
pub struct Resolution {
    /// The decision once the addresses are judged (the proxy's).
    pub decision: Decision,
    pub addresses: Vec<Judged>,
    /// The name did not resolve.
    pub error: Option<String>,
}

/// Resolves the names of allowed targets: the system's DNS servers, or
/// `servers`, each lookup within `timeout`.
pub struct Names {
    rt: tokio::runtime::Runtime,
    resolver: Resolver,
}

impl Names {
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Result<Names, String> {
        let config = dns::Config {
            servers: if servers.is_empty() {
                dns::Servers::System("/etc/resolv.conf".into())
            } else {
                dns::Servers::Given(servers)
            },
            bounds: dns::Bounds::default(),
            capacity: dns::cache::DEFAULT_CAPACITY,
            timeout,
            mark: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let resolver = Resolver::with_config(Vec::new(), DnsMode::System, config);
        resolver.start()?;
        Ok(Names { rt, resolver })
    }

    /// The decision for `c` once its name's addresses are judged; `None`
    /// when there is nothing to resolve (an IP literal, or a request the
    /// rules refused by name already).
    pub fn resolve(&self, policy: &Policy, c: &Candidate, by_name: Decision) -> Option<Resolution> {
        if !matches!(c.host, Host::Name(_)) || !by_name.verdict.proceeds() {
            return None;
        }
        let found = self
            .rt
            .block_on(self.resolver.resolve(&c.host, c.port, policy.pins()));
        let targets = match found {
            Ok(r) => r.targets,
            Err(e) => {
                return Some(Resolution {
                    decision: by_name,
                    addresses: Vec::new(),
                    error: Some(e.to_string()),
                })
            }
        };
        Some(judge(policy, c, by_name, targets))
    }
}

/// A `localhost` name (RFC 6761: `localhost` and every name under it are
/// loopback, whatever DNS says) judged as the proxy would after resolving
/// it, without asking anyone; `None` for other names.
pub fn localhost(policy: &Policy, c: &Candidate, by_name: Decision) -> Option<Resolution> {
    let Host::Name(name) = &c.host else { return None };
    if !(name == "localhost" || name.ends_with(".localhost")) || !by_name.verdict.proceeds() {
        return None;
    }
    let loopback = [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    let targets: Vec<Resolved> = loopback
        .iter()
        .map(|ip| Resolved {
            addr: SocketAddr::new(*ip, c.port),
            pinned: false,
        })
        .collect();
    Some(judge(policy, c, by_name, targets))
}

/// Every address judged, and the decision once they are (the proxy's).
fn judge(policy: &Policy, c: &Candidate, by_name: Decision, targets: Vec<Resolved>) -> Resolution {
    let ctx = |t: &Resolved| AddrContext {
        name_allowed: by_name.name_allowed(),
        pinned: t.pinned,
    };
    let addresses = targets
        .iter()
        .map(|t| Judged {
            addr: t.addr.ip(),
            decision: policy.check_addr(t.addr.ip(), c, ctx(t)),
        })
        .collect();
    let decision = match policy.decide_addresses(c, by_name, targets, &[]) {
        Ok(checked) => checked.decision,
        Err(Refusal::Denied { decision, .. }) => decision,
        Err(Refusal::SelfLoop) => by_name,
    };
    Resolution {
        decision,
        addresses,
        error: None,
    }
}

impl Resolution {
    /// `addresses=192.0.2.1,127.0.0.1 (refused: loopback)` for the text line.
    pub fn text(&self) -> String {
        if let Some(e) = &self.error {
            return format!("  dns_error={e}");
        }
        let parts: Vec<String> = self
            .addresses
            .iter()
            .map(|j| match j.decision.verdict.proceeds() {
                true => j.addr.to_string(),
                false => format!("{} (refused: {})", j.addr, j.decision.reason.as_str()),
            })
            .collect();
        format!("  addresses={}", parts.join(","))
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "addresses": self.addresses.iter().map(|j| json!({
                "addr": j.addr.to_string(),
                "decision": j.decision.verdict.as_str(),
                "reason": j.decision.reason.as_str(),
            })).collect::<Vec<_>>(),
            "dns_error": self.error,
        })
    }
}
