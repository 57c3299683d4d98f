//! Name resolution. egressd resolves names itself, checks every address
//! against the policy and dials exactly the address it checked: no second
//! lookup by anyone, so DNS rebinding cannot swap the address in between.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::dns::{self, Dns, LookupError, Source};
use crate::policy::{Host, Pin, Resolved};

use super::respond::ProxyError;

/// Where addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsMode {
    /// egressd's own caching resolver ([`crate::dns`]), with the system's
    /// DNS servers (`/etc/resolv.conf`, `/etc/hosts`) unless `--dns-server`
    /// names others; after the static pins.
    System,
    /// Pins only: an unpinned name fails as a DNS error. For sealed
    /// sidecars and for tests, which must send nothing off the machine.
    Static,
}

#[derive(Clone)]
pub struct Resolver {
    /// Command-line pins first, then the policy's: the first match wins.
    pins: Vec<Pin>,
    mode: DnsMode,
    config: dns::Config,
    /// Started at the first lookup, or at start ([`Resolver::start`]).
    dns: Arc<OnceLock<Result<Dns, String>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("pins", &self.pins)
            .field("mode", &self.mode)
            .field("config", &self.config)
            .finish()
    }
}

/// A destination's addresses, in the order to try them, and where the
/// name's answer came from (`None` for an IP literal or a pin).
pub struct Resolution {
    pub targets: Vec<Resolved>,
    pub dns: Option<Source>,
    /// How long the answer holds (none for an IP literal or a pin).
    pub ttl: Option<Duration>,
}

impl Resolver {
    /// System DNS servers, default bounds, `timeout` for each lookup.
    pub fn new(pins: Vec<Pin>, mode: DnsMode, timeout: Duration) -> Resolver {
        let config = dns::Config {
            servers: dns::Servers::System("/etc/resolv.conf".into()),
            bounds: dns::Bounds::default(),
            capacity: dns::cache::DEFAULT_CAPACITY,
            timeout,
            mark: None,
        };
        Resolver::with_config(pins, mode, config)
    }

    pub fn with_config(pins: Vec<Pin>, mode: DnsMode, config: dns::Config) -> Resolver {
        Resolver {
            pins,
            mode,
            config,
            dns: Arc::default(),
        }
    }

    /// Starts the resolver now, so that a configuration that cannot work
    /// (no DNS servers) fails at start rather than at the first request.
    pub fn start(&self) -> Result<(), String> {
        if self.mode == DnsMode::Static {
            return Ok(());
        }
        self.dns().map(|_| ())
    }

    fn dns(&self) -> Result<&Dns, String> {
        self.dns
            .get_or_init(|| Dns::start(self.config.clone()))
            .as_ref()
            .map_err(Clone::clone)
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
    ) -> Result<Resolution, ProxyError> {
        let name = match host {
            Host::Ip(ip) => {
                return Ok(Resolution {
                    targets: vec![Resolved {
                        addr: SocketAddr::new(*ip, port),
                        pinned: false,
                    }],
                    dns: None,
                    ttl: None,
                })
            }
            Host::Name(n) => n,
        };
        self.lookup(name, port, extra_pins).await.map_err(|e| match e {
            LookupError::Timeout(_) => ProxyError::DnsTimeout,
            e => ProxyError::Dns(e.to_string()),
        })
    }

    /// [`Resolver::lookup`] when it can answer without waiting (a pin, or
    /// a fresh cached answer); `None` when it would wait.
    pub fn lookup_now(
        &self,
        name: &str,
        port: u16,
        extra_pins: &[Pin],
    ) -> Option<Result<Resolution, LookupError>> {
        if let Some(pin) = self.pin(name, port).or_else(|| find_pin(extra_pins, name, port)) {
            return Some(Ok(pinned(pin, port)));
        }
        if self.mode == DnsMode::Static {
            return None;
        }
        let found = self.dns.get()?.as_ref().ok()?.cached(name)?;
        Some(found.map(|f| resolution(f, port)))
    }

    /// A name's addresses for `port` (0: any port's pin does not apply):
    /// its pin, else the resolver's answer, duplicates dropped. The error
    /// says whether the name does not exist (the DNS listener's NXDOMAIN).
    pub async fn lookup(&self, name: &str, port: u16, extra_pins: &[Pin]) -> Result<Resolution, LookupError> {
        if let Some(pin) = self.pin(name, port).or_else(|| find_pin(extra_pins, name, port)) {
            return Ok(pinned(pin, port));
        }
        if self.mode == DnsMode::Static {
            return Err(LookupError::Failed(
                name.into(),
                "no static address (--dns static)".into(),
            ));
        }
        let found = self
            .dns()
            .map_err(|e| LookupError::Failed(name.into(), e))?
            .lookup(name)
            .await?;
        Ok(resolution(found, port))
    }
}

fn pinned(pin: &Pin, port: u16) -> Resolution {
    Resolution {
        targets: vec![Resolved {
            addr: SocketAddr::new(pin.addr, pin.to_port.unwrap_or(port)),
            pinned: true,
        }],
        dns: None,
        ttl: None,
    }
}

/// A resolver's answer as the addresses to dial on `port`, in order.
fn resolution(found: dns::Found, port: u16) -> Resolution {
    let mut targets: Vec<Resolved> = found
        .addrs
        .iter()
        .map(|ip| Resolved {
            addr: SocketAddr::new(*ip, port),
            pinned: false,
        })
        .collect();
    targets.dedup();
    Resolution {
        targets,
        dns: Some(found.source),
        ttl: Some(found.ttl),
    }
}

/// The pin for `name:port` among `pins`: one with that port beats one without.
fn find_pin<'a>(pins: &'a [Pin], name: &str, port: u16) -> Option<&'a Pin> {
    pins.iter()
        .find(|p| p.host == name && p.port == Some(port))
        .or_else(|| pins.iter().find(|p| p.host == name && p.port.is_none()))
}
