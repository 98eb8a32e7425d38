//! Record encode and decode: the adapter writing database rows as record
//! texts, the Protobuf batch on the wire both ways, and the broker reading
//! a record's keys (to hold it to the grant) or parsing it (to mask or
//! translate), alone or into the object kept from the record before.
//! 10,000 population-registry-shaped records of 17 columns.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jembatan_core::record::{RecordEncoder, RecordReader, parse_record, record_keys};
use jembatan_proto::v1::RecordBatch;
use prost::Message;
use serde_json::{Value, json};

const RECORDS: usize = 10_000;

const COLUMNS: [&str; 17] = [
    "nik",
    "no_kk",
    "nama_lengkap",
    "tempat_lahir",
    "tgl_lahir",
    "jenis_kelamin",
    "agama",
    "status_perkawinan",
    "pekerjaan",
    "hubungan_keluarga",
    "alamat",
    "rt",
    "rw",
    "kode_desa",
    "kode_kecamatan",
    "status",
    "diperbarui",
];

/// Row `i` as a driver hands it over: one JSON value per column. Values
/// vary with `i` (digits, names, nulls) so no two records are the same.
fn row(i: usize) -> Vec<Value> {
    let names = [
        "SITI RAHAYU",
        "BUDI SANTOSO",
        "DEWI LESTARI",
        "AGUS \"GUS\" WIJAYA",
    ];
    vec![
        json!(format!("3204{:012}", i * 7919 % 1_000_000_000_000)),
        json!(format!("3204{:012}", i / 4)),
        json!(names[i % names.len()]),
        if i.is_multiple_of(4) {
            Value::Null
        } else {
            json!("BANDUNG")
        },
        json!(format!(
            "{}-{:02}-{:02}",
            1940 + i % 80,
            1 + i % 12,
            1 + i % 28
        )),
        json!(if i.is_multiple_of(2) { "L" } else { "P" }),
        json!("ISLAM"),
        json!(["BELUM KAWIN", "KAWIN", "CERAI HIDUP"][i % 3]),
        json!("WIRASWASTA"),
        json!("KEPALA KELUARGA"),
        json!(format!("JL. MERDEKA NO. {}", i % 200)),
        json!(format!("{:03}", i % 20)),
        json!(format!("{:03}", i % 9)),
        json!(format!("320401{:04}", i % 2000)),
        json!("320401"),
        json!(i % 50),
        json!("2026-11-28T09:30:00.123456Z"),
    ]
}

fn records(c: &mut Criterion) {
    let rows: Vec<Vec<Value>> = (0..RECORDS).map(row).collect();
    let mut encoder = RecordEncoder::new(COLUMNS);
    let texts: Vec<String> = rows
        .iter()
        .map(|r| {
            encoder
                .encode(|i| Ok::<_, ()>(r[i].clone().into()))
                .unwrap()
        })
        .collect();
    let batch = RecordBatch {
        records: texts.clone(),
    };
    let wire = batch.encode_to_vec();

    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("encode_10k", |b| {
        b.iter(|| {
            for r in &rows {
                black_box(
                    encoder
                        .encode(|i| Ok::<_, ()>(r[i].clone().into()))
                        .unwrap(),
                );
            }
        })
    });
    group.bench_function("batch_encode_10k", |b| {
        b.iter(|| black_box(batch.encode_to_vec()))
    });
    group.bench_function("batch_decode_10k", |b| {
        b.iter(|| black_box(RecordBatch::decode(wire.as_slice()).unwrap()))
    });
    group.bench_function("keys_10k", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(record_keys(t).unwrap());
            }
        })
    });
    group.bench_function("parse_10k", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(parse_record(t).unwrap());
            }
        })
    });
    let columns: Vec<String> = COLUMNS.map(String::from).to_vec();
    group.bench_function("read_10k", |b| {
        b.iter(|| {
            let mut reader = RecordReader::new(&columns);
            for t in &texts {
                black_box(reader.read(t).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, records);
criterion_main!(benches);
