//! Compiled mapping plans: a checked mapping and the schemas on both sides
//! turned, once, into a program that checks a source record, evaluates the
//! rules and writes the output record's JSON text, with the schemas'
//! checks folded in.
//!
//! The reference is three steps over JSON values: validate the record
//! against the source schema, [`CheckedMapping::apply`] the rules, validate
//! the output against the target schema. A plan gives exactly the
//! reference's verdict and output:
//!
//! - object-level keywords (`type`, `properties`, `required`,
//!   `additionalProperties`, `minProperties`, `maxProperties`) are checked
//!   by the plan itself, on the record and on the output tree it builds;
//! - each field's own subschema is compiled on its own and checked on the
//!   field's value, except where the plan proves the check always passes:
//!   a value copied unchanged from a source field whose subschema asserts
//!   at least what the target's does, or a value that can only be one of
//!   a few constants (a `const`, a `when` of constants, a `value_map`)
//!   that all pass;
//! - a schema keyword the plan does not know at object level, or a
//!   reference it cannot follow, leaves the mapping uncompiled: every
//!   record then takes the reference path.
//!
//! A record the plan refuses (any check or rule fails) is not explained by
//! the plan: the caller runs the reference path, which names the failure.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value, json};

use crate::apply::{self, Ctx, Secrets, eval_cond};
use crate::doc::{Cond, Expr, Op, Pipeline, Rule};
use crate::schema::Types;
use crate::{CheckedMapping, missing_secret};

/// Deepest `$ref` chain or object nesting a plan follows.
const MAX_DEPTH: usize = 32;

/// Longest output buffer a plan makes before knowing a record's length.
const MAX_HINT: usize = 4096;

/// Keywords that assert nothing.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords on a single value whose meaning does not depend on any other
/// keyword of the same subschema: one subschema holding each of another's
/// with the same value asserts at least as much.
const INDEPENDENT: &[&str] = &[
    "enum",
    "const",
    "pattern",
    "minLength",
    "maxLength",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// A mapping compiled with its source and target schemas; see the module
/// documentation. Built by [`CheckedMapping::plan`].
#[derive(Debug)]
pub struct Plan {
    compiled: Result<Compiled, String>,
}

#[derive(Debug)]
struct Compiled {
    source: ObjectCheck,
    /// The conditions of check rules.
    fails: Vec<Cond>,
    /// The pipelines of output rules, in rule order.
    values: Vec<Pipeline>,
    /// Whether some rule uses a secret: then every record checks that
    /// all are supplied, as the reference does.
    uses_secrets: bool,
    rules: Vec<Rule>,
    out: Node,
    /// The longest output text written so far (up to [`MAX_HINT`]): the
    /// next one's buffer is made this long, so writing it rarely grows.
    longest: AtomicUsize,
}

/// The object-level checks of one object subschema.
#[derive(Debug, Default)]
struct ObjectCheck {
    /// Sorted by key; each with whether it is required.
    properties: Vec<(String, Leaf, bool)>,
    additional: Additional,
    /// Required keys that are not properties.
    required_others: Vec<String>,
    /// Required keys that are properties.
    required_properties: usize,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
}

#[derive(Debug, Default)]
enum Additional {
    #[default]
    Any,
    Deny,
    Check(Leaf),
}

/// The check of one value against its own subschema.
#[derive(Debug)]
enum Leaf {
    /// Nothing to check, or proved to pass.
    Pass,
    /// The value's type is one of these (no numbers: those go through a
    /// validator, which decides what counts as an integer).
    Types(Types),
    Validator(Box<jsonschema::Validator>),
}

impl Leaf {
    fn passes(&self, v: &Value) -> bool {
        match self {
            Leaf::Pass => true,
            Leaf::Types(t) => t.contains(Types::of(v)),
            Leaf::Validator(val) => val.is_valid(v),
        }
    }
}

/// An object of the output record.
#[derive(Debug)]
struct Node {
    /// Sorted by key, as the output serialises.
    entries: Vec<(String, Entry)>,
    /// Each entry's key as JSON text and a colon, written once.
    keys_json: Vec<String>,
    /// Each required key's place in `entries`; `None` when no rule
    /// writes it.
    required: Vec<Option<usize>>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
}

#[derive(Debug)]
enum Entry {
    /// The value of output rule number `slot` (counting output rules only).
    Value {
        slot: usize,
        check: Leaf,
    },
    Object(Node),
}

/// One record translated by a plan: valid under the source schema, every
/// rule succeeded, the output is valid under the target schema.
#[derive(Debug)]
pub struct Planned<'a> {
    out: &'a Node,
    values: Vec<Option<Cow<'a, Value>>>,
    longest: &'a AtomicUsize,
}

