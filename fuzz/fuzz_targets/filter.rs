//! Filters from the wire: proto `Filter` → core `Filter` (request and
//! forwarded bounds) → the adapter's typed SQL for all three dialects.
//!
//! Input: one mode byte, then either protobuf bytes (even mode) or bytes
//! that `arbitrary` shapes into a proto filter over a fixed whitelist
//! (odd mode, to reach the SQL renderer with names it accepts).
//!
//! Asserts: accepted filters hold every limit of `jembatan_core::limits`;
//! they survive the proto and JSON round trips; a filter accepted under the
//! request bounds is accepted under the forwarded ones; the rendered SQL
//! has exactly one placeholder per bound value, and its text depends only
//! on the filter's shape, never on its values.

#![no_main]

use arbitrary::{Result, Unstructured};
use jembatan_adapter::fuzzing::{Column, RenderedSql, Table, render};
use jembatan_core::limits::{
    MAX_FORWARDED_FILTER_DEPTH, MAX_FORWARDED_FILTER_PREDICATES, MAX_IDENT_BYTES, MAX_IN_VALUES,
    MAX_STRING_BYTES,
};
use jembatan_core::{Filter, Predicate, Scalar};
use jembatan_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// What a column holds, for choosing a stand-in value of the same type.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Uuid,
    Int,
    Number,
    Decimal,
    Bool,
    Date,
    DateTime,
    Time,
    Opaque,
}

const fn col(
    name: &'static str,
    sqlite: &'static str,
    postgres: (&'static str, &'static str, &'static str),
    mysql: (&'static str, &'static str, bool),
) -> Column<'static> {
    Column {
        name,
        sqlite,
        postgres,
        mysql,
    }
}

const COLUMNS: &[Column<'static>] = &[
    col(
        "nik",
        "TEXT",
        ("text", "text", "b"),
        ("varchar", "varchar(16)", false),
    ),
    col(
        "umur",
        "INTEGER",
        ("integer", "int4", "b"),
        ("int", "int(11)", false),
    ),
    col(
        "jumlah",
        "BIGINT",
        ("bigint", "int8", "b"),
        ("bigint", "bigint(20) unsigned", false),
    ),
    col(
        "tinggi",
        "REAL",
        ("double precision", "float8", "b"),
        ("double", "double", false),
    ),
    col(
        "gaji",
        "DECIMAL(12,2)",
        ("numeric", "numeric", "b"),
        ("decimal", "decimal(12,2)", false),
    ),
    col(
        "hidup",
        "BOOLEAN",
        ("boolean", "bool", "b"),
        ("tinyint", "tinyint(1)", false),
    ),
    col(
        "tgl_lahir",
        "DATE",
        ("date", "date", "b"),
        ("date", "date", false),
    ),
    col(
        "dibuat",
        "DATETIME",
        ("timestamp with time zone", "timestamptz", "b"),
        ("timestamp", "timestamp", false),
    ),
    col(
        "diubah",
        "TIMESTAMP",
        ("timestamp without time zone", "timestamp", "b"),
        ("datetime", "datetime", false),
    ),
    col(
        "jam",
        "TIME",
        ("time without time zone", "time", "b"),
        ("time", "time", false),
    ),
    col("id", "UUID", ("uuid", "uuid", "b"), ("uuid", "uuid", false)),
    col(
        "agama",
        "TEXT",
        ("USER-DEFINED", "agama", "e"),
        ("enum", "enum('ISLAM','KRISTEN')", false),
    ),
    col(
        "foto",
        "BLOB",
        ("bytea", "bytea", "b"),
        ("blob", "blob", false),
    ),
    col(
        "data",
        "JSON",
        ("jsonb", "jsonb", "b"),
        ("json", "json", false),
    ),
];

fn kind_of(field: &str) -> Kind {
    match field {
        "nik" | "agama" => Kind::Text,
        "umur" | "jumlah" => Kind::Int,
        "tinggi" => Kind::Number,
        "gaji" => Kind::Decimal,
        "hidup" => Kind::Bool,
        "tgl_lahir" => Kind::Date,
        "dibuat" | "diubah" => Kind::DateTime,
        "jam" => Kind::Time,
        "id" => Kind::Uuid,
        _ => Kind::Opaque,
    }
}

/// Quote characters of every dialect in the names, so quoting is exercised.
const TABLE: Table<'static> = Table {
    schema: Some("si\"ak`"),
    table: "pen`du\"duk",
    key: Some("nik"),
    columns: COLUMNS,
};

