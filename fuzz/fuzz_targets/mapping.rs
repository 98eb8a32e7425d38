//! Mapping documents: text → `Mapping::parse` (TOML or JSON) → `check`
//! against a fixed pair of schemas → `apply` to a few records → filter
//! push-down.
//!
//! Input: one selector byte (bit 0: JSON instead of TOML; bit 1: the
//! permissive schema pair instead of the example penduduk → warga pair),
//! then the document text.
//!
//! Asserts: nothing panics; every output `apply` returns is valid under
//! the target schema (the crate's contract).

#![no_main]

use std::sync::OnceLock;

use jembatan_core::Filter;
use jembatan_mapping::{Format, Mapping, Secrets, compile_schema};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const PENDUDUK: &str =
    include_str!("../../crates/jembatan-mapping/tests/data/penduduk.schema.json");
const WARGA: &str = include_str!("../../crates/jembatan-mapping/tests/data/warga.schema.json");

struct Pair {
    source: Value,
    target: Value,
    target_validator: jsonschema::Validator,
    records: Vec<serde_json::Map<String, Value>>,
}

fn pairs() -> &'static [Pair; 2] {
    static PAIRS: OnceLock<[Pair; 2]> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let example = |source: Value, target: Value, records: Vec<Value>| Pair {
            target_validator: compile_schema(&target).expect("target schema"),
            source,
            target,
            records: records
                .into_iter()
                .map(|r| r.as_object().cloned().expect("object"))
                .collect(),
        };
        let siti = json!({
            "nik": "3204015708850001", "no_kk": "3204010101080001",
            "nama_lengkap": " Siti Nurhaliza ", "tempat_lahir": null,
            "tgl_lahir": "17-08-1985", "jenis_kelamin": "P", "agama": "ISLAM",
            "status_perkawinan": "KAWIN", "pekerjaan": "GURU", "hubungan_keluarga": "ISTRI",
            "alamat": "JL. MERDEKA NO. 10", "rt": "001", "rw": "002",
            "kode_desa": "3204012001", "kode_kecamatan": "320401", "status": "HIDUP"
        });
        let odd = json!({
            "nik": "", "tgl_lahir": "31-02-1985", "jenis_kelamin": "X",
            "nama_lengkap": "   ", "rt": 1, "status": "MENINGGAL", "alamat": ["a", null]
        });
        let permissive_source = json!({
            "type": "object",
            "properties": {
                "s": {"type": ["string", "null"]},
                "t": {"type": ["string", "null"]},
                "i": {"type": ["integer", "null"]},
                "f": {"type": ["number", "null"]},
                "b": {"type": ["boolean", "null"]},
                "a.b": {"type": ["string", "null"]},
                "u": {},
                "obj": {
                    "type": "object",
                    "properties": {"x": {"type": "string"}, "y.z": {"type": "string"}}
                }
            }
        });
        let small = json!({
            "s": " 42 ", "t": "17-08-1985", "i": 7, "f": 1.5, "b": true, "a.b": "v",
            "u": [1, "x", null, {"k": [true]}], "obj": {"x": "v", "y.z": "w"}
        });
        let extreme = json!({
            "s": "é\u{0}%_\\-1e400", "i": i64::MIN, "f": -0.0, "b": null,
            "u": "2020-01-31T08:00:00+07:00", "obj": {}
        });
        [
            example(
                serde_json::from_str(PENDUDUK).expect("penduduk schema"),
                serde_json::from_str(WARGA).expect("warga schema"),
                vec![siti, odd.clone(), json!({})],
            ),
            example(
                permissive_source,
                json!({"type": "object"}),
                vec![small, extreme, odd, json!({})],
            ),
        ]
    })
}

fn secrets() -> Secrets {
    let mut s = Secrets::new();
    s.insert("pseudonym", b"test-only-pseudonym-key".to_vec());
    s.insert("k", b"secret-key".to_vec());
    s
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if selector & 1 == 1 {
        Format::Json
    } else {
        Format::Toml
    };
    let Ok(mapping) = Mapping::parse(text, format) else {
        return;
    };
    let pair = &pairs()[usize::from(selector >> 1 & 1)];
    let Ok(checked) = mapping.check(&pair.source, &pair.target) else {
        return;
    };
    let secrets = secrets();
    for record in &pair.records {
        if let Ok(out) = checked.apply(record, &secrets) {
            assert!(
                pair.target_validator.is_valid(&out),
                "apply returned {out} that the target schema refuses"
            );
        }
    }
    // push a few consumer filters down through the mapping
    for f in [
        json!({"field": "nik", "op": "eq", "value": "3204015708850001"}),
        json!({"any": [{"field": "sex", "op": "in", "values": ["M", "F"]},
                       {"not": {"field": "out", "op": "is_null"}}]}),
        json!({"field": "birth_year", "op": "ge", "value": 1980}),
    ] {
        let f: Filter = serde_json::from_value(f).expect("filter");
        let _ = checked.push_down(&f);
    }
});
