//! Type-checking a mapping against its source and target JSON Schemas.
//!
//! Values are tracked as a [`Ty`]: the concrete values known to be possible
//! (constants, code-table outputs, source enums) plus an abstract part
//! (types, string format, array item type), and whether the value may be
//! missing. Known values are validated against the target subschema with
//! a real validator; the abstract part must fit the target's types, enum
//! and format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Value, json};

use jembatan_core::{FieldName, Scalar};

use crate::apply::{self, Secrets};
use crate::doc::{CastTo, Cond, Expr, Mapping, Op, Pipeline, Rule};
use crate::path::FieldPath;
use crate::pushdown::{Kind, PushInfo};
use crate::schema::{SchemaDoc, Types};
use crate::{ApplyError, CheckedMapping, RuleFailure};

/// Deepest schema nesting the checker follows.
const MAX_DEPTH: usize = 32;
/// Most known values tracked before falling back to the abstract type.
const MAX_KNOWN: usize = 256;

/// A reason a mapping cannot be right for its schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// 0-based index of the rule at fault; `None` for problems of the
    /// mapping as a whole (a required target field no rule produces).
    pub rule: Option<usize>,
    /// The rule's target path (`fail` for a check rule); empty when `rule`
    /// is `None`.
    pub target: String,
    /// The source or target path the problem is about.
    pub path: String,
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Some(r) => write!(f, "rule {r} ({}): {}", self.target, self.message),
            None => write!(f, "mapping: {}", self.message),
        }
    }
}

impl std::error::Error for CheckError {}

/// The static type of a value in flight.
#[derive(Debug, Clone, PartialEq)]
struct Ty {
    /// Types of the abstract part (values not listed in `known`).
    types: Types,
    /// String format of the abstract part.
    format: Option<String>,
    /// Item type of abstract arrays.
    item: Option<Box<Ty>>,
    /// Concrete values that may occur.
    known: Vec<Value>,
    missing: bool,
}

impl Ty {
    fn abstract_(types: Types) -> Ty {
        Ty {
            types,
            format: None,
            item: None,
            known: Vec::new(),
            missing: false,
        }
    }

    /// No value at all: the type of `fail`, and of paths already reported.
    fn never() -> Ty {
        Ty::abstract_(Types::NONE)
    }

    fn value(v: Value) -> Ty {
        Ty {
            known: vec![v],
            ..Ty::never()
        }
    }

    fn only_missing() -> Ty {
        Ty {
            missing: true,
            ..Ty::never()
        }
    }

    /// Every type a value may have, known values included.
    fn all_types(&self) -> Types {
        self.known
            .iter()
            .fold(self.types, |acc, v| acc.union(Types::of(v)))
    }

    fn may_be_null(&self) -> bool {
        self.types.contains(Types::NULL) || self.known.contains(&Value::Null)
    }

    fn union(self, other: Ty) -> Ty {
        let format = match (self.types.is_empty(), other.types.is_empty()) {
            (true, _) => other.format.clone(),
            (_, true) => self.format.clone(),
            _ if self.format == other.format => self.format.clone(),
            _ => None,
        };
        let item = match (self.item, other.item) {
            (Some(a), Some(b)) => Some(Box::new(a.union(*b))),
            (a, b) => a.or(b),
        };
        let mut known = self.known;
        for v in other.known {
            if !known.contains(&v) {
                known.push(v);
            }
        }
        let mut ty = Ty {
            types: self.types.union(other.types),
            format,
            item,
            known,
            missing: self.missing || other.missing,
        };
        ty.limit_known();
        ty
    }

    /// Too many known values: fold them into the abstract part.
    fn limit_known(&mut self) {
        if self.known.len() > MAX_KNOWN {
            let known = std::mem::take(&mut self.known);
            self.types = known
                .iter()
                .fold(self.types, |acc, v| acc.union(Types::of(v)));
            self.format = None;
        }
    }
}

fn scalar_types(s: &Scalar) -> Types {
    match s {
        Scalar::Bool(_) => Types::BOOL,
        Scalar::Int(_) | Scalar::Float(_) => Types::NUMBER,
        Scalar::String(_) => Types::STR,
    }
}

struct Checker<'a> {
    mapping: &'a Mapping,
    source: SchemaDoc<'a>,
    target: SchemaDoc<'a>,
    errors: Vec<CheckError>,
    rule: Option<usize>,
    label: String,
    used_secrets: BTreeSet<String>,
    source_fields: BTreeSet<String>,
}

