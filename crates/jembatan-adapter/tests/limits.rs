//! Request limits of the adapter, end to end through its gRPC server over
//! mutual TLS: message size, filter depth and size, `IN` lists, string and
//! identifier lengths, number of columns, batch size, and time — the
//! caller's deadline (`grpc-timeout`) and the adapter's `max_query_time`
//! stop a slow query in the database itself, on every backend; bulk
//! fetches leave a quarter of the database pool to lookups.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, Served, TestDb, fetch_grpc, log_entries};
use jembatan_adapter::{Adapter, FetchStatus, LogEntry, MAX_BATCH_SIZE, MAX_REQUEST_BYTES};
use jembatan_core::limits::{
    MAX_FETCH_PARTS, MAX_FIELDS, MAX_FORWARDED_FILTER_DEPTH, MAX_FORWARDED_FILTER_PREDICATES,
    MAX_IDENT_BYTES, MAX_IN_VALUES, MAX_STRING_BYTES,
};
use jembatan_proto::v1 as pb;
use tonic::Code;

/// A table with `MAX_FIELDS` columns, all exposed, and `rows` rows.
async fn wide_table(db: &TestDb, rows: usize) -> Arc<Adapter> {
    let cols: Vec<String> = (0..MAX_FIELDS).map(|i| format!("c{i}")).collect();
    db.exec(&format!(
        "CREATE TABLE lebar (nik TEXT PRIMARY KEY, {})",
        cols.iter()
            .map(|c| format!("{c} TEXT"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO lebar (nik, c0) WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows}) \
         SELECT printf('%06d', x), 'v' || x FROM n"
    ))
    .await;
    let mut exposed = vec!["\"nik\"".to_owned()];
    exposed.extend(cols.iter().take(MAX_FIELDS - 1).map(|c| format!("{c:?}")));
    db.adapter(&format!(
        "[[datasets]]\nname = \"lebar\"\ntable = \"lebar\"\nkey = \"nik\"\ncolumns = [{}]\n",
        exposed.join(", ")
    ))
    .await
}

fn request(columns: &[&str], filter: Option<pb::Filter>) -> pb::FetchRequest {
    pb::FetchRequest {
        exchange_id: uuid::Uuid::new_v4().to_string(),
        dataset: "disdukcapil.lebar".into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        filter,
        limit: 0,
        batch_size: 0,
        consumer: "dinsos".into(),
        purpose: "uji batas".into(),
        parts: Vec::new(),
    }
}

/// `n` keys from `from`, as one `IN` list on `nik`.
fn in_range(from: usize, n: usize) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: "nik".into(),
            op: pb::Operator::In as i32,
            value: None,
            values: (from..from + n)
                .map(|i| string(&format!("{i:06}")))
                .collect(),
        })),
    }
}

/// A fetch of `nik` run as one statement per part.
fn in_parts(parts: Vec<pb::Filter>) -> pb::FetchRequest {
    pb::FetchRequest {
        parts,
        ..request(&["nik"], None)
    }
}

fn string(s: &str) -> pb::Scalar {
    pb::Scalar {
        kind: Some(pb::scalar::Kind::StringValue(s.into())),
    }
}

fn pred(field: &str, op: pb::Operator, value: Option<pb::Scalar>) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: op as i32,
            value,
            values: vec![],
        })),
    }
}

fn all(filters: Vec<pb::Filter>) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::All(pb::FilterList { filters })),
    }
}

/// `depth` levels: `depth - 1` `all` lists around one predicate.
fn nested(depth: usize) -> pb::Filter {
    let mut f = pred("nik", pb::Operator::IsNotNull, None);
    for _ in 1..depth {
        f = all(vec![f]);
    }
    f
}

fn in_list(n: usize) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: "nik".into(),
            op: pb::Operator::In as i32,
            value: None,
            values: (0..n).map(|i| string(&format!("{i:06}"))).collect(),
        })),
    }
}

/// The records a request gets, or the code and message text of its refusal.
type Want = Result<usize, (Code, String)>;

