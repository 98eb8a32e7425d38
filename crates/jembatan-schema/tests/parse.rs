//! Parsing and checking schema documents: errors with pointers, content ids, validation.

use jembatan_schema::{Schema, canonical_json};
use serde_json::json;

fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

#[test]
fn schema_is_shareable() {
    assert_send_sync_clone::<Schema>();
}

#[test]
fn invalid_json_is_refused_at_the_root() {
    let e = Schema::parse(r#"{"type": "string""#).expect_err("invalid JSON");
    assert_eq!(e.pointer, "");
    assert!(e.message.contains("not valid JSON"), "{e}");
    assert!(
        e.to_string().starts_with("invalid schema: not valid JSON"),
        "{e}"
    );
}

#[test]
fn meta_schema_errors_carry_the_pointer() {
    let e = Schema::parse(r#"{"type": 5}"#).expect_err("bad type");
    assert_eq!(e.pointer, "/type");
    let e = Schema::parse(r#"{"properties": {"age": {"type": "strin"}}}"#).expect_err("bad type");
    assert_eq!(e.pointer, "/properties/age/type");
    assert!(
        e.to_string()
            .starts_with("invalid schema at /properties/age/type: "),
        "{e}"
    );
    let e = Schema::parse(r#"{"minLength": -1}"#).expect_err("negative");
    assert_eq!(e.pointer, "/minLength");
    assert!(Schema::parse("42").is_err());
}

#[test]
fn draft_07_and_2019_09_are_read_as_the_2020_12_they_mean() {
    assert!(
        Schema::parse(
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "string"}"#
        )
        .is_ok()
    );
    assert!(Schema::parse(r#"{"type": "string"}"#).is_ok());
    // a draft-07 document: kept as given, validated as rewritten
    let text = r#"{"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
        "items": [{"type": "string"}], "additionalItems": false,
        "definitions": {"n": {"type": "integer"}}}"#;
    let s = Schema::parse(text).expect("draft 7");
    assert_eq!(
        s.original(),
        &serde_json::from_str::<serde_json::Value>(text).unwrap()
    );
    assert_eq!(s.value()["prefixItems"], json!([{"type": "string"}]));
    assert_eq!(s.value()["items"], json!(false));
    assert!(s.is_valid(&json!(["a"])));
    // the constraint additionalItems meant holds
    assert!(!s.is_valid(&json!(["a", "b"])));
    assert!(!s.is_valid(&json!([1])));
    // the id names the document as given
    assert_eq!(s.id(), jembatan_schema::content_id(s.original()));
    assert!(
        Schema::parse(
            r#"{"$schema": "https://json-schema.org/draft/2019-09/schema", "type": "string"}"#
        )
        .is_ok()
    );
    let e = Schema::parse(
        r#"{"$schema": "http://json-schema.org/draft-04/schema#", "type": "string"}"#,
    )
    .expect_err("draft 4");
    assert_eq!(e.pointer, "/$schema");
    // without $schema a document is 2020-12, where these keywords are gone
    let e = Schema::parse(
        r#"{"type": "array", "items": [{"type": "string"}], "additionalItems": false}"#,
    )
    .expect_err("draft-07 keywords in a 2020-12 document");
    assert!(
        e.message.contains("not a JSON Schema 2020-12 keyword"),
        "{e}"
    );
}

#[test]
fn remote_references_are_refused() {
    for (doc, pointer) in [
        (json!({"$ref": "https://example.com/person.json"}), "/$ref"),
        (
            json!({"properties": {"a": {"$ref": "other.json#/x"}}}),
            "/properties/a/$ref",
        ),
        (
            json!({"items": {"$dynamicRef": "https://example.com/x#meta"}}),
            "/items/$dynamicRef",
        ),
    ] {
        let e = Schema::from_value(doc.clone()).expect_err("remote ref");
        assert_eq!(e.pointer, pointer, "{doc}");
        assert!(e.message.contains("remote reference"), "{e}");
    }
}

#[test]
fn local_references_must_resolve() {
    let e = Schema::from_value(json!({"properties": {"a": {"$ref": "#/$defs/missing"}}}))
        .expect_err("dangling");
    assert_eq!(e.pointer, "/properties/a/$ref");
    assert!(
        Schema::from_value(json!({"$defs": {"x": {"type": "string"}}, "$ref": "#/$defs/x"}))
            .is_ok()
    );
    // a property literally named "$ref" is not a reference
    assert!(Schema::from_value(json!({"properties": {"$ref": {"type": "string"}}})).is_ok());
}

#[test]
fn same_content_gets_the_same_id() {
    let a = Schema::parse(
        r#"{"type": "object", "properties": {"b": {"type": "string"}, "a": {"maximum": 1.5}}}"#,
    )
    .expect("a");
    let b = Schema::parse(
        "{\n  \"properties\": {\n    \"a\": {\"maximum\": 1.5},\n    \"b\": {\"type\": \"string\"}\n  },\n  \"type\": \"object\"\n}",
    )
    .expect("b");
    assert_eq!(a.id(), b.id());
    assert_eq!(a, b);
    assert!(a.id().starts_with("sha256:"));
    assert_eq!(a.id().len(), "sha256:".len() + 64);
    assert!(
        a.id()["sha256:".len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(
        a.canonical(),
        r#"{"properties":{"a":{"maximum":1.5},"b":{"type":"string"}},"type":"object"}"#
    );
    assert_eq!(canonical_json(a.value()), a.canonical());
    let c = Schema::parse(
        r#"{"type": "object", "properties": {"b": {"type": "string"}, "a": {"maximum": 2}}}"#,
    )
    .expect("c");
    assert_ne!(a.id(), c.id());
}

#[test]
fn validation_reports_instance_paths() {
    let s = Schema::parse(
        r#"{"type": "object", "required": ["age"], "properties": {"age": {"type": "integer", "minimum": 0}}}"#,
    )
    .expect("schema");
    assert!(s.validate(&json!({"age": 3})).is_ok());
    assert!(s.is_valid(&json!({"age": 0})));
    let issues = s.validate(&json!({"age": -1})).expect_err("negative");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].instance_path, "/age");
    assert!(!issues[0].message.is_empty());
    let issues = s.validate(&json!({})).expect_err("missing");
    assert_eq!(issues[0].instance_path, "");
}

#[test]
fn boolean_schemas() {
    let t = Schema::parse("true").expect("true");
    let f = Schema::parse("false").expect("false");
    assert!(t.is_valid(&json!({"x": 1})));
    assert!(!f.is_valid(&json!(null)));
    assert_ne!(t.id(), f.id());
}

#[test]
fn samples_are_valid_instances() {
    let s = Schema::parse(
        r#"{"type": "object", "required": ["id", "born"], "properties": {"id": {"type": "string", "pattern": "^[0-9]{16}$"}, "born": {"type": "string", "format": "date"}, "email": {"type": "string", "format": "email"}}}"#,
    )
    .expect("schema");
    let samples = jembatan_schema::samples(&s);
    assert!(!samples.is_empty());
    assert!(samples.iter().all(|v| s.is_valid(v)));
}

#[test]
fn oversized_schemas_are_refused_with_the_limit() {
    let properties: serde_json::Map<String, serde_json::Value> = (0..1200)
        .map(|i| (format!("p{i}"), serde_json::json!({"type": "string"})))
        .collect();
    let wide = serde_json::json!({"type": "object", "properties": properties});
    let err = jembatan_schema::Schema::from_value(wide).unwrap_err();
    assert_eq!(err.pointer, "");
    assert!(err.message.contains("the limit is 1000"), "{err}");
    let long = format!(
        r#"{{"description": "{}"}}"#,
        "x".repeat(jembatan_schema::MAX_SCHEMA_BYTES)
    );
    let err = jembatan_schema::Schema::parse(&long).unwrap_err();
    assert!(err.message.contains("bytes; the limit is"), "{err}");
}

/// Deeply nested documents — as deep as the JSON parser allows, and past
/// it — are parsed, compared and sampled, or refused with an error, on a
/// stack as small as a tokio worker's (2 MiB): never a stack overflow.
#[test]
fn deep_nesting_is_an_error_or_checked_on_a_small_stack() {
    use jembatan_schema::{CheckOptions, Direction, check_pair, samples};
    let run = || {
        let mut parsed = 0;
        let shapes = [
            ("{\"items\":", "}", 1),
            ("{\"not\":", "}", 1),
            ("{\"properties\":{\"a\":", "}}", 2),
            ("{\"allOf\":[", "]}", 2),
            ("{\"anyOf\":[{\"type\":\"string\"},", "]}", 2),
        ];
        for (open, close, levels) in shapes {
            for depth in [64, 120, 127, 128, 129, 400] {
                let n = depth / levels;
                let text = format!("{}{{}}{}", open.repeat(n), close.repeat(n));
                match Schema::parse(&text) {
                    Ok(s) => {
                        for direction in [Direction::Backward, Direction::Forward] {
                            assert!(
                                check_pair(&s, &s, direction, &CheckOptions::default()).is_empty()
                            );
                        }
                        let _ = samples(&s);
                        parsed += 1;
                    }
                    Err(e) => assert!(!e.message.is_empty(), "{open} × {n}"),
                }
            }
        }
        // 64 and 120 levels are checked, not refused (serde_json refuses
        // 128 levels and more)
        assert!(parsed >= shapes.len() * 2, "only {parsed} parsed");
    };
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(run)
        .expect("thread")
        .join()
        .expect("no stack overflow");
}
