//! Logging: the subscriber (JSON or readable) and escaping of values taken
//! from requests. The access event itself is [`crate::access`].

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::logsink;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, readable otherwise.
    Auto,
    Json,
    Text,
}

/// Installs the global subscriber and the access log. Lines are written
/// by a writer thread per destination ([`crate::logsink`]), so that
/// formatting stays on the worker that made the line and I/O off the
/// request path; keep the returned guard alive until exit so that
/// buffered lines are written out.
pub fn init(format: LogFormat, access: &logsink::Dest) -> std::io::Result<logsink::Guard> {
    let (main, mut guard) = logsink::Sink::batched(logsink::Dest::Stdout)?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    match access {
        logsink::Dest::Stdout => logsink::set_access(main.clone(), json),
        file => {
            // A file is for machines: always JSON.
            let (sink, g) = logsink::Sink::batched(file.clone())?;
            guard.join(g);
            logsink::set_reopenable(vec![sink.clone()]);
            logsink::set_access(sink, true);
        }
    }
    let filter = EnvFilter::try_from_env("EGRESSD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logsink::MakeWriter(main));
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        // Colours for a person at a terminal only: not in a file or a pipe.
        builder.with_ansi(std::io::stdout().is_terminal()).init();
    }
    Ok(guard)
}

/// Writes a string with control characters escaped, so that no value taken
/// from a request can start a new log line or drive a terminal.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// A field's name with the punctuation before it, in both forms (`,"name":`
/// and ` name=`), joined at compile time by [`key!`](crate::key): a field
/// name costs one copy. Names are the proxy's own and need no escaping.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    json: &'static str,
    text: &'static str,
}

impl Key {
    #[doc(hidden)]
    pub const fn joined(json: &'static str, text: &'static str) -> Key {
        Key { json, text }
    }
}

/// The [`Key`] for a literal field name.
#[macro_export]
macro_rules! key {
    ($name:literal) => {
        $crate::telemetry::Key::joined(concat!(",\"", $name, "\":"), concat!(" ", $name, "="))
    };
}

/// One log line written straight into a buffer, without `tracing`'s
/// per-field machinery: JSON as `tracing_subscriber`'s JSON formatter
/// writes it (the same keys, so readers see no difference), or readable
/// `key=value` text. Every string value is escaped as [`Esc`] escapes.
pub struct Line<'a> {
    b: &'a mut Vec<u8>,
    json: bool,
}

