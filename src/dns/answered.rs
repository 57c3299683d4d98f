//! Which names egressd's DNS listener answered with which addresses, per
//! client (pure: the caller passes the time in). A redirected connection
//! that carries no name of its own (SSH, a database, SMTP) is judged by
//! the names the app was told live at its original destination, as
//! Cilium's DNS proxy ties FQDN policy to the addresses it answered.
//!
//! An entry holds for the answer's TTL but at least [`HOLD_MIN`]: apps keep
//! answers longer than the TTL (the JVM, connection pools, a process that
//! resolved once at start), and a name forgotten too early refuses an
//! allowed connection. The table is bounded; when full, expired entries go
//! first, then the ones closest to expiry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time an answered address stays tied to its name.
pub const HOLD_MIN: Duration = Duration::from_secs(300);
/// (client, address) pairs kept at most.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// Names kept per (client, address): shared CDN addresses answer many.
const NAMES_PER_ADDR: usize = 8;

/// The names answered for one (client, address), each with when it expires.
type Names = Vec<(Arc<str>, Instant)>;

/// The table.
#[derive(Debug)]
pub struct Answered {
    entries: HashMap<(IpAddr, IpAddr), Names>,
    capacity: usize,
}

impl Answered {
    pub fn new(capacity: usize) -> Answered {
        Answered {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Notes that `client` was told `name` lives at `addrs` for `ttl`.
    pub fn record(&mut self, client: IpAddr, name: &str, addrs: &[IpAddr], ttl: Duration, now: Instant) {
        let until = now + ttl.max(HOLD_MIN);
        let mut shared: Option<Arc<str>> = None;
        for &addr in addrs {
            if !self.entries.contains_key(&(client, addr)) && self.entries.len() >= self.capacity {
                self.make_room(now);
            }
            let names = self.entries.entry((client, addr)).or_default();
            // Answered again (the common case): the same entry, moved last.
            if let Some(i) = names.iter().position(|(n, _)| **n == *name) {
                let (n, _) = names.remove(i);
                names.push((n, until));
                continue;
            }
            names.retain(|(_, u)| *u > now);
            if names.len() >= NAMES_PER_ADDR {
                names.remove(0);
            }
            let n = shared.get_or_insert_with(|| Arc::from(name)).clone();
            names.push((n, until));
        }
    }

    /// The names `client` was told live at `addr`, the latest answer first.
    pub fn names(&self, client: IpAddr, addr: IpAddr, now: Instant) -> Vec<Arc<str>> {
        let Some(names) = self.entries.get(&(client, addr)) else {
            return Vec::new();
        };
        names
            .iter()
            .rev()
            .filter(|(_, until)| *until > now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops what has expired; if nothing has, the entry closest to expiry.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, names| {
            names.retain(|(_, until)| *until > now);
            !names.is_empty()
        });
        if self.entries.len() < self.capacity {
            return;
        }
        let last = |names: &Names| names.iter().map(|(_, u)| *u).max();
        if let Some(key) = self.entries.iter().min_by_key(|(_, n)| last(n)).map(|(k, _)| *k) {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_tied_to_the_client_and_address_they_were_answered_for() {
        let (now, mut t) = (Instant::now(), Answered::new(16));
        let (app, other) = (ip("10.0.0.2"), ip("10.0.0.3"));
        t.record(
            app,
            "sftp.test",
            &[ip("198.51.100.7"), ip("2001:db8::7")],
            Duration::from_secs(30),
            now,
        );
        t.record(
            app,
            "cdn.test",
            &[ip("198.51.100.7")],
            Duration::from_secs(30),
            now,
        );
        assert_eq!(
            t.names(app, ip("198.51.100.7"), now),
            vec![Arc::from("cdn.test"), Arc::from("sftp.test")]
        );
        assert_eq!(t.names(app, ip("2001:db8::7"), now), vec![Arc::from("sftp.test")]);
        assert!(
            t.names(other, ip("198.51.100.7"), now).is_empty(),
            "another client"
        );
        // Held at least HOLD_MIN, however short the TTL; gone after.
        let later = now + HOLD_MIN - Duration::from_secs(1);
        assert_eq!(t.names(app, ip("2001:db8::7"), later).len(), 1);
        assert!(t.names(app, ip("2001:db8::7"), now + HOLD_MIN).is_empty());
        // Answered again: one entry, the latest first.
        t.record(
            app,
            "sftp.test",
            &[ip("198.51.100.7")],
            Duration::from_secs(30),
            now,
        );
        assert_eq!(t.names(app, ip("198.51.100.7"), now)[0], Arc::from("sftp.test"));
        assert_eq!(t.names(app, ip("198.51.100.7"), now).len(), 2);
    }

    #[test]
    fn the_table_is_bounded() {
        let (now, mut t) = (Instant::now(), Answered::new(4));
        for i in 0..10u8 {
            let at = now + Duration::from_secs(u64::from(i));
            t.record(
                ip("10.0.0.2"),
                "a.test",
                &[IpAddr::from([198, 51, 100, i])],
                Duration::ZERO,
                at,
            );
        }
        assert_eq!(t.len(), 4);
        // The latest answers are kept.
        assert_eq!(t.names(ip("10.0.0.2"), ip("198.51.100.9"), now).len(), 1);
        assert!(t.names(ip("10.0.0.2"), ip("198.51.100.0"), now).is_empty());
    }
}
