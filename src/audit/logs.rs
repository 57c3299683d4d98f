//! egressd's own JSON access logs as input: files (plain or gzipped, e.g.
//! rotated `access.log.1.gz`) or standard input, one event a line. Lines
//! that are not access events (startup messages, other targets) are skipped.

use std::io::{BufRead, BufReader, Read};

use super::Observation;
use crate::access::{EventKind, Record};
use crate::policy::Kind;

/// Bytes handed to a parsing thread at a time (whole lines).
const CHUNK: usize = 1 << 20;

/// Folds every line of `sources` (paths; `-` is stdin; gzip undone) into
/// `A`s, in parallel: one thread reads and un-gzips, `workers` threads
/// each fold a chunk of whole lines into a fresh `A` (`new`, `line`), and
/// this thread hands the chunks' results to `merge` in input order, so the
/// outcome does not depend on which thread was faster. Memory is a few
/// chunks and the `A`s in flight, whatever the input's size. `progress`
/// is advanced by the input's bytes as read (before un-gzipping).
pub fn fold_lines<A: Send>(
    sources: &[String],
    workers: usize,
    progress: &indicatif::ProgressBar,
    new: impl Fn() -> A + Sync,
    line: impl Fn(&mut A, &str) + Sync,
    mut merge: impl FnMut(A),
) -> Result<(), String> {
    use std::collections::BTreeMap;
    use std::sync::mpsc::sync_channel;
    use std::sync::Mutex;

    let workers = workers.max(1);
    let (chunk_tx, chunk_rx) = sync_channel::<(u64, Vec<u8>)>(workers * 2);
    let chunk_rx = Mutex::new(chunk_rx);
    // Bounded too: when merging is slower than parsing, the parsers wait
    // rather than pile up tallies (memory would grow with the input).
    let (done_tx, done_rx) = sync_channel::<(u64, A)>(workers * 2);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<(), String> {
            let mut seq = 0u64;
            for src in sources {
                let mut r = open_counted(src, progress).map_err(|e| format!("{src}: {e}"))?;
                let mut carry: Vec<u8> = Vec::new();
                loop {
                    let mut buf = std::mem::take(&mut carry);
                    buf.reserve(CHUNK + 4096);
                    let start = buf.len();
                    buf.resize(start + CHUNK, 0);
                    let mut filled = start;
                    while filled < buf.len() {
                        match r.read(&mut buf[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(format!("{src}: {e}")),
                        }
                    }
                    buf.truncate(filled);
                    let eof = filled < start + CHUNK;
                    if !eof {
                        // Whole lines only; the rest starts the next chunk.
                        match buf.iter().rposition(|&b| b == b'\n') {
                            Some(nl) => carry = buf.split_off(nl + 1),
                            // A line longer than a chunk: read on.
                            None => {
                                carry = buf;
                                continue;
                            }
                        }
                    }
                    if !buf.is_empty() && chunk_tx.send((seq, buf)).is_err() {
                        return Ok(());
                    }
                    seq += 1;
                    if eof {
                        break;
                    }
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let (chunk_rx, done_tx, new, line) = (&chunk_rx, done_tx.clone(), &new, &line);
            scope.spawn(move || loop {
                let Ok((seq, chunk)) = chunk_rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else {
                    return;
                };
                let mut acc = new();
                for l in chunk.split(|&b| b == b'\n') {
                    let l = l.strip_suffix(b"\r").unwrap_or(l);
                    if l.is_empty() {
                        continue;
                    }
                    match std::str::from_utf8(l) {
                        Ok(l) => line(&mut acc, l),
                        // Not text: read as far as it goes, so that an access
                        // event is counted as unreadable rather than missed.
                        Err(_) => line(&mut acc, &String::from_utf8_lossy(l)),
                    }
                }
                if done_tx.send((seq, acc)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut next = 0u64;
        let mut early: BTreeMap<u64, A> = BTreeMap::new();
        for (seq, acc) in done_rx {
            early.insert(seq, acc);
            while let Some(acc) = early.remove(&next) {
                merge(acc);
                next += 1;
            }
        }
        reader
            .join()
            .unwrap_or_else(|_| Err("the log reader failed".into()))
    })
}

/// Opens `path` (`-` for stdin), transparently un-gzipping, with
/// `progress` counting the bytes read from the file.
fn open_counted(path: &str, progress: &indicatif::ProgressBar) -> std::io::Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(progress.wrap_read(std::fs::File::open(path)?))
    };
    let mut buf = BufReader::with_capacity(1 << 16, raw);
    let gz = buf.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(buf))
    } else {
        Box::new(buf)
    })
}

/// Reads one access-log line; `None` for lines that are not access events.
/// The schema is [`crate::access`]'s.
pub fn parse_line(line: &str) -> Option<Observation> {
    let r = Record::parse(line)?;
    // A DNS question has no port or kind of request to judge again.
    if r.kind == EventKind::Dns {
        return None;
    }
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
    let mut out = String::new();
    write_event_target(&mut out, kind, host, port, path);
    out
}

/// [`event_target`] appended to `out`: the live view reuses one buffer.
pub fn write_event_target(out: &mut String, kind: EventKind, host: &str, port: u16, path: Option<&str>) {
    let kind = target_kind(kind, path.is_some());
    out.push_str(match kind {
        Kind::Connect => "CONNECT ",
        Kind::Http => "http://",
        Kind::Https => "https://",
    });
    out.push_str(host);
    out.push(':');
    out.push_str(itoa::Buffer::new().format(port));
    if kind != Kind::Connect {
        out.push_str(path.unwrap_or("/"));
    }
}

