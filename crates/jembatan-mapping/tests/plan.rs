//! Compiled plans against the reference path (validate against the source
//! schema, apply, validate against the target schema): for any record, the
//! plan translates exactly the records the reference translates, to the
//! same JSON text, field order included. A record the plan refuses takes
//! the reference path, so a translation's errors are the reference's.

mod common;

use std::sync::LazyLock;

use common::{altered, any_json, columns, digits};
use jembatan_mapping::{
    ApplyError, CheckedMapping, Format, Mapping, Plan, Secrets, compile_schema,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Why the reference path refused a record.
#[derive(Debug, PartialEq)]
enum Refused {
    SourceSchema,
    Mapping(ApplyError),
}

struct Case {
    mapping: CheckedMapping,
    source: jsonschema::Validator,
    plan: Plan,
}

impl Case {
    fn new(source: &Value, target: &Value, mapping: Mapping) -> Result<Case, String> {
        let mapping = mapping
            .check(source, target)
            .map_err(|e| format!("{e:?}"))?;
        Ok(Case {
            plan: mapping.plan(source),
            source: compile_schema(source).map_err(|e| e.to_string())?,
            mapping,
        })
    }

    fn reference(&self, rec: &Map<String, Value>, secrets: &Secrets) -> Result<Value, Refused> {
        if !self.source.is_valid(&Value::Object(rec.clone())) {
            return Err(Refused::SourceSchema);
        }
        self.mapping.apply(rec, secrets).map_err(Refused::Mapping)
    }

    /// The plan where it translates, the reference where it refuses: the
    /// path a broker takes.
    fn translate(
        &self,
        rec: &Map<String, Value>,
        secrets: &Secrets,
        fields: &[String],
    ) -> Result<String, Refused> {
        match self.plan.translate(rec, secrets) {
            Some(p) => Ok(p.to_json(fields)),
            None => self
                .reference(rec, secrets)
                .map(|out| serde_json::to_string(&pick(out, fields)).unwrap()),
        }
    }

    /// The plan agrees with the reference on `rec`.
    fn agrees(
        &self,
        rec: &Map<String, Value>,
        secrets: &Secrets,
        fields: &[String],
    ) -> Result<(), TestCaseError> {
        let reference = self.reference(rec, secrets);
        let planned = self.plan.translate(rec, secrets);
        match (&reference, planned) {
            (Ok(out), Some(p)) => {
                prop_assert_eq!(
                    p.to_json(&[]),
                    serde_json::to_string(out).unwrap(),
                    "record {:?}",
                    rec
                );
                prop_assert_eq!(
                    p.to_json(fields),
                    serde_json::to_string(&pick(out.clone(), fields)).unwrap()
                );
                prop_assert_eq!(&Value::Object(p.into_map()), out);
            }
            (Err(_), None) => {}
            (Ok(out), None) => {
                prop_assert!(false, "the plan refused {rec:?}, which translates to {out}")
            }
            (Err(e), Some(p)) => prop_assert!(
                false,
                "the plan translated {rec:?} to {}, the reference refuses it: {e:?}",
                p.to_json(&[])
            ),
        }
        let combined = self.translate(rec, secrets, fields);
        let expected = reference.map(|out| serde_json::to_string(&pick(out, fields)).unwrap());
        prop_assert_eq!(combined, expected);
        Ok(())
    }
}

/// The reference's field selection.
fn pick(out: Value, fields: &[String]) -> Value {
    let Value::Object(mut out) = out else {
        return out;
    };
    if fields.is_empty() {
        return Value::Object(out);
    }
    let mut picked = Map::new();
    for f in fields {
        if let Some(v) = out.remove(f) {
            picked.insert(f.clone(), v);
        }
    }
    Value::Object(picked)
}

// ---- the demo mapping ----

static DEMO: LazyLock<Case> = LazyLock::new(|| {
    let s: Value = serde_json::from_str(include_str!("data/penduduk.schema.json")).unwrap();
    let t: Value = serde_json::from_str(include_str!("data/warga.schema.json")).unwrap();
    let m = Mapping::parse(include_str!("data/penduduk-to-warga.toml"), Format::Toml).unwrap();
    Case::new(&s, &t, m).unwrap()
});

fn demo_secrets() -> Secrets {
    let mut s = Secrets::new();
    s.insert("pseudonym", b"k".to_vec());
    s
}

fn siti() -> Map<String, Value> {
    let v = json!({
        "nik": "3204015708850001",
        "no_kk": "3204010101080001",
        "nama_lengkap": " Siti Nurhaliza ",
        "tempat_lahir": null,
        "tgl_lahir": "17-08-1985",
        "jenis_kelamin": "P",
        "agama": "ISLAM",
        "status_perkawinan": "KAWIN",
        "pekerjaan": "GURU",
        "hubungan_keluarga": "ISTRI",
        "alamat": "JL. MERDEKA NO. 10",
        "rt": "001",
        "rw": "002",
        "kode_desa": "3204012001",
        "kode_kecamatan": "320401",
        "status": "HIDUP"
    });
    let Value::Object(m) = v else { unreachable!() };
    m
}

#[test]
fn the_demo_mapping_compiles_and_translates_as_the_reference() {
    let d = &*DEMO;
    assert!(d.plan.is_compiled(), "{:?}", d.plan.not_compiled_because());
    let rec = siti();
    let secrets = demo_secrets();
    let p = d
        .plan
        .translate(&rec, &secrets)
        .expect("the plan translates");
    let out = d.mapping.apply(&rec, &secrets).unwrap();
    assert_eq!(p.to_json(&[]), serde_json::to_string(&out).unwrap());
    let fields = vec!["sex".to_owned(), "address".to_owned(), "nik".to_owned()];
    assert_eq!(
        p.to_json(&fields),
        serde_json::to_string(&pick(out, &fields)).unwrap()
    );
}

#[test]
fn the_plan_refuses_what_the_reference_refuses() {
    let d = &*DEMO;
    let secrets = demo_secrets();
    let cases: Vec<(&str, Map<String, Value>, Secrets)> = vec![
        ("missing secret", siti(), Secrets::new()),
        (
            "check rule fires",
            {
                let mut r = siti();
                r.insert("status".into(), json!("PINDAH"));
                r
            },
            secrets.clone(),
        ),
        (
            "source pattern",
            {
                let mut r = siti();
                r.insert("nik".into(), json!("12"));
                r
            },
            secrets.clone(),
        ),
        (
            "impossible date",
            {
                let mut r = siti();
                r.insert("tgl_lahir".into(), json!("31-02-1985"));
                r
            },
            secrets.clone(),
        ),
        (
            "target minimum",
            {
                let mut r = siti();
                r.insert("tgl_lahir".into(), json!("17-08-1700"));
                r
            },
            secrets.clone(),
        ),
        (
            "required source field",
            {
                let mut r = siti();
                r.remove("nik");
                r
            },
            secrets.clone(),
        ),
    ];
    for (name, rec, secrets) in cases {
        assert!(d.plan.translate(&rec, &secrets).is_none(), "{name}");
        assert!(d.reference(&rec, &secrets).is_err(), "{name}");
    }
}

/// Demo records, mostly valid, with a few fields replaced by anything.
fn demo_record() -> impl Strategy<Value = Map<String, Value>> {
    let valid = (
        digits(16),
        (1u32..=31, 1u32..=12, 1700u32..=2030),
        prop::sample::select(vec!["L", "P", "X"]),
        prop::sample::select(vec!["HIDUP", "MENINGGAL", "PINDAH"]),
    )
        .prop_map(|(nik, (d, m, y), jk, status)| {
            let mut r = siti();
            r.insert("nik".into(), nik.into());
            r.insert("tgl_lahir".into(), format!("{d:02}-{m:02}-{y:04}").into());
            r.insert("jenis_kelamin".into(), jk.into());
            r.insert("status".into(), status.into());
            r
        });
    let mut altered_columns = columns();
    altered_columns.push("extra".into());
    altered(valid, altered_columns, 3, 2)
}

fn demo_fields() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "nik",
            "sex",
            "address",
            "alive",
            "marital_status",
            "birth_place",
            "unknown",
        ])
        .prop_map(String::from),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn demo_plan_agrees_with_the_reference(rec in demo_record(), fields in demo_fields(), secret in any::<bool>()) {
        let secrets = if secret { demo_secrets() } else { Secrets::new() };
        DEMO.agrees(&rec, &secrets, &fields)?;
    }
}

