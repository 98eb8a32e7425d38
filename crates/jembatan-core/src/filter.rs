//! Structured row filters: predicates (field, operator, value) combined
//! with all / any / not. Never SQL text.
//!
//! A filter arrives as a proto message (from a consumer), or as TOML/JSON
//! (agreement and whitelist row filters in config); both are validated
//! against the limits in [`crate::limits`] before anything else looks at
//! them.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use jembatan_proto::v1 as pb;

use crate::error::InvalidArgument;
use crate::ids::{FieldName, truncate};
use crate::limits::{
    MAX_FILTER_DEPTH, MAX_FILTER_PREDICATES, MAX_FORWARDED_FILTER_DEPTH,
    MAX_FORWARDED_FILTER_PREDICATES, MAX_IN_VALUES, MAX_STRING_BYTES,
};

/// The depth and size a filter is held to, with the limits' names for
/// messages.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    depth: (&'static str, usize),
    predicates: (&'static str, usize),
}

/// A consumer's filter, and one built in code or config.
const REQUEST: Bounds = Bounds {
    depth: ("max_filter_depth", MAX_FILTER_DEPTH),
    predicates: ("max_filter_predicates", MAX_FILTER_PREDICATES),
};

/// A filter the broker forwards to an adapter.
const FORWARDED: Bounds = Bounds {
    depth: ("max_forwarded_filter_depth", MAX_FORWARDED_FILTER_DEPTH),
    predicates: (
        "max_forwarded_filter_predicates",
        MAX_FORWARDED_FILTER_PREDICATES,
    ),
};

impl Bounds {
    fn too_deep(&self, depth: usize) -> Option<InvalidArgument> {
        let (name, max) = self.depth;
        (depth > max).then(|| {
            InvalidArgument::new(
                "filter",
                format!("nesting deeper than the limit {name} = {max}"),
            )
        })
    }

    fn too_many(&self, count: usize) -> Option<InvalidArgument> {
        let (name, max) = self.predicates;
        (count > max).then(|| {
            InvalidArgument::new(
                "filter",
                format!("more predicates than the limit {name} = {max}"),
            )
        })
    }
}

