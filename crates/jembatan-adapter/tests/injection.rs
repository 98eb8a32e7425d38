//! Hostile input against the adapter through its real gRPC server over
//! mutual TLS, on SQLite and — when their URLs are set — PostgreSQL and
//! MariaDB.
//!
//! A corpus of SQL-injection and encoding tricks is put in every place a
//! fetch carries text: filter values under every operator, the lookup key
//! (as the broker forwards it: `key = value`, limit 2), integer and date
//! columns, column names, filter field names and the dataset name; invalid
//! UTF-8 and garbage go in as raw bytes. Nothing may execute (a canary
//! table and the served table are unchanged afterwards), no secret value
//! may appear in any response, no off-whitelist column or row-filtered row
//! may be served, and every answer is the correct result or a clear
//! `InvalidArgument` / `PermissionDenied`. The test prints a summary table,
//! input class × database → outcomes.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Kind, Served, TestDb, fetch_grpc, fetch_raw, log_entries};
use jembatan_adapter::Adapter;
use jembatan_core::limits::{MAX_IDENT_BYTES, MAX_STRING_BYTES};
use jembatan_proto::v1 as pb;
use prost::Message;
use sqlx::AssertSqlSafe;
use tonic::Code;

/// Per-run table names and secret values.
struct Names {
    warga: String,
    canary: String,
    /// In `warga.rahasia`, a column that is not on the whitelist.
    secret: String,
    /// In `canary.secret`, a table that is not on the whitelist.
    canary_secret: String,
}

impl Names {
    fn new() -> Names {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Names {
            warga: format!("warga_{}", &id[..8]),
            canary: format!("canary_{}", &id[..8]),
            secret: format!("RAHASIA-{id}"),
            canary_secret: format!("KENARI-{id}"),
        }
    }
}

/// `(nik, nama, umur, tgl_lahir, status)`; the row filter serves `AKTIF` only.
type Row = (
    &'static str,
    &'static str,
    Option<i32>,
    Option<&'static str>,
    &'static str,
);

const ROWS: &[Row] = &[
    (
        "3201",
        "Budi Santoso",
        Some(30),
        Some("1994-05-01"),
        "AKTIF",
    ),
    ("3202", "' OR 1=1 --", Some(25), Some("1999-12-31"), "AKTIF"),
    (
        "3203",
        "O'Brien \\ \"kutip\"",
        Some(41),
        Some("1983-01-31"),
        "AKTIF",
    ),
    ("3204", "12%abc", Some(19), Some("2005-07-07"), "AKTIF"),
    ("3205", "123", Some(60), Some("1964-02-29"), "AKTIF"),
    ("3206", "12_x", Some(33), Some("1991-03-03"), "AKTIF"),
    ("3207", "12\\x", Some(45), Some("1979-09-09"), "AKTIF"),
    ("3208", "%", Some(50), Some("1974-04-04"), "AKTIF"),
    // Cyrillic В: looks like "Budi Santoso", is not
    (
        "3209",
        "Вudi Santoso",
        Some(22),
        Some("2002-02-02"),
        "AKTIF",
    ),
    ("3210", "Ñoño 日本", None, None, "AKTIF"),
    // hidden by the row filter, and tempting to every injection below
    (
        "3298",
        "' OR 1=1 --",
        Some(80),
        Some("1944-01-01"),
        "NONAKTIF",
    ),
    (
        "3299",
        "Budi Santoso",
        Some(70),
        Some("1954-01-01"),
        "NONAKTIF",
    ),
];

const COLUMNS: [&str; 4] = ["nik", "nama", "umur", "tgl_lahir"];
const CANARY_ROWS: i64 = 3;

fn visible() -> impl Iterator<Item = &'static Row> {
    ROWS.iter().filter(|r| r.4 == "AKTIF")
}

fn hidden(nik: &str) -> bool {
    ROWS.iter().any(|r| r.0 == nik && r.4 != "AKTIF")
}

fn datasets(n: &Names) -> String {
    format!(
        r#"
[[datasets]]
name = "warga"
table = "{}"
key = "nik"
columns = ["nik", "nama", "umur", "tgl_lahir"]
row_filter = {{ field = "status", op = "eq", value = "AKTIF" }}
"#,
        n.warga
    )
}

