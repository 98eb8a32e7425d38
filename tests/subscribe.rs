//! A subscription through the real binaries: the adapter's change source
//! on a SQLite table (a polling column) and on a PostgreSQL table (logical
//! replication, with a row removed by `DELETE`), a broker on a SQLite
//! store, a consumer following the district's residents; then `audit
//! crosscheck` finds every change poll the adapter answered on the
//! broker's log, and names one the broker never logged; and `audit
//! verify` holds.

use std::time::Duration;

use sqlx::{AnyPool, AssertSqlSafe, Executor};

use jembatan_e2e::{Cluster, Spec, agreement, jembatan, nik};
use jembatan_proto::v1 as pb;

const KEC: &str = "15.07.01";

const DATASET: &str = r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "kecamatan"]
[datasets.changes]
column = "diubah"
lag = "0s"
poll_interval = "100ms"
"#;

fn at(n: u64) -> String {
    format!(
        "2021-01-01T{:02}:{:02}:{:02}",
        n / 3600,
        (n / 60) % 60,
        n % 60
    )
}

/// Reads the stream until `want` changes were delivered; returns them.
async fn changes(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
    want: usize,
) -> Vec<pb::ChangeRecord> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < want {
            let message = stream.message().await.unwrap().expect("the stream goes on");
            if let Some(pb::subscribe_response::Item::Batch(b)) = message.item {
                got.extend(b.changes);
            }
        }
    })
    .await
    .expect("the changes arrive");
    got
}

#[tokio::test]
async fn a_subscription_through_the_binaries_crosschecks_with_the_adapters_receipt_log() {
    sqlx::any::install_default_drivers();
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("prov.db");
    let url = format!("sqlite://{}", db.display());
    let pool = AnyPool::connect(&format!("{url}?mode=rwc")).await.unwrap();
    fill(&pool, "DATETIME").await;
    crosscheck_a_subscription(&pool, url, DATASET, false).await;
}

/// The same through a logical replication slot of a fresh PostgreSQL
/// schema; skipped without PostgreSQL or without `wal_level = logical`.
#[tokio::test]
async fn a_logical_replication_subscription_through_the_binaries_crosschecks_too() {
    sqlx::any::install_default_drivers();
    let Ok(admin) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let unique = format!(
        "jembatan_e2e_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let admin_pool = AnyPool::connect(&admin).await.unwrap();
    let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&admin_pool)
        .await
        .unwrap();
    if level != "logical" {
        println!("skipped: PostgreSQL's wal_level is {level}, not logical");
        return;
    }
    exec(&admin_pool, &format!("CREATE SCHEMA {unique}")).await;
    let sep = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{sep}options=-c%20search_path%3D{unique}");
    let pool = AnyPool::connect(&url).await.unwrap();
    // not read by a logical source
    fill(&pool, "TEXT").await;
    exec(
        &pool,
        &format!("CREATE PUBLICATION {unique} FOR TABLE penduduk"),
    )
    .await;
    exec(
        &pool,
        &format!("SELECT 1 FROM pg_create_logical_replication_slot('{unique}', 'pgoutput')"),
    )
    .await;
    let datasets = format!(
        r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "kecamatan"]
[datasets.changes]
logical = {{ slot = "{unique}", publication = "{unique}" }}
journal = "journal.sqlite"
"#
    );
    crosscheck_a_subscription(&pool, url, &datasets, true).await;
    pool.close().await;
    // a slot left behind would hold WAL: end the adapter's session (the
    // process is gone, its backend may linger a moment) and drop it
    for _ in 0..100 {
        let _ = sqlx::query(AssertSqlSafe(format!(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = '{unique}' \
             AND pg_terminate_backend(active_pid)"
        )))
        .fetch_all(&admin_pool)
        .await;
        let dropped = sqlx::query(AssertSqlSafe(format!(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = '{unique}' \
             AND pg_drop_replication_slot(slot_name) IS NULL"
        )))
        .fetch_all(&admin_pool)
        .await;
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exec(&admin_pool, &format!("DROP PUBLICATION IF EXISTS {unique}")).await;
    exec(&admin_pool, &format!("DROP SCHEMA {unique} CASCADE")).await;
    admin_pool.close().await;
}

