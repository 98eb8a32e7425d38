//! Declarative mappings that translate records of one agency's dataset
//! schema into another's: the document format ([`Mapping::parse`]),
//! type-checking against both JSON Schemas ([`Mapping::check`]), the
//! execution engine ([`CheckedMapping::apply`]), compiled plans that
//! fold both schemas' checks into the rules ([`CheckedMapping::plan`]) and
//! filter push-down ([`CheckedMapping::push_down`]). See `docs/mappings.md`.
//!
//! **Default deny**: only fields that rules produce appear in the output.
//! **A mapping that cannot be right is never accepted**: `check` refuses
//! it with every reason it finds. **Applying never panics**, whatever the
//! record holds.

mod apply;
mod check;
mod doc;
mod path;
mod plan;
mod pushdown;
mod runtest;
mod schema;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use jembatan_core::Filter;

pub use apply::{ApplyError, RuleFailure, Secrets};
pub use check::CheckError;
pub use doc::{
    Format, MAX_DOCUMENT_BYTES, MAX_NESTING, MAX_RULES, Mapping, MappingError, RuleError,
    SchemaRef, SchemaRefError,
};
pub use path::{FieldPath, PathError};
pub use plan::{Plan, Planned};
pub use pushdown::PushDown;
pub use runtest::{TestFailure, compile_schema, run_test};

use doc::{Expr, Op, Pipeline, Rule};
use pushdown::PushInfo;

impl Mapping {
    /// Type-checks the mapping against the source and target schemas
    /// (JSON Schema 2020-12 documents). Returns every problem found.
    pub fn check(
        &self,
        source_schema: &Value,
        target_schema: &Value,
    ) -> Result<CheckedMapping, Vec<CheckError>> {
        check::check(self, source_schema, target_schema)
    }
}

/// A mapping that passed [`Mapping::check`]: ready to apply.
#[derive(Debug, Clone)]
pub struct CheckedMapping {
    mapping: Mapping,
    push: BTreeMap<String, PushInfo>,
    source_fields: BTreeSet<String>,
    secrets: BTreeSet<String>,
    /// The compiled target schema every output is validated against.
    target_validator: jsonschema::Validator,
    /// The target schema document, for [`CheckedMapping::plan`].
    target_schema: Value,
}

impl CheckedMapping {
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Translates one source record. Fails with the rule at fault when a
    /// value cannot be converted, a `fail` rule fires, a secret the
    /// mapping uses is not in `secrets`, or the output breaks a constraint
    /// of the target schema that type-checking cannot see (a pattern, a
    /// length, a range): the output is always valid under the target
    /// schema. An output failure that no single rule wrote has `rule` equal
    /// to the number of rules and target `output`.
    pub fn apply(
        &self,
        record: &Map<String, Value>,
        secrets: &Secrets,
    ) -> Result<Value, ApplyError> {
        for (i, rule) in self.mapping.rules.iter().enumerate() {
            if let Rule::Output { value, .. } = rule
                && let Some(name) = missing_secret(value, secrets)
            {
                return Err(ApplyError {
                    rule: i,
                    target: rule.label(),
                    reason: RuleFailure::MissingSecret(name.to_owned()),
                });
            }
        }
        let out = apply::apply_rules(&self.mapping.rules, record, secrets)?;
        if self.target_validator.is_valid(&out) {
            return Ok(out);
        }
        if let Some(e) = self.target_validator.iter_errors(&out).next() {
            let at: FieldPath = e.instance_path().as_str().parse().unwrap_or_default();
            let culprit = self.mapping.rules.iter().enumerate().find(|(_, r)| {
                matches!(r, Rule::Output { target, .. } if at.starts_with(target) || target.starts_with(&at))
            });
            let (rule, target) = match culprit {
                Some((i, r)) => (i, r.label()),
                None => (self.mapping.rules.len(), "output".to_owned()),
            };
            return Err(ApplyError {
                rule,
                target,
                reason: RuleFailure::BreaksSchema {
                    schema: self.mapping.target().to_owned(),
                    location: e.schema_path().to_string(),
                },
            });
        }
        Ok(out)
    }

    /// Compiles the mapping, with the source schema records are checked
    /// against, into a [`Plan`]: done once, used for every record. A record
    /// the plan translates is one the reference path (validation against
    /// `source_schema`, then [`apply`](Self::apply)) translates, to the
    /// same output; the plan refuses exactly the others.
    pub fn plan(&self, source_schema: &Value) -> Plan {
        Plan::compile(self, source_schema)
    }

    /// The secret names the mapping's `hash` ops use.
    pub fn secret_names(&self) -> &BTreeSet<String> {
        &self.secrets
    }

    /// The top-level source fields the rules read: the columns to ask the
    /// provider for.
    pub fn source_fields(&self) -> BTreeSet<String> {
        self.source_fields.clone()
    }

    /// Splits a filter on top-level target fields into a filter on source
    /// columns for the provider and a residual for translated records.
    /// For every record that translates, passing `source` (on the source
    /// record) and then `residual` (on the output) is the same as passing
    /// `filter` on the output.
    pub fn push_down(&self, filter: &Filter) -> PushDown {
        pushdown::push_down(filter, &self.push)
    }
}

fn missing_secret<'p>(p: &'p Pipeline, secrets: &Secrets) -> Option<&'p str> {
    if let Expr::When {
        then, otherwise, ..
    } = &p.expr
    {
        if let Some(n) = missing_secret(then, secrets) {
            return Some(n);
        }
        if let Some(n) = otherwise
            .as_deref()
            .and_then(|o| missing_secret(o, secrets))
        {
            return Some(n);
        }
    }
    ops_missing_secret(&p.ops, secrets)
}

fn ops_missing_secret<'p>(ops: &'p [Op], secrets: &Secrets) -> Option<&'p str> {
    ops.iter().find_map(|op| match op {
        Op::Hash(h) if secrets.get(&h.secret).is_none() => Some(h.secret.as_str()),
        Op::Each(inner) => ops_missing_secret(inner, secrets),
        _ => None,
    })
}
