//! Change polls (`Adapter.Changes`) on SQLite, PostgreSQL and MariaDB:
//! keyset order with ties, tombstones, scope without leaking columns, the
//! lag window, integer versions, start-up checks and refusals.

mod common;

use std::sync::Arc;

use common::{Kind, TestDb, log_entries};
use futures::StreamExt;
use jembatan_adapter::{Adapter, AdapterConfig, LogEntry};
use jembatan_proto::v1 as pb;
use serde_json::{Value, json};
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
    changes_come_in_keyset_order_with_ties_tombstones_and_scope,
    the_lag_window_holds_back_young_and_future_changes,
    integer_versions_are_read_without_a_horizon,
    startup_refuses_change_sources_that_cannot_work,
    bad_polls_are_refused_without_quoting_values,
    full_pages_are_read_ahead_and_logged_only_once_asked,
);

const PENDUDUK: &str = r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "kec"]
row_filter = { field = "status", op = "ne", value = "RAHASIA" }

[datasets.changes]
column = "diubah"
deleted = { field = "status", op = "eq", value = "DIHAPUS" }
lag = "0s"
poll_interval = "200ms"
"#;

fn timestamp_type(kind: Kind, zoned: bool) -> &'static str {
    match (kind, zoned) {
        (Kind::Sqlite, _) => "DATETIME",
        (Kind::Postgres, false) => "TIMESTAMP(6)",
        (Kind::Postgres, true) => "TIMESTAMPTZ(6)",
        (Kind::MySql, false) => "DATETIME(6)",
        (Kind::MySql, true) => "TIMESTAMP(6)",
    }
}

async fn create_penduduk(db: &TestDb, zoned: bool) {
    let key = match db.kind {
        Kind::Sqlite => "TEXT",
        _ => "VARCHAR(16)",
    };
    db.exec(&format!(
        "CREATE TABLE penduduk (nik {key} PRIMARY KEY, nama VARCHAR(100) NOT NULL, kec INTEGER, \
         status VARCHAR(10) NOT NULL, diubah {} NULL)",
        timestamp_type(db.kind, zoned)
    ))
    .await;
}

/// Inserts or replaces rows `(nik, nama, kec, status, diubah)`.
async fn put(db: &TestDb, rows: &[(&str, &str, i64, &str, &str)]) {
    for (nik, nama, kec, status, diubah) in rows {
        db.exec(&format!("DELETE FROM penduduk WHERE nik = '{nik}'"))
            .await;
        db.exec(&format!(
            "INSERT INTO penduduk (nik, nama, kec, status, diubah) \
             VALUES ('{nik}', '{nama}', {kec}, '{status}', '{diubah}')"
        ))
        .await;
    }
}

fn request(after: Option<(&str, &str)>, limit: u32, filter: Option<Value>) -> pb::ChangesRequest {
    pb::ChangesRequest {
        exchange_id: uuid::Uuid::new_v4().to_string(),
        dataset: "disdukcapil.penduduk".into(),
        columns: vec!["nik".into(), "nama".into(), "kec".into()],
        filter: filter.map(|f| {
            serde_json::from_value::<jembatan_core::Filter>(f)
                .expect("test filter")
                .to_proto()
        }),
        after: after.map(|(change, key)| pb::ChangePosition {
            change: change.into(),
            key: key.into(),
        }),
        limit,
        consumer: "dinsos".into(),
        purpose: "verifikasi bansos".into(),
    }
}

async fn poll(
    adapter: &Arc<Adapter>,
    req: pb::ChangesRequest,
) -> Result<Vec<pb::Change>, tonic::Status> {
    let mut stream = adapter.changes_within(req, None)?;
    let mut changes = Vec::new();
    while let Some(batch) = stream.next().await {
        changes.extend(batch?.changes);
    }
    Ok(changes)
}

/// Follows the changes from `after` to the end, `limit` at a time;
/// returns them and the last position.
async fn follow(
    adapter: &Arc<Adapter>,
    mut after: Option<pb::ChangePosition>,
    limit: u32,
    filter: Option<Value>,
) -> (Vec<pb::Change>, Option<pb::ChangePosition>) {
    let mut all = Vec::new();
    loop {
        let mut req = request(None, limit, filter.clone());
        req.after = after.clone();
        let got = poll(adapter, req).await.expect("poll succeeds");
        assert!(
            got.len() <= limit as usize,
            "a poll returns at most its limit"
        );
        let done = got.len() < limit as usize;
        if let Some(last) = got.last() {
            after = last.position.clone();
        }
        all.extend(got);
        if done {
            return (all, after);
        }
    }
}