/// Checks `mapping` against its schemas; see [`Mapping::check`].
pub(crate) fn check(
    mapping: &Mapping,
    source_schema: &Value,
    target_schema: &Value,
) -> Result<CheckedMapping, Vec<CheckError>> {
    let mut c = Checker {
        mapping,
        source: SchemaDoc::new(source_schema),
        target: SchemaDoc::new(target_schema),
        errors: Vec::new(),
        rule: None,
        label: String::new(),
        used_secrets: BTreeSet::new(),
        source_fields: BTreeSet::new(),
    };
    if !c.source.types(source_schema).contains(Types::OBJ) {
        c.err(
            "",
            format!(
                "the source schema {} does not describe objects",
                mapping.source()
            ),
        );
    }
    if !c.target.types(target_schema).contains(Types::OBJ) {
        c.err(
            "",
            format!(
                "the target schema {} does not describe objects",
                mapping.target()
            ),
        );
    }
    let target_validator = match crate::runtest::compile_schema(target_schema) {
        Ok(v) => Some(v),
        Err(e) => {
            c.err(
                "",
                format!(
                    "the target schema {} does not compile: {e}",
                    mapping.target()
                ),
            );
            None
        }
    };
    let mut push = BTreeMap::new();
    for (i, rule) in mapping.rules.iter().enumerate() {
        c.rule = Some(i);
        c.label = rule.label();
        match rule {
            Rule::Fail { cond, .. } => c.cond(cond, None),
            Rule::Output { target, value } => {
                let ty = c.pipeline(value);
                c.target_fit(target, &ty);
                c.overlaps(i, target);
                if let Some(info) = c.push_info(target, value) {
                    push.insert(target.to_string(), info);
                }
            }
        }
    }
    c.rule = None;
    c.label.clear();
    c.required_covered(target_schema, &FieldPath::empty(), 0);
    let (true, Some(target_validator)) = (c.errors.is_empty(), target_validator) else {
        return Err(c.errors);
    };
    let source_fields = c.source_fields;
    Ok(CheckedMapping {
        mapping: mapping.clone(),
        push,
        source_fields,
        secrets: c.used_secrets,
        target_validator,
        target_schema: target_schema.clone(),
    })
}

