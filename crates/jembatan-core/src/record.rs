//! Records as they travel: each one a JSON object text, keys in column
//! order. The adapter encodes them from database rows; the broker reads
//! their keys (to hold them to the grant) or parses them (to mask or
//! translate).

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde_json::{Map, Value};

/// One value of a record being encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Text, written as a JSON string: borrowed from where it was read
    /// (a database row), without a copy.
    Text(&'a str),
    Json(Value),
}

impl From<Value> for Cell<'_> {
    fn from(v: Value) -> Self {
        Cell::Json(v)
    }
}

impl Cell<'_> {
    /// The value as JSON, text copied into a string.
    pub fn into_value(self) -> Value {
        match self {
            Cell::Text(text) => Value::String(text.to_owned()),
            Cell::Json(v) => v,
        }
    }
}

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
    pub fn encode<'v, E>(
        &mut self,
        mut value: impl FnMut(usize) -> Result<Cell<'v>, E>,
    ) -> Result<String, E> {
        let mut out = Vec::with_capacity(self.hint);
        out.push(b'{');
        for (i, prefix) in self.prefixes.iter().enumerate() {
            out.extend_from_slice(prefix.as_bytes());
            // the compact JSON text Value's Display writes, without the
            // formatter between; writing a string or a Value to a Vec
            // cannot fail
            let _ = match value(i)? {
                Cell::Text(text) => serde_json::to_writer(&mut out, text),
                Cell::Json(v) => serde_json::to_writer(&mut out, &v),
            };
        }
        out.push(b'}');
        self.hint = self.hint.max(out.len());
        // the prefixes are strings and serde_json writes UTF-8: the
        // lossy branch is never taken
        Ok(String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
}

/// The keys of one record text in order, borrowed from it (a repeated key
/// appears twice). Values are skipped, not built. A key written with JSON escapes cannot be borrowed and is an
/// error (field names never need them).
pub fn record_keys(record: &str) -> Result<Vec<&str>, serde_json::Error> {
    let Keys(keys) = serde_json::from_str(record)?;
    Ok(keys)
}

/// The first key of one record text that is not in `allowed`, or `None`
/// when every key is: the check of [`record_keys`] without collecting
/// them. Keys are looked for at their own position in `allowed` first,
/// as a record written in the columns' order has them. Values are
/// skipped, not built; a key written with JSON escapes is an error.
pub fn key_outside<'a>(
    record: &'a str,
    allowed: &[String],
) -> Result<Option<&'a str>, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(record);
    let outside = KeyOutside(allowed).deserialize(&mut de)?;
    de.end()?;
    Ok(outside)
}

/// Finds the first key of an object outside the allowed ones.
struct KeyOutside<'s>(&'s [String]);

impl<'de> serde::de::DeserializeSeed<'de> for KeyOutside<'_> {
    type Value = Option<&'de str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyOutside<'_> {
    type Value = Option<&'de str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let allowed = self.0;
        let mut outside = None;
        let mut i = 0;
        while let Some(key) = map.next_key::<&'de str>()? {
            map.next_value::<IgnoredAny>()?;
            let known =
                allowed.get(i).is_some_and(|a| a == key) || allowed.iter().any(|a| a == key);
            if !known && outside.is_none() {
                outside = Some(key);
            }
            i += 1;
        }
        Ok(outside)
    }
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

/// Reads record texts, one after another, into one object kept between
/// them: a key the record before also had keeps its string, and a text
/// value is written into the string it replaces. The object read is
/// exactly what [`parse_record`] gives for the same text; only keys of a
/// fixed list are accepted.
///
/// For a run of records with the same keys, as an adapter sends them,
/// this saves building and freeing a map for every record.
#[derive(Debug)]
pub struct RecordReader {
    /// The allowed keys, each once.
    allowed: Vec<String>,
    /// Which allowed keys the record being read holds.
    seen: Vec<bool>,
    record: Map<String, Value>,
}

/// Why a record text could not be read.
#[derive(Debug)]
pub enum ReadError<'t> {
    /// The text is not one JSON object.
    NotAnObject(serde_json::Error),
    /// The object holds a key that is not allowed: the first in the text.
    Outside(Cow<'t, str>),
}

impl RecordReader {
    /// A reader accepting the keys in `allowed`.
    pub fn new(allowed: &[String]) -> RecordReader {
        let mut distinct: Vec<String> = Vec::with_capacity(allowed.len());
        for key in allowed {
            if !distinct.contains(key) {
                distinct.push(key.clone());
            }
        }
        RecordReader {
            seen: vec![false; distinct.len()],
            allowed: distinct,
            record: Map::new(),
        }
    }