/// Strings a column type accepts, so the fuzzer reaches typed SQL quickly.
const STRINGS: &[&str] = &[
    "",
    "3204015708850001",
    "2020-01-31",
    "2020-01-31T08:00:00",
    "2020-01-31 08:00:00.123456",
    "2020-01-31T08:00:00+07:00",
    "2020-01-31T01:00:00Z",
    "08:30:00",
    "23:59:59.999999",
    "12.50",
    "-1e5",
    "1e28",
    "00000000-0000-0000-0000-000000000000",
    "ISLAM",
    "' OR 1=1 --",
    "\" OR \"\"=\"",
    "`; DROP TABLE t; --",
    "%_\\",
    "?",
    "$1",
];

fn scalar(u: &mut Unstructured<'_>) -> Result<pb::Scalar> {
    use pb::scalar::Kind as K;
    let kind = match u.int_in_range(0..=9u8)? {
        0 => None,
        1 => Some(K::BoolValue(u.arbitrary()?)),
        2 | 3 => Some(K::IntValue(u.arbitrary()?)),
        4 => Some(K::DoubleValue(u.arbitrary()?)),
        5 => Some(K::StringValue(u.arbitrary()?)),
        _ => Some(K::StringValue((*u.choose(STRINGS)?).to_owned())),
    };
    Ok(pb::Scalar { kind })
}

fn predicate(u: &mut Unstructured<'_>) -> Result<pb::Predicate> {
    let field = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        u.choose(COLUMNS)?.name.to_owned()
    };
    let op = u.int_in_range(-1..=11)?;
    let value = if u.arbitrary()? {
        Some(scalar(u)?)
    } else {
        None
    };
    let n = if u.ratio(1, 64)? {
        u.int_in_range(0..=MAX_IN_VALUES + 2)?
    } else {
        u.int_in_range(0..=4)?
    };
    let mut values = Vec::with_capacity(n.min(8));
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        values.push(scalar(u)?);
    }
    Ok(pb::Predicate {
        field,
        op,
        value,
        values,
    })
}

fn filter(u: &mut Unstructured<'_>, depth: usize) -> Result<pb::Filter> {
    use pb::filter::Kind as K;
    let choice = if depth > MAX_FORWARDED_FILTER_DEPTH + 1 || u.is_empty() {
        0
    } else {
        u.int_in_range(0..=5u8)?
    };
    let kind = match choice {
        0 | 1 => Some(K::Predicate(predicate(u)?)),
        2 | 3 => {
            let list = list(u, depth)?;
            Some(if choice == 2 {
                K::All(list)
            } else {
                K::Any(list)
            })
        }
        4 => Some(K::Not(Box::new(filter(u, depth + 1)?))),
        _ => {
            if u.ratio(1, 8)? {
                None
            } else {
                Some(K::Predicate(predicate(u)?))
            }
        }
    };
    Ok(pb::Filter { kind })
}

fn list(u: &mut Unstructured<'_>, depth: usize) -> Result<pb::FilterList> {
    // now and then one member repeated past the predicate limits (at the
    // top only: repeats of repeats would grow without bound)
    if depth == 1 && u.ratio(1, 32)? {
        let one = filter(u, depth + 1)?;
        let n = u.int_in_range(0..=MAX_FORWARDED_FILTER_PREDICATES + 2)?;
        return Ok(pb::FilterList {
            filters: vec![one; n],
        });
    }
    let n = u.int_in_range(0..=5)?;
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        filters.push(filter(u, depth + 1)?);
    }
    Ok(pb::FilterList { filters })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let proto = if mode & 1 == 0 {
        match pb::Filter::decode(rest) {
            Ok(p) => p,
            Err(_) => return,
        }
    } else {
        match filter(&mut Unstructured::new(rest), 1) {
            Ok(p) => p,
            Err(_) => return,
        }
    };
    check(&proto);
});

fn check(proto: &pb::Filter) {
    let request = Filter::try_from(proto);
    let forwarded = Filter::from_forwarded_proto(proto);
    if let Ok(f) = &request {
        assert_eq!(
            forwarded.as_ref().ok(),
            Some(f),
            "the forwarded bounds are wider than the request bounds"
        );
        f.validate()
            .expect("a filter accepted from proto validates");
        // proto round trip
        assert_eq!(&Filter::try_from(&f.to_proto()).expect("round trip"), f);
        // JSON (config form) round trip
        let json = serde_json::to_string(f).expect("serialize");
        let back: Filter = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("config form {json} does not parse back: {e}"));
        assert_eq!(&back, f, "config form {json}");
    }
    let Ok(f) = forwarded else {
        return;
    };
    assert_limits(&f);
    let records = [
        serde_json::json!({}),
        serde_json::json!({"nik": "3204015708850001", "umur": 40, "tinggi": 1.6e2, "hidup": true,
            "gaji": "12.50", "agama": null, "id": "00000000-0000-0000-0000-000000000000"}),
    ];
    for r in &records {
        let r = r.as_object().expect("object");
        let _ = f.eval(r);
        assert_eq!(f.matches(r), f.eval(r) == Some(true));
    }
    for p in f.predicates() {
        for v in p.value.iter().chain(&p.values) {
            let _ = v.describe();
            let _ = v.to_json();
        }
    }
    check_sql(&f);
}

