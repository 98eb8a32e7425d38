//! Generator of small instances of a schema, used to build counterexamples.
//!
//! The generator is best effort: it flattens `$ref` and `allOf`, picks
//! `anyOf`/`oneOf` branches, and produces a few candidates per schema. Every
//! document it helps build is checked with the real validators before it is
//! shown to anyone.

use std::cell::RefCell;
use std::collections::HashMap;

use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{Map, Value, json};

use crate::schema::Schema;

const MAX_DEPTH: usize = 10;
const MAX_VARIANTS: usize = 8;

/// Instances of the subschemas of one schema document.
pub(crate) struct Sampler<'a> {
    schema: &'a Schema,
    patterns: RefCell<HashMap<String, Option<jsonschema::Validator>>>,
}

impl<'a> Sampler<'a> {
    pub(crate) fn new(schema: &'a Schema) -> Self {
        Self {
            schema,
            patterns: RefCell::new(HashMap::new()),
        }
    }

    /// Whether `text` matches an ECMA-262 `pattern` as the validator sees it;
    /// `None` when the pattern cannot be compiled.
    pub(crate) fn pattern_matches(&self, pattern: &str, text: &str) -> Option<bool> {
        let mut cache = self.patterns.borrow_mut();
        let validator = cache.entry(pattern.to_owned()).or_insert_with(|| {
            jsonschema::draft202012::options()
                .build(&json!({"pattern": pattern}))
                .ok()
        });
        validator
            .as_ref()
            .map(|v| v.is_valid(&Value::String(text.to_owned())))
    }

    /// Flattens `$ref` and `allOf` into one keyword map; `None` for `false`.
    pub(crate) fn flatten(&self, v: &Value) -> Option<Map<String, Value>> {
        self.flatten_at(v, 0)
    }

