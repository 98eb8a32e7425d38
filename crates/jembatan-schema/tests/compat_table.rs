//! Table of compatibility cases: one row a rule, checked in both directions,
//! with every counterexample verified against the real validators.

use jembatan_schema::{
    ChangeKind, CheckOptions, CompatMode, Direction, Incompatibility, Schema, check, check_pair,
    explain,
};
use serde_json::{Value, json};

use ChangeKind as K;

/// What one direction must report: compatible, or a finding of this kind at this path.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Ok,
    Breaks(ChangeKind, &'static str),
}

use Expect::{Breaks, Ok as Compatible};

struct Case {
    name: &'static str,
    old: Value,
    new: Value,
    backward: Expect,
    forward: Expect,
}

fn case(name: &'static str, old: Value, new: Value, backward: Expect, forward: Expect) -> Case {
    Case {
        name,
        old,
        new,
        backward,
        forward,
    }
}

fn obj(props: Value) -> Value {
    json!({"type": "object", "properties": props})
}

fn closed(props: Value) -> Value {
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

fn schema(v: &Value) -> Schema {
    Schema::from_value(v.clone()).unwrap_or_else(|e| panic!("schema {v}: {e}"))
}

/// Every incompatibility has a counterexample that the writer accepts and the reader rejects.
fn assert_counterexamples(name: &str, old: &Schema, new: &Schema, found: &[Incompatibility]) {
    for inc in found {
        let c = inc
            .counterexample
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no counterexample for {}", explain(inc)));
        let (writer, reader) = match inc.direction {
            Direction::Backward => (old, new),
            Direction::Forward => (new, old),
        };
        assert!(
            writer.is_valid(c),
            "{name}: writer rejects counterexample {c}"
        );
        assert!(
            !reader.is_valid(c),
            "{name}: reader accepts counterexample {c}"
        );
    }
}

fn run_case(c: &Case, opts: &CheckOptions) {
    let old = schema(&c.old);
    let new = schema(&c.new);
    for (direction, expect) in [
        (Direction::Backward, c.backward),
        (Direction::Forward, c.forward),
    ] {
        let found = check_pair(&old, &new, direction, opts);
        let lines: Vec<String> = found.iter().map(explain).collect();
        match expect {
            Compatible => assert!(
                found.is_empty(),
                "{} ({direction}): expected compatible, got {lines:#?}",
                c.name
            ),
            Breaks(kind, path) => {
                assert!(
                    found.iter().any(|i| i.kind == kind && i.path == path),
                    "{} ({direction}): expected {kind} at {path}, got {lines:#?}",
                    c.name
                );
                assert!(found.iter().all(|i| i.direction == direction));
                assert_counterexamples(c.name, &old, &new, &found);
            }
        }
    }
}

fn cases() -> Vec<Case> {
    let s = |extra: Value| {
        let mut base = json!({"type": "string"});
        base.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        obj(json!({"a": base}))
    };
    let n = |extra: Value| {
        let mut base = json!({"type": "number"});
        base.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        obj(json!({"a": base}))
    };
    let i = |extra: Value| {
        let mut base = json!({"type": "integer"});
        base.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        obj(json!({"a": base}))
    };
    let arr = |extra: Value| {
        let mut base = json!({"type": "array", "items": {"type": "string"}});
        base.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        obj(json!({"a": base}))
    };
    vec![
        case(
            "identical",
            s(json!({})),
            s(json!({})),
            Compatible,
            Compatible,
        ),
        case(
            "annotations only",
            s(json!({"description": "x"})),
            s(json!({"description": "y", "title": "t"})),
            Compatible,
            Compatible,
        ),
        case(
            "identical complex schema is never judged",
            json!({"type": "object", "pattern": "^x", "oneOf": [{"type": "object"}, {"required": ["a"]}],
                   "if": {"required": ["a"]}, "then": {"required": ["b"]},
                   "allOf": [{"properties": {"a": {"type": "string"}}}], "unevaluatedProperties": false}),
            json!({"type": "object", "pattern": "^x", "oneOf": [{"type": "object"}, {"required": ["a"]}],
                   "if": {"required": ["a"]}, "then": {"required": ["b"]},
                   "allOf": [{"properties": {"a": {"type": "string"}}}], "unevaluatedProperties": false}),
            Compatible,
            Compatible,
        ),
        case(
            "annotation changed deep inside an overlapping oneOf",
            json!({"oneOf": [{"type": "number", "description": "old words"}, {"type": "integer"}], "maxLength": 3}),
            json!({"oneOf": [{"type": "number", "description": "new words", "examples": [1]}, {"type": "integer"}], "maxLength": 3}),
            Compatible,
            Compatible,
        ),
        // enum / const / type
        case(
            "enum narrowed",
            obj(json!({"sex": {"enum": ["M", "F", "X"]}})),
            obj(json!({"sex": {"enum": ["M", "F"]}})),
            Breaks(K::EnumNarrowed, "/properties/sex/enum"),
            Compatible,
        ),
        case(
            "enum extended",
            obj(json!({"sex": {"enum": ["M", "F"]}})),
            obj(json!({"sex": {"enum": ["M", "F", "X"]}})),
            Compatible,
            Breaks(K::EnumNarrowed, "/properties/sex/enum"),
        ),
        case(
            "enum added",
            s(json!({})),
            s(json!({"enum": ["a", "b"]})),
            Breaks(K::EnumAdded, "/properties/a/enum"),
            Compatible,
        ),
        case(
            "const changed",
            obj(json!({"a": {"const": "v1"}})),
            obj(json!({"a": {"const": "v2"}})),
            Breaks(K::ConstChanged, "/properties/a/const"),
            Breaks(K::ConstChanged, "/properties/a/const"),
        ),
        case(
            "const added",
            s(json!({})),
            s(json!({"const": "v1"})),
            Breaks(K::ConstAdded, "/properties/a/const"),
            Compatible,
        ),
        case(
            "type narrowed",
            obj(json!({"a": {"type": ["string", "null"]}})),
            obj(json!({"a": {"type": "string"}})),
            Breaks(K::TypeNarrowed, "/properties/a/type"),
            Compatible,
        ),
        case(
            "type changed",
            obj(json!({"a": {"type": "string"}})),
            obj(json!({"a": {"type": "integer"}})),
            Breaks(K::TypeChanged, "/properties/a/type"),
            Breaks(K::TypeChanged, "/properties/a/type"),
        ),
        case(
            "integer widened to number",
            obj(json!({"a": {"type": "integer"}})),
            obj(json!({"a": {"type": "number"}})),
            Compatible,
            Breaks(K::TypeNarrowed, "/properties/a/type"),
        ),
        case(
            "boolean to enum of one",
            obj(json!({"a": {"type": "boolean"}})),
            obj(json!({"a": {"enum": [true]}})),
            Breaks(K::EnumNarrowed, "/properties/a/enum"),
            Compatible,
        ),
        // strings
        case(
            "maxLength decreased",
            s(json!({"maxLength": 20})),
            s(json!({"maxLength": 10})),
            Breaks(K::MaxLengthDecreased, "/properties/a/maxLength"),
            Compatible,
        ),
        case(
            "maxLength added",
            s(json!({})),
            s(json!({"maxLength": 10})),
            Breaks(K::MaxLengthAdded, "/properties/a/maxLength"),
            Compatible,
        ),
        case(
            "maxLength increased",
            s(json!({"maxLength": 10})),
            s(json!({"maxLength": 20})),
            Compatible,
            Breaks(K::MaxLengthDecreased, "/properties/a/maxLength"),
        ),
        case(
            "minLength increased",
            s(json!({"minLength": 1})),
            s(json!({"minLength": 3})),
            Breaks(K::MinLengthIncreased, "/properties/a/minLength"),
            Compatible,
        ),
        case(
            "minLength added",
            s(json!({})),
            s(json!({"minLength": 2})),
            Breaks(K::MinLengthAdded, "/properties/a/minLength"),
            Compatible,
        ),
        case(
            "pattern added",
            s(json!({})),
            s(json!({"pattern": "^[0-9]{3}$"})),
            Breaks(K::PatternAdded, "/properties/a/pattern"),
            Compatible,
        ),
        case(
            "pattern changed",
            s(json!({"pattern": "^[a-z]+$"})),
            s(json!({"pattern": "^[A-Z]+$"})),
            Breaks(K::PatternChanged, "/properties/a/pattern"),
            Breaks(K::PatternChanged, "/properties/a/pattern"),
        ),
        case(
            "format added",
            s(json!({})),
            s(json!({"format": "email"})),
            Breaks(K::FormatAdded, "/properties/a/format"),
            Compatible,
        ),
        case(
            "format changed",
            s(json!({"format": "date"})),
            s(json!({"format": "date-time"})),
            Breaks(K::FormatChanged, "/properties/a/format"),
            Breaks(K::FormatChanged, "/properties/a/format"),
        ),
        // numbers
        case(
            "maximum decreased",
            i(json!({"maximum": 100})),
            i(json!({"maximum": 50})),
            Breaks(K::MaximumDecreased, "/properties/a/maximum"),
            Compatible,
        ),
        case(
            "maximum added",
            n(json!({})),
            n(json!({"maximum": 50})),
            Breaks(K::MaximumAdded, "/properties/a/maximum"),
            Compatible,
        ),
        case(
            "minimum increased",
            i(json!({"minimum": 0})),
            i(json!({"minimum": 18})),
            Breaks(K::MinimumIncreased, "/properties/a/minimum"),
            Compatible,
        ),
        case(
            "minimum added",
            n(json!({})),
            n(json!({"minimum": 0})),
            Breaks(K::MinimumAdded, "/properties/a/minimum"),
            Compatible,
        ),
        case(
            "exclusiveMaximum added",
            n(json!({})),
            n(json!({"exclusiveMaximum": 10})),
            Breaks(K::ExclusiveMaximumAdded, "/properties/a/exclusiveMaximum"),
            Compatible,
        ),
        case(
            "maximum made exclusive",
            n(json!({"maximum": 10})),
            n(json!({"exclusiveMaximum": 10})),
            Breaks(K::ExclusiveMaximumAdded, "/properties/a/exclusiveMaximum"),
            Compatible,
        ),
        case(
            "exclusiveMaximum decreased",
            n(json!({"exclusiveMaximum": 10})),
            n(json!({"exclusiveMaximum": 5})),
            Breaks(
                K::ExclusiveMaximumDecreased,
                "/properties/a/exclusiveMaximum",
            ),
            Compatible,
        ),
        case(
            "exclusiveMinimum increased",
            n(json!({"exclusiveMinimum": 0})),
            n(json!({"exclusiveMinimum": 5})),
            Breaks(
                K::ExclusiveMinimumIncreased,
                "/properties/a/exclusiveMinimum",
            ),
            Compatible,
        ),
        case(
            "exclusiveMinimum added",
            n(json!({})),
            n(json!({"exclusiveMinimum": 0})),
            Breaks(K::ExclusiveMinimumAdded, "/properties/a/exclusiveMinimum"),
            Compatible,
        ),
        case(
            "integer bounds equal in effect",
            i(json!({"maximum": 9})),
            i(json!({"exclusiveMaximum": 10})),
            Compatible,
            Compatible,
        ),
        case(
            "multipleOf added",
            i(json!({})),
            i(json!({"multipleOf": 5})),
            Breaks(K::MultipleOfAdded, "/properties/a/multipleOf"),
            Compatible,
        ),
        case(
            "multipleOf changed",
            i(json!({"multipleOf": 2})),
            i(json!({"multipleOf": 4})),
            Breaks(K::MultipleOfChanged, "/properties/a/multipleOf"),
            Compatible,
        ),
        // objects
        case(
            "required added without default",
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]}),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a", "b"]}),
            Breaks(K::RequiredAdded, "/required"),
            Compatible,
        ),
        case(
            "required added with default (Confluent rule)",
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string", "default": "x"}}, "required": ["b"]}),
            Compatible,
            Compatible,
        ),
        case(
            "property added to open content model",
            obj(json!({"a": {"type": "string"}})),
            obj(json!({"a": {"type": "string"}, "b": {"type": "integer"}})),
            Breaks(K::PropertyAddedToOpenContentModel, "/properties/b"),
            Compatible,
        ),
        case(
            "property accepting anything added to open content model",
            obj(json!({"a": {"type": "string"}})),
            obj(json!({"a": {"type": "string"}, "b": {}})),
            Compatible,
            Compatible,
        ),
        case(
            "property removed from open content model",
            obj(json!({"a": {"type": "string"}, "b": {"type": "integer"}})),
            obj(json!({"a": {"type": "string"}})),
            Compatible,
            Breaks(K::PropertyAddedToOpenContentModel, "/properties/b"),
        ),
        case(
            "property added to closed content model",
            closed(json!({"a": {"type": "string"}})),
            closed(json!({"a": {"type": "string"}, "b": {"type": "integer"}})),
            Compatible,
            Breaks(K::PropertyRemovedFromClosedContentModel, "/properties/b"),
        ),
        case(
            "property removed from closed content model",
            closed(json!({"a": {"type": "string"}, "b": {"type": "integer"}})),
            closed(json!({"a": {"type": "string"}})),
            Breaks(K::PropertyRemovedFromClosedContentModel, "/properties/b"),
            Compatible,
        ),
        case(
            "property added, covered by partially open content model",
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            Compatible,
            Compatible,
        ),
        case(
            "property added, not covered by partially open content model",
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string", "maxLength": 5}}, "additionalProperties": {"type": "string"}}),
            Breaks(
                K::PropertyAddedNotCoveredByPartiallyOpenContentModel,
                "/properties/b",
            ),
            Compatible,
        ),
        case(
            "property removed, not covered by partially open content model",
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "additionalProperties": {"type": "string"}}),
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            Breaks(
                K::PropertyRemovedNotCoveredByPartiallyOpenContentModel,
                "/properties/b",
            ),
            Breaks(
                K::PropertyAddedNotCoveredByPartiallyOpenContentModel,
                "/properties/b",
            ),
        ),
        case(
            "property added under patternProperties",
            json!({"type": "object", "patternProperties": {"^x_": {"type": "string"}}}),
            json!({"type": "object", "properties": {"x_a": {"type": "integer"}}, "patternProperties": {"^x_": {"type": "string"}}}),
            Breaks(
                K::PropertyAddedNotCoveredByPartiallyOpenContentModel,
                "/properties/x_a",
            ),
            Compatible,
        ),
        case(
            "additionalProperties removed",
            obj(json!({"a": {"type": "string"}})),
            closed(json!({"a": {"type": "string"}})),
            Breaks(K::AdditionalPropertiesRemoved, "/additionalProperties"),
            Compatible,
        ),
        case(
            "additionalProperties narrowed",
            json!({"type": "object", "additionalProperties": {"type": ["string", "number"]}}),
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            Breaks(K::AdditionalPropertiesNarrowed, "/additionalProperties"),
            Compatible,
        ),
        case(
            "patternProperties changed",
            json!({"type": "object", "patternProperties": {"^x_": {"type": "string"}}, "additionalProperties": false}),
            json!({"type": "object", "patternProperties": {"^y_": {"type": "string"}}, "additionalProperties": false}),
            Breaks(K::PatternPropertiesChanged, "/patternProperties"),
            Breaks(K::PatternPropertiesChanged, "/patternProperties"),
        ),
        case(
            "propertyNames added",
            json!({"type": "object"}),
            json!({"type": "object", "propertyNames": {"maxLength": 3}}),
            Breaks(K::PropertyNamesNarrowed, "/propertyNames"),
            Compatible,
        ),
        case(
            "propertyNames met by a closed model",
            closed(json!({"ab": {"type": "string"}})),
            json!({"type": "object", "properties": {"ab": {"type": "string"}}, "additionalProperties": false, "propertyNames": {"maxLength": 3}}),
            Compatible,
            Compatible,
        ),
        case(
            "maxProperties added",
            json!({"type": "object"}),
            json!({"type": "object", "maxProperties": 2}),
            Breaks(K::MaxPropertiesAdded, "/maxProperties"),
            Compatible,
        ),
        case(
            "maxProperties decreased",
            json!({"type": "object", "maxProperties": 4}),
            json!({"type": "object", "maxProperties": 2}),
            Breaks(K::MaxPropertiesDecreased, "/maxProperties"),
            Compatible,
        ),
        case(
            "minProperties increased",
            json!({"type": "object", "minProperties": 1}),
            json!({"type": "object", "minProperties": 2}),
            Breaks(K::MinPropertiesIncreased, "/minProperties"),
            Compatible,
        ),
        case(
            "minProperties added",
            json!({"type": "object"}),
            json!({"type": "object", "minProperties": 1}),
            Breaks(K::MinPropertiesAdded, "/minProperties"),
            Compatible,
        ),
        case(
            "dependentRequired added",
            obj(json!({"a": {"type": "string"}, "b": {"type": "string"}})),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "dependentRequired": {"a": ["b"]}}),
            Breaks(K::DependentRequiredAdded, "/dependentRequired/a"),
            Compatible,
        ),
        case(
            "dependentSchemas added",
            obj(json!({"a": {"type": "string"}, "b": {"type": "string"}})),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "dependentSchemas": {"a": {"required": ["b"]}}}),
            Breaks(K::DependentSchemasChanged, "/dependentSchemas/a"),
            Compatible,
        ),
        case(
            "nested property narrowed",
            obj(json!({"addr": obj(json!({"zip": {"type": "string", "maxLength": 10}}))})),
            obj(json!({"addr": obj(json!({"zip": {"type": "string", "maxLength": 5}}))})),
            Breaks(
                K::MaxLengthDecreased,
                "/properties/addr/properties/zip/maxLength",
            ),
            Compatible,
        ),
        case(
            "property schema made false",
            obj(json!({"a": {"type": "string"}})),
            obj(json!({"a": false})),
            Breaks(K::SchemaMadeFalse, "/properties/a"),
            Compatible,
        ),
        // arrays
        case(
            "items narrowed",
            obj(json!({"a": {"type": "array", "items": {"type": ["string", "integer"]}}})),
            obj(json!({"a": {"type": "array", "items": {"type": "string"}}})),
            Breaks(K::TypeNarrowed, "/properties/a/items/type"),
            Compatible,
        ),
        case(
            "prefixItems narrowed",
            obj(
                json!({"a": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}}),
            ),
            obj(
                json!({"a": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 0}]}}),
            ),
            Breaks(K::MinimumAdded, "/properties/a/prefixItems/1/minimum"),
            Compatible,
        ),
        case(
            "additional items removed",
            obj(json!({"a": {"type": "array", "prefixItems": [{"type": "string"}]}})),
            obj(
                json!({"a": {"type": "array", "prefixItems": [{"type": "string"}], "items": false}}),
            ),
            Breaks(K::AdditionalItemsRemoved, "/properties/a/items"),
            Compatible,
        ),
        case(
            "maxItems decreased",
            arr(json!({"maxItems": 5})),
            arr(json!({"maxItems": 2})),
            Breaks(K::MaxItemsDecreased, "/properties/a/maxItems"),
            Compatible,
        ),
        case(
            "maxItems added",
            arr(json!({})),
            arr(json!({"maxItems": 2})),
            Breaks(K::MaxItemsAdded, "/properties/a/maxItems"),
            Compatible,
        ),
        case(
            "minItems increased",
            arr(json!({"minItems": 1})),
            arr(json!({"minItems": 3})),
            Breaks(K::MinItemsIncreased, "/properties/a/minItems"),
            Compatible,
        ),
        case(
            "minItems added",
            arr(json!({})),
            arr(json!({"minItems": 1})),
            Breaks(K::MinItemsAdded, "/properties/a/minItems"),
            Compatible,
        ),
        case(
            "uniqueItems added",
            arr(json!({})),
            arr(json!({"uniqueItems": true})),
            Breaks(K::UniqueItemsAdded, "/properties/a/uniqueItems"),
            Compatible,
        ),
        case(
            "contains added",
            arr(json!({})),
            arr(json!({"contains": {"const": "x"}})),
            Breaks(K::ContainsAdded, "/properties/a/contains"),
            Compatible,
        ),
        case(
            "contains narrowed",
            arr(json!({"contains": {"type": "string"}})),
            arr(json!({"contains": {"const": "x"}})),
            Breaks(K::ContainsNarrowed, "/properties/a/contains"),
            Compatible,
        ),
        // references
        case(
            "narrowed behind a local $ref",
            json!({"$defs": {"addr": obj(json!({"zip": {"type": "string"}}))}, "type": "object", "properties": {"home": {"$ref": "#/$defs/addr"}}}),
            json!({"$defs": {"addr": obj(json!({"zip": {"type": "string", "maxLength": 5}}))}, "type": "object", "properties": {"home": {"$ref": "#/$defs/addr"}}}),
            Breaks(K::MaxLengthAdded, "/$defs/addr/properties/zip/maxLength"),
            Compatible,
        ),
        case(
            "definition moved, same content",
            json!({"$defs": {"addr": obj(json!({"zip": {"type": "string"}}))}, "type": "object", "properties": {"home": {"$ref": "#/$defs/addr"}}}),
            json!({"$defs": {"address": obj(json!({"zip": {"type": "string"}}))}, "type": "object", "properties": {"home": {"$ref": "#/$defs/address"}}}),
            Compatible,
            Compatible,
        ),
        case(
            "recursive schema narrowed",
            json!({"$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}),
            json!({"$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer", "maximum": 10}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}),
            Breaks(K::MaximumAdded, "/$defs/node/properties/value/maximum"),
            Compatible,
        ),
        case(
            "recursive schema relaxed",
            json!({"$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}),
            json!({"$defs": {"node": {"type": "object", "properties": {"value": {"type": "number"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}),
            Compatible,
            Breaks(K::TypeNarrowed, "/$defs/node/properties/value/type"),
        ),
        // combinators
        case(
            "anyOf narrowed",
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"anyOf": [{"type": "string"}]}),
            Breaks(K::AnyOfNarrowed, "/anyOf"),
            Compatible,
        ),
        case(
            "oneOf extended with a disjoint branch",
            json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]}),
            Compatible,
            Breaks(K::OneOfNarrowed, "/oneOf"),
        ),
        case(
            "oneOf extended with an overlapping branch",
            json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]}),
            Breaks(K::OneOfOverlap, "/oneOf/2"),
            Breaks(K::OneOfNarrowed, "/oneOf"),
        ),
        case(
            "tagged oneOf extended",
            json!({"oneOf": [
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "a"}}},
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "b"}}}
            ]}),
            json!({"oneOf": [
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "a"}}},
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "b"}}},
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "c"}}}
            ]}),
            Compatible,
            Breaks(K::OneOfNarrowed, "/oneOf"),
        ),
        case(
            "union folded into a type list",
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"type": ["string", "integer"]}),
            Compatible,
            Compatible,
        ),
        case(
            "type list split into a narrower anyOf",
            json!({"type": ["string", "integer", "boolean"]}),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
            Breaks(K::AnyOfNarrowed, "/anyOf"),
            Compatible,
        ),
        case(
            "nullable reference relaxed",
            json!({"$defs": {"x": {"type": "string", "maxLength": 3}}, "type": "object",
                   "properties": {"a": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/x"}]}}}),
            json!({"$defs": {"x": {"type": "string", "maxLength": 5}}, "type": "object",
                   "properties": {"a": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/x"}]}}}),
            Compatible,
            Breaks(K::AnyOfNarrowed, "/properties/a/anyOf"),
        ),
        case(
            "required added inside allOf",
            obj(json!({"a": {"type": "string"}})),
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "allOf": [{"required": ["a"]}]}),
            Breaks(K::AllOfExtended, "/allOf/0"),
            Compatible,
        ),
        case(
            "allOf extended",
            json!({"allOf": [{"type": "object"}]}),
            json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}),
            Breaks(K::AllOfExtended, "/allOf/1"),
            Compatible,
        ),
        case(
            "not added",
            obj(json!({"a": {"type": "string"}})),
            obj(json!({"a": {"type": "string", "not": {"const": "x"}}})),
            Breaks(K::NotAdded, "/properties/a/not"),
            Compatible,
        ),
        case(
            "conditional added",
            obj(json!({"a": {"type": "string"}, "b": {"type": "string"}})),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                   "if": {"required": ["a"]}, "then": {"required": ["b"]}}),
            Breaks(K::ConditionalChanged, "/if"),
            Compatible,
        ),
        case(
            "unevaluatedProperties with applicators is not judged",
            json!({"type": "object", "allOf": [{"properties": {"a": {"type": "string"}}}]}),
            json!({"type": "object", "allOf": [{"properties": {"a": {"type": "string"}}}], "unevaluatedProperties": false}),
            Breaks(K::NotProvable, "/unevaluatedProperties"),
            Compatible,
        ),
        case(
            "unevaluatedProperties as additionalProperties",
            obj(json!({"a": {"type": "string"}})),
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "unevaluatedProperties": false}),
            Breaks(K::AdditionalPropertiesRemoved, "/unevaluatedProperties"),
            Compatible,
        ),
    ]
}