impl Plan {
    pub(crate) fn compile(mapping: &CheckedMapping, source_schema: &Value) -> Plan {
        Plan {
            compiled: Compiled::new(mapping, source_schema),
        }
    }

    /// Whether the mapping compiled. When it did not, [`Plan::translate`]
    /// always answers `None` and every record takes the reference path.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_ok()
    }

    /// Why the mapping did not compile: the schema keyword or rule the
    /// plan cannot express.
    pub fn not_compiled_because(&self) -> Option<&str> {
        self.compiled.as_ref().err().map(String::as_str)
    }

    /// Translates `record` when it is valid under the source schema, every
    /// rule succeeds and the output is valid under the target schema:
    /// exactly when the reference path (source validation, then
    /// [`CheckedMapping::apply`]) succeeds, with the same output. `None`
    /// otherwise; the reference path then says why.
    pub fn translate<'a>(
        &'a self,
        record: &'a Map<String, Value>,
        secrets: &Secrets,
    ) -> Option<Planned<'a>> {
        let c = self.compiled.as_ref().ok()?;
        if !c.source.passes_record(record) {
            return None;
        }
        if c.uses_secrets {
            for rule in &c.rules {
                if let Rule::Output { value, .. } = rule
                    && missing_secret(value, secrets).is_some()
                {
                    return None;
                }
            }
        }
        for cond in &c.fails {
            if eval_cond(cond, Ctx::Record(record)) == Some(true) {
                return None;
            }
        }
        let mut values = Vec::with_capacity(c.values.len());
        for p in &c.values {
            values.push(eval(p, record, secrets)?);
        }
        c.out.passes(&values).then_some(Planned {
            out: &c.out,
            values,
            longest: &c.longest,
        })
    }
}

impl<'a> Planned<'a> {
    /// The output record's JSON text, as `serde_json` writes the output
    /// object, keeping only the top-level `fields` when any are given.
    pub fn to_json(&self, fields: &[String]) -> String {
        let mut buf = Vec::with_capacity(self.longest.load(Ordering::Relaxed));
        self.write(self.out, Some(fields), &mut buf);
        // a hint only, and never above a few KiB: one long record does
        // not make every buffer after it long
        if buf.len() > self.longest.load(Ordering::Relaxed) && buf.len() <= MAX_HINT {
            self.longest.fetch_max(buf.len(), Ordering::Relaxed);
        }
        // the writer only appends `serde_json`'s UTF-8 and ASCII punctuation
        String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }

