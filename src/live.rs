//! What the admin listener's live view shows: the latest decisions in a
//! bounded ring, and the destinations refused (or that report mode would
//! refuse) since start, with the rules `report` would suggest for them.
//!
//! Memory is bounded whatever the load: [`RING`] decisions, [`MAX_DESTS`]
//! refused destinations (more are counted, not kept), a few clients, users
//! and examples each. Query strings never reach it (the pipeline records
//! paths only) and paths are cut at [`MAX_PATH`] bytes.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::access::event::{AccessSink, Event, EventKind, Why};
use crate::audit::{self, logs, DeniedHost, Observation};
use crate::policy::{Kind, Reason, Verdict};
use crate::shard::{lock, Sharded};

/// Decisions kept for the "latest decisions" list and the `since` cursor.
pub const RING: usize = 10_000;
/// Refused destinations (host and port) kept with their counts.
pub const MAX_DESTS: usize = 10_000;
/// Longest path kept, in bytes.
pub const MAX_PATH: usize = 256;
/// Decisions one answer carries at most (the newest of those asked for).
pub const MAX_ANSWER: usize = 1_000;
const MAX_WHO: usize = 16;

/// One decision as the live view lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: u64,
    pub time_ms: u64,
    pub client: IpAddr,
    pub user: Option<Arc<str>>,
    pub kind: &'static str,
    #[serde(serialize_with = "method_str")]
    pub method: http::Method,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub decision: &'static str,
    pub reason: &'static str,
    pub rule: Option<Arc<str>>,
    pub status: u16,
    /// Where the name's addresses came from (`cache`, `upstream`, `stale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<&'static str>,
}

fn method_str<S: serde::Serializer>(m: &http::Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// A refused destination, since start.
#[derive(Debug, Clone)]
struct Dest {
    counts: DeniedHost,
    port: u16,
    first_ms: u64,
    last_ms: u64,
    clients: BTreeSet<IpAddr>,
    users: BTreeSet<Arc<str>>,
}

/// One worker thread's share: recorded under a lock no other worker takes
/// (only a reader of `/decisions` does), so that recording costs no
/// cross-core contention and its strings are freed where they were made.
#[derive(Default)]
struct Shard {
    ring: VecDeque<Entry>,
    dests: hashbrown::HashMap<(String, u16), Dest, RandomState>,
    /// Refusals to destinations beyond [`MAX_DESTS`].
    dests_dropped: u64,
    decisions: u64,
    refused: u64,
    /// The refused target as `report` reads it, reused between refusals.
    target: String,
}

/// A destination key borrowed, to look one up without copying its host:
/// hashed as `(String, u16)` is.
struct DestRef<'a>(&'a str, u16);

impl Hash for DestRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.hash(h);
        self.1.hash(h);
    }
}

impl hashbrown::Equivalent<(String, u16)> for DestRef<'_> {
    fn equivalent(&self, k: &(String, u16)) -> bool {
        self.1 == k.1 && self.0 == k.0
    }
}

/// Who was refused, and when.
struct Who<'a> {
    time_ms: u64,
    client: IpAddr,
    user: Option<&'a Arc<str>>,
}

impl Shard {
    /// Counts a refusal of `host:port` (`target` as `report` would read it).
    fn refuse(&mut self, host: &str, port: u16, kind: Kind, reason: Reason, target: &str, who: Who) {
        // A destination seen before, refused for other than its path, is
        // counted without parsing its target again: the common case.
        if reason != Reason::PathNotAllowed {
            if let Some(d) = self.dests.get_mut(&DestRef(host, port)) {
                d.counts.count(port, kind, reason, target);
                d.seen(&who);
                self.refused += 1;
                return;
            }
        }
        let Some(o) = Observation::parse(target) else {
            return;
        };
        self.refused += 1;
        let key = (o.candidate.host.to_string(), o.candidate.port);
        let room = self.dests.len() < MAX_DESTS;
        match self.dests.get_mut(&key) {
            Some(d) => d.note(&o, reason, &who),
            None if room => {
                let mut d = Dest::new(&key.0, key.1, who.time_ms);
                d.note(&o, reason, &who);
                self.dests.insert(key, d);
            }
            None => self.dests_dropped += 1,
        }
    }

