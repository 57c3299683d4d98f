//! `egressd report`: the completeness summary from egressd's own access
//! logs, and what a candidate policy would change.

use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::{bad_input, load};
use crate::audit::render::{render, Format};
use crate::audit::Extras;
use crate::audit::{self, har, logs, Observation, Summary};
use crate::policy::{Policy, Verdict};

/// What `egressd report` was asked.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Policy the logs are judged by; `None` for the built-in policy.
    pub policy: Option<PathBuf>,
    /// Access-log files (plain or gzipped); `-` or none for stdin.
    pub logs: Vec<String>,
    pub har: Vec<PathBuf>,
    /// A second policy to compare with.
    pub candidate: Option<PathBuf>,
    pub format: Format,
    /// Exit 0 even when something would be denied.
    pub exit_zero: bool,
}

pub fn report(args: ReportOptions) -> ExitCode {
    super::errors_as_json(args.format == Format::Json);
    let policy = match load(args.policy.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let candidate = match &args.candidate {
        Some(c) => match load(Some(c)) {
            Ok(p) => Some(p),
            Err(code) => return code,
        },
        None => None,
    };
    // Each observation is decided as it is read and only counted: memory
    // grows with destinations, clients, hours and rules, not with lines.
    let sources: Vec<String> = if args.logs.is_empty() && args.har.is_empty() {
        vec!["-".into()]
    } else {
        args.logs.clone()
    };
    // Standard input on a terminal: nobody is piping a log in.
    if sources.iter().any(|s| s == "-") && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return bad_input(
            "report reads egressd's JSON access logs: give files (egressd report /var/log/egressd/access.log*) \
             or pipe them in (journalctl -u egressd -o cat | egressd report -)",
        );
    }
    let total: u64 = sources
        .iter()
        .filter_map(|s| std::fs::metadata(s).ok())
        .map(|m| m.len())
        .sum();
    let pb = super::progress(total);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tally = Tally::new(candidate.is_some());
    let read = logs::fold_lines(
        &sources,
        workers,
        &pb,
        || Tally::new(candidate.is_some()),
        |t, l| match logs::parse_line(l) {
            Some(o) => t.observe(&o, &policy, candidate.as_ref()),
            None => match logs::parse_lookup(l) {
                Some(q) => t.lookup(&q, &policy),
                // An access event with no target to judge (a malformed
                // request egressd refused) is read, not unreadable.
                None if l.contains(crate::access::TARGET) => match crate::access::Record::parse(l) {
                    Some(_) => t.undecided += 1,
                    None => t.unreadable(l),
                },
                None => {}
            },
        },
        |t| tally.merge(t),
    );
    pb.finish_and_clear();
    if let Err(e) = read {
        return bad_input(e);
    }
    for path in &args.har {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return bad_input(format!("{}: {e}", path.display())),
        };
        let r = har::for_each_request(BufReader::new(f), |req| {
            if let Some(o) = Observation::parse(&req.url).map(|o| o.with_method(&req.method)) {
                tally.observe(&o.as_connect().unwrap_or(o), &policy, candidate.as_ref());
            }
        });
        if let Err(e) = r {
            return bad_input(format!("{}: not a readable HAR file: {e}", path.display()));
        }
    }
    let Tally {
        mut summary,
        by_client,
        changes,
        unreadable,
        first_unreadable,
        undecided,
    } = tally;
    summary.unreadable = unreadable;
    let read = summary.requests + summary.lookups + undecided;
    if let Err(e) = enough_read(read, unreadable, first_unreadable) {
        return bad_input(e);
    }
    let mut extras = Extras {
        denied_by_client: by_client.into_iter().collect(),
        denied_by_hour: summary
            .denied_by_hour
            .iter()
            .map(|(h, n)| (logs::hour_label(*h), *n))
            .collect(),
        unused_rules: Vec::new(),
    };
    extras
        .denied_by_client
        .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (i, r) in policy.rules().iter().enumerate() {
        if !summary.rule_hits.contains_key(&crate::policy::RuleIdx(i as u32)) {
            extras
                .unused_rules
                .push(format!("{} ({}, line {})", r.id, r.pattern, r.line));
        }
    }
    summary.finish();
    let title = format!(
        "egressd report: policy {} ({})",
        policy.origin(),
        policy.version()
    );
    let diff = match (candidate, changes) {
        (Some(cand), Some(ch)) => Some(ch.render(&cand, args.format)),
        _ => None,
    };
    if args.format == Format::Html {
        let sections: Vec<String> = diff.into_iter().collect();
        print!(
            "{}",
            render(&summary, Some(&extras), args.format, &title, &sections)
        );
    } else {
        print!("{}", render(&summary, Some(&extras), args.format, &title, &[]));
        if let Some(d) = diff {
            print!("{d}");
        }
    }
    super::denied_exit(&summary, args.exit_zero)
}

