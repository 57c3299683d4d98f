//! Prometheus metrics (prometheus-client), served by the admin listener.
//! Every label has a bounded set of values: methods outside the standard
//! set count as `OTHER`, rules are the policy's ids.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

use crate::shard::{lock, Sharded};

use crate::access::event::{AccessSink, ErrorClass, Event, Party, Why};
use crate::policy::Verdict;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kind: &'static str,
    pub decision: &'static str,
    pub method: &'static str,
    /// The policy's own rule id, shared: no allocation per request.
    pub rule: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub version: String,
    pub origin: String,
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabels {
    pub via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    // Counted through `record` only, via each worker's pending counts.
    requests: Family<RequestLabels, Counter>,
    denials: Family<ReasonLabels, Counter>,
    upstream_errors: Family<ClassLabels, Counter>,
    pub tunnels_active: Gauge,
    bytes: Family<DirectionLabels, Counter>,
    decision_seconds: DecisionSeconds,
    /// Counts not yet moved into the families, per worker thread.
    pending: Sharded<Pending>,
    pub policy: Family<PolicyLabels, Gauge>,
    pub policy_loaded: Gauge<f64, AtomicU64>,
    pub reloads: Family<ResultLabels, Counter>,
    pub rule_expiry: Family<RuleLabels, Gauge<f64, AtomicU64>>,
    pub inspection_leaves: Family<ResultLabels, Counter>,
    pub inspection_rejected: Counter,
    routed: Family<ViaLabels, Counter>,
    /// The `rule` label of decisions no rule made.
    no_rule: Arc<str>,
}

/// Distinct request label sets a worker holds before it moves them into
/// the families itself.
const MAX_PENDING: usize = 4096;

/// Kind, decision, method and the address of the rule's id.
type PendingKey = (&'static str, &'static str, &'static str, usize);

/// One worker's counts since `/metrics` was last read. Counting here
/// touches no lock or cache line that another core writes; the families'
/// shared lock and counters cost every request a few contended atomics.
/// Fx hashing, not SipHash: every key is a fixed label or a rule's
/// address, none is chosen by a client.
#[derive(Default)]
struct Pending {
    /// By kind, decision, method and the rule's address (its `Arc` kept).
    requests: FxHashMap<PendingKey, (Arc<str>, u64)>,
    denials: FxHashMap<&'static str, u64>,
    upstream_errors: FxHashMap<&'static str, u64>,
    routed: FxHashMap<&'static str, u64>,
    bytes_up: u64,
    bytes_down: u64,
}

/// `egressd_decision_seconds`: a histogram per worker thread, summed when
/// read (prometheus-client's takes a lock every observation shares).
#[derive(Clone, Default)]
struct DecisionSeconds {
    shards: Arc<Sharded<Buckets>>,
}

impl std::fmt::Debug for DecisionSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionSeconds").finish_non_exhaustive()
    }
}

/// Upper bounds of [`DecisionSeconds`]' buckets: 100 ns to 26 ms, by 4x,
/// then unbounded. A table, since every request observes one value
/// (`exponential_buckets` computes a `powf` per bound per call).
const DECISION_BOUNDS: [f64; 11] = {
    let mut b = [f64::MAX; 11];
    let mut i = 0;
    let mut v = 1e-7;
    while i < 10 {
        b[i] = v;
        v *= 4.0;
        i += 1;
    }
    b
};

#[derive(Default)]
struct Buckets {
    sum: f64,
    count: u64,
    /// Observations per bucket (not cumulative), the last one unbounded.
    counts: [u64; 11],
}

impl Buckets {
    fn observe(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        let i = DECISION_BOUNDS.iter().position(|&b| v <= b).unwrap_or(10);
        self.counts[i] += 1;
    }
}