/// Each limit at its value is served; one over is refused naming it.
#[tokio::test]
async fn every_request_limit_is_enforced_at_its_bound() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let adapter = wide_table(&db, 20).await;
    let served = Served::start(adapter.clone()).await;
    let mut client = served.client().await;

    let all_columns: Vec<String> = std::iter::once("nik".to_owned())
        .chain((0..MAX_FIELDS - 1).map(|i| format!("c{i}")))
        .collect();
    let all_refs: Vec<&str> = all_columns.iter().map(String::as_str).collect();
    let mut too_many = all_refs.clone();
    too_many.push("c255");
    let long_ident = "a".repeat(MAX_IDENT_BYTES + 1);
    let mut long_dataset = request(&["nik"], None);
    long_dataset.dataset = format!("disdukcapil.{}", "a".repeat(2 * MAX_IDENT_BYTES));
    let mut at_dataset_limit = request(&["nik"], None);
    at_dataset_limit.dataset = format!(
        "{}.{}",
        "a".repeat(MAX_IDENT_BYTES),
        "b".repeat(MAX_IDENT_BYTES)
    );
    let mut big = request(&["nik"], None);
    big.exchange_id = "x".repeat(MAX_REQUEST_BYTES);
    let mut just_under = request(&["nik"], None);
    just_under.exchange_id = "x".repeat(MAX_REQUEST_BYTES - 1024);

    // (name, request, rows it gets, or the refusal)
    let cases: Vec<(&str, pb::FetchRequest, Want)> = vec![
        // one statement per part, their rows streamed as one answer:
        // keys 0..20 in ten parts of two; rows 000001..000020 exist
        (
            "max_fetch_parts parts",
            in_parts((0..MAX_FETCH_PARTS).map(|k| in_range(2 * k, 2)).collect()),
            Ok(19),
        ),
        (
            "max_fetch_parts + 1 parts",
            in_parts((0..=MAX_FETCH_PARTS).map(|k| in_range(2 * k, 2)).collect()),
            Err((
                Code::InvalidArgument,
                format!("11 parts exceed the limit max_fetch_parts = {MAX_FETCH_PARTS}"),
            )),
        ),
        (
            "a part naming a column off the whitelist",
            in_parts(vec![pred("c255", pb::Operator::Eq, Some(string("v1")))]),
            Err((
                Code::PermissionDenied,
                "filter names fields not on the whitelist".into(),
            )),
        ),
        ("max_fields columns", request(&all_refs, None), Ok(20)),
        (
            "max_fields + 1 columns",
            request(&too_many, None),
            Err((
                Code::InvalidArgument,
                format!("257 columns exceed the limit max_fields = {MAX_FIELDS}"),
            )),
        ),
        (
            "column name of max_ident_bytes + 1",
            request(&[long_ident.as_str()], None),
            Err((
                Code::InvalidArgument,
                format!(
                    "a column name of 129 bytes exceeds the limit max_ident_bytes = {MAX_IDENT_BYTES}"
                ),
            )),
        ),
        (
            "filter field of max_ident_bytes + 1",
            request(
                &["nik"],
                Some(pred(&long_ident, pb::Operator::IsNull, None)),
            ),
            Err((
                Code::InvalidArgument,
                "field name is longer than 128 bytes (limit max_ident_bytes)".into(),
            )),
        ),
        (
            "dataset id at the limit (not on the whitelist)",
            at_dataset_limit,
            Err((Code::PermissionDenied, "is not on the whitelist".into())),
        ),
        (
            "dataset id over the limit",
            long_dataset,
            Err((
                Code::InvalidArgument,
                format!(
                    "dataset id of 268 bytes exceeds the limit max_ident_bytes = {MAX_IDENT_BYTES}"
                ),
            )),
        ),
        // the broker's filter: row filter, consumer filter and key under one `all`
        (
            "filter depth at max_forwarded_filter_depth",
            request(&["nik"], Some(nested(MAX_FORWARDED_FILTER_DEPTH))),
            Ok(20),
        ),
        (
            "filter depth over max_forwarded_filter_depth",
            request(&["nik"], Some(nested(MAX_FORWARDED_FILTER_DEPTH + 1))),
            Err((
                Code::InvalidArgument,
                format!(
                    "nesting deeper than the limit max_forwarded_filter_depth = {MAX_FORWARDED_FILTER_DEPTH}"
                ),
            )),
        ),
        (
            "max_forwarded_filter_predicates predicates",
            request(
                &["nik"],
                Some(all((0..MAX_FORWARDED_FILTER_PREDICATES)
                    .map(|_| pred("nik", pb::Operator::IsNotNull, None))
                    .collect())),
            ),
            Ok(20),
        ),
        (
            "max_forwarded_filter_predicates + 1 predicates",
            request(
                &["nik"],
                Some(all((0..=MAX_FORWARDED_FILTER_PREDICATES)
                    .map(|_| pred("nik", pb::Operator::IsNotNull, None))
                    .collect())),
            ),
            Err((
                Code::InvalidArgument,
                format!(
                    "more predicates than the limit max_forwarded_filter_predicates = {MAX_FORWARDED_FILTER_PREDICATES}"
                ),
            )),
        ),
        (
            "max_in_values values",
            request(&["nik"], Some(in_list(MAX_IN_VALUES))),
            Ok(20),
        ),
        (
            "max_in_values + 1 values",
            request(&["nik"], Some(in_list(MAX_IN_VALUES + 1))),
            Err((
                Code::InvalidArgument,
                format!("1001 values exceed the limit max_in_values = {MAX_IN_VALUES}"),
            )),
        ),
        (
            "string of max_string_bytes",
            request(
                &["nik"],
                Some(pred(
                    "c0",
                    pb::Operator::Prefix,
                    Some(string(&"v".repeat(MAX_STRING_BYTES))),
                )),
            ),
            Ok(0),
        ),
        (
            "string of max_string_bytes + 1",
            request(
                &["nik"],
                Some(pred(
                    "c0",
                    pb::Operator::Eq,
                    Some(string(&"v".repeat(MAX_STRING_BYTES + 1))),
                )),
            ),
            Err((
                Code::InvalidArgument,
                format!(
                    "string of 4097 bytes exceeds the limit max_string_bytes = {MAX_STRING_BYTES}"
                ),
            )),
        ),
        ("request just under max_request_bytes", just_under, Ok(20)),
        (
            "request over max_request_bytes",
            big,
            Err((
                Code::ResourceExhausted,
                "exceeds the limit max_request_bytes = 4194304".into(),
            )),
        ),
    ];
    for (name, req, want) in cases {
        let got = fetch_grpc(&mut client, req).await;
        match (got, want) {
            (Ok(records), Ok(n)) => assert_eq!(records.len(), n, "{name}"),
            (Err(status), Err((code, text))) => {
                assert_eq!(status.code(), code, "{name}: {status:?}");
                assert!(
                    status.message().contains(&text),
                    "{name}: {:?} lacks {text:?}",
                    status.message()
                );
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
    served.stop().await;
    adapter.close().await;
}

/// The request's batch size is capped at `MAX_BATCH_SIZE`; 0 takes the
/// config's.
#[tokio::test]
async fn batch_size_is_capped() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let rows = MAX_BATCH_SIZE as usize + 2_000;
    let adapter = wide_table(&db, rows).await;
    let served = Served::start(adapter.clone()).await;
    let mut client = served.client().await;
    for (asked, want) in [
        (u32::MAX, vec![MAX_BATCH_SIZE as usize, 2_000]),
        (MAX_BATCH_SIZE + 1, vec![MAX_BATCH_SIZE as usize, 2_000]),
        (5_000, vec![5_000, 5_000, 2_000]),
        // the test config's batch_size
        (0, vec![100; rows / 100]),
    ] {
        let mut req = request(&["nik"], None);
        req.batch_size = asked;
        let mut stream = client.fetch(req).await.expect("fetch").into_inner();
        let mut sizes = Vec::new();
        while let Some(msg) = stream.message().await.expect("batch") {
            sizes.push(msg.batch.expect("batch").records.len());
        }
        assert_eq!(sizes, want, "batch_size {asked}");
    }
    served.stop().await;
    adapter.close().await;
}

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
    caller_deadline_stops_a_slow_query,
    max_query_time_stops_a_slow_query,
);

