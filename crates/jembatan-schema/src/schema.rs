//! `Schema`: a parsed, checked JSON Schema 2020-12 document with its content id and compiled validator.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The only dialect the registry accepts.
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Why a schema document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema{}: {message}", at(pointer))]
pub struct SchemaError {
    /// JSON pointer of the fault inside the schema document; `""` for the root.
    pub pointer: String,
    /// What is wrong, in words.
    pub message: String,
}

fn at(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" at {pointer}")
    }
}

impl SchemaError {
    pub(crate) fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Longest schema document accepted, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Most JSON objects in one schema document. Agency datasets have tens of
/// fields; the limit keeps compatibility checks, whose cost grows faster
/// than the schema, to seconds.
pub const MAX_SCHEMA_OBJECTS: usize = 1000;

fn count_objects(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(count_objects).sum::<usize>(),
        Value::Array(items) => items.iter().map(count_objects).sum(),
        _ => 0,
    }
}

/// One reason an instance does not validate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidationIssue {
    /// JSON pointer into the instance (`""` for the whole document).
    pub instance_path: String,
    /// What is wrong, in words; may quote the instance's values.
    pub message: String,
    /// JSON pointer to the schema keyword that failed
    /// (`/properties/sex/enum`): names the rule without the value.
    pub schema_path: String,
}