/// Every limit of `jembatan_core::limits` holds for a filter accepted with
/// the forwarded (widest) bounds.
fn assert_limits(f: &Filter) {
    fn depth(f: &Filter) -> usize {
        match f {
            Filter::Predicate(_) => 1,
            Filter::All(l) | Filter::Any(l) => 1 + l.iter().map(depth).max().unwrap_or(0),
            Filter::Not(f) => 1 + depth(f),
        }
    }
    assert!(depth(f) <= MAX_FORWARDED_FILTER_DEPTH);
    let predicates = f.predicates();
    assert!(predicates.len() <= MAX_FORWARDED_FILTER_PREDICATES);
    for p in predicates {
        assert!(!p.field.as_str().is_empty() && p.field.as_str().len() <= MAX_IDENT_BYTES);
        assert!(p.values.len() <= MAX_IN_VALUES);
        for v in p.value.iter().chain(&p.values) {
            match v {
                Scalar::String(s) => {
                    assert!(s.len() <= MAX_STRING_BYTES && !s.contains('\0'));
                }
                Scalar::Float(x) => assert!(x.is_finite()),
                _ => {}
            }
        }
    }
}

/// The same filter with every value replaced by a fixed value of the same
/// type: its SQL must be the same text.
fn stand_in(f: &Filter) -> Filter {
    match f {
        Filter::All(l) => Filter::All(l.iter().map(stand_in).collect()),
        Filter::Any(l) => Filter::Any(l.iter().map(stand_in).collect()),
        Filter::Not(f) => Filter::Not(Box::new(stand_in(f))),
        Filter::Predicate(p) => {
            let kind = kind_of(p.field.as_str());
            let swap = |v: &Scalar| -> Scalar {
                let s = |x: &str| Scalar::String(x.to_owned());
                match (kind, v) {
                    (Kind::Text, Scalar::String(_)) => s("v"),
                    (Kind::Uuid, Scalar::String(_)) => s("00000000-0000-0000-0000-000000000001"),
                    (Kind::Date, Scalar::String(_)) => s("2000-01-01"),
                    (Kind::DateTime, Scalar::String(_)) => s("2000-01-01T00:00:00"),
                    (Kind::Time, Scalar::String(_)) => s("00:00:00"),
                    (Kind::Decimal, Scalar::String(_)) => s("0"),
                    (_, Scalar::Int(_)) => Scalar::Int(0),
                    (_, Scalar::Float(_)) => Scalar::Float(0.0),
                    (_, Scalar::Bool(_)) => Scalar::Bool(false),
                    (_, other) => other.clone(),
                }
            };
            Filter::Predicate(
                Predicate::new(
                    p.field.clone(),
                    p.op,
                    p.value.as_ref().map(swap),
                    p.values.iter().map(swap).collect(),
                )
                .expect("a stand-in keeps the predicate valid"),
            )
        }
    }
}

fn row_filter() -> Filter {
    serde_json::from_value(serde_json::json!({"any": [
        {"field": "agama", "op": "ne", "value": "X' OR '1'='1"},
        {"field": "umur", "op": "is_null"}
    ]}))
    .expect("row filter")
}

fn check_sql(f: &Filter) {
    let rows = row_filter();
    let got = render(&TABLE, Some(&rows), Some(f), Some(100));
    let alone = render(&TABLE, None, Some(f), None);
    let stood = stand_in(f);
    let want = render(&TABLE, Some(&rows), Some(&stood), Some(100));
    for ((got, alone), want) in got.iter().zip(&alone).zip(&want) {
        let Ok(got) = got else {
            assert!(alone.is_err(), "the row filter made a filter acceptable");
            continue;
        };
        let alone = alone
            .as_ref()
            .expect("accepted with a row filter, refused alone");
        placeholders_match(got);
        placeholders_match(alone);
        let want = want
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: stand-in values refused: {e}", got.dialect));
        assert_eq!(
            got.sql, want.sql,
            "{}: SQL text depends on the filter's values",
            got.dialect
        );
        assert_eq!(got.binds.len(), want.binds.len());
    }
}

/// One placeholder per bind, numbered in order on PostgreSQL.
fn placeholders_match(r: &RenderedSql) {
    // identifiers of the fixed table hold neither `?` nor `$`
    if r.dialect == "postgres" {
        let numbers: Vec<usize> = r
            .sql
            .split('$')
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().expect("a placeholder number")
            })
            .collect();
        let want: Vec<usize> = (1..=r.binds.len()).collect();
        assert_eq!(numbers, want, "{}: {}", r.dialect, r.sql);
    } else {
        let count = r.sql.matches('?').count();
        assert_eq!(count, r.binds.len(), "{}: {}", r.dialect, r.sql);
    }
}