    /// The output record as a JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        let mut values: Vec<Option<Value>> = self
            .values
            .into_iter()
            .map(|v| v.map(Cow::into_owned))
            .collect();
        build(self.out, &mut values)
    }

    fn write(&self, node: &Node, fields: Option<&[String]>, buf: &mut Vec<u8>) {
        buf.push(b'{');
        let mut first = true;
        for ((key, entry), key_json) in node.entries.iter().zip(&node.keys_json) {
            if let Some(fields) = fields
                && !fields.is_empty()
                && !fields.iter().any(|f| f == key)
            {
                continue;
            }
            let value = match entry {
                Entry::Value { slot, .. } => match &self.values[*slot] {
                    Some(v) => Some(v.as_ref()),
                    None => continue,
                },
                Entry::Object(_) => None,
            };
            if !first {
                buf.push(b',');
            }
            first = false;
            buf.extend_from_slice(key_json.as_bytes());
            match (value, entry) {
                (Some(v), _) => write_json(buf, v),
                (None, Entry::Object(inner)) => self.write(inner, None, buf),
                (None, Entry::Value { .. }) => {}
            }
        }
        buf.push(b'}');
    }
}

fn write_json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    // writing a string or a JSON value into memory cannot fail
    let _ = serde_json::to_writer(&mut *buf, v);
}

fn build(node: &Node, values: &mut [Option<Value>]) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, entry) in &node.entries {
        match entry {
            Entry::Value { slot, .. } => {
                if let Some(v) = values[*slot].take() {
                    out.insert(key.clone(), v);
                }
            }
            Entry::Object(inner) => {
                out.insert(key.clone(), Value::Object(build(inner, values)));
            }
        }
    }
    out
}

impl ObjectCheck {
    fn passes_record(&self, record: &Map<String, Value>) -> bool {
        let mut required = 0usize;
        // a record's keys usually come in the properties' order: each is
        // looked for first where the one before it was found
        let mut next = 0usize;
        for (k, v) in record {
            let at = match self.properties.get(next) {
                Some((p, _, _)) if p == k => Some(next),
                _ => (self.properties)
                    .binary_search_by(|(p, _, _)| p.as_str().cmp(k))
                    .ok(),
            };
            if let Some(i) = at {
                next = i + 1;
            }
            let property = at.map(|i| &self.properties[i]);
            let ok = match property {
                Some((_, leaf, is_required)) => {
                    required += usize::from(*is_required);
                    leaf.passes(v)
                }
                None => match &self.additional {
                    Additional::Any => true,
                    Additional::Deny => false,
                    Additional::Check(leaf) => leaf.passes(v),
                },
            };
            if !ok {
                return false;
            }
        }
        // a record's keys are distinct: each required property counted once
        required == self.required_properties
            && self.required_others.iter().all(|r| record.contains_key(r))
            && count_fits(record.len(), self.min_properties, self.max_properties)
    }
}

fn count_fits(n: usize, min: Option<u64>, max: Option<u64>) -> bool {
    let n = n as u64;
    min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)
}

impl Node {
    fn passes(&self, values: &[Option<Cow<'_, Value>>]) -> bool {
        let mut present = 0usize;
        for (_, entry) in &self.entries {
            match entry {
                Entry::Value { slot, check } => {
                    if let Some(v) = &values[*slot] {
                        if !check.passes(v) {
                            return false;
                        }
                        present += 1;
                    }
                }
                Entry::Object(inner) => {
                    if !inner.passes(values) {
                        return false;
                    }
                    present += 1;
                }
            }
        }
        count_fits(present, self.min_properties, self.max_properties)
            && self.required.iter().all(|r| self.has(*r, values))
    }

    fn has(&self, entry: Option<usize>, values: &[Option<Cow<'_, Value>>]) -> bool {
        match entry.map(|i| &self.entries[i].1) {
            Some(Entry::Value { slot, .. }) => values[*slot].is_some(),
            Some(Entry::Object(_)) => true,
            None => false,
        }
    }
}

/// A value in flight, borrowed from the record or the plan when it can be.
type Flow<'a> = Option<Cow<'a, Value>>;

/// Evaluates a pipeline as the reference does; `None` when it fails.
fn eval<'a>(
    p: &'a Pipeline,
    record: &'a Map<String, Value>,
    secrets: &Secrets,
) -> Option<Flow<'a>> {
    let mut v: Flow<'a> = match &p.expr {
        Expr::From(path) => path.lookup(record).map(Cow::Borrowed),
        Expr::Const(c) => Some(Cow::Borrowed(c)),
        Expr::Concat(c) => apply::concat(c, record).ok()?.map(Cow::Owned),
        Expr::When {
            cond,
            then,
            otherwise,
        } => {
            if eval_cond(cond, Ctx::Record(record)) == Some(true) {
                eval(then, record, secrets)?
            } else if let Some(e) = otherwise {
                eval(e, record, secrets)?
            } else {
                None
            }
        }
        Expr::Fail(_) => return None,
    };
    for op in &p.ops {
        v = eval_op(op, v, secrets)?;
    }
    if matches!(v.as_deref(), None | Some(Value::Null))
        && let Some(d) = &p.default
    {
        v = Some(Cow::Borrowed(d));
    }
    Some(v)
}

