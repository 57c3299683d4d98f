//! The resolver's counters, registered in `/metrics` by [`crate::metrics`]:
//! lookups by where their answer came from, upstream questions by outcome,
//! and how long the upstream took.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::upstream::{Reply, UpstreamError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache, within the TTL.
    Hit,
    /// From the upstream.
    Miss,
    /// From the cache, past the TTL, the upstream failing or late.
    Stale,
    /// No such name, or no address (cached or not).
    Negative,
    /// Not answered: the upstream failed or was late, nothing to fall back on.
    Failed,
}

pub struct Stats {
    pub lookups: Family<ResultLabels, Counter>,
    pub upstream: Family<ResultLabels, Counter>,
    pub upstream_seconds: Histogram,
}

/// The process's one set (the resolver is one per process too).
pub fn stats() -> &'static Stats {
    static STATS: LazyLock<Stats> = LazyLock::new(|| Stats {
        lookups: Family::default(),
        upstream: Family::default(),
        // 1 ms to about 8 s, by 2x.
        upstream_seconds: Histogram::new((0..14).map(|i| 0.001 * f64::from(1u32 << i))),
    });
    &STATS
}

impl Stats {
    pub fn lookup(&self, o: Outcome) {
        let result = match o {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Negative => "negative",
            Outcome::Failed => "failed",
        };
        self.lookups.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn upstream(&self, r: &Result<Reply, UpstreamError>, took: Duration) {
        let result = match r {
            Ok(Reply {
                answer: super::cache::Answer::Addrs(_),
                ..
            }) => "answer",
            Ok(_) => "negative",
            Err(UpstreamError::Timeout) => "timeout",
            Err(UpstreamError::Failed(_)) => "error",
        };
        self.upstream.get_or_create(&ResultLabels { result }).inc();
        self.upstream_seconds.observe(took.as_secs_f64());
    }
}
