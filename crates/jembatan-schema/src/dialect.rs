//! Schemas as integrators have them: documents in draft-07 or 2019-09 are
//! rewritten into JSON Schema 2020-12 with the same meaning, and a 2020-12
//! document (or one without `$schema`, which is read as 2020-12) that uses
//! a keyword 2020-12 dropped is refused naming it, instead of the keyword
//! being silently ignored.
//!
//! The rewriting, per subschema:
//! - `definitions` → `$defs`, and `$ref`s into `#/definitions/…` follow;
//! - an array-valued `items` → `prefixItems`, with `additionalItems` →
//!   `items` (beside a schema-valued `items`, `additionalItems` meant
//!   nothing and is dropped);
//! - `dependencies` → `dependentRequired` (array values) and
//!   `dependentSchemas` (schema values);
//! - draft-07 only: keywords beside `$ref` were ignored there, so they are
//!   dropped (annotations kept).
//!
//! 2019-09's `$recursiveRef` and `$recursiveAnchor` have no faithful
//! rewriting here and are refused.

use serde_json::{Map, Value};

use crate::schema::{DRAFT_2020_12, SchemaError};

/// The dialects a document may declare in `$schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Draft07,
    Draft2019_09,
    Draft2020_12,
}

impl Dialect {
    /// The dialect `$schema` names (`None`: the document names none, and is
    /// read as 2020-12).
    pub(crate) fn of(value: &Value) -> Result<Dialect, SchemaError> {
        let Some(declared) = value.as_object().and_then(|m| m.get("$schema")) else {
            return Ok(Dialect::Draft2020_12);
        };
        let uri = declared.as_str().map(|d| {
            d.trim_end_matches('#')
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .to_owned()
        });
        match uri.as_deref() {
            Some("json-schema.org/draft/2020-12/schema") => Ok(Dialect::Draft2020_12),
            Some("json-schema.org/draft/2019-09/schema") => Ok(Dialect::Draft2019_09),
            Some("json-schema.org/draft-07/schema") => Ok(Dialect::Draft07),
            _ => Err(SchemaError::new(
                "/$schema",
                format!(
                    "JSON Schema 2020-12 ({DRAFT_2020_12}), 2019-09 and draft-07 are supported, found {declared}"
                ),
            )),
        }
    }
}

/// Keywords whose value is one subschema.
const SUBSCHEMA: [&str; 12] = [
    "additionalProperties",
    "propertyNames",
    "contains",
    "if",
    "then",
    "else",
    "not",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "additionalItems",
    "items",
];
/// Keywords whose value is an array of subschemas.
const SUBSCHEMA_ARRAYS: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const SUBSCHEMA_MAPS: [&str; 6] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
];
/// Annotations kept beside a draft-07 `$ref`.
const ANNOTATIONS: [&str; 5] = ["title", "description", "$comment", "examples", "default"];