async fn seed(db: &TestDb, n: &Names) {
    let (w, c) = (&n.warga, &n.canary);
    let ddl = match db.kind {
        Kind::Sqlite => format!(
            "CREATE TABLE {w} (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, umur INTEGER, \
             tgl_lahir DATE, status TEXT NOT NULL, rahasia TEXT NOT NULL);\n\
             CREATE TABLE {c} (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)"
        ),
        Kind::Postgres => format!(
            "CREATE TABLE {w} (nik VARCHAR(16) PRIMARY KEY, nama TEXT NOT NULL, umur INTEGER, \
             tgl_lahir DATE, status VARCHAR(10) NOT NULL, rahasia TEXT NOT NULL);\n\
             CREATE TABLE {c} (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)"
        ),
        Kind::MySql => format!(
            "CREATE TABLE {w} (nik VARCHAR(16) PRIMARY KEY, nama TEXT NOT NULL, umur INT, \
             tgl_lahir DATE, status VARCHAR(10) NOT NULL, rahasia TEXT NOT NULL) \
             CHARACTER SET utf8mb4;\n\
             CREATE TABLE {c} (id INT PRIMARY KEY, secret TEXT NOT NULL) CHARACTER SET utf8mb4"
        ),
    };
    db.exec(&ddl).await;
    let oracle = Oracle::open(db).await;
    for r in ROWS {
        let sql = match db.kind {
            Kind::Postgres => format!("INSERT INTO {w} VALUES ($1, $2, $3, $4::date, $5, $6)"),
            _ => format!("INSERT INTO {w} VALUES (?, ?, ?, ?, ?, ?)"),
        };
        macro_rules! insert {
            ($pool:expr) => {{
                sqlx::query(AssertSqlSafe(sql))
                    .bind(r.0)
                    .bind(r.1)
                    .bind(r.2)
                    .bind(r.3)
                    .bind(r.4)
                    .bind(&n.secret)
                    .execute($pool)
                    .await
                    .expect("insert");
            }};
        }
        match &oracle {
            Oracle::Sqlite(p) => insert!(p),
            Oracle::Postgres(p) => insert!(p),
            Oracle::MySql(p) => insert!(p),
        }
    }
    for id in 1..=CANARY_ROWS {
        let sql = match db.kind {
            Kind::Postgres => format!("INSERT INTO {c} VALUES ($1, $2)"),
            _ => format!("INSERT INTO {c} VALUES (?, ?)"),
        };
        macro_rules! insert {
            ($pool:expr) => {{
                sqlx::query(AssertSqlSafe(sql))
                    .bind(id as i32)
                    .bind(&n.canary_secret)
                    .execute($pool)
                    .await
                    .expect("insert canary");
            }};
        }
        match &oracle {
            Oracle::Sqlite(p) => insert!(p),
            Oracle::Postgres(p) => insert!(p),
            Oracle::MySql(p) => insert!(p),
        }
    }
    oracle.close().await;
}

/// Straight database access for the test's own, hand-written queries.
enum Oracle {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

impl Oracle {
    async fn open(db: &TestDb) -> Oracle {
        match db.kind {
            Kind::Sqlite => Oracle::Sqlite(db.sqlite().await),
            Kind::Postgres => {
                Oracle::Postgres(sqlx::PgPool::connect(&db.url).await.expect("connect"))
            }
            Kind::MySql => Oracle::MySql(sqlx::MySqlPool::connect(&db.url).await.expect("connect")),
        }
    }

    async fn close(self) {
        match self {
            Oracle::Sqlite(p) => p.close().await,
            Oracle::Postgres(p) => p.close().await,
            Oracle::MySql(p) => p.close().await,
        }
    }

