//! JSON Schema side of the schema registry: parsing, content ids, validation
//! and Confluent-style compatibility checks for JSON Schema 2020-12.
//!
//! # Documents
//!
//! [`Schema::parse`] accepts a JSON Schema 2020-12 document (`$schema`, when
//! present, must name 2020-12) that validates against the meta-schema and uses
//! local references only (`#`, `#/json/pointer`, `#anchor`). Its id
//! ([`Schema::id`]) is `sha256:` over the [`canonical_json`] form, so the same
//! content always gets the same id. The compiled validator asserts `format`.
//!
//! # Compatibility
//!
//! [`check`] compares a new schema with the previous versions of a subject
//! under a [`CompatMode`]. BACKWARD means every document valid under the old
//! schema is valid under the new one; FORWARD the reverse; FULL both;
//! `*_TRANSITIVE` against every previous version rather than the latest.
//! The checker proves compatibility keyword by keyword:
//!
//! - types, `enum`, `const`: the reader must admit every type and value the
//!   writer admits (`integer` is covered by `number`);
//! - strings, numbers, arrays, objects: a bound may be relaxed, never
//!   tightened or added (`maxLength`, `minimum`, `exclusiveMaximum`,
//!   `multipleOf`, `maxItems`, `uniqueItems`, `maxProperties`, …); `pattern`
//!   and `format` must stay the same or be removed;
//! - content models: adding a property to an *open* model (no
//!   `additionalProperties`, or `true`) breaks BACKWARD unless its schema
//!   accepts anything; adding one to a *closed* model (`false`) is fine;
//!   removing one from a closed model breaks BACKWARD; with a *partially open*
//!   model (`additionalProperties` a schema, or `patternProperties`) the
//!   property's schema must cover what the model allowed for that name;
//! - `required`: a newly required property breaks BACKWARD unless it has a
//!   `default` (Confluent's rule);
//! - nested properties, `items`/`prefixItems` and local `$ref`s are compared
//!   recursively (recursive schemas are handled coinductively);
//! - `allOf`/`anyOf`/`oneOf`/`not`/`if`: compared structurally; what cannot be
//!   proved is reported ([`ChangeKind::NotProvable`] and friends), never
//!   silently accepted. Equal subschemas are always compatible.
//!
//! [`CheckOptions::optional_friendly`] relaxes exactly one rule: adding an
//! optional property to an open content model (and, for FORWARD, removing
//! one) is accepted.
//!
//! Every [`Incompatibility`] carries a counterexample when one was found: a
//! small document accepted by the writer schema and rejected by the reader,
//! built from the writer schema and checked with both validators.
//! `docs/schema-compatibility.md` describes the rules with examples.

mod checker;
mod compat;
mod dialect;
mod sample;
mod schema;
pub mod wire;

pub use compat::{
    ChangeKind, CheckOptions, CompatMode, Direction, Incompatibility, UnknownCompatMode, check,
    check_pair, explain,
};
pub use schema::{
    DRAFT_2020_12, MAX_SCHEMA_BYTES, MAX_SCHEMA_OBJECTS, Schema, SchemaError, ValidationIssue,
    canonical_json, content_id,
};

/// Small instances of a schema: candidates built by the sample generator that
/// the schema's validator accepts (possibly none for unusual schemas).
pub fn samples(schema: &Schema) -> Vec<serde_json::Value> {
    sample::Sampler::new(schema)
        .variants(schema.assertions())
        .into_iter()
        .filter(|v| schema.is_valid(v))
        .collect()
}
