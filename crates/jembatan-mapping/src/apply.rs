//! The execution engine: evaluates a checked mapping's rules against one
//! source record. Errors describe the kind and size of an offending value,
//! never its content (records hold personal data), except for short code
//! values in `value_map` failures.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use chrono::NaiveDate;
use chrono::format::{Item, Parsed, StrftimeItems};
use hmac::{Hmac, Mac};
use serde_json::{Map, Number, Value};
use sha2::Sha256;

use jembatan_core::ids::truncate;
use jembatan_core::{Operator, Scalar};

use crate::doc::{CastTo, Concat, Cond, DateItems, DateSpec, Expr, Op, Pipeline, Rule};
use crate::path::FieldPath;

/// Named secret keys for `hash` ops, supplied at run time.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Vec<u8>>);

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, key: impl Into<Vec<u8>>) -> &mut Self {
        self.0.insert(name.into(), key.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(Vec::as_slice)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Lists the names only; keys never reach logs.
impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A record that could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule} ({target}): {reason}")]
pub struct ApplyError {
    /// 0-based index of the rule.
    pub rule: usize,
    /// The rule's target path (`fail` for a check rule).
    pub target: String,
    pub reason: RuleFailure,
}

/// Why a rule could not produce its value from a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleFailure {
    /// A check rule or a `fail` expression fired: the mapping's own words.
    #[error("{0}")]
    Fail(String),
    #[error("empty target path")]
    EmptyTarget,
    #[error("target {0:?} is already a non-object value")]
    TargetNotObject(String),
    #[error("target {0:?} is already written")]
    TargetWritten(String),
    #[error("concat: {path} is {kind}, not a scalar")]
    ConcatNotScalar { path: String, kind: &'static str },
    /// An op met a value of a kind it does not take (`want`: "a string",
    /// "a scalar", "an array").
    #[error("{op}: the value is {kind}, not {want}")]
    WrongKind {
        op: &'static str,
        kind: &'static str,
        want: &'static str,
    },
    /// At most 32 characters of the value.
    #[error("value_map: {0:?} is not in the map")]
    NotInMap(String),
    #[error("secret {0:?} was not supplied")]
    MissingSecret(String),
    #[error("secret {0:?} is not a usable key")]
    UnusableSecret(String),
    #[error("element {index}: {source}")]
    Element {
        index: usize,
        source: Box<RuleFailure>,
    },
    /// `value` describes the value without showing it.
    #[error("cannot cast {value} to {to}")]
    Cast { value: String, to: &'static str },
    #[error("cannot parse {value} as a {op} with format {format:?}")]
    Parse {
        value: String,
        op: &'static str,
        format: String,
    },
    #[error("format {format:?} asks for fields a {op} value does not have")]
    Format { format: String, op: &'static str },
    /// The output is not valid under the target schema.
    #[error("the value breaks {schema} (schema location {location})")]
    BreaksSchema { schema: String, location: String },
}

impl ApplyError {
    /// The error without anything of the record's values: for readers
    /// who may not see them (the consumer of an exchange, the audit log).
    /// Only [`RuleFailure::NotInMap`] quotes a value; the rest describe
    /// values without showing them.
    pub fn without_values(&self) -> String {
        format!(
            "rule {} ({}): {}",
            self.rule,
            self.target,
            self.reason.without_values()
        )
    }
}

impl RuleFailure {
    /// See [`ApplyError::without_values`].
    pub fn without_values(&self) -> String {
        match self {
            RuleFailure::NotInMap(_) => "value_map: the value is not in the map".to_owned(),
            RuleFailure::Element { index, source } => {
                format!("element {index}: {}", source.without_values())
            }
            other => other.to_string(),
        }
    }
}

/// Evaluates `rules` against `record`.
pub(crate) fn apply_rules(
    rules: &[Rule],
    record: &Map<String, Value>,
    secrets: &Secrets,
) -> Result<Value, ApplyError> {
    let mut out = Map::new();
    for (i, rule) in rules.iter().enumerate() {
        let err = |reason: RuleFailure| ApplyError {
            rule: i,
            target: rule.label(),
            reason,
        };
        match rule {
            Rule::Fail { cond, message } => {
                if eval_cond(cond, Ctx::Record(record)) == Some(true) {
                    return Err(err(RuleFailure::Fail(message.clone())));
                }
            }
            Rule::Output { target, value } => {
                let v = eval_pipeline(value, record, secrets).map_err(err)?;
                insert(&mut out, target, v).map_err(err)?;
            }
        }
    }
    Ok(Value::Object(out))
}

/// Writes `v` at `path`, creating intermediate objects; a missing value
/// creates the objects but no field.
fn insert(
    out: &mut Map<String, Value>,
    path: &FieldPath,
    v: Option<Value>,
) -> Result<(), RuleFailure> {
    let Some((last, parents)) = path.segments().split_last() else {
        return Err(RuleFailure::EmptyTarget);
    };
    let mut obj = out;
    for key in parents {
        let slot = obj
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        obj = match slot {
            Value::Object(m) => m,
            _ => return Err(RuleFailure::TargetNotObject(key.clone())),
        };
    }
    if let Some(v) = v {
        if obj.contains_key(last) {
            return Err(RuleFailure::TargetWritten(last.clone()));
        }
        obj.insert(last.clone(), v);
    }
    Ok(())
}

/// Where condition paths are looked up.
#[derive(Clone, Copy)]
pub(crate) enum Ctx<'a> {
    Record(&'a Map<String, Value>),
    Value(&'a Value),
}

impl<'a> Ctx<'a> {
    fn get(self, path: &FieldPath) -> Option<&'a Value> {
        match self {
            Ctx::Record(r) => path.lookup(r),
            Ctx::Value(v) => path.lookup_value(v),
        }
    }
}

/// Three-valued evaluation with the semantics of `jembatan_core::Filter`.
pub(crate) fn eval_cond(cond: &Cond, ctx: Ctx<'_>) -> Option<bool> {
    match cond {
        Cond::Not { not } => eval_cond(not, ctx).map(|b| !b),
        Cond::All { all } => {
            let mut unknown = false;
            for c in all {
                match eval_cond(c, ctx) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            if unknown { None } else { Some(true) }
        }
        Cond::Any { any } => {
            let mut unknown = false;
            for c in any {
                match eval_cond(c, ctx) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            if unknown { None } else { Some(false) }
        }
        Cond::Pred {
            field,
            op,
            value,
            values,
        } => {
            let v = ctx.get(field).unwrap_or(&Value::Null);
            eval_pred(v, *op, value.as_ref(), values)
        }
    }
}

fn eval_pred(v: &Value, op: Operator, value: Option<&Scalar>, values: &[Scalar]) -> Option<bool> {
    match op {
        Operator::IsNull => return Some(v.is_null()),
        Operator::IsNotNull => return Some(!v.is_null()),
        _ => {}
    }
    if v.is_null() {
        return None;
    }
    match op {
        Operator::In => {
            let mut unknown = false;
            for s in values {
                match compare(v, s) {
                    Some(Ordering::Equal) => return Some(true),
                    None => unknown = true,
                    _ => {}
                }
            }
            if unknown { None } else { Some(false) }
        }
        Operator::Prefix => match (v, value?) {
            (Value::String(f), Scalar::String(p)) => Some(f.starts_with(p.as_str())),
            _ => None,
        },
        op => {
            let ord = compare(v, value?)?;
            Some(match op {
                Operator::Eq => ord == Ordering::Equal,
                Operator::Ne => ord != Ordering::Equal,
                Operator::Lt => ord == Ordering::Less,
                Operator::Le => ord != Ordering::Greater,
                Operator::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
    }
}

/// Compares a JSON value with a scalar exactly as `jembatan_core::Filter` does.
pub(crate) use jembatan_core::filter::compare;

/// A value in flight: `None` is a missing value.
pub(crate) type Flow = Option<Value>;

fn eval_pipeline(
    p: &Pipeline,
    record: &Map<String, Value>,
    secrets: &Secrets,
) -> Result<Flow, RuleFailure> {
    let mut v = match &p.expr {
        Expr::From(path) => path.lookup(record).cloned(),
        Expr::Const(c) => Some(c.clone()),
        Expr::Concat(c) => concat(c, record)?,
        Expr::When {
            cond,
            then,
            otherwise,
        } => {
            if eval_cond(cond, Ctx::Record(record)) == Some(true) {
                eval_pipeline(then, record, secrets)?
            } else if let Some(e) = otherwise {
                eval_pipeline(e, record, secrets)?
            } else {
                None
            }
        }
        Expr::Fail(message) => return Err(RuleFailure::Fail(message.clone())),
    };
    for op in &p.ops {
        v = apply_op(op, v, secrets)?;
    }
    if matches!(v, None | Some(Value::Null)) && p.default.is_some() {
        v = p.default.clone();
    }
    Ok(v)
}

pub(crate) fn concat(c: &Concat, record: &Map<String, Value>) -> Result<Flow, RuleFailure> {
    let mut parts = Vec::with_capacity(c.from.len());
    for path in &c.from {
        match path.lookup(record) {
            None | Some(Value::Null) => {}
            Some(v) => parts.push(scalar_text(v).ok_or_else(|| RuleFailure::ConcatNotScalar {
                path: path.to_string(),
                kind: kind(v),
            })?),
        }
    }
    if parts.is_empty() {
        return Ok(Some(Value::Null));
    }
    Ok(Some(Value::String(parts.join(&c.separator))))
}

/// The text of a scalar: strings as they are, numbers and booleans in
/// their JSON form.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("a string of {} characters", s.chars().count()),
        other => kind(other).to_string(),
    }
}

fn apply_op(op: &Op, v: Flow, secrets: &Secrets) -> Result<Flow, RuleFailure> {
    if let Op::Default(d) = op {
        return Ok(match v {
            None | Some(Value::Null) => Some(d.clone()),
            some => some,
        });
    }
    let v = match v {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(Value::Null)),
        Some(v) => v,
    };
    apply_op_value(op, v, secrets).map(Some)
}

pub(crate) fn apply_op_value(op: &Op, v: Value, secrets: &Secrets) -> Result<Value, RuleFailure> {
    match op {
        Op::Default(_) => Ok(v),
        Op::Cast(to) => cast(v, *to),
        Op::Date(spec) => date(&v, spec, false),
        Op::Datetime(spec) => date(&v, spec, true),
        Op::ValueMap(m) => {
            let key = scalar_text(&v).ok_or_else(|| wrong_kind("value_map", &v, "a scalar"))?;
            match m.map.get(&key) {
                Some(out) => Ok(out.clone()),
                None => match &m.default {
                    Some(d) => Ok(d.clone()),
                    None => Err(RuleFailure::NotInMap(truncate(&key, 32).to_owned())),
                },
            }
        }
        Op::Split(s) => {
            let text = want_str(&v, "split")?;
            let parts: Vec<&str> = text.split(s.separator.as_str()).collect();
            match s.part {
                None => Ok(Value::Array(
                    parts.into_iter().map(|p| Value::String(p.into())).collect(),
                )),
                Some(i) => {
                    let len = parts.len() as i64;
                    let idx = if i < 0 { len.saturating_add(i) } else { i };
                    Ok(usize::try_from(idx)
                        .ok()
                        .and_then(|i| parts.get(i))
                        .map(|p| Value::String((*p).into()))
                        .unwrap_or(Value::Null))
                }
            }
        }
        Op::Mask(m) => {
            let text = want_str(&v, "mask")?;
            let n = text.chars().count();
            let fill = m.char.chars().next().unwrap_or('*');
            let out: String = text
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i < m.keep_first || i.saturating_add(m.keep_last) >= n {
                        c
                    } else {
                        fill
                    }
                })
                .collect();
            Ok(Value::String(out))
        }
        Op::Hash(h) => {
            let key = secrets
                .get(&h.secret)
                .ok_or_else(|| RuleFailure::MissingSecret(h.secret.clone()))?;
            let text = scalar_text(&v).ok_or_else(|| wrong_kind("hash", &v, "a scalar"))?;
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                .map_err(|_| RuleFailure::UnusableSecret(h.secret.clone()))?;
            mac.update(text.as_bytes());
            Ok(Value::String(hex::encode(mac.finalize().into_bytes())))
        }
        Op::Trim => Ok(Value::String(want_str(&v, "trim")?.trim().to_owned())),
        Op::Upper => Ok(Value::String(want_str(&v, "upper")?.to_uppercase())),
        Op::Lower => Ok(Value::String(want_str(&v, "lower")?.to_lowercase())),
        Op::Each(ops) => {
            let Value::Array(items) = v else {
                return Err(wrong_kind("each", &v, "an array"));
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let mut e = Some(item);
                for op in ops {
                    e = apply_op(op, e, secrets).map_err(|r| RuleFailure::Element {
                        index: i,
                        source: Box::new(r),
                    })?;
                }
                out.push(e.unwrap_or(Value::Null));
            }
            Ok(Value::Array(out))
        }
        Op::Filter(cond) => {
            let Value::Array(items) = v else {
                return Err(wrong_kind("filter", &v, "an array"));
            };
            Ok(Value::Array(
                items
                    .into_iter()
                    .filter(|item| eval_cond(cond, Ctx::Value(item)) == Some(true))
                    .collect(),
            ))
        }
    }
}

fn wrong_kind(op: &'static str, v: &Value, want: &'static str) -> RuleFailure {
    RuleFailure::WrongKind {
        op,
        kind: kind(v),
        want,
    }
}

fn want_str<'v>(v: &'v Value, op: &'static str) -> Result<&'v str, RuleFailure> {
    v.as_str().ok_or_else(|| wrong_kind(op, v, "a string"))
}

fn cast(v: Value, to: CastTo) -> Result<Value, RuleFailure> {
    let fail = |v: &Value| RuleFailure::Cast {
        value: describe(v),
        to: to.as_str(),
    };
    match (to, &v) {
        (CastTo::String, Value::String(_)) => Ok(v),
        (CastTo::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (CastTo::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (CastTo::Integer, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| fail(&v)),
        (CastTo::Integer, Value::Number(n)) => {
            if n.is_i64() || n.is_u64() {
                return Ok(v);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) => {
                    Ok(Value::from(f as i64))
                }
                _ => Err(fail(&v)),
            }
        }
        (CastTo::Integer, Value::Bool(b)) => Ok(Value::from(i64::from(*b))),
        (CastTo::Number, Value::String(s)) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::from(i));
            }
            t.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| fail(&v))
        }
        (CastTo::Number, Value::Number(_)) => Ok(v),
        (CastTo::Number, Value::Bool(b)) => Ok(Value::from(i64::from(*b))),
        (CastTo::Boolean, Value::Bool(_)) => Ok(v),
        (CastTo::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(fail(&v)),
        },
        (CastTo::Boolean, Value::Number(n)) => {
            let f = n.as_f64();
            if f == Some(0.0) {
                Ok(Value::Bool(false))
            } else if f == Some(1.0) {
                Ok(Value::Bool(true))
            } else {
                Err(fail(&v))
            }
        }
        _ => Err(fail(&v)),
    }
}