/// `value` as a 2020-12 document with the same meaning.
pub(crate) fn normalize(value: Value, dialect: Dialect) -> Result<Value, SchemaError> {
    if dialect == Dialect::Draft2020_12 {
        refuse_dropped(&value, "")?;
        return Ok(value);
    }
    let mut out = rewrite(value, dialect, "")?;
    if let Value::Object(map) = &mut out {
        map.insert("$schema".into(), Value::String(DRAFT_2020_12.into()));
    }
    Ok(out)
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn rewrite(value: Value, dialect: Dialect, pointer: &str) -> Result<Value, SchemaError> {
    let Value::Object(mut map) = value else {
        return Ok(value);
    };
    for keyword in ["$recursiveRef", "$recursiveAnchor"] {
        if map.contains_key(keyword) {
            return Err(SchemaError::new(
                format!("{pointer}/{keyword}"),
                format!("{keyword} (2019-09) is not supported: write it with $ref and $defs"),
            ));
        }
    }
    if let Some(Value::String(reference)) = map.get_mut("$ref")
        && let Some(rest) = reference.strip_prefix("#/definitions/")
    {
        *reference = format!("#/$defs/{rest}");
    }
    if dialect == Dialect::Draft07 && map.contains_key("$ref") {
        map.retain(|k, _| k == "$ref" || ANNOTATIONS.contains(&k.as_str()));
    }
    if let Some(definitions) = map.remove("definitions") {
        let Value::Object(definitions) = definitions else {
            return Err(SchemaError::new(
                format!("{pointer}/definitions"),
                "definitions must be an object",
            ));
        };
        let defs = map
            .entry("$defs")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(defs) = defs else {
            return Err(SchemaError::new(
                format!("{pointer}/$defs"),
                "$defs must be an object",
            ));
        };
        for (name, schema) in definitions {
            if defs.contains_key(&name) {
                return Err(SchemaError::new(
                    format!("{pointer}/definitions/{}", escape(&name)),
                    format!("{name:?} is in both definitions and $defs"),
                ));
            }
            defs.insert(name, schema);
        }
    }
    if matches!(map.get("items"), Some(Value::Array(_))) {
        let items = map.remove("items").unwrap_or(Value::Null);
        map.insert("prefixItems".into(), items);
        if let Some(additional) = map.remove("additionalItems") {
            map.insert("items".into(), additional);
        }
    } else {
        // beside a schema-valued items (or none), additionalItems meant nothing
        map.remove("additionalItems");
    }
    if let Some(dependencies) = map.remove("dependencies") {
        let Value::Object(dependencies) = dependencies else {
            return Err(SchemaError::new(
                format!("{pointer}/dependencies"),
                "dependencies must be an object",
            ));
        };
        for (name, dependency) in dependencies {
            let target = if dependency.is_array() {
                "dependentRequired"
            } else {
                "dependentSchemas"
            };
            let into = map
                .entry(target)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(into) = into {
                into.insert(name, dependency);
            }
        }
    }
    let mut out = Map::new();
    for (key, child) in map {
        let here = format!("{pointer}/{}", escape(&key));
        let child = if SUBSCHEMA.contains(&key.as_str()) {
            rewrite(child, dialect, &here)?
        } else if SUBSCHEMA_ARRAYS.contains(&key.as_str()) {
            match child {
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| rewrite(s, dialect, &format!("{here}/{i}")))
                        .collect::<Result<_, _>>()?,
                ),
                other => other,
            }
        } else if SUBSCHEMA_MAPS.contains(&key.as_str()) {
            match child {
                Value::Object(members) => Value::Object(
                    members
                        .into_iter()
                        .map(|(name, s)| {
                            let at = format!("{here}/{}", escape(&name));
                            rewrite(s, dialect, &at).map(|s| (name, s))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => other,
            }
        } else {
            child
        };
        out.insert(key, child);
    }
    Ok(Value::Object(out))
}

/// Refuses, in a 2020-12 document, the keywords 2020-12 dropped: they
/// would be ignored, and the constraints they meant lost.
fn refuse_dropped(value: &Value, pointer: &str) -> Result<(), SchemaError> {
    let Value::Object(map) = value else {
        return Ok(());
    };
    let dropped = |keyword: &str, instead: &str| {
        SchemaError::new(
            format!("{pointer}/{keyword}"),
            format!(
                "{keyword} is not a JSON Schema 2020-12 keyword ({instead}); \
                 declare \"$schema\" as draft-07 or 2019-09 to have the document rewritten"
            ),
        )
    };
    if map.contains_key("dependencies") {
        return Err(dropped(
            "dependencies",
            "2020-12 has dependentRequired and dependentSchemas",
        ));
    }
    if map.contains_key("additionalItems") {
        return Err(dropped(
            "additionalItems",
            "2020-12 has items beside prefixItems",
        ));
    }
    if map.get("items").is_some_and(Value::is_array) {
        return Err(dropped(
            "items",
            "an array of schemas is prefixItems in 2020-12",
        ));
    }
    if map.contains_key("definitions") {
        return Err(dropped("definitions", "2020-12 has $defs"));
    }
    for keyword in ["$recursiveRef", "$recursiveAnchor"] {
        if map.contains_key(keyword) {
            return Err(dropped(
                keyword,
                "2020-12 has $dynamicRef and $dynamicAnchor",
            ));
        }
    }
    for (key, child) in map {
        let here = format!("{pointer}/{}", escape(key));
        if SUBSCHEMA.contains(&key.as_str()) {
            refuse_dropped(child, &here)?;
        } else if SUBSCHEMA_ARRAYS.contains(&key.as_str()) {
            if let Value::Array(items) = child {
                for (i, s) in items.iter().enumerate() {
                    refuse_dropped(s, &format!("{here}/{i}"))?;
                }
            }
        } else if SUBSCHEMA_MAPS.contains(&key.as_str())
            && let Value::Object(members) = child
        {
            for (name, s) in members {
                refuse_dropped(s, &format!("{here}/{}", escape(name)))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn draft07(body: Value) -> Value {
        let mut v = body;
        v["$schema"] = json!("http://json-schema.org/draft-07/schema#");
        v
    }

    #[test]
    fn draft07_documents_are_rewritten_with_the_same_meaning() {
        let doc = draft07(json!({
            "type": "object",
            "definitions": {"kode": {"type": "string", "pattern": "^[0-9.]+$"}},
            "properties": {
                "kecamatan": {"$ref": "#/definitions/kode", "minLength": 99},
                "anak": {"type": "array", "items": [{"type": "string"}], "additionalItems": false},
                "daftar": {"type": "array", "items": {"type": "integer"}, "additionalItems": false},
            },
            "dependencies": {"nik": ["nama"], "npwp": {"required": ["nik"]}},
        }));
        let out = normalize(doc, Dialect::Draft07).unwrap();
        assert_eq!(
            out,
            json!({
                "$schema": DRAFT_2020_12,
                "type": "object",
                "$defs": {"kode": {"type": "string", "pattern": "^[0-9.]+$"}},
                "properties": {
                    // beside $ref, draft-07 ignored minLength
                    "kecamatan": {"$ref": "#/$defs/kode"},
                    "anak": {"type": "array", "prefixItems": [{"type": "string"}], "items": false},
                    "daftar": {"type": "array", "items": {"type": "integer"}},
                },
                "dependentRequired": {"nik": ["nama"]},
                "dependentSchemas": {"npwp": {"required": ["nik"]}},
            })
        );
    }

    #[test]
    fn keywords_2020_12_dropped_are_refused_naming_them() {
        let cases = [
            (json!({"dependencies": {"a": ["b"]}}), "/dependencies"),
            (
                json!({"properties": {"x": {"items": [{}]}}}),
                "/properties/x/items",
            ),
            (
                json!({"items": {}, "additionalItems": false}),
                "/additionalItems",
            ),
            (json!({"definitions": {"a": {}}}), "/definitions"),
            (
                json!({"allOf": [{"$recursiveRef": "#"}]}),
                "/allOf/0/$recursiveRef",
            ),
        ];
        for (doc, pointer) in cases {
            let err = normalize(doc.clone(), Dialect::Draft2020_12).unwrap_err();
            assert_eq!(err.pointer, pointer, "{doc}");
            assert!(
                err.message.contains("not a JSON Schema 2020-12 keyword"),
                "{err}"
            );
        }
        let fine =
            json!({"type": "object", "$defs": {"a": {}}, "prefixItems": [{}], "items": false});
        assert_eq!(
            normalize(fine.clone(), Dialect::Draft2020_12).unwrap(),
            fine
        );
    }

    #[test]
    fn dialects_are_read_from_schema() {
        let cases = [
            (json!({}), Some(Dialect::Draft2020_12)),
            (
                json!({"$schema": "https://json-schema.org/draft/2020-12/schema"}),
                Some(Dialect::Draft2020_12),
            ),
            (
                json!({"$schema": "https://json-schema.org/draft/2019-09/schema#"}),
                Some(Dialect::Draft2019_09),
            ),
            (
                json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
                Some(Dialect::Draft07),
            ),
            (
                json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
                None,
            ),
            (json!({"$schema": 7}), None),
        ];
        for (doc, want) in cases {
            assert_eq!(Dialect::of(&doc).ok(), want, "{doc}");
        }
    }
}
