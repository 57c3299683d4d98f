//! The answer cache: names to addresses (or to "no such name"), kept for
//! their TTL within the operator's bounds, and kept on past it for a while
//! (RFC 8767, serve stale) so that a resolver outage is not an egress
//! outage for names already known. Pure: the caller passes the time in, so
//! every rule is tested without waiting.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long answers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// No answer is kept for less (a TTL of 0 would send every request
    /// upstream).
    pub min_ttl: Duration,
    /// No answer is kept for more, whatever its TTL says.
    pub max_ttl: Duration,
    /// How long past its TTL an answer may still be used when the upstream
    /// fails or does not answer (0: never).
    pub stale: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            stale: DEFAULT_STALE,
        }
    }
}

/// See [`Bounds`]. One second: a TTL of 0 does not send every request of a
/// burst upstream, and a short TTL (a failover record) is still honoured.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
/// One hour, as many stub resolvers cap it.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// One hour of a resolver outage is bridged for names already known.
pub const DEFAULT_STALE: Duration = Duration::from_secs(3600);
/// The TTL an expired answer is handed on with (RFC 8767 §4: 30 s).
pub const STALE_TTL: Duration = Duration::from_secs(30);
/// Names kept at most; the least recently used goes first.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// After a refresh failed, an expired answer is served at once (without
/// waiting for the upstream again) for this long; RFC 8767 suggests 30 s.
pub const FAILURE_RECHECK: Duration = Duration::from_secs(30);
/// While one asker waits for the refresh of an expired answer, the others
/// are served it at once, for at most this long (RFC 8767's client
/// response timer, 1.8 s, is how long that one asker waits).
pub const REFRESH_WINDOW: Duration = Duration::from_millis(1800);

/// What the upstream said of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Its addresses, in the order to try them.
    Addrs(Arc<[IpAddr]>),
    /// No address: the name does not exist (`NXDOMAIN`), or has no A or
    /// AAAA record (`NODATA`).
    NoAddrs { nxdomain: bool },
}

#[derive(Debug, Clone)]
struct Entry {
    answer: Answer,
    expires: Instant,
    /// When a refresh of this expired answer last failed.
    failed: Option<Instant>,
    /// When a refresh of this expired answer was asked for.
    refreshing: Option<Instant>,
}

/// What the cache holds for a name at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Within its TTL, with the time it has left.
    Fresh(Answer, Duration),
    /// Past its TTL but within the stale bound: addresses that may be used
    /// if the upstream fails; `serve_now` says a refresh failed lately or
    /// another asker is waiting for one, so this caller need not wait.
    Stale {
        addrs: Arc<[IpAddr]>,
        serve_now: bool,
    },
    Missing,
}

/// The cache: bounded by names, least recently used evicted first.
pub struct Cache {
    entries: lru::LruCache<Box<str>, Entry>,
    bounds: Bounds,
}