/// A view that takes minutes to produce its rows.
async fn slow_view(db: &TestDb, name: &str) {
    let sql = match db.kind {
        Kind::Sqlite => format!(
            "CREATE VIEW {name} AS WITH RECURSIVE c(x) AS \
             (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000000000) \
             SELECT x AS id FROM c WHERE x < 0"
        ),
        Kind::Postgres => format!(
            "CREATE VIEW {name} AS SELECT g AS id FROM generate_series(1, 3) AS g \
             CROSS JOIN LATERAL pg_sleep(60)"
        ),
        Kind::MySql => {
            format!("CREATE VIEW {name} AS SELECT seq AS id FROM seq_1_to_3 WHERE SLEEP(60) = 0")
        }
    };
    db.exec(&sql).await;
}

fn slow_datasets(name: &str) -> String {
    format!("[[datasets]]\nname = \"lambat\"\ntable = \"{name}\"\ncolumns = [\"id\"]\n")
}

/// Statements of the slow view still running in the database server.
async fn running(db: &TestDb, name: &str) -> i64 {
    let like = format!("%{name}%");
    match db.kind {
        // in process: the pool closes only once no statement runs
        Kind::Sqlite => 0,
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            let n = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
            )
            .bind(&like)
            .fetch_one(&pool)
            .await
            .expect("pg_stat_activity");
            pool.close().await;
            n
        }
        Kind::MySql => {
            let pool = sqlx::MySqlPool::connect(&db.url).await.expect("connect");
            let n = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE ? AND ID <> CONNECTION_ID()",
            )
            .bind(&like)
            .fetch_one(&pool)
            .await
            .expect("processlist");
            pool.close().await;
            n
        }
    }
}