// ---- generated mappings ----

/// Source fields: name and subschema.
const SOURCE_FIELDS: &[(&str, &str)] = &[
    ("s_str", r#"{"type": "string", "maxLength": 8}"#),
    ("s_code", r#"{"type": "string", "pattern": "^[0-9]{3}$"}"#),
    (
        "s_int",
        r#"{"type": "integer", "minimum": 0, "maximum": 100}"#,
    ),
    ("s_enum", r#"{"enum": ["A", "B", "C"]}"#),
    (
        "s_date",
        r#"{"type": "string", "pattern": "^[0-9]{2}-[0-9]{2}-[0-9]{4}$"}"#,
    ),
    ("s_null", r#"{"type": ["string", "null"], "minLength": 1}"#),
    ("s_any", r#"{}"#),
    ("s_num", r#"{"type": "number"}"#),
];

/// One rule kind: the rule's TOML body (without `target`) and target
/// subschemas that may fit it.
fn rule_kinds() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            r#"from = "s_str""#,
            vec![
                r#"{"type": "string", "maxLength": 8}"#,
                r#"{"type": "string"}"#,
                r#"{"type": "string", "maxLength": 4}"#,
                r#"{"type": "string", "pattern": "^[A-Z]*$"}"#,
                r#"{"type": ["string", "null"], "minLength": 2}"#,
            ],
        ),
        (
            r#"from = "s_code""#,
            vec![
                r#"{"type": "string", "pattern": "^[0-9]{3}$"}"#,
                r#"{"type": "string", "pattern": "^[0-4]"}"#,
                r#"{"type": "string", "minLength": 3, "maxLength": 3}"#,
            ],
        ),
        (
            r#"from = "s_int""#,
            vec![
                r#"{"type": "integer", "minimum": 0, "maximum": 100}"#,
                r#"{"type": "number", "maximum": 100}"#,
                r#"{"type": "integer", "minimum": 10}"#,
                r#"{"type": "integer", "multipleOf": 2}"#,
            ],
        ),
        (
            r#"from = "s_num""#,
            vec![
                r#"{"type": "number"}"#,
                r#"{"type": "number", "exclusiveMaximum": 1.5}"#,
            ],
        ),
        (
            r#"from = "s_enum""#,
            vec![
                r#"{"enum": ["A", "B", "C"]}"#,
                r#"{"enum": ["A", "B", "C", "D"]}"#,
            ],
        ),
        (
            r#"from = "s_enum"
ops = [{ value_map = { map = { A = "x", B = "y", C = "zz" } } }]"#,
            vec![
                r#"{"type": "string", "enum": ["x", "y", "zz"]}"#,
                r#"{"enum": ["x", "y", "zz", "w"]}"#,
            ],
        ),
        (
            r#"from = "s_str"
ops = [{ value_map = { map = { a = 1, b = 2 }, default = 0 } }]"#,
            vec![
                r#"{"type": "integer", "minimum": 0}"#,
                r#"{"type": "integer", "maximum": 1}"#,
            ],
        ),
        (
            r#"from = "s_date"
ops = [{ date = { parse = "%d-%m-%Y", format = "%Y-%m-%d" } }]"#,
            vec![
                r#"{"type": "string", "format": "date"}"#,
                r#"{"type": "string"}"#,
            ],
        ),
        (
            r#"from = "s_str"
ops = ["trim", "upper"]"#,
            vec![
                r#"{"type": "string", "minLength": 1}"#,
                r#"{"type": "string"}"#,
                r#"{"type": "string", "pattern": "^[A-Z]+$"}"#,
            ],
        ),
        (
            r#"from = "s_code"
ops = [{ cast = "integer" }]"#,
            vec![
                r#"{"type": "integer", "minimum": 50}"#,
                r#"{"type": "integer"}"#,
            ],
        ),
        (
            r#"from = "s_null"
default = "none""#,
            vec![
                r#"{"type": "string", "minLength": 1}"#,
                r#"{"type": "string", "maxLength": 4}"#,
            ],
        ),
        (
            r#"from = "s_any""#,
            vec![r#"{}"#, r#"{"type": ["string", "integer", "null"]}"#],
        ),
        (
            r#"const = "fixed""#,
            vec![
                r#"{"const": "fixed"}"#,
                r#"{"type": "string", "maxLength": 3}"#,
                r#"{"type": "string"}"#,
            ],
        ),
        (
            r#"when = { field = "s_int", op = "gt", value = 50 }
then = { const = true }
else = { const = false }"#,
            vec![r#"{"type": "boolean"}"#, r#"{"const": true}"#],
        ),
        (
            r#"when = { field = "s_enum", op = "eq", value = "A" }
then = { from = "s_code" }"#,
            vec![
                r#"{"type": "string", "pattern": "^[0-9]{3}$"}"#,
                r#"{"type": "string", "maxLength": 2}"#,
            ],
        ),
        (
            r#"concat = { from = ["s_str", "s_code"], separator = "/" }"#,
            vec![
                r#"{"type": ["string", "null"], "maxLength": 10}"#,
                r#"{"type": ["string", "null"]}"#,
            ],
        ),
        (
            r#"from = "s_str"
ops = [{ hash = { secret = "k" } }]"#,
            vec![r#"{"type": "string", "pattern": "^[0-9a-f]{64}$"}"#],
        ),
    ]
}

const FAIL_RULES: &[&str] = &[
    r#"when = { field = "s_enum", op = "eq", value = "C" }
fail = "no C""#,
    r#"when = { field = "s_int", op = "lt", value = 5 }
fail = "too small""#,
];

/// A generated case: schemas and mapping, built from choices.
#[derive(Debug, Clone)]
struct Generated {
    source: Value,
    target: Value,
    mapping: String,
}

fn generated() -> impl Strategy<Value = Generated> {
    let kinds = rule_kinds();
    let n_kinds = kinds.len();
    (
        prop::collection::vec(prop::bool::weighted(0.3), SOURCE_FIELDS.len()),
        any::<bool>(),
        prop::collection::vec(
            (
                0..n_kinds,
                any::<prop::sample::Index>(),
                any::<bool>(),
                prop::bool::weighted(0.25),
                any::<bool>(),
            ),
            1..7,
        ),
        prop::sample::subsequence(vec![0usize, 1], 0..=2),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0u64..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            move |(
                src_required,
                src_closed,
                rules,
                fails,
                tgt_closed,
                nested_closed,
                min_props,
                extra_required,
            )| {
                let mut props = Map::new();
                let mut required = Vec::new();
                for ((name, schema), req) in SOURCE_FIELDS.iter().zip(src_required) {
                    props.insert((*name).into(), serde_json::from_str(schema).unwrap());
                    if req {
                        required.push(json!(name));
                    }
                }
                if extra_required {
                    // required, but not one of the properties
                    required.push(json!("extra"));
                }
                let mut source = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": props,
                    "required": required,
                });
                if src_closed {
                    source["additionalProperties"] = json!(false);
                }
                let mut toml = String::from(
                    "version = 1\nsource = \"a.src@1\"\ntarget = \"b.dst@1\"\nsecrets = [\"k\"]\n",
                );
                for f in fails {
                    toml.push_str(&format!("[[rule]]\n{}\n", FAIL_RULES[f]));
                }
                let mut top = Map::new();
                let mut defs = Map::new();
                let mut top_required = Vec::new();
                let mut inner = Map::new();
                let mut inner_required = Vec::new();
                for (i, (kind, schema, nested, req, ref_it)) in rules.into_iter().enumerate() {
                    let (body, schemas) = &kinds[kind];
                    let text: &str = schema.get::<&str>(schemas);
                    let schema: Value = serde_json::from_str(text).unwrap();
                    let name = format!("t{i}");
                    let target = if nested {
                        format!("obj.{name}")
                    } else {
                        name.clone()
                    };
                    toml.push_str(&format!("[[rule]]\ntarget = \"{target}\"\n{body}\n"));
                    let (map, req_list) = if nested {
                        (&mut inner, &mut inner_required)
                    } else {
                        (&mut top, &mut top_required)
                    };
                    let schema = if ref_it {
                        defs.insert(name.clone(), schema);
                        json!({"$ref": format!("#/$defs/{name}")})
                    } else {
                        schema
                    };
                    map.insert(name.clone(), schema);
                    if req {
                        req_list.push(json!(name));
                    }
                }
                if !inner.is_empty() {
                    let mut obj = json!({
                        "type": "object",
                        "properties": inner,
                        "required": inner_required,
                    });
                    if nested_closed {
                        obj["additionalProperties"] = json!(false);
                    }
                    top.insert("obj".into(), obj);
                }
                let mut target = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": top,
                    "required": top_required,
                    "$defs": defs,
                });
                if tgt_closed {
                    target["additionalProperties"] = json!(false);
                }
                if let Some(n) = min_props {
                    target["minProperties"] = json!(n);
                }
                Generated {
                    source,
                    target,
                    mapping: toml,
                }
            },
        )
}

fn source_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec![
            json!("abc"),
            json!(" Ab "),
            json!("ABCDEFGHIJ"),
            json!(""),
            json!("a"),
            json!("b"),
            json!("123"),
            json!("7"),
            json!("999"),
            json!("A"),
            json!("B"),
            json!("C"),
            json!("17-08-1985"),
            json!("31-02-1985"),
            json!(0),
            json!(4),
            json!(50),
            json!(51),
            json!(100),
            json!(101),
            json!(1.5),
            json!(2.0),
            json!(-1),
            json!(true),
            Value::Null,
        ]),
        1 => any_json(),
    ]
}

