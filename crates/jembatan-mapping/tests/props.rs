//! Property tests: applying never panics and never yields an invalid
//! record; push-down gives exactly the original filter's result set.

mod common;

use std::sync::LazyLock;

use common::{altered, any_json, columns, digits};
use jembatan_core::{Filter, Operator, Predicate, Scalar};
use jembatan_mapping::{CheckedMapping, Format, Mapping, Secrets, compile_schema};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

struct Fixture {
    mapping: CheckedMapping,
    source: jsonschema::Validator,
    target: jsonschema::Validator,
    secrets: Secrets,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let s: Value = serde_json::from_str(include_str!("data/penduduk.schema.json")).unwrap();
    let t: Value = serde_json::from_str(include_str!("data/warga.schema.json")).unwrap();
    let mapping = Mapping::parse(include_str!("data/penduduk-to-warga.toml"), Format::Toml)
        .unwrap()
        .check(&s, &t)
        .unwrap();
    let mut secrets = Secrets::new();
    secrets.insert("pseudonym", b"k".to_vec());
    Fixture {
        mapping,
        source: compile_schema(&s).unwrap(),
        target: compile_schema(&t).unwrap(),
        secrets,
    }
});

fn opt_text() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), "[A-Z ]{0,12}".prop_map(Value::from)]
}

/// Records valid under `penduduk.schema.json` (dates may still be
/// impossible, like 31-02, and names may be blank).
fn penduduk() -> impl Strategy<Value = Map<String, Value>> {
    let ids = (
        digits(16),
        digits(16),
        digits(3),
        digits(3),
        digits(10),
        digits(6),
    );
    let text = (
        "[ A-Za-z'.]{1,40}",
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        "[ -~]{0,60}",
    );
    let codes = (
        (1u32..=31, 1u32..=12, 1900u32..=2030),
        prop::sample::select(vec!["L", "P"]),
        prop::sample::select(vec![
            json!("BELUM KAWIN"),
            json!("KAWIN"),
            json!("CERAI HIDUP"),
            json!("CERAI MATI"),
            Value::Null,
        ]),
        prop::sample::select(vec!["HIDUP", "MENINGGAL", "PINDAH"]),
        prop::collection::vec(any::<bool>(), 5),
    );
    (ids, text, codes).prop_map(
        |(
            (nik, kk, rt, rw, desa, kec),
            (nama, tempat, agama, kerja, hub, alamat),
            ((d, m, y), jk, kawin, status, keep),
        )| {
            let mut r = Map::new();
            r.insert("nik".into(), nik.into());
            r.insert("no_kk".into(), kk.into());
            r.insert("nama_lengkap".into(), nama.into());
            r.insert("tgl_lahir".into(), format!("{d:02}-{m:02}-{y:04}").into());
            r.insert("jenis_kelamin".into(), jk.into());
            r.insert("alamat".into(), alamat.into());
            r.insert("rt".into(), rt.into());
            r.insert("rw".into(), rw.into());
            r.insert("kode_desa".into(), desa.into());
            r.insert("kode_kecamatan".into(), kec.into());
            r.insert("status".into(), status.into());
            // optional columns are sometimes absent
            for (k, (v, keep)) in [
                ("tempat_lahir", tempat),
                ("agama", agama),
                ("pekerjaan", kerja),
                ("hubungan_keluarga", hub),
                ("status_perkawinan", kawin),
            ]
            .into_iter()
            .zip(keep)
            .map(|((k, v), keep)| (k, (v, keep)))
            {
                if keep {
                    r.insert(k.into(), v);
                }
            }
            r
        },
    )
}