#[test]
fn compatibility_table() {
    let opts = CheckOptions::default();
    let all = cases();
    for c in &all {
        run_case(c, &opts);
    }
    // every change kind that a table row expects is covered at least once
    let covered: Vec<ChangeKind> = all
        .iter()
        .flat_map(|c| [c.backward, c.forward])
        .filter_map(|e| match e {
            Breaks(k, _) => Some(k),
            Compatible => None,
        })
        .collect();
    for k in [
        K::EnumNarrowed,
        K::RequiredAdded,
        K::PropertyAddedToOpenContentModel,
        K::OneOfOverlap,
    ] {
        assert!(covered.contains(&k));
    }
}

#[test]
fn optional_friendly_accepts_only_optional_additions() {
    let opts = CheckOptions {
        optional_friendly: true,
    };
    let rows = vec![
        case(
            "optional property added to open model",
            obj(json!({"a": {"type": "string"}})),
            obj(json!({"a": {"type": "string"}, "b": {"type": "integer"}})),
            Compatible,
            Compatible,
        ),
        case(
            "optional property removed from open model",
            obj(json!({"a": {"type": "string"}, "b": {"type": "integer"}})),
            obj(json!({"a": {"type": "string"}})),
            Compatible,
            Compatible,
        ),
        case(
            "required property added to open model is still refused",
            obj(json!({"a": {"type": "string"}})),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["b"]}),
            Breaks(K::PropertyAddedToOpenContentModel, "/properties/b"),
            Compatible,
        ),
        case(
            "other rules unchanged",
            obj(json!({"a": {"type": "string"}})),
            obj(json!({"a": {"type": "string", "maxLength": 3}, "b": {"type": "integer"}})),
            Breaks(K::MaxLengthAdded, "/properties/a/maxLength"),
            Compatible,
        ),
        case(
            "partially open model unchanged",
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            json!({"type": "object", "properties": {"b": {"type": "integer"}}, "additionalProperties": {"type": "string"}}),
            Breaks(
                K::PropertyAddedNotCoveredByPartiallyOpenContentModel,
                "/properties/b",
            ),
            Breaks(
                K::PropertyRemovedNotCoveredByPartiallyOpenContentModel,
                "/properties/b",
            ),
        ),
    ];
    for c in &rows {
        run_case(c, &opts);
    }
}