    /// The served `nik`s where `nama <op> value`, by a parametrized query.
    async fn compare(&self, n: &Names, op: &str, value: &str) -> Vec<String> {
        let ph = if matches!(self, Oracle::Postgres(_)) {
            "$1"
        } else {
            "?"
        };
        let sql = format!(
            "SELECT nik FROM {} WHERE status = 'AKTIF' AND nama {op} {ph} ORDER BY nik",
            n.warga
        );
        match self {
            Oracle::Sqlite(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(value)
                .fetch_all(p)
                .await
                .expect("oracle"),
            Oracle::Postgres(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(value)
                .fetch_all(p)
                .await
                .expect("oracle"),
            Oracle::MySql(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(value)
                .fetch_all(p)
                .await
                .expect("oracle"),
        }
    }

    /// Everything an injection could have changed: both tables' rows.
    async fn state(&self, n: &Names) -> Vec<String> {
        let (w, c) = (&n.warga, &n.canary);
        let sqls = match self {
            Oracle::Sqlite(_) => [
                format!(
                    "SELECT nik || '|' || nama || '|' || status || '|' || rahasia FROM {w} ORDER BY nik"
                ),
                format!("SELECT id || '|' || secret FROM {c} ORDER BY id"),
            ],
            Oracle::Postgres(_) => [
                format!(
                    "SELECT CONCAT(nik, '|', nama, '|', status, '|', rahasia) FROM {w} ORDER BY nik"
                ),
                format!("SELECT CONCAT(CAST(id AS TEXT), '|', secret) FROM {c} ORDER BY id"),
            ],
            Oracle::MySql(_) => [
                format!(
                    "SELECT CONCAT(nik, '|', nama, '|', status, '|', rahasia) FROM {w} ORDER BY nik"
                ),
                format!("SELECT CONCAT(CAST(id AS CHAR), '|', secret) FROM {c} ORDER BY id"),
            ],
        };
        let mut out = Vec::new();
        for sql in sqls {
            let rows: Vec<String> = match self {
                Oracle::Sqlite(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(p)
                    .await
                    .expect("state"),
                Oracle::Postgres(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(p)
                    .await
                    .expect("state"),
                Oracle::MySql(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(p)
                    .await
                    .expect("state"),
            };
            out.extend(rows);
        }
        out
    }
}

/// A value as a request carries it.
#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Val {
    fn proto(&self) -> pb::Scalar {
        use pb::scalar::Kind as K;
        pb::Scalar {
            kind: Some(match self {
                Val::Str(s) => K::StringValue(s.clone()),
                Val::Int(i) => K::IntValue(*i),
                Val::Float(f) => K::DoubleValue(*f),
                Val::Bool(b) => K::BoolValue(*b),
            }),
        }
    }

    fn label(&self) -> String {
        let s = match self {
            Val::Str(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Bool(b) => b.to_string(),
        };
        match self {
            Val::Str(s) if s.len() > 40 => format!("{s}… ({} bytes)", s.len()),
            _ => s,
        }
    }
}

/// The corpus: (input class, value).
fn corpus(n: &Names) -> Vec<(&'static str, Val)> {
    let (w, c) = (&n.warga, &n.canary);
    let s = |v: &str| Val::Str(v.to_owned());
    let mut out: Vec<(&'static str, Val)> = Vec::new();
    let mut add = |class: &'static str, values: Vec<Val>| {
        out.extend(values.into_iter().map(|v| (class, v)));
    };
    add(
        "single quotes",
        vec![
            s("'"),
            s("''"),
            s("' OR '1'='1"),
            s("' OR 1=1 --"),
            s("O'Brien \\ \"kutip\""),
        ],
    );
    add(
        "double quotes",
        vec![s("\""), s("\" OR \"\"=\""), s("x\" OR 1=1 --")],
    );
    add(
        "backslashes (MariaDB escapes)",
        vec![
            s("\\"),
            s("\\'"),
            s("\\' OR 1=1 -- "),
            s("\\\\' OR 1=1 #"),
            s("12\\x"),
            s("\\%"),
        ],
    );
    add(
        "comments -- # /* */",
        vec![
            s("' -- "),
            s("'#"),
            s("'/*"),
            s("*/ OR 1=1 /*"),
            s("x'/**/OR/**/'1'='1"),
        ],
    );
    add(
        "stacked statements",
        vec![
            Val::Str(format!("'; DROP TABLE {c}; --")),
            Val::Str(format!("\"; DROP TABLE {c}; --")),
            Val::Str(format!("`; DROP TABLE {c}; --")),
            Val::Str(format!("'); DELETE FROM {c}; --")),
            Val::Str(format!("1; UPDATE {w} SET status = 'AKTIF'; --")),
            Val::Str(format!("\\'; DROP TABLE {w}; #")),
        ],
    );
    add(
        "UNION SELECT of a secret",
        vec![
            Val::Str(format!("' UNION SELECT secret FROM {c} --")),
            Val::Str(format!(
                "' UNION SELECT rahasia, rahasia, 1, NULL FROM {w} --"
            )),
            Val::Str(format!(
                "\" UNION ALL SELECT secret, secret, 1, NULL FROM {c} #"
            )),
        ],
    );
    add(
        "LIKE wildcards and escape",
        vec![
            s("%"),
            s("_"),
            s("12%"),
            s("12_"),
            s("12\\"),
            s("%%"),
            s("_%"),
            s("%' OR '1'='1"),
        ],
    );
    add("NUL bytes", vec![s("a\0b"), s("\0"), s("' OR 1=1\0--")]);
    add(
        "long strings",
        vec![
            Val::Str("'".repeat(MAX_STRING_BYTES)),
            Val::Str("'".repeat(MAX_STRING_BYTES + 1)),
            // 3-byte characters: the limit counts bytes
            Val::Str("日".repeat(MAX_STRING_BYTES / 3 + 1)),
        ],
    );
    add(
        "unicode confusables",
        vec![
            s("Вudi Santoso"),
            s("Budi Santoso"),
            s("\u{FF07} OR 1=1 --"),
            s("\u{02BC} OR 1=1 --"),
            s("\u{2018} OR \u{2019}1\u{2019}=\u{2019}1"),
            s("\u{202E}' OR 1=1 --"),
            s("Budi\u{200B}Santoso"),
            s("🙂'--"),
        ],
    );
    add(
        "case and trailing-space variants",
        vec![s("budi santoso"), s("Budi Santoso ")],
    );
    add(
        "numbers as strings",
        vec![
            s("123"),
            s("30"),
            s("1e3"),
            s("0x31"),
            s("1 OR 1=1"),
            s("-1"),
        ],
    );
    add(
        "dates as strings",
        vec![
            s("1994-05-01"),
            s("1994-05-01' OR '1'='1"),
            Val::Str(format!("1994-05-01; DROP TABLE {c}")),
            s("01/05/1994"),
        ],
    );
    add(
        "numbers and booleans",
        vec![
            Val::Int(30),
            Val::Int(i64::MIN),
            Val::Float(30.0),
            Val::Float(f64::NAN),
            Val::Float(f64::INFINITY),
            Val::Bool(true),
        ],
    );
    add(
        "off-whitelist names",
        vec![
            s("rahasia"),
            s("status"),
            s("secret"),
            Val::Str(w.clone()),
            Val::Str(c.clone()),
            Val::Str(format!("nik FROM {c} --")),
        ],
    );
    add(
        "long identifiers",
        vec![
            Val::Str("a".repeat(MAX_IDENT_BYTES)),
            Val::Str("a".repeat(MAX_IDENT_BYTES + 1)),
            Val::Str("a".repeat(2 * MAX_IDENT_BYTES + 1)),
        ],
    );
    out
}

/// Where a value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    /// `nama <op> value` (text column).
    Value(pb::Operator),
    /// `nik = value`, limit 2: a lookup as the broker forwards it.
    LookupKey,
    /// `umur = value` (integer column).
    IntegerColumn,
    /// `tgl_lahir >= value` (date column).
    DateColumn,
    /// `columns = [value]`.
    ColumnName,
    /// A predicate on the field named `value`.
    FilterField,
    /// Dataset `disdukcapil.<value>`.
    Dataset,
}

const SITES: &[Site] = &[
    Site::Value(pb::Operator::Eq),
    Site::Value(pb::Operator::Ne),
    Site::Value(pb::Operator::Lt),
    Site::Value(pb::Operator::Le),
    Site::Value(pb::Operator::Gt),
    Site::Value(pb::Operator::Ge),
    Site::Value(pb::Operator::In),
    Site::Value(pb::Operator::Prefix),
    Site::LookupKey,
    Site::IntegerColumn,
    Site::DateColumn,
    Site::ColumnName,
    Site::FilterField,
    Site::Dataset,
];

fn pred(field: &str, op: pb::Operator, v: &Val) -> pb::Filter {
    let (value, values) = if op == pb::Operator::In {
        (None, vec![v.proto(), Val::Str("tidak ada".into()).proto()])
    } else {
        (Some(v.proto()), vec![])
    };
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: op as i32,
            value,
            values,
        })),
    }
}

fn request(
    dataset: String,
    columns: Vec<String>,
    filter: Option<pb::Filter>,
    limit: u64,
) -> pb::FetchRequest {
    pb::FetchRequest {
        exchange_id: uuid::Uuid::new_v4().to_string(),
        dataset,
        columns,
        filter,
        limit,
        batch_size: 0,
        consumer: "dinsos".into(),
        purpose: "uji masukan jahat".into(),
        parts: Vec::new(),
    }
}

fn all_columns() -> Vec<String> {
    COLUMNS.iter().map(|c| c.to_string()).collect()
}

/// What the adapter answered, or should answer.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The served `nik`s, in key order.
    Rows(Vec<String>),
    /// Refused with this code; the message contains the text.
    Refused(Code, String),
}

/// Equality as the backend's default text comparison has it: MariaDB's
/// `utf8mb4_general_ci` ignores case and trailing spaces.
fn same(kind: Kind, a: &str, b: &str) -> bool {
    match kind {
        Kind::MySql => {
            a.to_lowercase().trim_end_matches(' ') == b.to_lowercase().trim_end_matches(' ')
        }
        _ => a == b,
    }
}

/// `prefix` as each backend's LIKE has it (docs/adapter.md): exact on
/// PostgreSQL, ASCII case ignored on SQLite, case ignored on MariaDB.
fn starts(kind: Kind, s: &str, p: &str) -> bool {
    match kind {
        Kind::Postgres => s.starts_with(p),
        Kind::Sqlite => s.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()),
        Kind::MySql => s.to_lowercase().starts_with(&p.to_lowercase()),
    }
}