fn eval_op<'a>(op: &'a Op, v: Flow<'a>, secrets: &Secrets) -> Option<Flow<'a>> {
    if let Op::Default(d) = op {
        return Some(match v.as_deref() {
            None | Some(Value::Null) => Some(Cow::Borrowed(d)),
            Some(_) => v,
        });
    }
    let v = match v {
        None => return Some(None),
        Some(v) if v.is_null() => return Some(Some(v)),
        Some(v) => v,
    };
    let out = match (op, v.as_ref()) {
        (Op::ValueMap(m), Value::String(s)) => match m.map.get(s).or(m.default.as_ref()) {
            Some(out) => Cow::Borrowed(out),
            None => return None,
        },
        (Op::Date(spec), v) => Cow::Owned(apply::date(v, spec, false).ok()?),
        (Op::Datetime(spec), v) => Cow::Owned(apply::date(v, spec, true).ok()?),
        _ => Cow::Owned(apply::apply_op_value(op, v.into_owned(), secrets).ok()?),
    };
    Some(Some(out))
}

impl Compiled {
    fn new(mapping: &CheckedMapping, source_schema: &Value) -> Result<Compiled, String> {
        let target_schema = &mapping.target_schema;
        let source = Schemas::new(source_schema)?;
        let target = Schemas::new(target_schema)?;
        let source_root = source.object(source_schema, 0)?;
        let required = |k: &str| source_root.required.iter().any(|r| r == k);
        // a `BTreeMap`'s order: sorted by key
        let properties: Vec<(String, Leaf, bool)> = source_root
            .properties
            .iter()
            .map(|(k, node)| Ok((k.clone(), source.leaf(node)?, required(k))))
            .collect::<Result<_, String>>()?;
        let source_check = ObjectCheck {
            required_properties: properties.iter().filter(|(_, _, r)| *r).count(),
            required_others: (source_root.required.iter())
                .filter(|r| !source_root.properties.contains_key(r.as_str()))
                .cloned()
                .collect(),
            properties,
            additional: match source_root.additional {
                None | Some(Value::Bool(true)) => Additional::Any,
                Some(Value::Bool(false)) => Additional::Deny,
                Some(node) => Additional::Check(source.leaf(node)?),
            },
            min_properties: source_root.min_properties,
            max_properties: source_root.max_properties,
        };
        let rules = &mapping.mapping.rules;
        let mut fails = Vec::new();
        let mut values = Vec::new();
        let mut tree = Tree::default();
        for rule in rules {
            match rule {
                Rule::Fail { cond, .. } => fails.push(cond.clone()),
                Rule::Output { target, value } => {
                    tree.insert(target.segments(), values.len())?;
                    values.push(value.clone());
                }
            }
        }
        let compiler = OutCompiler {
            source_root: &source_root,
            target: &target,
            values: &values,
        };
        let out = compiler.node(&tree, target_schema, 0)?;
        let uses_secrets = rules.iter().any(|r| {
            matches!(r, Rule::Output { value, .. } if missing_secret(value, &Secrets::new()).is_some())
        });
        Ok(Compiled {
            source: source_check,
            fails,
            values,
            uses_secrets,
            rules: rules.clone(),
            out,
            longest: AtomicUsize::new(256),
        })
    }
}

