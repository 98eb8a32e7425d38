//! The mapping document: its serde form (TOML or JSON), parsing and the
//! structural checks that need no schema.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::format::{Item, StrftimeItems};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use jembatan_core::{DatasetId, Operator, Scalar};

use crate::path::FieldPath;

/// Longest mapping document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most rules in one mapping.
pub const MAX_RULES: usize = 1_000;
/// Deepest nesting of conditions, `when` branches and `each` op lists.
pub const MAX_NESTING: usize = 16;

/// The text format of a mapping document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// The format named by a file's extension (`.toml`, `.json`).
    pub fn from_path(path: &Path) -> Result<Format, MappingError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => Ok(Format::Toml),
            Some(e) if e.eq_ignore_ascii_case("json") => Ok(Format::Json),
            _ => Err(MappingError::UnknownFormat(path.display().to_string())),
        }
    }
}

/// A mapping document that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("cannot tell the mapping format of {0:?}; use a .toml or .json file")]
    UnknownFormat(String),
    #[error("mapping document is {0} bytes; the limit is {MAX_DOCUMENT_BYTES}")]
    TooLarge(usize),
    #[error("mapping document: {0}")]
    Syntax(String),
    #[error("mapping: {which}: {source}")]
    SchemaRef {
        /// `source` or `target`.
        which: &'static str,
        source: SchemaRefError,
    },
    #[error("mapping: a mapping needs at least one rule")]
    NoRules,
    #[error("mapping: {0} rules exceed the limit of {MAX_RULES}")]
    TooManyRules(usize),
    #[error("mapping: secret names must be non-empty and distinct: {0:?}")]
    SecretName(String),
    #[error("rule {rule}: {source}")]
    Rule {
        /// 0-based index of the offending rule.
        rule: usize,
        source: RuleError,
    },
}

/// A schema reference that is not `<agency>.<dataset>@<version>`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaRefError {
    #[error("schema reference {0:?} must have the form <agency>.<dataset>@<version>")]
    Form(String),
    #[error(transparent)]
    Dataset(#[from] jembatan_core::InvalidArgument),
    #[error("schema version {0:?} is not a whole number")]
    Version(String),
}

/// What is wrong with one rule of a mapping document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("a rule needs a `target`, or is a check with `when` and `fail`")]
    NoTarget,
    #[error("a check rule (no `target`) has only `when` and `fail`")]
    CheckExtras,
    #[error("nesting deeper than {MAX_NESTING}")]
    TooDeep,
    #[error("give exactly one of `from`, `const`, `concat`, `when` (with `then`) or `fail`")]
    NotOneKind,
    #[error("`then` and `else` belong with `when`")]
    BranchWithoutWhen,
    #[error("concat needs at least one `from` path")]
    EmptyConcat,
    #[error("`when` needs `then`")]
    WhenWithoutThen,
    #[error("`then` / `else` cannot have a `target`")]
    BranchTarget,
    #[error("`fail` takes no `ops` or `default`")]
    FailWithOps,
    #[error("no value given")]
    NoValue,
    #[error("value_map needs at least one entry")]
    EmptyValueMap,
    #[error("split needs a non-empty separator")]
    EmptySeparator,
    #[error("mask char must be one character, not {0:?}")]
    MaskChar(String),
    #[error("hash needs a secret name")]
    NoSecretName,
    #[error("date format is empty")]
    EmptyDateFormat,
    #[error("invalid date/time format {0:?}")]
    DateFormat(String),
    #[error("condition nesting deeper than {MAX_NESTING}")]
    CondTooDeep,
    #[error("`all` / `any` needs at least one condition")]
    EmptyAllAny,
    #[error("a condition needs a `field`")]
    NoField,
    #[error("{0} takes no value")]
    TakesNoValue(&'static str),
    #[error("in takes one or more `values`")]
    InWithoutValues,
    #[error("{0} takes one `value`")]
    TakesOneValue(&'static str),
    #[error("prefix needs a string value")]
    PrefixNotString,
}

/// A versioned dataset schema reference, `agency.dataset@version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaRef {
    pub dataset: String,
    pub version: u32,
}

