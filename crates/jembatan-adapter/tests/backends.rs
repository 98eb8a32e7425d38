//! The same behaviour checked on SQLite, PostgreSQL and MariaDB: startup
//! checks, type mapping, filters, the injection corpus, streaming, the
//! whitelist and `init`.

mod common;

use common::{Kind, TestDb, fetch, log_entries, records, run};
use jembatan_adapter::{Adapter, AdapterConfig, FetchStatus, LogEntry, introspect};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::Code;

/// Runs a test body once per backend.
macro_rules! per_backend {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                super::$body(Kind::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$body(Kind::Postgres).await
            }
            #[tokio::test]
            async fn mariadb() {
                super::$body(Kind::MySql).await
            }
        }
    )*};
}

per_backend!(
    startup_refuses_whitelist_mismatch,
    type_mapping,
    filters_of_every_operator,
    injection_corpus_matches_literally,
    streaming_in_batches,
    cancelled_fetch_stops_reading,
    whitelist_is_enforced,
    init_lists_every_table,
    unreadable_value_fails_the_fetch,
);

const PENDUDUK: &str = r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "umur", "gaji", "tgl_lahir"]
row_filter = { field = "status", op = "eq", value = "HIDUP" }
"#;

type Row = (
    &'static str,
    &'static str,
    Option<i32>,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

const ROWS: &[Row] = &[
    (
        "3201",
        "Budi Santoso",
        Some(30),
        Some("12500000.00"),
        Some("1994-05-01"),
        "HIDUP",
    ),
    (
        "3202",
        "Siti Aminah",
        Some(25),
        Some("8000000.50"),
        Some("1999-12-31"),
        "HIDUP",
    ),
    ("3203", "Agus", None, None, None, "HIDUP"),
    (
        "3204",
        "50% Diskon",
        Some(41),
        Some("100.00"),
        Some("1983-01-31"),
        "HIDUP",
    ),
    (
        "3205",
        "a_b",
        Some(19),
        Some("0.10"),
        Some("2005-07-07"),
        "HIDUP",
    ),
    (
        "3206",
        "O'Brien \\ \"quoted\"",
        Some(60),
        Some("99999.99"),
        Some("1964-02-29"),
        "HIDUP",
    ),
    (
        "3207",
        "Ñoño 日本",
        Some(33),
        Some("1.00"),
        Some("1991-03-03"),
        "HIDUP",
    ),
    (
        "3208",
        "' OR 1=1 --",
        Some(45),
        Some("2.00"),
        Some("1979-09-09"),
        "HIDUP",
    ),
    (
        "3299",
        "Meninggal",
        Some(70),
        Some("1.00"),
        Some("1950-01-01"),
        "MATI",
    ),
];

/// Creates and fills `penduduk`, binding every value.
async fn seed_penduduk(db: &TestDb) {
    let ddl = match db.kind {
        Kind::Sqlite => {
            "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, umur INTEGER, \
             gaji DECIMAL(15,2), tgl_lahir DATE, status TEXT NOT NULL)"
        }
        Kind::Postgres => {
            "CREATE TABLE penduduk (nik VARCHAR(16) PRIMARY KEY, nama TEXT NOT NULL, umur INTEGER, \
             gaji NUMERIC(15,2), tgl_lahir DATE, status VARCHAR(10) NOT NULL)"
        }
        Kind::MySql => {
            "CREATE TABLE penduduk (nik VARCHAR(16) PRIMARY KEY, nama VARCHAR(4100) NOT NULL, umur INT, \
             gaji DECIMAL(15,2), tgl_lahir DATE, status VARCHAR(10) NOT NULL) CHARACTER SET utf8mb4"
        }
    };
    db.exec(ddl).await;
    match db.kind {
        Kind::Sqlite => {
            let pool = db.sqlite().await;
            for r in ROWS {
                sqlx::query("INSERT INTO penduduk VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(r.0)
                    .bind(r.1)
                    .bind(r.2)
                    .bind(r.3)
                    .bind(r.4)
                    .bind(r.5)
                    .execute(&pool)
                    .await
                    .expect("insert");
            }
            pool.close().await;
        }
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            for r in ROWS {
                sqlx::query("INSERT INTO penduduk VALUES ($1, $2, $3, $4::numeric, $5::date, $6)")
                    .bind(r.0)
                    .bind(r.1)
                    .bind(r.2)
                    .bind(r.3)
                    .bind(r.4)
                    .bind(r.5)
                    .execute(&pool)
                    .await
                    .expect("insert");
            }
            pool.close().await;
        }
        Kind::MySql => {
            let pool = sqlx::MySqlPool::connect(&db.url).await.expect("connect");
            for r in ROWS {
                sqlx::query("INSERT INTO penduduk VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(r.0)
                    .bind(r.1)
                    .bind(r.2)
                    .bind(r.3)
                    .bind(r.4)
                    .bind(r.5)
                    .execute(&pool)
                    .await
                    .expect("insert");
            }
            pool.close().await;
        }
    }
}

/// The `nik`s a filter selects, in key order.
async fn niks(adapter: &std::sync::Arc<Adapter>, filter: Option<Value>) -> Vec<String> {
    records(adapter, fetch("penduduk", &["nik"], filter))
        .await
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).expect("record is JSON");
            v["nik"].as_str().expect("nik").to_owned()
        })
        .collect()
}