/// The output's shape: which rule writes each path.
#[derive(Debug, Default)]
struct Tree {
    children: BTreeMap<String, TreeEntry>,
}

#[derive(Debug)]
enum TreeEntry {
    Value(usize),
    Object(Tree),
}

impl Tree {
    fn insert(&mut self, path: &[String], slot: usize) -> Result<(), String> {
        let Some((last, parents)) = path.split_last() else {
            return Err("a rule has an empty target".into());
        };
        let mut tree = self;
        for key in parents {
            let entry = tree
                .children
                .entry(key.clone())
                .or_insert_with(|| TreeEntry::Object(Tree::default()));
            tree = match entry {
                TreeEntry::Object(t) => t,
                TreeEntry::Value(_) => return Err("rule targets overlap".into()),
            };
        }
        if tree.children.contains_key(last) {
            return Err("rule targets overlap".into());
        }
        tree.children.insert(last.clone(), TreeEntry::Value(slot));
        Ok(())
    }
}

/// The object-level keywords of one object subschema.
struct ObjectShape<'s> {
    properties: BTreeMap<String, &'s Value>,
    additional: Option<&'s Value>,
    required: Vec<String>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
}

/// One schema document, read for compiling.
struct Schemas<'s> {
    root: &'s Value,
}

impl<'s> Schemas<'s> {
    fn new(root: &'s Value) -> Result<Schemas<'s>, String> {
        for key in ["$defs", "definitions"] {
            if let Some(defs) = root.get(key) {
                local_refs_only(defs)?;
            }
        }
        Ok(Schemas { root })
    }

    /// Follows a subschema that is only a `$ref` (and annotations).
    fn deref(&self, mut node: &'s Value, depth: usize) -> Result<&'s Value, String> {
        for _ in depth..MAX_DEPTH {
            let Some(map) = node.as_object() else {
                return Ok(node);
            };
            let Some(r) = map.get("$ref") else {
                return Ok(node);
            };
            if map
                .keys()
                .any(|k| k != "$ref" && !ANNOTATIONS.contains(&k.as_str()))
            {
                return Err("a `$ref` next to other keywords".into());
            }
            let target = r
                .as_str()
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| self.root.pointer(p))
                .ok_or("a `$ref` that is not a local JSON pointer")?;
            node = target;
        }
        Err("a `$ref` chain too long".into())
    }

    /// Reads an object subschema the plan can check itself.
    fn object(&self, node: &'s Value, depth: usize) -> Result<ObjectShape<'s>, String> {
        let node = self.deref(node, depth)?;
        let mut shape = ObjectShape {
            properties: BTreeMap::new(),
            additional: None,
            required: Vec::new(),
            min_properties: None,
            max_properties: None,
        };
        let map = match node {
            Value::Bool(true) => return Ok(shape),
            Value::Object(map) => map,
            _ => return Err("an object schema that admits no object".into()),
        };
        let is_root = std::ptr::eq(node, self.root);
        for (key, v) in map {
            match key.as_str() {
                "type" => {
                    if !type_names(v).is_some_and(|t| t.contains(Types::OBJ)) {
                        return Err("an object schema whose `type` is not object".into());
                    }
                }
                "properties" => {
                    let props = v.as_object().ok_or("`properties` is not an object")?;
                    shape.properties = props.iter().map(|(k, s)| (k.clone(), s)).collect();
                }
                "additionalProperties" => shape.additional = Some(v),
                "required" => {
                    let list = v.as_array().ok_or("`required` is not an array")?;
                    for k in list {
                        let k = k.as_str().ok_or("`required` holds a non-string")?;
                        if !shape.required.iter().any(|r| r == k) {
                            shape.required.push(k.to_owned());
                        }
                    }
                }
                "minProperties" => shape.min_properties = Some(v.as_u64().ok_or("minProperties")?),
                "maxProperties" => shape.max_properties = Some(v.as_u64().ok_or("maxProperties")?),
                "$schema" | "$id" | "$defs" | "definitions" if is_root => {}
                k if ANNOTATIONS.contains(&k) => {}
                other => return Err(format!("the object keyword `{other}`")),
            }
        }
        Ok(shape)
    }

    /// The check of one value against `node`.
    fn leaf(&self, node: &Value) -> Result<Leaf, String> {
        let map = match node {
            Value::Bool(true) => return Ok(Leaf::Pass),
            Value::Object(map) => map,
            _ => return self.validator(node),
        };
        if map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())) {
            return Ok(Leaf::Pass);
        }
        if let Some(t) = map.get("type")
            && map
                .keys()
                .all(|k| k == "type" || ANNOTATIONS.contains(&k.as_str()))
            && let Some(types) = type_names(t)
            && !types.intersects(Types::NUMBER)
        {
            return Ok(Leaf::Types(types));
        }
        self.validator(node)
    }