impl Cache {
    pub fn new(capacity: usize, bounds: Bounds) -> Cache {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Cache {
            entries: lru::LruCache::new(capacity),
            bounds,
        }
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What is known of `name` at `now`.
    pub fn get(&mut self, name: &str, now: Instant) -> Cached {
        let stale = self.bounds.stale;
        let Some(e) = self.entries.get(name) else {
            return Cached::Missing;
        };
        if now < e.expires {
            return Cached::Fresh(e.answer.clone(), e.expires - now);
        }
        match &e.answer {
            // Only addresses are served stale: a name that did not exist
            // is asked again.
            Answer::Addrs(addrs) if now.duration_since(e.expires) <= stale => Cached::Stale {
                addrs: addrs.clone(),
                serve_now: e.failed.is_some_and(|f| now.duration_since(f) < FAILURE_RECHECK)
                    || e.refreshing
                        .is_some_and(|r| now.duration_since(r) < REFRESH_WINDOW),
            },
            _ => Cached::Missing,
        }
    }

    /// Keeps what the upstream answered for `name`, for `ttl` within the
    /// bounds (a negative answer's TTL is its SOA's, RFC 2308).
    pub fn insert(&mut self, name: &str, answer: Answer, ttl: Duration, now: Instant) {
        let ttl = ttl.clamp(self.bounds.min_ttl, self.bounds.max_ttl.max(self.bounds.min_ttl));
        let entry = Entry {
            answer,
            expires: now + ttl,
            failed: None,
            refreshing: None,
        };
        self.entries.put(name.into(), entry);
    }

    /// Notes that refreshing `name` failed at `now`: its stale answer, if it
    /// has one, is then served without waiting for the upstream.
    pub fn failed(&mut self, name: &str, now: Instant) {
        if let Some(e) = self.entries.peek_mut(name) {
            e.failed = Some(now);
        }
    }

    /// Notes that an asker waits for `name`'s refresh from `now`: the others
    /// are served the stale answer meanwhile.
    pub fn refreshing(&mut self, name: &str, now: Instant) {
        if let Some(e) = self.entries.peek_mut(name) {
            e.refreshing = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(s: &[&str]) -> Answer {
        Answer::Addrs(s.iter().map(|a| a.parse().unwrap()).collect())
    }

    fn bounds() -> Bounds {
        Bounds {
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(100),
            stale: Duration::from_secs(50),
        }
    }

    #[test]
    fn answers_live_for_their_ttl_within_the_bounds() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(10, bounds());
        c.insert("a.test", addrs(&["192.0.2.1"]), s(10), t0);
        assert_eq!(
            c.get("a.test", t0 + s(9)),
            Cached::Fresh(addrs(&["192.0.2.1"]), s(1)),
            "with the TTL it has left"
        );
        assert!(matches!(c.get("a.test", t0 + s(10)), Cached::Stale { .. }));
        // A TTL of 0 is held for the minimum; a day for the maximum.
        c.insert("zero.test", addrs(&["192.0.2.2"]), s(0), t0);
        assert!(matches!(c.get("zero.test", t0 + s(1)), Cached::Fresh(..)));
        assert!(matches!(c.get("zero.test", t0 + s(2)), Cached::Stale { .. }));
        c.insert("day.test", addrs(&["192.0.2.3"]), s(86_400), t0);
        assert!(matches!(c.get("day.test", t0 + s(99)), Cached::Fresh(..)));
        assert!(matches!(c.get("day.test", t0 + s(100)), Cached::Stale { .. }));
        assert_eq!(c.get("other.test", t0), Cached::Missing);
    }

    #[test]
    fn stale_addresses_are_served_within_the_stale_bound_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(10, bounds());
        c.insert("a.test", addrs(&["192.0.2.1"]), s(10), t0);
        let Cached::Stale { addrs: a, serve_now } = c.get("a.test", t0 + s(60)) else {
            panic!("stale within the bound");
        };
        assert_eq!(&*a, &["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert!(!serve_now, "no refresh failed or waited for yet");
        c.failed("a.test", t0 + s(20));
        assert!(matches!(
            c.get("a.test", t0 + s(49)),
            Cached::Stale { serve_now: true, .. }
        ));
        // The failure is rechecked after a while.
        assert!(matches!(
            c.get("a.test", t0 + s(51)),
            Cached::Stale { serve_now: false, .. }
        ));
        // While one asker waits for a refresh, the others are served.
        c.refreshing("a.test", t0 + s(52));
        assert!(matches!(
            c.get("a.test", t0 + s(53)),
            Cached::Stale { serve_now: true, .. }
        ));
        assert!(matches!(
            c.get("a.test", t0 + s(54)),
            Cached::Stale { serve_now: false, .. }
        ));
        assert_eq!(
            c.get("a.test", t0 + s(61)),
            Cached::Missing,
            "past the stale bound"
        );
    }

    #[test]
    fn negative_answers_are_cached_but_never_served_stale() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(10, bounds());
        c.insert("nx.test", Answer::NoAddrs { nxdomain: true }, s(5), t0);
        assert_eq!(
            c.get("nx.test", t0 + s(4)),
            Cached::Fresh(Answer::NoAddrs { nxdomain: true }, s(1))
        );
        assert_eq!(c.get("nx.test", t0 + s(6)), Cached::Missing);
    }

    #[test]
    fn the_least_recently_used_name_goes_first() {
        let t0 = Instant::now();
        let mut c = Cache::new(2, bounds());
        let ttl = Duration::from_secs(10);
        c.insert("a.test", addrs(&["192.0.2.1"]), ttl, t0);
        c.insert("b.test", addrs(&["192.0.2.2"]), ttl, t0);
        assert!(matches!(c.get("a.test", t0), Cached::Fresh(..)));
        c.insert("c.test", addrs(&["192.0.2.3"]), ttl, t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("b.test", t0), Cached::Missing);
        assert!(matches!(c.get("a.test", t0), Cached::Fresh(..)));
    }
}
