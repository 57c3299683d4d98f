//! Decision latency of the compiled matcher, against a baseline that tests
//! every rule in turn with globset.
//!
//! Run: `cargo bench --bench matcher` (add `-- --quick` for a short run).
//! Results are recorded in benches/README.md.
//!
//! Also prints, once per policy size, the compile time and the peak memory
//! allocated while compiling (measured with a counting allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use egressd::policy::{Candidate, Policy};
use egressd::target::parse_target;
use globset::{Glob, GlobMatcher};

// === counting allocator ===

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// === generated policies ===

/// A deterministic policy of `n` rules: 60% exact hosts, 20% wildcard zones,
/// 10% host+path, 10% CIDRs.
fn generated_policy(n: usize) -> String {
    let mut s = String::with_capacity(n * 48);
    s.push_str("path_rules_on_connect = \"allow\"\nallow = [\n");
    for i in 0..n {
        match i % 10 {
            0..=5 => s.push_str(&format!("  \"api{i}.svc{}.example{}.com\",\n", i % 97, i % 13)),
            6 | 7 => s.push_str(&format!("  \"*.zone{i}.example{}.net\",\n", i % 13)),
            8 => s.push_str(&format!("  \"www{i}.example{}.org/v{}/files\",\n", i % 13, i % 5)),
            _ => s.push_str(&format!(
                "  {{ cidr = \"{}.{}.{}.0/24\", ports = [443] }},\n",
                11 + (i >> 16) % 200,
                (i >> 8) % 256,
                i % 256
            )),
        }
    }
    s.push_str("]\n");
    s
}

/// Requests for a generated policy: hits of each kind, and misses.
fn generated_requests(n: usize) -> Vec<(&'static str, String)> {
    let i = n / 2 / 10 * 10; // a rule in the middle of the file
    vec![
        (
            "hit-exact",
            format!("CONNECT api{i}.svc{}.example{}.com:443", i % 97, i % 13),
        ),
        (
            "hit-wildcard",
            format!("CONNECT a.b.zone{}.example{}.net:443", i + 6, (i + 6) % 13),
        ),
        (
            "hit-path",
            format!(
                "https://www{}.example{}.org/v{}/files/x.bin",
                i + 8,
                (i + 8) % 13,
                (i + 8) % 5
            ),
        ),
        (
            "hit-cidr",
            format!(
                "CONNECT {}.{}.{}.7:443",
                11 + ((i + 9) >> 16) % 200,
                ((i + 9) >> 8) % 256,
                (i + 9) % 256
            ),
        ),
        ("miss-host", "CONNECT nothing.example.invalid:443".to_string()),
        (
            "miss-deep",
            format!("https://x.y.api{i}.svc{}.example{}.com/", i % 97, i % 13),
        ),
    ]
}

fn qualtrics_requests() -> Vec<(&'static str, String)> {
    vec![
        ("hit-wildcard", "CONNECT co1.qualtrics.com:443".to_string()),
        (
            "hit-path",
            "https://www.google.com/recaptcha/api2/anchor".to_string(),
        ),
        ("hit-exact", "CONNECT js.stripe.com:443".to_string()),
        ("miss-host", "CONNECT example.com:443".to_string()),
        ("miss-path", "https://www.google.com/search".to_string()),
    ]
}

// === baseline: one globset matcher per rule, tested in turn ===

struct Linear {
    rules: Vec<(GlobMatcher, Option<GlobMatcher>)>,
}

impl Linear {
    fn new(p: &Policy) -> Linear {
        let rules = p
            .rules()
            .iter()
            .filter_map(|r| match &r.target {
                egressd::policy::RuleTarget::Host(d) => {
                    let host = match &d.host {
                        egressd::policy::HostPattern::Exact(h) => h.clone(),
                        other => format!("*.{}", other.domain()),
                    };
                    let path = match &d.path {
                        egressd::policy::PathPattern::Any => None,
                        p => Some(Glob::new(&format!("{p}{{,/**}}")).ok()?.compile_matcher()),
                    };
                    Some((Glob::new(&host).ok()?.compile_matcher(), path))
                }
                egressd::policy::RuleTarget::Cidr { .. } => None,
            })
            .collect();
        Linear { rules }
    }

    fn is_match(&self, c: &Candidate) -> bool {
        let Some(host) = c.host.as_name() else {
            return false;
        };
        let path = c.path.as_ref().map(|p| p.path.as_str());
        self.rules.iter().any(|(h, p)| {
            h.is_match(host)
                && match (p, path) {
                    (None, _) | (Some(_), None) => true,
                    (Some(p), Some(path)) => p.is_match(path),
                }
        })
    }
}

fn compile_report(name: &str, src: &str) -> Policy {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let p = Policy::from_toml(src, name).unwrap();
    let took = t.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let kept = CURRENT.load(Ordering::Relaxed) - base;
    eprintln!(
        "compile {name}: {} rules in {:.1} ms; peak {:.1} MiB allocated, {:.1} MiB kept; {} trie nodes",
        p.rules().len(),
        took.as_secs_f64() * 1e3,
        peak as f64 / (1 << 20) as f64,
        kept as f64 / (1 << 20) as f64,
        p.node_count()
    );
    p
}

/// A named policy and the labelled requests to decide against it.
type Set = (String, Policy, Vec<(&'static str, String)>);

fn bench(c: &mut Criterion) {
    let mut sets: Vec<Set> = Vec::new();
    sets.push((
        "qualtrics".into(),
        compile_report("qualtrics", egressd::DEFAULT_POLICY),
        qualtrics_requests(),
    ));
    for n in [1_000, 10_000, 100_000] {
        let src = generated_policy(n);
        let name = format!("gen{n}");
        sets.push((name.clone(), compile_report(&name, &src), generated_requests(n)));
    }

    let mut g = c.benchmark_group("decide");
    for (name, policy, reqs) in &sets {
        for (label, target) in reqs {
            let cand = parse_target(target).unwrap();
            g.bench_with_input(BenchmarkId::new(name.as_str(), label), &cand, |b, cand| {
                b.iter(|| policy.decide(black_box(cand)))
            });
        }
    }
    g.finish();

    // Normalisation of a raw request (done once per request before decide).
    let mut g = c.benchmark_group("normalise+decide");
    let (_, policy, _) = &sets[0];
    for t in [
        "CONNECT co1.qualtrics.com:443",
        "https://WWW.Google.com./recaptcha/api2/../api.js?x=1",
    ] {
        g.bench_function(t, |b| {
            b.iter(|| policy.decide(&parse_target(black_box(t)).unwrap()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("baseline-linear-globset");
    g.sample_size(20);
    for (name, policy, reqs) in &sets {
        let linear = Linear::new(policy);
        for (label, target) in reqs
            .iter()
            .filter(|(l, _)| *l == "hit-exact" || *l == "miss-host")
        {
            let cand = parse_target(target).unwrap();
            g.bench_with_input(BenchmarkId::new(name.as_str(), label), &cand, |b, cand| {
                b.iter(|| linear.is_match(black_box(cand)))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    let src = generated_policy(100_000);
    g.bench_function("gen100000", |b| {
        b.iter(|| Policy::from_toml(black_box(&src), "gen").unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
