//! Chromium's NetLog (`chrome://net-export`, or `--log-net-log=FILE`) as
//! input: every `URL_REQUEST_START_JOB` is a request the browser started,
//! with its method and URL, whatever answered it. Read as a stream, like
//! HAR files: `constants` first (event type numbers differ between
//! Chromium versions, so they are looked up by name), then `events` one at
//! a time, skipping the rest unparsed. A log cut short (Chromium killed
//! while writing) yields the requests before the cut, and says so.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A request the browser started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLogRequest {
    pub method: String,
    pub url: String,
    /// Unix time in milliseconds, when the log says.
    pub time_ms: Option<i64>,
}

/// How a NetLog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Complete,
    /// The file ends inside `events`: the requests before the cut were read.
    Truncated,
}

#[derive(Deserialize)]
struct Constants {
    #[serde(rename = "logEventTypes")]
    types: HashMap<String, u32>,
    #[serde(rename = "logEventPhase", default)]
    phases: HashMap<String, u32>,
    #[serde(rename = "timeTickOffset", default)]
    offset: Option<Number>,
}

/// Chromium writes some numbers as strings, some as numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn get(&self) -> Option<i64> {
        match self {
            Number::Int(n) => Some(*n),
            Number::Text(s) => s.parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: u32,
    #[serde(default)]
    phase: Option<u32>,
    #[serde(default)]
    time: Option<Number>,
    #[serde(default)]
    params: Option<Params>,
}

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    method: Option<String>,
}

/// What the event visitor needs from `constants`.
struct Wanted {
    start_job: u32,
    begin: u32,
    offset: i64,
}

/// Calls `f` for every request the log shows the browser starting.
pub fn for_each_request<R: Read>(
    reader: R,
    mut f: impl FnMut(NetLogRequest),
) -> Result<End, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut in_events = false;
    match (Log {
        f: &mut f,
        in_events: &mut in_events,
    })
    .deserialize(&mut de)
    {
        Ok(()) => de.end().map(|()| End::Complete),
        Err(e) if e.is_eof() && in_events => Ok(End::Truncated),
        Err(e) => Err(e),
    }
}

struct Log<'a, F> {
    f: &'a mut F,
    in_events: &'a mut bool,
}

impl<'de, F: FnMut(NetLogRequest)> DeserializeSeed<'de> for Log<'_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(NetLogRequest)> Visitor<'de> for Log<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a NetLog object with `constants` and `events`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut wanted: Option<Wanted> = None;
        let mut saw_events = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "constants" => {
                    let c: Constants = map.next_value()?;
                    let start_job = *c.types.get("URL_REQUEST_START_JOB").ok_or_else(|| {
                        de::Error::custom("constants.logEventTypes has no URL_REQUEST_START_JOB")
                    })?;
                    wanted = Some(Wanted {
                        start_job,
                        begin: c.phases.get("PHASE_BEGIN").copied().unwrap_or(1),
                        offset: c.offset.as_ref().and_then(Number::get).unwrap_or(0),
                    });
                }
                "events" => {
                    let Some(w) = wanted.as_ref() else {
                        return Err(de::Error::custom(
                            "`events` before `constants`: not a NetLog file",
                        ));
                    };
                    *self.in_events = true;
                    saw_events = true;
                    map.next_value_seed(Events { w, f: &mut *self.f })?;
                    *self.in_events = false;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if wanted.is_none() {
            return Err(de::Error::missing_field("constants"));
        }
        if !saw_events {
            return Err(de::Error::missing_field("events"));
        }
        Ok(())
    }
}

struct Events<'a, F> {
    w: &'a Wanted,
    f: &'a mut F,
}

impl<'de, F: FnMut(NetLogRequest)> DeserializeSeed<'de> for Events<'_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(NetLogRequest)> Visitor<'de> for Events<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of NetLog events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<Event>()? {
            if e.kind != self.w.start_job || e.phase.is_some_and(|p| p != self.w.begin) {
                continue;
            }
            let Some(Params {
                url: Some(url),
                method,
            }) = e.params
            else {
                continue;
            };
            (self.f)(NetLogRequest {
                method: method.unwrap_or_else(|| "GET".into()),
                url,
                time_ms: e.time.as_ref().and_then(Number::get).map(|t| t + self.w.offset),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"constants":{"logEventTypes":{"SOCKET_ALIVE":3,"URL_REQUEST_START_JOB":107},
        "logEventPhase":{"PHASE_BEGIN":1,"PHASE_END":2,"PHASE_NONE":0},"timeTickOffset":1796187609495,
        "netError":{"ERR_FAILED":-2}},
      "events":[
        {"params":{"x":1},"phase":0,"source":{"id":3,"type":0},"time":"10","type":3},
        {"params":{"method":"GET","url":"https://app.test/page?q=1","load_flags":0},"phase":1,"source":{"id":7,"type":1},"time":"1000","type":107},
        {"params":{"net_error":-111},"phase":2,"source":{"id":7,"type":1},"time":"1001","type":107},
        {"params":{"method":"POST","url":"https://api.test/v1"},"phase":1,"source":{"id":8,"type":1},"time":"2000","type":107}
      ],
      "polledData":{"big":[1,2,3]}}"#;

    #[test]
    fn reads_request_starts_by_their_type_name() {
        let mut seen = Vec::new();
        assert_eq!(
            for_each_request(LOG.as_bytes(), |r| seen.push(r)).unwrap(),
            End::Complete
        );
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].url, "https://app.test/page?q=1");
        assert_eq!(seen[0].time_ms, Some(1796187610495));
        assert_eq!(
            (seen[1].method.as_str(), seen[1].url.as_str()),
            ("POST", "https://api.test/v1")
        );
    }

    #[test]
    fn a_log_cut_short_keeps_what_came_before() {
        let cut = &LOG[..LOG.find(r#"{"params":{"method":"POST""#).unwrap() + 20];
        let mut seen = Vec::new();
        assert_eq!(
            for_each_request(cut.as_bytes(), |r| seen.push(r)).unwrap(),
            End::Truncated
        );
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn other_json_is_an_error() {
        let har = r#"{"log":{"entries":[]}}"#;
        assert!(for_each_request(har.as_bytes(), |_| {}).is_err());
        let early = r#"{"events":[],"constants":{"logEventTypes":{"URL_REQUEST_START_JOB":1}}}"#;
        assert!(for_each_request(early.as_bytes(), |_| {}).is_err());
        assert!(for_each_request(&b"{\"constants\":{\"logEventTypes\":{}}"[..], |_| {}).is_err());
        assert!(for_each_request(&b"[1,2]"[..], |_| {}).is_err());
    }
}