async fn startup_refuses_whitelist_mismatch(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    seed_penduduk(&db).await;
    let config = db.config(
        r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
columns = ["nik", "nama_salah", "umur"]
row_filter = { field = "status_lama", op = "eq", value = "HIDUP" }

[[datasets]]
name = "kk"
table = "keluarga"
columns = ["nkk"]
"#,
    );
    let err = Adapter::connect(&config)
        .await
        .expect_err("must refuse")
        .to_string();
    // MariaDB hides tables a user may not read: it cannot tell the two apart
    let missing_table = match kind {
        Kind::MySql => {
            "no table \"keluarga\", or this database user has no SELECT \
             privilege on it (MariaDB and MySQL do not tell the two apart)"
        }
        _ => "no table \"keluarga\"",
    };
    assert_eq!(
        err,
        format!(
            "whitelist does not match the database: \
             dataset penduduk: table \"penduduk\" has no column \"nama_salah\"; \
             dataset penduduk: table \"penduduk\" has no column \"status_lama\"; \
             dataset kk: {missing_table}"
        )
    );
    if kind == Kind::Postgres {
        db.exec("CREATE TABLE larik (id integer PRIMARY KEY, tags integer[])")
            .await;
        let config = db.config(
            "[[datasets]]\nname = \"larik\"\ntable = \"larik\"\ncolumns = [\"id\", \"tags\"]\n",
        );
        let err = Adapter::connect(&config)
            .await
            .expect_err("must refuse")
            .to_string();
        assert!(
            err.contains(
                "column \"tags\" of table \"larik\" has type _int4, which the adapter cannot serve"
            ),
            "{err}"
        );
    }
    if kind == Kind::Sqlite {
        let mut config = db.config("");
        let missing = db.dir.path().join("tidak-ada.db");
        config.database = format!("sqlite://{}", missing.display());
        let err = Adapter::connect(&config)
            .await
            .expect_err("missing file")
            .to_string();
        assert!(err.starts_with("cannot open database sqlite://"), "{err}");
        assert!(
            !missing.exists(),
            "the adapter must not create a database file"
        );
    }
    // a matching whitelist starts
    db.adapter(PENDUDUK).await.close().await;
    db.drop_namespace().await;
}

/// DDL, columns, their kinds, the two rows as JSON, and typed filters with
/// the number of rows each selects.
type Mapping = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    Value,
    Value,
    Vec<(Value, usize)>,
);