impl<'a> Line<'a> {
    /// Starts a line: timestamp, level, target (text) and message, both
    /// the proxy's own words (written without escaping).
    pub fn start(b: &'a mut Vec<u8>, json: bool, target: &str, message: &str) -> Line<'a> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if json {
            b.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(b, now);
            b.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"");
            own_words(b, message);
            b.push(b'"');
        } else {
            timestamp(b, now);
            b.extend_from_slice(b"  INFO ");
            own_words(b, target);
            b.extend_from_slice(b": ");
            own_words(b, message);
        }
        Line { b, json }
    }

    fn key(&mut self, k: Key) {
        let k = if self.json { k.json } else { k.text };
        self.b.extend_from_slice(k.as_bytes());
    }

    pub fn str(&mut self, k: Key, v: &str) {
        self.key(k);
        if self.json {
            json_str(self.b, v);
        } else {
            esc_into(self.b, v);
        }
    }

    /// A value with no byte that needs escaping: the proxy's own labels
    /// and HTTP tokens (methods), written without the escaper's scan.
    pub fn token(&mut self, k: Key, v: &str) {
        self.key(k);
        if self.json {
            self.b.push(b'"');
            own_words(self.b, v);
            self.b.push(b'"');
        } else {
            own_words(self.b, v);
        }
    }

    pub fn opt_str(&mut self, k: Key, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }

    /// Names joined by commas, as one string.
    pub fn list<'n>(&mut self, k: Key, names: impl Iterator<Item = &'n str>) {
        self.key(k);
        if self.json {
            self.b.push(b'"');
        }
        for (i, n) in names.enumerate() {
            if i > 0 {
                self.b.push(b',');
            }
            escape(self.b, n, self.json);
        }
        if self.json {
            self.b.push(b'"');
        }
    }

    /// A value whose `Display` needs no escaping (addresses).
    pub fn display(&mut self, k: Key, v: impl fmt::Display) {
        use std::io::Write as _;
        self.key(k);
        if self.json {
            self.b.push(b'"');
        }
        let _ = write!(self.b, "{v}");
        if self.json {
            self.b.push(b'"');
        }
    }

    /// A socket address, as `Display` writes it. IPv4 (most of what a
    /// proxy logs, twice per event) is put together in a stack buffer and
    /// copied once: `fmt` went through three nested `Display` impls, and
    /// a copy per octet cost about as much.
    pub fn addr(&mut self, k: Key, v: std::net::SocketAddr) {
        let std::net::SocketAddr::V4(v4) = v else {
            return self.display(k, v);
        };
        self.key(k);
        // `"255.255.255.255:65535"`
        let mut t = [0u8; 23];
        let mut at = 0;
        if self.json {
            t[0] = b'"';
            at = 1;
        }
        for (i, o) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                t[at] = b'.';
                at += 1;
            }
            at = put_decimal(&mut t, at, o.into());
        }
        t[at] = b':';
        at = put_decimal(&mut t, at + 1, v4.port());
        if self.json {
            t[at] = b'"';
            at += 1;
        }
        self.b.extend_from_slice(&t[..at]);
    }

    pub fn u64(&mut self, k: Key, v: u64) {
        self.key(k);
        self.b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// A duration in milliseconds, exact to the nanosecond: integer digits,
    /// then up to six decimals without trailing zeros (at least one, as
    /// JSON floats are written). Integers, not float formatting: every
    /// access line carries one.
    pub fn millis(&mut self, k: Key, d: std::time::Duration) {
        self.key(k);
        let ns = d.as_nanos();
        let mut n = itoa::Buffer::new();
        self.b.extend_from_slice(n.format(ns / 1_000_000).as_bytes());
        self.b.push(b'.');
        let mut digits = [0; 6];
        padded(&mut digits, (ns % 1_000_000) as u64);
        let keep = digits.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1);
        self.b.extend_from_slice(&digits[..keep]);
    }

    pub fn bool(&mut self, k: Key, v: bool) {
        self.key(k);
        self.b.extend_from_slice(if v { b"true" } else { b"false" });
    }

    /// Ends the line (JSON names the target last, as `tracing` does).
    pub fn end(self, target: &str) {
        if self.json {
            self.b.extend_from_slice(b",\"target\":\"");
            own_words(self.b, target);
            self.b.extend_from_slice(b"\"}");
        }
        self.b.push(b'\n');
    }
}

/// The proxy's own words (labels, targets, method tokens): nothing in
/// them needs escaping, so they are copied without a scan.
fn own_words(b: &mut Vec<u8>, v: &str) {
    debug_assert!(v.bytes().all(|c| SPECIAL[usize::from(c)] == 0), "{v:?}");
    b.extend_from_slice(v.as_bytes());
}