    /// A validator for `node` alone, with the document's `$defs`.
    fn validator(&self, node: &Value) -> Result<Leaf, String> {
        local_refs_only(node)?;
        let mut wrapper = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [node],
        });
        for key in ["$defs", "definitions"] {
            if let Some(defs) = self.root.get(key) {
                wrapper[key] = defs.clone();
            }
        }
        crate::runtest::compile_schema(&wrapper)
            .map(|v| Leaf::Validator(Box::new(v)))
            .map_err(|e| format!("a subschema that does not compile alone: {e}"))
    }
}

/// The JSON types a `type` keyword names; `None` for a malformed one.
fn type_names(v: &Value) -> Option<Types> {
    let one = |v: &Value| match v.as_str().map(Types::from_name) {
        Some(t) if !t.is_empty() => Some(t),
        _ => None,
    };
    match v {
        Value::String(_) => one(v),
        Value::Array(list) => list
            .iter()
            .try_fold(Types::NONE, |acc, n| Some(acc.union(one(n)?))),
        _ => None,
    }
}

/// Refuses identifiers, anchors and dynamic references, and `$ref`s other
/// than pointers into `$defs` or `definitions`: a subschema compiled alone
/// must mean what it means inside its document.
fn local_refs_only(node: &Value) -> Result<(), String> {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                match k.as_str() {
                    "$id" | "$anchor" | "$dynamicRef" | "$dynamicAnchor" | "$recursiveRef"
                    | "$recursiveAnchor" => {
                        return Err(format!("`{k}` inside a subschema"));
                    }
                    "$ref" => {
                        let ok = v.as_str().is_some_and(|r| {
                            r.starts_with("#/$defs/") || r.starts_with("#/definitions/")
                        });
                        if !ok {
                            return Err("a `$ref` outside `$defs`".into());
                        }
                    }
                    _ => local_refs_only(v)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(local_refs_only),
        _ => Ok(()),
    }
}

struct OutCompiler<'c, 's> {
    source_root: &'c ObjectShape<'s>,
    target: &'c Schemas<'s>,
    values: &'c [Pipeline],
}