/// Waits until the database runs no statement of the view; returns how
/// long that took.
async fn until_stopped(db: &TestDb, name: &str) -> Duration {
    let started = Instant::now();
    while running(db, name).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}: the database still runs the query",
            db.kind
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Checks the fetch's end: `DeadlineExceeded` with `text`, soon after
/// `limit`, the statement gone from the database, a `failed` receipt-log line.
async fn expect_stopped(
    db: &TestDb,
    adapter: &Arc<Adapter>,
    name: &str,
    result: Result<Vec<String>, tonic::Status>,
    started: Instant,
    limit: Duration,
    text: &str,
) {
    let elapsed = started.elapsed();
    let status = result.expect_err("a slow query must not finish");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains(text) && status.message().ends_with("the query was stopped"),
        "{}",
        status.message()
    );
    assert!(
        elapsed >= limit && elapsed < limit + Duration::from_secs(3),
        "{:?}: answered after {elapsed:?} for a limit of {limit:?}",
        db.kind
    );
    let stopped = until_stopped(db, name).await;
    let entries = log_entries(&db.receipt_log(), 1).await;
    let LogEntry::Served(entry) = &entries[0] else {
        panic!("served entry expected")
    };
    assert_eq!(entry.status, FetchStatus::Failed);
    assert_eq!(entry.rows, 0);
    // SQLite runs in process: the pool closes only when no statement runs
    let closing = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), adapter.close())
        .await
        .unwrap_or_else(|_| panic!("{:?}: the query still holds a connection", db.kind));
    println!(
        "{:?}: DeadlineExceeded after {} ms (limit {} ms); statement gone from the database {} ms later; pool closed in {} ms",
        db.kind,
        elapsed.as_millis(),
        limit.as_millis(),
        stopped.as_millis(),
        closing.elapsed().as_millis()
    );
}