    fn flatten_at(&self, v: &Value, depth: usize) -> Option<Map<String, Value>> {
        match v {
            Value::Bool(false) => None,
            Value::Object(o) if depth <= MAX_DEPTH => {
                let mut m: Map<String, Value> = o
                    .iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "$ref" | "allOf" | "$defs" | "definitions")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if let Some(Value::String(r)) = o.get("$ref")
                    && let Some((_, target)) = self.schema.resolve(r)
                {
                    merge(&mut m, self.flatten_at(target, depth + 1)?);
                }
                if let Some(Value::Array(parts)) = o.get("allOf") {
                    for part in parts {
                        merge(&mut m, self.flatten_at(part, depth + 1)?);
                    }
                }
                Some(m)
            }
            _ => Some(Map::new()),
        }
    }

    /// The preferred instance of a subschema (`null` when none is known).
    pub(crate) fn sample(&self, v: &Value) -> Value {
        self.variants(v).into_iter().next().unwrap_or(Value::Null)
    }

    /// A few candidate instances of a subschema, preferred first.
    pub(crate) fn variants(&self, v: &Value) -> Vec<Value> {
        self.variants_at(v, 0)
    }

    fn variants_at(&self, v: &Value, depth: usize) -> Vec<Value> {
        match self.flatten_at(v, depth) {
            Some(m) => self.map_variants(&m, depth),
            None => Vec::new(),
        }
    }

    /// Candidates of `base` (without its `anyOf`/`oneOf`) merged with `extra`.
    pub(crate) fn variants_merged(&self, base: &Value, extra: &Value) -> Vec<Value> {
        let Some(mut m) = self.flatten(base) else {
            return Vec::new();
        };
        m.remove("anyOf");
        m.remove("oneOf");
        match self.flatten(extra) {
            Some(e) => {
                merge(&mut m, e);
                self.map_variants(&m, 0)
            }
            None => Vec::new(),
        }
    }

    fn map_variants(&self, m: &Map<String, Value>, depth: usize) -> Vec<Value> {
        if depth > MAX_DEPTH {
            return vec![Value::Null];
        }
        if let Some(c) = m.get("const") {
            return vec![c.clone()];
        }
        if let Some(Value::Array(values)) = m.get("enum") {
            return values.iter().take(MAX_VARIANTS).cloned().collect();
        }
        for combinator in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = m.get(combinator) {
                let mut rest = m.clone();
                rest.remove("anyOf");
                rest.remove("oneOf");
                let mut out = Vec::new();
                for branch in branches.iter().take(4) {
                    if let Some(b) = self.flatten_at(branch, depth + 1) {
                        let mut merged = rest.clone();
                        merge(&mut merged, b);
                        out.extend(self.map_variants(&merged, depth + 1).into_iter().take(2));
                    }
                }
                return out;
            }
        }
        let mut out = Vec::new();
        for ty in types_of(m) {
            out.extend(self.type_variants(m, ty, depth).into_iter().take(3));
        }
        out.truncate(MAX_VARIANTS);
        out
    }

    /// Candidates of one JSON type for a subschema.
    pub(crate) fn of_type(&self, v: &Value, ty: &str) -> Vec<Value> {
        match self.flatten(v) {
            Some(m) => self.type_variants(&m, ty, 0),
            None => Vec::new(),
        }
    }

    fn type_variants(&self, m: &Map<String, Value>, ty: &str, depth: usize) -> Vec<Value> {
        match ty {
            "null" => vec![Value::Null],
            "boolean" => vec![json!(false), json!(true)],
            "integer" => numbers(m, true, &[]),
            "number" => {
                let mut v = numbers(m, false, &[]);
                v.extend(
                    numbers(m, false, &[0.5, 1.5])
                        .into_iter()
                        .filter(|x| !x.is_i64()),
                );
                v
            }
            "string" => self
                .strings(m, None)
                .into_iter()
                .map(Value::String)
                .collect(),
            "object" => self
                .objects(m, depth)
                .into_iter()
                .map(Value::Object)
                .collect(),
            "array" => self.arrays(m, depth),
            _ => Vec::new(),
        }
    }

    /// Number candidates of a subschema, `extra` values tried as well.
    pub(crate) fn numbers_of(&self, v: &Value, int_only: bool, extra: &[f64]) -> Vec<Value> {
        match self.flatten(v) {
            Some(m) => numbers(&m, int_only, extra),
            None => Vec::new(),
        }
    }

    /// String candidates of a subschema, of length `len` when given (best effort).
    pub(crate) fn strings_of(&self, v: &Value, len: Option<usize>) -> Vec<Value> {
        match self.flatten(v) {
            Some(m) => self
                .strings(&m, len)
                .into_iter()
                .map(Value::String)
                .collect(),
            None => Vec::new(),
        }
    }

    fn strings(&self, m: &Map<String, Value>, len: Option<usize>) -> Vec<String> {
        let min = m.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
        let max = m
            .get("maxLength")
            .and_then(Value::as_u64)
            .map(|x| x as usize);
        let mut out = Vec::new();
        if let Some(f) = m.get("format").and_then(Value::as_str)
            && let Some(s) = format_sample(f)
        {
            out.push(s.to_owned());
        }
        if let Some(p) = m.get("pattern").and_then(Value::as_str) {
            let mut generated = pattern_samples(p);
            generated.retain(|s| self.pattern_matches(p, s) != Some(false));
            if let Some(n) = len {
                generated.sort_by_key(|s| s.chars().count().abs_diff(n));
            }
            out.extend(generated);
        }
        let lengths: Vec<usize> = match len {
            Some(n) => vec![n],
            None => {
                let first = max.map_or(min.max(1), |mx| min.max(1).min(mx));
                vec![first, min, min + 1, max.unwrap_or(min + 3)]
            }
        };
        for n in lengths {
            let s = "a".repeat(n);
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out.retain(|s| {
            let n = s.chars().count();
            len.is_some() || (n >= min && max.is_none_or(|mx| n <= mx))
        });
        out.truncate(MAX_VARIANTS);
        out
    }

    fn objects(&self, m: &Map<String, Value>, depth: usize) -> Vec<Map<String, Value>> {
        let props = m.get("properties").and_then(Value::as_object);
        let required: Vec<String> = string_list(m.get("required"));
        let mut minimal = Map::new();
        for r in &required {
            minimal.insert(r.clone(), self.prop_sample(m, r, depth));
        }
        self.close_dependencies(m, &mut minimal, depth);
        let min_props = m.get("minProperties").and_then(Value::as_u64).unwrap_or(0) as usize;
        let mut full = minimal.clone();
        if let Some(props) = props {
            for name in props.keys() {
                if !full.contains_key(name) {
                    full.insert(name.clone(), self.prop_sample(m, name, depth));
                }
            }
            self.close_dependencies(m, &mut full, depth);
        }
        let mut out = Vec::new();
        for mut o in [minimal, full] {
            self.fill_to(m, &mut o, min_props, depth);
            if !out.contains(&o) {
                out.push(o);
            }
        }
        out
    }

    /// Adds properties (declared ones first, then `extraN`) until there are `n`.
    fn fill_to(&self, m: &Map<String, Value>, o: &mut Map<String, Value>, n: usize, depth: usize) {
        if o.len() >= n {
            return;
        }
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            for name in props.keys() {
                if o.len() >= n {
                    return;
                }
                if !o.contains_key(name) {
                    o.insert(name.clone(), self.prop_sample(m, name, depth));
                }
            }
        }
        let mut i = 1;
        while o.len() < n && i < 64 {
            let name = format!("extra{i}");
            if !o.contains_key(&name) {
                let v = self.prop_sample(m, &name, depth);
                o.insert(name, v);
            }
            i += 1;
        }
    }

    /// An object instance of a subschema with exactly `n` properties if possible.
    pub(crate) fn object_with(&self, v: &Value, n: usize) -> Vec<Value> {
        let Some(m) = self.flatten(v) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for base in self.objects(&m, 0) {
            let mut o: Map<String, Value> = Map::new();
            // keep required ones first
            for r in string_list(m.get("required")) {
                if let Some(x) = base.get(&r) {
                    o.insert(r, x.clone());
                }
            }
            for (k, x) in &base {
                if o.len() >= n {
                    break;
                }
                o.entry(k.clone()).or_insert_with(|| x.clone());
            }
            self.fill_to(&m, &mut o, n, 0);
            out.push(Value::Object(o));
        }
        out
    }

    fn close_dependencies(&self, m: &Map<String, Value>, o: &mut Map<String, Value>, depth: usize) {
        let Some(deps) = m.get("dependentRequired").and_then(Value::as_object) else {
            return;
        };
        for _ in 0..8 {
            let mut added = false;
            for (key, needed) in deps {
                if o.contains_key(key) {
                    for d in string_list(Some(needed)) {
                        if !o.contains_key(&d) {
                            let v = self.prop_sample(m, &d, depth);
                            o.insert(d, v);
                            added = true;
                        }
                    }
                }
            }
            if !added {
                return;
            }
        }
    }

    /// The subschema that applies to property `name` of an object of `m`.
    fn prop_schema(&self, m: &Map<String, Value>, name: &str) -> Value {
        if let Some(p) = m
            .get("properties")
            .and_then(Value::as_object)
            .and_then(|p| p.get(name))
        {
            return p.clone();
        }
        if let Some(pp) = m.get("patternProperties").and_then(Value::as_object) {
            for (pattern, s) in pp {
                if self.pattern_matches(pattern, name) == Some(true) {
                    return s.clone();
                }
            }
        }
        m.get("additionalProperties")
            .or_else(|| m.get("unevaluatedProperties"))
            .cloned()
            .unwrap_or(Value::Bool(true))
    }

    fn prop_sample(&self, m: &Map<String, Value>, name: &str, depth: usize) -> Value {
        let s = self.prop_schema(m, name);
        self.variants_at(&s, depth + 1)
            .into_iter()
            .next()
            .unwrap_or(Value::Null)
    }

    /// Object instances of a subschema to embed a property value into.
    pub(crate) fn object_bases(&self, v: &Value) -> Vec<Map<String, Value>> {
        match self.flatten(v) {
            Some(m) => self.objects(&m, 0),
            None => Vec::new(),
        }
    }

    /// A sample value for property `name` under a subschema.
    pub(crate) fn property_value(&self, v: &Value, name: &str) -> Value {
        match self.flatten(v) {
            Some(m) => self.prop_sample(&m, name, 0),
            None => Value::Null,
        }
    }

    fn item_schema(m: &Map<String, Value>, i: usize) -> Value {
        if let Some(Value::Array(prefix)) = m.get("prefixItems")
            && let Some(s) = prefix.get(i)
        {
            return s.clone();
        }
        m.get("items")
            .or_else(|| m.get("unevaluatedItems"))
            .cloned()
            .unwrap_or(Value::Bool(true))
    }

    fn arrays(&self, m: &Map<String, Value>, depth: usize) -> Vec<Value> {
        let min = m.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
        let mut items: Vec<Value> = Vec::new();
        if let Some(c) = m.get("contains") {
            let k = m.get("minContains").and_then(Value::as_u64).unwrap_or(1) as usize;
            let cv = self.variants_at(c, depth + 1);
            for i in 0..k.min(16) {
                items.push(cv.get(i % cv.len().max(1)).cloned().unwrap_or(Value::Null));
            }
        }
        let unique = m.get("uniqueItems") == Some(&Value::Bool(true));
        while items.len() < min.min(64) {
            let s = Self::item_schema(m, items.len());
            let vs = self.variants_at(&s, depth + 1);
            let pick = if unique {
                vs.iter().find(|v| !items.contains(v)).cloned()
            } else {
                vs.first().cloned()
            };
            items.push(pick.unwrap_or(Value::Null));
        }
        let mut longer = items.clone();
        let s = Self::item_schema(m, longer.len());
        if let Some(v) = self
            .variants_at(&s, depth + 1)
            .into_iter()
            .find(|v| !unique || !longer.contains(v))
        {
            longer.push(v);
        }
        vec![Value::Array(items), Value::Array(longer)]
    }

    /// Arrays of a subschema whose element `i` is `value`.
    pub(crate) fn array_with(&self, v: &Value, i: usize, value: &Value) -> Vec<Value> {
        let Some(m) = self.flatten(v) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for base in self.arrays(&m, 0) {
            let Value::Array(mut items) = base else {
                continue;
            };
            while items.len() <= i {
                let s = Self::item_schema(&m, items.len());
                items.push(self.sample(&s));
            }
            items[i] = value.clone();
            out.push(Value::Array(items));
        }
        out
    }

    /// Arrays of a subschema with `n` elements.
    pub(crate) fn array_of_len(&self, v: &Value, n: usize) -> Vec<Value> {
        let Some(m) = self.flatten(v) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for base in self.arrays(&m, 0) {
            let Value::Array(mut items) = base else {
                continue;
            };
            items.truncate(n);
            while items.len() < n.min(256) {
                let s = Self::item_schema(&m, items.len());
                let vs = self.variants(&s);
                let pick = vs
                    .iter()
                    .find(|x| !items.contains(x))
                    .or(vs.first())
                    .cloned();
                items.push(pick.unwrap_or(Value::Null));
            }
            out.push(Value::Array(items));
        }
        out
    }
}

