//! Rendering of audit and report summaries: text for people, markdown for
//! tickets, JSON for machines.

use std::fmt::Write;

use super::{Extras, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
    /// One self-contained HTML file, with charts.
    Html,
}

const MAX_HOSTS: usize = 50;

/// `title` heads the HTML page (what was asked, of which policy);
/// `sections` are further HTML sections (such as a candidate's diff).
pub fn render(
    s: &Summary,
    extras: Option<&Extras>,
    format: Format,
    title: &str,
    sections: &[String],
) -> String {
    match format {
        Format::Html => super::html::page(title, s, extras, sections),
        Format::Json => {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let (Some(e), Some(obj)) = (extras, v.as_object_mut()) {
                if let Ok(serde_json::Value::Object(extra)) = serde_json::to_value(e) {
                    obj.extend(extra);
                }
            }
            let mut out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
            out
        }
        Format::Text => text(s, extras),
        Format::Markdown => markdown(s, extras),
    }
}

fn text(s: &Summary, extras: Option<&Extras>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "requests:           {}", s.requests);
    let _ = writeln!(o, "destinations:       {}", s.destinations);
    let _ = writeln!(o, "allowed:            {}", s.allowed);
    let _ = writeln!(o, "denied:             {}", s.denied);
    if s.would_allow > 0 {
        let _ = writeln!(
            o,
            "would allow:        {} (refused; a staged rule would let them through)",
            s.would_allow
        );
    }
    if s.would_deny > 0 {
        let _ = writeln!(o, "would deny:         {}", s.would_deny);
    }
    let _ = writeln!(o, "path not enforced:  {}", s.path_not_enforced);
    if s.unreadable > 0 {
        let _ = writeln!(o, "unreadable inputs:  {}", s.unreadable);
    }
    if s.lookups > 0 {
        let _ = writeln!(
            o,
            "DNS lookups:        {} ({} refused: listed below as port 0)",
            s.lookups, s.lookups_refused
        );
    }
    if !s.denied_hosts.is_empty() {
        let _ = writeln!(o, "\nDenied destinations, by requests:");
        for h in s.denied_hosts.iter().take(MAX_HOSTS) {
            let ports: Vec<String> = h.ports.iter().map(u16::to_string).collect();
            let reasons: Vec<&str> = h.reasons.iter().copied().collect();
            let _ = writeln!(
                o,
                "  {:>7}  {} (ports {}; {})",
                h.requests,
                h.host,
                ports.join(","),
                reasons.join(", ")
            );
            for e in &h.examples {
                let _ = writeln!(o, "           e.g. {e}");
            }
        }
        if s.denied_hosts.len() > MAX_HOSTS {
            let _ = writeln!(o, "  ... and {} more hosts", s.denied_hosts.len() - MAX_HOSTS);
        }
    }
    if !s.suggestions.is_empty() {
        let _ = writeln!(o, "\nSuggested rules (add to `allow`):");
        for g in &s.suggestions {
            let _ = writeln!(
                o,
                "  {:<50} # {} requests: {}{}",
                format!("{},", g.toml()),
                g.requests,
                g.hosts.join(", "),
                if g.background {
                    " (the browser's own: updates, safe browsing; rarely the app's)"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(e) = extras {
        if !e.denied_by_client.is_empty() {
            let _ = writeln!(o, "\nDenied by client:");
            for (c, n) in &e.denied_by_client {
                let _ = writeln!(o, "  {n:>7}  {c}");
            }
        }
        if !e.denied_by_hour.is_empty() {
            let _ = writeln!(o, "\nDenied by hour:");
            for (h, n) in &e.denied_by_hour {
                let _ = writeln!(o, "  {n:>7}  {h}");
            }
        }
        if !e.unused_rules.is_empty() {
            let _ = writeln!(o, "\nRules nothing matched (candidates for removal):");
            for r in &e.unused_rules {
                let _ = writeln!(o, "  {r}");
            }
        }
    }
    o
}

fn markdown(s: &Summary, extras: Option<&Extras>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Summary\n");
    let _ = writeln!(
        o,
        "| requests | destinations | allowed | denied | would deny | path not enforced |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| {} | {} | {} | {} | {} | {} |",
        s.requests, s.destinations, s.allowed, s.denied, s.would_deny, s.path_not_enforced
    );
    if s.lookups > 0 {
        let _ = writeln!(
            o,
            "\nDNS lookups: {}, of names the policy refuses: {} (listed as port 0).",
            s.lookups, s.lookups_refused
        );
    }
    if !s.denied_hosts.is_empty() {
        let _ = writeln!(o, "\n## Denied destinations\n");
        let _ = writeln!(o, "| requests | host | ports | reasons | example |");
        let _ = writeln!(o, "|---|---|---|---|---|");
        for h in s.denied_hosts.iter().take(MAX_HOSTS) {
            let ports: Vec<String> = h.ports.iter().map(u16::to_string).collect();
            let reasons: Vec<&str> = h.reasons.iter().copied().collect();
            let _ = writeln!(
                o,
                "| {} | `{}` | {} | {} | `{}` |",
                h.requests,
                h.host,
                ports.join(", "),
                reasons.join(", "),
                h.examples.first().map(String::as_str).unwrap_or("")
            );
        }
    }
    if !s.suggestions.is_empty() {
        let _ = writeln!(o, "\n## Suggested rules\n\n```toml\nallow = [");
        for g in &s.suggestions {
            // In a ticket, the browser's own hosts are shown commented out.
            let lead = if g.background { "# " } else { "" };
            let note = if g.background { ", the browser's own" } else { "" };
            let _ = writeln!(o, "  {lead}{},  # {} requests{note}", g.toml(), g.requests);
        }
        let _ = writeln!(o, "]\n```");
    }
    if let Some(e) = extras {
        if !e.unused_rules.is_empty() {
            let _ = writeln!(o, "\n## Rules nothing matched\n");
            for r in &e.unused_rules {
                let _ = writeln!(o, "- `{r}`");
            }
        }
    }
    o
}