fn versions(docs: &[Value]) -> Vec<(u32, Schema)> {
    docs.iter()
        .enumerate()
        .map(|(i, d)| (i as u32 + 1, schema(d)))
        .collect()
}

#[test]
fn transitive_modes_compare_with_every_version() {
    // v2 adds a required property with a default (accepted), v3 drops the default:
    // compatible with v2, not with v1.
    let v1 = closed(json!({"a": {"type": "string"}}));
    let v2 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "default": 0}}, "required": ["b"], "additionalProperties": false});
    let v3 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["b"], "additionalProperties": false});
    let prev = versions(&[v1.clone(), v2.clone()]);
    let new = schema(&v3);
    let opts = CheckOptions::default();
    assert!(check(CompatMode::Backward, &new, &prev, &opts).is_empty());
    let found = check(CompatMode::BackwardTransitive, &new, &prev, &opts);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].kind, K::RequiredAdded);
    assert_eq!(found[0].against_version, Some(1));
    assert_counterexamples("transitive", &prev[0].1, &new, &found);
    assert!(check(CompatMode::None, &new, &prev, &opts).is_empty());

    // FORWARD_TRANSITIVE: the old readers must read the new data.
    let w1 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["b"]});
    let w2 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "default": 0}}, "required": ["b"]});
    let w3 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "default": 0}}});
    let prev = versions(&[w1, w2]);
    let new = schema(&w3);
    assert!(check(CompatMode::Forward, &new, &prev, &opts).is_empty());
    let found = check(CompatMode::ForwardTransitive, &new, &prev, &opts);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].kind, found[0].direction, found[0].against_version),
        (K::RequiredAdded, Direction::Forward, Some(1))
    );
    assert_counterexamples("forward transitive", &prev[0].1, &new, &found);

    // optional-friendly makes BACKWARD non-transitive too
    let friendly = CheckOptions {
        optional_friendly: true,
    };
    let u1 = obj(json!({"a": {"type": "string"}}));
    let u2 = obj(json!({}));
    let u3 = obj(json!({"a": {"type": "integer"}}));
    let prev = versions(&[u1, u2]);
    let new = schema(&u3);
    assert!(check(CompatMode::Backward, &new, &prev, &friendly).is_empty());
    let found = check(CompatMode::BackwardTransitive, &new, &prev, &friendly);
    assert!(
        found
            .iter()
            .any(|i| i.kind == K::TypeChanged && i.against_version == Some(1)),
        "{found:#?}"
    );
}

