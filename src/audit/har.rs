//! HAR files (HTTP Archive, as Chrome and Firefox export them), read as a
//! stream: `log.entries` is visited one entry at a time and everything but
//! each request's method and URL is skipped unparsed, so a 100 MB export
//! with response bodies costs little more memory than one entry.

use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The part of an entry egressd needs.
#[derive(Debug, Deserialize)]
pub struct HarRequest {
    pub method: String,
    pub url: String,
    /// The entry's `startedDateTime` (RFC 3339), when present.
    #[serde(skip)]
    pub started: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    request: HarRequest,
    #[serde(rename = "startedDateTime", default)]
    started: Option<String>,
}

/// Calls `f` for every entry's request, in file order.
pub fn for_each_request<R: Read>(reader: R, mut f: impl FnMut(HarRequest)) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let entries = Field {
        key: "entries",
        seed: Entries(&mut f),
    };
    Field {
        key: "log",
        seed: entries,
    }
    .deserialize(&mut de)?;
    de.end()
}

/// An object of which only `key` matters: its value goes to `seed`, every
/// other member is skipped unparsed, and a missing `key` is an error.
struct Field<S> {
    key: &'static str,
    seed: S,
}

struct Entries<'a, F>(&'a mut F);

impl<'de, S: DeserializeSeed<'de, Value = ()>> DeserializeSeed<'de> for Field<S> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de, Value = ()>> Visitor<'de> for Field<S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a HAR object with `{}`", self.key)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seed = Some(self.seed);
        while let Some(key) = map.next_key::<String>()? {
            match seed.take() {
                Some(s) if key == self.key => map.next_value_seed(s)?,
                other => {
                    seed = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match seed {
            Some(_) => Err(de::Error::missing_field(self.key)),
            None => Ok(()),
        }
    }
}

impl<'de, F: FnMut(HarRequest)> DeserializeSeed<'de> for Entries<'_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(HarRequest)> Visitor<'de> for Entries<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of HAR entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(mut e) = seq.next_element::<Entry>()? {
            e.request.started = e.started;
            (self.0)(e.request);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_and_skips_the_rest() {
        let har = r#"{"log":{"version":"1.2","creator":{"name":"WebInspector","version":"537.36"},
          "pages":[{"id":"page_1"}],
          "entries":[
            {"startedDateTime":"2026-01-01T00:00:00Z","request":{"method":"GET","url":"https://www.qualtrics.com/","headers":[]},
             "response":{"status":200,"content":{"size":3,"text":"abc"}}},
            {"request":{"method":"POST","url":"https://unpkg.com/x","postData":{"text":"{}"}},"response":{}}
          ]}}"#;
        let mut seen = Vec::new();
        for_each_request(har.as_bytes(), |r| seen.push((r.method, r.url))).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], ("POST".to_string(), "https://unpkg.com/x".to_string()));
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(for_each_request(&b"{\"log\":{}}"[..], |_| {}).is_err());
        assert!(for_each_request(&b"[1,2]"[..], |_| {}).is_err());
        assert!(for_each_request(&b"{\"log\":{\"entries\":[{\"request\":{}}]}}"[..], |_| {}).is_err());
    }
}