pub(crate) fn date(v: &Value, spec: &DateSpec, with_time: bool) -> Result<Value, RuleFailure> {
    let op = if with_time { "datetime" } else { "date" };
    let text = want_str(v, op)?;
    let converted = match DateItems::of(spec) {
        // an ISO date to the same: chrono writes a date written in full
        // back unchanged
        Some(items) if !with_time && items.iso_date && is_iso_date(text) => {
            return Ok(Value::String(text.to_owned()));
        }
        Some(items) => convert(text, items.parse.iter(), items.format.iter(), with_time),
        // a format chrono cannot read fails as chrono fails on it
        None => convert(
            text,
            StrftimeItems::new(&spec.parse),
            StrftimeItems::new(&spec.format),
            with_time,
        ),
    };
    match converted {
        Ok(out) => Ok(Value::String(out)),
        Err(DateFailure::Parse) => Err(RuleFailure::Parse {
            value: describe(v),
            op,
            format: spec.parse.clone(),
        }),
        Err(DateFailure::Format) => Err(RuleFailure::Format {
            format: spec.format.clone(),
            op,
        }),
    }
}

/// Why a date op failed: reading the text, or writing the result.
enum DateFailure {
    Parse,
    Format,
}

/// Parses `text` with the `parse` items and writes it with the `format`
/// items, as chrono's `parse_from_str` and `format` do with the strings:
/// with time, an offset when the text gives one, otherwise none.
fn convert<'a, P, F, B, C>(
    text: &str,
    parse: P,
    format: F,
    with_time: bool,
) -> Result<String, DateFailure>
where
    P: Iterator<Item = B>,
    B: Borrow<Item<'a>>,
    F: Iterator<Item = C> + Clone,
    C: Borrow<Item<'a>>,
{
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text, parse).map_err(|_| DateFailure::Parse)?;
    let mut out = String::new();
    let written = if with_time {
        match parsed.to_datetime() {
            Ok(dt) => write!(out, "{}", dt.format_with_items(format)),
            Err(_) => {
                let dt =
                    (parsed.to_naive_datetime_with_offset(0)).map_err(|_| DateFailure::Parse)?;
                write!(out, "{}", dt.format_with_items(format))
            }
        }
    } else {
        let d = parsed.to_naive_date().map_err(|_| DateFailure::Parse)?;
        write!(out, "{}", d.format_with_items(format))
    };
    written.map_err(|_| DateFailure::Format)?;
    Ok(out)
}

