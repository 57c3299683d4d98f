//! egressd: an HTTP egress proxy that enforces destination allowlists.
//!
//! The crate is split into a pure core and a thin I/O shell:
//!
//! - [`policy`]: policy files, normalisation, the compiled matcher,
//!   decisions and the address guard. No sockets, no async, no clock.
//! - [`proxy`]: the I/O shell: listeners, the request pipeline, DNS,
//!   dialling, relaying.
//! - [`access`]: the one access event per request or tunnel (and its
//!   schema); [`metrics`] counts it; [`telemetry`] sets up logging.
//! - [`audit`]: `check`, `audit`, `report` and `lint` over the same policy;
//!   [`tools`] runs them as commands; [`target`] reads targets as people
//!   write them.
//! - [`cli`]: the command line; [`daemon`]: the run lifecycle; [`reload`]
//!   and [`admin`] beside it; [`load`]: reading policy files.
//!
//! # The request pipeline
//!
//! Every request walks the same steps, in this order, whichever way it came
//! in (plain HTTP or CONNECT today):
//!
//! 1. admit the client: source networks and the connection cap at accept
//!    ([`proxy::server`]), then authentication ([`proxy::pipeline::admit`]);
//! 2. parse the target ([`proxy::pipeline::connect_target`],
//!    [`proxy::pipeline::http_target`]);
//! 3. decide, purely ([`policy::Policy::decide`], via
//!    [`proxy::pipeline::decide`]);
//! 4. resolve ([`proxy::resolve::Resolver::resolve`]) and check every
//!    address, purely ([`policy::Policy::decide_addresses`], via
//!    [`proxy::pipeline::check_addresses`]);
//! 5. dial, each checked address in order ([`proxy::dial::dial`]; plain
//!    HTTP through [`proxy::pool::Pool`] and [`proxy::h1`]);
//! 6. forward ([`proxy::forward`]) or relay ([`proxy::relay`]), the first
//!    tunnel bytes judged purely ([`proxy::hello::judge`]);
//! 7. finish: an error answer from the one mapping
//!    ([`proxy::respond::ProxyError`], via [`proxy::pipeline::refuse`]) and
//!    the event, logged and counted once ([`access::Access::finish`]).
//!
//! ```
//! use egressd::policy::{Candidate, Kind, Policy, Verdict};
//!
//! let policy = Policy::from_toml(r#"allow = ["unpkg.com"]"#, "inline.toml").unwrap();
//! let c = Candidate::new(Kind::Connect, "UNPKG.com.", 443, None).unwrap();
//! assert_eq!(policy.decide(&c).verdict, Verdict::Allow);
//! ```

pub mod access;
pub mod admin;
pub mod audit;
pub mod ca;
pub mod cli;
pub mod daemon;
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

/// The shipped Qualtrics policy, compiled into the binary as the default.
pub const DEFAULT_POLICY: &str = include_str!("../policy/qualtrics.toml");
/// Name the built-in policy reports as its origin.
pub const DEFAULT_POLICY_ORIGIN: &str = "builtin:qualtrics.toml";
