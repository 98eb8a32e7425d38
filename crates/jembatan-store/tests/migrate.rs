//! Moving a SQLite store to PostgreSQL: every value of every table arrives
//! as it was (across several batches), the copy verifies with the same
//! root and checkpoints, the log continues after the copied entries, a
//! non-empty target is refused naming a table, and a source appended to
//! during the copy fails it with nothing committed. A sequence feeding a
//! copied column is moved past the copied values.

mod common;

use jembatan_core::AuditEntry;
use jembatan_store::archive;
use jembatan_store::migrate::{self, MigrateError, Progress, row_counts, table_names};
use jembatan_store::verify::{catch_up_tiles, verify};
use jembatan_store::{Agency, AuditLog, Dataset, QuotaKind, Store};
use jembatan_tlog::note::{Checkpoint, Signer};
use sqlx::Row;

const ORIGIN: &str = "jembatan.local/audit-log";

/// [`common::entry`] with lookups over an hour, some without a purpose
/// and some with a subject.
fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        time: format!("2026-01-01T00:{:02}:{:02}.000000Z", i / 60 % 60, i % 60),
        operation: "lookup".into(),
        purpose: (!i.is_multiple_of(5)).then(|| "bansos".into()),
        subject_hash: i.is_multiple_of(4).then(|| format!("{:064x}", i)),
        ..common::entry(i)
    }
}

fn signer() -> Signer {
    Signer::from_seed(ORIGIN, &[7; 32]).unwrap()
}

/// Signs a checkpoint at `size`, from the tiles (brought up to it as the
/// broker does), so that it works on a log whose oldest entries are
/// archived.
async fn checkpoint(store: &Store, size: u64) {
    let mut tiles = store.tile_builder().await.unwrap();
    catch_up_tiles(store, &mut tiles, Some(size)).await.unwrap();
    assert_eq!(tiles.size(), size);
    let root = tiles.root();
    let note = Checkpoint::new(ORIGIN, size, root).sign(&signer()).unwrap();
    assert!(
        store
            .add_checkpoint(size, &hex::encode(root), &note)
            .await
            .unwrap()
    );
}

/// Appends entries `from..to`, many at once so that they share commits.
async fn append(log: &AuditLog, from: usize, to: usize) {
    for chunk in (from..to).collect::<Vec<_>>().chunks(2000) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(entry(i)).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
}

/// A SQLite store with `entries` entries, checkpoints, tiles, agencies,
/// a dataset, an agreement, schemas, a mapping and quota counters.
async fn sqlite_store(dir: &std::path::Path, entries: usize) -> (String, Store, AuditLog) {
    let url = format!("sqlite:{}", dir.join("broker.db").display());
    let store = Store::connect(&url).await.unwrap();
    for id in ["disdukcapil", "dinsos"] {
        store
            .upsert_agency(&Agency {
                id: id.parse().unwrap(),
                name: format!("Dinas {id}"),
                adapter_endpoints: if id == "disdukcapil" {
                    vec!["https://127.0.0.1:1".into(), "https://127.0.0.1:2".into()]
                } else {
                    Vec::new()
                },
            })
            .await
            .unwrap();
    }
    store
        .upsert_dataset(&Dataset {
            id: "disdukcapil.penduduk".parse().unwrap(),
            key_field: Some("nik".into()),
            description: "penduduk".into(),
        })
        .await
        .unwrap();
    let agreement: jembatan_core::Agreement = serde_json::from_value(serde_json::json!({
        "id": "a1", "provider": "disdukcapil", "consumer": "dinsos",
        "dataset": "disdukcapil.penduduk", "fields": ["nik", {"field": "nama", "mode": "verify"}],
        "purpose": "bansos", "valid_from": "2026-01-01", "status": "proposed",
        "quota": {"rows_per_day": 10}
    }))
    .unwrap();
    store.insert_agreement(&agreement).await.unwrap();
    for (dataset, by) in [
        ("disdukcapil.penduduk", "integrator:disdukcapil"),
        ("dinsos.warga", "integrator:dinsos"),
    ] {
        let document = format!("{{\"title\":\"{dataset}\"}}");
        let id = format!("sha256:{dataset}");
        store
            .insert_schema_version(dataset, 1, &id, &document, by)
            .await
            .unwrap();
    }
    store
        .set_compatibility("dinsos.warga", Some("FULL"), true)
        .await
        .unwrap();
    store
        .insert_mapping(
            "disdukcapil.penduduk@1",
            "dinsos.warga@1",
            1,
            "{\"v\":1}",
            "integrator:dinsos",
        )
        .await
        .unwrap();
    for window in ["2026-01-01", "2026-01-02"] {
        assert!(
            store
                .take_quota("a1", QuotaKind::RowsPerDay, window, 5, 10)
                .await
                .unwrap()
        );
    }
    // a subscription's delivered keys, as keyed hashes
    let hashes: Vec<jembatan_store::KeyHash> = (0..3u8)
        .map(|i| {
            let mut b = [0u8; 32];
            b[31] = i;
            b
        })
        .collect();
    let jembatan_store::Resumed::Ready { generation } =
        store.resume_subscription("sub-1", 0).await.unwrap()
    else {
        panic!("a new subscription")
    };
    assert!(
        store
            .record_subscription_batch("sub-1", generation, 1, &hashes, &[])
            .await
            .unwrap()
    );
    // a broker killed with an exchange open, holding a lease
    store
        .register_replica("r1", "host/1", std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        store
            .open_exchange("x-open", "r1", "dinsos", 8, std::time::Duration::ZERO)
            .await
            .unwrap()
    );
    assert!(
        store
            .take_lease("checkpoint", "r1", std::time::Duration::from_secs(1))
            .await
            .unwrap()
    );
    let log = AuditLog::start(store.clone());
    if entries > 512 {
        // a first range to archive
        append(&log, 0, 256).await;
        checkpoint(&store, 256).await;
        append(&log, 256, entries / 2).await;
    } else {
        append(&log, 0, entries / 2).await;
    }
    checkpoint(&store, (entries / 2) as u64).await;
    append(&log, entries / 2, entries).await;
    checkpoint(&store, entries as u64).await;
    let mut tiles = store.tile_builder().await.unwrap();
    catch_up_tiles(&store, &mut tiles, None).await.unwrap();
    (url, store, log)
}

