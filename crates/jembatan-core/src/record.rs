//! Records as they travel: each one a JSON object text, keys in column
//! order. The adapter encodes them from database rows; the broker reads
//! their keys (to hold them to the grant) or parses them (to mask or
//! translate).

use std::fmt::Write;

use serde::de::IgnoredAny;
use serde_json::{Map, Value};

/// Encodes records with a fixed list of keys. Each key's JSON text is
/// written once, here; a record then costs its values and one string.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    /// `"name":` for each column, the first without a leading comma.
    prefixes: Vec<String>,
    /// Bytes of the last record encoded, to size the next one.
    hint: usize,
}

impl RecordEncoder {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> RecordEncoder {
        let prefixes: Vec<String> = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                // Serializing a string cannot fail.
                let key = serde_json::to_string(name).unwrap_or_default();
                format!("{}{key}:", if i == 0 { "" } else { "," })
            })
            .collect();
        let hint = 2 + prefixes.iter().map(|p| p.len() + 16).sum::<usize>();
        RecordEncoder { prefixes, hint }
    }

    /// Encodes one record; `value(i)` gives the value of key `i`. The first
    /// error stops the record and is returned.
    pub fn encode<E>(
        &mut self,
        mut value: impl FnMut(usize) -> Result<Value, E>,
    ) -> Result<String, E> {
        let mut out = String::with_capacity(self.hint);
        out.push('{');
        for (i, prefix) in self.prefixes.iter().enumerate() {
            out.push_str(prefix);
            // Value's Display writes its JSON text; writing to a String
            // cannot fail.
            let _ = write!(out, "{}", value(i)?);
        }
        out.push('}');
        self.hint = self.hint.max(out.len());
        Ok(out)
    }
}

/// The keys of one record text in order, borrowed from it (a repeated key
/// appears twice). Values are skipped, not built. A key written with JSON escapes cannot be borrowed and is an
/// error (field names never need them).
pub fn record_keys(record: &str) -> Result<Vec<&str>, serde_json::Error> {
    let Keys(keys) = serde_json::from_str(record)?;
    Ok(keys)
}

/// The keys of a JSON object, in order, values skipped.
struct Keys<'a>(Vec<&'a str>);

impl<'de> serde::Deserialize<'de> for Keys<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Keys<'de>, A::Error> {
                let mut keys = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(key) = map.next_key::<&'de str>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// One record text parsed into its object.
pub fn parse_record(record: &str) -> Result<Map<String, Value>, serde_json::Error> {
    serde_json::from_str(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_keys_in_order_with_escapes() {
        let mut encoder = RecordEncoder::new(["nik", "nama", "a\"b"]);
        let values = [json!("3201"), json!("SITI \"S\" \u{1}"), Value::Null];
        let text = encoder.encode(|i| Ok::<_, ()>(values[i].clone())).unwrap();
        assert_eq!(
            text,
            r#"{"nik":"3201","nama":"SITI \"S\" \u0001","a\"b":null}"#
        );
        let parsed = parse_record(&text).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed["a\"b"], Value::Null);
        assert_eq!(parsed["nama"], values[1]);
    }

    #[test]
    fn an_error_stops_the_record() {
        let mut encoder = RecordEncoder::new(["a", "b"]);
        let got = encoder.encode(|i| if i == 1 { Err(i) } else { Ok(json!(1)) });
        assert_eq!(got, Err(1));
        assert_eq!(
            RecordEncoder::new([]).encode(|_| Ok::<_, ()>(json!(1))),
            Ok("{}".into())
        );
    }

    #[test]
    fn keys_are_borrowed_and_escaped_keys_refused() {
        let keys = record_keys(r#"{"b":{"x":[1,2]},"a":null}"#).unwrap();
        assert_eq!(keys, ["b", "a"]);
        assert!(record_keys(r#"{"a\"":1}"#).is_err());
        assert!(record_keys("[1]").is_err());
        assert!(record_keys(r#"{"a":1"#).is_err());
    }
}