fn niks<'a>(rows: impl Iterator<Item = &'a Row>) -> Outcome {
    Outcome::Rows(rows.map(|r| r.0.to_owned()).collect())
}

fn refused(code: Code, text: &str) -> Outcome {
    Outcome::Refused(code, text.to_owned())
}

/// Core's checks of a filter value, which come before anything else.
fn value_refusal(v: &Val) -> Option<Outcome> {
    match v {
        Val::Str(s) if s.len() > MAX_STRING_BYTES => Some(refused(
            Code::InvalidArgument,
            &format!("exceeds the limit max_string_bytes = {MAX_STRING_BYTES}"),
        )),
        Val::Str(s) if s.contains('\0') => Some(refused(Code::InvalidArgument, "NUL byte")),
        Val::Float(f) if !f.is_finite() => {
            Some(refused(Code::InvalidArgument, "number must be finite"))
        }
        _ => None,
    }
}

fn is_identifier(s: &str) -> bool {
    s.as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The request for a value at a site, and the answer it must get.
async fn case(
    kind: Kind,
    n: &Names,
    oracle: &Oracle,
    site: Site,
    v: &Val,
) -> Option<(pb::FetchRequest, Outcome)> {
    let dataset = || "disdukcapil.warga".to_owned();
    Some(match site {
        Site::Value(op) => {
            let req = request(dataset(), all_columns(), Some(pred("nama", op, v)), 0);
            let want = if let Some(r) = value_refusal(v) {
                r
            } else if let Val::Str(s) = v {
                match op {
                    pb::Operator::Eq | pb::Operator::In => {
                        niks(visible().filter(|r| same(kind, r.1, s)))
                    }
                    pb::Operator::Ne => niks(visible().filter(|r| !same(kind, r.1, s))),
                    pb::Operator::Prefix => niks(visible().filter(|r| starts(kind, r.1, s))),
                    other => {
                        let sql = match other {
                            pb::Operator::Lt => "<",
                            pb::Operator::Le => "<=",
                            pb::Operator::Gt => ">",
                            _ => ">=",
                        };
                        Outcome::Rows(oracle.compare(n, sql, s).await)
                    }
                }
            } else if op == pb::Operator::Prefix {
                refused(Code::InvalidArgument, "prefix needs a string value")
            } else {
                refused(Code::InvalidArgument, "field nama holds string values")
            };
            (req, want)
        }
        Site::LookupKey => {
            let req = request(
                dataset(),
                all_columns(),
                Some(pred("nik", pb::Operator::Eq, v)),
                2,
            );
            let want = match (value_refusal(v), v) {
                (Some(r), _) => r,
                (None, Val::Str(s)) => niks(visible().filter(|r| same(kind, r.0, s)).take(2)),
                (None, _) => refused(Code::InvalidArgument, "field nik holds string values"),
            };
            (req, want)
        }
        Site::IntegerColumn => {
            let req = request(
                dataset(),
                all_columns(),
                Some(pred("umur", pb::Operator::Eq, v)),
                0,
            );
            let want = match (value_refusal(v), v) {
                (Some(r), _) => r,
                (None, Val::Int(i)) => niks(visible().filter(|r| r.2.map(i64::from) == Some(*i))),
                (None, _) => refused(Code::InvalidArgument, "is not an integer"),
            };
            (req, want)
        }
        Site::DateColumn => {
            let req = request(
                dataset(),
                all_columns(),
                Some(pred("tgl_lahir", pb::Operator::Ge, v)),
                0,
            );
            let date = match v {
                Val::Str(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
                _ => None,
            };
            let want = match (value_refusal(v), date) {
                (Some(r), _) => r,
                (None, Some(d)) => {
                    let d = d.format("%Y-%m-%d").to_string();
                    niks(visible().filter(|r| r.3.is_some_and(|t| t >= d.as_str())))
                }
                (None, None) => refused(Code::InvalidArgument, "is not a date (YYYY-MM-DD)"),
            };
            (req, want)
        }
        Site::ColumnName => {
            let Val::Str(s) = v else { return None };
            let req = request(dataset(), vec![s.clone()], None, 0);
            let want = if s.len() > MAX_IDENT_BYTES {
                refused(
                    Code::InvalidArgument,
                    &format!("exceeds the limit max_ident_bytes = {MAX_IDENT_BYTES}"),
                )
            } else {
                refused(Code::PermissionDenied, "columns not on the whitelist")
            };
            (req, want)
        }
        Site::FilterField => {
            let Val::Str(s) = v else { return None };
            let req = request(
                dataset(),
                all_columns(),
                Some(pred(s, pb::Operator::Eq, &Val::Str("x".into()))),
                0,
            );
            let want = if s.len() > MAX_IDENT_BYTES {
                refused(Code::InvalidArgument, "limit max_ident_bytes")
            } else if !is_identifier(s) {
                refused(Code::InvalidArgument, "invalid filter.field: field name")
            } else {
                refused(
                    Code::PermissionDenied,
                    "filter names fields not on the whitelist",
                )
            };
            (req, want)
        }
        Site::Dataset => {
            let Val::Str(s) = v else { return None };
            let id = format!("disdukcapil.{s}");
            let want = if id.len() > 2 * MAX_IDENT_BYTES + 1 {
                refused(
                    Code::InvalidArgument,
                    &format!("limit max_ident_bytes = {MAX_IDENT_BYTES}"),
                )
            } else {
                refused(Code::PermissionDenied, "is not on the whitelist")
            };
            (request(id, vec!["nik".into()], None, 0), want)
        }
    })
}

/// Outcome counts of one input class on one backend.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    empty: usize,
    rows: usize,
    invalid: usize,
    denied: usize,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Rows(r) if r.is_empty() => self.empty += 1,
            Outcome::Rows(_) => self.rows += 1,
            Outcome::Refused(Code::InvalidArgument, _) => self.invalid += 1,
            Outcome::Refused(_, _) => self.denied += 1,
        }
    }

    fn cell(&self) -> String {
        format!(
            "{} ok ({} with rows), {} IA, {} PD",
            self.empty + self.rows,
            self.rows,
            self.invalid,
            self.denied
        )
    }
}

