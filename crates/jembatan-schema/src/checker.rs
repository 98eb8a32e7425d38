//! The compatibility engine: proves that every document accepted by a writer
//! schema is accepted by a reader schema, keyword by keyword, or says why not.
//!
//! `subset(s, t)` returns no finding only when every instance of the writer
//! subschema `s` is an instance of the reader subschema `t`. Constraints of the
//! writer may be ignored (that only makes the writer larger, so the proof stays
//! sound); constraints of the reader never are: a reader keyword the engine
//! cannot compare is reported as [`ChangeKind::NotProvable`] unless it is equal
//! on both sides.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::compat::{ChangeKind, CheckOptions, Direction};
use crate::sample::{Sampler, bounds, number_ok, number_value, pattern_samples, string_list};
use crate::schema::{Schema, build_validator, escape};

/// A finding before its counterexample is verified.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub(crate) kind: ChangeKind,
    pub(crate) path: String,
    pub(crate) message: String,
    pub(crate) candidates: Vec<Value>,
    pub(crate) counterexample: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Writer,
    Reader,
}

const SKIP_REF: u16 = 1;
const SKIP_ALL_OF: u16 = 2;
const SKIP_ANY_OF: u16 = 4;
const SKIP_ONE_OF: u16 = 8;

const MAX_CANDIDATES: usize = 16;
const BUDGET: usize = 20_000;
const MAX_DEPTH: usize = 48;
/// Most distinct findings one comparison reports: enough to explain a
/// change, and a bound on the validation work counterexamples cost.
pub(crate) const MAX_FINDINGS: usize = 50;

/// Keywords that constrain instances and that the engine compares.
const ASSERTIONS: &[&str] = &[
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "format",
    "items",
    "prefixItems",
    "maxItems",
    "minItems",
    "uniqueItems",
    "contains",
    "maxContains",
    "minContains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "dependentSchemas",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    // compared only when equal, or in simple shapes
    "$dynamicRef",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

static TRUE_SCHEMA: Value = Value::Bool(true);
static STRING_SCHEMA: LazyLock<Value> = LazyLock::new(|| json!({"type": "string"}));

/// A subschema on one side, with its JSON pointer and the keywords already
/// dealt with (`skip`).
#[derive(Debug, Clone)]
struct Node<'a> {
    v: &'a Value,
    ptr: String,
    skip: u16,
    side: Side,
    /// The JSON types of the instances considered (a writer split by type).
    types: u8,
}

fn skip_bit(keyword: &str) -> u16 {
    match keyword {
        "$ref" => SKIP_REF,
        "allOf" => SKIP_ALL_OF,
        "anyOf" => SKIP_ANY_OF,
        "oneOf" => SKIP_ONE_OF,
        _ => 0,
    }
}