impl FromStr for SchemaRef {
    type Err = SchemaRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((dataset, version)) = s.rsplit_once('@') else {
            return Err(SchemaRefError::Form(s.to_owned()));
        };
        let dataset: DatasetId = dataset.parse()?;
        let version: u32 = version
            .parse()
            .map_err(|_| SchemaRefError::Version(version.to_owned()))?;
        Ok(Self {
            dataset: dataset.to_string(),
            version,
        })
    }
}

impl fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.version)
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for FieldPath {
    fn default() -> Self {
        FieldPath::empty()
    }
}

/// Deserializes a present value (even `null`) as `Some`.
fn some_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    pub(crate) version: u32,
    pub(crate) source: String,
    pub(crate) target: String,
    /// Names of the secrets the `hash` ops may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) secrets: Vec<String>,
    #[serde(alias = "rules")]
    pub(crate) rule: Vec<RawExpr>,
}

/// A rule, or a value expression inside `then` / `else`. Exactly one of
/// `from`, `const`, `concat`, `when` or `fail` gives the value; `ops` and
/// `default` refine it. A rule without `target` must be `when` + `fail`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<FieldPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<FieldPath>,
    #[serde(
        rename = "const",
        default,
        deserialize_with = "some_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) constant: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) concat: Option<Concat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) when: Option<Cond>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) then: Option<Box<RawExpr>>,
    #[serde(rename = "else", default, skip_serializing_if = "Option::is_none")]
    pub(crate) otherwise: Option<Box<RawExpr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ops: Vec<Op>,
    #[serde(
        default,
        deserialize_with = "some_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) default: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Concat {
    pub(crate) from: Vec<FieldPath>,
    #[serde(default)]
    pub(crate) separator: String,
}

/// Target types of `cast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CastTo {
    String,
    Integer,
    Number,
    Boolean,
}

impl CastTo {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CastTo::String => "string",
            CastTo::Integer => "integer",
            CastTo::Number => "number",
            CastTo::Boolean => "boolean",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DateSpec {
    pub(crate) parse: String,
    pub(crate) format: String,
    /// `parse` and `format` read once into chrono's items, on first use.
    #[serde(skip)]
    pub(crate) items: DateItems,
}

/// A date op's two format strings as chrono's items: `None` when either
/// holds a specifier chrono does not know (the op then reads the strings
/// on every use, and fails as chrono fails on them).
#[derive(Clone, Default)]
pub(crate) struct DateItems(OnceLock<Option<FormatPair>>);

/// The items of a date op's `parse` and `format`.
#[derive(Clone)]
pub(crate) struct FormatPair {
    pub(crate) parse: Vec<Item<'static>>,
    pub(crate) format: Vec<Item<'static>>,
    /// Both formats are the ISO date (`%Y-%m-%d` or `%F`): a date already
    /// written that way is written back unchanged.
    pub(crate) iso_date: bool,
}

impl DateItems {
    /// The items of `spec`'s strings, read on the first call.
    pub(crate) fn of(spec: &DateSpec) -> Option<&FormatPair> {
        spec.items
            .0
            .get_or_init(|| {
                let parse = StrftimeItems::new(&spec.parse).parse_to_owned().ok()?;
                let format = StrftimeItems::new(&spec.format).parse_to_owned().ok()?;
                let iso = |f: &str| matches!(f, "%Y-%m-%d" | "%F");
                let iso_date = iso(&spec.parse) && iso(&spec.format);
                Some(FormatPair {
                    parse,
                    format,
                    iso_date,
                })
            })
            .as_ref()
    }

    /// Items that chrono could not read: the op reads its strings.
    #[cfg(test)]
    pub(crate) fn unreadable() -> DateItems {
        DateItems(OnceLock::from(None))
    }
}

impl PartialEq for DateItems {
    /// Derived from the strings, so never a difference of its own.
    fn eq(&self, _: &DateItems) -> bool {
        true
    }
}

impl fmt::Debug for DateItems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DateItems")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValueMap {
    pub(crate) map: BTreeMap<String, Value>,
    /// Used for values not in `map`; without it they fail the record.
    #[serde(
        default,
        deserialize_with = "some_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) default: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Split {
    pub(crate) separator: String,
    /// Pick one part (0-based; negative counts from the end) instead of
    /// producing the array of parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) part: Option<i64>,
}

