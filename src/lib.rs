//! egressd: an HTTP egress proxy that enforces destination allowlists.
//!
//! The crate is split into a pure core and a thin I/O shell:
//!
//! - [`policy`]: policy files, normalisation, the compiled matcher,
//!   decisions and the address guard. No sockets, no async, no clock.
//! - [`proxy`]: the I/O shell: listeners, the request pipeline, DNS,
//!   dialling, relaying.
//! - [`access`]: the one access event per request or tunnel; its schema
//!   ([`access::event`]) and the sinks it goes to: [`metrics`], the log line
//!   ([`access::line`]) and the live view ([`live`]); [`telemetry`] sets up
//!   logging.
//! - [`audit`]: `check`, `audit`, `report` and `lint` over the same policy;
//!   [`tools`] runs them as commands; [`target`] reads targets as people
//!   write them.
//! - [`cli`]: the command line; [`daemon`]: the run lifecycle; [`reload`]
//!   and [`admin`] beside it; [`load`]: reading policy files.
//!
//! # The request pipeline
//!
//! Every request walks the same steps, in this order, whichever way it came
//! in. A way in parses its own framing and then calls the steps: plain HTTP
//! ([`proxy::forward`]) and requests inside an inspected tunnel
//! ([`proxy::inspect`]) go through the pipeline's functions; every tunnel
//! (a `CONNECT` in [`proxy::connect`], a redirected connection in
//! [`proxy::transparent`], a SOCKS listener one day) goes through the one
//! tunnel path, [`proxy::tunnel::open`] and [`proxy::tunnel::run`]. This
//! list is the one numbering of the steps; other modules refer to it.
//!
//! 1. admit the client: source networks and the connection cap at accept
//!    ([`proxy::server`]), then authentication ([`proxy::pipeline::admit`]);
//!    a tunnel also claims one of the client's tunnel slots
//!    ([`proxy::TunnelGuard`]);
//! 2. parse the target ([`proxy::pipeline::connect_target`],
//!    [`proxy::pipeline::http_target`]; a redirected connection's SNI or
//!    original destination);
//! 3. decide, purely ([`policy::Policy::decide`], via
//!    [`proxy::pipeline::decide`]);
//! 4. resolve ([`proxy::resolve::Resolver::resolve`]) and check every
//!    address, purely ([`policy::Policy::decide_addresses`], via
//!    [`proxy::pipeline::check_addresses`]);
//! 5. dial, each checked address in order ([`proxy::dial::dial`]; plain
//!    HTTP through [`proxy::pool::Pool`] and [`proxy::h1`]; or through the
//!    parent, [`proxy::parent`]);
//! 6. forward ([`proxy::forward`]) or carry a tunnel's bytes
//!    ([`proxy::tunnel::run`]: [`proxy::relay`] or [`proxy::inspect`]), the
//!    first tunnel bytes judged purely ([`proxy::hello::judge`]);
//! 7. finish: an error answer from the one mapping
//!    ([`proxy::respond::ProxyError`], via [`proxy::pipeline::refuse`]) and
//!    the event, handed once to every sink ([`access::Access::finish`]).
//!
//! ```
//! use egressd::policy::{Candidate, Kind, Policy, Verdict};
//!
//! let policy = Policy::from_toml(r#"allow = ["unpkg.com"]"#, "inline.toml").unwrap();
//! let c = Candidate::new(Kind::Connect, "UNPKG.com.", 443, None).unwrap();
//! assert_eq!(policy.decide(&c).verdict, Verdict::Allow);
//! ```

#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod ca;
pub mod cli;
pub mod daemon;
pub mod dns;
pub mod live;
pub mod load;
pub mod logsink;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod shard;
pub mod target;
pub mod telemetry;
pub mod tools;
pub mod units;

/// The shipped Qualtrics policy, compiled into the binary as the default.
pub const DEFAULT_POLICY: &str = include_str!("../policy/qualtrics.toml");
/// Name the built-in policy reports as its origin.
pub const DEFAULT_POLICY_ORIGIN: &str = "builtin:qualtrics.toml";