fn garbage() -> impl Strategy<Value = Map<String, Value>> {
    altered(penduduk(), columns(), 6, 3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_records_map_to_valid_records_or_fail_with_a_reason(rec in penduduk()) {
        let f = &*FIXTURE;
        prop_assert!(f.source.is_valid(&Value::Object(rec.clone())), "generator made an invalid record");
        match f.mapping.apply(&rec, &f.secrets) {
            Ok(out) => prop_assert!(f.target.is_valid(&out), "invalid output {out}"),
            Err(e) => prop_assert!(!e.reason.to_string().is_empty()),
        }
    }

    #[test]
    fn garbage_never_panics_nor_yields_invalid_records(rec in garbage()) {
        let f = &*FIXTURE;
        if let Ok(out) = f.mapping.apply(&rec, &f.secrets) {
            prop_assert!(f.target.is_valid(&out), "invalid output {out}");
        }
    }

    #[test]
    fn arbitrary_maps_never_panic(rec in prop::collection::btree_map("[a-z_]{1,12}", any_json(), 0..8)) {
        let f = &*FIXTURE;
        let rec: Map<String, Value> = rec.into_iter().collect();
        if let Ok(out) = f.mapping.apply(&rec, &f.secrets) {
            prop_assert!(f.target.is_valid(&out));
        }
    }
}

/// Records for push-down: the filterable columns from small domains that
/// include null, missing and wrongly typed values.
fn loose_record() -> impl Strategy<Value = Map<String, Value>> {
    let opt = |values: Vec<Value>| {
        prop_oneof![
            4 => prop::sample::select(values).prop_map(Some),
            1 => Just(Some(Value::Null)),
            1 => Just(None),
            1 => Just(Some(json!(1))),
        ]
    };
    (
        penduduk(),
        opt(vec![
            json!("3204015708850001"),
            json!("3204015708850002"),
            json!("1"),
        ]),
        opt(vec![json!("L"), json!("P"), json!("X")]),
        opt(vec![
            json!("KAWIN"),
            json!("BELUM KAWIN"),
            json!("CERAI MATI"),
            json!("JANDA"),
        ]),
        opt(vec![json!("HIDUP"), json!("MENINGGAL")]),
        opt(vec![json!("01-01-1980"), json!("17-08-1995")]),
    )
        .prop_map(|(mut r, nik, jk, kawin, status, tgl)| {
            for (k, v) in [
                ("nik", nik),
                ("jenis_kelamin", jk),
                ("status_perkawinan", kawin),
                ("status", status),
                ("tgl_lahir", tgl),
            ] {
                match v {
                    Some(v) => r.insert(k.into(), v),
                    None => r.remove(k),
                };
            }
            r
        })
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop::sample::select(vec![
        Scalar::String("3204015708850001".into()),
        Scalar::String("1".into()),
        Scalar::String("M".into()),
        Scalar::String("F".into()),
        Scalar::String("X".into()),
        Scalar::String("married".into()),
        Scalar::String("single".into()),
        Scalar::String("widowed".into()),
        Scalar::String("1990-01-01".into()),
        Scalar::String("***".into()),
        Scalar::String("".into()),
        Scalar::Int(1),
        Scalar::Int(1990),
        Scalar::Float(1.5),
        Scalar::Bool(true),
        Scalar::Bool(false),
    ])
}

fn predicate() -> impl Strategy<Value = Filter> {
    let fields = prop::sample::select(vec![
        "nik",
        "sex",
        "marital_status",
        "birth_date",
        "birth_year",
        "alive",
        "nik_masked",
        "full_name",
        "address",
        "source_system",
        "unknown",
    ]);
    let ops = prop::sample::select(vec![
        Operator::Eq,
        Operator::Ne,
        Operator::Lt,
        Operator::Ge,
        Operator::In,
        Operator::Prefix,
        Operator::IsNull,
        Operator::IsNotNull,
    ]);
    (fields, ops, scalar(), prop::collection::vec(scalar(), 1..4)).prop_filter_map(
        "prefix needs a string",
        |(field, op, value, values)| {
            let (value, values) = match op {
                Operator::IsNull | Operator::IsNotNull => (None, vec![]),
                Operator::In => (None, values),
                _ => (Some(value), vec![]),
            };
            Predicate::new(field.parse().unwrap(), op, value, values)
                .ok()
                .map(Filter::Predicate)
        },
    )
}

fn filter() -> impl Strategy<Value = Filter> {
    predicate().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::All),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::Any),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For records that translate, the provider's `source` filter followed
    /// by the broker's `residual` selects exactly what the original filter
    /// selects on the translated records. Records that fail to translate
    /// fail wherever they reach translation; push-down only ever removes
    /// records before it (checked: the source filter never lets through a
    /// record the original would reject while dropping one it accepts).
    #[test]
    fn push_down_is_exact(filter in filter(), recs in prop::collection::vec(loose_record(), 1..16)) {
        let f = &*FIXTURE;
        let split = f.mapping.push_down(&filter);
        if let Some(s) = &split.source {
            prop_assert!(s.validate().is_ok());
            for field in s.fields() {
                prop_assert!(f.mapping.source_fields().contains(field.as_str()));
            }
        }
        for rec in &recs {
            let Ok(out) = f.mapping.apply(rec, &f.secrets) else { continue };
            let out = out.as_object().unwrap();
            let at_source = split.source.as_ref().is_none_or(|s| s.matches(rec));
            let at_broker = split.residual.as_ref().is_none_or(|r| r.matches(out));
            prop_assert_eq!(
                at_source && at_broker,
                filter.matches(out),
                "source {:?} residual {:?} record {:?} output {:?}",
                split.source, split.residual, rec, out
            );
            // stronger: each pushed conjunct has the same three-valued result
            if let (Some(s), None) = (&split.source, &split.residual) {
                prop_assert_eq!(s.eval(rec), filter.eval(out));
            }
        }
    }
}
