//! egressd's own resolver: asynchronous, cached by TTL within bounds,
//! answering from stale entries when the upstream fails (RFC 8767). The
//! proxy asks it for every name it must dial ([`crate::proxy::resolve`]);
//! the sealed sidecar's DNS listener is meant to answer from it too.
//!
//! - [`cache`]: the answers, pure (the caller passes the time in);
//! - [`upstream`]: the questions, with hickory's stub resolver;
//! - [`resolver`]: the cache and one question per name, from one DNS thread;
//! - [`stats`]: its counters for `/metrics`; [`args`]: its options.

pub mod answered;
pub mod args;
pub mod cache;
pub mod message;
pub mod resolver;
pub mod socket;
pub mod stats;
pub mod upstream;

pub use cache::Bounds;
pub use resolver::{Config, Dns, Found, LookupError, Source};
pub use upstream::Servers;
