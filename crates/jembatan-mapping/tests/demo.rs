//! The example mapping `penduduk-to-warga.toml` end to end: check, apply,
//! `mapping test`, source fields and push-down.

use std::collections::BTreeSet;

use jembatan_core::{Filter, Operator, Predicate, Scalar};
use jembatan_mapping::{CheckedMapping, Format, Mapping, Secrets, compile_schema, run_test};
use serde_json::{Value, json};

const MAPPING: &str = include_str!("data/penduduk-to-warga.toml");
const PENDUDUK: &str = include_str!("data/penduduk.schema.json");
const WARGA: &str = include_str!("data/warga.schema.json");

fn schemas() -> (Value, Value) {
    (
        serde_json::from_str(PENDUDUK).unwrap(),
        serde_json::from_str(WARGA).unwrap(),
    )
}

fn checked() -> CheckedMapping {
    let (s, t) = schemas();
    Mapping::parse(MAPPING, Format::Toml)
        .unwrap()
        .check(&s, &t)
        .unwrap_or_else(|e| panic!("{e:#?}"))
}

fn secrets() -> Secrets {
    let mut s = Secrets::new();
    s.insert("pseudonym", b"test-only-pseudonym-key".to_vec());
    s
}

fn siti() -> Value {
    json!({
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
    })
}

#[test]
fn the_example_translates() {
    let m = checked();
    assert_eq!(m.mapping().source(), "disdukcapil.penduduk@1");
    assert_eq!(m.mapping().target(), "dinsos.warga@1");
    assert_eq!(m.mapping().version(), 1);
    let out = m.apply(siti().as_object().unwrap(), &secrets()).unwrap();
    let family_id = out["family_id"].as_str().unwrap().to_owned();
    assert_eq!(family_id.len(), 64);
    assert_eq!(
        out,
        json!({
            "nik": "3204015708850001",
            "family_id": family_id,
            "full_name": "Siti Nurhaliza",
            "birth_place": "TIDAK DIKETAHUI",
            "birth_date": "1985-08-17",
            "birth_year": 1985,
            "sex": "F",
            "marital_status": "married",
            "address": {
                "village_code": "3204012001",
                "district_code": "320401",
                "rt": "001",
                "rw": "002",
                "street": "JL. MERDEKA NO. 10"
            },
            "alive": true,
            "nik_masked": "************0001",
            "given_names": ["SITI", "NURHALIZA"],
            "source_system": "disdukcapil"
        })
    );
    // agama, pekerjaan, hubungan_keluarga are never read: default deny
    let fields: BTreeSet<&str> = [
        "nik",
        "no_kk",
        "nama_lengkap",
        "tempat_lahir",
        "tgl_lahir",
        "jenis_kelamin",
        "status_perkawinan",
        "alamat",
        "rt",
        "rw",
        "kode_desa",
        "kode_kecamatan",
        "status",
    ]
    .into();
    assert_eq!(
        m.source_fields(),
        fields.into_iter().map(String::from).collect()
    );
    assert_eq!(
        m.secret_names().iter().collect::<Vec<_>>(),
        vec!["pseudonym"]
    );
}

#[test]
fn failures_name_the_rule() {
    let m = checked();
    let cases: &[(&str, Value, usize, &str)] = &[
        (
            "moved away",
            json!({"status": "PINDAH"}),
            0,
            "rule 0 (fail): resident has moved out of the region",
        ),
        (
            "bad date",
            json!({"tgl_lahir": "31-02-1985"}),
            5,
            "rule 5 (birth_date): cannot parse a string of 10 characters as a date",
        ),
        (
            "unmapped sex",
            json!({"jenis_kelamin": "X"}),
            7,
            "rule 7 (sex): value_map: \"X\" is not in the map",
        ),
        (
            "blank name breaks minLength",
            json!({"nama_lengkap": "   "}),
            3,
            "rule 3 (full_name): the value breaks dinsos.warga@1 (schema location /properties/full_name/minLength)",
        ),
    ];
    for (name, patch, rule, want) in cases {
        let mut rec = siti();
        for (k, v) in patch.as_object().unwrap() {
            rec[k] = v.clone();
        }
        let err = m.apply(rec.as_object().unwrap(), &secrets()).unwrap_err();
        assert_eq!(err.rule, *rule, "{name}: {err}");
        assert!(err.to_string().starts_with(want), "{name}: {err}");
        // the same rule named, and none of the record's values shown
        let quiet = err.without_values();
        assert!(
            quiet.starts_with(&format!("rule {rule} (")),
            "{name}: {quiet}"
        );
        for v in patch.as_object().unwrap().values() {
            let shown = v.as_str().unwrap().trim();
            assert!(
                shown.is_empty() || !quiet.contains(shown),
                "{name}: {quiet}"
            );
        }
    }
}

#[test]
fn the_json_form_is_the_same_mapping() {
    let toml = Mapping::parse(MAPPING, Format::Toml).unwrap();
    let json = Mapping::parse(&toml.canonical_json(), Format::Json).unwrap();
    assert_eq!(toml.canonical_json(), json.canonical_json());
}