/// Every response is checked for what must never be in it.
fn check_records(n: &Names, what: &str, columns: &[String], records: &[String]) -> Vec<String> {
    let mut niks = Vec::new();
    for r in records {
        assert!(
            !r.contains(&n.secret) && !r.contains(&n.canary_secret),
            "{what}: a secret was served: {r}"
        );
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r).unwrap_or_else(|e| panic!("{what}: record {r}: {e}"));
        let mut want: Vec<&String> = columns.iter().collect();
        want.sort();
        assert_eq!(v.keys().collect::<Vec<_>>(), want, "{what}: record keys");
        if let Some(nik) = v.get("nik").and_then(|x| x.as_str()) {
            assert!(
                !hidden(nik),
                "{what}: row {nik} is hidden by the row filter"
            );
            niks.push(nik.to_owned());
        }
    }
    niks
}

/// The placeholder a raw request carries where invalid UTF-8 goes.
const MARK: &str = "\u{1}MARK\u{1}";
/// Invalid UTF-8 of the placeholder's length.
const BAD_UTF8: [u8; 6] = [0xC3, 0x28, 0xFF, 0xFE, 0xA0, 0x80];

fn with_invalid_utf8(req: &pb::FetchRequest) -> Vec<u8> {
    let mut bytes = req.encode_to_vec();
    let at = bytes
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())
        .expect("placeholder in the request");
    bytes[at..at + MARK.len()].copy_from_slice(&BAD_UTF8);
    bytes
}