/// `(op, key, in_scope, record)` of each change, for comparisons.
fn summary(changes: &[pb::Change]) -> Vec<(pb::ChangeOp, String, bool, Value)> {
    changes
        .iter()
        .map(|c| {
            let p = c.position.as_ref().expect("position");
            let record = if c.record.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&c.record).expect("record is JSON")
            };
            (c.op(), p.key.clone(), c.in_scope, record)
        })
        .collect()
}

async fn changes_come_in_keyset_order_with_ties_tombstones_and_scope(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    create_penduduk(&db, false).await;
    put(
        &db,
        &[
            // three rows share one change time: the key breaks the tie
            ("3203", "Citra", 1, "HIDUP", "2026-01-05T10:00:00"),
            ("3201", "Ani", 1, "HIDUP", "2026-01-05T10:00:00"),
            ("3202", "Budi", 2, "HIDUP", "2026-01-05T10:00:00"),
            ("3204", "Dewi", 1, "DIHAPUS", "2026-01-05T11:00:00"),
            ("3205", "Eko", 1, "RAHASIA", "2026-01-05T09:00:00"),
        ],
    )
    .await;
    db.exec("INSERT INTO penduduk (nik, nama, kec, status, diubah) VALUES ('3299', 'Tanpa', 1, 'HIDUP', NULL)")
        .await;
    let adapter = db.adapter(PENDUDUK).await;
    let describe = adapter.describe();
    let source = describe.datasets[0]
        .changes
        .as_ref()
        .expect("a change source");
    assert_eq!(
        (source.change_column.as_str(), source.key_column.as_str()),
        ("diubah", "nik")
    );
    assert_eq!((source.poll_interval_ms, source.lag_ms), (200, 0));
    assert!(source.tombstones);
    assert_eq!(source.kind(), pb::ChangeSourceKind::PollingColumn);

    // one at a time, so that every tie is crossed by a position
    let scope = Some(json!({ "field": "kec", "op": "eq", "value": 1 }));
    let (changes, last) = follow(&adapter, None, 1, scope.clone()).await;
    use pb::ChangeOp::{Delete, Upsert};
    assert_eq!(
        summary(&changes),
        vec![
            // outside the dataset's own row filter: the key only
            (Upsert, "\"3205\"".into(), false, Value::Null),
            (
                Upsert,
                "\"3201\"".into(),
                true,
                json!({"nik": "3201", "nama": "Ani", "kec": 1})
            ),
            // outside the request's filter: the key only, no column
            (Upsert, "\"3202\"".into(), false, Value::Null),
            (
                Upsert,
                "\"3203\"".into(),
                true,
                json!({"nik": "3203", "nama": "Citra", "kec": 1})
            ),
            // a tombstone: the key only
            (Delete, "\"3204\"".into(), true, Value::Null),
        ],
        "rows without a change value (3299) are not seen"
    );
    let positions: Vec<&str> = changes
        .iter()
        .map(|c| c.position.as_ref().unwrap().change.as_str())
        .collect();
    assert_eq!(
        positions,
        [
            "\"2026-01-05T09:00:00\"",
            "\"2026-01-05T10:00:00\"",
            "\"2026-01-05T10:00:00\"",
            "\"2026-01-05T10:00:00\"",
            "\"2026-01-05T11:00:00\"",
        ]
    );
    // the same in one poll
    let (at_once, _) = follow(&adapter, None, 100, scope.clone()).await;
    assert_eq!(at_once, changes);

    // nothing new after the last position
    let (none, same) = follow(&adapter, last.clone(), 10, scope.clone()).await;
    assert!(none.is_empty());
    assert_eq!(same, last);

    // an update moves a row after the last position; moving out of the
    // scope makes it come back without its columns
    put(&db, &[("3201", "Ani", 2, "HIDUP", "2026-01-05T12:00:00")]).await;
    put(&db, &[("3206", "Fajar", 1, "HIDUP", "2026-01-05T12:00:00")]).await;
    let (later, _) = follow(&adapter, last.clone(), 10, scope.clone()).await;
    assert_eq!(
        summary(&later),
        vec![
            (Upsert, "\"3201\"".into(), false, Value::Null),
            (
                Upsert,
                "\"3206\"".into(),
                true,
                json!({"nik": "3206", "nama": "Fajar", "kec": 1})
            ),
        ]
    );
    // without a filter every row of the dataset's row filter is in scope
    let (unfiltered, _) = follow(&adapter, last, 10, None).await;
    assert!(
        unfiltered
            .iter()
            .all(|c| c.in_scope && !c.record.is_empty())
    );

    // polls that found changes are on the receipt log, with what they sent
    let entries = log_entries(&db.receipt_log(), 1).await;
    let LogEntry::Changes(first) = &entries[0] else {
        panic!("a changes line: {:?}", entries[0]);
    };
    assert_eq!(first.dataset, "disdukcapil.penduduk");
    assert_eq!(first.rows, 1);
    assert!(
        entries
            .iter()
            .all(|e| matches!(e, LogEntry::Changes(c) if c.rows > 0)),
        "empty polls are not logged"
    );
    db.drop_namespace().await;
}