#[test]
fn mapping_test_over_jsonl() {
    let m = checked();
    let (s, t) = schemas();
    let (sv, tv) = (compile_schema(&s).unwrap(), compile_schema(&t).unwrap());
    let good = siti().to_string();
    let mut bad_source = siti();
    bad_source["rt"] = json!("1");
    let mut moved = siti();
    moved["status"] = json!("PINDAH");
    /// Records written, or the failing line and a fragment of the reason.
    type Want = Result<usize, (usize, &'static str)>;
    let cases: Vec<(&str, String, Want)> = vec![
        ("all good", format!("{good}\n\n{good}\n"), Ok(2)),
        (
            "invalid source",
            format!("{good}\n{bad_source}\n"),
            Err((2, "invalid under disdukcapil.penduduk@1: at /rt")),
        ),
        (
            "mapping fails",
            format!("{moved}\n"),
            Err((1, "mapping failed: rule 0 (fail)")),
        ),
        ("not json", "{\n".into(), Err((1, "not JSON"))),
        ("not an object", "[1]\n".into(), Err((1, "invalid under"))),
    ];
    for (name, input, want) in cases {
        let mut out = Vec::new();
        let got = run_test(&m, &sv, &tv, input.as_bytes(), &mut out, &secrets());
        match (want, got) {
            (Ok(n), Ok(got)) => {
                assert_eq!(got, n, "{name}");
                let text = String::from_utf8(out).unwrap();
                assert_eq!(text.lines().count(), n, "{name}");
                for line in text.lines() {
                    assert!(tv.is_valid(&serde_json::from_str(line).unwrap()), "{name}");
                }
            }
            (Err((line, frag)), Err(f)) => {
                assert_eq!(f.record, line, "{name}: {f}");
                assert!(f.reason.contains(frag), "{name}: {f}");
            }
            (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
        }
    }
}

fn p(field: &str, op: Operator, value: Option<Scalar>, values: Vec<Scalar>) -> Filter {
    Filter::Predicate(Predicate::new(field.parse().unwrap(), op, value, values).unwrap())
}

fn s(v: &str) -> Option<Scalar> {
    Some(Scalar::String(v.into()))
}

#[test]
fn push_down_cases() {
    use Operator::*;
    let m = checked();
    let nik = || p("nik", Eq, s("3204015708850001"), vec![]);
    let bdate = || p("birth_date", Lt, s("1990-01-01"), vec![]);
    let cases: Vec<(&str, Filter, Option<Filter>, Option<Filter>)> = vec![
        ("rename", nik(), Some(nik()), None),
        (
            "value map eq through the inverse",
            p("sex", Eq, s("F"), vec![]),
            Some(p("jenis_kelamin", Eq, s("P"), vec![])),
            None,
        ),
        (
            "value map in drops outputs not in the image",
            p(
                "sex",
                In,
                None,
                vec![Scalar::String("F".into()), Scalar::String("X".into())],
            ),
            Some(p("jenis_kelamin", Eq, s("P"), vec![])),
            None,
        ),
        (
            "value map ne",
            p("sex", Ne, s("F"), vec![]),
            Some(p("jenis_kelamin", Eq, s("L"), vec![])),
            None,
        ),
        (
            "value map to several codes",
            p(
                "marital_status",
                In,
                None,
                vec![
                    Scalar::String("married".into()),
                    Scalar::String("widowed".into()),
                ],
            ),
            Some(p(
                "status_perkawinan",
                In,
                None,
                vec![
                    Scalar::String("CERAI MATI".into()),
                    Scalar::String("KAWIN".into()),
                ],
            )),
            None,
        ),
        (
            "value map null test",
            p("marital_status", IsNull, None, vec![]),
            Some(p("status_perkawinan", IsNull, None, vec![])),
            None,
        ),
        (
            "outside the image stays residual",
            p("sex", Eq, s("X"), vec![]),
            None,
            Some(p("sex", Eq, s("X"), vec![])),
        ),
        (
            "kind mismatch stays residual",
            p("sex", Eq, Some(Scalar::Int(1)), vec![]),
            None,
            Some(p("sex", Eq, Some(Scalar::Int(1)), vec![])),
        ),
        (
            "rename with an operand of another type stays residual",
            p("nik", Eq, Some(Scalar::Int(3)), vec![]),
            None,
            Some(p("nik", Eq, Some(Scalar::Int(3)), vec![])),
        ),
        (
            "transformed value stays residual",
            bdate(),
            None,
            Some(bdate()),
        ),
        (
            "masked prefix stays residual",
            p("nik_masked", Prefix, s("***"), vec![]),
            None,
            Some(p("nik_masked", Prefix, s("***"), vec![])),
        ),
        (
            "nested target stays residual",
            p("address", IsNull, None, vec![]),
            None,
            Some(p("address", IsNull, None, vec![])),
        ),
        (
            "all is split per conjunct",
            Filter::All(vec![
                nik(),
                Filter::All(vec![bdate(), p("sex", Eq, s("M"), vec![])]),
            ]),
            Some(Filter::All(vec![
                nik(),
                p("jenis_kelamin", Eq, s("L"), vec![]),
            ])),
            Some(bdate()),
        ),
        (
            "any is pushed whole or not at all",
            Filter::Any(vec![nik(), bdate()]),
            None,
            Some(Filter::Any(vec![nik(), bdate()])),
        ),
        (
            "any of rewritable parts",
            Filter::Any(vec![nik(), p("sex", Eq, s("M"), vec![])]),
            Some(Filter::Any(vec![
                nik(),
                p("jenis_kelamin", Eq, s("L"), vec![]),
            ])),
            None,
        ),
        (
            "not",
            Filter::Not(Box::new(p("sex", Eq, s("M"), vec![]))),
            Some(Filter::Not(Box::new(p(
                "jenis_kelamin",
                Eq,
                s("L"),
                vec![],
            )))),
            None,
        ),
    ];
    for (name, filter, source, residual) in cases {
        let got = m.push_down(&filter);
        assert_eq!(got.source, source, "{name}");
        assert_eq!(got.residual, residual, "{name}");
    }
}
