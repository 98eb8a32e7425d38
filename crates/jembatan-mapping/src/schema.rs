//! A small reader of JSON Schema "shapes": types, properties, required,
//! items, enum, const, format and local `$ref`s, enough to type-check a
//! mapping against typical agency schemas. It never validates instances.

use serde_json::Value;

/// A set of JSON types. `number` is `INT | NUM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Types(u8);

impl Types {
    pub(crate) const NONE: Types = Types(0);
    pub(crate) const NULL: Types = Types(1);
    pub(crate) const BOOL: Types = Types(2);
    pub(crate) const INT: Types = Types(4);
    /// Numbers with a fractional part.
    pub(crate) const NUM: Types = Types(8);
    pub(crate) const STR: Types = Types(16);
    pub(crate) const ARR: Types = Types(32);
    pub(crate) const OBJ: Types = Types(64);
    pub(crate) const ALL: Types = Types(127);
    pub(crate) const NUMBER: Types = Types(4 | 8);

    pub(crate) fn contains(self, other: Types) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn intersects(self, other: Types) -> bool {
        self.0 & other.0 != 0
    }

    pub(crate) fn union(self, other: Types) -> Types {
        Types(self.0 | other.0)
    }

    pub(crate) fn without(self, other: Types) -> Types {
        Types(self.0 & !other.0)
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn of(v: &Value) -> Types {
        match v {
            Value::Null => Types::NULL,
            Value::Bool(_) => Types::BOOL,
            Value::Number(n) if n.is_i64() || n.is_u64() => Types::INT,
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => Types::INT,
            Value::Number(_) => Types::NUM,
            Value::String(_) => Types::STR,
            Value::Array(_) => Types::ARR,
            Value::Object(_) => Types::OBJ,
        }
    }

    pub(crate) fn from_name(name: &str) -> Types {
        match name {
            "null" => Types::NULL,
            "boolean" => Types::BOOL,
            "integer" => Types::INT,
            "number" => Types::NUMBER,
            "string" => Types::STR,
            "array" => Types::ARR,
            "object" => Types::OBJ,
            _ => Types::NONE,
        }
    }
}

impl std::fmt::Display for Types {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Types::ALL {
            return f.write_str("any value");
        }
        let mut names = Vec::new();
        if self.contains(Types::NUMBER) {
            names.push("number");
        } else if self.contains(Types::INT) {
            names.push("integer");
        } else if self.contains(Types::NUM) {
            names.push("fractional number");
        }
        for (t, name) in [
            (Types::STR, "string"),
            (Types::BOOL, "boolean"),
            (Types::ARR, "array"),
            (Types::OBJ, "object"),
            (Types::NULL, "null"),
        ] {
            if self.contains(t) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str(&names.join(" or "))
    }
}

const MAX_REF_HOPS: usize = 32;

/// One schema document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchemaDoc<'a> {
    root: &'a Value,
}

impl<'a> SchemaDoc<'a> {
    pub(crate) fn new(root: &'a Value) -> Self {
        Self { root }
    }

