//! One self-contained HTML file for a summary: people attach it to a
//! ticket or mail it. No scripts, fonts or styles from elsewhere; charts
//! are inline SVG. Everything from the input is escaped.

use std::fmt::Write;

use super::{Extras, Summary};

const MAX_ROWS: usize = 200;
const TOP: usize = 15;
const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f23;max-width:70em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse}th,td{text-align:left;padding:.2em .7em;border-bottom:1px solid #e1e4e8;vertical-align:top}\
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}\
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f6f8fa;padding:.8em;overflow-x:auto}\
.add{color:#22863a}.muted{color:#586069}svg text{font:11px system-ui,sans-serif;fill:#1b1f23}";

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The whole report; `sections` are added at the end (already HTML).
pub fn page(title: &str, s: &Summary, extras: Option<&Extras>, sections: &[String]) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{CSS}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    summary_table(&mut o, s);
    if !s.denied_by_hour.is_empty() {
        let _ = writeln!(o, "<h2>Refusals per hour</h2>");
        let bars: Vec<(String, u64)> = s
            .denied_by_hour
            .iter()
            .map(|(h, n)| (super::logs::hour_label(*h), *n))
            .collect();
        o.push_str(&hour_chart(&bars));
    }
    if !s.denied_hosts.is_empty() {
        let _ = writeln!(o, "<h2>Top refused destinations</h2>");
        let top: Vec<(String, u64)> = s
            .denied_hosts
            .iter()
            .take(TOP)
            .map(|h| (h.host.clone(), h.requests))
            .collect();
        o.push_str(&top_chart(&top));
        denied_table(&mut o, s);
    }
    suggestions(&mut o, s);
    if let Some(e) = extras {
        if !e.denied_by_client.is_empty() {
            let _ = writeln!(
                o,
                "<h2>Refusals by client</h2>\n<table><tr><th>requests</th><th>client</th></tr>"
            );
            for (c, n) in e.denied_by_client.iter().take(MAX_ROWS) {
                let _ = writeln!(o, "<tr><td class=\"n\">{n}</td><td>{}</td></tr>", esc(c));
            }
            o.push_str("</table>\n");
        }
        if !e.unused_rules.is_empty() {
            let _ = writeln!(
                o,
                "<h2>Rules nothing matched</h2>\n<p class=\"muted\">Candidates for removal, if the input covers all use.</p>\n<ul>"
            );
            for r in &e.unused_rules {
                let _ = writeln!(o, "<li><code>{}</code></li>", esc(r));
            }
            o.push_str("</ul>\n");
        }
    }
    for sec in sections {
        o.push_str(sec);
    }
    o.push_str("</body></html>\n");
    o
}

fn summary_table(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "<h2>Summary</h2>\n<table>");
    let mut row = |k: &str, v: u64| {
        let _ = writeln!(o, "<tr><th>{k}</th><td class=\"n\">{v}</td></tr>");
    };
    row("requests", s.requests);
    row("destinations", s.destinations);
    row("allowed", s.allowed);
    row("denied", s.denied);
    row("would deny (report mode)", s.would_deny);
    row("would allow (staged rules)", s.would_allow);
    row("path not enforced", s.path_not_enforced);
    row("unreadable inputs", s.unreadable);
    row("DNS lookups", s.lookups);
    row("DNS lookups refused (port 0 below)", s.lookups_refused);
    o.push_str("</table>\n");
}

fn denied_table(o: &mut String, s: &Summary) {
    let _ = writeln!(
        o,
        "<h2>Refused destinations</h2>\n<table><tr><th>requests</th><th>host</th><th>ports</th><th>reasons</th><th>examples</th></tr>"
    );
    for h in s.denied_hosts.iter().take(MAX_ROWS) {
        let ports: Vec<String> = h.ports.iter().map(u16::to_string).collect();
        let reasons: Vec<&str> = h.reasons.iter().copied().collect();
        let examples: Vec<String> = h
            .examples
            .iter()
            .map(|e| format!("<code>{}</code>", esc(e)))
            .collect();
        let _ = writeln!(
            o,
            "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            h.requests,
            esc(&h.host),
            ports.join(", "),
            reasons.join(", "),
            examples.join("<br>")
        );
    }
    o.push_str("</table>\n");
    if s.denied_hosts.len() > MAX_ROWS {
        let _ = writeln!(
            o,
            "<p class=\"muted\">and {} more hosts (the JSON output lists all).</p>",
            s.denied_hosts.len() - MAX_ROWS
        );
    }
}

fn suggestions(o: &mut String, s: &Summary) {
    if s.suggestions.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<h2>Suggested change to the policy</h2>\n<p class=\"muted\">Rules that would admit the refused \
         traffic above (never a public-suffix wildcard); review each before adding it to <code>allow</code>.</p>\n<pre>"
    );
    for g in &s.suggestions {
        // The browser's own background hosts are shown, not proposed.
        let (class, mark, note) = match g.background {
            true => ("muted", " ", " (the browser's own; rarely the app's)"),
            false => ("add", "+", ""),
        };
        let _ = writeln!(
            o,
            "<span class=\"{class}\">{mark}  {},</span>  # {} requests: {}{note}",
            esc(&g.toml()),
            g.requests,
            esc(&g.hosts.join(", "))
        );
    }
    o.push_str("</pre>\n");
}

/// Vertical bars, one per hour, labelled at both ends and with the peak.
pub fn hour_chart(bars: &[(String, u64)]) -> String {
    let (w, h, pad) = (720.0_f64, 160.0_f64, 24.0_f64);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let step = (w - 2.0 * pad) / bars.len().max(1) as f64;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"refusals per hour\">\n",
        h + 2.0 * pad
    );
    for (i, (label, n)) in bars.iter().enumerate() {
        let bh = (*n as f64 / max) * h;
        let _ = writeln!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d73a49\"><title>{}: {n}</title></rect>",
            pad + i as f64 * step,
            pad + h - bh,
            (step * 0.8).max(1.0),
            bh,
            esc(label)
        );
    }
    let _ = writeln!(o, "<text x=\"{pad}\" y=\"14\">peak {max} per hour</text>");
    if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
        let _ = writeln!(
            o,
            "<text x=\"{pad}\" y=\"{}\">{}</text>",
            h + 2.0 * pad - 6.0,
            esc(&first.0)
        );
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            w - pad,
            h + 2.0 * pad - 6.0,
            esc(&last.0)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// Horizontal bars, one per destination, with name and count.
pub fn top_chart(bars: &[(String, u64)]) -> String {
    let (w, row, label_w) = (720.0_f64, 20.0_f64, 300.0_f64);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"top refused destinations\">\n",
        row * bars.len() as f64 + 4.0
    );
    for (i, (name, n)) in bars.iter().enumerate() {
        let y = i as f64 * row;
        let bw = (*n as f64 / max) * (w - label_w - 60.0);
        let _ = writeln!(
            o,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{:.0}\" width=\"{bw:.1}\" height=\"{:.0}\" fill=\"#0366d6\"></rect>\
             <text x=\"{:.1}\" y=\"{:.0}\">{n}</text>",
            label_w - 6.0,
            y + 14.0,
            esc(name),
            y + 3.0,
            row - 6.0,
            label_w + bw + 4.0,
            y + 14.0
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_escaped_everywhere() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let bars = vec![("<b>".to_string(), 3)];
        assert!(!top_chart(&bars).contains("<b>"));
        assert!(!hour_chart(&bars).contains("<b>"));
    }
}