/// A catch-up's polls carry one exchange id: after a full page the next
/// is read ahead, served to the poll that asks for it exactly as a poll
/// reads it, and logged then; a page nobody asks for is never logged.
async fn full_pages_are_read_ahead_and_logged_only_once_asked(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    create_penduduk(&db, false).await;
    let rows: Vec<(String, String, String)> = (0..7)
        .map(|i| {
            (
                format!("32{i:02}"),
                format!("Warga {i}"),
                format!("2026-02-01T10:0{i}:00"),
            )
        })
        .collect();
    let rows: Vec<(&str, &str, i64, &str, &str)> = rows
        .iter()
        .map(|(nik, nama, at)| (nik.as_str(), nama.as_str(), 1, "HIDUP", at.as_str()))
        .collect();
    put(&db, &rows).await;
    let adapter = db.adapter(PENDUDUK).await;
    // the reference: every poll its own exchange, so none is read ahead
    let (expected, _) = follow(&adapter, None, 3, None).await;
    assert_eq!(expected.len(), 7);
    let fresh = log_entries(&db.receipt_log(), 3).await.len();

    let exchange = uuid::Uuid::new_v4().to_string();
    let mut after = None;
    let mut got = Vec::new();
    let mut asked = Vec::new();
    loop {
        let mut req = request(None, 3, None);
        req.exchange_id = exchange.clone();
        req.after = after.clone();
        // time for the page to be read ahead before it is asked for
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        asked.push(chrono::Utc::now());
        let page = poll(&adapter, req).await.expect("poll succeeds");
        let full = page.len() == 3;
        after = page.last().and_then(|c| c.position.clone()).or(after);
        got.extend(page);
        if !full {
            break;
        }
    }
    assert_eq!(got, expected, "pages read ahead are the pages a poll reads");

    let entries = log_entries(&db.receipt_log(), fresh + 3).await;
    let ours: Vec<_> = entries
        .iter()
        .filter_map(|e| match e {
            LogEntry::Changes(c) if c.exchange_id == exchange => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(
        ours.iter().map(|c| c.rows).collect::<Vec<_>>(),
        [3, 3, 1],
        "one line per page asked for"
    );
    let read_at: Vec<chrono::DateTime<chrono::Utc>> = ours
        .iter()
        .map(|c| c.time.parse().expect("an RFC 3339 time"))
        .collect();
    assert!(read_at[0] > asked[0], "the first page is read when asked");
    assert!(
        read_at[1] < asked[1] && read_at[2] < asked[2],
        "the later pages were read ahead: read {read_at:?}, asked {asked:?}"
    );
    for (c, page) in ours.iter().zip(got.chunks(3)) {
        let records: Vec<&str> = page.iter().map(|change| change.record.as_str()).collect();
        assert_eq!(
            c.payload_sha256,
            jembatan_core::PayloadHasher::of(&records),
            "a page's line hashes what it sent"
        );
    }

    // a full page whose next page nobody asks for: only it is logged
    let lone = uuid::Uuid::new_v4().to_string();
    let mut req = request(None, 3, None);
    req.exchange_id = lone.clone();
    assert_eq!(poll(&adapter, req).await.expect("poll succeeds").len(), 3);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let entries = jembatan_adapter::read_receipt_log(&db.receipt_log()).expect("log reads");
    let lines = entries
        .iter()
        .filter(|e| matches!(e, LogEntry::Changes(c) if c.exchange_id == lone))
        .count();
    assert_eq!(
        lines, 1,
        "a page read ahead and never asked for is not logged"
    );
    db.drop_namespace().await;
}

/// A change time `minutes` from the database's now, in SQL.
fn db_time(kind: Kind, minutes: i64) -> String {
    match kind {
        Kind::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%f', 'now', '{minutes} minutes')"),
        Kind::Postgres => format!("now() + interval '{minutes} minutes'"),
        Kind::MySql => format!("NOW(6) + INTERVAL {minutes} MINUTE"),
    }
}

async fn the_lag_window_holds_back_young_and_future_changes(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    create_penduduk(&db, true).await;
    for (nik, minutes) in [("3201", -120), ("3202", -10), ("3203", 24 * 60)] {
        db.exec(&format!(
            "INSERT INTO penduduk (nik, nama, kec, status, diubah) \
             VALUES ('{nik}', 'X', 1, 'HIDUP', {})",
            db_time(kind, minutes)
        ))
        .await;
    }
    let keys = |changes: Vec<pb::Change>| -> Vec<String> {
        changes
            .into_iter()
            .map(|c| c.position.unwrap().key)
            .collect()
    };
    let hour = PENDUDUK.replace("lag = \"0s\"", "lag = \"1h\"");
    let adapter = db.adapter(&hour).await;
    assert_eq!(
        adapter.describe().datasets[0]
            .changes
            .as_ref()
            .unwrap()
            .lag_ms,
        3_600_000
    );
    let (changes, _) = follow(&adapter, None, 10, None).await;
    assert_eq!(keys(changes), ["\"3201\""], "younger than the lag: not yet");
    adapter.close().await;

    let adapter = db.adapter(PENDUDUK).await;
    let (changes, _) = follow(&adapter, None, 10, None).await;
    assert_eq!(
        keys(changes),
        ["\"3201\"", "\"3202\""],
        "a change dated in the future is held back until its time"
    );
    db.drop_namespace().await;
}

async fn integer_versions_are_read_without_a_horizon(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    db.exec(
        "CREATE TABLE bansos (id INTEGER NOT NULL PRIMARY KEY, nik VARCHAR(16) NOT NULL, \
         versi BIGINT NOT NULL, aktif INTEGER NOT NULL)",
    )
    .await;
    db.exec(
        "INSERT INTO bansos VALUES (1, '3201', 10, 1);
         INSERT INTO bansos VALUES (2, '3202', 10, 0);
         INSERT INTO bansos VALUES (3, '3203', 7, 1)",
    )
    .await;
    let config = r#"
[[datasets]]
name = "bansos"
table = "bansos"
key = "id"
columns = ["id", "nik"]

[datasets.changes]
column = "versi"
deleted = { field = "aktif", op = "eq", value = 0 }
"#;
    let adapter = db.adapter(config).await;
    let source = adapter.describe().datasets[0].changes.clone().unwrap();
    assert_eq!((source.lag_ms, source.poll_interval_ms), (0, 500));
    let mut req = request(Some(("7", "3")), 10, None);
    req.dataset = "disdukcapil.bansos".into();
    req.columns = vec!["id".into(), "nik".into()];
    let changes = poll(&adapter, req.clone()).await.unwrap();
    let got: Vec<(pb::ChangeOp, String, String, String)> = changes
        .iter()
        .map(|c| {
            let p = c.position.clone().unwrap();
            (c.op(), p.change, p.key, c.record.clone())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                pb::ChangeOp::Upsert,
                "10".to_owned(),
                "1".to_owned(),
                r#"{"id":1,"nik":"3201"}"#.to_owned()
            ),
            (
                pb::ChangeOp::Delete,
                "10".to_owned(),
                "2".to_owned(),
                String::new()
            ),
        ]
    );
    // a position from another column's type is refused
    req.after = Some(pb::ChangePosition {
        change: "\"10\"".into(),
        key: "1".into(),
    });
    let err = poll(&adapter, req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("after.change"), "{}", err.message());
    adapter.close().await;

    // a lag window means nothing for versions
    let with_lag = config.replace("column = \"versi\"", "column = \"versi\"\nlag = \"1s\"");
    let err = Adapter::connect(&db.config(&with_lag))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lag applies to timestamp change columns only"),
        "{err}"
    );
    db.drop_namespace().await;
}