impl<'a> Checker<'a> {
    /// Records an error; an empty `path` means the rule's own target.
    fn err(&mut self, path: impl fmt::Display, message: impl Into<String>) {
        let mut path = path.to_string();
        if path.is_empty() {
            path = self.label.clone();
        }
        let e = CheckError {
            rule: self.rule,
            target: self.label.clone(),
            path,
            message: message.into(),
        };
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    /// The type of a source path, or an error and [`Ty::never`].
    fn source_path(&mut self, path: &FieldPath) -> Ty {
        if let Some(first) = path.first() {
            self.source_fields.insert(first.to_owned());
        }
        let mut node = self.source.root();
        let mut missing = false;
        for seg in path.segments() {
            let types = self.source.types(node);
            if !types.contains(Types::OBJ) {
                self.err(
                    path,
                    format!(
                        "source path \"{path}\" does not exist in {}: {seg:?} is inside a {types}",
                        self.mapping.source()
                    ),
                );
                return Ty::never();
            }
            match self.source.property(node, seg) {
                Some(next) => {
                    missing |= !self.source.is_required(node, seg) || types.contains(Types::NULL);
                    node = next;
                }
                None => {
                    self.err(
                        path,
                        format!(
                            "source path \"{path}\" does not exist in {}",
                            self.mapping.source()
                        ),
                    );
                    return Ty::never();
                }
            }
        }
        let mut ty = self.schema_ty(node, 0);
        ty.missing = missing;
        ty
    }

    fn schema_ty(&self, node: &'a Value, depth: usize) -> Ty {
        let types = self.source.types(node);
        if let Some(values) = self.source.enum_values(node) {
            let mut ty = Ty {
                known: values,
                ..Ty::never()
            };
            ty.limit_known();
            return ty;
        }
        let item = if depth < MAX_DEPTH && types.contains(Types::ARR) {
            Some(Box::new(match self.source.items(node) {
                Some(items) => self.schema_ty(items, depth + 1),
                None => Ty::abstract_(Types::ALL),
            }))
        } else {
            None
        };
        Ty {
            types,
            format: self.source.format(node).map(str::to_owned),
            item,
            known: Vec::new(),
            missing: false,
        }
    }

    fn pipeline(&mut self, p: &Pipeline) -> Ty {
        let mut ty = match &p.expr {
            Expr::From(path) => self.source_path(path),
            Expr::Const(v) => Ty::value(v.clone()),
            Expr::Concat(c) => {
                let mut nullable = true;
                for path in &c.from {
                    let t = self.source_path(path);
                    if t.all_types().intersects(Types::ARR.union(Types::OBJ)) {
                        self.err(
                            path,
                            format!(
                                "concat: source path \"{path}\" may hold {}, not only scalars",
                                t.all_types()
                            ),
                        );
                    }
                    if !t.missing && !t.may_be_null() && t.all_types() != Types::NONE {
                        nullable = false;
                    }
                }
                Ty::abstract_(if nullable {
                    Types::STR.union(Types::NULL)
                } else {
                    Types::STR
                })
            }
            Expr::When {
                cond,
                then,
                otherwise,
            } => {
                self.cond(cond, None);
                let t = self.pipeline(then);
                let e = match otherwise {
                    Some(o) => self.pipeline(o),
                    None => Ty::only_missing(),
                };
                t.union(e)
            }
            Expr::Fail(_) => Ty::never(),
        };
        for op in &p.ops {
            ty = self.op(op, ty, 0);
        }
        if let Some(d) = &p.default {
            ty = self.op(&Op::Default(d.clone()), ty, 0);
        }
        ty
    }

    fn op(&mut self, op: &Op, ty: Ty, depth: usize) -> Ty {
        let name = op_name(op);
        // the concrete part: run the op on each known value
        let mut out = Ty {
            known: Vec::new(),
            ..ty.clone()
        };
        out.types = Types::NONE;
        out.format = None;
        out.item = None;
        let mut known_types = Types::NONE;
        for v in &ty.known {
            if matches!(op, Op::Hash(_)) && !v.is_null() {
                known_types = known_types.union(Types::STR);
                continue;
            }
            match apply_known(op, v) {
                Ok(r) => {
                    if !out.known.contains(&r) {
                        out.known.push(r);
                    }
                }
                Err(reason) => self.err(
                    "",
                    format!("{name}: a possible value {} fails: {reason}", short(v)),
                ),
            }
        }
        if let Op::Hash(h) = op {
            self.used_secrets.insert(h.secret.clone());
            if !self.mapping.doc.secrets.contains(&h.secret) {
                self.err(
                    &h.secret,
                    format!("unknown secret \"{}\"; declare it in `secrets`", h.secret),
                );
            }
        }
        // the abstract part
        let t = ty.types;
        let null = if t.contains(Types::NULL) {
            Types::NULL
        } else {
            Types::NONE
        };
        let non_null = t.without(Types::NULL);
        let want = |c: &mut Checker<'a>, accepted: Types| {
            if !non_null.is_empty() && !non_null.intersects(accepted) {
                c.err(
                    "",
                    format!("{name} needs {accepted} but the value is {non_null}"),
                );
            }
        };
        let abs = match op {
            Op::Default(d) => {
                if ty.missing || ty.may_be_null() {
                    out.known.retain(|v| !v.is_null());
                    if !out.known.contains(d) {
                        out.known.push(d.clone());
                    }
                }
                out.missing = false;
                Ty {
                    types: non_null,
                    format: ty.format.clone(),
                    item: ty.item.clone(),
                    ..Ty::never()
                }
            }
            Op::Cast(to) => {
                want(
                    self,
                    Types::ALL
                        .without(Types::ARR.union(Types::OBJ))
                        .without(Types::NULL),
                );
                Ty::abstract_(if non_null.is_empty() {
                    null
                } else {
                    null.union(match to {
                        CastTo::String => Types::STR,
                        CastTo::Integer => Types::INT,
                        CastTo::Number => Types::NUMBER,
                        CastTo::Boolean => Types::BOOL,
                    })
                })
            }
            Op::Date(spec) | Op::Datetime(spec) => {
                want(self, Types::STR);
                let format = match op {
                    Op::Date(_) if matches!(spec.format.as_str(), "%Y-%m-%d" | "%F") => {
                        Some("date".to_owned())
                    }
                    Op::Datetime(_)
                        if matches!(
                            spec.format.as_str(),
                            "%+" | "%Y-%m-%dT%H:%M:%S%:z"
                                | "%Y-%m-%dT%H:%M:%S%.f%:z"
                                | "%Y-%m-%dT%H:%M:%SZ"
                                | "%Y-%m-%dT%H:%M:%S%.fZ"
                                | "%FT%T%:z"
                                | "%FT%TZ"
                        ) =>
                    {
                        Some("date-time".to_owned())
                    }
                    _ => None,
                };
                let mut a = Ty::abstract_(if non_null.is_empty() {
                    null
                } else {
                    null.union(Types::STR)
                });
                a.format = format;
                a
            }
            Op::ValueMap(m) => {
                want(self, Types::STR.union(Types::NUMBER).union(Types::BOOL));
                if !non_null.is_empty() {
                    for v in m.map.values().chain(m.default.iter()) {
                        if !out.known.contains(v) {
                            out.known.push(v.clone());
                        }
                    }
                }
                Ty::abstract_(null)
            }
            Op::Split(s) => {
                want(self, Types::STR);
                if non_null.is_empty() {
                    Ty::abstract_(null)
                } else if matches!(s.part, Some(0 | -1)) {
                    // splitting always yields at least one part
                    Ty::abstract_(null.union(Types::STR))
                } else if s.part.is_some() {
                    Ty::abstract_(Types::STR.union(Types::NULL))
                } else {
                    let mut a = Ty::abstract_(null.union(Types::ARR));
                    a.item = Some(Box::new(Ty::abstract_(Types::STR)));
                    a
                }
            }
            Op::Mask(_) | Op::Trim | Op::Upper | Op::Lower => {
                want(self, Types::STR);
                Ty::abstract_(if non_null.is_empty() {
                    null
                } else {
                    null.union(Types::STR)
                })
            }
            Op::Hash(_) => {
                want(self, Types::STR.union(Types::NUMBER).union(Types::BOOL));
                Ty::abstract_(if non_null.is_empty() {
                    null
                } else {
                    null.union(Types::STR)
                })
            }
            Op::Each(_) | Op::Filter(_) if depth >= MAX_DEPTH => Ty::abstract_(t),
            Op::Each(ops) => {
                want(self, Types::ARR);
                let mut item = ty
                    .item
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Ty::abstract_(Types::ALL));
                for op in ops {
                    item = self.op(op, item, depth + 1);
                }
                item.missing = false;
                let mut a = Ty::abstract_(if non_null.is_empty() {
                    null
                } else {
                    null.union(Types::ARR)
                });
                a.item = Some(Box::new(item));
                a
            }
            Op::Filter(cond) => {
                want(self, Types::ARR);
                let item = ty
                    .item
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Ty::abstract_(Types::ALL));
                self.cond(cond, Some(&item));
                let mut a = Ty::abstract_(if non_null.is_empty() {
                    null
                } else {
                    null.union(Types::ARR)
                });
                a.item = Some(Box::new(item));
                a
            }
        };
        out.types = abs.types.union(known_types);
        out.format = if known_types.is_empty() {
            abs.format
        } else {
            None
        };
        out.item = abs.item;
        out.limit_known();
        out
    }

    /// Checks a condition's paths and operand kinds; `element` is the item
    /// type inside a `filter`.
    fn cond(&mut self, cond: &Cond, element: Option<&Ty>) {
        match cond {
            Cond::All { all: list } | Cond::Any { any: list } => {
                list.iter().for_each(|c| self.cond(c, element))
            }
            Cond::Not { not } => self.cond(not, element),
            Cond::Pred {
                field,
                op: _,
                value,
                values,
            } => {
                let ty = match element {
                    None => self.source_path(field),
                    Some(item) if field.is_empty() => item.clone(),
                    Some(item) => {
                        if !item.all_types().contains(Types::OBJ) {
                            self.err(
                                field,
                                format!(
                                    "filter: elements are {}, they have no field \"{field}\"",
                                    item.all_types()
                                ),
                            );
                        }
                        return;
                    }
                };
                let field_types = ty.all_types().without(Types::NULL);
                if field_types.is_empty() {
                    return;
                }
                let shown = if field.is_empty() {
                    "the element".to_string()
                } else {
                    format!("\"{field}\"")
                };
                for s in value.iter().chain(values) {
                    if !field_types.intersects(scalar_types(s)) {
                        self.err(
                            field,
                            format!(
                                "condition compares {shown} ({field_types}) with {}; that is never true",
                                s.describe()
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Checks that the value fits the target schema at `path`.
    fn target_fit(&mut self, path: &FieldPath, ty: &Ty) {
        let mut node = self.target.root();
        let mut required = false;
        for (i, seg) in path.segments().iter().enumerate() {
            let here = FieldPath::from_segments(&path.segments()[..i]);
            let types = self.target.types(node);
            if !types.contains(Types::OBJ) {
                self.err(
                    path,
                    format!(
                        "target path \"{path}\" goes through \"{here}\", which is {types} in {}",
                        self.mapping.target()
                    ),
                );
                return;
            }
            match self.target.property(node, seg) {
                Some(next) => {
                    required = self.target.is_required(node, seg);
                    node = next;
                }
                None if self.target.is_closed(node) => {
                    self.err(
                        path,
                        format!(
                            "target path \"{path}\" is not defined by {}, which allows no other fields there",
                            self.mapping.target()
                        ),
                    );
                    return;
                }
                None => return,
            }
        }
        self.fit(path, ty, node, required, 0);
    }

    fn fit(&mut self, path: &FieldPath, ty: &Ty, node: &'a Value, required: bool, depth: usize) {
        let t = self.mapping.target();
        if ty.missing && required {
            self.err(
                path,
                format!(
                    "\"{path}\" is required by {t} but the value may be missing; add a default"
                ),
            );
        }
        if !ty.known.is_empty() {
            let validator = subschema_validator(self.target.root(), node);
            for v in &ty.known {
                let problem = match &validator {
                    Some(val) => val.validate(v).err().map(|e| e.to_string()),
                    None => (!self.target.types(node).contains(Types::of(v)))
                        .then(|| format!("{} is not {}", short(v), self.target.types(node))),
                };
                if let Some(p) = problem {
                    self.err(
                        path,
                        format!(
                            "a possible value {} does not fit \"{path}\" in {t}: {p}",
                            short(v)
                        ),
                    );
                }
            }
        }
        let abs = ty.types;
        if abs.is_empty() {
            return;
        }
        let target_types = self.target.types(node);
        if abs.contains(Types::NULL) && !target_types.contains(Types::NULL) {
            self.err(
                path,
                format!(
                    "the value may be null but \"{path}\" in {t} is not nullable; add a default"
                ),
            );
        }
        let non_null = abs.without(Types::NULL);
        if !target_types.contains(non_null) {
            self.err(
                path,
                format!(
                    "the value is {non_null} but \"{path}\" in {t} is {target_types}; add a cast or a map"
                ),
            );
            return;
        }
        if non_null.is_empty() {
            return;
        }
        if let Some(values) = self.target.enum_values(node) {
            self.err(
                path,
                format!(
                    "\"{path}\" in {t} is one of {}, but the value is not known to be; use a value_map",
                    short(&Value::Array(values))
                ),
            );
            return;
        }
        if non_null.contains(Types::STR)
            && let Some(format) = self.target.format(node)
            && ty.format.as_deref() != Some(format)
        {
            self.err(
                path,
                format!(
                    "\"{path}\" in {t} has format \"{format}\" but the value {}; add a date op",
                    match &ty.format {
                        Some(f) => format!("has format \"{f}\""),
                        None => "is an arbitrary string".into(),
                    }
                ),
            );
        }
        if non_null.contains(Types::ARR)
            && depth < MAX_DEPTH
            && let Some(items) = self.target.items(node)
        {
            let item = ty
                .item
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Ty::abstract_(Types::ALL));
            self.fit(path, &item, items, false, depth + 1);
        }
    }

    fn overlaps(&mut self, i: usize, target: &FieldPath) {
        for (j, other) in self.mapping.rules[..i].iter().enumerate() {
            let Rule::Output { target: o, .. } = other else {
                continue;
            };
            if o == target {
                self.err(target, format!("rule {j} already writes \"{target}\""));
            } else if target.starts_with(o) || o.starts_with(target) {
                self.err(
                    target,
                    format!("\"{target}\" overlaps \"{o}\" written by rule {j}"),
                );
            }
        }
    }

    /// Every required target field is produced, recursively through
    /// objects that rules write into (which exist whenever such a rule
    /// runs, required or not).
    fn required_covered(&mut self, node: &'a Value, prefix: &FieldPath, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let mut keys: Vec<String> = self
            .target
            .required(node)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for rule in &self.mapping.rules {
            if let Rule::Output { target, .. } = rule
                && target.segments().len() > prefix.segments().len() + 1
                && target.starts_with(prefix)
            {
                let key = &target.segments()[prefix.segments().len()];
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
        for key in keys {
            let path = prefix.child(&key);
            let mut exact = false;
            let mut inside = false;
            for rule in &self.mapping.rules {
                if let Rule::Output { target, .. } = rule {
                    if *target == path {
                        exact = true;
                    } else if target.starts_with(&path) {
                        inside = true;
                    }
                }
            }
            if exact {
                continue;
            }
            if inside {
                if let Some(sub) = self.target.property(node, &key) {
                    self.required_covered(sub, &path, depth + 1);
                }
                continue;
            }
            self.err(
                &path,
                format!(
                    "target field \"{path}\" is required by {} but no rule produces it",
                    self.mapping.target()
                ),
            );
        }
    }

    /// How a top-level target field can take part in filter push-down.
    fn push_info(&self, target: &FieldPath, value: &Pipeline) -> Option<PushInfo> {
        let [_] = target.segments() else {
            return None;
        };
        let Expr::From(from) = &value.expr else {
            return None;
        };
        let [src] = from.segments() else {
            return None;
        };
        if value.default.is_some() {
            return None;
        }
        let source: FieldName = src.parse().ok()?;
        let node = self.source.property(self.source.root(), src)?;
        let types = self.source.types(node).without(Types::NULL);
        match value.ops.as_slice() {
            [] => {
                let kind = if types == Types::STR {
                    Some(Kind::Str)
                } else if types == Types::INT {
                    Some(Kind::Int)
                } else if types == Types::NUMBER {
                    Some(Kind::Num)
                } else if types == Types::BOOL {
                    Some(Kind::Bool)
                } else {
                    None
                };
                Some(PushInfo::Rename { source, kind })
            }
            [Op::ValueMap(m)] if m.default.is_none() && types == Types::STR => {
                // total over the source's values, codes that read only as
                // strings, outputs never null
                let domain = self.source.enum_values(node)?;
                let total = domain
                    .iter()
                    .all(|v| v.is_null() || v.as_str().is_some_and(|s| m.map.contains_key(s)));
                let plain_keys = m.map.keys().all(|k| {
                    !matches!(
                        serde_json::from_str::<Value>(k),
                        Ok(Value::Number(_) | Value::Bool(_))
                    ) && Scalar::String(k.clone()).validate().is_ok()
                });
                let outputs_ok = m
                    .map
                    .values()
                    .all(|v| !matches!(v, Value::Null | Value::Array(_) | Value::Object(_)));
                (total && plain_keys && outputs_ok).then(|| PushInfo::ValueMap {
                    source,
                    map: m.map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
            }
            _ => None,
        }
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Cast(_) => "cast",
        Op::Date(_) => "date",
        Op::Datetime(_) => "datetime",
        Op::ValueMap(_) => "value_map",
        Op::Split(_) => "split",
        Op::Mask(_) => "mask",
        Op::Hash(_) => "hash",
        Op::Default(_) => "default",
        Op::Trim => "trim",
        Op::Upper => "upper",
        Op::Lower => "lower",
        Op::Each(_) => "each",
        Op::Filter(_) => "filter",
    }
}

/// Runs a (secret-free) op on one known value.
fn apply_known(op: &Op, v: &Value) -> Result<Value, RuleFailure> {
    let rules = [Rule::Output {
        target: FieldPath::from_segments(&["v".to_owned()]),
        value: Pipeline {
            expr: Expr::Const(v.clone()),
            ops: vec![op.clone()],
            default: None,
        },
    }];
    match apply::apply_rules(&rules, &serde_json::Map::new(), &Secrets::new()) {
        Ok(Value::Object(mut m)) => Ok(m.remove("v").unwrap_or(Value::Null)),
        Ok(_) => Ok(Value::Null),
        Err(ApplyError { reason, .. }) => Err(reason),
    }
}

/// A short rendering of a known value for messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 64 {
        s
    } else {
        format!("{}…", jembatan_core::ids::truncate(&s, 64))
    }
}

/// A validator for one subschema of `root`, keeping its local `$defs`.
fn subschema_validator(root: &Value, node: &Value) -> Option<jsonschema::Validator> {
    let mut wrapper = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [node],
    });
    for key in ["$defs", "definitions"] {
        if let Some(defs) = root.get(key) {
            wrapper[key] = defs.clone();
        }
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&wrapper)
        .ok()
}