/// The most of an input's access-event lines that may be unreadable
/// before `report` refuses to sum up the rest (in percent).
const MAX_UNREADABLE_PERCENT: u64 = 1;

/// Whether enough of the input was read to sum it up: some access event,
/// and at most [`MAX_UNREADABLE_PERCENT`] of them unreadable. A report of
/// nothing must not pass for a report of no refusals.
fn enough_read(read: u64, unreadable: u64, first: Option<String>) -> Result<(), String> {
    let example = first.map_or(String::new(), |l| format!("; the first: {l}"));
    if read == 0 {
        return Err(format!(
            "no access event could be read ({unreadable} unreadable{example}); report reads egressd's JSON \
             access log lines as written (from journald: journalctl -u egressd -o cat)"
        ));
    }
    if unreadable * 100 > (read + unreadable) * MAX_UNREADABLE_PERCENT {
        return Err(format!(
            "{unreadable} of {} access event lines could not be read (more than {MAX_UNREADABLE_PERCENT}%){example}",
            read + unreadable
        ));
    }
    Ok(())
}

/// What a stretch of input adds up to; stretches merge in input order.
struct Tally {
    summary: Summary,
    by_client: HashMap<String, u64>,
    changes: Option<Changes>,
    unreadable: u64,
    /// The first unreadable line (its start), for the error.
    first_unreadable: Option<String>,
    /// Access events with no target to judge: requests egressd refused as
    /// malformed.
    undecided: u64,
}

impl Tally {
    fn new(candidate: bool) -> Tally {
        Tally {
            summary: Summary::default(),
            by_client: HashMap::new(),
            changes: candidate.then(Changes::default),
            unreadable: 0,
            first_unreadable: None,
            undecided: 0,
        }
    }

    fn unreadable(&mut self, line: &str) {
        self.unreadable += 1;
        if self.first_unreadable.is_none() {
            let mut end = line.len().min(160);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            self.first_unreadable = Some(line[..end].to_string());
        }
    }

    fn observe(&mut self, o: &Observation, policy: &Policy, candidate: Option<&Policy>) {
        let d = o.decide(policy);
        self.summary.add(o, &d);
        if d.verdict != Verdict::Allow {
            if let Some(c) = &o.client {
                match self.by_client.get_mut(c.as_str()) {
                    Some(n) => *n += 1,
                    None => {
                        self.by_client.insert(c.clone(), 1);
                    }
                }
            }
        }
        if let (Some(ch), Some(cand)) = (self.changes.as_mut(), candidate) {
            ch.add(o, d.verdict == Verdict::Allow, cand);
        }
    }

    /// A DNS question: its name judged as the DNS listener would.
    fn lookup(&mut self, q: &logs::Lookup, policy: &Policy) {
        let d = policy.decide_name(&q.name);
        self.summary.add_lookup(q, &d);
        if let (false, Some(c)) = (d.verdict == Verdict::Allow, &q.client) {
            *self.by_client.entry(c.clone()).or_default() += 1;
        }
    }