/// Whether `text` is a valid date written `YYYY-MM-DD` in full (every
/// digit, no sign): the one form that `%Y-%m-%d` parses and writes back
/// unchanged.
fn is_iso_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let number = |digits: &[u8]| {
        (digits.iter()).try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    match (number(&b[..4]), number(&b[5..7]), number(&b[8..])) {
        (Some(y), Some(m), Some(d)) => {
            i32::try_from(y).is_ok_and(|y| NaiveDate::from_ymd_opt(y, m, d).is_some())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A date op whose formats are read from the strings on every use.
    fn uncompiled(parse: &str, format: &str) -> DateSpec {
        DateSpec {
            parse: parse.into(),
            format: format.into(),
            items: DateItems::unreadable(),
        }
    }

    fn compiled(parse: &str, format: &str) -> DateSpec {
        DateSpec {
            parse: parse.into(),
            format: format.into(),
            items: DateItems::default(),
        }
    }

    #[test]
    fn date_items_read_once_give_what_the_strings_give() {
        let formats = [
            ("%Y-%m-%d", "%Y-%m-%d"),
            ("%d-%m-%Y", "%d/%m/%Y"),
            ("%d-%m-%Y", "%H:%M"),
            ("%Y-%m-%d %H:%M:%S %z", "%+"),
            ("%d/%m/%Y %H.%M", "%Y-%m-%dT%H:%M:%S"),
            ("%d/%m/%Y %H.%M", "%+"),
            ("%Y-%m-%dT%H:%M:%S%.f%:z", "%s"),
            ("%Q-%m", "%Y"),
            ("%Y", "%Q"),
            ("%Y-%m-%d", "%e %b %Y %%"),
            ("%F", "%Y-%m-%d"),
            ("%Y-%m-%d", "%F"),
        ];
        let inputs = [
            json!("1985-08-17"),
            json!("17-08-1985"),
            json!("31-02-1985"),
            json!("2024-01-02 03:04:05 +0700"),
            json!("02/01/2024 03.04"),
            json!("2024-01-02T03:04:05.123+07:00"),
            json!("1985"),
            json!("0000-01-01"),
            json!("9999-12-31"),
            json!("2000-02-29"),
            json!("1900-02-29"),
            json!("1985-13-01"),
            json!("1985-8-17"),
            json!("1985-08-17 "),
            json!("+985-08-17"),
            json!("1985/08/17"),
            json!("１985-08-17"),
            json!(""),
            json!(1985),
            json!(null),
        ];
        let mut compiled_any = false;
        for (parse, format) in formats {
            let spec = compiled(parse, format);
            compiled_any |= DateItems::of(&spec).is_some();
            let strings = uncompiled(parse, format);
            assert!(DateItems::of(&strings).is_none());
            for v in &inputs {
                for with_time in [false, true] {
                    let got = date(v, &spec, with_time).map_err(|e| e.to_string());
                    let want = date(v, &strings, with_time).map_err(|e| e.to_string());
                    assert_eq!(
                        got, want,
                        "{parse:?} -> {format:?} on {v} (time: {with_time})"
                    );
                }
            }
        }
        assert!(compiled_any);
        assert!(DateItems::of(&compiled("%Q", "%Y")).is_none());
    }

    proptest::proptest! {
        #[test]
        fn iso_dates_written_back_are_what_chrono_writes(
            text in "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])|[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9+ -]{8,11}",
        ) {
            let v = json!(text);
            for (parse, format) in [("%Y-%m-%d", "%Y-%m-%d"), ("%F", "%F")] {
                let got = date(&v, &compiled(parse, format), false).map_err(|e| e.to_string());
                let want = date(&v, &uncompiled(parse, format), false).map_err(|e| e.to_string());
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
