//! No value a consumer sends reaches a durable or exported sink in clear:
//! a corpus of distinctive marker values goes through every RPC a
//! consumer, integrator or provider can call — allowed and denied, valid
//! and invalid — with every log line captured at TRACE level, then the
//! broker's store (the SQLite file with its WAL, or every PostgreSQL table
//! as text), the adapter's receipt log and the captured log are searched
//! for each marker. The provider's database is SQLite, PostgreSQL or
//! MariaDB (the last two when `JEMBATAN_TEST_POSTGRES_URL` /
//! `JEMBATAN_TEST_MYSQL_URL` are set).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use jembatan_core::{Decision, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::registry_client::RegistryClient;
use jembatan_store::EntryQuery;
use jembatan_testkit::*;
use tonic::Code;

/// Every log line of this test binary, at every level.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        buffer
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const NIK_ABSENT: &str = "3171019999990001";
const INT_MARKER: i64 = 7_391_846_205_113;
const FLOAT_MARKER: f64 = 73_918.462_051_13;

/// The markers searched for, each a distinctive value a consumer sent.
fn markers() -> Vec<String> {
    let mut m: Vec<String> = [
        "MARKER-7f3a-value",
        "MARKER-7f3a-prefix",
        "MARKER-7f3a-in-kec-1",
        "MARKER-7f3a-in-kec-2",
        "MARKER-7f3a-in-nik",
        "MARKER-7f3a-verify",
        "MARKER-7f3a-denied",
        "MARKER-7f3a-long",
        "MARKER-7f3a-nul",
        "MARKER-7f3a-key",
        "MARKER-7f3a-purpose",
        "MARKER-7f3a-bad-field",
        "marker_7f3a_field",
        "marker_7f3a_vfield",
        "marker_7f3a_ds",
        "MARKER-7f3a-dataset",
        "marker_7f3a_schema",
        "MARKER-7f3a-target",
        "MARKER-7f3a-reference",
        "MARKER-7f3a-mapping",
        "MARKER-7f3a-example",
        NIK_ABSENT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    m.push(nik(3));
    m.push(nik(4));
    m.push(INT_MARKER.to_string());
    m.push(FLOAT_MARKER.to_string());
    m
}

fn int(i: i64) -> pb::Scalar {
    pb::Scalar {
        kind: Some(pb::scalar::Kind::IntValue(i)),
    }
}

fn float(f: f64) -> pb::Scalar {
    pb::Scalar {
        kind: Some(pb::scalar::Kind::DoubleValue(f)),
    }
}

fn pred(
    field: &str,
    op: pb::Operator,
    value: Option<pb::Scalar>,
    values: Vec<pb::Scalar>,
) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: op as i32,
            value,
            values,
        })),
    }
}

fn all(filters: Vec<pb::Filter>) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::All(pb::FilterList { filters })),
    }
}

fn with_filter(fields: &[&str], filter: pb::Filter) -> pb::QueryRequest {
    let mut q = query(fields);
    q.filter = Some(filter);
    q
}

