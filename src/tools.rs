//! The completeness tools as commands: reading inputs, printing results and
//! choosing exit codes around the pure [`crate::audit`] functions.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::audit::render::{render, Extras, Format};
use crate::audit::{self, har, lint, logs, Observation, Summary};
use crate::cli::{load_policy, AuditArgs, CheckArgs, CheckFormat, LintArgs, ReportArgs};
use crate::policy::target::parse_target;
use crate::policy::{Candidate, Decision, Host, Kind, Policy, RuleTarget, Verdict};

const EXIT_DENIED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

fn bad_input(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("egressd: {msg}");
    ExitCode::from(EXIT_BAD_INPUT)
}

fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let f = std::fs::File::open(path)?;
    lines_of(BufReader::new(f))
}

fn lines_of(r: impl BufRead) -> std::io::Result<Vec<String>> {
    let mut v = Vec::new();
    for line in r.lines() {
        let line = line?;
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            v.push(t.to_string());
        }
    }
    Ok(v)
}

/// A progress bar on stderr sized to a file; hidden when stderr is not a terminal.
fn progress(len: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}") {
        pb.set_style(style);
    }
    pb
}

// === check ===

pub fn check(args: CheckArgs) -> ExitCode {
    let policy = match load_policy(args.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad_input(format!("{e:#}")),
    };
    let mut targets = Vec::new();
    for t in &args.targets {
        if t == "-" {
            match lines_of(std::io::stdin().lock()) {
                Ok(v) => targets.extend(v),
                Err(e) => return bad_input(format!("stdin: {e}")),
            }
        } else {
            targets.push(t.clone());
        }
    }
    if let Some(f) = &args.file {
        match read_lines(f) {
            Ok(v) => targets.extend(v),
            Err(e) => return bad_input(format!("{}: {e}", f.display())),
        }
    }
    if targets.is_empty() {
        return bad_input("no targets (give URLs, host:port, `-` for stdin, or --file)");
    }
    let mut cands = Vec::with_capacity(targets.len());
    for t in &targets {
        match parse_target(t) {
            Ok(c) => cands.push(c),
            Err(e) => return bad_input(e),
        }
    }
    let mut any_denied = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (t, c) in targets.iter().zip(&cands) {
        let d = policy.decide(c);
        any_denied |= d.verdict != Verdict::Allow;
        let _ = match args.format {
            CheckFormat::Text => write!(out, "{}", check_text(&policy, t, c, &d, args.explain)),
            CheckFormat::Json => writeln!(out, "{}", check_json(&policy, t, c, &d, args.explain)),
        };
    }
    if any_denied {
        ExitCode::from(EXIT_DENIED)
    } else {
        ExitCode::SUCCESS
    }
}

fn rule_label(policy: &Policy, d: &Decision) -> Option<String> {
    d.rule.map(|r| {
        let rule = policy.rule(r);
        format!("{} ({}, line {})", rule.id, rule.pattern, rule.line)
    })
}

fn check_text(policy: &Policy, target: &str, c: &Candidate, d: &Decision, explain: bool) -> String {
    let mut s = format!("{:<10} {target}", d.verdict.as_str());
    match rule_label(policy, d) {
        Some(r) => s += &format!("  rule={r}"),
        None => s += &format!("  reason={}: {}", d.reason.as_str(), d.reason.describe()),
    }
    if !d.flags.is_empty() {
        s += &format!("  flags={}", d.flags.names().join(","));
    }
    s.push('\n');
    if explain {
        for line in explain_lines(policy, c) {
            s += &format!("    {line}\n");
        }
    }
    s
}

fn check_json(
    policy: &Policy,
    target: &str,
    c: &Candidate,
    d: &Decision,
    explain: bool,
) -> serde_json::Value {
    let mut v = json!({
        "target": target,
        "kind": match c.kind { Kind::Connect => "connect", Kind::Http => "http", Kind::Https => "https" },
        "host": c.host.to_string(),
        "port": c.port,
        "path": c.path.as_ref().map(|p| p.path.clone()),
        "decision": d.verdict.as_str(),
        "reason": d.reason.as_str(),
        "rule": d.rule.map(|r| policy.rule(r).id.to_string()),
        "flags": d.flags.names(),
        "policy_version": policy.version(),
    });
    if explain {
        v["explain"] = json!(explain_lines(policy, c));
    }
    v
}