    /// Counts a name the DNS listener refused: a destination with no port
    /// yet (0), which the app never reached.
    fn refuse_lookup(&mut self, name: &str, reason: Reason, target: &str, who: Who) {
        self.refused += 1;
        if !self.dests.contains_key(&DestRef(name, 0)) {
            if self.dests.len() >= MAX_DESTS {
                self.dests_dropped += 1;
                return;
            }
            self.dests
                .insert((name.to_string(), 0), Dest::new(name, 0, who.time_ms));
        }
        if let Some(d) = self.dests.get_mut(&DestRef(name, 0)) {
            d.counts.count(0, Kind::Connect, reason, target);
            d.seen(&who);
        }
    }
}

pub struct Live {
    started_ms: u64,
    /// The last decision number given out: a global order for the cursor.
    seq: AtomicU64,
    shards: Sharded<Shard>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Default for Live {
    fn default() -> Live {
        Live {
            started_ms: now_ms(),
            seq: AtomicU64::new(0),
            shards: Sharded::default(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `path` cut to at most [`MAX_PATH`] bytes, on a character boundary.
fn cut(path: &str) -> &str {
    let mut end = path.len().min(MAX_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// `text` in `buf`'s allocation (a ring slot's, once the ring is full): the
/// event is shared by every sink, so the live view copies what it keeps,
/// and in the steady state the copy allocates nothing.
fn reuse(buf: Option<String>, text: &str) -> String {
    let mut s = buf.unwrap_or_default();
    s.clear();
    s.push_str(text);
    s
}

/// The live view keeps every finished event.
impl AccessSink for Live {
    fn record(&self, e: &Event) {
        Live::record(self, e)
    }
}

impl Live {
    /// Records one finished event.
    pub fn record(&self, f: &Event) {
        let time_ms = now_ms();
        let path = f.path.as_deref().map(cut);
        // A refusal the policy made (report mode's would-deny included):
        // counted per destination, read as `report` reads its log line.
        let refused = matches!(f.verdict, Verdict::Deny | Verdict::WouldDeny)
            .then(|| f.reason())
            .flatten();
        let kind = logs::target_kind(f.kind, path.is_some());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.shards.with(|g| {
            g.decisions += 1;
            if let Some(reason) = refused {
                let who = Who {
                    time_ms,
                    client: f.client.ip(),
                    user: f.user.as_ref(),
                };
                // Written into the shard's buffer: no allocation per refusal.
                let mut target = std::mem::take(&mut g.target);
                target.clear();
                if f.kind == EventKind::Dns {
                    logs::write_lookup(&mut target, f.method.as_str(), &f.host);
                    g.refuse_lookup(&f.host, reason, &target, who);
                } else {
                    logs::write_event_target(&mut target, f.kind, &f.host, f.port, path);
                    g.refuse(&f.host, f.port, kind, reason, &target, who);
                }
                g.target = target;
            }
            let old = if g.ring.len() == RING {
                g.ring.pop_front()
            } else {
                None
            };
            let (old_host, old_path) = old.map_or((None, None), |o| (Some(o.host), o.path));
            g.ring.push_back(Entry {
                seq,
                time_ms,
                client: f.client.ip(),
                user: f.user.clone(),
                kind: f.kind.as_str(),
                method: f.method.clone(),
                host: reuse(old_host, &f.host),
                port: f.port,
                path: path.map(|p| reuse(old_path, p)),
                decision: f.verdict.as_str(),
                reason: f.why.map_or("", Why::as_str),
                rule: f.rule.clone(),
                status: f.status,
                dns: f.dns.map(crate::dns::Source::as_str),
            });
        })
    }

    /// The decisions after `since` (at most [`MAX_ANSWER`], the newest),
    /// the refused destinations by requests, and the suggested rules.
    pub fn snapshot(&self, since: u64) -> Snapshot {
        let shards = self.shards.shards();
        let next = self.seq.load(Ordering::Relaxed);
        let mut ring: Vec<Entry> = Vec::new();
        let mut dests: HashMap<(String, u16), Dest> = HashMap::new();
        let (mut decisions_total, mut refused_total, mut destinations_dropped) = (0, 0, 0);
        // The oldest decision every shard still holds: below it, some
        // shard's decisions are gone.
        let mut oldest = 0;
        for s in &shards {
            let g = lock(s);
            decisions_total += g.decisions;
            refused_total += g.refused;
            destinations_dropped += g.dests_dropped;
            if g.ring.len() == RING {
                oldest = oldest.max(g.ring.front().map_or(0, |e| e.seq));
            }
            ring.extend(g.ring.iter().filter(|e| e.seq > since && e.seq <= next).cloned());
            for (k, d) in &g.dests {
                let room = dests.len() < MAX_DESTS;
                match dests.get_mut(k) {
                    Some(m) => m.merge(d),
                    None if room => {
                        dests.insert(k.clone(), d.clone());
                    }
                    None => destinations_dropped += d.counts.requests,
                }
            }
        }
        ring.sort_unstable_by_key(|e| e.seq);
        let keep = ring.len().saturating_sub(MAX_ANSWER);
        let decisions: Vec<Entry> = ring.split_off(keep);
        let mut denied: Vec<Denied> = dests
            .values()
            .map(|d| Denied {
                host: d.counts.host.clone(),
                port: d.port,
                requests: d.counts.requests,
                first_seen_ms: d.first_ms,
                last_seen_ms: d.last_ms,
                reasons: d.counts.reasons.iter().copied().collect(),
                clients: d.clients.iter().copied().collect(),
                users: d.users.iter().cloned().collect(),
                examples: d.counts.examples.clone(),
            })
            .collect();
        denied.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.host.cmp(&b.host))
                .then(a.port.cmp(&b.port))
        });
        // The same engine as `report`: one record per host, all its ports.
        let mut by_host: HashMap<&str, DeniedHost> = HashMap::new();
        for d in dests.values() {
            by_host
                .entry(d.counts.host.as_str())
                .and_modify(|h| h.merge(&d.counts))
                .or_insert_with(|| d.counts.clone());
        }
        let mut hosts: Vec<DeniedHost> = by_host.into_values().collect();
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        let suggestions = audit::suggest(&hosts)
            .into_iter()
            .map(|s| Suggested {
                toml: s.toml(),
                rule: s.rule,
                requests: s.requests,
                hosts: s.hosts,
                background: s.background,
            })
            .collect();
        Snapshot {
            since,
            next,
            gap: since < oldest,
            started_at_ms: self.started_ms,
            now_ms: now_ms(),
            decisions_total,
            refused_total,
            destinations_dropped,
            decisions,
            denied,
            suggestions,
        }
    }
}

impl Dest {
    fn new(host: &str, port: u16, time_ms: u64) -> Dest {
        Dest {
            counts: DeniedHost::new(host.to_string()),
            port,
            first_ms: time_ms,
            last_ms: time_ms,
            clients: BTreeSet::new(),
            users: BTreeSet::new(),
        }
    }

    /// Adds another shard's counts for the same destination.
    fn merge(&mut self, other: &Dest) {
        self.counts.merge(&other.counts);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        for c in &other.clients {
            if self.clients.len() < MAX_WHO {
                self.clients.insert(*c);
            }
        }
        for u in &other.users {
            if self.users.len() < MAX_WHO {
                self.users.insert(u.clone());
            }
        }
    }

    fn note(&mut self, o: &Observation, reason: Reason, who: &Who) {
        self.counts.note(&o.candidate, reason, &o.target);
        self.seen(who);
    }

    fn seen(&mut self, who: &Who) {
        self.last_ms = who.time_ms;
        if self.clients.len() < MAX_WHO {
            self.clients.insert(who.client);
        }
        if let Some(u) = who.user {
            if self.users.len() < MAX_WHO && !self.users.contains(u) {
                self.users.insert(u.clone());
            }
        }
    }
}

/// A refused destination as `/decisions` lists it.
#[derive(Debug, Serialize)]
pub struct Denied {
    pub host: String,
    pub port: u16,
    pub requests: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub reasons: Vec<&'static str>,
    pub clients: Vec<IpAddr>,
    pub users: Vec<Arc<str>>,
    pub examples: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Suggested {
    /// The browser's own background hosts only: not pre-selected.
    pub background: bool,
    pub rule: String,
    /// The rule as an entry of a TOML `allow` list.
    pub toml: String,
    pub requests: u64,
    pub hosts: Vec<String>,
}

/// One answer of `/decisions`.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub since: u64,
    /// The cursor to pass as `since` next time.
    pub next: u64,
    /// Decisions after `since` were dropped from the ring before this answer.
    pub gap: bool,
    pub started_at_ms: u64,
    pub now_ms: u64,
    pub decisions_total: u64,
    pub refused_total: u64,
    pub destinations_dropped: u64,
    pub decisions: Vec<Entry>,
    pub denied: Vec<Denied>,
    pub suggestions: Vec<Suggested>,
}

#[cfg(test)]
mod tests;