fn lookup(key: pb::Scalar, verify: &[(&str, pb::Scalar)]) -> pb::LookupRequest {
    pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        key: Some(key),
        verify: verify
            .iter()
            .map(|(f, v)| (f.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

/// What each consumer request must end with.
enum Want {
    Ok,
    Code(Code),
}

async fn exchanges(b: &BrokerHandle, f: &Federation) {
    let mut ex = b.exchange(f, "dinsos").await;
    let long = format!("MARKER-7f3a-long{}", "Z".repeat(5000));
    let queries: Vec<(&str, pb::QueryRequest, Want)> = vec![
        (
            "allowed, filter on the key",
            with_filter(&["nik", "status"], eq("nik", &nik(3))),
            Want::Ok,
        ),
        (
            "allowed, IN lists on the key and another field, a string compared",
            with_filter(
                &["nik"],
                all(vec![
                    pred(
                        "nik",
                        pb::Operator::In,
                        None,
                        vec![
                            string(&nik(4)),
                            string("MARKER-7f3a-in-nik"),
                            string(NIK_ABSENT),
                        ],
                    ),
                    pred(
                        "kecamatan",
                        pb::Operator::In,
                        None,
                        vec![
                            string("MARKER-7f3a-in-kec-1"),
                            string("MARKER-7f3a-in-kec-2"),
                        ],
                    ),
                    pred(
                        "status",
                        pb::Operator::Ne,
                        Some(string("MARKER-7f3a-value")),
                        vec![],
                    ),
                    pred(
                        "kecamatan",
                        pb::Operator::Prefix,
                        Some(string("MARKER-7f3a-prefix")),
                        vec![],
                    ),
                ]),
            ),
            Want::Ok,
        ),
        (
            "allowed by the broker, refused by the adapter (number on a text column)",
            with_filter(
                &["nik"],
                pred("status", pb::Operator::Eq, Some(int(INT_MARKER)), vec![]),
            ),
            Want::Code(Code::InvalidArgument),
        ),
        (
            "allowed by the broker, refused by the adapter (double on a text column)",
            with_filter(
                &["nik"],
                pred(
                    "status",
                    pb::Operator::Gt,
                    Some(float(FLOAT_MARKER)),
                    vec![],
                ),
            ),
            Want::Code(Code::InvalidArgument),
        ),
        (
            "denied: a filter on a made-up field",
            with_filter(&["nik"], eq("marker_7f3a_field", "MARKER-7f3a-denied")),
            Want::Code(Code::PermissionDenied),
        ),
        (
            "denied: a made-up field asked for",
            query(&["nik", "marker_7f3a_field"]),
            Want::Code(Code::PermissionDenied),
        ),
        (
            "denied: a verify-only field filtered beyond equality",
            with_filter(
                &["nik"],
                pred(
                    "nama",
                    pb::Operator::Prefix,
                    Some(string("MARKER-7f3a-prefix")),
                    vec![],
                ),
            ),
            Want::Code(Code::PermissionDenied),
        ),
        (
            "invalid: a field name that is no field name",
            with_filter(&["nik"], eq("MARKER-7f3a-bad-field", "MARKER-7f3a-value")),
            Want::Code(Code::InvalidArgument),
        ),
        (
            "invalid: an over-long value",
            with_filter(&["nik"], eq("nik", &long)),
            Want::Code(Code::InvalidArgument),
        ),
        (
            "invalid: a value holding NUL",
            with_filter(&["nik"], eq("nik", "MARKER-7f3a-nul\0x")),
            Want::Code(Code::InvalidArgument),
        ),
        (
            "invalid: negative zero beside a marker",
            with_filter(
                &["nik"],
                all(vec![
                    eq("nik", "MARKER-7f3a-value"),
                    pred("status", pb::Operator::Eq, Some(float(-0.0)), vec![]),
                ]),
            ),
            Want::Code(Code::InvalidArgument),
        ),
    ];
    let mut variants: Vec<(&str, pb::QueryRequest, Want)> = Vec::new();
    let mut q = with_filter(&["nik"], eq("nik", &nik(3)));
    q.purpose = "MARKER-7f3a-purpose".into();
    variants.push((
        "denied: an unregistered purpose",
        q,
        Want::Code(Code::PermissionDenied),
    ));
    let mut q = with_filter(&["nik"], eq("nik", &nik(3)));
    q.purpose = "bansos\0MARKER-7f3a-purpose".into();
    variants.push((
        "invalid: a purpose holding NUL",
        q,
        Want::Code(Code::InvalidArgument),
    ));
    let mut q = with_filter(&["marker_7f3a_field"], eq("nik", "MARKER-7f3a-value"));
    q.dataset = "prov.marker_7f3a_ds".into();
    variants.push((
        "denied: an unknown dataset",
        q,
        Want::Code(Code::PermissionDenied),
    ));
    let mut q = with_filter(&["nik"], eq("nik", "MARKER-7f3a-value"));
    q.dataset = "MARKER-7f3a-dataset".into();
    variants.push((
        "invalid: no dataset id",
        q,
        Want::Code(Code::InvalidArgument),
    ));
    let mut q = with_filter(&["nik"], eq("nik", "MARKER-7f3a-value"));
    q.target_schema = "prov.marker_7f3a_schema@1".into();
    variants.push((
        "a target schema nobody registered",
        q,
        Want::Code(Code::InvalidArgument),
    ));
    let mut q = with_filter(&["nik"], eq("nik", "MARKER-7f3a-value"));
    q.target_schema = "MARKER-7f3a-target".into();
    variants.push((
        "a target schema that is no reference",
        q,
        Want::Code(Code::InvalidArgument),
    ));

    for (name, req, want) in queries.into_iter().chain(variants) {
        let out = run_query(&mut ex, req).await;
        match (want, out.end) {
            (Want::Ok, Ok(())) => {}
            (Want::Code(code), Err(status)) if status.code() == code => {}
            // a target schema may be refused as not found or invalid
            (Want::Code(Code::InvalidArgument), Err(_)) if name.contains("target schema") => {}
            (_, end) => panic!("{name}: ended {end:?}"),
        }
    }

    let lookups: Vec<(&str, pb::LookupRequest, Want)> = vec![
        (
            "allowed, with a value to verify",
            lookup(string(&nik(3)), &[("nama", string("MARKER-7f3a-verify"))]),
            Want::Ok,
        ),
        (
            "allowed, nobody by that key",
            lookup(string(NIK_ABSENT), &[]),
            Want::Ok,
        ),
        (
            "allowed by the broker, refused by the adapter (number for a text key)",
            lookup(int(INT_MARKER), &[]),
            Want::Code(Code::InvalidArgument),
        ),
        (
            "denied: a made-up field to verify",
            lookup(
                string("MARKER-7f3a-key"),
                &[("marker_7f3a_vfield", string("MARKER-7f3a-verify"))],
            ),
            Want::Code(Code::PermissionDenied),
        ),
        (
            "invalid: an over-long key",
            lookup(string(&long), &[]),
            Want::Code(Code::InvalidArgument),
        ),
        (
            "invalid: a value to verify under a bad field name",
            lookup(
                string("MARKER-7f3a-key"),
                &[("MARKER-7f3a-bad-field", string("MARKER-7f3a-verify"))],
            ),
            Want::Code(Code::InvalidArgument),
        ),
    ];
    let mut translated = lookup(
        string("MARKER-7f3a-key"),
        &[("nama", string("MARKER-7f3a-verify"))],
    );
    translated.target_schema = "prov.marker_7f3a_schema@1".into();
    let mut purpose = lookup(string("MARKER-7f3a-key"), &[]);
    purpose.purpose = "MARKER-7f3a-purpose".into();
    let more = vec![
        (
            "invalid: verify with a target schema",
            translated,
            Want::Code(Code::InvalidArgument),
        ),
        (
            "denied: an unregistered purpose",
            purpose,
            Want::Code(Code::PermissionDenied),
        ),
    ];
    for (name, req, want) in lookups.into_iter().chain(more) {
        match (want, ex.lookup(req).await) {
            (Want::Ok, Ok(_)) => {}
            (Want::Code(code), Err(status)) if status.code() == code => {}
            (_, end) => panic!("lookup {name}: ended {end:?}"),
        }
    }

    // a consumer without an agreement, and a certificate of another role
    let mut other = b.exchange(f, "dinkes").await;
    let err = other
        .lookup(lookup(string("MARKER-7f3a-denied"), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = run_query(
        &mut other,
        with_filter(&["nik"], eq("nik", "MARKER-7f3a-denied")),
    )
    .await
    .end
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut integrator = b.exchange(f, "integrator-prov").await;
    let err = integrator
        .lookup(lookup(
            string("MARKER-7f3a-denied"),
            &[("marker_7f3a_vfield", string("MARKER-7f3a-verify"))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// Agreements and Registry calls with a caller's own strings: ids and
/// references that name nothing, a schema checked but not registered.
async fn other_services(b: &BrokerHandle, f: &Federation) {
    for who in ["dinsos", "prov"] {
        let mut a = b.agreements(f, who).await;
        // an agreement id is the agencies' identifier, not a consumer's
        // value: refused steps name it (`docs/security.md`)
        let id = "no-such-agreement-7f3a".to_string();
        assert!(
            a.get(pb::GetAgreementRequest { id: id.clone() })
                .await
                .is_err()
        );
        assert!(
            a.approve(pb::ApproveRequest { id: id.clone() })
                .await
                .is_err()
        );
        assert!(
            a.revoke(pb::RevokeRequest {
                id: id.clone(),
                reason: String::new(),
            })
            .await
            .is_err()
        );
    }
    let mut r = RegistryClient::new(f.channel(b.port, "integrator-prov").await);
    assert!(
        r.get_schema(pb::GetSchemaRequest {
            reference: "MARKER-7f3a-reference".into(),
        })
        .await
        .is_err()
    );
    assert!(
        r.get_mapping(pb::GetMappingRequest {
            source: "MARKER-7f3a-mapping".into(),
            target: "prov.marker_7f3a_schema@1".into(),
            ..Default::default()
        })
        .await
        .is_err()
    );
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"nik": {"type": "string", "examples": ["MARKER-7f3a-example"]}},
    });
    // checked, never stored
    let _ = r
        .check_compatibility(pb::CheckCompatibilityRequest {
            dataset: "prov.penduduk".into(),
            schema_json: schema.to_string(),
            ..Default::default()
        })
        .await;
}

/// Where a marker was found, if anywhere.
fn hits(haystack: &[u8], where_: &str, markers: &[String]) -> Vec<String> {
    markers
        .iter()
        .filter(|m| haystack.windows(m.len()).any(|w| w == m.as_bytes()))
        .map(|m| format!("{m:?} in {where_}"))
        .collect()
}

/// Every row of every table of a PostgreSQL store, as text (bytea
/// columns, where the entries' JSON lives, with printable ASCII as is).
async fn postgres_text(url: &str) -> Vec<u8> {
    use sqlx::Row;
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in columns {
        let (table, column, ty): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let expr = if ty == "bytea" {
            format!("encode(\"{column}\", 'escape')")
        } else {
            format!("\"{column}\"::text")
        };
        tables.entry(table).or_default().push(expr);
    }
    let mut out = Vec::new();
    for (table, exprs) in tables {
        let sql = format!(
            "SELECT concat_ws(' ', {}) FROM \"{table}\"",
            exprs.join(", ")
        );
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            let text: Option<String> = row.get(0);
            out.extend_from_slice(text.unwrap_or_default().as_bytes());
            out.push(b'\n');
        }
    }
    pool.close().await;
    out
}

async fn run_corpus(store: Option<String>, adapter: Kind) {
    let logs = captured();
    let tmp = tempfile::tempdir().unwrap();
    let Some(db) = ProviderDb::new(adapter, tmp.path(), 10, "").await else {
        return;
    };
    let url = db.url.clone();
    let mut f = Federation::builder()
        .dir(tmp)
        .database(&url)
        .rows(10)
        .start()
        .await;
    if let Some(url) = &store {
        f.store = url.clone();
    }
    let fields = r#"["nik", "kecamatan", "status", { field = "nama", mode = "verify" }]"#;
    let config = f.broker_config(
        "",
        &agreement_toml("privacy-1", "dinsos", fields, "approved", ""),
    );
    let b = f.broker(&config).await;

    exchanges(&b, &f).await;
    other_services(&b, &f).await;

    // the log names each subject by its keyed hash, lookups and filters alike
    let key = jembatan_broker::read_audit_key(&config.audit_key).unwrap();
    let hash = jembatan_broker::subject_hash(&key, "prov.penduduk", &nik(3));
    let found = b
        .broker
        .store()
        .query_entries(
            &EntryQuery {
                subject_hash: Some(hash.clone()),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    let ops: Vec<(String, String)> = found
        .iter()
        .map(|r| {
            let e = jembatan_core::AuditEntry::from_canonical(&r.entry).unwrap();
            (e.operation, e.kind.as_str().to_owned())
        })
        .collect();
    for want in [
        ("query", "decision"),
        ("query", "completion"),
        ("lookup", "answered"),
    ] {
        assert!(
            ops.contains(&(want.0.to_owned(), want.1.to_owned())),
            "who-accessed finds {want:?}: {ops:?}"
        );
    }
    let in_hash = jembatan_broker::subject_hash(&key, "prov.penduduk", &nik(4));
    let found = b
        .broker
        .store()
        .query_entries(
            &EntryQuery {
                subject_hash: Some(in_hash),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "the IN query's decision and completion");

    // every entry, to name the ones holding a marker if any does
    let entries = b
        .broker
        .store()
        .query_entries(&EntryQuery::default(), 10_000)
        .await
        .unwrap();

    // let receipts reach the adapter, then stop writing
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    b.broker.shutdown().await.unwrap();

    let markers = markers();
    let mut found = Vec::new();
    let mut stored = Vec::new();
    match &store {
        None => {
            for suffix in ["", "-wal", "-shm"] {
                let path = format!("{}{suffix}", f.store);
                if let Ok(bytes) = std::fs::read(&path) {
                    found.extend(hits(&bytes, &path, &markers));
                    stored.extend(bytes);
                }
            }
        }
        Some(url) => {
            stored = postgres_text(url).await;
            found.extend(hits(&stored, "the PostgreSQL store", &markers));
        }
    }
    // the search reads the entries: the subject's hash is there
    assert!(
        !hits(&stored, "the store", std::slice::from_ref(&hash)).is_empty(),
        "the store's entries were searched"
    );
    let receipts = std::fs::read(f.dir.join("receipts.jsonl")).unwrap();
    assert!(!receipts.is_empty(), "the adapter logged what it served");
    found.extend(hits(&receipts, "the adapter's receipt log", &markers));
    let lines = logs.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&lines).contains("fetch finished"),
        "tracing was captured"
    );
    found.extend(hits(&lines, "the captured log", &markers));
    if !found.is_empty() {
        for e in &entries {
            let text = String::from_utf8_lossy(&e.entry);
            if markers.iter().any(|m| text.contains(m.as_str())) {
                eprintln!("entry {}: {text}", e.seq);
            }
        }
        let text = String::from_utf8_lossy(&lines);
        for m in &markers {
            for line in text.lines().filter(|l| l.contains(m.as_str())).take(3) {
                eprintln!("{}", jembatan_core::ids::truncate(line, 600));
            }
        }
    }
    assert!(found.is_empty(), "consumer values found: {found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_values_never_reach_the_store_receipts_or_logs() {
    run_corpus(None, Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_values_never_reach_the_logs_through_a_postgres_adapter() {
    run_corpus(None, Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_values_never_reach_the_logs_through_a_mariadb_adapter() {
    run_corpus(None, Kind::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_values_never_reach_a_postgres_store() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let admin = jembatan_store::Store::admin_pool(&url).await.unwrap();
    let name = format!("jembatan_privacy_{}_{}", std::process::id(), rand_suffix());
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    run_corpus(Some(format!("{base}/{name}")), Kind::Sqlite).await;
    sqlx::query(sqlx::AssertSqlSafe(drop_db))
        .execute(&admin)
        .await
        .unwrap();
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// A value the adapter would refuse is refused by the broker first, as
/// the consumer's invalid request: `InvalidArgument` and one deny entry,
/// never an allow decision followed by a `failed` completion.
#[tokio::test]
async fn values_the_adapter_refuses_are_refused_by_the_broker() {
    let f = Federation::start(10).await;
    let fields = r#"["nik", "kecamatan", "status"]"#;
    let config = f.broker_config(
        "",
        &agreement_toml("zero-1", "dinsos", fields, "approved", ""),
    );
    let b = f.broker(&config).await;
    let mut ex = b.exchange(&f, "dinsos").await;
    let cases = [
        (
            "negative zero",
            eq_value("status", float(-0.0)),
            "negative zero",
        ),
        (
            "negative zero in an IN list",
            pred(
                "status",
                pb::Operator::In,
                None,
                vec![float(1.0), float(-0.0)],
            ),
            "negative zero",
        ),
        (
            "not a number",
            eq_value("status", float(f64::NAN)),
            "finite",
        ),
        (
            "infinity",
            eq_value("status", float(f64::INFINITY)),
            "finite",
        ),
        ("NUL", eq("status", "HID\0UP"), "NUL"),
        (
            "over-long",
            eq("status", &"x".repeat(4097)),
            "max_string_bytes",
        ),
    ];
    for (name, filter, words) in cases {
        let before = b.broker.audit().size().await.unwrap();
        let err = run_query(&mut ex, with_filter(&["nik"], filter))
            .await
            .end
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(words), "{name}: {}", err.message());
        let entries = b.broker.audit().entries(before, 10).await.unwrap();
        let statuses: Vec<(Decision, ExchangeStatus)> = entries
            .iter()
            .map(|e| (e.entry.decision, e.entry.status))
            .collect();
        assert_eq!(
            statuses,
            [(Decision::Deny, ExchangeStatus::Invalid)],
            "{name}"
        );
    }
    // a lookup key too
    let before = b.broker.audit().size().await.unwrap();
    let err = ex.lookup(lookup(float(-0.0), &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let entries = b.broker.audit().entries(before, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.status, ExchangeStatus::Invalid);
}

fn eq_value(field: &str, value: pb::Scalar) -> pb::Filter {
    pred(field, pb::Operator::Eq, Some(value), vec![])
}

/// A purpose is a string like any other: NUL and control characters make
/// the request invalid, and only a registered purpose is logged in clear.
#[tokio::test]
async fn purposes_are_validated_and_only_registered_ones_logged() {
    let f = Federation::start(10).await;
    let config = f.broker_config(
        "",
        &agreement_toml("purpose-1", "dinsos", r#"["nik"]"#, "approved", ""),
    );
    let b = f.broker(&config).await;
    let mut ex = b.exchange(&f, "dinsos").await;
    let key = jembatan_broker::read_audit_key(&config.audit_key).unwrap();
    // (purpose sent, code, status logged, purpose logged in clear)
    let cases: [(&str, Code, ExchangeStatus, Option<&str>); 5] = [
        ("bansos", Code::Ok, ExchangeStatus::Started, Some("bansos")),
        (
            "kesehatan",
            Code::PermissionDenied,
            ExchangeStatus::Denied,
            Some("kesehatan"),
        ),
        (
            "bansos\0",
            Code::InvalidArgument,
            ExchangeStatus::Invalid,
            None,
        ),
        (
            "bansos\u{1b}[0m",
            Code::InvalidArgument,
            ExchangeStatus::Invalid,
            None,
        ),
        (
            "penelitian",
            Code::PermissionDenied,
            ExchangeStatus::Denied,
            None,
        ),
    ];
    for (purpose, code, status, logged) in cases {
        let before = b.broker.audit().size().await.unwrap();
        let mut q = query(&["nik"]);
        q.purpose = purpose.into();
        let end = run_query(&mut ex, q).await.end;
        assert_eq!(
            end.err().map_or(Code::Ok, |s| s.code()),
            code,
            "{purpose:?}"
        );
        let entry = &b.broker.audit().entries(before, 1).await.unwrap()[0].entry;
        assert_eq!(entry.status, status, "{purpose:?}");
        assert_eq!(entry.purpose.as_deref(), logged, "{purpose:?}");
        if logged.is_none() {
            let hashed = entry.unregistered_purpose.as_ref().expect("hashed purpose");
            assert_eq!(hashed.len, purpose.len() as u64);
            assert_eq!(
                hashed.hmac,
                jembatan_broker::subject_hash(&key, "purpose", purpose)
            );
            let text = String::from_utf8_lossy(&entry.canonical_bytes()).into_owned();
            assert!(
                !text.contains("bansos\\u0000") && !text.contains("penelitian"),
                "{text}"
            );
        } else {
            assert!(entry.unregistered_purpose.is_none());
        }
    }
}

/// Which fields are subject keys is the broker config's: the dataset's key
/// always, more through `subject_keys`. A filter value on a subject key is
/// its keyed hash (found by subject), on any other field its shape.
#[tokio::test]
async fn subject_keys_are_configured_per_dataset() {
    let f = Federation::start(10).await;
    let fields = r#"["nik", "kecamatan", "status"]"#;
    for extra in [&[][..], &["kecamatan"][..]] {
        let mut config = f.broker_config(
            "",
            &agreement_toml("subjects-1", "dinsos", fields, "approved", ""),
        );
        config.datasets[0].subject_keys = extra.iter().map(|f| f.parse().unwrap()).collect();
        let b = f.broker(&config).await;
        let mut ex = b.exchange(&f, "dinsos").await;
        let before = b.broker.audit().size().await.unwrap();
        let filter = all(vec![eq("kecamatan", "15.07.01"), eq("nik", &nik(3))]);
        run_query(&mut ex, with_filter(&["nik"], filter))
            .await
            .end
            .unwrap();
        let decision = &b.broker.audit().entries(before, 1).await.unwrap()[0].entry;
        let key = jembatan_broker::read_audit_key(&config.audit_key).unwrap();
        let hash = |v: &str| jembatan_broker::subject_hash(&key, "prov.penduduk", v);
        let kecamatan = if extra.is_empty() {
            serde_json::json!({"type": "string", "len": 8})
        } else {
            serde_json::json!({"subject": hash("15.07.01")})
        };
        assert_eq!(
            decision.filter,
            Some(serde_json::json!({"all": [
                {"field": "kecamatan", "op": "eq", "value": kecamatan},
                {"field": "nik", "op": "eq", "value": {"subject": hash(&nik(3))}},
            ]}))
        );
        let mut subjects = vec![hash(&nik(3))];
        if !extra.is_empty() {
            subjects.insert(0, hash("15.07.01"));
        }
        assert_eq!(decision.subjects, subjects);
        let found = b
            .broker
            .store()
            .query_entries(
                &EntryQuery {
                    subject_hash: Some(hash("15.07.01")),
                    from_seq: before,
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
        assert_eq!(found.len(), if extra.is_empty() { 0 } else { 2 });
        b.broker.shutdown().await.unwrap();
    }
}