/// How a refused DNS lookup is shown beside refused targets: `DNS A name`.
pub fn write_lookup(out: &mut String, qtype: &str, name: &str) {
    out.push_str("DNS ");
    out.push_str(qtype);
    out.push(' ');
    out.push_str(name);
}

/// A DNS question from an access-log line (kind `dns`).
pub struct Lookup {
    pub name: String,
    pub qtype: String,
    pub client: Option<String>,
    /// Hours since the epoch, when the line has a timestamp.
    pub time: Option<i64>,
}

/// Reads one access-log line as a DNS question; `None` for other lines.
pub fn parse_lookup(line: &str) -> Option<Lookup> {
    let r = Record::parse(line)?;
    if r.kind != EventKind::Dns || r.host.is_empty() {
        return None;
    }
    Some(Lookup {
        name: r.host.into_owned(),
        qtype: r.method.map_or_else(|| "A".to_string(), |m| m.into_owned()),
        client: r
            .client
            .as_deref()
            .map(|c| c.rsplit_once(':').map_or(c, |(ip, _)| ip).to_string()),
        time: r.timestamp.as_deref().and_then(hour_of),
    })
}

/// The kind of request [`event_target`] writes for an event: what parsing
/// that target gives back.
pub fn target_kind(kind: EventKind, has_path: bool) -> Kind {
    match kind {
        EventKind::Connect => Kind::Connect,
        EventKind::Http => Kind::Http,
        EventKind::Inspected => Kind::Https,
        // A redirected HTTP request carries its path; a connection does not.
        EventKind::Transparent if has_path => Kind::Http,
        EventKind::Transparent | EventKind::Dns => Kind::Connect,
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
    fn event_targets_read_as_check_reads_them() {
        let t = |k, path| event_target(k, "a.test", 8443, path);
        assert_eq!(t(EventKind::Connect, None), "CONNECT a.test:8443");
        assert_eq!(t(EventKind::Http, None), "http://a.test:8443/");
        assert_eq!(t(EventKind::Http, Some("/x")), "http://a.test:8443/x");
        assert_eq!(t(EventKind::Inspected, Some("/v2")), "https://a.test:8443/v2");
        assert_eq!(t(EventKind::Transparent, Some("/y")), "http://a.test:8443/y");
        assert_eq!(t(EventKind::Transparent, None), "CONNECT a.test:8443");
        let mut reused = String::from("stale");
        reused.clear();
        write_event_target(&mut reused, EventKind::Connect, "b.test", 443, None);
        assert_eq!(reused, "CONNECT b.test:443");
    }

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

        /// A sink that keeps the lines the log line sink would write.
        struct Lines(std::sync::Mutex<Vec<u8>>);
        impl crate::access::AccessSink for Lines {
            fn record(&self, e: &crate::access::Event) {
                crate::access::line::write_line(e, &mut self.0.lock().unwrap(), true);
            }
        }

        let policy = Policy::from_toml(r#"allow = ["www.example.com"]"#, "t.toml").unwrap();
        let lines = Arc::new(Lines(Default::default()));
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
                    Arc::new([lines.clone() as Arc<dyn crate::access::AccessSink>]),
                );
                ev.raw_target("ignored", cand.path.as_ref().map(|p| p.path.as_str()));
                ev.target(&cand);
                ev.decided(&policy, &policy.decide(&cand));
                ev.finish(Ok::<(), &crate::proxy::respond::ProxyError>(()));
            }
        }
        let out = String::from_utf8(std::mem::take(&mut lines.0.lock().unwrap())).unwrap();
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

    /// Chunks cut at line ends, whatever the threads' timing: every line
    /// once, merged in input order (CRLF, a last line without newline).
    #[test]
    fn lines_fold_in_parallel_and_merge_in_order() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("egressd-fold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.log"), dir.join("b.log"));
        let mut f = std::fs::File::create(&a).unwrap();
        let n = 3 * CHUNK / 8;
        for i in 0..n {
            write!(f, "{i:07}{}", if i % 3 == 0 { "\r\n" } else { "\n" }).unwrap();
        }
        std::fs::write(&b, "last\nno newline").unwrap();
        let sources = [a.display().to_string(), b.display().to_string()];
        let mut all: Vec<String> = Vec::new();
        fold_lines(
            &sources,
            3,
            &indicatif::ProgressBar::hidden(),
            Vec::new,
            |v: &mut Vec<String>, l| v.push(l.to_string()),
            |v| all.extend(v),
        )
        .unwrap();
        assert_eq!(all.len(), n + 2);
        assert!(all[..n].iter().enumerate().all(|(i, l)| *l == format!("{i:07}")));
        assert_eq!(&all[n..], ["last", "no newline"]);
        let missing = fold_lines(
            &["/nonexistent/x.log".into()],
            2,
            &indicatif::ProgressBar::hidden(),
            || (),
            |_, _| {},
            |_| {},
        );
        assert!(missing.unwrap_err().contains("/nonexistent/x.log"));
        std::fs::remove_dir_all(&dir).unwrap();
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
