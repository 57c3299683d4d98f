//! egressd's own JSON access logs as input: files (plain or gzipped, e.g.
//! rotated `access.log.1.gz`) or standard input, one event a line. Lines
//! that are not access events (startup messages, other targets) are skipped.

use std::io::{BufRead, BufReader, Read};

use super::Observation;
use crate::access::{EventKind, Record};

/// Opens `path` (`-` for stdin), transparently un-gzipping.
pub fn open(path: &str) -> std::io::Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path)?)
    };
    let mut buf = BufReader::with_capacity(1 << 16, raw);
    let gz = buf.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(buf)))
    } else {
        Box::new(buf)
    })
}

/// Reads one access-log line; `None` for lines that are not access events.
/// The schema is [`crate::access`]'s.
pub fn parse_line(line: &str) -> Option<Observation> {
    let r = Record::parse(line)?;
    let target = event_target(r.kind, &r.host, r.port, r.path.as_deref());
    let mut o = Observation::parse(&target)?;
    if let Some(m) = r.method.as_deref() {
        o = o.with_method(m);
    }
    o.client = r
        .client
        .as_deref()
        .map(|c| c.rsplit_once(':').map_or(c, |(ip, _)| ip).to_string());
    o.time = r.timestamp.as_deref().and_then(hour_of);
    o.inspected = matches!(r.kind, EventKind::Connect | EventKind::Transparent)
        && r.path.is_none()
        && r.flags
            .as_deref()
            .is_some_and(|f| f.split(',').any(|f| f == "inspected"));
    Some(o)
}

/// The target an access event stands for, as `check` would be given it.
pub fn event_target(kind: EventKind, host: &str, port: u16, path: Option<&str>) -> String {
    let has_path = path.is_some();
    let path = path.unwrap_or("/");
    match kind {
        EventKind::Connect => format!("CONNECT {host}:{port}"),
        EventKind::Http => format!("http://{host}:{port}{path}"),
        EventKind::Inspected => format!("https://{host}:{port}{path}"),
        // A redirected HTTP request carries its path; a connection does not.
        EventKind::Transparent if has_path => format!("http://{host}:{port}{path}"),
        EventKind::Transparent => format!("CONNECT {host}:{port}"),
    }
}

/// An RFC 3339 timestamp (`2026-11-25T18:18:47.1Z`) to whole hours since
/// the epoch (UTC), for windows.
pub fn hour_of(ts: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp().div_euclid(3600))
}

/// Formats hours since the epoch back as `YYYY-MM-DDTHH:00Z`.
pub fn hour_label(hours: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(hours.saturating_mul(3600)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:00Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour()
        ),
        Err(_) => format!("hour {hours}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_access_events_only() {
        let line = r#"{"timestamp":"2026-11-25T18:18:47.119857Z","level":"INFO","message":"access","target":"egressd::access","client":"127.0.0.1:56102","kind":"http","method":"GET","host":"example.com","port":80,"path":"/a","decision":"deny"}"#;
        let o = parse_line(line).unwrap();
        assert_eq!(o.target, "http://example.com:80/a");
        assert_eq!(o.client.as_deref(), Some("127.0.0.1"));
        assert_eq!(hour_label(o.time.unwrap()), "2026-11-25T18:00Z");
        let c =
            r#"{"target":"egressd::access","kind":"connect","host":"[::1]","port":443,"client":"[::1]:5"}"#;
        assert_eq!(parse_line(c).unwrap().target, "CONNECT [::1]:443");
        assert!(parse_line(r#"{"target":"egressd::cli","message":"listening"}"#).is_none());
        assert!(parse_line("not json").is_none());
    }

    /// What [`crate::access::Access::finish`] writes is what this reader
    /// reads: the schema has one owner.
    #[test]
    fn the_proxy_s_own_events_read_back() {
        use std::sync::Arc;

        use crate::access::{Access, EventKind};
        use crate::policy::{Candidate, Kind, Policy};

        let policy = Policy::from_toml(r#"allow = ["www.example.com"]"#, "t.toml").unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut out = Vec::new();
        {
            for (kind, method, cand) in [
                (
                    EventKind::Http,
                    http::Method::GET,
                    Candidate::new(Kind::Http, "WWW.example.com", 8080, Some("/a/../b")),
                ),
                (
                    EventKind::Http,
                    http::Method::PUT,
                    Candidate::new(Kind::Http, "www.example.com", 80, Some("/up")),
                ),
                (
                    EventKind::Connect,
                    http::Method::CONNECT,
                    Candidate::new(Kind::Connect, "[::1]", 443, None),
                ),
            ] {
                let cand = cand.unwrap();
                let mut ev = Access::start(
                    "10.1.2.3:5000".parse().unwrap(),
                    kind,
                    &method,
                    &policy,
                    metrics.clone(),
                    None,
                );
                ev.raw_target("ignored", cand.path.as_ref().map(|p| p.path.as_str()));
                ev.target(&cand);
                ev.decided(&policy, &policy.decide(&cand));
                ev.write_line(&mut out, true);
                ev.finish(Ok(()));
            }
        }
        let out = String::from_utf8(out).unwrap();
        let read: Vec<Observation> = out.lines().filter_map(parse_line).collect();
        assert_eq!(read.len(), 3, "{out}");
        assert_eq!(read[1].candidate.method, http::Method::PUT);
        assert_eq!(read[0].target, "http://www.example.com:8080/b");
        assert_eq!(read[0].candidate.method, http::Method::GET);
        assert_eq!(read[0].client.as_deref(), Some("10.1.2.3"));
        assert!(read[0].time.is_some());
        assert_eq!(read[2].target, "CONNECT [::1]:443");
    }

    /// The proxy, with a CA, allowed and inspected a tunnel that only path
    /// rules name; `report` must not call it refused.
    #[test]
    fn inspected_tunnels_are_decided_as_the_proxy_decided_them() {
        let p = crate::policy::Policy::from_toml(r#"allow = ["api.test/v1"]"#, "t.toml").unwrap();
        let line = |flags: &str| {
            format!(
                r#"{{"target":"egressd::access","kind":"connect","host":"api.test","port":443,"flags":"{flags}"}}"#
            )
        };
        let o = parse_line(&line("pinned,inspected")).unwrap();
        assert!(o.inspected);
        assert_eq!(o.decide(&p).verdict, crate::policy::Verdict::Allow);
        let o = parse_line(&line("")).unwrap();
        assert_eq!(o.decide(&p).verdict, crate::policy::Verdict::Deny);
    }

    #[test]
    fn hours_round_trip() {
        for ts in ["1970-01-01T00", "2000-02-29T23", "2026-11-25T18", "2100-03-01T05"] {
            let h = hour_of(&format!("{ts}:00:00Z")).unwrap();
            assert_eq!(h, hour_of(&format!("{ts}:59:59.9+00:00")).unwrap());
            assert_eq!(hour_label(h), format!("{ts}:00Z"));
        }
    }
}
