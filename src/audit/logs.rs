//! egressd's own JSON access logs as input: files (plain or gzipped, e.g.
//! rotated `access.log.1.gz`) or standard input, one event a line. Lines
//! that are not access events (startup messages, other targets) are skipped.

use std::io::{BufRead, BufReader, Read};

use super::Observation;

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
pub fn parse_line(line: &str) -> Option<Observation> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("target").and_then(|t| t.as_str()) != Some(crate::telemetry::ACCESS_TARGET) {
        return None;
    }
    let host = v.get("host")?.as_str()?;
    let port = v.get("port")?.as_u64()?;
    let target = match v.get("kind")?.as_str()? {
        "connect" => format!("CONNECT {host}:{port}"),
        _ => format!(
            "http://{host}:{port}{}",
            v.get("path").and_then(|p| p.as_str()).unwrap_or("/")
        ),
    };
    let mut o = Observation::parse(&target)?;
    o.client = v
        .get("client")
        .and_then(|c| c.as_str())
        .map(|c| c.rsplit_once(':').map_or(c, |(ip, _)| ip).to_string());
    o.time = v.get("timestamp").and_then(|t| t.as_str()).and_then(hour_of);
    Some(o)
}

/// `2026-11-25T18:18:47.1Z` to hours since the epoch (UTC), for windows.
fn hour_of(ts: &str) -> Option<i64> {
    let y: i64 = ts.get(0..4)?.parse().ok()?;
    let m: i64 = ts.get(5..7)?.parse().ok()?;
    let d: i64 = ts.get(8..10)?.parse().ok()?;
    let h: i64 = ts.get(11..13)?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 24 + h)
}

/// Formats hours since the epoch back as `YYYY-MM-DDTHH:00Z`.
pub fn hour_label(hours: i64) -> String {
    let days = hours.div_euclid(24);
    let h = hours.rem_euclid(24);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:00Z")
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

    #[test]
    fn hours_round_trip() {
        for ts in ["1970-01-01T00", "2000-02-29T23", "2026-11-25T18", "2100-03-01T05"] {
            let h = hour_of(&format!("{ts}:00:00Z")).unwrap();
            assert_eq!(hour_label(h), format!("{ts}:00Z"));
        }
    }
}