/// Raw requests no generated client would send: (label, bytes).
fn raw_requests() -> Vec<(&'static str, Vec<u8>)> {
    let base = || request("disdukcapil.warga".into(), all_columns(), None, 0);
    let mut out = Vec::new();
    let mut r = base();
    r.dataset = MARK.into();
    out.push(("dataset", with_invalid_utf8(&r)));
    let mut r = base();
    r.columns = vec!["nik".into(), MARK.into()];
    out.push(("column name", with_invalid_utf8(&r)));
    let mut r = base();
    r.filter = Some(pred(MARK, pb::Operator::Eq, &Val::Str("x".into())));
    out.push(("filter field", with_invalid_utf8(&r)));
    for op in [pb::Operator::Eq, pb::Operator::Prefix, pb::Operator::In] {
        let mut r = base();
        r.filter = Some(pred("nama", op, &Val::Str(format!("Budi{MARK}"))));
        out.push(("filter value", with_invalid_utf8(&r)));
    }
    let mut r = base();
    r.exchange_id = MARK.into();
    out.push(("exchange id", with_invalid_utf8(&r)));
    let mut r = base();
    r.purpose = MARK.into();
    out.push(("purpose", with_invalid_utf8(&r)));
    out.push(("not protobuf", vec![0xFF; 16]));
    let mut truncated = base().encode_to_vec();
    truncated.truncate(truncated.len() - 3);
    out.push(("truncated message", truncated));
    out
}