/// The JSON types a flattened subschema admits, preferred first.
fn types_of(m: &Map<String, Value>) -> Vec<&'static str> {
    const ALL: [&str; 7] = [
        "object", "string", "integer", "number", "boolean", "array", "null",
    ];
    let declared: Option<Vec<&str>> = match m.get("type") {
        Some(Value::String(t)) => Some(vec![t.as_str()]),
        Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    };
    if let Some(declared) = declared {
        return ALL.into_iter().filter(|t| declared.contains(t)).collect();
    }
    let has = |keys: &[&str]| keys.iter().any(|k| m.contains_key(*k));
    let mut out = Vec::new();
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "propertyNames",
    ]) {
        out.push("object");
    }
    if has(&["minLength", "maxLength", "pattern", "format"]) {
        out.push("string");
    }
    if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        out.push("integer");
        out.push("number");
    }
    if has(&[
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "contains",
        "uniqueItems",
    ]) {
        out.push("array");
    }
    out.extend(["null", "string", "integer", "boolean", "object", "array"]);
    let mut seen = Vec::new();
    out.retain(|t| {
        if seen.contains(t) {
            false
        } else {
            seen.push(*t);
            true
        }
    });
    out
}

pub(crate) fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A numeric bound: `(value, exclusive)`.
pub(crate) type Bound = Option<(f64, bool)>;