/// Records valid under the generated source schemas, then with a few
/// fields replaced by anything or removed, and sometimes a field the
/// schema does not name.
fn generated_record() -> impl Strategy<Value = Map<String, Value>> {
    let valid = (
        prop::sample::select(vec!["abc", " Ab ", "", "a", "b", "XY Z"]),
        prop::sample::select(vec!["123", "007", "999", "450"]),
        0i64..=100,
        prop::sample::select(vec!["A", "B", "C"]),
        prop::sample::select(vec!["17-08-1985", "31-02-1985", "01-01-0000", "29-02-2000"]),
        prop::sample::select(vec![Value::Null, json!("x"), json!("long text")]),
        source_value(),
        prop::sample::select(vec![json!(1.5), json!(-2), json!(0.25), json!(7)]),
    );
    let names = prop::sample::select(vec![
        "s_str", "s_code", "s_int", "s_enum", "s_date", "s_null", "s_any", "s_num", "extra",
    ]);
    (
        valid,
        prop::collection::vec((names.clone(), source_value()), 0..2),
        prop::collection::vec(names, 0..2),
    )
        .prop_map(
            |((st, code, int, en, date, null, any, num), changes, removed)| {
                let mut r = Map::new();
                r.insert("s_str".into(), json!(st));
                r.insert("s_code".into(), json!(code));
                r.insert("s_int".into(), json!(int));
                r.insert("s_enum".into(), json!(en));
                r.insert("s_date".into(), json!(date));
                r.insert("s_null".into(), null);
                r.insert("s_any".into(), any);
                r.insert("s_num".into(), num);
                for (k, v) in changes {
                    r.insert(k.into(), v);
                }
                for k in removed {
                    r.remove(k);
                }
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_plans_agree_with_the_reference(
        g in generated(),
        recs in prop::collection::vec(generated_record(), 1..24),
        fields in prop::collection::vec(prop::sample::select(vec!["t0", "t1", "t2", "obj", "zz"]).prop_map(String::from), 0..3),
        secret in any::<bool>(),
    ) {
        let mapping = Mapping::parse(&g.mapping, Format::Toml).unwrap();
        let Ok(case) = Case::new(&g.source, &g.target, mapping) else {
            // the generator also makes mappings the checker refuses
            return Ok(());
        };
        prop_assert!(case.plan.is_compiled(), "{:?}", case.plan.not_compiled_because());
        let mut secrets = Secrets::new();
        if secret {
            secrets.insert("k", b"key".to_vec());
        }
        for rec in &recs {
            case.agrees(rec, &secrets, &fields)?;
        }
    }
}
