//! Generators the mapping's property tests share: digit strings, any JSON
//! value, and a record with some of its columns replaced by anything or
//! removed.

#![allow(dead_code)] // each test file uses its own part of this module

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The columns of the population registry's `penduduk`, as its schema
/// fixture lists them.
pub(crate) fn columns() -> Vec<String> {
    let schema: Value = serde_json::from_str(include_str!("../data/penduduk.schema.json"))
        .expect("the penduduk schema fixture is JSON");
    schema["properties"]
        .as_object()
        .expect("the schema lists its properties")
        .keys()
        .cloned()
        .collect()
}

/// `n` decimal digits.
pub(crate) fn digits(n: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[0-9]{{{n}}}")).unwrap()
}

/// Any JSON value: scalars of every kind (among them the registry's own
/// codes and date shapes), arrays and objects, nested a few levels.
pub(crate) fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-3.0f64..3.0).prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::from),
        "[0-9-]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "L",
            "P",
            "HIDUP",
            "MENINGGAL",
            "PINDAH",
            "KAWIN",
            "17-08-1985",
            "",
            " ",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `records`, each with up to `changed - 1` of `columns` set to any JSON
/// value and up to `removed - 1` of them removed.
pub(crate) fn altered(
    records: impl Strategy<Value = Map<String, Value>>,
    columns: Vec<String>,
    changed: usize,
    removed: usize,
) -> impl Strategy<Value = Map<String, Value>> {
    (
        records,
        prop::collection::vec(
            (prop::sample::select(columns.clone()), any_json()),
            0..changed,
        ),
        prop::collection::vec(prop::sample::select(columns), 0..removed),
    )
        .prop_map(|(mut r, changes, gone)| {
            for (k, v) in changes {
                r.insert(k, v);
            }
            for k in gone {
                r.remove(&k);
            }
            r
        })
}
