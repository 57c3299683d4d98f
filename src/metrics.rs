//! Prometheus metrics (prometheus-client), served by the admin listener.
//! Every label has a bounded set of values: methods outside the standard
//! set count as `OTHER`, rules are the policy's ids.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::policy::Verdict;
use crate::proxy::respond::{ErrorClass, Party};

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
    pub requests: Family<RequestLabels, Counter>,
    pub denials: Family<ReasonLabels, Counter>,
    pub upstream_errors: Family<ClassLabels, Counter>,
    pub tunnels_active: Gauge,
    pub bytes: Family<DirectionLabels, Counter>,
    pub decision_seconds: Histogram,
    pub policy: Family<PolicyLabels, Gauge>,
    pub policy_loaded: Gauge<f64, AtomicU64>,
    pub reloads: Family<ResultLabels, Counter>,
    pub rule_expiry: Family<RuleLabels, Gauge<f64, AtomicU64>>,
    pub inspection_leaves: Family<ResultLabels, Counter>,
    pub inspection_rejected: Counter,
    pub routed: Family<ViaLabels, Counter>,
    /// The `rule` label of decisions no rule made.
    no_rule: Arc<str>,
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
        let decision_seconds = Histogram::new(exponential_buckets(1e-7, 4.0, 10));
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
            policy,
            policy_loaded,
            reloads,
            no_rule: Arc::from(""),
        }
    }

    /// Records a finished request or tunnel.
    pub fn record(&self, a: &Sample) {
        self.requests
            .get_or_create(&RequestLabels {
                kind: a.kind,
                decision: a.verdict.as_str(),
                method: method_label(a.method),
                rule: a.rule.cloned().unwrap_or_else(|| self.no_rule.clone()),
            })
            .inc();
        if let (false, Some(reason)) = (a.verdict == Verdict::Allow, a.reason) {
            self.denials.get_or_create(&ReasonLabels { reason }).inc();
        }
        if let Some(class) = a.error.filter(|c| c.party() == Party::Upstream) {
            self.upstream_errors
                .get_or_create(&ClassLabels {
                    class: class.as_str(),
                })
                .inc();
        }
        if let Some(via) = a.via {
            self.routed.get_or_create(&ViaLabels { via }).inc();
        }
        if a.bytes_up > 0 {
            self.bytes
                .get_or_create(&DirectionLabels { direction: "up" })
                .inc_by(a.bytes_up);
        }
        if a.bytes_down > 0 {
            self.bytes
                .get_or_create(&DirectionLabels { direction: "down" })
                .inc_by(a.bytes_down);
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
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}
