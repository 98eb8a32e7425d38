//! What the audit log keeps of what a consumer sends: keyed hashes of
//! subject keys, the shape of every other value, never the value itself.
//!
//! The audit log is append-only and kept for years, so a value written to
//! it can never be erased. A filter is logged with each value replaced by
//! either the keyed hash of a subject key (the same hash a lookup by that
//! key logs, so "who looked me up?" finds both) or its shape: type, and
//! length for strings. Names the consumer made up (a field no agreement
//! grants, an unregistered purpose) are logged as a keyed hash and length.
//! The hashing itself (HMAC with the broker's audit key) is the caller's.

use serde::{Deserialize, Serialize};

use crate::filter::{Filter, Predicate, Scalar};
use crate::ids::FieldName;

/// A consumer's value as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum LoggedValue {
    /// A subject key: its keyed hash (lowercase hex HMAC-SHA-256).
    Subject { subject: String },
    /// Any other value: its type (`string`, `int`, `float`, `bool`) and,
    /// for strings, its length in bytes.
    Shape {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        len: Option<u64>,
    },
}

impl LoggedValue {
    /// The shape of a value: what the log keeps of a value that is not a
    /// subject key.
    pub fn shape(v: &Scalar) -> LoggedValue {
        let (kind, len) = match v {
            Scalar::String(s) => ("string", Some(s.len() as u64)),
            Scalar::Int(_) => ("int", None),
            Scalar::Float(_) => ("float", None),
            Scalar::Bool(_) => ("bool", None),
        };
        LoggedValue::Shape {
            kind: kind.to_owned(),
            len,
        }
    }
}

/// A string the consumer made up (a field name no agreement grants, an
/// unregistered purpose, an unknown dataset), as the log keeps it: its
/// keyed hash and its length in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashedText {
    /// Lowercase hex HMAC-SHA-256 under the broker's audit key.
    pub hmac: String,
    pub len: u64,
}

impl HashedText {
    /// The form used where the log holds a plain string (a field name in
    /// `fields`, a dataset id): `hmac:<hex>;len=<n>`.
    pub fn token(&self) -> String {
        format!("hmac:{};len={}", self.hmac, self.len)
    }
}

/// How the caller names fields and hashes subject keys while a filter is
/// made loggable.
pub trait Redactor {
    /// The field as the log names it: in clear when it is a known
    /// identifier, otherwise as a [`HashedText::token`].
    fn field(&self, field: &FieldName) -> String;
    /// The keyed hash of `value` when `field` is a subject key of the
    /// dataset; `None` for every other field.
    fn subject(&self, field: &FieldName, value: &Scalar) -> Option<String>;
}

/// The filter as the audit log keeps it: the same structure, fields named
/// by [`Redactor::field`], every value replaced by a [`LoggedValue`]. The
/// keyed hashes of the subject keys it names are pushed onto `subjects`
/// (each once).
pub fn logged_filter(
    filter: &Filter,
    redactor: &dyn Redactor,
    subjects: &mut Vec<String>,
) -> serde_json::Value {
    use serde_json::{Map, Value};
    match filter {
        Filter::All(list) => Value::Object(Map::from_iter([(
            "all".to_owned(),
            Value::Array(
                list.iter()
                    .map(|f| logged_filter(f, redactor, subjects))
                    .collect(),
            ),
        )])),
        Filter::Any(list) => Value::Object(Map::from_iter([(
            "any".to_owned(),
            Value::Array(
                list.iter()
                    .map(|f| logged_filter(f, redactor, subjects))
                    .collect(),
            ),
        )])),
        Filter::Not(inner) => Value::Object(Map::from_iter([(
            "not".to_owned(),
            logged_filter(inner, redactor, subjects),
        )])),
        Filter::Predicate(p) => logged_predicate(p, redactor, subjects),
    }
}

fn logged_predicate(
    p: &Predicate,
    redactor: &dyn Redactor,
    subjects: &mut Vec<String>,
) -> serde_json::Value {
    let mut log = |v: &Scalar| match redactor.subject(&p.field, v) {
        Some(hash) => {
            if !subjects.contains(&hash) {
                subjects.push(hash.clone());
            }
            LoggedValue::Subject { subject: hash }
        }
        None => LoggedValue::shape(v),
    };
    let mut out = serde_json::Map::new();
    out.insert("field".into(), redactor.field(&p.field).into());
    out.insert("op".into(), p.op.as_str().into());
    if let Some(v) = &p.value {
        out.insert("value".into(), to_json(&log(v)));
    }
    if !p.values.is_empty() {
        let values: Vec<serde_json::Value> = p.values.iter().map(|v| to_json(&log(v))).collect();
        out.insert("values".into(), values.into());
    }
    serde_json::Value::Object(out)
}

fn to_json(v: &LoggedValue) -> serde_json::Value {
    match v {
        LoggedValue::Subject { subject } => serde_json::json!({ "subject": subject }),
        LoggedValue::Shape { kind, len: None } => serde_json::json!({ "type": kind }),
        LoggedValue::Shape {
            kind,
            len: Some(len),
        } => serde_json::json!({ "type": kind, "len": len }),
    }
}