/// `v` in decimal at `t[at..]`, without leading zeros; returns the end.
fn put_decimal(t: &mut [u8], at: usize, v: u16) -> usize {
    let len = match v {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    padded(&mut t[at..at + len], v.into());
    at + len
}

/// RFC 3339 UTC with microseconds, as `tracing_subscriber` writes it.
/// The date and time of day change once a second, so each thread keeps
/// the last second's text and writes only the microseconds anew.
fn timestamp(b: &mut Vec<u8>, since_epoch: std::time::Duration) {
    thread_local! {
        static LAST: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let secs = since_epoch.as_secs();
    let text = LAST.with(|last| {
        let (at, text) = last.get();
        if at == secs {
            return text;
        }
        let text = date_time(secs);
        last.set((secs, text));
        text
    });
    b.extend_from_slice(&text);
    b.push(b'.');
    let mut micros = [0; 6];
    padded(&mut micros, u64::from(since_epoch.subsec_micros()));
    b.extend_from_slice(&micros);
    b.push(b'Z');
}

/// `v`'s last `out.len()` decimal digits into `out`, zero-padded.
fn padded(out: &mut [u8], mut v: u64) {
    for c in out.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the epoch.
fn date_time(secs: u64) -> [u8; 19] {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut t = *b"0000-00-00T00:00:00";
    for (at, n, v) in [
        (0, 4, year as u64),
        (5, 2, month as u64),
        (8, 2, day as u64),
        (11, 2, rem / 3600),
        (14, 2, rem / 60 % 60),
        (17, 2, rem % 60),
    ] {
        padded(&mut t[at..at + n], v);
    }
    t
}

/// The control character starting at `s[i]`, if any, and its length:
/// C0, DEL and the two-byte C1 range (what `char::is_control` is).
fn control_at(s: &[u8], i: usize) -> Option<(u32, usize)> {
    match s[i] {
        c @ (0..=0x1f | 0x7f) => Some((u32::from(c), 1)),
        0xc2 => match s.get(i + 1) {
            Some(&c @ 0x80..=0x9f) => Some((u32::from(c), 2)),
            _ => None,
        },
        _ => None,
    }
}

/// `v` with control characters written as [`Esc`] writes them.
fn esc_into(b: &mut Vec<u8>, v: &str) {
    escape(b, v, false);
}

/// `v` as a JSON string of its [`Esc`] form.
fn json_str(b: &mut Vec<u8>, v: &str) {
    b.push(b'"');
    escape(b, v, true);
    b.push(b'"');
}

/// Bytes [`escape`] must look at: [`CONTROL`] in both forms (C0, DEL and
/// the lead byte of C1), [`QUOTE`] in JSON only. One table load per byte
/// instead of six comparisons: every string in every access line passes.
const SPECIAL: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = CONTROL;
        c += 1;
    }
    t[0x7f] = CONTROL;
    t[0xc2] = CONTROL;
    t[b'"' as usize] = QUOTE;
    t[b'\\' as usize] = QUOTE;
    t
};
const CONTROL: u8 = 1;
const QUOTE: u8 = 2;

fn escape(b: &mut Vec<u8>, v: &str, json: bool) {
    use std::io::Write as _;
    let s = v.as_bytes();
    let mask = if json { CONTROL | QUOTE } else { CONTROL };
    let (mut i, mut copied) = (0, 0);
    while i < s.len() {
        let c = s[i];
        if SPECIAL[usize::from(c)] & mask == 0 {
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\\' {
            b.extend_from_slice(&s[copied..i]);
            b.extend_from_slice(if c == b'"' { b"\\\"" } else { b"\\\\" });
            i += 1;
            copied = i;
        } else if let Some((cp, len)) = control_at(s, i) {
            b.extend_from_slice(&s[copied..i]);
            let slash: &[u8] = if json { b"\\\\" } else { b"\\" };
            b.extend_from_slice(slash);
            let _ = write!(b, "u{{{cp:x}}}");
            i += len;
            copied = i;
        } else {
            i += 1;
        }
    }
    b.extend_from_slice(&s[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_octet_and_port_width_is_written_as_display_writes_it() {
        let ports = [0u16, 9, 10, 99, 100, 999, 1000, 9999, 10_000, 65_535];
        for o in 0..=255u8 {
            let a =
                std::net::SocketAddr::from(([o, 255 - o, o / 10, 7], ports[usize::from(o) % ports.len()]));
            let mut b = Vec::new();
            Line::start(&mut b, true, "t", "m").addr(crate::key!("a"), a);
            let text = String::from_utf8(b).unwrap();
            assert!(text.ends_with(&format!(",\"a\":\"{a}\"")), "{text}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "255.255.255.255:65535",
            "10.20.3.4:443",
            "[::1]:80",
            "[fe80::1%2]:9",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            for json in [true, false] {
                let mut b = Vec::new();
                Line::start(&mut b, json, "t", "m").addr(crate::key!("a"), a);
                let text = String::from_utf8(b).unwrap();
                let want = if json {
                    format!(",\"a\":\"{a}\"")
                } else {
                    format!(" a={a}")
                };
                assert!(text.ends_with(&want), "{text} / {want}");
            }
        }
    }

    #[test]
    fn milliseconds_are_exact_decimals() {
        for (ns, want) in [
            (0, "0.0"),
            (1, "0.000001"),
            (250_000, "0.25"),
            (2_000_000, "2.0"),
            (1_234_567_891, "1234.567891"),
            (u64::MAX, "18446744073709.551615"),
        ] {
            let mut b = Vec::new();
            let mut l = Line::start(&mut b, false, "t", "m");
            l.millis(crate::key!("ms"), std::time::Duration::from_nanos(ns));
            let text = String::from_utf8(b).unwrap();
            assert!(text.ends_with(&format!(" ms={want}")), "{text}");
            let back: f64 = want.parse().unwrap();
            assert!((back - ns as f64 / 1e6).abs() <= 1e-9 * back.max(1.0), "{want}");
        }
    }

    #[test]
    fn lines_escape_as_esc_then_json() {
        let hostile = "a\nb\u{1b}[31m\u{85}\"q\\ ü/";
        let mut b = Vec::new();
        let mut l = Line::start(&mut b, true, "egressd::x", "hi");
        l.str(crate::key!("v"), hostile);
        l.u64(crate::key!("n"), 42);
        l.millis(crate::key!("ms"), std::time::Duration::from_micros(250));
        l.bool(crate::key!("ok"), true);
        l.opt_str(crate::key!("none"), None);
        l.end("egressd::x");
        let text = String::from_utf8(b).unwrap();
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["v"], Esc(hostile).to_string());
        assert_eq!(v["n"], 42);
        assert_eq!(v["ms"], 0.25);
        assert_eq!(v["ok"], true);
        assert_eq!(v["target"], "egressd::x");
        assert_eq!(v["message"], "hi");
        assert!(v.get("none").is_none());
        let ts = v["timestamp"].as_str().unwrap();
        let parsed = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!((now - parsed).whole_seconds().abs() < 60, "{ts}");
        assert_eq!(ts.len(), "2026-11-25T18:18:47.119857Z".len());

        let mut b = Vec::new();
        let mut l = Line::start(&mut b, false, "egressd::x", "hi");
        l.str(crate::key!("v"), hostile);
        l.end("egressd::x");
        let text = String::from_utf8(b).unwrap();
        assert!(
            text.ends_with(&format!("INFO egressd::x: hi v={}\n", Esc(hostile))),
            "{text}"
        );
    }

    #[test]
    fn timestamps_are_civil_dates() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (1_795_000_000, "2026-11-18T11:06:40.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
        ] {
            let mut b = Vec::new();
            timestamp(&mut b, std::time::Duration::from_secs(secs));
            assert_eq!(String::from_utf8(b).unwrap(), want);
            // The same second again, from the thread's cached text.
            let mut b = Vec::new();
            timestamp(&mut b, std::time::Duration::new(secs, 123_456_789));
            let want = want.replace(".000000Z", ".123456Z");
            assert_eq!(String::from_utf8(b).unwrap(), want);
        }
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(Esc("a\nb\u{1b}[31m").to_string(), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(Esc("plain/ü").to_string(), "plain/ü");
    }

    #[test]
    fn the_byte_escaper_writes_what_esc_and_json_write() {
        // Every char up to U+07FF (all one- and two-byte forms, so every C1
        // control and every other 0xc2 sequence) between plain bytes.
        for c in (0..0x800u32).filter_map(char::from_u32) {
            let v = format!("a{c}b{c}");
            let (mut text, mut json) = (Vec::new(), Vec::new());
            esc_into(&mut text, &v);
            json_str(&mut json, &v);
            let want = Esc(&v).to_string();
            assert_eq!(String::from_utf8(text).unwrap(), want, "{:x}", c as u32);
            let back: String = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, want, "{:x}", c as u32);
        }
    }
}