impl ValidationIssue {
    /// The first few issues on one line: `at /sex: "X" is not one of ...; ...`.
    pub fn summary(issues: &[ValidationIssue]) -> String {
        issues
            .iter()
            .take(3)
            .map(|i| {
                let at = if i.instance_path.is_empty() {
                    "/"
                } else {
                    &i.instance_path
                };
                format!("at {at}: {}", i.message)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The first few issues on one line without their words, which may
    /// quote the instance's values: `at /sex (schema location
    /// /properties/sex/enum); ...`. For readers who may not see the values.
    pub fn places(issues: &[ValidationIssue]) -> String {
        issues
            .iter()
            .take(3)
            .map(|i| {
                let at = if i.instance_path.is_empty() {
                    "/"
                } else {
                    &i.instance_path
                };
                format!("at {at} (schema location {})", i.schema_path)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.instance_path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.instance_path, self.message)
        }
    }
}

/// A parsed JSON Schema 2020-12 document: valid against the meta-schema, with
/// local references only, its content id and its compiled validator.
///
/// Cloning is cheap (the document and the validator are shared).
#[derive(Clone)]
pub struct Schema {
    inner: Arc<Inner>,
}

struct Inner {
    /// The document as given (in its own dialect).
    original: Value,
    /// The document in JSON Schema 2020-12: `original`, rewritten when it
    /// is draft-07 or 2019-09.
    value: Value,
    id: String,
    validator: jsonschema::Validator,
    /// The document without pure annotations (titles, descriptions, examples,
    /// comments): what the compatibility checker compares.
    assertions: Value,
    /// `$anchor` name → JSON pointer of the subschema carrying it.
    anchors: HashMap<String, String>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for Schema {}

impl Schema {
    /// Parses and checks a schema document given as JSON text.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(SchemaError::new(
                "",
                format!(
                    "schema document is {} bytes; the limit is {MAX_SCHEMA_BYTES}",
                    text.len()
                ),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SchemaError::new("", format!("not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Checks a schema document: 2020-12 dialect, valid against the
    /// meta-schema, local `$ref`s only, every reference resolvable.
    pub fn from_value(value: Value) -> Result<Self, SchemaError> {
        let objects = count_objects(&value);
        if objects > MAX_SCHEMA_OBJECTS {
            return Err(SchemaError::new(
                "",
                format!(
                    "schema has {objects} JSON objects (subschemas and their keywords); the limit is {MAX_SCHEMA_OBJECTS}"
                ),
            ));
        }
        if !value.is_object() && !value.is_boolean() {
            return Err(SchemaError::new(
                "",
                "a schema must be a JSON object or a boolean",
            ));
        }
        // draft-07 and 2019-09 are read as the 2020-12 document they mean;
        // the document as given is kept, and names the schema
        let original = value.clone();
        let dialect = crate::dialect::Dialect::of(&value)?;
        let value = crate::dialect::normalize(value, dialect)?;
        if let Err(e) = jsonschema::draft202012::meta::validate(&value) {
            return Err(SchemaError::new(
                e.instance_path().as_str().to_owned(),
                e.to_string(),
            ));
        }
        let mut anchors = HashMap::new();
        let mut refs = Vec::new();
        walk(&value, "", true, &mut anchors, &mut refs)?;
        for (pointer, reference) in &refs {
            if resolve_local(&value, &anchors, reference).is_none() {
                return Err(SchemaError::new(
                    pointer.clone(),
                    format!("$ref {reference:?} does not resolve to a subschema of this document"),
                ));
            }
        }
        let validator = build_validator(&value)
            .map_err(|e| SchemaError::new("", format!("cannot compile: {e}")))?;
        let id = content_id(&original);
        let assertions = strip_annotations(&value);
        Ok(Self {
            inner: Arc::new(Inner {
                original,
                value,
                id,
                validator,
                assertions,
                anchors,
            }),
        })
    }

    /// The content id `sha256:<64 hex>` of the canonical form of the
    /// document as given.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The schema document in JSON Schema 2020-12: as given, or rewritten
    /// from draft-07 or 2019-09. What validation, compatibility and
    /// mappings read.
    pub fn value(&self) -> &Value {
        &self.inner.value
    }

    /// The schema document as given, in its own dialect: what the
    /// registry stores and [`Schema::id`] names.
    pub fn original(&self) -> &Value {
        &self.inner.original
    }

    /// The document as given, in canonical form (see [`canonical_json`]).
    pub fn canonical(&self) -> String {
        canonical_json(&self.inner.original)
    }

    /// Validates an instance; `format` is asserted.
    pub fn validate(&self, instance: &Value) -> Result<(), Vec<ValidationIssue>> {
        let issues: Vec<ValidationIssue> = self
            .inner
            .validator
            .iter_errors(instance)
            .map(|e| ValidationIssue {
                instance_path: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
                schema_path: e.schema_path().as_str().to_owned(),
            })
            .collect();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    /// Whether an instance is valid.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.inner.validator.is_valid(instance)
    }

    /// The document without pure annotations; pointers are those of [`Schema::value`].
    pub(crate) fn assertions(&self) -> &Value {
        &self.inner.assertions
    }

    /// Resolves a local reference (`#`, `#/json/pointer`, `#anchor`) to its
    /// JSON pointer and subschema (in [`Schema::assertions`]).
    pub(crate) fn resolve(&self, reference: &str) -> Option<(String, &Value)> {
        resolve_local(&self.inner.assertions, &self.inner.anchors, reference)
    }
}

/// Builds the validator used everywhere in this crate: 2020-12, formats asserted.
pub(crate) fn build_validator(
    value: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(value)
}

/// The content id of a document: `sha256:` and the hex SHA-256 of [`canonical_json`].
pub fn content_id(value: &Value) -> String {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

/// Canonical JSON text in the manner of RFC 8785 (JCS): object members sorted
/// by the UTF-16 code units of their names, no insignificant whitespace,
/// strings escaped minimally, numbers in serde_json's shortest form.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Keywords whose value is one subschema.
pub(crate) const SCHEMA_KEYWORDS: &[&str] = &[
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
];
/// Keywords whose value is an array of subschemas.
pub(crate) const SCHEMA_ARRAY_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
pub(crate) const SCHEMA_MAP_KEYWORDS: &[&str] = &[
    "properties",
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// Keywords that never change which instances are valid (`default` is kept:
/// the `required` rule reads it).
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// A copy of a schema without annotation keywords, walking subschema positions only.
fn strip_annotations(value: &Value) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let mut out = serde_json::Map::new();
    for (key, sub) in map {
        let k = key.as_str();
        if ANNOTATIONS.contains(&k) {
            continue;
        }
        let v = if SCHEMA_KEYWORDS.contains(&k) {
            strip_annotations(sub)
        } else if SCHEMA_ARRAY_KEYWORDS.contains(&k) {
            match sub {
                Value::Array(items) => Value::Array(items.iter().map(strip_annotations).collect()),
                other => other.clone(),
            }
        } else if SCHEMA_MAP_KEYWORDS.contains(&k) {
            match sub {
                Value::Object(entries) => Value::Object(
                    entries
                        .iter()
                        .map(|(n, s)| (n.clone(), strip_annotations(s)))
                        .collect(),
                ),
                other => other.clone(),
            }
        } else {
            sub.clone()
        };
        out.insert(key.clone(), v);
    }
    Value::Object(out)
}

/// Escapes one JSON pointer segment.
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Walks every subschema: collects anchors and references, refuses remote
/// references and embedded resources.
fn walk(
    value: &Value,
    pointer: &str,
    root: bool,
    anchors: &mut HashMap<String, String>,
    refs: &mut Vec<(String, String)>,
) -> Result<(), SchemaError> {
    let Value::Object(map) = value else {
        return Ok(());
    };
    if !root && map.contains_key("$id") {
        return Err(SchemaError::new(
            format!("{pointer}/$id"),
            "embedded resources ($id below the root) are not supported",
        ));
    }
    for keyword in ["$ref", "$dynamicRef"] {
        if let Some(Value::String(reference)) = map.get(keyword) {
            if !reference.starts_with('#') {
                return Err(SchemaError::new(
                    format!("{pointer}/{}", escape(keyword)),
                    format!(
                        "remote reference {reference:?} is not allowed; only local references (\"#/...\") are supported"
                    ),
                ));
            }
            if keyword == "$ref" {
                refs.push((format!("{pointer}/$ref"), reference.clone()));
            }
        }
    }
    if let Some(Value::String(anchor)) = map.get("$anchor") {
        anchors.insert(anchor.clone(), pointer.to_owned());
    }
    for (key, sub) in map {
        let key = key.as_str();
        let here = format!("{pointer}/{}", escape(key));
        if SCHEMA_KEYWORDS.contains(&key) {
            walk(sub, &here, false, anchors, refs)?;
        } else if SCHEMA_ARRAY_KEYWORDS.contains(&key) {
            if let Value::Array(items) = sub {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{here}/{i}"), false, anchors, refs)?;
                }
            }
        } else if SCHEMA_MAP_KEYWORDS.contains(&key)
            && let Value::Object(entries) = sub
        {
            for (name, item) in entries {
                walk(
                    item,
                    &format!("{here}/{}", escape(name)),
                    false,
                    anchors,
                    refs,
                )?;
            }
        }
    }
    Ok(())
}

/// Resolves `#`, `#/pointer` (percent-encoded) and `#anchor` inside `root`.
fn resolve_local<'a>(
    root: &'a Value,
    anchors: &HashMap<String, String>,
    reference: &str,
) -> Option<(String, &'a Value)> {
    let fragment = reference.strip_prefix('#')?;
    let fragment = percent_decode(fragment)?;
    let pointer = if fragment.is_empty() || fragment.starts_with('/') {
        fragment
    } else {
        anchors.get(&fragment)?.clone()
    };
    let target = root.pointer(&pointer)?;
    if target.is_object() || target.is_boolean() {
        Some((pointer, target))
    } else {
        None
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, 2.5, "x"], "a": {"d": null, "c": true} }"#)
                .expect("json");
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"d":null},"b":[1,2.5,"x"]}"#
        );
    }