/// Whether a filter as stored on the log holds a consumer's values in
/// clear: any predicate whose `value` or `values` is a plain JSON value
/// rather than a [`LoggedValue`] object. Filters of entries written
/// before format version 2 do; later ones never do.
pub fn filter_holds_values(filter: &serde_json::Value) -> bool {
    use serde_json::Value;
    let raw = |v: &Value| !v.is_object();
    match filter {
        Value::Object(map) => {
            if let Some(v) = map.get("value")
                && raw(v)
            {
                return true;
            }
            if let Some(Value::Array(values)) = map.get("values")
                && values.iter().any(raw)
            {
                return true;
            }
            map.iter()
                .filter(|(k, _)| matches!(k.as_str(), "all" | "any" | "not"))
                .any(|(_, v)| filter_holds_values(v))
        }
        Value::Array(list) => list.iter().any(filter_holds_values),
        _ => false,
    }
}

/// Replaces every occurrence of the consumer's own strings (`secrets`) in
/// a text bound for the log with `[redacted]`, longest first. A safety
/// net for messages that quote request values (an error echoing a value,
/// a denial naming a made-up field); texts are meant not to quote them in
/// the first place. Secrets shorter than 4 bytes are left alone: they
/// would garble every message and carry no identity.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    const MARK: &str = "[redacted]";
    let mut out = text.to_owned();
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MARK);
        }
    }
    out
}

/// Replaces every identifier-like word of `text` (a run of ASCII letters,
/// digits and `_`) that is one of `names` with `[redacted]`, whatever its
/// length: for field names the consumer made up, which messages quote as
/// words.
pub fn scrub_words(text: &str, names: &[&str]) -> String {
    if names.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if names.contains(&word.as_str()) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The variants of a consumer's string that messages may quote: the
/// string and its Rust-escaped form (`{:?}`, with and without quotes), whole
/// and cut to the lengths messages cut strings to (64 and 200 bytes).
pub fn secret_forms(s: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(6);
    for cut in [usize::MAX, 64, 200] {
        let t = crate::ids::truncate(s, cut);
        let quoted = format!("{t:?}");
        out.push(quoted[1..quoted.len() - 1].to_owned());
        out.push(quoted);
        out.push(t.to_owned());
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct KeyIsNik;

    impl Redactor for KeyIsNik {
        fn field(&self, field: &FieldName) -> String {
            if field.as_str() == "made_up" {
                "hmac:00;len=7".into()
            } else {
                field.to_string()
            }
        }
        fn subject(&self, field: &FieldName, value: &Scalar) -> Option<String> {
            (field.as_str() == "nik").then(|| format!("h({})", value.describe()))
        }
    }

    fn filter(json: serde_json::Value) -> Filter {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn values_become_subject_hashes_or_shapes() {
        let f = filter(serde_json::json!({"all": [
            {"field": "nik", "op": "in", "values": ["1507011", "1507012", "1507011"]},
            {"field": "nama", "op": "prefix", "value": "SITI"},
            {"not": {"field": "umur", "op": "gt", "value": 17}},
            {"field": "made_up", "op": "is_null"},
        ]}));
        let mut subjects = Vec::new();
        let logged = logged_filter(&f, &KeyIsNik, &mut subjects);
        assert_eq!(
            logged,
            serde_json::json!({"all": [
                {"field": "nik", "op": "in", "values": [
                    {"subject": "h(\"1507011\")"}, {"subject": "h(\"1507012\")"},
                    {"subject": "h(\"1507011\")"}]},
                {"field": "nama", "op": "prefix", "value": {"type": "string", "len": 4}},
                {"not": {"field": "umur", "op": "gt", "value": {"type": "int"}}},
                {"field": "hmac:00;len=7", "op": "is_null"},
            ]})
        );
        assert_eq!(subjects, ["h(\"1507011\")", "h(\"1507012\")"]);
        assert!(!filter_holds_values(&logged));
        let text = logged.to_string();
        assert!(!text.contains("SITI") && !text.contains("17"));
    }

    #[test]
    fn raw_filters_are_recognised() {
        let cases = [
            (
                serde_json::json!({"field": "nik", "op": "eq", "value": "1"}),
                true,
            ),
            (
                serde_json::json!({"field": "a", "op": "in", "values": [1, 2]}),
                true,
            ),
            (
                serde_json::json!({"not": {"all": [{"field": "a", "op": "eq", "value": true}]}}),
                true,
            ),
            (serde_json::json!({"field": "a", "op": "is_null"}), false),
            (
                serde_json::json!({"field": "a", "op": "eq", "value": {"type": "int"}}),
                false,
            ),
            (
                serde_json::json!({"any": [{"field": "a", "op": "in", "values": [{"subject": "ab"}]}]}),
                false,
            ),
        ];
        for (filter, raw) in cases {
            assert_eq!(filter_holds_values(&filter), raw, "{filter}");
        }
    }

    #[test]
    fn scrubbing_removes_every_quoted_form() {
        let secret = format!("MARKER-\"{}\"", "x".repeat(80));
        let secrets = secret_forms(&secret);
        let message = format!(
            "value {:?} is not an integer; purpose {:?}; raw {secret}",
            crate::ids::truncate(&secret, 64),
            secret
        );
        let scrubbed = scrub(&message, &secrets);
        assert!(!scrubbed.contains("MARKER"), "{scrubbed}");
        assert_eq!(scrub("limit = 256", &["256".into()]), "limit = 256");
        assert_eq!(
            scrub("purpose \"ab\" is not", &secret_forms("ab")),
            "purpose [redacted] is not"
        );
        assert_eq!(
            scrub_words("fields ab, abc_d and nik", &["ab", "abc_d"]),
            "fields [redacted], [redacted] and nik"
        );
    }
}