fn star() -> String {
    "*".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mask {
    #[serde(default)]
    pub(crate) keep_first: usize,
    #[serde(default)]
    pub(crate) keep_last: usize,
    #[serde(default = "star")]
    pub(crate) char: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hash {
    pub(crate) secret: String,
}

/// One step of a value pipeline. `null` and missing values pass through
/// every op unchanged except `default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Op {
    Cast(CastTo),
    Date(DateSpec),
    Datetime(DateSpec),
    ValueMap(ValueMap),
    Split(Split),
    Mask(Mask),
    Hash(Hash),
    Default(Value),
    Trim,
    Upper,
    Lower,
    /// Apply ops to every element of an array.
    Each(Vec<Op>),
    /// Keep the array elements for which the condition is true.
    Filter(Cond),
}

/// A condition on source fields (or, inside `filter`, on an array element;
/// there `field` is relative to the element and may be left out to mean
/// the element itself). Three-valued like [`jembatan_core::Filter`]: a
/// comparison with null or missing is unknown, and unknown counts as false.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum Cond {
    All {
        all: Vec<Cond>,
    },
    Any {
        any: Vec<Cond>,
    },
    Not {
        not: Box<Cond>,
    },
    Pred {
        #[serde(skip_serializing_if = "FieldPath::is_empty")]
        field: FieldPath,
        op: Operator,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Scalar>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        values: Vec<Scalar>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CondRepr {
    All {
        all: Vec<Cond>,
    },
    Any {
        any: Vec<Cond>,
    },
    Not {
        not: Box<Cond>,
    },
    Pred {
        #[serde(default)]
        field: FieldPath,
        op: Operator,
        #[serde(default)]
        value: Option<Scalar>,
        #[serde(default)]
        values: Vec<Scalar>,
    },
}

impl<'de> Deserialize<'de> for Cond {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = CondRepr::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a condition is {field, op, value | values}, {all = [...]}, {any = [...]} or {not = {...}}",
            )
        })?;
        Ok(match repr {
            CondRepr::All { all } => Cond::All { all },
            CondRepr::Any { any } => Cond::Any { any },
            CondRepr::Not { not } => Cond::Not { not },
            CondRepr::Pred {
                field,
                op,
                value,
                values,
            } => Cond::Pred {
                field,
                op,
                value,
                values,
            },
        })
    }
}

/// A value expression after structural checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    From(FieldPath),
    Const(Value),
    Concat(Concat),
    When {
        cond: Cond,
        then: Box<Pipeline>,
        otherwise: Option<Box<Pipeline>>,
    },
    Fail(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pipeline {
    pub(crate) expr: Expr,
    pub(crate) ops: Vec<Op>,
    pub(crate) default: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    /// Writes one target path.
    Output { target: FieldPath, value: Pipeline },
    /// Fails the record with `message` when `cond` is true.
    Fail { cond: Cond, message: String },
}

impl Rule {
    /// The rule's target path, or `(fail)` for a check rule.
    pub(crate) fn label(&self) -> String {
        match self {
            Rule::Output { target, .. } => target.to_string(),
            Rule::Fail { .. } => "fail".into(),
        }
    }
}

/// A parsed, structurally valid mapping document.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub(crate) doc: Document,
    pub(crate) source: SchemaRef,
    pub(crate) target: SchemaRef,
    pub(crate) rules: Vec<Rule>,
}