    #[test]
    fn canonical_form_sorts_by_utf16_code_units() {
        // U+1F600 (surrogates D83D DE00) sorts before U+FB01 in UTF-16 order.
        let v = json!({"\u{fb01}": 1, "\u{1f600}": 2});
        assert_eq!(canonical_json(&v), "{\"\u{1f600}\":2,\"\u{fb01}\":1}");
    }

    #[test]
    fn resolves_pointers_and_anchors() {
        let s = Schema::from_value(json!({
            "$defs": {"a b": {"$anchor": "ab", "type": "string"}},
            "$ref": "#/$defs/a%20b"
        }))
        .expect("schema");
        assert_eq!(s.resolve("#ab").map(|r| r.0), Some("/$defs/a b".to_owned()));
        assert_eq!(
            s.resolve("#/$defs/a%20b").map(|r| r.0),
            Some("/$defs/a b".to_owned())
        );
        assert_eq!(s.resolve("#").map(|r| r.0), Some(String::new()));
        assert!(s.is_valid(&json!("x")));
        assert!(!s.is_valid(&json!(1)));
    }

    #[test]
    fn nested_id_is_refused() {
        let e = Schema::from_value(json!({"properties": {"a": {"$id": "https://x.example/a"}}}))
            .expect_err("nested $id");
        assert_eq!(e.pointer, "/properties/a/$id");
    }

    #[test]
    fn formats_are_asserted() {
        let s = Schema::from_value(json!({"type": "string", "format": "email"})).expect("schema");
        assert!(s.is_valid(&json!("a@example.com")));
        assert!(!s.is_valid(&json!("not an email")));
    }

    #[test]
    fn places_name_the_rule_without_the_value() {
        let s = Schema::from_value(json!({
            "type": "object",
            "properties": {"sex": {"enum": ["L", "P"]}}
        }))
        .expect("schema");
        let issues = s
            .validate(&json!({"sex": "SECRET-VALUE"}))
            .expect_err("invalid");
        assert!(ValidationIssue::summary(&issues).contains("SECRET-VALUE"));
        let places = ValidationIssue::places(&issues);
        assert_eq!(places, "at /sex (schema location /properties/sex/enum)");
    }
}