    /// Adds what came after this stretch.
    fn merge(&mut self, later: Tally) {
        self.summary.merge(later.summary);
        for (c, n) in later.by_client {
            *self.by_client.entry(c).or_default() += n;
        }
        if let (Some(ch), Some(l)) = (self.changes.as_mut(), later.changes) {
            ch.merge(l);
        }
        self.unreadable += later.unreadable;
        self.undecided += later.undecided;
        if self.first_unreadable.is_none() {
            self.first_unreadable = later.first_unreadable;
        }
    }
}

/// What a candidate policy would newly deny or newly allow, by destination.
#[derive(Default)]
struct Changes {
    newly_denied: BTreeMap<String, (u64, String)>,
    newly_allowed: BTreeMap<String, (u64, String)>,
}

impl Changes {
    fn add(&mut self, o: &Observation, allowed_now: bool, candidate: &Policy) {
        let allowed_then = o.decide(candidate).verdict == Verdict::Allow;
        let bucket = match (allowed_now, allowed_then) {
            (true, false) => &mut self.newly_denied,
            (false, true) => &mut self.newly_allowed,
            _ => return,
        };
        let dest = audit::destination(&o.candidate);
        match bucket.get_mut(&dest) {
            Some(e) => e.0 += 1,
            None => {
                bucket.insert(dest, (1, o.target.clone()));
            }
        }
    }

    /// Adds what came later: counts add up, the first example stays.
    fn merge(&mut self, later: Changes) {
        for (mine, theirs) in [
            (&mut self.newly_denied, later.newly_denied),
            (&mut self.newly_allowed, later.newly_allowed),
        ] {
            for (dest, (n, example)) in theirs {
                mine.entry(dest).or_insert((0, example)).0 += n;
            }
        }
    }

    fn render(self, candidate: &Policy, format: Format) -> String {
        let Changes {
            newly_denied,
            newly_allowed,
        } = self;
        let sorted = |m: BTreeMap<String, (u64, String)>| {
            let mut v: Vec<(String, u64, String)> = m.into_iter().map(|(k, (n, ex))| (k, n, ex)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        };
        let (denied, allowed) = (sorted(newly_denied), sorted(newly_allowed));
        match format {
            Format::Json => {
                let list = |v: &[(String, u64, String)]| {
                    v.iter()
                        .map(|(d, n, ex)| json!({"destination": d, "requests": n, "example": ex}))
                        .collect::<Vec<_>>()
                };
                let mut s = serde_json::to_string_pretty(&json!({
                    "candidate": candidate.origin(),
                    "candidate_version": candidate.version(),
                    "newly_denied": list(&denied),
                    "newly_allowed": list(&allowed),
                }))
                .unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Html => {
                use crate::audit::html::esc;
                let mut s = format!(
                    "<h2>Candidate {} ({})</h2>\n",
                    esc(candidate.origin()),
                    esc(candidate.version())
                );
                for (title, v) in [("Newly denied", &denied), ("Newly allowed", &allowed)] {
                    s += &format!("<h3>{title}: {}</h3>\n", v.len());
                    if v.is_empty() {
                        continue;
                    }
                    s += "<table><tr><th>requests</th><th>destination</th><th>example</th></tr>\n";
                    for (d, n, ex) in v {
                        s += &format!(
                        "<tr><td class=\"n\">{n}</td><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
                        esc(d),
                        esc(ex)
                    );
                    }
                    s += "</table>\n";
                }
                s
            }
            Format::Text | Format::Markdown => {
                let mut s = format!("\nCandidate {} ({}):\n", candidate.origin(), candidate.version());
                for (title, v) in [("newly denied", &denied), ("newly allowed", &allowed)] {
                    s += &format!("  {title}: {}\n", v.len());
                    for (d, n, ex) in v {
                        s += &format!("    {n:>7}  {d}  e.g. {ex}\n");
                    }
                }
                s
            }
        }
    }
}