/// Lower and upper bounds of a subschema.
pub(crate) fn bounds(m: &Map<String, Value>) -> (Bound, Bound) {
    let lo = tighter(
        m.get("minimum").and_then(Value::as_f64).map(|x| (x, false)),
        m.get("exclusiveMinimum")
            .and_then(Value::as_f64)
            .map(|x| (x, true)),
        true,
    );
    let hi = tighter(
        m.get("maximum").and_then(Value::as_f64).map(|x| (x, false)),
        m.get("exclusiveMaximum")
            .and_then(Value::as_f64)
            .map(|x| (x, true)),
        false,
    );
    (lo, hi)
}

fn tighter(a: Bound, b: Bound, lower: bool) -> Bound {
    match (a, b) {
        (Some(a), Some(b)) => {
            let a_wins = if lower {
                a.0 > b.0 || (a.0 == b.0 && a.1)
            } else {
                a.0 < b.0 || (a.0 == b.0 && a.1)
            };
            Some(if a_wins { a } else { b })
        }
        (a, b) => a.or(b),
    }
}

/// Whether `x` meets the numeric keywords of `m`.
pub(crate) fn number_ok(m: &Map<String, Value>, x: f64, int_only: bool) -> bool {
    if !x.is_finite() || (int_only && x.fract() != 0.0) {
        return false;
    }
    let (lo, hi) = bounds(m);
    if let Some((l, excl)) = lo
        && (x < l || (excl && x == l))
    {
        return false;
    }
    if let Some((h, excl)) = hi
        && (x > h || (excl && x == h))
    {
        return false;
    }
    if let Some(mult) = m.get("multipleOf").and_then(Value::as_f64) {
        let q = x / mult;
        if (q - q.round()).abs() > 1e-9 {
            return false;
        }
    }
    true
}