impl EncodeMetric for DecisionSeconds {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut all = Buckets::default();
        for shard in self.shards.shards() {
            let b = lock(&shard);
            all.sum += b.sum;
            all.count += b.count;
            for (t, n) in all.counts.iter_mut().zip(b.counts) {
                *t += n;
            }
        }
        let buckets: Vec<(f64, u64)> = DECISION_BOUNDS.into_iter().zip(all.counts).collect();
        encoder.encode_histogram::<NoLabelSet>(all.sum, all.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The metrics count every finished event.
impl AccessSink for Metrics {
    fn record(&self, e: &Event) {
        Metrics::record(
            self,
            &Sample {
                kind: e.kind.as_str(),
                verdict: e.verdict,
                method: &e.method,
                rule: e.rule.as_ref(),
                reason: e.why.map(Why::as_str),
                error: e.error,
                bytes_up: e.bytes_up,
                bytes_down: e.bytes_down,
                via: e.via.map(crate::policy::Via::as_str),
            },
        );
    }
}

/// One finished request or tunnel, as the metrics count it.
pub struct Sample<'a> {
    pub kind: &'static str,
    pub verdict: Verdict,
    pub method: &'a http::Method,
    pub rule: Option<&'a Arc<str>>,
    pub reason: Option<&'static str>,
    pub error: Option<ErrorClass>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Which way an allowed request left (direct, or through the parent).
    pub via: Option<&'static str>,
}

fn method_label(m: &http::Method) -> &'static str {
    use http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        M::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("egressd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests and tunnels, by kind, decision, method and rule",
            requests.clone(),
        );
        let denials = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "denials",
            "Denied or would-deny decisions, by reason",
            denials.clone(),
        );
        let upstream_errors = Family::<ClassLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures, by class",
            upstream_errors.clone(),
        );
        let tunnels_active = Gauge::default();
        registry.register(
            "tunnels_active",
            "Open CONNECT and upgraded tunnels",
            tunnels_active.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register("bytes", "Bytes relayed (up: client to upstream)", bytes.clone());
        let decision_seconds = DecisionSeconds::default();
        registry.register(
            "decision_seconds",
            "Time to decide a request against the policy",
            decision_seconds.clone(),
        );
        let policy = Family::<PolicyLabels, Gauge>::default();
        registry.register("policy", "The loaded policy (value 1)", policy.clone());
        let policy_loaded = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "policy_loaded_timestamp_seconds",
            "When the loaded policy was loaded (Unix time)",
            policy_loaded.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads, by result (ok, error)",
            reloads.clone(),
        );
        let rule_expiry = Family::<RuleLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "rule_expiry_timestamp_seconds",
            "When each rule with `expires` stops matching (Unix time, end of its last day)",
            rule_expiry.clone(),
        );
        let inspection_leaves = Family::<ResultLabels, Counter>::default();
        registry.register(
            "inspection_leaves",
            "Leaf certificates for inspected tunnels: signed, or taken from the cache",
            inspection_leaves.clone(),
        );
        let inspection_rejected = Counter::default();
        registry.register(
            "inspection_client_rejections",
            "Inspected tunnels whose client refused egressd's certificate",
            inspection_rejected.clone(),
        );
        let dns = crate::dns::stats::stats();
        registry.register(
            "dns_lookups",
            "Names resolved, by where the answer came from: hit (cache), miss (upstream), stale (expired answer, upstream failing), negative, failed",
            dns.lookups.clone(),
        );
        registry.register(
            "dns_upstream_queries",
            "Questions sent to the DNS servers (A and AAAA together), by outcome: answer, negative, timeout, error",
            dns.upstream.clone(),
        );
        registry.register(
            "dns_upstream_seconds",
            "How long the DNS servers took to answer a question (A and AAAA together)",
            dns.upstream_seconds.clone(),
        );
        let routed = Family::<ViaLabels, Counter>::default();
        registry.register(
            "routed",
            "Allowed requests and tunnels by the way they left: direct, or through the parent proxy",
            routed.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because their destination could not keep up or failed",
            crate::logsink::dropped().clone(),
        );
        // Label sets known up front exist from the start, at 0, so that an
        // alert on one (policy_reloads_total{result="error"}) has a series
        // to watch before the first such event.
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        for result in ["signed", "cached"] {
            let _ = inspection_leaves.get_or_create(&ResultLabels { result });
        }
        for direction in ["up", "down"] {
            let _ = bytes.get_or_create(&DirectionLabels { direction });
        }
        for via in ["direct", "parent"] {
            let _ = routed.get_or_create(&ViaLabels { via });
        }
        for c in ErrorClass::ALL.iter().filter(|c| c.party() == Party::Upstream) {
            let _ = upstream_errors.get_or_create(&ClassLabels { class: c.as_str() });
        }
        Metrics {
            routed,
            registry,
            rule_expiry,
            inspection_leaves,
            inspection_rejected,
            requests,
            denials,
            upstream_errors,
            tunnels_active,
            bytes,
            decision_seconds,
            pending: Sharded::default(),
            policy,
            policy_loaded,
            reloads,
            no_rule: Arc::from(""),
        }
    }

    /// Records a finished request or tunnel: into this worker's pending
    /// counts, which `/metrics` moves into the families.
    pub fn record(&self, a: &Sample) {
        let rule = a.rule.unwrap_or(&self.no_rule);
        let full = self.pending.with(|p| {
            let key = (
                a.kind,
                a.verdict.as_str(),
                method_label(a.method),
                Arc::as_ptr(rule) as *const u8 as usize,
            );
            // The entry holds the rule's Arc: while it exists its address
            // names that rule and no other.
            p.requests.entry(key).or_insert_with(|| (rule.clone(), 0)).1 += 1;
            if let (false, Some(reason)) = (a.verdict == Verdict::Allow, a.reason) {
                *p.denials.entry(reason).or_default() += 1;
            }
            if let Some(class) = a.error.filter(|c| c.party() == Party::Upstream) {
                *p.upstream_errors.entry(class.as_str()).or_default() += 1;
            }
            if let Some(via) = a.via {
                *p.routed.entry(via).or_default() += 1;
            }
            p.bytes_up += a.bytes_up;
            p.bytes_down += a.bytes_down;
            p.requests.len() >= MAX_PENDING
        });
        // Unread for long, over many reloads' rules: moved now, to bound
        // the memory (the families keep one counter per label set anyway).
        if full {
            self.flush();
        }
    }

    /// A decision's time, for `egressd_decision_seconds`.
    pub fn observe_decision(&self, seconds: f64) {
        self.decision_seconds.shards.with(|h| h.observe(seconds));
    }

    /// Moves every worker's pending counts into the families.
    fn flush(&self) {
        for shard in self.pending.shards() {
            let p = std::mem::take(&mut *lock(&shard));
            for ((kind, decision, method, _), (rule, n)) in p.requests {
                self.requests
                    .get_or_create(&RequestLabels {
                        kind,
                        decision,
                        method,
                        rule,
                    })
                    .inc_by(n);
            }
            for (reason, n) in p.denials {
                self.denials.get_or_create(&ReasonLabels { reason }).inc_by(n);
            }
            for (class, n) in p.upstream_errors {
                self.upstream_errors
                    .get_or_create(&ClassLabels { class })
                    .inc_by(n);
            }
            for (via, n) in p.routed {
                self.routed.get_or_create(&ViaLabels { via }).inc_by(n);
            }
            for (direction, n) in [("up", p.bytes_up), ("down", p.bytes_down)] {
                if n > 0 {
                    self.bytes.get_or_create(&DirectionLabels { direction }).inc_by(n);
                }
            }
        }
    }

    /// A leaf certificate used for an inspected tunnel.
    pub fn count_leaf(&self, signed: bool) {
        let result = if signed { "signed" } else { "cached" };
        self.inspection_leaves
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The expiry times of the loaded policy's rules (and no others).
    pub fn set_rule_expiries(&self, rules: impl Iterator<Item = (Arc<str>, u64)>) {
        self.rule_expiry.clear();
        for (rule, at) in rules {
            self.rule_expiry
                .get_or_create(&RuleLabels { rule })
                .set(at as f64);
        }
    }

    /// Marks `version` as the loaded policy (and no other).
    pub fn set_policy(&self, version: &str, origin: &str, mode: &str, loaded_unix: f64) {
        self.policy.clear();
        self.policy
            .get_or_create(&PolicyLabels {
                version: version.to_string(),
                origin: origin.to_string(),
                mode: mode.to_string(),
            })
            .set(1);
        self.policy_loaded.set(loaded_unix);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.flush();
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(rule: &'a Arc<str>, verdict: Verdict) -> Sample<'a> {
        Sample {
            kind: "http",
            verdict,
            method: &http::Method::GET,
            rule: Some(rule),
            reason: (verdict != Verdict::Allow).then_some("no_matching_rule"),
            error: None,
            bytes_up: 3,
            bytes_down: 5,
            via: None,
        }
    }

    #[test]
    fn known_label_sets_exist_before_their_first_event() {
        let text = Metrics::new().encode();
        for line in [
            r#"egressd_policy_reloads_total{result="error"} 0"#,
            r#"egressd_policy_reloads_total{result="ok"} 0"#,
            r#"egressd_upstream_errors_total{class="connection_refused"} 0"#,
            r#"egressd_bytes_total{direction="up"} 0"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn counts_from_every_worker_add_up_across_reads() {
        let m = Arc::new(Metrics::new());
        // The same rule id from two policy versions: one label set.
        let (old, new): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("a"));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (m, old, new) = (m.clone(), old.clone(), new.clone());
                std::thread::spawn(move || {
                    m.record(&sample(&old, Verdict::Allow));
                    m.record(&sample(&new, Verdict::Allow));
                    m.record(&sample(&new, Verdict::Deny));
                    m.observe_decision(1e-7);
                    m.observe_decision(1.0);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let first = m.encode();
        for line in [
            r#"egressd_requests_total{kind="http",decision="allow",method="GET",rule="a"} 6"#,
            r#"egressd_denials_total{reason="no_matching_rule"} 3"#,
            r#"egressd_bytes_total{direction="down"} 45"#,
            "egressd_decision_seconds_count 6",
            r#"egressd_decision_seconds_bucket{le="+Inf"} 6"#,
            // Per bucket counts are cumulative in the exposition.
            r#"egressd_decision_seconds_bucket{le="0.0262144"} 3"#,
        ] {
            assert!(first.contains(line), "{line} not in {first}");
        }
        // Counted after a read: added to what the families hold.
        m.record(&sample(&new, Verdict::Deny));
        let second = m.encode();
        assert!(
            second.contains(r#"egressd_requests_total{kind="http",decision="deny",method="GET",rule="a"} 4"#),
            "{second}"
        );
        assert!(second.contains("egressd_decision_seconds_count 6"), "{second}");
    }
}