async fn caller_deadline_stops_a_slow_query(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    let name = format!("lambat_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    slow_view(&db, &name).await;
    let adapter = db.adapter(&slow_datasets(&name)).await;
    let served = Served::start(adapter.clone()).await;
    let mut client = served.client().await;
    let limit = Duration::from_millis(1500);
    let mut req = tonic::Request::new(pb::FetchRequest {
        dataset: "disdukcapil.lambat".into(),
        columns: vec!["id".into()],
        ..request(&[], None)
    });
    req.set_timeout(limit);
    let started = Instant::now();
    let result = fetch_grpc(&mut client, req).await;
    expect_stopped(
        &db,
        &adapter,
        &name,
        result,
        started,
        limit,
        "did not finish within the caller's deadline of 1s 500ms (grpc-timeout)",
    )
    .await;
    served.stop().await;
    db.drop_namespace().await;
}

/// A caller that cancels (no deadline) stops the statement in the
/// database at once, not at `max_query_time`: SQLite's progress handler
/// sees the fetch dropped; PostgreSQL (14 and later) sees the closed
/// connection within `client_connection_check_interval` (half a second);
/// MariaDB, which does not look, has the statement killed (`KILL QUERY`)
/// from another connection of the adapter's pool.
#[tokio::test]
async fn a_cancelled_fetch_stops_its_statement_at_once() {
    for (kind, within) in [
        (Kind::Sqlite, Duration::from_millis(500)),
        (Kind::Postgres, Duration::from_secs(1)),
        (Kind::MySql, Duration::from_secs(1)),
    ] {
        let Some(db) = TestDb::new(kind).await else {
            continue;
        };
        let name = format!("lambat_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        slow_view(&db, &name).await;
        let adapter = db.adapter(&slow_datasets(&name)).await;
        let served = Served::start(adapter.clone()).await;
        let mut client = served.client().await;
        let req = pb::FetchRequest {
            dataset: "disdukcapil.lambat".into(),
            columns: vec!["id".into()],
            ..request(&[], None)
        };
        let call = tokio::spawn(async move { fetch_grpc(&mut client, req).await });
        // the statement runs in the database...
        let started = Instant::now();
        while kind != Kind::Sqlite && running(&db, &name).await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{kind:?}: the statement never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // ...until the caller cancels
        call.abort();
        let stopped = until_stopped(&db, &name).await;
        assert!(
            stopped < within,
            "{kind:?}: the statement ran on for {stopped:?} after the cancel (at most {within:?})"
        );
        tokio::time::timeout(Duration::from_secs(5), adapter.close())
            .await
            .unwrap_or_else(|_| panic!("{kind:?}: the cancelled query still holds a connection"));
        println!(
            "{kind:?}: statement gone {} ms after the cancel",
            stopped.as_millis()
        );
        served.stop().await;
        db.drop_namespace().await;
    }
}

async fn max_query_time_stops_a_slow_query(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    let name = format!("lambat_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    slow_view(&db, &name).await;
    let mut config = db.config(&slow_datasets(&name));
    config.max_query_time = Duration::from_secs(1);
    let adapter = Arc::new(Adapter::connect(&config).await.expect("adapter starts"));
    let served = Served::start(adapter.clone()).await;
    let mut client = served.client().await;
    // a caller's deadline longer than max_query_time does not extend it
    let mut req = tonic::Request::new(pb::FetchRequest {
        dataset: "disdukcapil.lambat".into(),
        columns: vec!["id".into()],
        ..request(&[], None)
    });
    req.set_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let result = fetch_grpc(&mut client, req).await;
    expect_stopped(
        &db,
        &adapter,
        &name,
        result,
        started,
        Duration::from_secs(1),
        "ran longer than the adapter's limit max_query_time = 1s",
    )
    .await;
    served.stop().await;
    db.drop_namespace().await;
}

/// A fetch that finishes inside its deadline is untouched by it, and the
/// session limits leave ordinary queries alone.
#[tokio::test]
async fn deadlines_leave_quick_fetches_alone() {
    for kind in [Kind::Sqlite, Kind::Postgres, Kind::MySql] {
        let Some(db) = TestDb::new(kind).await else {
            continue;
        };
        let values: Vec<String> = (1..=50).map(|i| format!("({i}, 'v{i}')")).collect();
        db.exec(&format!(
            "CREATE TABLE cepat (id INTEGER PRIMARY KEY, val TEXT NOT NULL);\n\
             INSERT INTO cepat VALUES {}",
            values.join(", ")
        ))
        .await;
        let adapter = db
            .adapter("[[datasets]]\nname = \"cepat\"\ntable = \"cepat\"\nkey = \"id\"\ncolumns = [\"id\", \"val\"]\n")
            .await;
        let served = Served::start(adapter.clone()).await;
        let mut client = served.client().await;
        for timeout in [
            None,
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(3600)),
        ] {
            // twice on the same pool: a deadline leaves nothing behind on a connection
            for _ in 0..2 {
                let mut req = tonic::Request::new(pb::FetchRequest {
                    dataset: "disdukcapil.cepat".into(),
                    columns: vec!["id".into(), "val".into()],
                    ..request(&[], None)
                });
                if let Some(t) = timeout {
                    req.set_timeout(t);
                }
                let records = fetch_grpc(&mut client, req).await.expect("fetch");
                assert_eq!(records.len(), 50, "{kind:?} {timeout:?}");
                assert_eq!(records[0], r#"{"id":1,"val":"v1"}"#);
            }
        }
        served.stop().await;
        adapter.close().await;
        db.drop_namespace().await;
    }
}

/// Each PostgreSQL and MariaDB session carries `max_query_time` (plus the
/// slack that lets the adapter answer first) as its statement limit.
#[tokio::test]
async fn the_session_time_limit_is_set_on_the_database() {
    for kind in [Kind::Postgres, Kind::MySql] {
        let Some(db) = TestDb::new(kind).await else {
            continue;
        };
        // the limit's own value, through a view the adapter serves
        let view = match kind {
            Kind::Postgres => {
                "CREATE VIEW batas_waktu AS SELECT current_setting('statement_timeout') AS v"
            }
            // a MariaDB view may not name a variable; a function may
            _ => {
                "CREATE FUNCTION batas() RETURNS VARCHAR(32) NOT DETERMINISTIC \
                 RETURN CAST(@@SESSION.max_statement_time AS CHAR);\n\
                 CREATE VIEW batas_waktu AS SELECT batas() AS v"
            }
        };
        db.exec(view).await;
        let mut config = db.config(
            "[[datasets]]\nname = \"batas_waktu\"\ntable = \"batas_waktu\"\ncolumns = [\"v\"]\n",
        );
        config.max_query_time = Duration::from_secs(90);
        let adapter = Arc::new(Adapter::connect(&config).await.expect("adapter"));
        let req = pb::FetchRequest {
            dataset: "disdukcapil.batas_waktu".into(),
            columns: vec!["v".into()],
            ..request(&[], None)
        };
        let records = common::records(&adapter, req).await;
        let want = match kind {
            Kind::Postgres => r#"{"v":"90250ms"}"#,
            _ => r#"{"v":"90.250000"}"#,
        };
        assert_eq!(records, vec![want], "{kind:?}");
        adapter.close().await;
        db.drop_namespace().await;
    }
}

#[tokio::test]
async fn lookups_keep_connections_that_bulk_fetches_cannot_take() {
    use futures::StreamExt;
    let db = TestDb::new(Kind::Sqlite).await.expect("sqlite");
    db.exec("CREATE TABLE t (nik TEXT PRIMARY KEY, nama TEXT)")
        .await;
    db.exec(
        "INSERT INTO t WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000) \
         SELECT printf('%06d', x), 'WARGA ' || x FROM n",
    )
    .await;
    let mut config = db.config(
        "[[datasets]]\nname = \"t\"\ntable = \"t\"\nkey = \"nik\"\ncolumns = [\"nik\", \"nama\"]\n",
    );
    // three connections for bulk fetches, one kept for lookups
    config.max_connections = 4;
    let adapter = Arc::new(Adapter::connect(&config).await.expect("adapter starts"));
    let bulk = || common::fetch("t", &["nik", "nama"], None);
    // three bulk fetches read one batch each and hold their connections
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = adapter.fetch(bulk()).unwrap();
        stream.next().await.unwrap().unwrap();
        held.push(stream);
    }
    // a fourth waits for one of them...
    let mut waiting = adapter.fetch(bulk()).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), waiting.next())
            .await
            .is_err(),
        "a bulk fetch past the bulk connections waits"
    );
    // ...while a lookup does not
    let mut lookup = common::fetch(
        "t",
        &["nik"],
        Some(serde_json::json!({"field": "nik", "op": "eq", "value": "000042"})),
    );
    lookup.limit = 2;
    let started = Instant::now();
    let found = tokio::time::timeout(Duration::from_secs(5), common::records(&adapter, lookup))
        .await
        .expect("the lookup is served beside the held fetches");
    assert_eq!(found, [r#"{"nik":"000042"}"#]);
    println!(
        "lookup beside three held bulk fetches: {:?}",
        started.elapsed()
    );
    // one held fetch let go, the waiting one gets its connection
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(5), waiting.next())
        .await
        .expect("the waiting fetch starts")
        .unwrap()
        .unwrap();
}

/// A fetch in parts (a batch's keys) answers part after part in the order
/// asked, each part in key order, whether its statements run one at a
/// time or two at once; keys that match no row are simply absent.
#[tokio::test]
async fn parts_answer_in_the_order_asked() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let adapter = wide_table(&db, 20).await;
    let served = Served::start(adapter.clone()).await;
    let mut client = served.client().await;
    // parts out of key order, the last reaching past the table's rows
    let starts = [15, 1, 9, 4, 19];
    let want: Vec<String> = starts
        .iter()
        .flat_map(|&from| (from..from + 3).filter(|k| *k <= 20))
        .map(|k| format!("{k:06}"))
        .collect();
    for _ in 0..5 {
        let records = fetch_grpc(
            &mut client,
            in_parts(starts.iter().map(|&from| in_range(from, 3)).collect()),
        )
        .await
        .unwrap();
        let got: Vec<String> = records
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                v["nik"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(got, want);
    }
}
