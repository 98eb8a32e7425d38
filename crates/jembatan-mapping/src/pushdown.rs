//! Filter push-down: rewriting a consumer's filter on target fields into a
//! filter on source columns the provider can apply, plus a residual the
//! broker applies to translated records.
//!
//! A predicate is pushed only when its rewrite has exactly the same
//! three-valued result as the original on every record that translates:
//! a pure rename of a top-level column (with operands of the column's
//! type), or a total code table whose outputs the predicate can judge for
//! every code (rewritten to `in` the codes whose output satisfies it).
//! Conjuncts of a top-level `all` are split; any other subtree is pushed
//! whole or not at all.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use jembatan_core::limits::MAX_IN_VALUES;
use jembatan_core::{FieldName, Filter, Operator, Predicate, Scalar};

/// The split of a filter on target fields.
#[derive(Debug, Clone, PartialEq)]
pub struct PushDown {
    /// Filter on source columns for the provider; `None` passes everything.
    pub source: Option<Filter>,
    /// Filter on translated records for the broker; `None` passes everything.
    pub residual: Option<Filter>,
}

/// The scalar kind of a renamed source column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Int,
    Num,
    Bool,
}

impl Kind {
    fn admits(self, s: &Scalar) -> bool {
        matches!(
            (self, s),
            (Kind::Str, Scalar::String(_))
                | (Kind::Int, Scalar::Int(_))
                | (Kind::Num, Scalar::Int(_) | Scalar::Float(_))
                | (Kind::Bool, Scalar::Bool(_))
        )
    }
}

/// How a top-level target field relates to the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PushInfo {
    /// The target field is the source column, unchanged.
    Rename {
        source: FieldName,
        /// The column's one non-null type, when it has one.
        kind: Option<Kind>,
    },
    /// The target field is a total, default-free code table over a string
    /// column whose outputs are non-null scalars.
    ValueMap {
        source: FieldName,
        map: Vec<(String, Value)>,
    },
}

pub(crate) fn push_down(filter: &Filter, info: &BTreeMap<String, PushInfo>) -> PushDown {
    let mut conjuncts = Vec::new();
    flatten_all(filter, &mut conjuncts);
    let mut source = Vec::new();
    let mut residual = Vec::new();
    for c in conjuncts {
        match rewrite(c, info) {
            Some(r) => source.push(r),
            None => residual.push(c.clone()),
        }
    }
    let source = Filter::and(source);
    if source.as_ref().is_some_and(|s| s.validate().is_err()) {
        return PushDown {
            source: None,
            residual: Some(filter.clone()),
        };
    }
    PushDown {
        source,
        residual: Filter::and(residual),
    }
}

fn flatten_all<'f>(f: &'f Filter, out: &mut Vec<&'f Filter>) {
    match f {
        Filter::All(list) => list.iter().for_each(|c| flatten_all(c, out)),
        other => out.push(other),
    }
}

/// The exact rewrite of a whole subtree, if there is one.
fn rewrite(f: &Filter, info: &BTreeMap<String, PushInfo>) -> Option<Filter> {
    match f {
        Filter::Predicate(p) => rewrite_pred(p, info).map(Filter::Predicate),
        Filter::All(list) => list
            .iter()
            .map(|c| rewrite(c, info))
            .collect::<Option<Vec<_>>>()
            .map(Filter::All),
        Filter::Any(list) => list
            .iter()
            .map(|c| rewrite(c, info))
            .collect::<Option<Vec<_>>>()
            .map(Filter::Any),
        Filter::Not(inner) => rewrite(inner, info).map(|r| Filter::Not(Box::new(r))),
    }
}

fn rewrite_pred(p: &Predicate, info: &BTreeMap<String, PushInfo>) -> Option<Predicate> {
    let null_test = matches!(p.op, Operator::IsNull | Operator::IsNotNull);
    match info.get(p.field.as_str())? {
        PushInfo::Rename { source, kind } => {
            if !null_test {
                let kind = (*kind)?;
                if p.op == Operator::Prefix && kind != Kind::Str {
                    return None;
                }
                if !p.value.iter().chain(&p.values).all(|s| kind.admits(s)) {
                    return None;
                }
            }
            Predicate::new(source.clone(), p.op, p.value.clone(), p.values.clone()).ok()
        }
        PushInfo::ValueMap { source, map } => {
            if null_test {
                // outputs are never null: the output is null exactly when
                // the source is
                return Predicate::new(source.clone(), p.op, None, vec![]).ok();
            }
            let mut codes = Vec::new();
            let mut probe = Map::with_capacity(1);
            for (code, out) in map {
                probe.insert(p.field.to_string(), out.clone());
                if p.eval(&probe)? {
                    codes.push(Scalar::String(code.clone()));
                }
            }
            match codes.len() {
                0 => None,
                1 => Predicate::new(source.clone(), Operator::Eq, codes.pop(), vec![]).ok(),
                n if n > MAX_IN_VALUES => None,
                _ => Predicate::new(source.clone(), Operator::In, None, codes).ok(),
            }
        }
    }
}