pub(crate) fn number_value(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn numbers(m: &Map<String, Value>, int_only: bool, extra: &[f64]) -> Vec<Value> {
    let (lo, hi) = bounds(m);
    let mult = m.get("multipleOf").and_then(Value::as_f64);
    let mut cands: Vec<f64> = extra.to_vec();
    cands.extend([0.0, 1.0, -1.0]);
    for (b, _) in lo.iter().chain(hi.iter()) {
        let b = *b;
        cands.extend([b, b + 1.0, b - 1.0, b + 0.5, b - 0.5, b.ceil(), b.floor()]);
        if let Some(mu) = mult {
            cands.extend([
                (b / mu).ceil() * mu,
                (b / mu).floor() * mu,
                ((b / mu).ceil() + 1.0) * mu,
            ]);
        }
    }
    if let Some(mu) = mult {
        cands.extend([mu, 2.0 * mu, 3.0 * mu, -mu]);
    }
    if let (Some((l, _)), Some((h, _))) = (lo, hi) {
        cands.push((l + h) / 2.0);
    }
    cands.extend([2.0, 10.0, 100.0, 1.5, 0.5]);
    let mut out: Vec<Value> = Vec::new();
    for x in cands {
        if number_ok(m, x, int_only) {
            let v = number_value(x);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        if out.len() >= 4 {
            break;
        }
    }
    out
}

fn format_sample(format: &str) -> Option<&'static str> {
    Some(match format {
        "date" => "2024-01-31",
        "date-time" => "2024-01-31T12:00:00Z",
        "time" => "12:00:00Z",
        "duration" => "P1D",
        "email" | "idn-email" => "a@example.com",
        "hostname" | "idn-hostname" => "example.com",
        "ipv4" => "192.0.2.1",
        "ipv6" => "2001:db8::1",
        "uri" | "iri" => "https://example.com/x",
        "uri-reference" | "iri-reference" => "/x",
        "uri-template" => "/x/{id}",
        "uuid" => "123e4567-e89b-12d3-a456-426614174000",
        "json-pointer" => "/a",
        "relative-json-pointer" => "0",
        "regex" => "^a$",
        _ => return None,
    })
}

/// Strings generated from a regular expression: each repetition expanded
/// `min + extra` times for a few values of `extra`.
pub(crate) fn pattern_samples(pattern: &str) -> Vec<String> {
    let Ok(hir) = regex_syntax::ParserBuilder::new().build().parse(pattern) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for extra in [0, 1, 2, 5] {
        for branch in [0, 1] {
            let mut s = String::new();
            if generate(&hir, extra, branch, &mut s, 0) && !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

fn generate(hir: &Hir, extra: u32, branch: usize, out: &mut String, depth: usize) -> bool {
    if depth > 64 || out.len() > 4096 {
        return false;
    }
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(lit) => match std::str::from_utf8(&lit.0) {
            Ok(s) => {
                out.push_str(s);
                true
            }
            Err(_) => false,
        },
        HirKind::Class(Class::Unicode(c)) => {
            let preferred = ['a', '0', 'A', '_', '-', ' '];
            let pick = preferred
                .into_iter()
                .find(|p| c.ranges().iter().any(|r| r.start() <= *p && *p <= r.end()))
                .or_else(|| c.ranges().first().map(|r| r.start()));
            match pick {
                Some(ch) => {
                    out.push(ch);
                    true
                }
                None => false,
            }
        }
        HirKind::Class(Class::Bytes(c)) => match c.ranges().first() {
            Some(r) if r.start().is_ascii() => {
                out.push(char::from(r.start()));
                true
            }
            _ => false,
        },
        HirKind::Repetition(rep) => {
            let mut n = rep.min.saturating_add(extra);
            if let Some(max) = rep.max {
                n = n.min(max);
            }
            for _ in 0..n.min(64) {
                if !generate(&rep.sub, extra, branch, out, depth + 1) {
                    return false;
                }
            }
            true
        }
        HirKind::Capture(cap) => generate(&cap.sub, extra, branch, out, depth + 1),
        HirKind::Concat(parts) => parts
            .iter()
            .all(|p| generate(p, extra, branch, out, depth + 1)),
        HirKind::Alternation(alts) => {
            let alt = &alts[branch.min(alts.len() - 1)];
            generate(alt, extra, branch, out, depth + 1)
        }
    }
}

/// Merges the keywords of `b` into `a` (both sides apply).
pub(crate) fn merge(a: &mut Map<String, Value>, b: Map<String, Value>) {
    for (k, v) in b {
        let Some(existing) = a.get_mut(&k) else {
            a.insert(k, v);
            continue;
        };
        match k.as_str() {
            "properties" | "patternProperties" | "dependentSchemas" => {
                if let (Value::Object(e), Value::Object(n)) = (existing, v) {
                    for (pk, pv) in n {
                        match e.get_mut(&pk) {
                            Some(old) => {
                                let combined = json!({"allOf": [old.clone(), pv]});
                                *old = combined;
                            }
                            None => {
                                e.insert(pk, pv);
                            }
                        }
                    }
                }
            }
            "required" => {
                if let (Value::Array(e), Value::Array(n)) = (existing, v) {
                    for x in n {
                        if !e.contains(&x) {
                            e.push(x);
                        }
                    }
                }
            }
            "type" => {
                let list = |t: &Value| -> Vec<String> {
                    match t {
                        Value::String(s) => vec![s.clone()],
                        other => string_list(Some(other)),
                    }
                };
                let (ea, na) = (list(existing), list(&v));
                let mut both: Vec<Value> = Vec::new();
                for t in &ea {
                    if na.contains(t) {
                        both.push(json!(t));
                    } else if (t == "number" && na.iter().any(|x| x == "integer"))
                        || (t == "integer" && na.iter().any(|x| x == "number"))
                    {
                        both.push(json!("integer"));
                    }
                }
                *existing = Value::Array(both);
            }
            "enum" => {
                if let (Value::Array(e), Value::Array(n)) = (existing, v) {
                    e.retain(|x| n.contains(x));
                }
            }
            "minLength" | "minItems" | "minProperties" | "minimum" | "exclusiveMinimum"
            | "minContains" => {
                if let (Some(x), Some(y)) = (existing.as_f64(), v.as_f64())
                    && y > x
                {
                    *existing = v;
                }
            }
            "maxLength" | "maxItems" | "maxProperties" | "maximum" | "exclusiveMaximum"
            | "maxContains" => {
                if let (Some(x), Some(y)) = (existing.as_f64(), v.as_f64())
                    && y < x
                {
                    *existing = v;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler_check(schema: Value) {
        let s = Schema::from_value(schema.clone()).expect("schema");
        let sampler = Sampler::new(&s);
        let v = sampler.sample(s.value());
        assert!(s.is_valid(&v), "sample {v} of {schema} is not valid");
    }

    #[test]
    fn samples_are_valid() {
        for schema in [
            json!({"type": "string", "minLength": 3, "maxLength": 5}),
            json!({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}),
            json!({"type": "string", "format": "email"}),
            json!({"type": "string", "format": "date"}),
            json!({"type": "integer", "minimum": 7, "exclusiveMaximum": 9}),
            json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
            json!({"type": "integer", "multipleOf": 5, "minimum": 11}),
            json!({"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "string"}, "b": {"enum": [1, 2]}}, "additionalProperties": false}),
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": true}),
            json!({"$defs": {"n": {"type": "object", "required": ["v"], "properties": {"v": {"const": 3}}}}, "$ref": "#/$defs/n"}),
            json!({"allOf": [{"type": "object", "required": ["a"]}, {"properties": {"a": {"type": "boolean"}}}]}),
            json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"type": "object", "minProperties": 2}),
            json!({"type": "object", "required": ["a"], "dependentRequired": {"a": ["b"]}}),
        ] {
            sampler_check(schema);
        }
    }

    #[test]
    fn pattern_generation() {
        let p = pattern_samples("^[a-z]+@[a-z]+\\.id$");
        assert!(p.iter().any(|s| s == "a@a.id"), "{p:?}");
    }
}