/// The normalised request, and every rule near it with why it did not match.
fn explain_lines(policy: &Policy, c: &Candidate) -> Vec<String> {
    let mut lines = vec![format!(
        "normalised: {} {}:{}{}",
        match c.kind {
            Kind::Connect => "CONNECT",
            Kind::Http => "http",
            Kind::Https => "https",
        },
        c.host,
        c.port,
        c.path
            .as_ref()
            .map(|p| format!(
                " path {}{}",
                p.path,
                if p.ambiguous { " (ambiguous)" } else { "" }
            ))
            .unwrap_or_else(|| " (path hidden by TLS)".into())
    )];
    let name = match &c.host {
        Host::Name(n) => n.as_str(),
        Host::Ip(_) => {
            lines.push("IP literal: only cidr rules apply".into());
            return lines;
        }
    };
    let domain = audit::registrable_domain(name).unwrap_or(name);
    for r in policy.rules() {
        let RuleTarget::Host(d) = &r.target else { continue };
        let host_match = d.host.is_match(name);
        let same_domain = d.host.domain().ends_with(domain);
        if !host_match && !same_domain {
            continue;
        }
        let why = if !host_match {
            format!("host {} does not match", d.host)
        } else {
            let single = Policy::from_rule(r);
            let rd = single.decide(c);
            if rd.verdict == Verdict::Allow || rd.rule.is_some() {
                "matches".to_string()
            } else {
                rd.reason.describe()
            }
        };
        lines.push(format!(
            "{} rule {} ({}, line {}, ports {}): {why}",
            match r.action {
                crate::policy::Action::Allow => "allow",
                crate::policy::Action::Deny => "deny",
            },
            r.id,
            r.pattern,
            r.line,
            r.ports
        ));
    }
    if lines.len() == 1 {
        lines.push(format!("no rule names {domain} or a host under it"));
    }
    lines
}

// === audit ===

pub fn audit(args: AuditArgs) -> ExitCode {
    let policy = match load_policy(args.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad_input(format!("{e:#}")),
    };
    if args.har.is_empty() && args.urls.is_empty() {
        return bad_input("nothing to audit: give --har FILE or --urls FILE");
    }
    let mut summary = Summary::default();
    let connect = !args.with_paths;
    for path in &args.har {
        if let Err(e) = replay_har(&policy, path, connect, &mut summary) {
            return bad_input(format!("{}: {e}", path.display()));
        }
    }
    for path in &args.urls {
        match read_lines(path) {
            Ok(lines) => {
                for l in lines {
                    match Observation::parse(&l) {
                        Some(o) => audit::audit(&policy, std::iter::once(o), connect, &mut summary),
                        None => summary.unreadable += 1,
                    }
                }
            }
            Err(e) => return bad_input(format!("{}: {e}", path.display())),
        }
    }
    summary.finish();
    print!("{}", render(&summary, None, args.format));
    ExitCode::SUCCESS
}

fn replay_har(policy: &Policy, path: &Path, connect: bool, summary: &mut Summary) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let pb = progress(len);
    let reader = BufReader::with_capacity(1 << 16, pb.wrap_read(f));
    let mut unreadable = 0u64;
    har::for_each_request(reader, |req| {
        // data:, blob:, chrome-extension: and the like never reach a proxy.
        if !(req.url.starts_with("http://") || req.url.starts_with("https://")) {
            return;
        }
        match Observation::parse(&req.url) {
            Some(o) => audit::audit(policy, std::iter::once(o), connect, summary),
            None => unreadable += 1,
        }
    })
    .map_err(|e| format!("not a readable HAR file: {e}"))?;
    pb.finish_and_clear();
    summary.unreadable += unreadable;
    Ok(())
}