/// A new database on the test server, dropped by [`drop_database`].
async fn database(url: &str, name: &str) -> (sqlx::AnyPool, String) {
    let admin = Store::admin_pool(url).await.unwrap();
    exec(&admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
    exec(&admin, &format!("CREATE DATABASE {name}")).await;
    let (base, _) = url.rsplit_once('/').unwrap();
    (admin, format!("{base}/{name}"))
}

async fn drop_database(admin: &sqlx::AnyPool, name: &str) {
    exec(admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
}

async fn exec(pool: &sqlx::AnyPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Every row of `table`, each value as it is stored, sorted.
async fn rows(store: &Store, table: &str) -> Vec<Vec<Value>> {
    let sql = format!("SELECT * FROM {table}");
    let mut out = Vec::new();
    for row in sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.pool())
        .await
        .unwrap()
    {
        let values = (0..row.len())
            .map(|i| {
                if let Ok(n) = row.try_get::<Option<i64>, _>(i) {
                    n.map_or(Value::Null, Value::Int)
                } else if let Ok(text) = row.try_get::<String, _>(i) {
                    Value::Text(text)
                } else {
                    Value::Bytes(row.try_get::<Vec<u8>, _>(i).unwrap())
                }
            })
            .collect();
        out.push(values);
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_moves_to_postgres_value_for_value() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // more entries than one batch holds
    let entries = migrate::BATCH_ROWS * 2 + 345;
    let (from, source, _log) = sqlite_store(dir.path(), entries).await;
    // its first 256 entries archived: the record of it moves too
    let archived = archive::archive(
        &source,
        &signer().verifier(),
        &archive::Bound::Below(256),
        &dir.path().join("archive-0.jsonl"),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(archived.record.up_to, 256);
    source.close().await;
    let name = format!("jembatan_migrate_{}", std::process::id());
    let (admin, to) = database(&url, &name).await;

    let (source, target) = migrate::open_stores(&from, &to, &Default::default())
        .await
        .unwrap();
    let mut seen: Vec<Progress> = Vec::new();
    let report = migrate::migrate(&source, &target, &mut |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!(report.log_size, entries as u64);
    assert!(report.sequences.is_empty(), "{:?}", report.sequences);
    let audit: Vec<_> = seen.iter().filter(|p| p.table == "audit_log").collect();
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert_eq!(
        audit.iter().map(|p| p.copied).collect::<Vec<_>>(),
        [10_000, 20_000, entries as u64 - 256]
    );
    assert!(audit.iter().all(|p| p.total == entries as u64 - 256));

    // every value of every table, as it was
    for table in table_names() {
        let (s, t) = (rows(&source, table).await, rows(&target, table).await);
        assert!(!s.is_empty(), "{table} is empty in the fixture");
        assert_eq!(s.len(), t.len(), "{table}");
        assert!(s == t, "{table} differs");
    }
    assert_eq!(
        report.rows,
        row_counts(&source).await.unwrap(),
        "rows copied"
    );

    // both verify alike
    let verifier = signer().verifier();
    let comparison = migrate::compare(&source, &target, &verifier).await.unwrap();
    assert_eq!(comparison.differences(), Vec::<String>::new());
    let (s, t) = (
        comparison.source.verified.as_ref().unwrap(),
        comparison.target.verified.as_ref().unwrap(),
    );
    assert_eq!((t.size, t.root, t.checkpoints), (s.size, s.root, 3));
    assert_eq!((s.archived, t.archived), (256, 256));
    assert_eq!(
        comparison.target.latest_checkpoint.as_ref().unwrap().0,
        entries as u64
    );

    // a second copy into the now non-empty target is refused
    let err = migrate::migrate(&source, &target, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::TargetNotEmpty { table: "agencies" }),
        "{err}"
    );
    assert!(
        err.to_string().contains("table agencies holds rows"),
        "{err}"
    );

    // the log continues on PostgreSQL after the copied entries
    let log = AuditLog::start(target.clone());
    let next = log.append(entry(entries)).await.unwrap();
    assert_eq!(next.seq, entries as u64);
    checkpoint(&target, entries as u64 + 1).await;
    let report = verify(&target, &verifier).await.unwrap();
    assert_eq!((report.size, report.checkpoints), (entries as u64 + 1, 4));

    // the difference is found when the stores no longer agree
    let comparison = migrate::compare(&source, &target, &verifier).await.unwrap();
    let differences = comparison.differences().join("\n");
    assert!(
        differences.contains(&format!(
            "audit log size: {entries} in the source, {} in the target",
            entries + 1
        )),
        "{differences}"
    );
    assert!(differences.contains("table audit_log: "), "{differences}");
    source.close().await;
    target.close().await;
    drop_database(&admin, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_appended_to_during_the_copy_fails_it_with_nothing_committed() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, source, source_log) = sqlite_store(dir.path(), 40).await;
    let name = format!("jembatan_migrate_busy_{}", std::process::id());
    let (admin, to) = database(&url, &name).await;
    let target = Store::connect(&to).await.unwrap();

    // a broker still appending: one entry lands after the first batch
    let handle = tokio::runtime::Handle::current();
    let mut appended = false;
    let err = migrate::migrate(&source, &target, &mut |_| {
        if !appended {
            appended = true;
            tokio::task::block_in_place(|| {
                handle.block_on(source_log.append(entry(40))).unwrap();
            });
        }
    })
    .await
    .unwrap_err();
    assert!(appended);
    assert!(
        matches!(
            err,
            MigrateError::SourceChanged {
                before: 40,
                after: 41
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("stop every broker"), "{err}");
    assert!(
        row_counts(&target)
            .await
            .unwrap()
            .iter()
            .all(|(_, n)| *n == 0),
        "the target was left with rows"
    );
    source.close().await;
    target.close().await;
    drop_database(&admin, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_feeding_copied_columns_are_moved_past_them() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, source, _log) = sqlite_store(dir.path(), 40).await;
    let name = format!("jembatan_migrate_seq_{}", std::process::id());
    let (admin, to) = database(&url, &name).await;
    let target = Store::connect(&to).await.unwrap();
    // a schema whose audit seqs came from a sequence
    for sql in [
        "CREATE SEQUENCE audit_seq OWNED BY audit_log.seq",
        "ALTER TABLE audit_log ALTER COLUMN seq SET DEFAULT nextval('audit_seq')",
    ] {
        exec(target.pool(), sql).await;
    }
    let report = migrate::migrate(&source, &target, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.sequences, ["audit_log.seq"]);
    let next: i64 = sqlx::query_scalar("SELECT nextval('audit_seq')")
        .fetch_one(target.pool())
        .await
        .unwrap();
    assert_eq!(next, 40);
    source.close().await;
    target.close().await;
    drop_database(&admin, &name).await;
}
