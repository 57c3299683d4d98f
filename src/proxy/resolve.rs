//! Name resolution. egressd resolves names itself, checks every address
//! against the policy and dials exactly the address it checked: no second
//! lookup by anyone, so DNS rebinding cannot swap the address in between.

use std::net::SocketAddr;
use std::time::Duration;

use crate::policy::{Host, Pin, Resolved};

use super::respond::ProxyError;

/// Where addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsMode {
    /// The system resolver (getaddrinfo), after the static pins.
    System,
    /// Pins only: an unpinned name fails as a DNS error. For sealed
    /// sidecars and for tests, which must send nothing off the machine.
    Static,
}

#[derive(Debug, Clone)]
pub struct Resolver {
    /// Command-line pins first, then the policy's: the first match wins.
    pins: Vec<Pin>,
    mode: DnsMode,
    timeout: Duration,
}

impl Resolver {
    pub fn new(pins: Vec<Pin>, mode: DnsMode, timeout: Duration) -> Resolver {
        Resolver { pins, mode, timeout }
    }

    /// The pin for `name:port`, if any: a pin with a port beats one without.
    pub fn pin(&self, name: &str, port: u16) -> Option<&Pin> {
        find_pin(&self.pins, name, port)
    }

    /// Addresses for a destination, in the order to try them.
    pub async fn resolve(
        &self,
        host: &Host,
        port: u16,
        extra_pins: &[Pin],
    ) -> Result<Vec<Resolved>, ProxyError> {
        let name = match host {
            Host::Ip(ip) => {
                return Ok(vec![Resolved {
                    addr: SocketAddr::new(*ip, port),
                    pinned: false,
                }])
            }
            Host::Name(n) => n,
        };
        if let Some(pin) = self.pin(name, port).or_else(|| find_pin(extra_pins, name, port)) {
            return Ok(vec![Resolved {
                addr: SocketAddr::new(pin.addr, pin.to_port.unwrap_or(port)),
                pinned: true,
            }]);
        }
        if self.mode == DnsMode::Static {
            return Err(ProxyError::Dns(format!(
                "{name} has no static address (--dns static)"
            )));
        }
        let addrs = bounded(self.timeout, tokio::net::lookup_host((name.as_str(), port))).await?;
        let mut v: Vec<Resolved> = addrs.map(|addr| Resolved { addr, pinned: false }).collect();
        v.dedup();
        if v.is_empty() {
            return Err(ProxyError::Dns(format!("{name} has no addresses")));
        }
        Ok(v)
    }
}

/// The pin for `name:port` among `pins`: one with that port beats one without.
fn find_pin<'a>(pins: &'a [Pin], name: &str, port: u16) -> Option<&'a Pin> {
    pins.iter()
        .find(|p| p.host == name && p.port == Some(port))
        .or_else(|| pins.iter().find(|p| p.host == name && p.port.is_none()))
}

/// A lookup bounded in time: a slow resolver is a `dns_timeout` (504), a
/// failing one a `dns_error` (502).
async fn bounded<T>(
    timeout: Duration,
    lookup: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, ProxyError> {
    match tokio::time::timeout(timeout, lookup).await {
        Err(_) => Err(ProxyError::DnsTimeout),
        Ok(Err(e)) => Err(ProxyError::Dns(e.to_string())),
        Ok(Ok(v)) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_resolver_that_never_answers_is_a_timeout() {
        let never = std::future::pending::<std::io::Result<()>>();
        let e = bounded(Duration::from_secs(5), never).await.unwrap_err();
        assert!(matches!(e, ProxyError::DnsTimeout));
        assert_eq!(e.status(), http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.class().as_str(), "dns_timeout");
        let failing = async { Err::<(), _>(std::io::Error::other("no such host")) };
        let e = bounded(Duration::from_secs(5), failing).await.unwrap_err();
        assert_eq!(
            (e.status(), e.class().as_str()),
            (http::StatusCode::BAD_GATEWAY, "dns_error")
        );
    }
}
