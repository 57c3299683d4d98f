//! `egressd check`: decide targets and say which rule decides.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::check_names::Names;
use super::{bad_input, lines_of, load, read_lines, EXIT_BAD_INPUT, EXIT_DENIED};
use crate::audit;
use crate::policy::{Action, Candidate, Decision, Host, Kind, Policy, RuleTarget, Verdict};
use crate::target::parse_target;

/// What `egressd check` was asked.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Policy file; `None` for the built-in policy.
    pub policy: Option<PathBuf>,
    /// URLs, `host:port`, or `-` for stdin.
    pub targets: Vec<String>,
    /// A file of targets, one a line.
    pub file: Option<PathBuf>,
    pub explain: bool,
    pub json: bool,
    /// The proxy runs with a CA (`run --ca`): decide https URLs as it does.
    pub inspect: bool,
    /// Resolve allowed names and judge their addresses as the proxy does.
    pub resolve_names: bool,
    /// DNS servers for `resolve_names` (default: the system's).
    pub dns_server: Vec<std::net::SocketAddr>,
    pub dns_timeout: std::time::Duration,
}

pub fn check(args: CheckOptions) -> ExitCode {
    super::errors_as_json(args.json);
    let policy = match load(args.policy.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
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
    let names = match args.resolve_names {
        true => match Names::new(args.dns_server.clone(), args.dns_timeout) {
            Ok(n) => Some(n),
            Err(e) => return bad_input(format!("DNS: {e}")),
        },
        false => None,
    };
    // Every target gets its own result: a malformed one does not hide the
    // others' answers. Exit 2 if any was malformed, else 1 if any was denied.
    let (mut any_denied, mut any_bad, mut names_unresolved) = (false, false, false);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for t in &targets {
        let c = match parse_target(t) {
            Ok(c) => c,
            Err(e) => {
                any_bad = true;
                let _ = if args.json {
                    writeln!(
                        out,
                        "{}",
                        json!({"target": t, "decision": "error", "error": e.to_string()})
                    )
                } else {
                    writeln!(out, "{:<10} {t}  error={e}", "error")
                };
                continue;
            }
        };
        let (mut d, _) = audit::decide_like_proxy(&policy, &c, args.inspect);
        let resolved = super::check_names::localhost(&policy, &c, d)
            .or_else(|| names.as_ref().and_then(|n| n.resolve(&policy, &c, d)));
        if let Some(r) = &resolved {
            d = r.decision;
        }
        any_denied |= d.verdict != Verdict::Allow;
        let hint = (resolved.is_none() && d.verdict.proceeds())
            .then(|| private_use_hint(&c))
            .flatten();
        names_unresolved |= resolved.is_none() && d.verdict.proceeds() && c.host.as_name().is_some();
        let _ = if args.json {
            let mut v = check_json(&policy, t, &c, &d, args.explain);
            if let Some(h) = hint {
                v["hint"] = json!(h);
            }
            if let (Some(r), Some(obj)) = (&resolved, v.as_object_mut()) {
                if let serde_json::Value::Object(extra) = r.json() {
                    obj.extend(extra);
                }
            }
            writeln!(out, "{v}")
        } else {
            let mut text = check_text(&policy, t, &c, &d, args.explain);
            // On the verdict's line, before any --explain lines.
            let at = text.find('\n').unwrap_or(text.len());
            if let Some(r) = &resolved {
                text.insert_str(at, &r.text());
            } else if let Some(h) = hint {
                text.insert_str(at, &format!("  hint={h}"));
            }
            write!(out, "{text}")
        };
    }
    if names_unresolved && !args.json {
        eprintln!(
            "note: names are judged here by the policy alone; the proxy also judges the addresses \
             they resolve to (loopback, private and metadata addresses are refused unless a cidr \
             rule allows them). --resolve-names judges them here too."
        );
    }
    if any_bad {
        ExitCode::from(EXIT_BAD_INPUT)
    } else if any_denied {
        ExitCode::from(EXIT_DENIED)
    } else {
        ExitCode::SUCCESS
    }
}

/// A hint for an allowed name that is special without resolving it:
/// `.internal` is for private use (ICANN, 2024), so its addresses are
/// private ones, which the proxy refuses unless a cidr rule allows them.
fn private_use_hint(c: &Candidate) -> Option<&'static str> {
    let name = c.host.as_name()?;
    (name == "internal" || name.ends_with(".internal")).then_some(
        ".internal names are private-use: their addresses are private, refused unless a cidr rule allows them",
    )
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
        s += &format!("  flags={}", d.flags.names().collect::<Vec<_>>().join(","));
    }
    s.push('\n');
    if explain {
        for line in explain_lines(policy, c) {
            s += &format!("    {line}\n");
        }
        if d.flags.contains(crate::policy::Flags::PATH_NOT_ENFORCED) {
            s += "    the CONNECT tunnel hides the path: the host's path rules let the tunnel through \
                  whatever the path (path_rules_on_connect = \"allow\"); inspecting it (run --ca, \
                  check --inspect) enforces the path\n";
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
        "kind": c.kind.as_str(),
        "method": c.method.as_str(),
        "host": c.host.to_string(),
        "port": c.port,
        "path": c.path.as_ref().map(|p| p.path.clone()),
        "decision": d.verdict.as_str(),
        "reason": d.reason.as_str(),
        "rule": d.rule.map(|r| policy.rule(r).id.to_string()),
        "flags": d.flags.names().collect::<Vec<_>>(),
        "policy_version": policy.version(),
    });
    if explain {
        v["explain"] = json!(explain_lines(policy, c));
    }
    v
}

/// A rule's methods, expiry and staging, as `check --explain` shows them.
fn rule_terms(r: &crate::policy::Rule) -> String {
    let mut s = String::new();
    if let Some(m) = &r.methods {
        let names: Vec<&str> = m.iter().map(|m| m.as_str()).collect();
        s += &format!(", methods {}", names.join(","));
    }
    if let Some(d) = r.expires {
        s += &format!(", expires {d}");
    }
    if r.staged {
        s += ", staged (mode = report)";
    }
    s
}

/// The normalised request, and every rule near it with why it did not match.
fn explain_lines(policy: &Policy, c: &Candidate) -> Vec<String> {
    let mut lines = vec![format!(
        "normalised: {} {}:{}{}",
        match c.kind {
            Kind::Connect => "CONNECT".to_string(),
            Kind::Http => format!("{} http", c.method),
            Kind::Https => format!("{} https", c.method),
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
            if let Some(day) = policy.today() {
                single.set_today(day);
            }
            let rd = single.decide(c);
            if rd.verdict == Verdict::Allow || rd.rule.is_some() {
                "matches".to_string()
            } else {
                rd.reason.describe().into_owned()
            }
        };
        lines.push(format!(
            "{} rule {} ({}, line {}, {}, ports {}{}): {why}",
            match r.action {
                Action::Allow => "allow",
                Action::Deny => "deny",
            },
            r.id,
            r.pattern,
            r.line,
            r.kinds.as_str(),
            r.ports,
            rule_terms(r),
        ));
    }
    if lines.len() == 1 {
        lines.push(format!("no rule names {domain} or a host under it"));
    }
    lines
}