#[test]
fn full_modes_check_both_directions() {
    let v1 = obj(json!({"a": {"type": "string", "maxLength": 10}}));
    let v2 = obj(json!({"a": {"type": "string", "maxLength": 20}}));
    let prev = versions(&[v1]);
    let new = schema(&v2);
    let opts = CheckOptions::default();
    assert!(check(CompatMode::Backward, &new, &prev, &opts).is_empty());
    let found = check(CompatMode::Full, &new, &prev, &opts);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].direction, Direction::Forward);
    assert_eq!(found[0].kind, K::MaxLengthDecreased);
    assert_eq!(found[0].path, "/properties/a/maxLength");
    assert_counterexamples("full", &prev[0].1, &new, &found);
    assert_eq!(check(CompatMode::FullTransitive, &new, &prev, &opts), found);
    assert!(check(CompatMode::Full, &new, &[], &opts).is_empty());
    // an unchanged schema is compatible in every mode
    for mode in CompatMode::ALL {
        assert!(check(mode, &prev[0].1, &prev, &opts).is_empty(), "{mode}");
    }
}

#[test]
fn explain_is_one_readable_line() {
    let prev = versions(&[
        obj(json!({"sex": {"enum": ["M", "F", "X"]}})),
        obj(json!({"sex": {"enum": ["M", "F", "X"]}})),
    ]);
    let new = schema(&obj(json!({"sex": {"enum": ["M", "F"]}})));
    let found = check(CompatMode::Backward, &new, &prev, &CheckOptions::default());
    assert_eq!(found.len(), 1);
    assert_eq!(
        explain(&found[0]),
        r#"BACKWARD vs version 2: enum_narrowed at /properties/sex/enum: value "X" no longer allowed; counterexample {"sex":"X"}"#
    );
    assert_eq!(found[0].to_string(), explain(&found[0]));
    let json = serde_json::to_value(&found[0]).expect("serialize");
    assert_eq!(json["kind"], "enum_narrowed");
    assert_eq!(json["direction"], "backward");
    assert_eq!(json["against_version"], 2);
}

#[test]
fn modes_parse_and_print() {
    for mode in CompatMode::ALL {
        assert_eq!(mode.to_string().parse::<CompatMode>(), Ok(mode));
        assert_eq!(
            mode.to_string().to_lowercase().parse::<CompatMode>(),
            Ok(mode)
        );
        let json = serde_json::to_value(mode).expect("serialize");
        assert_eq!(json, json!(mode.to_string()));
        assert_eq!(
            serde_json::from_value::<CompatMode>(json).expect("deserialize"),
            mode
        );
    }
    assert_eq!(
        "backward_transitive".parse(),
        Ok(CompatMode::BackwardTransitive)
    );
    assert!("sideways".parse::<CompatMode>().is_err());
    for k in ChangeKind::ALL {
        assert_eq!(
            serde_json::to_value(k).expect("serialize"),
            json!(k.as_str())
        );
    }
}