async fn startup_refuses_change_sources_that_cannot_work(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    db.exec(
        "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, kode VARCHAR(10) NULL, \
         catatan VARCHAR(10) NULL, versi BIGINT NULL)",
    )
    .await;
    let base = r#"
[[datasets]]
name = "t"
table = "t"
key = "id"
columns = ["id", "kode"]

[datasets.changes]
column = "versi"
"#;
    let cases = [
        (
            base.replace("column = \"versi\"", "column = \"catatan\""),
            "changes: change column \"catatan\" has type",
        ),
        (
            base.replace("column = \"versi\"", "column = \"hilang\""),
            "table \"t\" has no column \"hilang\"",
        ),
        (
            base.replace("column = \"versi\"", "column = \"versi\"\nkey = \"kode\""),
            "changes: change key \"kode\" may be NULL",
        ),
        (
            base.replace(
                "column = \"versi\"",
                "column = \"versi\"\ndeleted = { field = \"dihapus\", op = \"eq\", value = 1 }",
            ),
            "table \"t\" has no column \"dihapus\"",
        ),
        (
            base.replace(
                "column = \"versi\"",
                "column = \"versi\"\ndeleted = { field = \"catatan\", op = \"eq\", value = 1 }",
            ),
            "changes: deleted: field catatan holds string values",
        ),
    ];
    for (config, want) in cases {
        let err = Adapter::connect(&db.config(&config))
            .await
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    // the config itself: a key is needed, among the columns, and sane durations
    let text = |datasets: &str| {
        format!(
            "version = 1\nagency = \"disdukcapil\"\ndatabase = \"sqlite::memory:\"\n\
             listen = \"127.0.0.1:0\"\nreceipt_log = \"r.jsonl\"\n\
             [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n{datasets}"
        )
    };
    let config_cases = [
        (base.replace("key = \"id\"\n", ""), "changes needs a key"),
        (
            base.replace(
                "column = \"versi\"",
                "column = \"versi\"\nkey = \"catatan\"",
            ),
            "changes: key \"catatan\" is not among columns",
        ),
        (
            base.replace(
                "column = \"versi\"",
                "column = \"versi\"\npoll_interval = \"1ms\"",
            ),
            "changes: poll_interval must be between 50ms and 1h; got 1ms",
        ),
        (
            base.replace("column = \"versi\"", "column = \"versi\"\nlag = \"2h\""),
            "changes: lag must be at most 1h; got 2h",
        ),
        (
            base.replace("column = \"versi\"", "column = \"versi\"\ncolum = \"x\""),
            "unknown field `colum`",
        ),
    ];
    for (datasets, want) in config_cases {
        let err = AdapterConfig::from_toml(&text(&datasets), db.dir.path())
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    db.drop_namespace().await;
}

async fn bad_polls_are_refused_without_quoting_values(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    create_penduduk(&db, false).await;
    put(&db, &[("3201", "Ani", 1, "HIDUP", "2026-01-05T10:00:00")]).await;
    let datasets = format!(
        "{PENDUDUK}\n[[datasets]]\nname = \"polos\"\ntable = \"penduduk\"\nkey = \"nik\"\ncolumns = [\"nik\"]\n"
    );
    let adapter = db.adapter(&datasets).await;
    let secret = "SECRET3201";
    let refused = |mut req: pb::ChangesRequest, code: Code, want: &'static str| {
        let adapter = Arc::clone(&adapter);
        async move {
            if req.dataset.is_empty() {
                req.dataset = "disdukcapil.penduduk".into();
            }
            let err = poll(&adapter, req).await.expect_err(want);
            assert_eq!(err.code(), code, "{want}: {}", err.message());
            assert!(err.message().contains(want), "{want}: {}", err.message());
            assert!(!err.message().contains(secret), "{}", err.message());
        }
    };
    let mut no_source = request(None, 10, None);
    no_source.dataset = "disdukcapil.polos".into();
    no_source.columns = vec!["nik".into()];
    refused(no_source, Code::FailedPrecondition, "offers no changes").await;
    let mut off_list = request(None, 10, None);
    off_list.columns.push("status".into());
    refused(off_list, Code::PermissionDenied, "not on the whitelist").await;
    refused(
        request(
            None,
            10,
            Some(json!({ "field": "status", "op": "eq", "value": secret })),
        ),
        Code::PermissionDenied,
        "filter names fields not on the whitelist",
    )
    .await;
    let secret_json = format!("\"{secret}\"");
    refused(
        request(Some((&secret_json, "\"3201\"")), 10, None),
        Code::InvalidArgument,
        "after.change",
    )
    .await;
    refused(
        request(
            Some((
                "\"2026-01-05T10:00:00\"",
                &format!("{{\"k\": \"{secret}\"}}"),
            )),
            10,
            None,
        ),
        Code::InvalidArgument,
        "after.key: must be the JSON text of a string or an integer",
    )
    .await;
    refused(
        request(
            Some(("\"2026-01-05T10:00:00\"", &"1".repeat(2000))),
            10,
            None,
        ),
        Code::InvalidArgument,
        "exceed the limit",
    )
    .await;
    // SQL in a position is a value like any other
    let (changes, _) = {
        let req = request(
            Some(("\"2026-01-05T09:00:00\"", "\"' OR 1=1 --\"")),
            10,
            None,
        );
        (poll(&adapter, req).await.unwrap(), ())
    };
    assert_eq!(changes.len(), 1);
    db.drop_namespace().await;
}

per_backend!(following_in_random_steps_sees_every_change_once);

/// A small deterministic generator (no dependency): xorshift.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Many ties on a few change values, polls of random sizes, and rounds of
/// updates that move rows past the last position: following from the
/// start gives every row once in `(change, key)` order, and following on
/// gives exactly the rows changed since, once each.
async fn following_in_random_steps_sees_every_change_once(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    db.exec(
        "CREATE TABLE bansos (id INTEGER NOT NULL PRIMARY KEY, versi BIGINT NOT NULL, \
         kec INTEGER NOT NULL)",
    )
    .await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // id -> (versi, kec)
    let mut table: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    let mut values = Vec::new();
    for id in 1..=120 {
        let row = (rng.below(6) as i64, rng.below(3) as i64);
        table.insert(id, row);
        values.push(format!("({id}, {}, {})", row.0, row.1));
    }
    db.exec(&format!("INSERT INTO bansos VALUES {}", values.join(", ")))
        .await;
    let config = r#"
[[datasets]]
name = "bansos"
table = "bansos"
key = "id"
columns = ["id", "kec"]

[datasets.changes]
column = "versi"
"#;
    let adapter = db.adapter(config).await;
    let scope = json!({ "field": "kec", "op": "eq", "value": 1 });
    let follow_random = |after: Option<pb::ChangePosition>, rng: &mut Rng| {
        let limits: Vec<u32> = (0..200).map(|_| 1 + rng.below(17) as u32).collect();
        let adapter = Arc::clone(&adapter);
        let scope = scope.clone();
        async move {
            let mut after = after;
            let mut seen = Vec::new();
            for limit in limits {
                let mut req = request(None, limit, Some(scope.clone()));
                req.dataset = "disdukcapil.bansos".into();
                req.columns = vec!["id".into(), "kec".into()];
                req.after = after.clone();
                let got = poll(&adapter, req).await.unwrap();
                let done = got.len() < limit as usize;
                if let Some(last) = got.last() {
                    after = last.position.clone();
                }
                for c in got {
                    let p = c.position.unwrap();
                    let id: i64 = p.key.parse().unwrap();
                    let versi: i64 = p.change.parse().unwrap();
                    seen.push((versi, id, c.in_scope, !c.record.is_empty()));
                }
                if done {
                    return (seen, after);
                }
            }
            panic!("never reached the end");
        }
    };
    let expected = |table: &std::collections::BTreeMap<i64, (i64, i64)>, above: i64| {
        let mut rows: Vec<(i64, i64, bool, bool)> = table
            .iter()
            .filter(|(_, (versi, _))| *versi > above)
            .map(|(id, (versi, kec))| (*versi, *id, *kec == 1, *kec == 1))
            .collect();
        rows.sort();
        rows
    };
    let (seen, mut after) = follow_random(None, &mut rng).await;
    assert_eq!(seen, expected(&table, -1));
    for round in 0..3 {
        let base = 100 * (round + 1);
        let mut changed = std::collections::BTreeSet::new();
        for _ in 0..25 {
            let id = 1 + rng.below(120) as i64;
            let row = (base + rng.below(4) as i64, rng.below(3) as i64);
            table.insert(id, row);
            changed.insert(id);
            db.exec(&format!(
                "UPDATE bansos SET versi = {}, kec = {} WHERE id = {id}",
                row.0, row.1
            ))
            .await;
        }
        let (seen, next) = follow_random(after.clone(), &mut rng).await;
        assert_eq!(seen, expected(&table, base - 1), "round {round}");
        let ids: std::collections::BTreeSet<i64> = seen.iter().map(|s| s.1).collect();
        assert_eq!(ids, changed, "round {round}: each changed row once");
        after = next;
    }
    db.drop_namespace().await;
}
