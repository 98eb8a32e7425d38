//! Store tests on SQLite and, when `JEMBATAN_TEST_POSTGRES_URL` is set, PostgreSQL.

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::{AuditLog, Store};

fn entry(exchange: &str, kind: EntryKind) -> AuditEntry {
    AuditEntry {
        v: 1,
        kind,
        exchange_id: exchange.into(),
        time: "2026-01-01T00:00:00.000000Z".into(),
        operation: "query".into(),
        caller: "agency:dinsos".into(),
        consumer: Some("dinsos".into()),
        provider: Some("disdukcapil".into()),
        dataset: Some("disdukcapil.penduduk".into()),
        purpose: Some("p".into()),
        fields: vec!["nik".into()],
        filter: None,
        subject_hash: None,
        limit: None,
        agreement_id: Some("a1".into()),
        agreement_terms_sha256: None,
        decision: Decision::Allow,
        reasons: vec![],
        status: ExchangeStatus::Started,
        rows: 0,
        bytes: 0,
        payload_sha256: None,
        duration_ms: None,
        error: None,
        trace_id: None,
    }
}

async fn concurrent_appends_are_gap_free(store: Store) {
    let log = AuditLog::start(store);
    let base = log.size().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(entry(&format!("x{i}"), EntryKind::Decision))
                .await
                .unwrap()
                .seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    let want: Vec<u64> = (base..base + 200).collect();
    assert_eq!(seqs, want);
    let back = log.entries(base, 1000).await.unwrap();
    assert_eq!(back.len(), 200);
    for (i, e) in back.iter().enumerate() {
        assert_eq!(e.seq, base + i as u64);
        assert_eq!(AuditEntry::sha256(&e.canonical), e.entry_sha256);
    }
    let one = log.exchange("x7").await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].entry.exchange_id, "x7");
}

#[tokio::test]
async fn sqlite_appends_are_gap_free_and_durable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.db");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    concurrent_appends_are_gap_free(store.clone()).await;
    store.close().await;
    let store = Store::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let log = AuditLog::start(store);
    assert_eq!(log.size().await.unwrap(), 200);
    let e = log
        .append(entry("after", EntryKind::Completion))
        .await
        .unwrap();
    assert_eq!(e.seq, 200);
}

#[tokio::test]
async fn sqlite_log_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("b.db").to_str().unwrap())
        .await
        .unwrap();
    let log = AuditLog::start(store.clone());
    log.append(entry("x", EntryKind::Decision)).await.unwrap();
    let err = sqlx::query("UPDATE audit_log SET status = 'ok'")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = sqlx::query("DELETE FROM audit_log")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn failed_write_is_reported_not_swallowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("b.db").to_str().unwrap())
        .await
        .unwrap();
    let log = AuditLog::start(store.clone());
    sqlx::query(
        "CREATE TRIGGER full_disk BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = log
        .append(entry("x", EntryKind::Decision))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit log unavailable"), "{err}");
    assert_eq!(log.size().await.unwrap(), 0);
}

#[tokio::test]
async fn postgres_appends_are_gap_free_across_replicas() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    // A fresh database per run, so the test starts from an empty log.
    let admin = Store::admin_pool(&url).await.unwrap();
    let name = format!("jembatan_store_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let db_url = replace_db(&url, &name);
    let a = Store::connect(&db_url).await.unwrap();
    let b = Store::connect(&db_url).await.unwrap();
    // two "replicas" append concurrently through their own appenders
    let (la, lb) = (AuditLog::start(a.clone()), AuditLog::start(b.clone()));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let log = if i % 2 == 0 { la.clone() } else { lb.clone() };
        tasks.push(tokio::spawn(async move {
            log.append(entry(&format!("p{i}"), EntryKind::Decision))
                .await
                .unwrap()
                .seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (0..100).collect::<Vec<u64>>());
    a.close().await;
    b.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}