    /// Reads one record text. A text that is not a JSON object is
    /// [`ReadError::NotAnObject`] whatever its keys; an object with a key
    /// outside the allowed ones is [`ReadError::Outside`].
    pub fn read<'t>(&mut self, text: &'t str) -> Result<&mut Map<String, Value>, ReadError<'t>> {
        use serde::de::DeserializeSeed;
        self.seen.fill(false);
        let mut de = serde_json::Deserializer::from_str(text);
        let into = ReadInto {
            allowed: &self.allowed,
            seen: &mut self.seen,
            record: &mut self.record,
        };
        let outside = into
            .deserialize(&mut de)
            .and_then(|outside| de.end().map(|()| outside))
            .map_err(ReadError::NotAnObject)?;
        if let Some(key) = outside {
            return Err(ReadError::Outside(key));
        }
        // the keys of the record before that this one does not hold
        if self.record.len() > self.seen.iter().filter(|s| **s).count() {
            for (key, seen) in self.allowed.iter().zip(&self.seen) {
                if !seen {
                    self.record.remove(key);
                }
            }
        }
        Ok(&mut self.record)
    }
}

/// Reads one object into a kept map: the first key outside the allowed
/// ones, if any.
struct ReadInto<'r> {
    allowed: &'r [String],
    seen: &'r mut [bool],
    record: &'r mut Map<String, Value>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ReadInto<'_> {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ReadInto<'_> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // what `Map`'s own visitor says
        f.write_str("a map")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut outside = None;
        let mut i = 0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // a record written in the allowed keys' order has each key at
            // its own position
            let at = match self.allowed.get(i) {
                Some(a) if *a == *key => Some(i),
                _ => self.allowed.iter().position(|a| *a == *key),
            };
            i += 1;
            let Some(at) = at else {
                map.next_value::<IgnoredAny>()?;
                outside.get_or_insert(key);
                continue;
            };
            self.seen[at] = true;
            match self.record.get_mut(&*key) {
                Some(slot) => map.next_value_seed(InPlace(slot))?,
                None => {
                    let value = map.next_value::<Value>()?;
                    self.record.insert(self.allowed[at].clone(), value);
                }
            }
        }
        Ok(outside)
    }
}

/// An object key, borrowed from the text unless written with escapes.
struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Reads a value over the one in place: text into its string when both
/// are text; any other value as `Value`'s own deserializer builds it.
struct InPlace<'v>(&'v mut Value);