impl<'s> OutCompiler<'_, 's> {
    fn node(&self, tree: &Tree, schema: &'s Value, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err("output nesting too deep".into());
        }
        let shape = self.target.object(schema, depth)?;
        let mut entries = Vec::with_capacity(tree.children.len());
        for (key, child) in &tree.children {
            let sub = match shape.properties.get(key) {
                Some(s) => Some(*s),
                None => match shape.additional {
                    None | Some(Value::Bool(true)) => None,
                    Some(Value::Bool(false)) => {
                        return Err(format!("the output field {key:?} is not allowed"));
                    }
                    Some(other) => Some(other),
                },
            };
            let entry = match child {
                TreeEntry::Object(inner) => {
                    Entry::Object(self.node(inner, sub.unwrap_or(&TRUE), depth + 1)?)
                }
                TreeEntry::Value(slot) => {
                    let check = match sub {
                        None => Leaf::Pass,
                        Some(s) => self.value_check(&self.values[*slot], s)?,
                    };
                    Entry::Value { slot: *slot, check }
                }
            };
            entries.push((key.clone(), entry));
        }
        let required = (shape.required.iter())
            .map(|r| entries.binary_search_by(|(k, _)| k.cmp(r)).ok())
            .collect();
        let keys_json = (entries.iter())
            .map(|(k, _)| format!("{}:", Value::String(k.clone())))
            .collect();
        Ok(Node {
            entries,
            keys_json,
            required,
            min_properties: shape.min_properties,
            max_properties: shape.max_properties,
        })
    }

    /// The check of a rule's value against its target subschema, or
    /// [`Leaf::Pass`] when it provably always passes.
    fn value_check(&self, p: &Pipeline, target: &'s Value) -> Result<Leaf, String> {
        let leaf = self.target.leaf(target)?;
        if matches!(leaf, Leaf::Pass) {
            return Ok(leaf);
        }
        let Some(possible) = possible(p) else {
            return Ok(leaf);
        };
        let copies_fit = possible.copied.iter().all(|k| {
            self.source_root
                .properties
                .get(*k)
                .is_some_and(|s| asserts_at_least(s, target))
        });
        if copies_fit && possible.constants.iter().all(|v| leaf.passes(v)) {
            return Ok(Leaf::Pass);
        }
        Ok(leaf)
    }
}

/// What a pipeline's value can be, when it is known statically: values
/// copied unchanged from top-level source fields, and constants. A
/// superset is fine; `None` means anything.
#[derive(Default)]
struct Possible<'p> {
    copied: Vec<&'p str>,
    constants: Vec<&'p Value>,
}

static NULL: Value = Value::Null;
static TRUE: Value = Value::Bool(true);

fn possible(p: &Pipeline) -> Option<Possible<'_>> {
    let mut out = Possible::default();
    match (&p.expr, p.ops.as_slice()) {
        (Expr::From(path), []) => match path.segments() {
            [key] => out.copied.push(key),
            _ => return None,
        },
        (Expr::Const(c), []) => out.constants.push(c),
        (
            Expr::When {
                then, otherwise, ..
            },
            [],
        ) => {
            for branch in std::iter::once(then).chain(otherwise) {
                let b = possible(branch)?;
                out.copied.extend(b.copied);
                out.constants.extend(b.constants);
            }
        }
        (Expr::Fail(_), []) => {}
        (_, [Op::ValueMap(m)]) => {
            out.constants.extend(m.map.values());
            out.constants.extend(m.default.as_ref());
            // null passes through a value_map
            out.constants.push(&NULL);
        }
        _ => return None,
    }
    out.constants.extend(p.default.as_ref());
    Some(out)
}

/// Whether every value valid under the source subschema `s` is valid under
/// the target subschema `t`: `t` asserts only keywords independent of each
/// other that `s` holds with the same value, and a `type` admitting all
/// `s` admits.
fn asserts_at_least(s: &Value, t: &Value) -> bool {
    let (Some(s), Some(t)) = (s.as_object(), t.as_object()) else {
        return false;
    };
    t.iter().all(|(k, tv)| match k.as_str() {
        k if ANNOTATIONS.contains(&k) => true,
        "type" => match (s.get("type").and_then(type_names), type_names(tv)) {
            (Some(st), Some(tt)) => tt.contains(st),
            _ => false,
        },
        k if INDEPENDENT.contains(&k) => s.get(k) == Some(tv),
        _ => false,
    })
}