/// Runs the whole corpus against one backend; returns (class → tally).
async fn run_backend(kind: Kind) -> Option<BTreeMap<&'static str, Tally>> {
    let db = TestDb::new(kind).await?;
    let n = Names::new();
    seed(&db, &n).await;
    let oracle = Oracle::open(&db).await;
    let before = oracle.state(&n).await;
    assert_eq!(before.len(), ROWS.len() + CANARY_ROWS as usize);

    let adapter: Arc<Adapter> = db.adapter(&datasets(&n)).await;
    let served = Served::start(adapter.clone()).await;
    let mut client = served.client().await;

    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut cases = 0usize;
    // each fetch that was served leaves one receipt-log line
    let mut served_fetches = 0usize;
    for (class, v) in corpus(&n) {
        for &site in SITES {
            let Some((req, want)) = case(kind, &n, &oracle, site, &v).await else {
                continue;
            };
            let what = format!("{kind:?} {class} {} at {site:?}", v.label());
            let columns = req.columns.clone();
            let got = match fetch_grpc(&mut client, req).await {
                Ok(records) => {
                    served_fetches += 1;
                    Outcome::Rows(check_records(&n, &what, &columns, &records))
                }
                Err(status) => {
                    let m = status.message();
                    assert!(
                        !m.contains(&n.secret) && !m.contains(&n.canary_secret),
                        "{what}: a secret in the status: {m}"
                    );
                    Outcome::Refused(status.code(), m.to_owned())
                }
            };
            match (&got, &want) {
                (Outcome::Rows(g), Outcome::Rows(w)) => assert_eq!(g, w, "{what}"),
                (Outcome::Refused(gc, gm), Outcome::Refused(wc, wm)) => {
                    assert_eq!(gc, wc, "{what}: {gm}");
                    assert!(gm.contains(wm.as_str()), "{what}: {gm:?} lacks {wm:?}");
                }
                _ => panic!("{what}: got {got:?}, want {want:?}"),
            }
            tallies.entry(class).or_default().add(&got);
            cases += 1;
        }
    }

    // the literal-match regressions, spelled out
    let prefix = |p: &str| {
        request(
            "disdukcapil.warga".into(),
            vec!["nik".into()],
            Some(pred("nama", pb::Operator::Prefix, &Val::Str(p.into()))),
            0,
        )
    };
    for (p, want) in [
        ("12%", vec!["3204"]),
        ("12_", vec!["3206"]),
        ("12\\", vec!["3207"]),
        ("%", vec!["3208"]),
        ("1", vec!["3204", "3205", "3206", "3207"]),
    ] {
        let got = fetch_grpc(&mut client, prefix(p)).await.expect("prefix");
        served_fetches += 1;
        let got = check_records(&n, p, &["nik".to_owned()], &got);
        assert_eq!(got, want, "{kind:?}: prefix {p:?}");
    }

    // raw bytes: refused while decoding, before any handler runs
    let path = db.receipt_log();
    assert_eq!(
        log_entries(&path, served_fetches).await.len(),
        served_fetches
    );
    for (label, bytes) in raw_requests() {
        let status = fetch_raw(served.channel().await, bytes)
            .await
            .expect_err(label);
        assert_eq!(status.code(), Code::InvalidArgument, "{label}: {status:?}");
        assert!(
            status
                .message()
                .starts_with("invalid request: failed to decode Protobuf message"),
            "{label}: {}",
            status.message()
        );
        if label != "not protobuf" && label != "truncated message" {
            assert!(status.message().contains("UTF-8"), "{label}: {status:?}");
        }
        tallies
            .entry("invalid UTF-8 and garbage (raw gRPC)")
            .or_default()
            .add(&Outcome::Refused(status.code(), String::new()));
        cases += 1;
    }
    // a served fetch still works, and the refused ones left no trace
    let ok = fetch_grpc(&mut client, prefix("Budi"))
        .await
        .expect("fetch");
    assert_eq!(ok.len(), 1);
    assert_eq!(
        log_entries(&path, served_fetches + 1).await.len(),
        served_fetches + 1
    );

    // nothing executed: every row of both tables is as it was
    assert_eq!(oracle.state(&n).await, before, "{kind:?}: tables changed");
    println!("{kind:?}: {cases} hostile requests, tables unchanged");

    oracle.close().await;
    served.stop().await;
    adapter.close().await;
    db.drop_namespace().await;
    Some(tallies)
}