impl<'a> Node<'a> {
    fn get(&self, keyword: &str) -> Option<&'a Value> {
        if self.skip & skip_bit(keyword) != 0 {
            return None;
        }
        self.v.as_object()?.get(keyword)
    }

    fn has(&self, keyword: &str) -> bool {
        self.get(keyword).is_some()
    }

    fn child(&self, rel: &str, v: &'a Value) -> Node<'a> {
        Node {
            v,
            ptr: format!("{}/{rel}", self.ptr),
            skip: 0,
            side: self.side,
            types: T_ALL,
        }
    }

    fn without(&self, bits: u16) -> Node<'a> {
        Node {
            skip: self.skip | bits,
            ..self.clone()
        }
    }

    fn assertion_keys(&self) -> Vec<&'a str> {
        match self.v {
            Value::Object(m) => m
                .keys()
                .map(String::as_str)
                .filter(|k| ASSERTIONS.contains(k) && self.skip & skip_bit(k) == 0)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn is_false(&self) -> bool {
        matches!(self.v, Value::Bool(false))
    }

    fn u64_of(&self, keyword: &str) -> Option<u64> {
        self.get(keyword).and_then(Value::as_u64)
    }

    fn str_of(&self, keyword: &str) -> Option<&'a str> {
        self.get(keyword).and_then(Value::as_str)
    }

    fn list(&self, keyword: &str) -> Vec<Node<'a>> {
        match self.get(keyword) {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.child(&format!("{keyword}/{i}"), v))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn map(&self, keyword: &str) -> Vec<(String, Node<'a>)> {
        match self.get(keyword) {
            Some(Value::Object(entries)) => entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        self.child(&format!("{keyword}/{}", escape(k)), v),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

// JSON type bits; "number" is INT | FRAC.
const T_NULL: u8 = 1;
const T_BOOL: u8 = 2;
const T_OBJ: u8 = 4;
const T_ARR: u8 = 8;
const T_STR: u8 = 16;
const T_INT: u8 = 32;
const T_FRAC: u8 = 64;
const T_ALL: u8 = 127;

fn type_bit(name: &str) -> u8 {
    match name {
        "null" => T_NULL,
        "boolean" => T_BOOL,
        "object" => T_OBJ,
        "array" => T_ARR,
        "string" => T_STR,
        "integer" => T_INT,
        "number" => T_INT | T_FRAC,
        _ => 0,
    }
}

fn type_names(bits: u8) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (bit, name) in [
        (T_NULL, "null"),
        (T_BOOL, "boolean"),
        (T_OBJ, "object"),
        (T_ARR, "array"),
        (T_STR, "string"),
    ] {
        if bits & bit != 0 {
            out.push(name);
        }
    }
    match (bits & T_INT != 0, bits & T_FRAC != 0) {
        (true, true) => out.push("number"),
        (true, false) => out.push("integer"),
        (false, true) => out.push("non-integer number"),
        (false, false) => {}
    }
    out
}

fn value_type_bits(v: &Value) -> u8 {
    match v {
        Value::Null => T_NULL,
        Value::Bool(_) => T_BOOL,
        Value::Object(_) => T_OBJ,
        Value::Array(_) => T_ARR,
        Value::String(_) => T_STR,
        Value::Number(n) => {
            if n.as_f64().is_some_and(|x| x.fract() == 0.0) {
                T_INT
            } else {
                T_FRAC
            }
        }
    }
}

fn is_integral(x: f64) -> bool {
    x.is_finite() && (x - x.round()).abs() < 1e-9
}

fn addr(v: &Value) -> usize {
    std::ptr::from_ref(v) as usize
}

/// The comparison of one writer schema with one reader schema.
pub(crate) struct Checker<'a> {
    writer: &'a Schema,
    reader: &'a Schema,
    direction: Direction,
    opts: CheckOptions,
    writer_samples: Sampler<'a>,
    reader_samples: Sampler<'a>,
    visiting: HashSet<(usize, usize, u16, u16, u8)>,
    budget: usize,
    depth: usize,
    /// Findings made so far; past [`MAX_FINDINGS`] the comparison stops.
    found: std::cell::Cell<usize>,
    validators: HashMap<(Side, String), Option<jsonschema::Validator>>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(
        writer: &'a Schema,
        reader: &'a Schema,
        direction: Direction,
        opts: CheckOptions,
    ) -> Self {
        Self {
            writer,
            reader,
            direction,
            opts,
            writer_samples: Sampler::new(writer),
            reader_samples: Sampler::new(reader),
            visiting: HashSet::new(),
            budget: BUDGET,
            depth: 0,
            found: std::cell::Cell::new(0),
            validators: HashMap::new(),
        }
    }

    /// Runs the comparison; every finding gets a verified counterexample or none.
    pub(crate) fn run(mut self) -> Vec<Finding> {
        let s = Node {
            v: self.writer.assertions(),
            ptr: String::new(),
            skip: 0,
            side: Side::Writer,
            types: T_ALL,
        };
        let t = Node {
            v: self.reader.assertions(),
            ptr: String::new(),
            skip: 0,
            side: Side::Reader,
            types: T_ALL,
        };
        let found = self.subset(&s, &t);
        let mut merged: Vec<Finding> = Vec::new();
        for f in found {
            let room = merged.len() < MAX_FINDINGS;
            match merged
                .iter_mut()
                .find(|e| e.kind == f.kind && e.path == f.path)
            {
                Some(e) => e.candidates.extend(f.candidates),
                None if room => merged.push(f),
                None => {}
            }
        }
        for f in &mut merged {
            f.counterexample = f
                .candidates
                .iter()
                .take(64)
                .find(|c| self.writer.is_valid(c) && !self.reader.is_valid(c))
                .cloned();
        }
        merged
    }

    fn schema(&self, side: Side) -> &'a Schema {
        match side {
            Side::Writer => self.writer,
            Side::Reader => self.reader,
        }
    }

    fn sampler(&self, side: Side) -> &Sampler<'a> {
        match side {
            Side::Writer => &self.writer_samples,
            Side::Reader => &self.reader_samples,
        }
    }

    fn reader_name(&self) -> &'static str {
        match self.direction {
            Direction::Backward => "new schema",
            Direction::Forward => "old schema",
        }
    }

    fn writer_name(&self) -> &'static str {
        match self.direction {
            Direction::Backward => "old schema",
            Direction::Forward => "new schema",
        }
    }

    fn gone(&self) -> &'static str {
        match self.direction {
            Direction::Backward => "no longer allowed",
            Direction::Forward => "not allowed by the old schema",
        }
    }

    fn finding(
        &self,
        kind: ChangeKind,
        path: String,
        message: String,
        mut candidates: Vec<Value>,
    ) -> Finding {
        self.found.set(self.found.get() + 1);
        candidates.truncate(64);
        Finding {
            kind,
            path,
            message,
            candidates,
            counterexample: None,
        }
    }

    // ----- references, equality, validators ------------------------------

    fn ref_target(&self, n: &Node<'a>) -> Option<Node<'a>> {
        let r = n.str_of("$ref")?;
        let (ptr, v) = self.schema(n.side).resolve(r)?;
        Some(Node {
            v,
            ptr,
            skip: 0,
            side: n.side,
            types: T_ALL,
        })
    }

    /// The target of a `$ref` that has no other assertion next to it.
    fn pure_ref(&self, n: &Node<'a>) -> Option<Node<'a>> {
        let keys = n.assertion_keys();
        if keys == ["$ref"] {
            self.ref_target(n)
        } else {
            None
        }
    }

    fn accepts_all(&self, n: &Node<'a>) -> bool {
        match n.v {
            Value::Bool(b) => *b,
            Value::Object(_) => n.assertion_keys().is_empty(),
            _ => false,
        }
    }

    /// Same assertions on both sides (annotations ignored, references compared by target).
    fn view_equiv(&self, a: &Node<'a>, b: &Node<'a>) -> bool {
        match (a.v, b.v) {
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Bool(x), Value::Object(_)) => *x && self.accepts_all(b),
            (Value::Object(_), Value::Bool(y)) => *y && self.accepts_all(a),
            _ => {
                let mut ka = a.assertion_keys();
                let mut kb = b.assertion_keys();
                ka.sort_unstable();
                kb.sort_unstable();
                if ka != kb {
                    return false;
                }
                let mut guard = HashSet::new();
                ka.iter().all(|k| {
                    let (Some(x), Some(y)) = (a.get(k), b.get(k)) else {
                        return false;
                    };
                    if *k == "$ref" {
                        // compared through their targets below
                        let x = json!({"$ref": x});
                        let y = json!({"$ref": y});
                        return self.deep_equiv(&x, &y, a.side, b.side, &mut guard);
                    }
                    self.deep_equiv(x, y, a.side, b.side, &mut guard)
                })
            }
        }
    }

    fn deep_equiv(
        &self,
        x: &Value,
        y: &Value,
        sx: Side,
        sy: Side,
        guard: &mut HashSet<(usize, usize)>,
    ) -> bool {
        match (x, y) {
            (Value::Object(mx), Value::Object(my)) => {
                if mx.len() != my.len() {
                    return false;
                }
                if let (Some(Value::String(rx)), Some(Value::String(ry))) =
                    (mx.get("$ref"), my.get("$ref"))
                {
                    if rx != ry {
                        return false;
                    }
                    let (Some((_, tx)), Some((_, ty))) =
                        (self.schema(sx).resolve(rx), self.schema(sy).resolve(ry))
                    else {
                        return false;
                    };
                    let key = (addr(tx), addr(ty));
                    if guard.insert(key) && !self.deep_equiv(tx, ty, sx, sy, guard) {
                        return false;
                    }
                }
                mx.iter().all(|(k, vx)| {
                    my.get(k)
                        .is_some_and(|vy| self.deep_equiv(vx, vy, sx, sy, guard))
                })
            }
            (Value::Array(ax), Value::Array(ay)) => {
                ax.len() == ay.len()
                    && ax
                        .iter()
                        .zip(ay)
                        .all(|(vx, vy)| self.deep_equiv(vx, vy, sx, sy, guard))
            }
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            _ => x == y,
        }
    }

    /// A validator for the subschema at `ptr` of one side.
    fn validator(&mut self, side: Side, ptr: &str) -> Option<&jsonschema::Validator> {
        let root = self.schema(side).value();
        self.validators
            .entry((side, ptr.to_owned()))
            .or_insert_with(|| {
                if ptr.is_empty() {
                    return build_validator(root).ok();
                }
                let mut resource = root.clone();
                resource
                    .as_object_mut()?
                    .insert("$id".into(), json!("urn:jembatan:root"));
                let wrapper = json!({
                    "$defs": {"root": resource},
                    "$ref": format!("urn:jembatan:root#{}", pointer_fragment(ptr)),
                });
                build_validator(&wrapper).ok()
            })
            .as_ref()
    }

    fn valid_at(&mut self, side: Side, ptr: &str, v: &Value) -> Option<bool> {
        self.validator(side, ptr).map(|val| val.is_valid(v))
    }

    /// `Ok(None)` when valid, `Ok(Some(keyword))` of the first error, `Err` when unknown.
    fn error_keyword(&mut self, side: Side, ptr: &str, v: &Value) -> Result<Option<String>, ()> {
        let val = self.validator(side, ptr).ok_or(())?;
        let first = val.iter_errors(v).next();
        Ok(first.map(|e| e.kind().keyword().to_owned()))
    }

    // ----- the relation ---------------------------------------------------

    fn subset(&mut self, s: &Node<'a>, t: &Node<'a>) -> Vec<Finding> {
        if self.accepts_all(t) || s.is_false() {
            return Vec::new();
        }
        if self.found.get() >= MAX_FINDINGS {
            // enough differences found; stopping must never read as
            // "compatible", so what is left unexamined is not proven
            return vec![self.finding(
                ChangeKind::NotProvable,
                t.ptr.clone(),
                format!("not examined: the comparison stops after {MAX_FINDINGS} differences"),
                Vec::new(),
            )];
        }
        if self.budget == 0 || self.depth > MAX_DEPTH {
            return vec![self.finding(
                ChangeKind::NotProvable,
                t.ptr.clone(),
                "the schemas are too deep or too large to compare".into(),
                self.sampler(s.side).variants(s.v),
            )];
        }
        self.budget -= 1;
        let key = (addr(s.v), addr(t.v), s.skip, t.skip, s.types);
        if !self.visiting.insert(key) {
            // Recursive schemas: assume the pair while it is being proved.
            return Vec::new();
        }
        self.depth += 1;
        let out = self.subset_inner(s, t);
        self.depth -= 1;
        self.visiting.remove(&key);
        out
    }

    fn subset_inner(&mut self, s: &Node<'a>, t: &Node<'a>) -> Vec<Finding> {
        if let Some(target) = self.pure_ref(s) {
            return self.subset(&target, t);
        }
        if let Some(target) = self.pure_ref(t) {
            return self.subset(s, &target);
        }
        if self.view_equiv(s, t) {
            return Vec::new();
        }
        if t.is_false() {
            return vec![self.finding(
                ChangeKind::SchemaMadeFalse,
                t.ptr.clone(),
                format!("the {} accepts no value here", self.reader_name()),
                self.sampler(s.side).variants(s.v),
            )];
        }
        if let Some(values) = finite_values(s) {
            return self.check_finite(s, t, values);
        }
        let mut out = Vec::new();
        let mut t = t.clone();
        if let Some(target) = self.ref_target(&t) {
            out.extend(self.prove_conjunct(s, &target));
            t = t.without(SKIP_REF);
        }
        let parts = t.list("allOf");
        if !parts.is_empty() {
            let known = s.list("allOf").len();
            for (i, part) in parts.iter().enumerate() {
                let found = self.prove_conjunct(s, part);
                if found.is_empty() {
                    continue;
                }
                if i >= known {
                    let candidates = found.into_iter().flat_map(|f| f.candidates).collect();
                    out.push(self.finding(
                        ChangeKind::AllOfExtended,
                        part.ptr.clone(),
                        format!(
                            "allOf of the {} has a new subschema that {} values may not meet",
                            self.reader_name(),
                            self.writer_name()
                        ),
                        candidates,
                    ));
                } else {
                    out.extend(found);
                }
            }
            t = t.without(SKIP_ALL_OF);
        }
        if self.accepts_all(&t) {
            return out;
        }
        if s.has("$ref") || s.has("allOf") {
            let base = s.without(SKIP_REF | SKIP_ALL_OF);
            let first = self.subset(&base, &t);
            if first.is_empty() {
                return out;
            }
            for c in self.conjuncts(s) {
                if self.subset(&c, &t).is_empty() {
                    return out;
                }
            }
            out.extend(first);
            return out;
        }
        let mut own = Vec::new();
        self.combinators(s, &t, &mut own);
        self.keywords(s, &t, &mut own);
        if !own.is_empty() && !t.has("anyOf") && !t.has("oneOf") {
            // A writer union fits when each of its branches does.
            for keyword in ["anyOf", "oneOf"] {
                let branches = s.list(keyword);
                if !branches.is_empty() && branches.iter().all(|b| self.subset(b, &t).is_empty()) {
                    return out;
                }
            }
        }
        out.extend(own);
        out
    }

    fn conjuncts(&self, s: &Node<'a>) -> Vec<Node<'a>> {
        let mut out: Vec<Node<'a>> = self.ref_target(s).into_iter().collect();
        out.extend(s.list("allOf"));
        out
    }

    fn prove_conjunct(&mut self, s: &Node<'a>, tc: &Node<'a>) -> Vec<Finding> {
        for c in self.conjuncts(s) {
            if self.view_equiv(&c, tc) {
                return Vec::new();
            }
        }
        self.subset(s, tc)
    }

    // ----- finite writers ---------------------------------------------------

    fn check_finite(&mut self, s: &Node<'a>, t: &Node<'a>, values: Vec<Value>) -> Vec<Finding> {
        let mut groups: Vec<(ChangeKind, String, Vec<Value>)> = Vec::new();
        for v in values {
            if self.valid_at(s.side, &s.ptr, &v) == Some(false) {
                continue;
            }
            let keyword = match self.error_keyword(t.side, &t.ptr, &v) {
                Ok(None) => continue,
                Ok(Some(k)) => k,
                Err(()) => String::new(),
            };
            let kind = self.kind_for_keyword(&keyword, s, t);
            let path = if t.v.get(keyword.as_str()).is_some() {
                format!("{}/{keyword}", t.ptr)
            } else {
                t.ptr.clone()
            };
            match groups.iter_mut().find(|g| g.0 == kind && g.1 == path) {
                Some(g) => g.2.push(v),
                None => groups.push((kind, path, vec![v])),
            }
        }
        groups
            .into_iter()
            .map(|(kind, path, values)| {
                let message = format!("value {} {}", values[0], self.gone());
                self.finding(kind, path, message, values)
            })
            .collect()
    }

    fn kind_for_keyword(&self, keyword: &str, s: &Node<'a>, t: &Node<'a>) -> ChangeKind {
        use ChangeKind as K;
        let had = |k: &str| s.has(k);
        match keyword {
            "enum" => K::EnumNarrowed,
            "const" if had("const") => K::ConstChanged,
            "const" => K::ConstAdded,
            "type" => {
                let tb = type_bits(t);
                let sb = type_bits(s);
                if sb & tb == 0 {
                    K::TypeChanged
                } else {
                    K::TypeNarrowed
                }
            }
            "maxLength" if had("maxLength") => K::MaxLengthDecreased,
            "maxLength" => K::MaxLengthAdded,
            "minLength" if had("minLength") => K::MinLengthIncreased,
            "minLength" => K::MinLengthAdded,
            "pattern" if had("pattern") => K::PatternChanged,
            "pattern" => K::PatternAdded,
            "format" if had("format") => K::FormatChanged,
            "format" => K::FormatAdded,
            "maximum" if had("maximum") => K::MaximumDecreased,
            "maximum" => K::MaximumAdded,
            "minimum" if had("minimum") => K::MinimumIncreased,
            "minimum" => K::MinimumAdded,
            "exclusiveMaximum" if had("exclusiveMaximum") => K::ExclusiveMaximumDecreased,
            "exclusiveMaximum" => K::ExclusiveMaximumAdded,
            "exclusiveMinimum" if had("exclusiveMinimum") => K::ExclusiveMinimumIncreased,
            "exclusiveMinimum" => K::ExclusiveMinimumAdded,
            "multipleOf" if had("multipleOf") => K::MultipleOfChanged,
            "multipleOf" => K::MultipleOfAdded,
            "required" => K::RequiredAdded,
            "additionalProperties" => K::AdditionalPropertiesNarrowed,
            "maxItems" if had("maxItems") => K::MaxItemsDecreased,
            "maxItems" => K::MaxItemsAdded,
            "minItems" if had("minItems") => K::MinItemsIncreased,
            "minItems" => K::MinItemsAdded,
            "uniqueItems" => K::UniqueItemsAdded,
            "maxProperties" if had("maxProperties") => K::MaxPropertiesDecreased,
            "maxProperties" => K::MaxPropertiesAdded,
            "minProperties" if had("minProperties") => K::MinPropertiesIncreased,
            "minProperties" => K::MinPropertiesAdded,
            "dependentRequired" => K::DependentRequiredAdded,
            "not" if had("not") => K::NotChanged,
            "not" => K::NotAdded,
            "anyOf" => K::AnyOfNarrowed,
            "oneOf" => K::OneOfNarrowed,
            "falseSchema" => K::SchemaMadeFalse,
            _ => K::ValueRejected,
        }
    }

    // ----- combinators and rarely used keywords ----------------------------

    fn combinators(&mut self, s: &Node<'a>, t: &Node<'a>, out: &mut Vec<Finding>) {
        for (keyword, exclusive) in [("anyOf", false), ("oneOf", true)] {
            let branches = t.list(keyword);
            if t.has(keyword) {
                self.union_rule(s, t, keyword, &branches, exclusive, out);
            }
        }
        if let Some(tnv) = t.get("not") {
            let tn = t.child("not", tnv);
            let mut ok = self.disjoint(s, &tn, 0);
            if !ok && let Some(snv) = s.get("not") {
                let sn = s.child("not", snv);
                ok = self.view_equiv(&sn, &tn) || self.subset(&tn, &sn).is_empty();
            }
            if !ok {
                let kind = if s.has("not") {
                    ChangeKind::NotChanged
                } else {
                    ChangeKind::NotAdded
                };
                let mut candidates = self.sampler(t.side).variants(tnv);
                candidates.extend(self.variants_and_neighbours(s));
                out.push(self.finding(
                    kind,
                    tn.ptr.clone(),
                    format!(
                        "the {} excludes values (\"not\") that the {} may accept",
                        self.reader_name(),
                        self.writer_name()
                    ),
                    candidates,
                ));
            }
        }
        if t.has("if") && (t.has("then") || t.has("else")) {
            let part = |n: &Node<'a>, k: &str| match n.get(k) {
                Some(v) => n.child(k, v),
                None => Node {
                    v: &TRUE_SCHEMA,
                    ptr: format!("{}/{k}", n.ptr),
                    skip: 0,
                    side: n.side,
                    types: T_ALL,
                },
            };
            let (ti, tt, te) = (part(t, "if"), part(t, "then"), part(t, "else"));
            let mut ok = false;
            if s.has("if") {
                let (si, st, se) = (part(s, "if"), part(s, "then"), part(s, "else"));
                ok = self.view_equiv(&si, &ti)
                    && self.subset(&st, &tt).is_empty()
                    && self.subset(&se, &te).is_empty();
            }
            if !ok {
                ok = self.subset(s, &tt).is_empty() && self.subset(s, &te).is_empty();
            }
            if !ok {
                out.push(self.finding(
                    ChangeKind::ConditionalChanged,
                    ti.ptr.clone(),
                    format!(
                        "the if/then/else of the {} may reject values the {} accepts",
                        self.reader_name(),
                        self.writer_name()
                    ),
                    self.variants_and_neighbours(s),
                ));
            }
        }
        for (name, dn) in t.map("dependentSchemas") {
            let mut ok = false;
            if let Some((_, sd)) = s
                .map("dependentSchemas")
                .into_iter()
                .find(|(k, _)| *k == name)
            {
                ok = self.view_equiv(&sd, &dn) || self.subset(&sd, &dn).is_empty();
            }
            if !ok {
                ok = self.subset(s, &dn).is_empty();
            }
            if !ok {
                let smp = self.sampler(s.side);
                let value = smp.property_value(s.v, &name);
                let candidates = smp
                    .object_bases(s.v)
                    .into_iter()
                    .map(|mut o| {
                        o.insert(name.clone(), value.clone());
                        Value::Object(o)
                    })
                    .collect();
                out.push(self.finding(
                    ChangeKind::DependentSchemasChanged,
                    dn.ptr.clone(),
                    format!(
                        "the dependent schema for property \"{name}\" may reject values the {} accepts",
                        self.writer_name()
                    ),
                    candidates,
                ));
            }
        }
        for keyword in ["contentEncoding", "contentMediaType", "contentSchema"] {
            if let Some(tv) = t.get(keyword) {
                let same = s
                    .get(keyword)
                    .is_some_and(|sv| self.deep_equiv(sv, tv, s.side, t.side, &mut HashSet::new()));
                if !same {
                    out.push(self.not_provable(s, t, keyword));
                }
            }
        }
        if t.has("$dynamicRef") {
            out.push(self.not_provable(s, t, "$dynamicRef"));
        }
        if let Some(u) = t.get("unevaluatedProperties") {
            let un = t.child("unevaluatedProperties", u);
            if !self.accepts_all(&un) && has_applicators(t.v, false) {
                out.push(self.not_provable(s, t, "unevaluatedProperties"));
            }
        }
        if let Some(u) = t.get("unevaluatedItems") {
            let un = t.child("unevaluatedItems", u);
            if !self.accepts_all(&un) && has_applicators(t.v, true) {
                out.push(self.not_provable(s, t, "unevaluatedItems"));
            }
        }
    }

    fn not_provable(&self, s: &Node<'a>, t: &Node<'a>, keyword: &str) -> Finding {
        self.finding(
            ChangeKind::NotProvable,
            format!("{}/{}", t.ptr, escape(keyword)),
            format!(
                "cannot prove compatible: \"{keyword}\" in the {} differs and is not compared",
                self.reader_name()
            ),
            self.variants_and_neighbours(s),
        )
    }

    fn union_rule(
        &mut self,
        s: &Node<'a>,
        t: &Node<'a>,
        keyword: &str,
        branches: &[Node<'a>],
        exclusive: bool,
        out: &mut Vec<Finding>,
    ) {
        let other = if keyword == "anyOf" { "oneOf" } else { "anyOf" };
        let (alts, from_branches) = if s.has(keyword) {
            (s.list(keyword), true)
        } else if s.has(other) {
            (s.list(other), true)
        } else {
            // one alternative per JSON type of the writer
            let bits = type_bits(s);
            let split: Vec<Node<'a>> = [T_NULL, T_BOOL, T_OBJ, T_ARR, T_STR, T_INT, T_FRAC]
                .into_iter()
                .filter(|b| bits & b != 0)
                .map(|b| Node {
                    types: b,
                    ..s.clone()
                })
                .collect();
            if split.len() > 1 && bits != T_ALL {
                (split, false)
            } else {
                (vec![s.clone()], false)
            }
        };
        let rest = s.without(SKIP_ANY_OF | SKIP_ONE_OF);
        let kind = if exclusive {
            ChangeKind::OneOfNarrowed
        } else {
            ChangeKind::AnyOfNarrowed
        };
        for alt in &alts {
            let mut covered = false;
            let mut candidates = Vec::new();
            for tb in branches {
                let found = self.subset(alt, tb);
                if found.is_empty() {
                    covered = true;
                    break;
                }
                if from_branches && self.subset(&rest, tb).is_empty() {
                    covered = true;
                    break;
                }
                candidates.extend(found.into_iter().flat_map(|f| f.candidates).take(4));
            }
            if !covered {
                let smp = self.sampler(s.side);
                let mut all = if from_branches {
                    smp.variants_merged(s.v, alt.v)
                } else {
                    let mut v = Vec::new();
                    for name in type_names(alt.types) {
                        v.extend(smp.of_type(
                            s.v,
                            if name == "non-integer number" {
                                "number"
                            } else {
                                name
                            },
                        ));
                    }
                    v.extend(smp.variants(s.v));
                    v
                };
                all.extend(candidates);
                all.extend(self.variants_and_neighbours(s));
                let what = if from_branches {
                    format!("values of {}", alt.ptr)
                } else {
                    "values".to_owned()
                };
                out.push(self.finding(
                    kind,
                    format!("{}/{keyword}", t.ptr),
                    format!(
                        "{what} of the {} match no branch of {keyword} in the {}",
                        self.writer_name(),
                        self.reader_name()
                    ),
                    all,
                ));
            }
        }
        if !exclusive {
            return;
        }
        let old = s.list("oneOf");
        let mut used = vec![false; old.len()];
        let mut unchanged = vec![false; branches.len()];
        for (i, tb) in branches.iter().enumerate() {
            for (j, sb) in old.iter().enumerate() {
                if !used[j] && self.view_equiv(sb, tb) {
                    used[j] = true;
                    unchanged[i] = true;
                    break;
                }
            }
        }
        for i in 0..branches.len() {
            for k in i + 1..branches.len() {
                if unchanged[i] && unchanged[k] {
                    continue;
                }
                if !self.disjoint(&branches[i], &branches[k], 0) {
                    let mut candidates = self.sampler(t.side).variants(branches[i].v);
                    candidates.extend(self.sampler(t.side).variants(branches[k].v));
                    candidates.extend(self.sampler(s.side).variants(s.v));
                    out.push(self.finding(
                        ChangeKind::OneOfOverlap,
                        branches[k].ptr.clone(),
                        format!(
                            "cannot prove that branches {i} and {k} of oneOf in the {} exclude each other, so a value may match both",
                            self.reader_name()
                        ),
                        candidates,
                    ));
                }
            }
        }
    }

    /// Whether no value is an instance of both (false when unknown).
    fn disjoint(&mut self, a: &Node<'a>, b: &Node<'a>, depth: usize) -> bool {
        if depth > 6 {
            return false;
        }
        if let Some(x) = self.pure_ref(a) {
            return self.disjoint(&x, b, depth + 1);
        }
        if let Some(y) = self.pure_ref(b) {
            return self.disjoint(a, &y, depth + 1);
        }
        if a.is_false() || b.is_false() {
            return true;
        }
        if type_bits(a) & type_bits(b) == 0 {
            return true;
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(values) = finite_values(x) {
                let mut all = true;
                for v in values {
                    let in_x = self.valid_at(x.side, &x.ptr, &v) != Some(false);
                    let in_y = self.valid_at(y.side, &y.ptr, &v) != Some(false);
                    if in_x && in_y {
                        all = false;
                        break;
                    }
                }
                if all {
                    return true;
                }
            }
        }
        let ra: BTreeSet<String> = string_list(a.get("required")).into_iter().collect();
        let rb: BTreeSet<String> = string_list(b.get("required")).into_iter().collect();
        if type_bits(a) & type_bits(b) == T_OBJ {
            let pa = a.map("properties");
            let pb = b.map("properties");
            for name in ra.intersection(&rb) {
                let x = pa.iter().find(|(k, _)| k == name);
                let y = pb.iter().find(|(k, _)| k == name);
                if let (Some((_, x)), Some((_, y))) = (x, y)
                    && self.disjoint(x, y, depth + 1)
                {
                    return true;
                }
            }
        }
        false
    }

    // ----- type-specific keywords -------------------------------------------

    fn keywords(&mut self, s: &Node<'a>, t: &Node<'a>, out: &mut Vec<Finding>) {
        let sb = type_bits(s);
        let tb = type_bits(t);
        let missing = sb & !tb;
        if missing != 0 {
            let kind = if sb & tb == 0 {
                ChangeKind::TypeChanged
            } else {
                ChangeKind::TypeNarrowed
            };
            let smp = self.sampler(s.side);
            let mut candidates = Vec::new();
            for name in type_names(missing) {
                match name {
                    "non-integer number" => candidates.extend(
                        smp.numbers_of(s.v, false, &[0.5, 1.5, 2.5, -0.5])
                            .into_iter()
                            .filter(|v| !v.is_i64() && !v.is_u64()),
                    ),
                    "number" => {
                        candidates.extend(smp.of_type(s.v, "integer"));
                        candidates.extend(smp.of_type(s.v, "number"));
                    }
                    other => candidates.extend(smp.of_type(s.v, other)),
                }
            }
            let names = type_names(missing).join(", ");
            out.push(self.finding(
                kind,
                format!("{}/type", t.ptr),
                format!("type {names} {}", self.gone()),
                candidates,
            ));
        }
        let common = sb & tb;
        if let Some(c) = t.get("const") {
            let candidates = self.perturbations(s, |v| v != c);
            out.push(self.finding(
                ChangeKind::ConstAdded,
                format!("{}/const", t.ptr),
                format!(
                    "the {} only allows {c}; the {} allows other values",
                    self.reader_name(),
                    self.writer_name()
                ),
                candidates,
            ));
        } else if let Some(Value::Array(e)) = t.get("enum") {
            let candidates = self.perturbations(s, |v| !e.contains(v));
            out.push(self.finding(
                ChangeKind::EnumAdded,
                format!("{}/enum", t.ptr),
                format!(
                    "the {} only allows {} listed values; the {} allows others",
                    self.reader_name(),
                    e.len(),
                    self.writer_name()
                ),
                candidates,
            ));
        }
        if common & T_STR != 0 {
            self.string_rules(s, t, out);
        }
        if common & (T_INT | T_FRAC) != 0 {
            self.number_rules(s, t, common & T_FRAC == 0, out);
        }
        if common & T_OBJ != 0 {
            self.object_rules(s, t, out);
        }
        if common & T_ARR != 0 {
            self.array_rules(s, t, out);
        }
    }

    /// Writer instances and objects one property away from them.
    fn variants_and_neighbours(&self, s: &Node<'a>) -> Vec<Value> {
        let smp = self.sampler(s.side);
        let mut out = smp.variants(s.v);
        let bases = smp.object_bases(s.v);
        let full = bases.last().cloned().unwrap_or_default();
        for base in &bases {
            for k in base.keys() {
                let mut o = base.clone();
                o.remove(k);
                out.push(Value::Object(o));
            }
            if !base.contains_key("extra") {
                let mut o = base.clone();
                o.insert("extra".into(), json!("x"));
                out.push(Value::Object(o));
            }
            for (k, v) in &full {
                if !base.contains_key(k) {
                    let mut o = base.clone();
                    o.insert(k.clone(), v.clone());
                    out.push(Value::Object(o));
                }
            }
        }
        out
    }

    /// Writer instances changed a little, those passing `keep` first.
    fn perturbations(&self, s: &Node<'a>, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let base = self.sampler(s.side).variants(s.v);
        let mut out: Vec<Value> = Vec::new();
        for v in &base {
            let mut more = vec![v.clone()];
            match v {
                Value::String(x) => {
                    more.push(json!(format!("{x}_x")));
                    more.push(json!("zzzz"));
                    more.push(json!(""));
                }
                Value::Number(n) => {
                    let x = n.as_f64().unwrap_or(0.0);
                    more.extend([
                        number_value(x + 1.0),
                        number_value(x - 1.0),
                        json!(x + 0.5),
                        number_value(987_654.0),
                    ]);
                }
                Value::Bool(b) => more.push(json!(!b)),
                _ => {}
            }
            out.extend(more.into_iter().filter(|m| keep(m)));
        }
        out
    }

    fn string_rules(&mut self, s: &Node<'a>, t: &Node<'a>, out: &mut Vec<Finding>) {
        let s_min = s.u64_of("minLength").unwrap_or(0);
        let s_max = s.u64_of("maxLength");
        let t_min = t.u64_of("minLength").unwrap_or(0);
        if let Some(tm) = t.u64_of("maxLength")
            && s_max.is_none_or(|sm| sm > tm)
        {
            let len = (tm + 1).max(s_min) as usize;
            let (kind, message) = match s_max {
                Some(sm) => (
                    ChangeKind::MaxLengthDecreased,
                    format!(
                        "maxLength {tm} in the {} is below {sm} in the {}",
                        self.reader_name(),
                        self.writer_name()
                    ),
                ),
                None => (
                    ChangeKind::MaxLengthAdded,
                    format!(
                        "maxLength {tm} added; strings of {len} characters {}",
                        self.gone()
                    ),
                ),
            };
            let candidates = self.sampler(s.side).strings_of(s.v, Some(len));
            out.push(self.finding(kind, format!("{}/maxLength", t.ptr), message, candidates));
        }
        if t_min > s_min {
            let (kind, message) = if s.has("minLength") {
                (
                    ChangeKind::MinLengthIncreased,
                    format!(
                        "minLength {t_min} in the {} is above {s_min} in the {}",
                        self.reader_name(),
                        self.writer_name()
                    ),
                )
            } else {
                (
                    ChangeKind::MinLengthAdded,
                    format!(
                        "minLength {t_min} added; strings of {s_min} characters {}",
                        self.gone()
                    ),
                )
            };
            let candidates = self.sampler(s.side).strings_of(s.v, Some(s_min as usize));
            out.push(self.finding(kind, format!("{}/minLength", t.ptr), message, candidates));
        }
        if let Some(tp) = t.str_of("pattern")
            && s.str_of("pattern") != Some(tp)
            && !matches!(tp, "" | ".*" | "^.*$" | "^.*")
        {
            let (kind, message) = match s.str_of("pattern") {
                Some(sp) => (
                    ChangeKind::PatternChanged,
                    format!("cannot prove compatible: pattern changed from {sp:?} to {tp:?}"),
                ),
                None => (ChangeKind::PatternAdded, format!("pattern {tp:?} added")),
            };
            let mut candidates = self.sampler(s.side).strings_of(s.v, None);
            candidates.extend(
                ["", "a", "0", "A", "_", "a b", "zzzzzzzzzzzz", "-1", "A1-b2"]
                    .into_iter()
                    .map(|x| json!(x)),
            );
            let smp = self.sampler(t.side);
            candidates.sort_by_key(|c| {
                c.as_str()
                    .map(|x| smp.pattern_matches(tp, x) != Some(false))
                    .unwrap_or(true)
            });
            out.push(self.finding(kind, format!("{}/pattern", t.ptr), message, candidates));
        }
        if let Some(tf) = t.str_of("format")
            && s.str_of("format") != Some(tf)
            && is_known_format(tf)
        {
            let (kind, message) = match s.str_of("format") {
                Some(sf) => (
                    ChangeKind::FormatChanged,
                    format!("format changed from {sf:?} to {tf:?}"),
                ),
                None => (ChangeKind::FormatAdded, format!("format {tf:?} added")),
            };
            let mut candidates: Vec<Value> = [
                format!("not-a-{tf}"),
                "x".into(),
                String::new(),
                "2024-13-45".into(),
                "a@".into(),
                "999.1.1.1".into(),
            ]
            .into_iter()
            .map(Value::String)
            .collect();
            candidates.extend(self.sampler(s.side).strings_of(s.v, None));
            out.push(self.finding(kind, format!("{}/format", t.ptr), message, candidates));
        }
    }

    fn number_rules(&mut self, s: &Node<'a>, t: &Node<'a>, int_only: bool, out: &mut Vec<Finding>) {
        let empty = Map::new();
        let sm = s.v.as_object().unwrap_or(&empty);
        let tm = t.v.as_object().unwrap_or(&empty);
        let (s_lo, s_hi) = bounds(sm);
        let (t_lo, t_hi) = bounds(tm);
        let int_hi = |(v, excl): (f64, bool)| if excl { v.ceil() - 1.0 } else { v.floor() };
        let int_lo = |(v, excl): (f64, bool)| if excl { v.floor() + 1.0 } else { v.ceil() };
        // upper bound
        if let Some(th) = t_hi {
            let violated = match s_hi {
                None => true,
                Some(sh) if int_only => int_hi(sh) > int_hi(th),
                Some(sh) => sh.0 > th.0 || (sh.0 == th.0 && !sh.1 && th.1),
            };
            if violated {
                let exclusive_binds =
                    th.1 && tm.get("exclusiveMaximum").and_then(Value::as_f64) == Some(th.0);
                let kind = match (
                    exclusive_binds,
                    s.has(if exclusive_binds {
                        "exclusiveMaximum"
                    } else {
                        "maximum"
                    }),
                ) {
                    (true, true) => ChangeKind::ExclusiveMaximumDecreased,
                    (true, false) => ChangeKind::ExclusiveMaximumAdded,
                    (false, true) => ChangeKind::MaximumDecreased,
                    (false, false) => ChangeKind::MaximumAdded,
                };
                let keyword = if exclusive_binds {
                    "exclusiveMaximum"
                } else {
                    "maximum"
                };
                let mut extra = vec![th.0, th.0 + 1.0, th.0.floor() + 1.0, th.0 + 0.5];
                if let Some(sh) = s_hi {
                    extra.extend([sh.0, sh.0 - 0.5, sh.0.ceil() - 1.0, sh.0 - 1.0]);
                }
                let candidates = self.number_candidates(s, int_only, &extra, |x| {
                    !number_ok(&bounds_only(tm), x, false)
                });
                let was = s_hi.map_or("no upper bound".to_owned(), |(v, e)| {
                    format!("{} {v}", if e { "exclusiveMaximum" } else { "maximum" })
                });
                out.push(self.finding(
                    kind,
                    format!("{}/{keyword}", t.ptr),
                    format!(
                        "{keyword} {} in the {} is below {was} in the {}",
                        th.0,
                        self.reader_name(),
                        self.writer_name()
                    ),
                    candidates,
                ));
            }
        }
        if let Some(tl) = t_lo {
            let violated = match s_lo {
                None => true,
                Some(sl) if int_only => int_lo(sl) < int_lo(tl),
                Some(sl) => sl.0 < tl.0 || (sl.0 == tl.0 && !sl.1 && tl.1),
            };
            if violated {
                let exclusive_binds =
                    tl.1 && tm.get("exclusiveMinimum").and_then(Value::as_f64) == Some(tl.0);
                let kind = match (
                    exclusive_binds,
                    s.has(if exclusive_binds {
                        "exclusiveMinimum"
                    } else {
                        "minimum"
                    }),
                ) {
                    (true, true) => ChangeKind::ExclusiveMinimumIncreased,
                    (true, false) => ChangeKind::ExclusiveMinimumAdded,
                    (false, true) => ChangeKind::MinimumIncreased,
                    (false, false) => ChangeKind::MinimumAdded,
                };
                let keyword = if exclusive_binds {
                    "exclusiveMinimum"
                } else {
                    "minimum"
                };
                let mut extra = vec![tl.0, tl.0 - 1.0, tl.0.ceil() - 1.0, tl.0 - 0.5];
                if let Some(sl) = s_lo {
                    extra.extend([sl.0, sl.0 + 0.5, sl.0.floor() + 1.0, sl.0 + 1.0]);
                }
                let candidates = self.number_candidates(s, int_only, &extra, |x| {
                    !number_ok(&bounds_only(tm), x, false)
                });
                let was = s_lo.map_or("no lower bound".to_owned(), |(v, e)| {
                    format!("{} {v}", if e { "exclusiveMinimum" } else { "minimum" })
                });
                out.push(self.finding(
                    kind,
                    format!("{}/{keyword}", t.ptr),
                    format!(
                        "{keyword} {} in the {} is above {was} in the {}",
                        tl.0,
                        self.reader_name(),
                        self.writer_name()
                    ),
                    candidates,
                ));
            }
        }
        if let Some(tmul) = tm.get("multipleOf").and_then(Value::as_f64) {
            let smul = sm.get("multipleOf").and_then(Value::as_f64);
            let ok = (int_only && is_integral(1.0 / tmul))
                || smul.is_some_and(|m| is_integral(m / tmul));
            if !ok {
                let kind = if smul.is_some() {
                    ChangeKind::MultipleOfChanged
                } else {
                    ChangeKind::MultipleOfAdded
                };
                let mut extra = vec![1.0, 0.5, tmul / 2.0, tmul + 1.0, 1.5, 7.0, 13.0];
                if let Some(m) = smul {
                    extra.splice(0..0, [m, 2.0 * m, 3.0 * m, 5.0 * m]);
                }
                let candidates =
                    self.number_candidates(s, int_only, &extra, |x| !is_integral(x / tmul));
                let message = match smul {
                    Some(m) => format!("multipleOf changed from {m} to {tmul}"),
                    None => format!("multipleOf {tmul} added"),
                };
                out.push(self.finding(kind, format!("{}/multipleOf", t.ptr), message, candidates));
            }
        }
    }

    fn number_candidates(
        &self,
        s: &Node<'a>,
        int_only: bool,
        extra: &[f64],
        violates: impl Fn(f64) -> bool,
    ) -> Vec<Value> {
        let extra: Vec<f64> = extra
            .iter()
            .copied()
            .filter(|x| x.is_finite() && violates(*x) && (!int_only || x.fract() == 0.0))
            .collect();
        self.sampler(s.side)
            .numbers_of(s.v, int_only, &extra)
            .into_iter()
            .filter(|v| v.as_f64().is_some_and(&violates))
            .collect()
    }

    // ----- objects ------------------------------------------------------------

    fn obj_view(&self, n: &Node<'a>) -> ObjView<'a> {
        let props = n.map("properties");
        let patterns = n.map("patternProperties");
        let additional = if let Some(v) = n.get("additionalProperties") {
            n.child("additionalProperties", v)
        } else if let Some(v) = n.get("unevaluatedProperties")
            && !has_applicators(n.v, false)
        {
            n.child("unevaluatedProperties", v)
        } else {
            Node {
                v: &TRUE_SCHEMA,
                ptr: format!("{}/additionalProperties", n.ptr),
                skip: 0,
                side: n.side,
                types: T_ALL,
            }
        };
        ObjView {
            props,
            patterns,
            additional,
            required: string_list(n.get("required")),
        }
    }

    /// The writer subschemas that all apply to property `name`, the main one first.
    fn writer_props(&self, view: &ObjView<'a>, side: Side, name: &str) -> Vec<Node<'a>> {
        let Some((_, n)) = view.props.iter().find(|(k, _)| k == name) else {
            return vec![self.writer_prop(view, side, name)];
        };
        let mut out = vec![n.clone()];
        for (pattern, n) in &view.patterns {
            if self.sampler(side).pattern_matches(pattern, name) == Some(true) {
                out.push(n.clone());
            }
        }
        out
    }

    fn writer_prop(&self, view: &ObjView<'a>, side: Side, name: &str) -> Node<'a> {
        if let Some((_, n)) = view.props.iter().find(|(k, _)| k == name) {
            return n.clone();
        }
        for (pattern, n) in &view.patterns {
            match self.sampler(side).pattern_matches(pattern, name) {
                Some(true) => return n.clone(),
                Some(false) => {}
                None => {
                    return Node {
                        v: &TRUE_SCHEMA,
                        ptr: n.ptr.clone(),
                        skip: 0,
                        side,
                        types: T_ALL,
                    };
                }
            }
        }
        view.additional.clone()
    }

    fn reader_prop(&self, view: &ObjView<'a>, side: Side, name: &str) -> Vec<Node<'a>> {
        let mut out = Vec::new();
        let mut covered = false;
        if let Some((_, n)) = view.props.iter().find(|(k, _)| k == name) {
            out.push(n.clone());
            covered = true;
        }
        for (pattern, n) in &view.patterns {
            match self.sampler(side).pattern_matches(pattern, name) {
                Some(true) => {
                    out.push(n.clone());
                    covered = true;
                }
                Some(false) => {}
                None => out.push(n.clone()),
            }
        }
        if !covered {
            out.push(view.additional.clone());
        }
        out
    }

    fn with_property(&self, s: &Node<'a>, name: &str, values: &[Value]) -> Vec<Value> {
        let bases = self.sampler(s.side).object_bases(s.v);
        let mut out = Vec::new();
        for v in values.iter().take(8) {
            for base in &bases {
                let mut o = base.clone();
                o.insert(name.to_owned(), v.clone());
                out.push(Value::Object(o));
            }
        }
        out.truncate(MAX_CANDIDATES * 2);
        out
    }

    fn wrap_property(&self, s: &Node<'a>, name: &str, found: Vec<Finding>) -> Vec<Finding> {
        found
            .into_iter()
            .map(|mut f| {
                f.candidates = self.with_property(s, name, &f.candidates);
                f
            })
            .collect()
    }

    fn object_rules(&mut self, s: &Node<'a>, t: &Node<'a>, out: &mut Vec<Finding>) {
        let sv = self.obj_view(s);
        let tv = self.obj_view(t);
        let names: BTreeSet<String> = sv
            .props
            .iter()
            .chain(tv.props.iter())
            .map(|(k, _)| k.clone())
            .collect();
        for name in &names {
            let ses = self.writer_props(&sv, s.side, name);
            let se = ses[0].clone();
            let tes = self.reader_prop(&tv, t.side, name);
            let mut found = Vec::new();
            for te in &tes {
                let first = self.subset(&se, te);
                if first.is_empty() {
                    continue;
                }
                // the writer's value meets every subschema in `ses`: one suffices
                let mut proved = false;
                for other in &ses[1..] {
                    if self.subset(other, te).is_empty() {
                        proved = true;
                        break;
                    }
                }
                if !proved {
                    found.extend(first);
                }
            }
            if found.is_empty() {
                continue;
            }
            let in_s = sv.props.iter().any(|(k, _)| k == name);
            let in_t = tv.props.iter().any(|(k, _)| k == name);
            let path = format!("{}/properties/{}", t.ptr, escape(name));
            if in_s && in_t {
                out.extend(self.wrap_property(s, name, found));
                continue;
            }
            let mut values: Vec<Value> = found
                .into_iter()
                .flat_map(|f| f.candidates)
                .take(8)
                .collect();
            if in_t {
                let open = self.accepts_all(&se);
                if open && self.opts.optional_friendly && !tv.required.contains(name) {
                    continue;
                }
                values.extend([
                    json!(null),
                    json!(0),
                    json!("x"),
                    json!(true),
                    json!({}),
                    json!([]),
                    json!(12345.5),
                    json!("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"),
                ]);
                let candidates = self.with_property(s, name, &values);
                let (kind, message) = if open {
                    (
                        ChangeKind::PropertyAddedToOpenContentModel,
                        format!(
                            "property \"{name}\" added to an open content model: documents of the {} may carry \"{name}\" with any value",
                            self.writer_name()
                        ),
                    )
                } else {
                    (
                        ChangeKind::PropertyAddedNotCoveredByPartiallyOpenContentModel,
                        format!(
                            "property \"{name}\" added, and its schema does not cover what the partially open content model of the {} allowed for it",
                            self.writer_name()
                        ),
                    )
                };
                out.push(self.finding(kind, path, message, candidates));
            } else {
                values.extend(self.sampler(s.side).variants(se.v));
                let candidates = self.with_property(s, name, &values);
                let closed = tes.len() == 1 && tes[0].is_false();
                let (kind, message) = if closed {
                    (
                        ChangeKind::PropertyRemovedFromClosedContentModel,
                        format!(
                            "property \"{name}\" removed from a closed content model; documents carrying it are rejected"
                        ),
                    )
                } else {
                    (
                        ChangeKind::PropertyRemovedNotCoveredByPartiallyOpenContentModel,
                        format!(
                            "property \"{name}\" removed, and the partially open content model of the {} does not cover its values",
                            self.reader_name()
                        ),
                    )
                };
                out.push(self.finding(kind, path, message, candidates));
            }
        }
        // required
        for r in &tv.required {
            if sv.required.contains(r) {
                continue;
            }
            let has_default = tv
                .props
                .iter()
                .find(|(k, _)| k == r)
                .is_some_and(|(_, n)| n.v.get("default").is_some());
            if has_default {
                // Confluent's rule: a required property with a default is accepted.
                continue;
            }
            let candidates = self
                .sampler(s.side)
                .object_bases(s.v)
                .into_iter()
                .map(|mut o| {
                    o.remove(r);
                    Value::Object(o)
                })
                .collect();
            out.push(self.finding(
                ChangeKind::RequiredAdded,
                format!("{}/required", t.ptr),
                format!("property \"{r}\" is now required and has no default"),
                candidates,
            ));
        }
        self.extra_names(s, t, &sv, &tv, &names, out);
        self.property_names(s, t, &sv, out);
        // sizes
        let s_max = s.u64_of("maxProperties");
        if let Some(tm) = t.u64_of("maxProperties")
            && s_max.is_none_or(|sm| sm > tm)
        {
            let kind = if s_max.is_some() {
                ChangeKind::MaxPropertiesDecreased
            } else {
                ChangeKind::MaxPropertiesAdded
            };
            let candidates = self.sampler(s.side).object_with(s.v, (tm + 1) as usize);
            out.push(self.finding(
                kind,
                format!("{}/maxProperties", t.ptr),
                format!("objects with more than {tm} properties {}", self.gone()),
                candidates,
            ));
        }
        let s_min = s.u64_of("minProperties").unwrap_or(0);
        if let Some(tm) = t.u64_of("minProperties")
            && tm > s_min
        {
            let kind = if s.has("minProperties") {
                ChangeKind::MinPropertiesIncreased
            } else {
                ChangeKind::MinPropertiesAdded
            };
            let candidates = self.sampler(s.side).object_with(s.v, s_min as usize);
            out.push(self.finding(
                kind,
                format!("{}/minProperties", t.ptr),
                format!("objects with fewer than {tm} properties {}", self.gone()),
                candidates,
            ));
        }
        // dependentRequired
        if let Some(Value::Object(deps)) = t.get("dependentRequired") {
            let s_deps = s.get("dependentRequired").and_then(Value::as_object);
            for (key, needed) in deps {
                let have = string_list(s_deps.and_then(|d| d.get(key)));
                let missing: Vec<String> = string_list(Some(needed))
                    .into_iter()
                    .filter(|d| !have.contains(d) && !sv.required.contains(d))
                    .collect();
                if missing.is_empty() || self.writer_prop(&sv, s.side, key).is_false() {
                    continue;
                }
                let smp = self.sampler(s.side);
                let value = smp.property_value(s.v, key);
                let candidates = smp
                    .object_bases(s.v)
                    .into_iter()
                    .map(|mut o| {
                        o.insert(key.clone(), value.clone());
                        for m in &missing {
                            o.remove(m);
                        }
                        Value::Object(o)
                    })
                    .collect();
                out.push(self.finding(
                    ChangeKind::DependentRequiredAdded,
                    format!("{}/dependentRequired/{}", t.ptr, escape(key)),
                    format!("when \"{key}\" is present, {missing:?} are now required"),
                    candidates,
                ));
            }
        }
    }

    /// Property names declared on neither side: patternProperties and additionalProperties.
    fn extra_names(
        &mut self,
        s: &Node<'a>,
        t: &Node<'a>,
        sv: &ObjView<'a>,
        tv: &ObjView<'a>,
        declared: &BTreeSet<String>,
        out: &mut Vec<Finding>,
    ) {
        if tv.patterns.is_empty() && self.accepts_all(&tv.additional) {
            return;
        }
        let extra = self.extra_name(sv, tv, declared);
        let s_keys: BTreeSet<&str> = sv.patterns.iter().map(|(k, _)| k.as_str()).collect();
        let t_keys: BTreeSet<&str> = tv.patterns.iter().map(|(k, _)| k.as_str()).collect();
        if s_keys == t_keys || tv.patterns.is_empty() {
            let mut narrowed = Vec::new();
            if s_keys == t_keys {
                for (pattern, sp) in &sv.patterns {
                    let Some((_, tp)) = tv.patterns.iter().find(|(k, _)| k == pattern) else {
                        continue;
                    };
                    let found = self.subset(sp, tp);
                    if !found.is_empty() {
                        let name = self.name_for_pattern(pattern, s.side);
                        out.extend(self.wrap_property(s, &name, found));
                    }
                }
            } else {
                for (pattern, sp) in &sv.patterns {
                    let found = self.subset(sp, &tv.additional);
                    if !found.is_empty() {
                        let name = self.name_for_pattern(pattern, s.side);
                        narrowed.extend(self.wrap_property(s, &name, found));
                    }
                }
            }
            if !sv.additional.is_false() {
                let found = self.subset(&sv.additional, &tv.additional);
                narrowed.extend(self.wrap_property(s, &extra, found));
            }
            if narrowed.is_empty() {
                return;
            }
            let mut candidates: Vec<Value> =
                narrowed.iter().flat_map(|f| f.candidates.clone()).collect();
            let values = self.sampler(s.side).variants(sv.additional.v);
            candidates.extend(self.with_property(s, &extra, &values));
            let (kind, message) = if tv.additional.is_false() {
                (
                    ChangeKind::AdditionalPropertiesRemoved,
                    format!(
                        "additionalProperties is false in the {}; undeclared properties {}",
                        self.reader_name(),
                        self.gone()
                    ),
                )
            } else {
                (
                    ChangeKind::AdditionalPropertiesNarrowed,
                    format!(
                        "additionalProperties of the {} is narrower: {}",
                        self.reader_name(),
                        narrowed[0].message
                    ),
                )
            };
            out.push(self.finding(kind, tv.additional.ptr.clone(), message, candidates));
            return;
        }
        if sv.additional.is_false() && sv.patterns.is_empty() {
            return;
        }
        let mut candidates = Vec::new();
        for (pattern, sp) in &sv.patterns {
            let name = self.name_for_pattern(pattern, s.side);
            let values = self.sampler(s.side).variants(sp.v);
            candidates.extend(self.with_property(s, &name, &values));
        }
        let values = self.sampler(s.side).variants(sv.additional.v);
        candidates.extend(self.with_property(s, &extra, &values));
        out.push(self.finding(
            ChangeKind::PatternPropertiesChanged,
            format!("{}/patternProperties", t.ptr),
            format!(
                "cannot prove compatible: patternProperties of the {} differ from those of the {}",
                self.reader_name(),
                self.writer_name()
            ),
            candidates,
        ));
    }

    fn name_for_pattern(&self, pattern: &str, side: Side) -> String {
        let smp = self.sampler(side);
        pattern_samples(pattern)
            .into_iter()
            .find(|n| smp.pattern_matches(pattern, n) == Some(true))
            .unwrap_or_else(|| "x".to_owned())
    }

    fn extra_name(
        &self,
        sv: &ObjView<'a>,
        tv: &ObjView<'a>,
        declared: &BTreeSet<String>,
    ) -> String {
        for candidate in ["extra", "extra_1", "zz_extra", "x-extra", "_", "Z9"] {
            if declared.contains(candidate) {
                continue;
            }
            let clash = sv
                .patterns
                .iter()
                .map(|(p, n)| (p, n.side))
                .chain(tv.patterns.iter().map(|(p, n)| (p, n.side)))
                .any(|(p, side)| self.sampler(side).pattern_matches(p, candidate) != Some(false));
            if !clash {
                return candidate.to_owned();
            }
        }
        "extra".to_owned()
    }

    fn property_names(
        &mut self,
        s: &Node<'a>,
        t: &Node<'a>,
        sv: &ObjView<'a>,
        out: &mut Vec<Finding>,
    ) {
        let Some(tpn) = t.get("propertyNames") else {
            return;
        };
        let tn = t.child("propertyNames", tpn);
        if self.accepts_all(&tn) {
            return;
        }
        let mut bad: Vec<String> = Vec::new();
        let mut proved = false;
        if sv.additional.is_false() && sv.patterns.is_empty() {
            proved = true;
            for (name, _) in &sv.props {
                if self.valid_at(t.side, &tn.ptr, &json!(name)) != Some(true) {
                    bad.push(name.clone());
                    proved = false;
                }
            }
        }
        if !proved && bad.is_empty() {
            let sn = match s.get("propertyNames") {
                Some(v) => s.child("propertyNames", v),
                None => Node {
                    v: &STRING_SCHEMA,
                    ptr: format!("{}/propertyNames", s.ptr),
                    skip: 0,
                    side: s.side,
                    types: T_ALL,
                },
            };
            let found = self.subset(&sn, &tn);
            if found.is_empty() {
                return;
            }
            bad.extend(
                found
                    .into_iter()
                    .flat_map(|f| f.candidates)
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .take(8),
            );
            bad.extend(["X", "1", "a-b", "_"].map(str::to_owned));
        }
        if proved {
            return;
        }
        let mut candidates = Vec::new();
        for name in &bad {
            let value = self.sampler(s.side).property_value(s.v, name);
            candidates.extend(self.with_property(s, name, &[value]));
        }
        out.push(self.finding(
            ChangeKind::PropertyNamesNarrowed,
            tn.ptr.clone(),
            format!(
                "propertyNames of the {} rejects names the {} allows",
                self.reader_name(),
                self.writer_name()
            ),
            candidates,
        ));
    }

    // ----- arrays -------------------------------------------------------------

    fn array_tail(&self, n: &Node<'a>) -> Node<'a> {
        if let Some(v) = n.get("items") {
            n.child("items", v)
        } else if let Some(v) = n.get("unevaluatedItems")
            && !has_applicators(n.v, true)
        {
            n.child("unevaluatedItems", v)
        } else {
            Node {
                v: &TRUE_SCHEMA,
                ptr: format!("{}/items", n.ptr),
                skip: 0,
                side: n.side,
                types: T_ALL,
            }
        }
    }

    fn array_rules(&mut self, s: &Node<'a>, t: &Node<'a>, out: &mut Vec<Finding>) {
        let s_prefix = s.list("prefixItems");
        let t_prefix = t.list("prefixItems");
        let s_items = self.array_tail(s);
        let t_items = self.array_tail(t);
        let s_max = s.u64_of("maxItems").map(|m| m as usize);
        let n = s_prefix.len().max(t_prefix.len());
        for i in 0..=n {
            if s_max.is_some_and(|m| i >= m) {
                break;
            }
            let si = s_prefix.get(i).unwrap_or(&s_items);
            if si.is_false() {
                break;
            }
            let ti = t_prefix.get(i).unwrap_or(&t_items);
            let found = self.subset(si, ti);
            if found.is_empty() {
                continue;
            }
            let smp = self.sampler(s.side);
            if i >= t_prefix.len() && ti.is_false() {
                let mut candidates = smp.array_of_len(s.v, i + 1);
                for c in found.into_iter().flat_map(|f| f.candidates).take(4) {
                    candidates.extend(smp.array_with(s.v, i, &c));
                }
                out.push(self.finding(
                    ChangeKind::AdditionalItemsRemoved,
                    ti.ptr.clone(),
                    format!("arrays longer than {i} items {}", self.gone()),
                    candidates,
                ));
            } else {
                for mut f in found {
                    let mut candidates = Vec::new();
                    for c in f.candidates.iter().take(8) {
                        candidates.extend(smp.array_with(s.v, i, c));
                    }
                    f.candidates = candidates;
                    out.push(f);
                }
            }
        }
        let s_max_items = s.u64_of("maxItems");
        if let Some(tm) = t.u64_of("maxItems")
            && s_max_items.is_none_or(|sm| sm > tm)
        {
            let kind = if s_max_items.is_some() {
                ChangeKind::MaxItemsDecreased
            } else {
                ChangeKind::MaxItemsAdded
            };
            let candidates = self.sampler(s.side).array_of_len(s.v, (tm + 1) as usize);
            out.push(self.finding(
                kind,
                format!("{}/maxItems", t.ptr),
                format!("arrays with more than {tm} items {}", self.gone()),
                candidates,
            ));
        }
        let s_min = s.u64_of("minItems").unwrap_or(0);
        if let Some(tm) = t.u64_of("minItems")
            && tm > s_min
        {
            let kind = if s.has("minItems") {
                ChangeKind::MinItemsIncreased
            } else {
                ChangeKind::MinItemsAdded
            };
            let candidates = self.sampler(s.side).array_of_len(s.v, s_min as usize);
            out.push(self.finding(
                kind,
                format!("{}/minItems", t.ptr),
                format!("arrays with fewer than {tm} items {}", self.gone()),
                candidates,
            ));
        }
        if t.get("uniqueItems") == Some(&Value::Bool(true))
            && s.get("uniqueItems") != Some(&Value::Bool(true))
        {
            let smp = self.sampler(s.side);
            let mut candidates = Vec::new();
            for arr in smp.array_of_len(s.v, (s_min as usize).max(2)) {
                if let Value::Array(mut items) = arr
                    && items.len() >= 2
                {
                    items[1] = items[0].clone();
                    candidates.push(Value::Array(items));
                }
            }
            out.push(self.finding(
                ChangeKind::UniqueItemsAdded,
                format!("{}/uniqueItems", t.ptr),
                format!("arrays with repeated items {}", self.gone()),
                candidates,
            ));
        }
        if let Some(tc) = t.get("contains") {
            let tcn = t.child("contains", tc);
            let t_min = t.u64_of("minContains").unwrap_or(1);
            let t_max = t.u64_of("maxContains");
            if t_min == 0 && t_max.is_none() {
                return;
            }
            let mut ok = false;
            if let Some(sc) = s.get("contains") {
                let scn = s.child("contains", sc);
                let equal = self.view_equiv(&scn, &tcn);
                let s_minc = s.u64_of("minContains").unwrap_or(1);
                let s_maxc = s.u64_of("maxContains");
                ok = (equal || self.subset(&scn, &tcn).is_empty())
                    && s_minc >= t_min
                    && t_max.is_none_or(|tm| equal && s_maxc.is_some_and(|sm| sm <= tm));
            }
            if !ok {
                let kind = if s.has("contains") {
                    ChangeKind::ContainsNarrowed
                } else {
                    ChangeKind::ContainsAdded
                };
                let smp = self.sampler(s.side);
                let mut candidates = vec![json!([])];
                for len in [s_min as usize, s_min as usize + 1, s_min as usize + 3] {
                    candidates.extend(smp.array_of_len(s.v, len));
                }
                out.push(self.finding(
                    kind,
                    tcn.ptr.clone(),
                    format!(
                        "contains of the {} may reject arrays the {} accepts",
                        self.reader_name(),
                        self.writer_name()
                    ),
                    candidates,
                ));
            }
        }
    }
}

struct ObjView<'a> {
    props: Vec<(String, Node<'a>)>,
    patterns: Vec<(String, Node<'a>)>,
    additional: Node<'a>,
    required: Vec<String>,
}

/// The JSON types a subschema admits, from `type`, `const` and `enum`.
fn type_bits(n: &Node<'_>) -> u8 {
    if n.is_false() {
        return 0;
    }
    let mut bits = n.types
        & match n.get("type") {
            Some(Value::String(t)) => type_bit(t),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .map(type_bit)
                .fold(0, |a, b| a | b),
            _ => T_ALL,
        };
    if let Some(c) = n.get("const") {
        bits &= value_type_bits(c);
    } else if let Some(Value::Array(e)) = n.get("enum") {
        bits &= e.iter().map(value_type_bits).fold(0, |a, b| a | b);
    }
    bits
}

/// The values of a writer with finitely many: `const`, `enum`, or only null/boolean types.
fn finite_values(n: &Node<'_>) -> Option<Vec<Value>> {
    let keep = |v: &Value| value_type_bits(v) & n.types != 0;
    if let Some(c) = n.get("const") {
        return Some(vec![c.clone()].into_iter().filter(keep).collect());
    }
    if let Some(Value::Array(e)) = n.get("enum") {
        return Some(e.iter().filter(|v| keep(v)).cloned().collect());
    }
    if n.has("type") {
        let bits = type_bits(n);
        if bits != 0 && bits & !(T_NULL | T_BOOL) == 0 {
            let mut out = Vec::new();
            if bits & T_NULL != 0 {
                out.push(Value::Null);
            }
            if bits & T_BOOL != 0 {
                out.extend([json!(false), json!(true)]);
            }
            return Some(out);
        }
    }
    None
}

/// Keywords that make `unevaluated*` depend on other subschemas.
fn has_applicators(v: &Value, items: bool) -> bool {
    let Some(m) = v.as_object() else {
        return false;
    };
    let mut keys = vec![
        "$ref",
        "$dynamicRef",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "dependentSchemas",
    ];
    if items {
        keys.push("contains");
    }
    keys.iter().any(|k| m.contains_key(*k))
}

fn bounds_only(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn is_known_format(f: &str) -> bool {
    matches!(
        f,
        "date"
            | "date-time"
            | "time"
            | "duration"
            | "email"
            | "idn-email"
            | "hostname"
            | "idn-hostname"
            | "ipv4"
            | "ipv6"
            | "uri"
            | "iri"
            | "uri-reference"
            | "iri-reference"
            | "uri-template"
            | "uuid"
            | "json-pointer"
            | "relative-json-pointer"
            | "regex"
    )
}

/// A JSON pointer as a URI fragment (percent-encoding what a fragment may not hold).
fn pointer_fragment(ptr: &str) -> String {
    let mut out = String::new();
    for b in ptr.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(v: Value) -> Schema {
        Schema::from_value(v).expect("schema")
    }

    #[test]
    fn subschema_validators_resolve_references_in_their_document() {
        let s = schema(json!({
            "$defs": {"short": {"type": "string", "maxLength": 2}},
            "properties": {"a b": {"$ref": "#/$defs/short"}}
        }));
        let mut c = Checker::new(&s, &s, Direction::Backward, CheckOptions::default());
        assert_eq!(
            c.valid_at(Side::Reader, "/properties/a b", &json!("ab")),
            Some(true)
        );
        assert_eq!(
            c.valid_at(Side::Reader, "/properties/a b", &json!("abc")),
            Some(false)
        );
        assert_eq!(c.valid_at(Side::Reader, "/nowhere", &json!(1)), None);
        assert_eq!(pointer_fragment("/properties/a b"), "/properties/a%20b");
    }

    #[test]
    fn recursive_schemas_terminate() {
        let a = schema(
            json!({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}, "v": {"type": "integer"}}}}, "$ref": "#/$defs/n"}),
        );
        let b = schema(
            json!({"$defs": {"m": {"type": "object", "properties": {"v": {"type": "number"}, "next": {"$ref": "#/$defs/m"}}}}, "$ref": "#/$defs/m"}),
        );
        assert!(
            Checker::new(&a, &b, Direction::Backward, CheckOptions::default())
                .run()
                .is_empty()
        );
        let back = Checker::new(&b, &a, Direction::Backward, CheckOptions::default()).run();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].kind, ChangeKind::TypeNarrowed);
        // the counterexample goes one level down before the type narrows
        assert!(back[0].counterexample.is_some());
    }

    #[test]
    fn disjointness() {
        let s = schema(json!({"$defs": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "ka": {"type": "object", "required": ["k"], "properties": {"k": {"const": "a"}}},
            "kb": {"type": "object", "required": ["k"], "properties": {"k": {"enum": ["b", "c"]}}},
            "kc": {"type": "object", "required": ["k"], "properties": {"k": {"enum": ["c"]}}}
        }}));
        let mut c = Checker::new(&s, &s, Direction::Backward, CheckOptions::default());
        let node = |name: &str| Node {
            v: s.assertions()
                .pointer(&format!("/$defs/{name}"))
                .expect("def"),
            ptr: format!("/$defs/{name}"),
            skip: 0,
            side: Side::Reader,
            types: T_ALL,
        };
        assert!(c.disjoint(&node("s"), &node("i"), 0));
        assert!(!c.disjoint(&node("i"), &node("n"), 0));
        assert!(c.disjoint(&node("ka"), &node("kb"), 0));
        assert!(!c.disjoint(&node("kb"), &node("kc"), 0));
    }
}