// === report ===

pub fn report(args: ReportArgs) -> ExitCode {
    let policy = match load_policy(args.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad_input(format!("{e:#}")),
    };
    let candidate = match &args.candidate {
        Some(c) => match load_policy(Some(c)) {
            Ok(p) => Some(p),
            Err(e) => return bad_input(format!("{e:#}")),
        },
        None => None,
    };
    let mut observations: Vec<Observation> = Vec::new();
    let sources: Vec<String> = if args.logs.is_empty() && args.har.is_empty() {
        vec!["-".into()]
    } else {
        args.logs.clone()
    };
    let mut unreadable = 0;
    for src in &sources {
        let r = match logs::open(src) {
            Ok(r) => r,
            Err(e) => return bad_input(format!("{src}: {e}")),
        };
        for line in r.lines() {
            match line {
                Ok(l) => match logs::parse_line(&l) {
                    Some(o) => observations.push(o),
                    None if l.contains(crate::telemetry::ACCESS_TARGET) => unreadable += 1,
                    None => {}
                },
                Err(e) => return bad_input(format!("{src}: {e}")),
            }
        }
    }
    for path in &args.har {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return bad_input(format!("{}: {e}", path.display())),
        };
        let r = har::for_each_request(BufReader::new(f), |req| {
            if let Some(o) = Observation::parse(&req.url) {
                observations.extend(o.as_connect().or(Some(o)));
            }
        });
        if let Err(e) = r {
            return bad_input(format!("{}: not a readable HAR file: {e}", path.display()));
        }
    }

    let mut summary = Summary::default();
    summary.unreadable = unreadable;
    let mut by_client: HashMap<String, u64> = HashMap::new();
    let mut by_hour: BTreeMap<i64, u64> = BTreeMap::new();
    for o in &observations {
        let d = policy.decide(&o.candidate);
        summary.add(o, &d);
        if d.verdict != Verdict::Allow {
            if let Some(c) = &o.client {
                *by_client.entry(c.clone()).or_default() += 1;
            }
            if let Some(h) = o.time {
                *by_hour.entry(h).or_default() += 1;
            }
        }
    }
    let mut extras = Extras {
        denied_by_client: by_client.into_iter().collect(),
        denied_by_hour: by_hour
            .into_iter()
            .map(|(h, n)| (logs::hour_label(h), n))
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
    print!("{}", render(&summary, Some(&extras), args.format));

    if let Some(cand) = candidate {
        print!("{}", diff(&policy, &cand, &observations, args.format));
    }
    ExitCode::SUCCESS
}

/// What `candidate` would newly deny or newly allow, by destination.
fn diff(current: &Policy, candidate: &Policy, obs: &[Observation], format: Format) -> String {
    let mut newly_denied: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut newly_allowed: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for o in obs {
        let a = current.decide(&o.candidate).verdict == Verdict::Allow;
        let b = candidate.decide(&o.candidate).verdict == Verdict::Allow;
        let bucket = match (a, b) {
            (true, false) => &mut newly_denied,
            (false, true) => &mut newly_allowed,
            _ => continue,
        };
        let e = bucket
            .entry(audit::destination(&o.candidate))
            .or_insert((0, o.target.clone()));
        e.0 += 1;
    }
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

// === lint ===

pub fn lint(args: LintArgs) -> ExitCode {
    let policy = match load_policy(args.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let findings = lint::lint(&policy);
    match args.format {
        CheckFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_default());
        }
        CheckFormat::Text => {
            for f in &findings {
                println!(
                    "{}:{}: warning[{}]: rule {:?} ({}): {}",
                    policy.origin(),
                    f.line,
                    f.kind,
                    f.rule,
                    f.pattern,
                    f.message
                );
            }
            println!(
                "{}: {} rules, {} warnings",
                policy.origin(),
                policy.rules().len(),
                findings.len()
            );
        }
    }
    if args.strict && !findings.is_empty() {
        ExitCode::from(EXIT_DENIED)
    } else {
        ExitCode::SUCCESS
    }
}
