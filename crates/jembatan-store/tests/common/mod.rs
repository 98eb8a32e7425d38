//! Shared by the store's tests: audit entries to append, and fresh
//! PostgreSQL databases on the test server.

#![allow(dead_code)] // each test file uses its own part of this module

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::Store;

/// Entry `i` of a log of alternating decisions and completions (every
/// third exchange denied).
pub(crate) fn entry(i: usize) -> AuditEntry {
    let allowed = !i.is_multiple_of(3);
    AuditEntry {
        v: 1,
        kind: if i.is_multiple_of(2) {
            EntryKind::Decision
        } else {
            EntryKind::Completion
        },
        exchange_id: format!("x{}", i / 2),
        time: format!("2026-01-01T00:00:{:02}.000000Z", i % 60),
        operation: "query".into(),
        caller: "agency:dinsos".into(),
        consumer: Some("dinsos".into()),
        provider: Some("disdukcapil".into()),
        dataset: Some("disdukcapil.penduduk".into()),
        purpose: Some("bansos".into()),
        fields: vec!["nik".into()],
        filter: None,
        subject_hash: None,
        subjects: Vec::new(),
        unregistered_purpose: None,
        limit: None,
        agreement_id: Some("a1".into()),
        agreement_terms_sha256: None,
        translation: None,
        decision: if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reasons: vec![],
        status: if allowed {
            ExchangeStatus::Ok
        } else {
            ExchangeStatus::Denied
        },
        rows: i as u64,
        bytes: 10 * i as u64,
        payload_sha256: None,
        received: None,
        duration_ms: None,
        error: None,
        trace_id: None,
        adapter_endpoint: None,
        change: None,
        registry: None,
        subscription: None,
    }
}

pub(crate) fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// A store on a fresh PostgreSQL database, and the statement that drops
/// it; `None` (after printing why) without a server.
pub(crate) async fn fresh_postgres(prefix: &str) -> Option<(Store, sqlx::AnyPool, String)> {
    let (url, admin, drop_db) = empty_database(prefix).await?;
    let store = Store::connect(&url).await.unwrap();
    Some((store, admin, drop_db))
}

/// A new empty PostgreSQL database: its URL, an admin pool and the
/// statement that drops it; `None` (after saying why) without PostgreSQL.
pub(crate) async fn empty_database(prefix: &str) -> Option<(String, sqlx::AnyPool, String)> {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return None;
    };
    let admin = Store::admin_pool(&url).await.unwrap();
    let name = format!("{prefix}_{}", std::process::id());
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop_db.clone()))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    Some((replace_db(&url, &name), admin, drop_db))
}

pub(crate) async fn drop_postgres(store: Store, admin: sqlx::AnyPool, drop_db: String) {
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(drop_db))
        .execute(&admin)
        .await
        .unwrap();
}
