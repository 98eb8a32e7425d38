//! Translation throughput: validate (source schema) → map → validate
//! (target schema) over 10,000 synthetic penduduk records.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jembatan_mapping::{Format, Mapping, Secrets, compile_schema};
use serde_json::{Map, Value, json};

const RECORDS: usize = 10_000;

/// A small deterministic generator (SplitMix64), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

fn records() -> Vec<Map<String, Value>> {
    let mut rng = Rng(0x6a65_6d62_6174_616e);
    let first = ["SITI", "BUDI", "AGUS", "DEWI", "RINA", "EKO", "NUR", "PUTU"];
    let last = [
        "RAHAYU", "SANTOSO", "WIJAYA", "LESTARI", "HIDAYAT", "PRATAMA",
    ];
    (0..RECORDS)
        .map(|_| {
            let rec = json!({
                "nik": rng.digits(16),
                "no_kk": rng.digits(16),
                "nama_lengkap": format!("{} {}", rng.pick(&first), rng.pick(&last)),
                "tempat_lahir": if rng.below(4) == 0 { Value::Null } else { json!("BANDUNG") },
                "tgl_lahir": format!("{:02}-{:02}-{}", 1 + rng.below(28), 1 + rng.below(12), 1940 + rng.below(80)),
                "jenis_kelamin": rng.pick(&["L", "P"]),
                "agama": "ISLAM",
                "status_perkawinan": rng.pick(&["BELUM KAWIN", "KAWIN", "CERAI HIDUP", "CERAI MATI"]),
                "pekerjaan": "WIRASWASTA",
                "hubungan_keluarga": "KEPALA KELUARGA",
                "alamat": format!("JL. MERDEKA NO. {}", rng.below(200)),
                "rt": rng.digits(3),
                "rw": rng.digits(3),
                "kode_desa": format!("320401{}", rng.digits(4)),
                "kode_kecamatan": "320401",
                "status": rng.pick(&["HIDUP", "HIDUP", "HIDUP", "MENINGGAL"]),
            });
            match rec {
                Value::Object(m) => m,
                _ => Map::new(),
            }
        })
        .collect()
}

fn translate(c: &mut Criterion) {
    let source: Value =
        serde_json::from_str(include_str!("../tests/data/penduduk.schema.json")).unwrap();
    let target: Value =
        serde_json::from_str(include_str!("../tests/data/warga.schema.json")).unwrap();
    let mapping = Mapping::parse(
        include_str!("../tests/data/penduduk-to-warga.toml"),
        Format::Toml,
    )
    .unwrap()
    .check(&source, &target)
    .unwrap();
    let source_validator = compile_schema(&source).unwrap();
    let target_validator = compile_schema(&target).unwrap();
    let mut secrets = Secrets::new();
    secrets.insert("pseudonym", b"bench-key".to_vec());
    let records: Vec<Value> = records().into_iter().map(Value::Object).collect();

    let mut group = c.benchmark_group("translate");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.bench_function("validate_map_validate_10k", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for rec in &records {
                if !source_validator.is_valid(rec) {
                    continue;
                }
                let Value::Object(map) = rec else { continue };
                if let Ok(out) = mapping.apply(map, &secrets)
                    && target_validator.is_valid(&out)
                {
                    ok += 1;
                }
            }
            assert!(ok > RECORDS / 2);
            black_box(ok)
        })
    });
    let plan = mapping.plan(&source);
    assert!(plan.is_compiled(), "{:?}", plan.not_compiled_because());
    group.bench_function("plan_10k", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for rec in &records {
                let Value::Object(map) = rec else { continue };
                if let Some(planned) = plan.translate(map, &secrets) {
                    black_box(planned.to_json(&[]));
                    ok += 1;
                }
            }
            assert!(ok > RECORDS / 2);
            black_box(ok)
        })
    });
    group.bench_function("apply_only_10k", |b| {
        b.iter(|| {
            for rec in &records {
                if let Value::Object(map) = rec {
                    let _ = black_box(mapping.apply(map, &secrets));
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