#[tokio::test]
async fn hostile_input_is_inert_on_every_backend() {
    let mut results: Vec<(&str, BTreeMap<&'static str, Tally>)> = Vec::new();
    for (name, kind) in [
        ("SQLite", Kind::Sqlite),
        ("PostgreSQL", Kind::Postgres),
        ("MariaDB", Kind::MySql),
    ] {
        if let Some(t) = run_backend(kind).await {
            results.push((name, t));
        }
    }
    assert!(!results.is_empty(), "SQLite always runs");

    // the summary: input class × database → outcomes
    let mut classes: Vec<&str> = Vec::new();
    for (_, t) in &results {
        for c in t.keys() {
            if !classes.contains(c) {
                classes.push(c);
            }
        }
    }
    let mut header = format!("| {:<38} |", "input class");
    for (name, _) in &results {
        header.push_str(&format!(" {name:<34} |"));
    }
    println!("\n{header}");
    println!(
        "|{}|{}",
        "-".repeat(40),
        results
            .iter()
            .map(|_| format!("{}|", "-".repeat(36)))
            .collect::<String>()
    );
    for class in classes {
        let mut line = format!("| {class:<38} |");
        for (_, t) in &results {
            let cell = t.get(class).map(Tally::cell).unwrap_or_default();
            line.push_str(&format!(" {cell:<34} |"));
        }
        println!("{line}");
    }
    println!(
        "\nok = the correct rows (checked against a model of the backend's comparison \
         or a hand-written parametrized query); IA = InvalidArgument; PD = PermissionDenied"
    );
}