async fn exec(pool: &AnyPool, sql: &str) {
    pool.execute(AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The provider's 30 residents, a third of them in the district, with
/// their change time as `changed` (the polling source's column type).
async fn fill(pool: &AnyPool, changed: &str) {
    exec(
        pool,
        &format!(
            "CREATE TABLE penduduk (nik VARCHAR(16) PRIMARY KEY, nama TEXT NOT NULL, \
             kecamatan TEXT NOT NULL, diubah {changed})"
        ),
    )
    .await;
    for i in 0..30 {
        let kec = if i % 3 == 0 { KEC } else { "15.07.02" };
        exec(
            pool,
            &format!(
                "INSERT INTO penduduk VALUES ('{}', 'WARGA {i}', '{kec}', '{}')",
                nik(i),
                at(i as u64)
            ),
        )
        .await;
    }
}

/// Follows the district through the binaries as a resident moves away
/// (and, when the source sees them, another is removed with `DELETE`),
/// then crosschecks the adapter's receipt log with the broker's.
async fn crosscheck_a_subscription(
    pool: &AnyPool,
    database: String,
    datasets: &str,
    hard_delete: bool,
) {
    let mut spec = Spec::new(
        0,
        1,
        "",
        &agreement(
            "sub-1",
            "dinsos",
            &format!(
                "subscribe = true\nrow_filter = {{ field = \"kecamatan\", op = \"eq\", value = \"{KEC}\" }}"
            ),
        ),
    );
    spec.database = Some(database);
    spec.adapter_datasets = datasets.to_owned();
    let mut cluster = Cluster::start_spec("broker.db", &spec).await;
    let mut dinsos = cluster.exchange(0, "dinsos").await;
    let mut stream = dinsos
        .subscribe(pb::SubscribeRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            batch_size: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // the district's ten residents
    let first = changes(&mut stream, 10).await;
    assert!(first.iter().all(|c| c.op == pb::ChangeOp::Upsert as i32));
    // one moves away: a delete carrying the key, which is granted
    exec(
        pool,
        &format!(
            "UPDATE penduduk SET kecamatan = '15.07.03', diubah = '{}' WHERE nik = '{}'",
            at(100),
            nik(3)
        ),
    )
    .await;
    let moved = changes(&mut stream, 1).await;
    assert_eq!(moved[0].op, pb::ChangeOp::Delete as i32);
    assert_eq!(moved[0].record, format!("{{\"nik\":\"{}\"}}", nik(3)));
    if hard_delete {
        exec(
            pool,
            &format!("DELETE FROM penduduk WHERE nik = '{}'", nik(6)),
        )
        .await;
        let removed = changes(&mut stream, 1).await;
        assert_eq!(removed[0].op, pb::ChangeOp::Delete as i32);
        assert_eq!(removed[0].record, format!("{{\"nik\":\"{}\"}}", nik(6)));
    }
    drop(stream);
    // the stream's end reaches the log, and receipts reach the adapter
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop();

    let receipts = cluster.dir.join("receipts-0.jsonl");
    let crosscheck = || {
        jembatan(&cluster.dir)
            .args(["audit", "crosscheck", "--store", "broker.db", "--receipts"])
            .arg(&receipts)
            .output()
            .unwrap()
    };
    let out = crosscheck();
    let words = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{words}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(words.contains("all agree"), "{words}");
    let polls: u64 = words
        .split(" change polls")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{words}"));
    assert!(polls >= 4, "{words}");

    // a poll the adapter answered that the broker never logged is named
    let log = std::fs::read_to_string(&receipts).unwrap();
    let poll = log
        .lines()
        .find(|l| l.contains("\"kind\":\"changes\""))
        .unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(poll).unwrap();
    forged["rows"] = 3.into();
    forged["payload_sha256"] = "00".repeat(32).into();
    // before the stream's last two polls, which the broker may have read
    // and not delivered when the stream ended
    let mut lines: Vec<String> = log.lines().map(str::to_owned).collect();
    let at = lines.iter().position(|l| l == poll).unwrap() + 1;
    lines.insert(at, forged.to_string());
    std::fs::write(&receipts, lines.join("\n") + "\n").unwrap();
    let out = crosscheck();
    let words = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{words}");
    assert!(
        words.contains("that no delivery entry on the broker's log accounts for"),
        "{words}"
    );

    let (code, words) = cluster.verify();
    assert_eq!(code, Some(0), "{words}");
    // no resident's key in clear on the log
    let exported = serde_json::to_string(&cluster.export()).unwrap();
    assert!(!exported.contains(&nik(3)) && !exported.contains(&nik(6)));
}