async fn type_mapping(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    let (ddl, columns, kinds, row1, row2, typed_filters): Mapping = match kind {
        Kind::Sqlite => (
            "CREATE TABLE tipe (id INTEGER PRIMARY KEY, i INTEGER, r REAL, gaji DECIMAL(15,2), \
                   gaji_teks TEXT, b BOOLEAN, d DATE, ts DATETIME, t TIME, s VARCHAR(10), foto BLOB, \
                   j JSON, bebas);\n\
                 INSERT INTO tipe VALUES (1, 9007199254740993, 0.1, 12500000.00, '12500000.00', 1, \
                   '2020-01-31', '2020-01-31 08:09:10', '23:59:58', 'teks', X'00FF10', '{\"a\": [1, 2]}', 'x');\n\
                 INSERT INTO tipe (id) VALUES (2)",
            &[
                "id",
                "i",
                "r",
                "gaji",
                "gaji_teks",
                "b",
                "d",
                "ts",
                "t",
                "s",
                "foto",
                "j",
                "bebas",
            ],
            &[
                "integer", "integer", "number", "decimal", "string", "boolean", "date", "datetime",
                "time", "string", "bytes", "json", "string",
            ],
            json!({"id": 1, "i": 9007199254740993_i64, "r": 0.1, "gaji": 12500000, "gaji_teks": "12500000.00",
                       "b": 1, "d": "2020-01-31", "ts": "2020-01-31 08:09:10", "t": "23:59:58", "s": "teks",
                       "foto": "AP8Q", "j": {"a": [1, 2]}, "bebas": "x"}),
            json!({"id": 2, "i": null, "r": null, "gaji": null, "gaji_teks": null, "b": null, "d": null,
                       "ts": null, "t": null, "s": null, "foto": null, "j": null, "bebas": null}),
            vec![
                (json!({"field": "d", "op": "eq", "value": "2020-01-31"}), 1),
                (
                    json!({"field": "gaji", "op": "eq", "value": "12500000.00"}),
                    1,
                ),
                (json!({"field": "r", "op": "lt", "value": 1}), 1),
                (json!({"field": "b", "op": "eq", "value": true}), 1),
                (
                    json!({"field": "ts", "op": "ge", "value": "2020-01-31 00:00:00"}),
                    1,
                ),
            ],
        ),
        Kind::Postgres => (
            "CREATE TYPE suasana AS ENUM ('senang', 'sedih');\n\
                 CREATE TABLE tipe (id integer PRIMARY KEY, i2 smallint, i8 bigint, f4 real, \
                   f8 double precision, gaji numeric(15,2), b boolean, d date, ts timestamp, \
                   tstz timestamptz, t time, s text, vc varchar(20), c char(3), foto bytea, j jsonb, \
                   js json, u uuid, e suasana);\n\
                 INSERT INTO tipe VALUES (1, -7, 9007199254740993, 1.5, 0.1, 12500000.00, true, \
                   '2020-01-31', '2020-01-31 08:09:10.123456', '2020-01-31 08:09:10+07', '23:59:58.5', \
                   'teks', 'vc', 'ab', '\\x00ff10', '{\"a\": [1, 2]}', '{\"b\":null}', \
                   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'senang');\n\
                 INSERT INTO tipe (id, f8) VALUES (2, 'NaN')",
            &[
                "id", "i2", "i8", "f4", "f8", "gaji", "b", "d", "ts", "tstz", "t", "s", "vc", "c",
                "foto", "j", "js", "u", "e",
            ],
            &[
                "integer", "integer", "integer", "number", "number", "decimal", "boolean", "date",
                "datetime", "datetime", "time", "string", "string", "string", "bytes", "json",
                "json", "string", "string",
            ],
            json!({"id": 1, "i2": -7, "i8": 9007199254740993_i64, "f4": 1.5, "f8": 0.1, "gaji": "12500000.00",
                       "b": true, "d": "2020-01-31", "ts": "2020-01-31T08:09:10.123456",
                       "tstz": "2020-01-31T01:09:10Z", "t": "23:59:58.500000", "s": "teks", "vc": "vc",
                       "c": "ab ", "foto": "AP8Q", "j": {"a": [1, 2]}, "js": {"b": null},
                       "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "e": "senang"}),
            json!({"id": 2, "i2": null, "i8": null, "f4": null, "f8": null, "gaji": null, "b": null,
                       "d": null, "ts": null, "tstz": null, "t": null, "s": null, "vc": null, "c": null,
                       "foto": null, "j": null, "js": null, "u": null, "e": null}),
            vec![
                (json!({"field": "d", "op": "eq", "value": "2020-01-31"}), 1),
                (json!({"field": "gaji", "op": "eq", "value": "12500000"}), 1),
                (
                    json!({"field": "gaji", "op": "gt", "value": 12500000.001}),
                    0,
                ),
                (
                    json!({"field": "tstz", "op": "eq", "value": "2020-01-31T08:09:10+07:00"}),
                    1,
                ),
                (
                    json!({"field": "ts", "op": "gt", "value": "2020-01-31T08:09:10"}),
                    1,
                ),
                (json!({"field": "t", "op": "gt", "value": "23:59:58"}), 1),
                (
                    json!({"field": "u", "op": "eq", "value": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}),
                    1,
                ),
                (
                    json!({"field": "e", "op": "in", "values": ["senang", "marah"]}),
                    1,
                ),
                (json!({"field": "e", "op": "prefix", "value": "sen"}), 1),
                (json!({"field": "c", "op": "eq", "value": "ab"}), 1),
                (json!({"field": "b", "op": "eq", "value": true}), 1),
                (json!({"field": "f4", "op": "eq", "value": 1.5}), 1),
                (json!({"field": "j", "op": "is_not_null"}), 1),
            ],
        ),
        Kind::MySql => (
            "CREATE TABLE tipe (id INT PRIMARY KEY, i2 SMALLINT, i8 BIGINT, u8 BIGINT UNSIGNED, \
                   f4 FLOAT, f8 DOUBLE, gaji DECIMAL(15,2), b TINYINT(1), bo BOOLEAN, d DATE, \
                   ts DATETIME(6), tstz TIMESTAMP(6) NULL, t TIME(6), s TEXT, vc VARCHAR(20), c CHAR(3), \
                   foto VARBINARY(10), bl BLOB, j JSON, e ENUM('senang','sedih'), y YEAR, u UUID) \
                   CHARACTER SET utf8mb4;\n\
                 INSERT INTO tipe VALUES (1, -7, 9007199254740993, 18446744073709551615, 1.5, 0.1, \
                   12500000.00, 1, 0, '2020-01-31', '2020-01-31 08:09:10.123456', '2020-01-31 01:09:10', \
                   '23:59:58.5', 'teks', 'vc', 'ab', X'00FF10', X'01', '{\"a\": [1, 2]}', 'senang', 2024, \
                   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');\n\
                 INSERT INTO tipe (id) VALUES (2)",
            &[
                "id", "i2", "i8", "u8", "f4", "f8", "gaji", "b", "bo", "d", "ts", "tstz", "t", "s",
                "vc", "c", "foto", "bl", "j", "e", "y", "u",
            ],
            &[
                "integer", "integer", "integer", "integer", "number", "number", "decimal",
                "boolean", "boolean", "date", "datetime", "datetime", "time", "string", "string",
                "string", "bytes", "bytes", "json", "string", "integer", "string",
            ],
            json!({"id": 1, "i2": -7, "i8": 9007199254740993_i64, "u8": 18446744073709551615_u64,
                       "f4": 1.5, "f8": 0.1, "gaji": "12500000.00", "b": true, "bo": false,
                       "d": "2020-01-31", "ts": "2020-01-31T08:09:10.123456", "tstz": "2020-01-31T01:09:10Z",
                       "t": "23:59:58.500000", "s": "teks", "vc": "vc", "c": "ab", "foto": "AP8Q",
                       "bl": "AQ==", "j": {"a": [1, 2]}, "e": "senang", "y": 2024,
                       "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}),
            json!({"id": 2, "i2": null, "i8": null, "u8": null, "f4": null, "f8": null, "gaji": null,
                       "b": null, "bo": null, "d": null, "ts": null, "tstz": null, "t": null, "s": null,
                       "vc": null, "c": null, "foto": null, "bl": null, "j": null, "e": null, "y": null,
                       "u": null}),
            vec![
                (json!({"field": "d", "op": "eq", "value": "2020-01-31"}), 1),
                (json!({"field": "gaji", "op": "eq", "value": "12500000"}), 1),
                (
                    json!({"field": "tstz", "op": "eq", "value": "2020-01-31T08:09:10+07:00"}),
                    1,
                ),
                (
                    json!({"field": "ts", "op": "gt", "value": "2020-01-31 08:09:10"}),
                    1,
                ),
                (json!({"field": "b", "op": "eq", "value": true}), 1),
                (
                    json!({"field": "u", "op": "eq", "value": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}),
                    1,
                ),
                (json!({"field": "e", "op": "eq", "value": "senang"}), 1),
                (json!({"field": "y", "op": "ge", "value": 2024}), 1),
            ],
        ),
    };
    db.exec(ddl).await;
    let datasets = format!(
        "[[datasets]]\nname = \"tipe\"\ntable = \"tipe\"\nkey = \"id\"\ncolumns = [{}]\n",
        columns
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let adapter = db.adapter(&datasets).await;
    let described = adapter.describe();
    let got_kinds: Vec<String> = described.datasets[0]
        .columns
        .iter()
        .map(|c| {
            jembatan_proto::v1::ColumnKind::try_from(c.kind)
                .expect("kind")
                .as_str_name()
                .trim_start_matches("COLUMN_KIND_")
                .to_ascii_lowercase()
        })
        .collect();
    assert_eq!(got_kinds, kinds, "{kind:?}");
    assert_eq!(described.datasets[0].key_column, "id");
    let recs = records(&adapter, fetch("tipe", columns, None)).await;
    assert_eq!(recs.len(), 2);
    // exact text: keys in requested order, values as mapped
    let exact = format!(
        "{{{}}}",
        columns
            .iter()
            .map(|c| format!("{}:{}", json!(c), row1[c]))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(recs[0], exact, "{kind:?}");
    let parsed: Value = serde_json::from_str(&recs[0]).expect("json");
    assert_eq!(parsed, row1, "{kind:?}");
    let parsed: Value = serde_json::from_str(&recs[1]).expect("json");
    assert_eq!(parsed, row2, "{kind:?}");
    // keys follow the requested order, not the table's
    let rev = records(&adapter, fetch("tipe", &[columns[2], columns[0]], None)).await;
    assert!(
        rev[0].starts_with(&format!("{{\"{}\":", columns[2])),
        "{}",
        rev[0]
    );
    for (filter, want) in typed_filters {
        let got = records(&adapter, fetch("tipe", &["id"], Some(filter.clone()))).await;
        assert_eq!(got.len(), want, "{kind:?} {filter}");
        if want == 1 {
            assert_eq!(got[0], "{\"id\":1}", "{kind:?} {filter}");
        }
    }
    adapter.close().await;
    db.drop_namespace().await;
}

async fn filters_of_every_operator(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    seed_penduduk(&db).await;
    let adapter = db.adapter(PENDUDUK).await;
    let all = [
        "3201", "3202", "3203", "3204", "3205", "3206", "3207", "3208",
    ];
    let cases: Vec<(&str, Option<Value>, Vec<&str>)> = vec![
        ("no filter (row_filter hides 3299)", None, all.to_vec()),
        (
            "eq",
            Some(json!({"field": "nik", "op": "eq", "value": "3201"})),
            vec!["3201"],
        ),
        (
            "eq on a row_filter-hidden row",
            Some(json!({"field": "nik", "op": "eq", "value": "3299"})),
            vec![],
        ),
        (
            "ne skips nulls",
            Some(json!({"field": "umur", "op": "ne", "value": 30})),
            vec!["3202", "3204", "3205", "3206", "3207", "3208"],
        ),
        (
            "lt",
            Some(json!({"field": "umur", "op": "lt", "value": 25})),
            vec!["3205"],
        ),
        (
            "le",
            Some(json!({"field": "umur", "op": "le", "value": 25})),
            vec!["3202", "3205"],
        ),
        (
            "gt",
            Some(json!({"field": "umur", "op": "gt", "value": 45})),
            vec!["3206"],
        ),
        (
            "ge",
            Some(json!({"field": "umur", "op": "ge", "value": 45})),
            vec!["3206", "3208"],
        ),
        (
            "in",
            Some(json!({"field": "nik", "op": "in", "values": ["3201", "3205", "3299", "9999"]})),
            vec!["3201", "3205"],
        ),
        (
            "prefix",
            Some(json!({"field": "nama", "op": "prefix", "value": "Budi"})),
            vec!["3201"],
        ),
        (
            "prefix with literal %",
            Some(json!({"field": "nama", "op": "prefix", "value": "50%"})),
            vec!["3204"],
        ),
        (
            "prefix % alone",
            Some(json!({"field": "nama", "op": "prefix", "value": "%"})),
            vec![],
        ),
        (
            "prefix _ alone",
            Some(json!({"field": "nama", "op": "prefix", "value": "_"})),
            vec![],
        ),
        (
            "prefix with literal _",
            Some(json!({"field": "nama", "op": "prefix", "value": "a_"})),
            vec!["3205"],
        ),
        (
            "prefix a% is literal",
            Some(json!({"field": "nama", "op": "prefix", "value": "a%"})),
            vec![],
        ),
        (
            "prefix with backslash",
            Some(json!({"field": "nama", "op": "prefix", "value": "O'Brien \\ \""})),
            vec!["3206"],
        ),
        (
            "is_null",
            Some(json!({"field": "umur", "op": "is_null"})),
            vec!["3203"],
        ),
        (
            "is_not_null",
            Some(json!({"field": "gaji", "op": "is_not_null"})),
            vec!["3201", "3202", "3204", "3205", "3206", "3207", "3208"],
        ),
        (
            "date ge",
            Some(json!({"field": "tgl_lahir", "op": "ge", "value": "1990-01-01"})),
            vec!["3201", "3202", "3205", "3207"],
        ),
        (
            "date eq leap day",
            Some(json!({"field": "tgl_lahir", "op": "eq", "value": "1964-02-29"})),
            vec!["3206"],
        ),
        (
            "decimal gt string",
            Some(json!({"field": "gaji", "op": "gt", "value": "10000000"})),
            vec!["3201"],
        ),
        (
            "decimal eq integer",
            Some(json!({"field": "gaji", "op": "eq", "value": 100})),
            vec!["3204"],
        ),
        (
            "decimal eq number",
            Some(json!({"field": "gaji", "op": "eq", "value": 0.1})),
            vec!["3205"],
        ),
        (
            "decimal eq scaled string",
            Some(json!({"field": "gaji", "op": "eq", "value": "8000000.5"})),
            vec!["3202"],
        ),
        ("empty all is true", Some(json!({"all": []})), all.to_vec()),
        ("empty any is false", Some(json!({"any": []})), vec![]),
        (
            "not",
            Some(json!({"not": {"field": "nik", "op": "eq", "value": "3201"}})),
            vec!["3202", "3203", "3204", "3205", "3206", "3207", "3208"],
        ),
        (
            "all",
            Some(
                json!({"all": [{"field": "umur", "op": "gt", "value": 20}, {"field": "umur", "op": "lt", "value": 40}]}),
            ),
            vec!["3201", "3202", "3207"],
        ),
        (
            "any",
            Some(
                json!({"any": [{"field": "nik", "op": "eq", "value": "3201"}, {"field": "umur", "op": "is_null"}]}),
            ),
            vec!["3201", "3203"],
        ),
        (
            "not any (nulls stay unknown)",
            Some(
                json!({"not": {"any": [{"field": "umur", "op": "lt", "value": 30}, {"field": "umur", "op": "gt", "value": 40}]}}),
            ),
            vec!["3201", "3207"],
        ),
    ];
    for (name, filter, want) in cases {
        assert_eq!(niks(&adapter, filter).await, want, "{kind:?}: {name}");
    }
    // limit, in key order
    let mut req = fetch("penduduk", &["nik"], None);
    req.limit = 3;
    assert_eq!(
        records(&adapter, req).await,
        vec![
            "{\"nik\":\"3201\"}",
            "{\"nik\":\"3202\"}",
            "{\"nik\":\"3203\"}"
        ]
    );
    // exact record text for a row with quotes, backslash and unicode
    let recs = records(
        &adapter,
        fetch(
            "penduduk",
            &["nama", "nik"],
            Some(json!({"field": "nik", "op": "in", "values": ["3206", "3207"]})),
        ),
    )
    .await;
    assert_eq!(
        recs,
        vec![
            r#"{"nama":"O'Brien \\ \"quoted\"","nik":"3206"}"#,
            r#"{"nama":"Ñoño 日本","nik":"3207"}"#,
        ]
    );
    adapter.close().await;
    db.drop_namespace().await;
}

async fn injection_corpus_matches_literally(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    seed_penduduk(&db).await;
    let adapter = db.adapter(PENDUDUK).await;
    let long = "x'".repeat(2000);
    let corpus: Vec<(String, Vec<&str>)> = vec![
        ("' OR 1=1 --".into(), vec!["3208"]),
        ("' OR '1'='1".into(), vec![]),
        ("\"; DROP TABLE penduduk; --".into(), vec![]),
        ("'; DROP TABLE penduduk; --".into(), vec![]),
        ("`; DROP TABLE penduduk; --".into(), vec![]),
        ("%".into(), vec![]),
        ("_".into(), vec![]),
        ("\\".into(), vec![]),
        ("\\'".into(), vec![]),
        ("\\' OR 1=1 -- ".into(), vec![]),
        ("O'Brien \\ \"quoted\"".into(), vec!["3206"]),
        ("Ñoño 日本".into(), vec!["3207"]),
        ("🙂'--".into(), vec![]),
        (long, vec![]),
    ];
    for (value, want) in &corpus {
        let eq = niks(
            &adapter,
            Some(json!({"field": "nama", "op": "eq", "value": value})),
        )
        .await;
        assert_eq!(&eq, want, "{kind:?}: eq {value:.40}");
        let inn = niks(
            &adapter,
            Some(json!({"field": "nama", "op": "in", "values": [value, "tidak ada"]})),
        )
        .await;
        assert_eq!(&inn, want, "{kind:?}: in {value:.40}");
        let prefix = niks(
            &adapter,
            Some(json!({"field": "nama", "op": "prefix", "value": value})),
        )
        .await;
        assert_eq!(&prefix, want, "{kind:?}: prefix {value:.40}");
        let ne = niks(
            &adapter,
            Some(json!({"not": {"field": "nama", "op": "eq", "value": value}})),
        )
        .await;
        assert_eq!(ne.len(), 8 - want.len(), "{kind:?}: not eq {value:.40}");
    }
    // the table and its rows are untouched
    assert_eq!(db.count("penduduk").await, ROWS.len() as i64);
    adapter.close().await;
    db.drop_namespace().await;
}

async fn seed_besar(db: &TestDb) {
    let sql = match db.kind {
        Kind::Sqlite => {
            "CREATE TABLE besar (id INTEGER PRIMARY KEY, val TEXT NOT NULL);\n\
             INSERT INTO besar WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) \
             SELECT x, 'v' || x FROM c"
        }
        Kind::Postgres => {
            "CREATE TABLE besar (id integer PRIMARY KEY, val text NOT NULL);\n\
             INSERT INTO besar SELECT x, 'v' || x FROM generate_series(1, 5000) AS x"
        }
        Kind::MySql => {
            "CREATE TABLE besar (id INT PRIMARY KEY, val VARCHAR(20) NOT NULL);\n\
             INSERT INTO besar SELECT seq, CONCAT('v', seq) FROM seq_1_to_5000"
        }
    };
    db.exec(sql).await;
}

const BESAR: &str = "[[datasets]]\nname = \"besar\"\ntable = \"besar\"\nkey = \"id\"\ncolumns = [\"id\", \"val\"]\n";

async fn streaming_in_batches(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    seed_besar(&db).await;
    let adapter = db.adapter(BESAR).await;
    let mut req = fetch("besar", &["id", "val"], None);
    req.batch_size = 1000;
    let exchange = req.exchange_id.clone();
    let batches = run(&adapter, req).await.expect("fetch");
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1000; 5]
    );
    let all: Vec<String> = batches.concat();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r, &format!("{{\"id\":{},\"val\":\"v{}\"}}", i + 1, i + 1));
    }
    let mut h = Sha256::new();
    for r in &all {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    let entries = log_entries(&db.receipt_log(), 1).await;
    let LogEntry::Served(served) = &entries[0] else {
        panic!("served entry expected")
    };
    assert_eq!(served.exchange_id, exchange);
    assert_eq!(served.status, FetchStatus::Ok);
    assert_eq!(served.rows, 5000);
    assert_eq!(
        served.bytes,
        all.iter().map(|r| r.len() as u64).sum::<u64>()
    );
    assert_eq!(served.payload_sha256, hex::encode(h.finalize()));
    assert_eq!(served.dataset, "disdukcapil.besar");
    assert_eq!(served.consumer, "dinsos");
    assert_eq!(served.purpose, "verifikasi bansos");
    assert_eq!(served.columns, vec!["id", "val"]);

    // the config default (100) when the request leaves batch_size at 0
    let batches = run(&adapter, fetch("besar", &["id"], None))
        .await
        .expect("fetch");
    assert_eq!(batches.len(), 50);
    // requests above the cap get 10 000
    let mut req = fetch("besar", &["id"], None);
    req.batch_size = 50_000;
    assert_eq!(run(&adapter, req).await.expect("fetch").len(), 1);
    // limit with a partial last batch
    let mut req = fetch(
        "besar",
        &["id"],
        Some(json!({"field": "id", "op": "gt", "value": 100})),
    );
    req.batch_size = 500;
    req.limit = 1234;
    let batches = run(&adapter, req).await.expect("fetch");
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![500, 500, 234]
    );
    assert_eq!(batches[0][0], "{\"id\":101}");
    adapter.close().await;
    db.drop_namespace().await;
}

async fn cancelled_fetch_stops_reading(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    seed_besar(&db).await;
    let adapter = db.adapter(BESAR).await;
    let mut req = fetch("besar", &["id", "val"], None);
    req.batch_size = 10;
    let mut stream = adapter.fetch(req).expect("fetch");
    use futures::StreamExt;
    let first = stream.next().await.expect("one batch").expect("ok");
    assert_eq!(first.batch.expect("batch").records.len(), 10);
    drop(stream);
    let entries = log_entries(&db.receipt_log(), 1).await;
    let LogEntry::Served(served) = &entries[0] else {
        panic!("served entry expected")
    };
    assert_eq!(served.status, FetchStatus::Cancelled);
    // the bounded channel holds a few batches; the cursor went no further
    assert!(
        served.rows >= 10 && served.rows <= 100,
        "rows {}",
        served.rows
    );
    adapter.close().await;
    db.drop_namespace().await;
}

async fn whitelist_is_enforced(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    seed_penduduk(&db).await;
    let adapter = db.adapter(PENDUDUK).await;
    let mut other_agency = fetch("penduduk", &["nik"], None);
    other_agency.dataset = "dinsos.penduduk".into();
    let mut bare = fetch("penduduk", &["nik"], None);
    bare.dataset = "penduduk".into();
    let cases: Vec<(&str, jembatan_proto::v1::FetchRequest, Code, &str)> = vec![
        (
            "unknown dataset",
            fetch("keluarga", &["nik"], None),
            Code::PermissionDenied,
            "dataset \"disdukcapil.keluarga\" is not on the whitelist",
        ),
        (
            "other agency",
            other_agency,
            Code::PermissionDenied,
            "dataset \"dinsos.penduduk\" is not on the whitelist",
        ),
        (
            "no agency part",
            bare,
            Code::PermissionDenied,
            "dataset \"penduduk\" is not on the whitelist",
        ),
        (
            "column off the whitelist (exists in table)",
            fetch("penduduk", &["nik", "status"], None),
            Code::PermissionDenied,
            "columns not on the whitelist of dataset disdukcapil.penduduk: \"status\"",
        ),
        (
            "several columns off the whitelist",
            fetch("penduduk", &["password", "nik", "status"], None),
            Code::PermissionDenied,
            "\"password\", \"status\"",
        ),
        (
            "column that looks like SQL",
            fetch("penduduk", &["nik\" FROM penduduk; --"], None),
            Code::PermissionDenied,
            "columns not on the whitelist",
        ),
        (
            "filter on a non-exposed column",
            fetch(
                "penduduk",
                &["nik"],
                Some(json!({"field": "status", "op": "eq", "value": "MATI"})),
            ),
            Code::PermissionDenied,
            "filter names fields not on the whitelist of dataset disdukcapil.penduduk: \"status\"",
        ),
        (
            "nested filter on a non-exposed column",
            fetch(
                "penduduk",
                &["nik"],
                Some(json!({"not": {"any": [{"field": "status", "op": "is_null"}]}})),
            ),
            Code::PermissionDenied,
            "\"status\"",
        ),
        (
            "no columns",
            fetch("penduduk", &[], None),
            Code::InvalidArgument,
            "at least one column",
        ),
        (
            "duplicate column",
            fetch("penduduk", &["nik", "nik"], None),
            Code::InvalidArgument,
            "requested more than once",
        ),
        (
            "string for an integer column",
            fetch(
                "penduduk",
                &["nik"],
                Some(json!({"field": "umur", "op": "eq", "value": "12"})),
            ),
            Code::InvalidArgument,
            "field umur holds integer values; the value given (a string of 2 bytes) is not an integer",
        ),
        (
            "bad date",
            fetch(
                "penduduk",
                &["nik"],
                Some(json!({"field": "tgl_lahir", "op": "lt", "value": "kemarin"})),
            ),
            Code::InvalidArgument,
            "field tgl_lahir holds date values",
        ),
    ];
    for (name, req, code, want) in cases {
        let status = run(&adapter, req).await.expect_err(name);
        assert_eq!(status.code(), code, "{kind:?} {name}: {status:?}");
        assert!(
            status.message().contains(want),
            "{kind:?} {name}: {}",
            status.message()
        );
    }
    // a filter that is not a valid filter at all
    let mut req = fetch("penduduk", &["nik"], None);
    req.filter = Some(jembatan_proto::v1::Filter { kind: None });
    let status = run(&adapter, req).await.expect_err("empty filter");
    assert_eq!(status.code(), Code::InvalidArgument);
    // refusals are not served: nothing in the receipt log
    assert!(
        jembatan_adapter::read_receipt_log(&db.receipt_log())
            .expect("log")
            .is_empty()
    );
    adapter.close().await;
    db.drop_namespace().await;
}

/// Uncomments the block of `table` in a generated config.
fn uncomment(text: &str, table: &str) -> String {
    let header = format!("# --- table {table} (");
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with(&header) {
            inside = true;
            out.push(line.to_owned());
            continue;
        }
        if inside && let Some(rest) = line.strip_prefix("# ") {
            if rest == "]" {
                inside = false;
            }
            out.push(rest.to_owned());
            continue;
        }
        out.push(line.to_owned());
    }
    out.join("\n")
}

async fn init_lists_every_table(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    seed_penduduk(&db).await;
    seed_besar(&db).await;
    if kind == Kind::Postgres {
        db.exec("CREATE TABLE larik (id integer PRIMARY KEY, tags integer[])")
            .await;
    }
    let text = introspect(&db.url).await.expect("introspect");
    // deny by default: the generated file parses and exposes nothing
    let config = AdapterConfig::from_toml(&text, db.dir.path()).expect("generated config parses");
    assert!(config.datasets.is_empty(), "{text}");
    assert_eq!(config.database, db.url);
    let besar_at = text
        .find("# --- table besar (2 columns)")
        .expect("besar listed");
    let penduduk_at = text
        .find("# --- table penduduk (6 columns)")
        .expect("penduduk listed");
    assert!(besar_at < penduduk_at, "tables sorted by name");
    // SQLite lets a non-INTEGER primary key hold NULL
    let (nik_type, umur_type) = match kind {
        Kind::Sqlite => ("TEXT → string, nullable", "INTEGER"),
        Kind::Postgres => ("character varying → string", "integer"),
        Kind::MySql => ("varchar(16) → string", "int(11)"),
    };
    assert!(
        text.contains(&format!("#   \"nik\",       # {nik_type}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "#   \"umur\",      # {umur_type} → integer, nullable\n"
        )),
        "{text}"
    );
    assert!(text.contains("# key = \"nik\"\n"), "{text}");
    if kind == Kind::Postgres {
        assert!(
            text.contains("#   # \"tags\", # _int4 → unsupported\n"),
            "{text}"
        );
    }
    // uncommenting a block exposes exactly that table
    let edited = uncomment(&text, "penduduk");
    let config = AdapterConfig::from_toml(&edited, db.dir.path()).expect("edited config parses");
    assert_eq!(config.datasets.len(), 1, "{edited}");
    let d = &config.datasets[0];
    assert_eq!(d.name, "penduduk");
    assert_eq!(d.key.as_ref().map(|k| k.as_str()), Some("nik"));
    let cols: Vec<&str> = d.columns.iter().map(|c| c.as_str()).collect();
    assert_eq!(cols, ["nik", "nama", "umur", "gaji", "tgl_lahir", "status"]);
    let adapter = Adapter::connect(&config)
        .await
        .expect("generated whitelist matches");
    assert_eq!(adapter.describe().datasets.len(), 1);
    adapter.close().await;
    if kind == Kind::Postgres {
        let edited = uncomment(&text, "larik");
        let config = AdapterConfig::from_toml(&edited, db.dir.path()).expect("parses");
        assert_eq!(
            config.datasets[0].columns.len(),
            1,
            "unsupported column stays commented"
        );
    }
    db.drop_namespace().await;
}

async fn unreadable_value_fails_the_fetch(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    // three good rows, then one the driver cannot decode
    let sql = match kind {
        Kind::Sqlite => {
            "CREATE TABLE waktu (id INTEGER PRIMARY KEY, v TEXT);\n\
             INSERT INTO waktu VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, CAST(X'FFFE' AS TEXT))"
        }
        Kind::Postgres => {
            "CREATE TABLE waktu (id integer PRIMARY KEY, v date);\n\
             INSERT INTO waktu VALUES (1, '2020-01-01'), (2, '2020-01-02'), (3, '2020-01-03'), (4, 'infinity')"
        }
        Kind::MySql => {
            "CREATE TABLE waktu (id INT PRIMARY KEY, v TIME);\n\
             INSERT INTO waktu VALUES (1, '01:00:00'), (2, '02:00:00'), (3, '03:00:00'), (4, '25:00:00')"
        }
    };
    db.exec(sql).await;
    let adapter = db
        .adapter("[[datasets]]\nname = \"waktu\"\ntable = \"waktu\"\nkey = \"id\"\ncolumns = [\"id\", \"v\"]\n")
        .await;
    let mut req = fetch("waktu", &["id", "v"], None);
    req.batch_size = 1;
    let mut stream = adapter.fetch(req).expect("fetch starts");
    use futures::StreamExt;
    let mut good = 0;
    let status = loop {
        match stream.next().await.expect("the stream ends with an error") {
            Ok(_) => good += 1,
            Err(status) => break status,
        }
    };
    assert_eq!(good, 3, "{kind:?}");
    assert_eq!(status.code(), Code::Internal);
    // no database detail reaches the caller
    assert_eq!(
        status.message(),
        "database error while reading dataset disdukcapil.waktu"
    );
    assert!(stream.next().await.is_none());
    let entries = log_entries(&db.receipt_log(), 1).await;
    let LogEntry::Served(served) = &entries[0] else {
        panic!("served entry expected")
    };
    assert_eq!(served.status, FetchStatus::Failed);
    assert_eq!(served.rows, 3);
    if kind == Kind::Postgres {
        // numeric keeps every digit, beyond a 128-bit decimal
        db.exec(
            "CREATE TABLE angka (id integer PRIMARY KEY, n numeric);\n\
             INSERT INTO angka VALUES (1, 123456789012345678901234567890.123456789), (2, 'NaN')",
        )
        .await;
        let adapter = db
            .adapter("[[datasets]]\nname = \"angka\"\ntable = \"angka\"\nkey = \"id\"\ncolumns = [\"id\", \"n\"]\n")
            .await;
        let recs = records(
            &adapter,
            fetch(
                "angka",
                &["n"],
                Some(json!({"field": "n", "op": "gt", "value": "1e3"})),
            ),
        )
        .await;
        // PostgreSQL sorts NaN above every number
        assert_eq!(
            recs,
            vec![
                r#"{"n":"123456789012345678901234567890.123456789"}"#,
                r#"{"n":"NaN"}"#
            ]
        );
        adapter.close().await;
    }
    adapter.close().await;
    db.drop_namespace().await;
}

/// A column whose type changed under a running adapter fails the fetch
/// instead of being read with the decoder chosen at startup: PostgreSQL
/// values are type-checked by column, from the first value that is not
/// NULL, however many NULLs come first.
#[tokio::test]
async fn a_column_retyped_under_the_adapter_fails_the_fetch() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(
        "CREATE TABLE ukur (id integer PRIMARY KEY, v integer);\n\
         INSERT INTO ukur VALUES (1, NULL), (2, NULL), (3, 7), (4, 8)",
    )
    .await;
    let adapter = db
        .adapter("[[datasets]]\nname = \"ukur\"\ntable = \"ukur\"\nkey = \"id\"\ncolumns = [\"id\", \"v\"]\n")
        .await;
    let read = |adapter| async move {
        let mut req = fetch("ukur", &["id", "v"], None);
        req.batch_size = 1;
        run(adapter, req).await
    };
    let before = read(&adapter).await.expect("read as declared").concat();
    assert_eq!(
        before,
        [
            r#"{"id":1,"v":null}"#,
            r#"{"id":2,"v":null}"#,
            r#"{"id":3,"v":7}"#,
            r#"{"id":4,"v":8}"#
        ]
    );
    // eight bytes where the adapter reads four
    db.exec("ALTER TABLE ukur ALTER COLUMN v TYPE bigint").await;
    let status = read(&adapter).await.expect_err("a retyped column");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}
