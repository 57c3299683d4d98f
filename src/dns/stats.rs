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
    /// Each lookup outcome's counter, resolved once: counting a lookup is
    /// one atomic add, not a label-map search under a lock.
    by_outcome: [Counter; 5],
}

/// The process's one set (the resolver is one per process too).
pub fn stats() -> &'static Stats {
    static STATS: LazyLock<Stats> = LazyLock::new(|| {
        let lookups = Family::<ResultLabels, Counter>::default();
        let by_outcome = OUTCOMES.map(|o| {
            lookups
                .get_or_create(&ResultLabels { result: o.as_str() })
                .clone()
        });
        Stats {
            lookups,
            upstream: Family::default(),
            // 1 ms to about 8 s, by 2x.
            upstream_seconds: Histogram::new((0..14).map(|i| 0.001 * f64::from(1u32 << i))),
            by_outcome,
        }
    });
    &STATS
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Hit,
    Outcome::Miss,
    Outcome::Stale,
    Outcome::Negative,
    Outcome::Failed,
];

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Negative => "negative",
            Outcome::Failed => "failed",
        }
    }
}

impl Stats {
    pub fn lookup(&self, o: Outcome) {
        self.by_outcome[o as usize].inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_counts_under_its_own_label() {
        for (i, o) in OUTCOMES.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
        let s = stats();
        let before = s.lookups.get_or_create(&ResultLabels { result: "stale" }).get();
        s.lookup(Outcome::Stale);
        assert_eq!(
            s.lookups.get_or_create(&ResultLabels { result: "stale" }).get(),
            before + 1
        );
    }
}