    pub(crate) fn root(&self) -> &'a Value {
        self.root
    }

    /// Follows local `$ref`s (`#`, `#/$defs/x`, any local JSON pointer).
    /// An unresolvable reference reads as the `true` schema.
    pub(crate) fn deref(&self, mut node: &'a Value) -> &'a Value {
        static TRUE: Value = Value::Bool(true);
        for _ in 0..MAX_REF_HOPS {
            let Some(r) = node.get("$ref").and_then(Value::as_str) else {
                return node;
            };
            let Some(pointer) = r.strip_prefix('#') else {
                return &TRUE;
            };
            match self.root.pointer(pointer) {
                Some(target) => node = target,
                None => return &TRUE,
            }
        }
        &TRUE
    }

    /// The node and its `allOf` members (dereferenced), and for the common
    /// nullable pattern `anyOf: [S, {type: null}]` the branch `S`.
    pub(crate) fn parts(&self, node: &'a Value) -> Vec<&'a Value> {
        let mut out = Vec::new();
        self.collect_parts(node, 0, &mut out);
        out
    }

    fn collect_parts(&self, node: &'a Value, depth: usize, out: &mut Vec<&'a Value>) {
        if depth > MAX_REF_HOPS {
            return;
        }
        let node = self.deref(node);
        out.push(node);
        if let Some(all) = node.get("allOf").and_then(Value::as_array) {
            for n in all {
                self.collect_parts(n, depth + 1, out);
            }
        }
        if let Some(branch) = self.single_non_null_branch(node) {
            self.collect_parts(branch, depth + 1, out);
        }
    }

    fn single_non_null_branch(&self, node: &'a Value) -> Option<&'a Value> {
        let list = node
            .get("anyOf")
            .or_else(|| node.get("oneOf"))
            .and_then(Value::as_array)?;
        let mut non_null = list
            .iter()
            .filter(|b| self.deref(b).get("type").and_then(Value::as_str) != Some("null"));
        let first = non_null.next()?;
        non_null.next().is_none().then_some(first)
    }

    /// The types a node admits.
    pub(crate) fn types(&self, node: &'a Value) -> Types {
        self.types_at(node, 0)
    }

    fn types_at(&self, node: &'a Value, depth: usize) -> Types {
        if depth > MAX_REF_HOPS {
            return Types::ALL;
        }
        let node = self.deref(node);
        match node {
            Value::Bool(true) => return Types::ALL,
            Value::Bool(false) => return Types::NONE,
            Value::Object(_) => {}
            _ => return Types::ALL,
        }
        let mut t = match node.get("type") {
            Some(Value::String(name)) => Types::from_name(name),
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .fold(Types::NONE, |acc, n| acc.union(Types::from_name(n))),
            _ => Types::ALL,
        };
        if let Some(values) = self.enum_values(node) {
            t = Types(
                t.0 & values
                    .iter()
                    .fold(Types::NONE, |a, v| a.union(Types::of(v)))
                    .0,
            );
            // an integer-valued float in an enum is still an integer
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = node.get(key).and_then(Value::as_array) {
                let u = list
                    .iter()
                    .fold(Types::NONE, |acc, b| acc.union(self.types_at(b, depth + 1)));
                t = Types(t.0 & u.0);
            }
        }
        if let Some(list) = node.get("allOf").and_then(Value::as_array) {
            for b in list {
                t = Types(t.0 & self.types_at(b, depth + 1).0);
            }
        }
        t
    }

    /// `enum`, or `const` as a one-value enum.
    pub(crate) fn enum_values(&self, node: &'a Value) -> Option<Vec<Value>> {
        let mut out: Option<Vec<Value>> = None;
        for part in self.parts(node) {
            let here = if let Some(c) = part.get("const") {
                Some(vec![c.clone()])
            } else {
                part.get("enum").and_then(Value::as_array).cloned()
            };
            if let Some(here) = here {
                out = Some(match out {
                    None => here,
                    Some(prev) => prev.into_iter().filter(|v| here.contains(v)).collect(),
                });
            }
        }
        out
    }

    /// The `format` keyword, if any part has one.
    pub(crate) fn format(&self, node: &'a Value) -> Option<&'a str> {
        self.parts(node)
            .into_iter()
            .find_map(|p| p.get("format").and_then(Value::as_str))
    }

    /// The subschema of property `key`, if some part declares it.
    pub(crate) fn property(&self, node: &'a Value, key: &str) -> Option<&'a Value> {
        self.parts(node)
            .into_iter()
            .find_map(|p| p.get("properties").and_then(|props| props.get(key)))
    }

    /// Whether some part lists `key` in `required`.
    pub(crate) fn is_required(&self, node: &'a Value, key: &str) -> bool {
        self.parts(node).into_iter().any(|p| {
            p.get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(key)))
        })
    }

    /// Every required key, in order, without repeats.
    pub(crate) fn required(&self, node: &'a Value) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = Vec::new();
        for p in self.parts(node) {
            for k in p
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        out
    }

    /// Whether the object admits no properties beyond those it declares.
    pub(crate) fn is_closed(&self, node: &'a Value) -> bool {
        self.parts(node).into_iter().any(|p| {
            p.get("additionalProperties") == Some(&Value::Bool(false))
                || p.get("unevaluatedProperties") == Some(&Value::Bool(false))
        })
    }

    /// The `items` subschema of an array.
    pub(crate) fn items(&self, node: &'a Value) -> Option<&'a Value> {
        self.parts(node).into_iter().find_map(|p| p.get("items"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_shapes_through_refs_and_nullable_unions() {
        let schema = json!({
            "$defs": {
                "code": {"type": "string", "pattern": "^[0-9]+$"},
                "addr": {
                    "type": "object",
                    "properties": {"rt": {"$ref": "#/$defs/code"}},
                    "required": ["rt"],
                    "additionalProperties": false
                }
            },
            "type": "object",
            "properties": {
                "address": {"anyOf": [{"$ref": "#/$defs/addr"}, {"type": "null"}]},
                "sex": {"enum": ["M", "F"]},
                "n": {"type": ["integer", "null"]},
                "loop": {"$ref": "#/properties/loop"}
            }
        });
        let doc = SchemaDoc::new(&schema);
        let root = doc.root();
        let address = doc.property(root, "address").unwrap();
        assert_eq!(doc.types(address), Types::OBJ.union(Types::NULL));
        assert!(doc.is_closed(address));
        assert_eq!(doc.required(address), vec!["rt"]);
        let rt = doc.property(address, "rt").unwrap();
        assert_eq!(doc.types(rt), Types::STR);
        let sex = doc.property(root, "sex").unwrap();
        assert_eq!(doc.types(sex), Types::STR);
        assert_eq!(doc.enum_values(sex), Some(vec![json!("M"), json!("F")]));
        let n = doc.property(root, "n").unwrap();
        assert_eq!(doc.types(n), Types::INT.union(Types::NULL));
        // a reference cycle ends as "any value" instead of looping
        let l = doc.property(root, "loop").unwrap();
        assert_eq!(doc.types(l), Types::ALL);
        assert_eq!(Types::INT.union(Types::NULL).to_string(), "integer or null");
    }
}