impl Mapping {
    /// Parses and structurally checks a mapping document.
    pub fn parse(text: &str, format: Format) -> Result<Mapping, MappingError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(MappingError::TooLarge(text.len()));
        }
        let doc: Document = match format {
            Format::Toml => toml::from_str(text).map_err(|e| MappingError::Syntax(e.to_string())),
            Format::Json => {
                serde_json::from_str(text).map_err(|e| MappingError::Syntax(e.to_string()))
            }
        }?;
        Self::from_document(doc)
    }

    fn from_document(doc: Document) -> Result<Mapping, MappingError> {
        let source: SchemaRef = doc
            .source
            .parse()
            .map_err(|source| MappingError::SchemaRef {
                which: "source",
                source,
            })?;
        let target: SchemaRef = doc
            .target
            .parse()
            .map_err(|source| MappingError::SchemaRef {
                which: "target",
                source,
            })?;
        if doc.rule.is_empty() {
            return Err(MappingError::NoRules);
        }
        if doc.rule.len() > MAX_RULES {
            return Err(MappingError::TooManyRules(doc.rule.len()));
        }
        for (i, name) in doc.secrets.iter().enumerate() {
            if name.is_empty() || doc.secrets[..i].contains(name) {
                return Err(MappingError::SecretName(name.clone()));
            }
        }
        let rules = doc
            .rule
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                compile_rule(raw).map_err(|source| MappingError::Rule { rule: i, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mapping {
            doc,
            source,
            target,
            rules,
        })
    }

    /// The source schema, `agency.dataset@version`.
    pub fn source(&self) -> &str {
        &self.doc.source
    }

    /// The target schema, `agency.dataset@version`.
    pub fn target(&self) -> &str {
        &self.doc.target
    }

    pub fn source_ref(&self) -> &SchemaRef {
        &self.source
    }

    pub fn target_ref(&self) -> &SchemaRef {
        &self.target
    }

    /// The mapping's own version.
    pub fn version(&self) -> u32 {
        self.doc.version
    }

    /// The secret names the document declares.
    pub fn secret_names(&self) -> &[String] {
        &self.doc.secrets
    }

    /// A canonical JSON rendering (keys sorted, no whitespace, paths in
    /// dotted form): equal for documents that mean the same, whatever
    /// their format, so it can be hashed for storage and ids.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(&self.doc).unwrap_or(Value::Null);
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(list) => {
            out.push('[');
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn compile_rule(raw: &RawExpr) -> Result<Rule, RuleError> {
    match &raw.target {
        Some(target) => Ok(Rule::Output {
            target: target.clone(),
            value: compile_expr(raw, 1)?,
        }),
        None => {
            let (Some(cond), Some(message)) = (&raw.when, &raw.fail) else {
                return Err(RuleError::NoTarget);
            };
            let extra = raw.from.is_some()
                || raw.constant.is_some()
                || raw.concat.is_some()
                || raw.then.is_some()
                || raw.otherwise.is_some()
                || !raw.ops.is_empty()
                || raw.default.is_some();
            if extra {
                return Err(RuleError::CheckExtras);
            }
            check_cond(cond, 1, false)?;
            Ok(Rule::Fail {
                cond: cond.clone(),
                message: message.clone(),
            })
        }
    }
}

fn compile_expr(raw: &RawExpr, depth: usize) -> Result<Pipeline, RuleError> {
    if depth > MAX_NESTING {
        return Err(RuleError::TooDeep);
    }
    let kinds = [
        raw.from.is_some(),
        raw.constant.is_some(),
        raw.concat.is_some(),
        raw.when.is_some(),
        raw.fail.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(RuleError::NotOneKind);
    }
    if raw.when.is_none() && (raw.then.is_some() || raw.otherwise.is_some()) {
        return Err(RuleError::BranchWithoutWhen);
    }
    let expr = if let Some(from) = &raw.from {
        Expr::From(from.clone())
    } else if let Some(c) = &raw.constant {
        Expr::Const(c.clone())
    } else if let Some(c) = &raw.concat {
        if c.from.is_empty() {
            return Err(RuleError::EmptyConcat);
        }
        Expr::Concat(c.clone())
    } else if let Some(cond) = &raw.when {
        check_cond(cond, depth, false)?;
        let Some(then) = &raw.then else {
            return Err(RuleError::WhenWithoutThen);
        };
        let branch = |e: &RawExpr| {
            if e.target.is_some() {
                return Err(RuleError::BranchTarget);
            }
            compile_expr(e, depth + 1).map(Box::new)
        };
        Expr::When {
            cond: cond.clone(),
            then: branch(then)?,
            otherwise: raw.otherwise.as_deref().map(branch).transpose()?,
        }
    } else if let Some(message) = &raw.fail {
        if !raw.ops.is_empty() || raw.default.is_some() {
            return Err(RuleError::FailWithOps);
        }
        Expr::Fail(message.clone())
    } else {
        return Err(RuleError::NoValue);
    };
    check_ops(&raw.ops, depth)?;
    Ok(Pipeline {
        expr,
        ops: raw.ops.clone(),
        default: raw.default.clone(),
    })
}

fn check_ops(ops: &[Op], depth: usize) -> Result<(), RuleError> {
    if depth > MAX_NESTING {
        return Err(RuleError::TooDeep);
    }
    for op in ops {
        match op {
            Op::Date(spec) | Op::Datetime(spec) => {
                check_strftime(&spec.parse)?;
                check_strftime(&spec.format)?;
            }
            Op::ValueMap(m) if m.map.is_empty() => {
                return Err(RuleError::EmptyValueMap);
            }
            Op::Split(s) if s.separator.is_empty() => {
                return Err(RuleError::EmptySeparator);
            }
            Op::Mask(m) if m.char.chars().count() != 1 => {
                return Err(RuleError::MaskChar(m.char.clone()));
            }
            Op::Hash(h) if h.secret.is_empty() => {
                return Err(RuleError::NoSecretName);
            }
            Op::Each(inner) => check_ops(inner, depth + 1)?,
            Op::Filter(cond) => check_cond(cond, depth + 1, true)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_strftime(fmt: &str) -> Result<(), RuleError> {
    if fmt.is_empty() {
        return Err(RuleError::EmptyDateFormat);
    }
    if StrftimeItems::new(fmt).any(|item| matches!(item, Item::Error)) {
        return Err(RuleError::DateFormat(fmt.to_owned()));
    }
    Ok(())
}

/// Structural checks of a condition: operands fit the operator.
fn check_cond(cond: &Cond, depth: usize, element: bool) -> Result<(), RuleError> {
    if depth > MAX_NESTING {
        return Err(RuleError::CondTooDeep);
    }
    match cond {
        Cond::All { all: list } | Cond::Any { any: list } => {
            if list.is_empty() {
                return Err(RuleError::EmptyAllAny);
            }
            list.iter()
                .try_for_each(|c| check_cond(c, depth + 1, element))
        }
        Cond::Not { not } => check_cond(not, depth + 1, element),
        Cond::Pred {
            field,
            op,
            value,
            values,
        } => {
            if field.is_empty() && !element {
                return Err(RuleError::NoField);
            }
            let name = op.as_str();
            match op {
                Operator::IsNull | Operator::IsNotNull => {
                    if value.is_some() || !values.is_empty() {
                        return Err(RuleError::TakesNoValue(name));
                    }
                }
                Operator::In => {
                    if value.is_some() || values.is_empty() {
                        return Err(RuleError::InWithoutValues);
                    }
                }
                _ => {
                    if !values.is_empty() || value.is_none() {
                        return Err(RuleError::TakesOneValue(name));
                    }
                    if *op == Operator::Prefix && !matches!(value, Some(Scalar::String(_))) {
                        return Err(RuleError::PrefixNotString);
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_refs() {
        let r: SchemaRef = "disdukcapil.penduduk@1".parse().unwrap();
        assert_eq!(r.dataset, "disdukcapil.penduduk");
        assert_eq!(r.version, 1);
        assert_eq!(r.to_string(), "disdukcapil.penduduk@1");
        for bad in [
            "disdukcapil.penduduk",
            "disdukcapil@1",
            "disdukcapil.penduduk@x",
            "disdukcapil.penduduk@-1",
            "Dis.penduduk@1",
        ] {
            assert!(bad.parse::<SchemaRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn format_from_path() {
        assert_eq!(Format::from_path(Path::new("a/b.toml")), Ok(Format::Toml));
        assert_eq!(Format::from_path(Path::new("b.JSON")), Ok(Format::Json));
        assert!(Format::from_path(Path::new("b.yaml")).is_err());
    }

    const HEAD: &str = "version = 1\nsource = \"a.b@1\"\ntarget = \"c.d@2\"\n";

    #[test]
    fn structural_errors_name_the_rule() {
        let cases: &[(&str, &str, Option<usize>, &str)] = &[
            ("no rules", "rule = []", None, "at least one rule"),
            (
                "two values",
                "[[rule]]\ntarget = \"x\"\nfrom = \"a\"\nconst = 1",
                Some(0),
                "exactly one of",
            ),
            (
                "then without when",
                "[[rule]]\ntarget = \"x\"\nfrom = \"a\"\nthen = { const = 1 }",
                Some(0),
                "belong with `when`",
            ),
            (
                "when without then",
                "[[rule]]\ntarget = \"x\"\nfrom = \"a\"\n[[rule]]\ntarget = \"y\"\nwhen = { field = \"a\", op = \"is_null\" }",
                Some(1),
                "needs `then`",
            ),
            (
                "bad date format",
                "[[rule]]\ntarget = \"x\"\nfrom = \"a\"\nops = [{ date = { parse = \"%Q\", format = \"%Y\" } }]",
                Some(0),
                "invalid date/time format",
            ),
            (
                "mask char",
                "[[rule]]\ntarget = \"x\"\nfrom = \"a\"\nops = [{ mask = { keep_last = 4, char = \"**\" } }]",
                Some(0),
                "one character",
            ),
            (
                "in without values",
                "[[rule]]\ntarget = \"x\"\nwhen = { field = \"a\", op = \"in\" }\nthen = { const = 1 }",
                Some(0),
                "in takes",
            ),
            (
                "check rule with extras",
                "[[rule]]\nwhen = { field = \"a\", op = \"is_null\" }\nfail = \"no\"\nops = [\"trim\"]",
                Some(0),
                "only `when` and `fail`",
            ),
            (
                "no target",
                "[[rule]]\nfrom = \"a\"",
                Some(0),
                "needs a `target`",
            ),
            (
                "empty split",
                "[[rule]]\ntarget = \"x\"\nfrom = \"a\"\nops = [{ split = { separator = \"\" } }]",
                Some(0),
                "non-empty separator",
            ),
        ];
        for (name, body, rule, want) in cases {
            let err = Mapping::parse(&format!("{HEAD}{body}"), Format::Toml).unwrap_err();
            let at = match &err {
                MappingError::Rule { rule, .. } => Some(*rule),
                MappingError::SchemaRef { .. }
                | MappingError::NoRules
                | MappingError::TooManyRules(_)
                | MappingError::SecretName(_) => None,
                other => panic!("{name}: unexpected {other}"),
            };
            assert_eq!(at, *rule, "{name}: {err}");
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn syntax_errors() {
        for (name, text) in [
            (
                "unknown key",
                format!("{HEAD}[[rule]]\ntarget = \"x\"\nfrum = \"a\""),
            ),
            (
                "bad path",
                format!("{HEAD}[[rule]]\ntarget = \"x..y\"\nfrom = \"a\""),
            ),
            (
                "unknown op",
                format!("{HEAD}[[rule]]\ntarget = \"x\"\nfrom = \"a\"\nops = [\"reverse\"]"),
            ),
            (
                "missing version",
                "source = \"a.b@1\"\ntarget = \"c.d@1\"\nrule = []".into(),
            ),
            (
                "bad condition",
                format!("{HEAD}[[rule]]\nwhen = {{ field = \"a\" }}\nfail = \"x\""),
            ),
        ] {
            let err = Mapping::parse(&text, Format::Toml).unwrap_err();
            assert!(matches!(err, MappingError::Syntax(_)), "{name}: {err}");
        }
        assert!(matches!(
            Mapping::parse("{", Format::Json),
            Err(MappingError::Syntax(_))
        ));
    }

    #[test]
    fn canonical_json_is_format_independent() {
        let toml = format!(
            "{HEAD}[[rule]]\ntarget = \"/address/rt\"\nfrom = \"rt\"\nops = [\"trim\", {{ cast = \"integer\" }}]\n[[rule]]\ntarget = \"y\"\nconst = 1.5\n"
        );
        let json = r#"{"version":1,"source":"a.b@1","target":"c.d@2","rules":[
            {"ops":["trim",{"cast":"integer"}],"from":"rt","target":"address.rt"},
            {"target":"y","const":1.5}]}"#;
        let a = Mapping::parse(&toml, Format::Toml).unwrap();
        let b = Mapping::parse(json, Format::Json).unwrap();
        assert_eq!(a.canonical_json(), b.canonical_json());
        assert!(a.canonical_json().starts_with(r#"{"rule":[{"from":"rt","#));
        let again = Mapping::parse(&a.canonical_json(), Format::Json).unwrap();
        assert_eq!(again, a);
        assert_eq!(a.source(), "a.b@1");
        assert_eq!(a.target_ref().version, 2);
    }

    #[test]
    fn json_null_constants_are_kept() {
        let m = Mapping::parse(
            r#"{"version":1,"source":"a.b@1","target":"c.d@1","rule":[{"target":"x","const":null}]}"#,
            Format::Json,
        )
        .unwrap();
        assert!(
            matches!(&m.rules[0], Rule::Output { value, .. } if value.expr == Expr::Const(Value::Null))
        );
    }
}