/// A filter or lookup value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl Scalar {
    /// Checks limits: strings no longer than `MAX_STRING_BYTES` and free of
    /// NUL bytes, floats finite and not negative zero. The broker and the
    /// adapter both convert values through here, so what one accepts the
    /// other does too.
    pub fn validate(&self) -> Result<(), InvalidArgument> {
        match self {
            Scalar::String(s) if s.len() > MAX_STRING_BYTES => Err(InvalidArgument::new(
                "value",
                format!(
                    "string of {} bytes exceeds the limit max_string_bytes = {MAX_STRING_BYTES}",
                    s.len()
                ),
            )),
            Scalar::String(s) if s.contains('\0') => {
                Err(InvalidArgument::new("value", "string contains a NUL byte"))
            }
            Scalar::Float(f) if !f.is_finite() => {
                Err(InvalidArgument::new("value", "number must be finite"))
            }
            // -0 equals 0 in SQL but not in every decoder on the way there
            Scalar::Float(f) if *f == 0.0 && f.is_sign_negative() => Err(InvalidArgument::new(
                "value",
                "number must not be negative zero (send 0)",
            )),
            _ => Ok(()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Bool(b) => (*b).into(),
            Scalar::Int(i) => (*i).into(),
            Scalar::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Scalar::String(s) => s.clone().into(),
        }
    }

    pub fn to_proto(&self) -> pb::Scalar {
        use pb::scalar::Kind;
        let kind = match self {
            Scalar::Bool(b) => Kind::BoolValue(*b),
            Scalar::Int(i) => Kind::IntValue(*i),
            Scalar::Float(f) => Kind::DoubleValue(*f),
            Scalar::String(s) => Kind::StringValue(s.clone()),
        };
        pb::Scalar { kind: Some(kind) }
    }

    /// Human-readable rendering for messages (strings quoted, cut to 64 bytes).
    pub fn describe(&self) -> String {
        match self {
            Scalar::String(s) => format!("{:?}", truncate(s, 64)),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

impl TryFrom<&pb::Scalar> for Scalar {
    type Error = InvalidArgument;
    fn try_from(p: &pb::Scalar) -> Result<Self, Self::Error> {
        use pb::scalar::Kind;
        let s = match &p.kind {
            None => return Err(InvalidArgument::new("value", "no value set")),
            Some(Kind::StringValue(s)) => Scalar::String(s.clone()),
            Some(Kind::IntValue(i)) => Scalar::Int(*i),
            Some(Kind::DoubleValue(f)) => Scalar::Float(*f),
            Some(Kind::BoolValue(b)) => Scalar::Bool(*b),
        };
        s.validate()?;
        Ok(s)
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Prefix,
    IsNull,
    IsNotNull,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::Lt => "lt",
            Operator::Le => "le",
            Operator::Gt => "gt",
            Operator::Ge => "ge",
            Operator::In => "in",
            Operator::Prefix => "prefix",
            Operator::IsNull => "is_null",
            Operator::IsNotNull => "is_not_null",
        }
    }

    fn from_proto(op: i32) -> Result<Self, InvalidArgument> {
        use pb::Operator as P;
        Ok(match P::try_from(op) {
            Ok(P::Eq) => Operator::Eq,
            Ok(P::Ne) => Operator::Ne,
            Ok(P::Lt) => Operator::Lt,
            Ok(P::Le) => Operator::Le,
            Ok(P::Gt) => Operator::Gt,
            Ok(P::Ge) => Operator::Ge,
            Ok(P::In) => Operator::In,
            Ok(P::Prefix) => Operator::Prefix,
            Ok(P::IsNull) => Operator::IsNull,
            Ok(P::IsNotNull) => Operator::IsNotNull,
            Ok(P::Unspecified) => {
                return Err(InvalidArgument::new("op", "operator is unspecified"));
            }
            Err(_) => return Err(InvalidArgument::new("op", format!("unknown operator {op}"))),
        })
    }

    fn to_proto(self) -> pb::Operator {
        use pb::Operator as P;
        match self {
            Operator::Eq => P::Eq,
            Operator::Ne => P::Ne,
            Operator::Lt => P::Lt,
            Operator::Le => P::Le,
            Operator::Gt => P::Gt,
            Operator::Ge => P::Ge,
            Operator::In => P::In,
            Operator::Prefix => P::Prefix,
            Operator::IsNull => P::IsNull,
            Operator::IsNotNull => P::IsNotNull,
        }
    }
}

/// One comparison. `values` holds exactly one operand for the comparison
/// operators and `prefix`, one or more for `in`, none for the null tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Predicate {
    pub field: FieldName,
    pub op: Operator,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Scalar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Scalar>,
}

impl Predicate {
    pub fn new(
        field: FieldName,
        op: Operator,
        value: Option<Scalar>,
        values: Vec<Scalar>,
    ) -> Result<Self, InvalidArgument> {
        let p = Self {
            field,
            op,
            value,
            values,
        };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), InvalidArgument> {
        let op = self.op.as_str();
        match self.op {
            Operator::IsNull | Operator::IsNotNull => {
                if self.value.is_some() || !self.values.is_empty() {
                    return Err(InvalidArgument::new(
                        "value",
                        format!("{op} takes no value"),
                    ));
                }
            }
            Operator::In => {
                if self.value.is_some() {
                    return Err(InvalidArgument::new(
                        "value",
                        "in takes its operands in `values`, not `value`",
                    ));
                }
                if self.values.is_empty() {
                    return Err(InvalidArgument::new(
                        "values",
                        "in needs at least one value",
                    ));
                }
                if self.values.len() > MAX_IN_VALUES {
                    return Err(InvalidArgument::new(
                        "values",
                        format!(
                            "{} values exceed the limit max_in_values = {MAX_IN_VALUES}",
                            self.values.len()
                        ),
                    ));
                }
                for v in &self.values {
                    v.validate().map_err(|e| e.within("values"))?;
                }
            }
            _ => {
                if !self.values.is_empty() {
                    return Err(InvalidArgument::new(
                        "values",
                        format!("{op} takes one `value`, not `values`"),
                    ));
                }
                let Some(v) = &self.value else {
                    return Err(InvalidArgument::new("value", format!("{op} needs a value")));
                };
                v.validate()?;
                if self.op == Operator::Prefix && !matches!(v, Scalar::String(_)) {
                    return Err(InvalidArgument::new("value", "prefix needs a string value"));
                }
            }
        }
        Ok(())
    }

    /// Three-valued evaluation against a JSON record, with SQL's rules: a
    /// comparison with a missing or null field is unknown (`None`).
    pub fn eval(&self, record: &serde_json::Map<String, serde_json::Value>) -> Option<bool> {
        let field = record
            .get(self.field.as_str())
            .unwrap_or(&serde_json::Value::Null);
        match self.op {
            Operator::IsNull => return Some(field.is_null()),
            Operator::IsNotNull => return Some(!field.is_null()),
            _ => {}
        }
        if field.is_null() {
            return None;
        }
        let cmp = |v: &Scalar| compare(field, v);
        match self.op {
            Operator::In => {
                let mut unknown = false;
                for v in &self.values {
                    match cmp(v) {
                        Some(Ordering::Equal) => return Some(true),
                        None => unknown = true,
                        _ => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
            Operator::Prefix => match (field, self.value.as_ref()?) {
                (serde_json::Value::String(f), Scalar::String(p)) => {
                    Some(f.starts_with(p.as_str()))
                }
                _ => None,
            },
            op => {
                let ord = cmp(self.value.as_ref()?)?;
                Some(match op {
                    Operator::Eq => ord == Ordering::Equal,
                    Operator::Ne => ord != Ordering::Equal,
                    Operator::Lt => ord == Ordering::Less,
                    Operator::Le => ord != Ordering::Greater,
                    Operator::Gt => ord == Ordering::Greater,
                    Operator::Ge => ord != Ordering::Less,
                    _ => unreachable!("handled above"),
                })
            }
        }
    }
}

/// Compares a JSON value with a scalar; `None` when the kinds differ (a
/// comparison a filter counts as unknown). Shared by everything that
/// evaluates conditions on records, so they agree on every value.
pub fn compare(field: &serde_json::Value, v: &Scalar) -> Option<Ordering> {
    use serde_json::Value as J;
    match (field, v) {
        (J::String(a), Scalar::String(b)) => Some(a.as_str().cmp(b.as_str())),
        (J::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
        (J::Number(n), Scalar::Int(b)) => match n.as_i64() {
            Some(a) => Some(a.cmp(b)),
            None => n.as_f64()?.partial_cmp(&(*b as f64)),
        },
        (J::Number(n), Scalar::Float(b)) => n.as_f64()?.partial_cmp(b),
        _ => None,
    }
}

/// A boolean combination of predicates.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    #[serde(untagged)]
    Predicate(Predicate),
}

impl Filter {
    /// `all` of the given filters, flattening the trivial cases.
    pub fn and(filters: impl IntoIterator<Item = Filter>) -> Option<Filter> {
        let mut list: Vec<Filter> = filters.into_iter().collect();
        match list.len() {
            0 => None,
            1 => list.pop(),
            _ => Some(Filter::All(list)),
        }
    }

    /// Checks depth and size limits of a filter built in code or config.
    pub fn validate(&self) -> Result<(), InvalidArgument> {
        let mut count = 0;
        self.walk_check(1, &mut count)
    }

    fn walk_check(&self, depth: usize, count: &mut usize) -> Result<(), InvalidArgument> {
        if let Some(e) = REQUEST.too_deep(depth) {
            return Err(e);
        }
        match self {
            Filter::Predicate(p) => {
                *count += 1;
                if let Some(e) = REQUEST.too_many(*count) {
                    return Err(e);
                }
                p.validate().map_err(|e| e.within("filter"))
            }
            Filter::All(list) | Filter::Any(list) => {
                list.iter().try_for_each(|f| f.walk_check(depth + 1, count))
            }
            Filter::Not(f) => f.walk_check(depth + 1, count),
        }
    }

    /// Every predicate of the filter, in order.
    pub fn predicates(&self) -> Vec<&Predicate> {
        let mut out = Vec::new();
        self.collect_predicates(&mut out);
        out
    }

    fn collect_predicates<'a>(&'a self, out: &mut Vec<&'a Predicate>) {
        match self {
            Filter::Predicate(p) => out.push(p),
            Filter::All(list) | Filter::Any(list) => {
                list.iter().for_each(|f| f.collect_predicates(out))
            }
            Filter::Not(f) => f.collect_predicates(out),
        }
    }

    /// Every field the filter names.
    pub fn fields(&self) -> BTreeSet<&FieldName> {
        let mut out = BTreeSet::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut BTreeSet<&'a FieldName>) {
        match self {
            Filter::Predicate(p) => {
                out.insert(&p.field);
            }
            Filter::All(list) | Filter::Any(list) => {
                list.iter().for_each(|f| f.collect_fields(out))
            }
            Filter::Not(f) => f.collect_fields(out),
        }
    }

    /// Three-valued evaluation against a JSON record (SQL semantics).
    pub fn eval(&self, record: &serde_json::Map<String, serde_json::Value>) -> Option<bool> {
        match self {
            Filter::Predicate(p) => p.eval(record),
            Filter::Not(f) => f.eval(record).map(|b| !b),
            Filter::All(list) => {
                let mut unknown = false;
                for f in list {
                    match f.eval(record) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown { None } else { Some(true) }
            }
            Filter::Any(list) => {
                let mut unknown = false;
                for f in list {
                    match f.eval(record) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
        }
    }

    /// Whether a record passes the filter (unknown counts as no, like SQL's WHERE).
    pub fn matches(&self, record: &serde_json::Map<String, serde_json::Value>) -> bool {
        self.eval(record) == Some(true)
    }

    pub fn to_proto(&self) -> pb::Filter {
        use pb::filter::Kind;
        let kind = match self {
            Filter::Predicate(p) => Kind::Predicate(pb::Predicate {
                field: p.field.to_string(),
                op: p.op.to_proto() as i32,
                value: p.value.as_ref().map(Scalar::to_proto),
                values: p.values.iter().map(Scalar::to_proto).collect(),
            }),
            Filter::All(list) => Kind::All(pb::FilterList {
                filters: list.iter().map(Filter::to_proto).collect(),
            }),
            Filter::Any(list) => Kind::Any(pb::FilterList {
                filters: list.iter().map(Filter::to_proto).collect(),
            }),
            Filter::Not(f) => Kind::Not(Box::new(f.to_proto())),
        };
        pb::Filter { kind: Some(kind) }
    }

    /// A filter the broker forwards to an adapter: the agreement's row
    /// filter, the consumer's filter and a lookup key side by side under
    /// one `all`, so one level deeper and with up to twice the predicates
    /// (and one) of a consumer's filter. Every other limit is the same.
    pub fn from_forwarded_proto(p: &pb::Filter) -> Result<Filter, InvalidArgument> {
        Filter::from_proto_at(p, 1, &mut 0, &FORWARDED)
    }

    fn from_proto_at(
        p: &pb::Filter,
        depth: usize,
        count: &mut usize,
        bounds: &Bounds,
    ) -> Result<Filter, InvalidArgument> {
        use pb::filter::Kind;
        if let Some(e) = bounds.too_deep(depth) {
            return Err(e);
        }
        let list = |l: &pb::FilterList, count: &mut usize| {
            l.filters
                .iter()
                .map(|f| Filter::from_proto_at(f, depth + 1, count, bounds))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &p.kind {
            None => return Err(InvalidArgument::new("filter", "empty filter (no kind set)")),
            Some(Kind::Predicate(pred)) => {
                *count += 1;
                if let Some(e) = bounds.too_many(*count) {
                    return Err(e);
                }
                let field: FieldName = pred
                    .field
                    .parse()
                    .map_err(|e: InvalidArgument| e.within("filter"))?;
                let op = Operator::from_proto(pred.op).map_err(|e| e.within("filter"))?;
                let value = pred
                    .value
                    .as_ref()
                    .map(Scalar::try_from)
                    .transpose()
                    .map_err(|e| e.within("filter"))?;
                let values = pred
                    .values
                    .iter()
                    .map(Scalar::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.within("filter"))?;
                Filter::Predicate(
                    Predicate::new(field, op, value, values).map_err(|e| e.within("filter"))?,
                )
            }
            Some(Kind::All(l)) => Filter::All(list(l, count)?),
            Some(Kind::Any(l)) => Filter::Any(list(l, count)?),
            Some(Kind::Not(f)) => Filter::Not(Box::new(Filter::from_proto_at(
                f,
                depth + 1,
                count,
                bounds,
            )?)),
        })
    }
}

impl TryFrom<&pb::Filter> for Filter {
    type Error = InvalidArgument;
    fn try_from(p: &pb::Filter) -> Result<Self, Self::Error> {
        Filter::from_proto_at(p, 1, &mut 0, &REQUEST)
    }
}

/// The TOML / JSON form of a filter, as written in configs:
/// `{ field = "x", op = "eq", value = 1 }`, `{ all = [...] }`,
/// `{ any = [...] }`, `{ not = {...} }`.
#[derive(Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum FilterRepr {
    All {
        all: Vec<FilterRepr>,
    },
    Any {
        any: Vec<FilterRepr>,
    },
    Not {
        not: Box<FilterRepr>,
    },
    Predicate {
        field: FieldName,
        op: Operator,
        #[serde(default)]
        value: Option<Scalar>,
        #[serde(default)]
        values: Vec<Scalar>,
    },
}

impl TryFrom<FilterRepr> for Filter {
    type Error = InvalidArgument;
    fn try_from(r: FilterRepr) -> Result<Self, Self::Error> {
        let list = |l: Vec<FilterRepr>| {
            l.into_iter()
                .map(Filter::try_from)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match r {
            FilterRepr::All { all } => Filter::All(list(all)?),
            FilterRepr::Any { any } => Filter::Any(list(any)?),
            FilterRepr::Not { not } => Filter::Not(Box::new(Filter::try_from(*not)?)),
            FilterRepr::Predicate {
                field,
                op,
                value,
                values,
            } => Filter::Predicate(Predicate::new(field, op, value, values)?),
        })
    }
}

/// A filter in a config file: a predicate `{ field, op, value }` (or
/// `values` for `in`), or `{ all = [...] }`, `{ any = [...] }`,
/// `{ not = {...} }` combining filters. Its depth and size are checked
/// when the config is read.
impl schemars::JsonSchema for Filter {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Filter".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "A filter: a predicate `{ field, op, value }` (`values` for `in`), or `{ all = [...] }`, `{ any = [...] }`, `{ not = {...} }` combining filters.",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["field", "op"],
                    "properties": {
                        "field": { "type": "string" },
                        "op": { "enum": ["eq", "ne", "lt", "le", "gt", "ge", "in", "prefix", "is_null", "is_not_null"] },
                        "value": {},
                        "values": { "type": "array" }
                    },
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "required": ["all"],
                    "properties": { "all": { "type": "array", "items": { "$ref": "#/$defs/Filter" } } },
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "required": ["any"],
                    "properties": { "any": { "type": "array", "items": { "$ref": "#/$defs/Filter" } } },
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "required": ["not"],
                    "properties": { "not": { "$ref": "#/$defs/Filter" } },
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = FilterRepr::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a filter is {field, op, value | values}, {all = [...]}, {any = [...]} or {not = {...}}",
            )
        })?;
        let f = Filter::try_from(repr).map_err(serde::de::Error::custom)?;
        f.validate().map_err(serde::de::Error::custom)?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pred(field: &str, op: Operator, value: Option<Scalar>) -> Filter {
        Filter::Predicate(Predicate::new(field.parse().unwrap(), op, value, vec![]).unwrap())
    }

    #[test]
    fn config_form_round_trips_through_proto() {
        let f: Filter = serde_json::from_value(json!({
            "all": [
                {"field": "kode_kecamatan", "op": "eq", "value": "15.07.01"},
                {"not": {"field": "umur", "op": "lt", "value": 17}},
                {"field": "agama", "op": "in", "values": ["ISLAM", "KRISTEN"]}
            ]
        }))
        .unwrap();
        let back = Filter::try_from(&f.to_proto()).unwrap();
        assert_eq!(f, back);
        assert_eq!(f.fields().len(), 3);
    }

    #[test]
    fn invalid_filters_name_the_problem() {
        let cases: Vec<(&str, pb::Filter, &str)> = vec![
            ("empty", pb::Filter { kind: None }, "empty filter"),
            (
                "unspecified op",
                pb::Filter {
                    kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
                        field: "nik".into(),
                        op: 0,
                        value: None,
                        values: vec![],
                    })),
                },
                "operator is unspecified",
            ),
            (
                "bad field",
                pb::Filter {
                    kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
                        field: "nik\" OR 1=1 --".into(),
                        op: pb::Operator::Eq as i32,
                        value: Some(Scalar::Int(1).to_proto()),
                        values: vec![],
                    })),
                },
                "field name",
            ),
            (
                "nul byte",
                pb::Filter {
                    kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
                        field: "nik".into(),
                        op: pb::Operator::Eq as i32,
                        value: Some(Scalar::String("a\0b".into()).to_proto()),
                        values: vec![],
                    })),
                },
                "NUL byte",
            ),
        ];
        for (name, p, want) in cases {
            let err = Filter::try_from(&p).unwrap_err();
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn depth_limit() {
        let mut f = pred("a", Operator::IsNull, None).to_proto();
        for _ in 0..MAX_FILTER_DEPTH {
            f = pb::Filter {
                kind: Some(pb::filter::Kind::Not(Box::new(f))),
            };
        }
        let err = Filter::try_from(&f).unwrap_err();
        assert!(err.to_string().contains("max_filter_depth"), "{err}");
    }

    fn all_of(filters: Vec<pb::Filter>) -> pb::Filter {
        pb::Filter {
            kind: Some(pb::filter::Kind::All(pb::FilterList { filters })),
        }
    }

    fn proto_pred(
        field: &str,
        op: pb::Operator,
        value: Option<Scalar>,
        values: Vec<Scalar>,
    ) -> pb::Filter {
        pb::Filter {
            kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
                field: field.into(),
                op: op as i32,
                value: value.as_ref().map(Scalar::to_proto),
                values: values.iter().map(Scalar::to_proto).collect(),
            })),
        }
    }

    /// Each limit at its value passes and one over fails naming the limit,
    /// both for filters from requests (proto) and for filters built in
    /// code or config (`validate`).
    #[test]
    fn limits_hold_at_their_bounds() {
        use crate::limits::MAX_IDENT_BYTES;
        let leaf = || proto_pred("a", pb::Operator::IsNull, None, vec![]);
        let depth = |n: usize| {
            let mut f = leaf();
            for _ in 1..n {
                f = all_of(vec![f]);
            }
            f
        };
        let predicates = |n: usize| all_of((0..n).map(|_| leaf()).collect());
        let in_values = |n: usize| {
            proto_pred(
                "a",
                pb::Operator::In,
                None,
                (0..n).map(|i| Scalar::Int(i as i64)).collect(),
            )
        };
        let string = |s: String| proto_pred("a", pb::Operator::Eq, Some(Scalar::String(s)), vec![]);
        let field = |n: usize| proto_pred(&"f".repeat(n), pb::Operator::IsNull, None, vec![]);
        let cases: Vec<(&str, pb::Filter, Option<&str>)> = vec![
            ("depth at the limit", depth(MAX_FILTER_DEPTH), None),
            (
                "depth over the limit",
                depth(MAX_FILTER_DEPTH + 1),
                Some("nesting deeper than the limit max_filter_depth = 16"),
            ),
            (
                "predicates at the limit",
                predicates(MAX_FILTER_PREDICATES),
                None,
            ),
            (
                "predicates over the limit",
                predicates(MAX_FILTER_PREDICATES + 1),
                Some("more predicates than the limit max_filter_predicates = 256"),
            ),
            ("in values at the limit", in_values(MAX_IN_VALUES), None),
            (
                "in values over the limit",
                in_values(MAX_IN_VALUES + 1),
                Some("1001 values exceed the limit max_in_values = 1000"),
            ),
            (
                "string at the limit",
                string("x".repeat(MAX_STRING_BYTES)),
                None,
            ),
            (
                "string over the limit",
                string("x".repeat(MAX_STRING_BYTES + 1)),
                Some("string of 4097 bytes exceeds the limit max_string_bytes = 4096"),
            ),
            (
                "limit counts bytes, not characters",
                string("é".repeat(MAX_STRING_BYTES / 2 + 1)),
                Some("string of 4098 bytes exceeds the limit max_string_bytes"),
            ),
            ("field name at the limit", field(MAX_IDENT_BYTES), None),
            (
                "field name over the limit",
                field(MAX_IDENT_BYTES + 1),
                Some("field name is longer than 128 bytes (limit max_ident_bytes)"),
            ),
            (
                "non-finite number",
                proto_pred(
                    "a",
                    pb::Operator::Lt,
                    Some(Scalar::Float(f64::INFINITY)),
                    vec![],
                ),
                Some("number must be finite"),
            ),
            (
                "not a number",
                proto_pred("a", pb::Operator::Eq, Some(Scalar::Float(f64::NAN)), vec![]),
                Some("number must be finite"),
            ),
            (
                "negative zero",
                proto_pred("a", pb::Operator::Eq, Some(Scalar::Float(-0.0)), vec![]),
                Some("negative zero"),
            ),
            (
                "negative zero in an in list",
                proto_pred(
                    "a",
                    pb::Operator::In,
                    None,
                    vec![Scalar::Float(1.0), Scalar::Float(-0.0)],
                ),
                Some("negative zero"),
            ),
            (
                "zero",
                proto_pred("a", pb::Operator::Eq, Some(Scalar::Float(0.0)), vec![]),
                None,
            ),
        ];
        for (name, p, want) in cases {
            let got = Filter::try_from(&p);
            match want {
                None => {
                    let f = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                    f.validate()
                        .unwrap_or_else(|e| panic!("{name}: validate: {e}"));
                }
                Some(want) => {
                    let err = got.expect_err(name).to_string();
                    assert!(err.contains(want), "{name}: {err}");
                }
            }
        }

        // filters built in code are held to the same limits
        let p = || pred("a", Operator::IsNull, None);
        let mut deep = p();
        for _ in 0..MAX_FILTER_DEPTH {
            deep = Filter::All(vec![deep]);
        }
        let err = deep.validate().unwrap_err().to_string();
        assert!(err.contains("max_filter_depth"), "{err}");
        let wide = Filter::Any((0..=MAX_FILTER_PREDICATES).map(|_| p()).collect());
        let err = wide.validate().unwrap_err().to_string();
        assert!(err.contains("max_filter_predicates"), "{err}");
        assert!(
            Filter::Any((0..MAX_FILTER_PREDICATES).map(|_| p()).collect())
                .validate()
                .is_ok()
        );
    }

    /// What the broker forwards — the agreement's row filter, the
    /// consumer's filter and a lookup key, each at its own limit, under one
    /// `all` — is within the forwarded bounds, and only those.
    #[test]
    fn forwarded_filters_hold_a_row_filter_a_consumer_filter_and_a_key() {
        let p = || pred("a", Operator::IsNull, None);
        let deep = || {
            let mut f = p();
            for _ in 1..MAX_FILTER_DEPTH {
                f = Filter::All(vec![f]);
            }
            f
        };
        let wide = || Filter::All((0..MAX_FILTER_PREDICATES).map(|_| p()).collect());
        let key = pred("nik", Operator::Eq, Some(Scalar::String("1".into())));
        for (name, row_filter, consumer) in
            [("deepest", deep(), deep()), ("widest", wide(), wide())]
        {
            row_filter.validate().expect(name);
            consumer.validate().expect(name);
            let forwarded = Filter::and([row_filter, consumer, key.clone()])
                .expect("three filters")
                .to_proto();
            let err = Filter::try_from(&forwarded).expect_err(name).to_string();
            assert!(err.contains("limit max_filter_"), "{name}: {err}");
            // one more level or predicate is over the forwarded limits
            let more = Filter::All(vec![
                Filter::from_forwarded_proto(&forwarded).expect("forwarded"),
                p(),
            ]);
            let err = Filter::from_forwarded_proto(&more.to_proto())
                .expect_err(name)
                .to_string();
            let want = if name == "deepest" {
                "nesting deeper than the limit max_forwarded_filter_depth = 17"
            } else {
                "more predicates than the limit max_forwarded_filter_predicates = 513"
            };
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn three_valued_logic() {
        let rec = json!({"a": 1, "b": null}).as_object().unwrap().clone();
        let a_eq_1 = pred("a", Operator::Eq, Some(Scalar::Int(1)));
        let b_eq_1 = pred("b", Operator::Eq, Some(Scalar::Int(1)));
        assert_eq!(a_eq_1.eval(&rec), Some(true));
        assert_eq!(b_eq_1.eval(&rec), None);
        assert_eq!(Filter::Not(Box::new(b_eq_1.clone())).eval(&rec), None);
        assert!(Filter::Any(vec![a_eq_1.clone(), b_eq_1.clone()]).matches(&rec));
        assert!(!Filter::All(vec![a_eq_1, b_eq_1]).matches(&rec));
        assert!(pred("b", Operator::IsNull, None).matches(&rec));
        assert!(pred("missing", Operator::IsNull, None).matches(&rec));
    }
}