impl<'de> serde::de::DeserializeSeed<'de> for InPlace<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for InPlace<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        match self.0 {
            Value::String(s) => {
                s.clear();
                s.push_str(v);
            }
            other => *other = Value::String(v.to_owned()),
        }
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        *self.0 = Value::String(v);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        *self.0 = Value::Bool(v);
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        *self.0 = Value::from(v);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        *self.0 = Value::from(v);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // as `Value`'s visitor: a float JSON cannot hold is null
        *self.0 = serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        *self.0 = Value::Null;
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        *self.0 = Value::Null;
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        use serde::Deserialize;
        *self.0 = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        use serde::Deserialize;
        *self.0 = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_outside_the_allowed_ones_is_found_in_any_order() {
        let allowed: Vec<String> = ["nik", "nama", "kec"].map(String::from).to_vec();
        let ok = r#"{"nik":"3201","nama":"Ani \"A\"","kec":{"a":[1,2]}}"#;
        assert_eq!(key_outside(ok, &allowed).unwrap(), None);
        let shuffled = r#"{"kec":1,"nik":"3201"}"#;
        assert_eq!(key_outside(shuffled, &allowed).unwrap(), None);
        let extra = r#"{"nik":"3201","alamat":"x","agama":"y"}"#;
        assert_eq!(key_outside(extra, &allowed).unwrap(), Some("alamat"));
        assert_eq!(key_outside("{}", &allowed).unwrap(), None);
        for bad in [
            "[1]",
            "\"nik\"",
            "{\"nik\":1",
            "{\"nik\":1} x",
            "{\"n\\u0069k\":1}",
        ] {
            assert!(key_outside(bad, &allowed).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_keys_in_order_with_escapes() {
        let mut encoder = RecordEncoder::new(["nik", "nama", "a\"b"]);
        let values = [json!("3201"), json!("SITI \"S\" \u{1}"), Value::Null];
        let text = encoder
            .encode(|i| Ok::<_, ()>(values[i].clone().into()))
            .unwrap();
        assert_eq!(
            text,
            r#"{"nik":"3201","nama":"SITI \"S\" \u0001","a\"b":null}"#
        );
        let parsed = parse_record(&text).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed["a\"b"], Value::Null);
        assert_eq!(parsed["nama"], values[1]);
    }

    /// A JSON value of any shape, with text that needs escapes.
    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The encoder writes each value as its compact JSON text, as
        /// `Value`'s `Display` does, text borrowed or not.
        #[test]
        fn a_record_is_each_value_as_its_json_text(
            names in proptest::collection::vec(proptest::prelude::any::<String>(), 0..6),
            values in proptest::collection::vec(any_value(), 6),
        ) {
            let mut encoder = RecordEncoder::new(names.iter().map(String::as_str));
            // strings both borrowed and as values
            let text = encoder
                .encode(|i| {
                    Ok::<_, ()>(match &values[i] {
                        Value::String(s) if i % 2 == 0 => Cell::Text(s),
                        v => Cell::Json(v.clone()),
                    })
                })
                .unwrap();
            let mut want = String::from("{");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    want.push(',');
                }
                want.push_str(&format!("{}:{}", Value::String(name.clone()), values[i]));
            }
            want.push('}');
            proptest::prop_assert_eq!(text, want);
        }
    }

    /// Keys a generated record is made of: allowed ones, one written
    /// with an escape, and two that are not allowed.
    const POOL: [&str; 6] = ["nik", "nama", "a\"b", "kec", "alamat", "x"];

    /// An object of keys from [`POOL`] in any order, repeats among them.
    fn any_object_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let entry = (0..POOL.len(), any_value());
        proptest::collection::vec(entry, 0..8).prop_map(|entries| {
            let fields: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(POOL[*k].into())))
                .collect();
            format!("{{{}}}", fields.join(","))
        })
    }

    /// One record text: an object, an object with a key written with an
    /// escape, or a text that is not an object.
    fn any_record_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            6 => any_object_text(),
            1 => any_object_text().prop_map(|t| t.replace("\"nik\"", "\"n\\u0069k\"")),
            1 => any_value().prop_map(|v| v.to_string()),
            1 => ".{0,12}",
            1 => (any_record_prefix(), ".{0,3}").prop_map(|(a, b)| a + &b),
        ]
    }

    fn any_record_prefix() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        any_value().prop_map(|v| {
            let text = serde_json::json!({"nik": v, "nama": "x"}).to_string();
            let mut half = text.len() / 2;
            while !text.is_char_boundary(half) {
                half -= 1;
            }
            text[..half].to_owned()
        })
    }

    proptest::proptest! {
        /// Reading records one after another into one kept object gives,
        /// for each, what parsing it alone gives, and refuses exactly the
        /// texts that are not objects or hold a key not allowed.
        #[test]
        fn a_reader_reads_each_record_as_parsing_it_alone(
            texts in proptest::collection::vec(any_record_text(), 1..12),
        ) {
            let allowed: Vec<String> = ["nama", "nik", "a\"b", "kec", "nik"].map(String::from).to_vec();
            let mut reader = RecordReader::new(&allowed);
            for text in &texts {
                let alone = parse_record(text);
                match (reader.read(text), alone) {
                    (Ok(read), Ok(alone)) => {
                        proptest::prop_assert!(alone.keys().all(|k| allowed.contains(k)));
                        proptest::prop_assert_eq!(&*read, &alone, "{}", text);
                    }
                    (Err(ReadError::Outside(key)), Ok(alone)) => {
                        proptest::prop_assert!(!allowed.iter().any(|a| *a == key));
                        proptest::prop_assert!(alone.contains_key(&*key));
                        // the first key not allowed in the text
                        let first = record_keys(text)
                            .ok()
                            .and_then(|keys| keys.into_iter().find(|k| !allowed.iter().any(|a| a == k)));
                        if let Some(first) = first {
                            proptest::prop_assert_eq!(first, &*key);
                        }
                    }
                    (Ok(read), Err(e)) => {
                        proptest::prop_assert!(false, "{text}: read {read:?}, alone {e}");
                    }
                    (Err(ReadError::NotAnObject(_)), Err(_)) => {}
                    // a value not allowed is only skipped: its number out of
                    // range is not an error in it
                    (Err(ReadError::Outside(key)), Err(_)) => {
                        proptest::prop_assert!(!allowed.iter().any(|a| *a == key));
                    }
                    (Err(ReadError::NotAnObject(e)), Ok(alone)) => {
                        proptest::prop_assert!(false, "{text}: read {e}, alone {alone:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_reader_forgets_the_keys_the_record_before_had() {
        let allowed: Vec<String> = ["nik", "nama", "kec"].map(String::from).to_vec();
        let mut reader = RecordReader::new(&allowed);
        let first = reader.read(r#"{"nik":"1","nama":"A","kec":[1]}"#).unwrap();
        assert_eq!(first.len(), 3);
        let second = reader.read(r#"{"nama":"Budi","nik":2}"#).unwrap();
        assert_eq!(
            Value::Object(second.clone()),
            json!({"nik": 2, "nama": "Budi"})
        );
        assert!(matches!(
            reader.read(r#"{"nik":"3","alamat":"x","agama":1}"#),
            Err(ReadError::Outside(k)) if k == "alamat"
        ));
        assert!(matches!(
            reader.read(r#"{"nik":"3","alamat":"x""#),
            Err(ReadError::NotAnObject(_))
        ));
        let third = reader.read(r#"{"kec":"K","kec":"L"}"#).unwrap();
        assert_eq!(Value::Object(third.clone()), json!({"kec": "L"}));
        assert!(reader.read("[]").is_err());
    }

    #[test]
    fn an_error_stops_the_record() {
        let mut encoder = RecordEncoder::new(["a", "b"]);
        let got = encoder.encode(|i| if i == 1 { Err(i) } else { Ok(json!(1).into()) });
        assert_eq!(got, Err(1));
        assert_eq!(
            RecordEncoder::new([]).encode(|_| Ok::<_, ()>(json!(1).into())),
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
