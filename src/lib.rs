//! egressd: an HTTP egress proxy that enforces destination allowlists.
//!
//! The crate is split into a pure core and a thin I/O shell:
//!
//! - [`policy`]: policy files, normalisation, the compiled matcher and
//!   decisions. No sockets, no async, no clock.
//! - [`proxy`]: the I/O shell: listeners, CONNECT tunnels, forwarded HTTP,
//!   DNS and the address that is dialled.
//! - [`telemetry`]: logging and the one access event per request or tunnel.
//! - [`audit`]: `check`, `audit`, `report` and `lint` over the same policy;
//!   [`tools`] wraps them as commands.
//! - [`cli`]: the command line.
//!
//! ```
//! use egressd::policy::{Candidate, Kind, Policy, Verdict};
//!
//! let policy = Policy::from_toml(r#"allow = ["unpkg.com"]"#, "inline.toml").unwrap();
//! let c = Candidate::new(Kind::Connect, "UNPKG.com.", 443, None).unwrap();
//! assert_eq!(policy.decide(&c).verdict, Verdict::Allow);
//! ```

pub mod admin;
pub mod audit;
pub mod cli;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod telemetry;
pub mod tools;

/// The shipped Qualtrics policy, compiled into the binary as the default.
pub const DEFAULT_POLICY: &str = include_str!("../policy/qualtrics.toml");
/// Name the built-in policy reports as its origin.
pub const DEFAULT_POLICY_ORIGIN: &str = "builtin:qualtrics.toml";
