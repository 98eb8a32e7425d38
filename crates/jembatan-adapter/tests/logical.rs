//! Change polls from a PostgreSQL logical replication source: a snapshot
//! in key order, then the journal's keys in commit order, each read as
//! its row is now; hard deletes, several changes to a key in one
//! transaction, a transaction committed late, a restart without loss, two
//! followers on one slot, a row leaving the row filter, and the start-up
//! refusals. Each test makes its own table, publication and slot, and
//! drops the slot at the end (a slot left behind holds WAL).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, TestDb};
use futures::StreamExt;
use jembatan_adapter::{Adapter, AdapterConfig, LogEntry};
use jembatan_proto::v1 as pb;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Executor};
use tonic::Code;

/// A test's table with its publication and slot; the slot is dropped
/// when it goes, also when the test failed.
struct Logical {
    db: TestDb,
    slot: String,
    publication: String,
    _guard: SlotGuard,
}

/// Drops a slot when it goes: reached when a test failed before
/// [`Logical::drop`], so that no slot outlives a test.
struct SlotGuard {
    admin_url: String,
    slot: String,
}

impl Logical {
    /// A fresh schema holding `penduduk` with `rows` (SQL values), a
    /// publication of it and a `pgoutput` slot created after the rows (so
    /// a first poll's snapshot holds them and the slot does not); `None`
    /// (after saying why) without PostgreSQL or without `wal_level =
    /// logical`.
    async fn new(rows: &str) -> Option<Logical> {
        let db = TestDb::new(Kind::Postgres).await?;
        let admin_url = std::env::var("JEMBATAN_TEST_POSTGRES_URL").ok()?;
        let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
        let level: String = sqlx::query_scalar("SHOW wal_level")
            .fetch_one(&pool)
            .await
            .expect("wal_level");
        if level != "logical" {
            println!("skipped: PostgreSQL's wal_level is {level}, not logical");
            pool.close().await;
            db.drop_namespace().await;
            return None;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let t = Logical {
            slot: format!("jembatan_t_{id}"),
            publication: format!("jembatan_t_{id}"),
            db,
            _guard: SlotGuard {
                admin_url,
                slot: format!("jembatan_t_{id}"),
            },
        };
        t.db.exec(
            "CREATE TABLE penduduk (nik VARCHAR(16) PRIMARY KEY, nama VARCHAR(100) NOT NULL, \
             kec INTEGER NOT NULL, status VARCHAR(10) NOT NULL)",
        )
        .await;
        t.db.exec(&format!("INSERT INTO penduduk VALUES {rows}"))
            .await;
        t.db.exec(&format!(
            "CREATE PUBLICATION {} FOR TABLE penduduk",
            t.publication
        ))
        .await;
        pool.execute(AssertSqlSafe(format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            t.slot
        )))
        .await
        .expect("create slot");
        pool.close().await;
        Some(t)
    }

    fn config(&self, journal: &str) -> String {
        format!(
            r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "kec"]
row_filter = {{ field = "status", op = "ne", value = "RAHASIA" }}

[datasets.changes]
logical = {{ slot = "{}", publication = "{}" }}
journal = "{journal}"
"#,
            self.slot, self.publication
        )
    }

    async fn adapter(&self) -> Arc<Adapter> {
        self.db.adapter(&self.config("journal.sqlite")).await
    }

    /// Drops the slot (ending the session that holds it, if any), the
    /// publication and the schema.
    async fn drop(self) {
        drop_slot(&self._guard.admin_url, &self.slot).await;
        self.db.drop_namespace().await;
    }
}

/// Drops a test's slot and its publication (named alike).
async fn drop_slot(admin_url: &str, slot: &str) {
    let pool = sqlx::PgPool::connect(admin_url).await.expect("connect");
    for _ in 0..100 {
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
        )
        .bind(slot)
        .execute(&pool)
        .await;
        let dropped = sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .execute(&pool)
        .await;
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = pool
        .execute(AssertSqlSafe(format!("DROP PUBLICATION IF EXISTS {slot}")))
        .await;
    pool.close().await;
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // a slot already dropped is not found: nothing happens
        let (url, slot) = (self.admin_url.clone(), self.slot.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_slot(&url, &slot))
        })
        .join();
    }
}

fn request(
    after: Option<pb::ChangePosition>,
    limit: u32,
    filter: Option<Value>,
) -> pb::ChangesRequest {
    pb::ChangesRequest {
        exchange_id: uuid::Uuid::new_v4().to_string(),
        dataset: "disdukcapil.penduduk".into(),
        columns: vec!["nik".into(), "nama".into(), "kec".into()],
        filter: filter.map(|f| {
            serde_json::from_value::<jembatan_core::Filter>(f)
                .expect("test filter")
                .to_proto()
        }),
        after,
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

/// A follower of the dataset's changes, as the broker is: it keeps the
/// last position.
struct Follower {
    after: Option<pb::ChangePosition>,
    filter: Option<Value>,
    /// `(op, key, in_scope, record)` of every change seen.
    seen: Vec<(String, String, bool, Value)>,
}

impl Follower {
    fn new(filter: Option<Value>) -> Follower {
        Follower {
            after: None,
            filter,
            seen: Vec::new(),
        }
    }

    /// Polls `limit` at a time until a poll comes back short.
    async fn drain(
        &mut self,
        adapter: &Arc<Adapter>,
        limit: u32,
    ) -> Vec<(String, String, bool, Value)> {
        let start = self.seen.len();
        loop {
            let got = poll(
                adapter,
                request(self.after.clone(), limit, self.filter.clone()),
            )
            .await
            .expect("poll succeeds");
            assert!(got.len() <= limit as usize);
            if let Some(last) = got.last() {
                self.after = last.position.clone();
            }
            let short = got.len() < limit as usize;
            self.seen.extend(got.iter().map(|c| {
                let p = c.position.as_ref().expect("position");
                let op = if c.op() == pb::ChangeOp::Delete {
                    "delete"
                } else {
                    "upsert"
                };
                let record = if c.record.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&c.record).expect("record is JSON")
                };
                (op.to_owned(), p.key.clone(), c.in_scope, record)
            }));
            if short {
                return self.seen[start..].to_vec();
            }
        }
    }

    /// Drains until `n` more changes came (the slot reader journals them
    /// within moments), failing after a few seconds.
    async fn expect(
        &mut self,
        adapter: &Arc<Adapter>,
        limit: u32,
        n: usize,
    ) -> Vec<(String, String, bool, Value)> {
        let start = self.seen.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.seen.len() < start + n {
            assert!(
                Instant::now() < deadline,
                "{} changes came, {n} expected: {:#?}",
                self.seen.len() - start,
                &self.seen[start..]
            );
            self.drain(adapter, limit).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // and nothing more
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.drain(adapter, limit).await;
        self.seen[start..].to_vec()
    }
}

fn up(key: &str, nama: &str, kec: i64) -> (String, String, bool, Value) {
    (
        "upsert".into(),
        format!("\"{key}\""),
        true,
        json!({"nik": key, "nama": nama, "kec": kec}),
    )
}

fn out(key: &str) -> (String, String, bool, Value) {
    ("upsert".into(), format!("\"{key}\""), false, Value::Null)
}

fn del(key: &str) -> (String, String, bool, Value) {
    ("delete".into(), format!("\"{key}\""), false, Value::Null)
}

#[tokio::test]
async fn a_snapshot_then_inserts_updates_hard_deletes_and_net_effects_per_transaction() {
    let Some(t) = Logical::new(
        "('3203', 'Citra', 1, 'HIDUP'), ('3201', 'Ani', 1, 'HIDUP'), \
         ('3202', 'Budi', 2, 'HIDUP'), ('3205', 'Eko', 1, 'RAHASIA')",
    )
    .await
    else {
        return;
    };
    let adapter = t.adapter().await;
    let source = adapter.describe().datasets[0]
        .changes
        .clone()
        .expect("a change source");
    assert_eq!(source.kind(), pb::ChangeSourceKind::LogicalReplication);
    assert_eq!(
        (source.key_column.as_str(), source.poll_interval_ms),
        ("nik", 50)
    );

    // a new follower: the table in key order, pages of 2, positions in
    // the snapshot; rows outside the scope by their position only
    let mut f = Follower::new(Some(json!({"field": "kec", "op": "eq", "value": 1})));
    let first = poll(&adapter, request(None, 2, f.filter.clone()))
        .await
        .unwrap();
    let change = &first[0].position.as_ref().unwrap().change;
    assert!(change.starts_with("\"s:"), "a snapshot position: {change}");
    assert_eq!(
        f.drain(&adapter, 2).await,
        vec![
            up("3201", "Ani", 1),
            out("3202"),
            up("3203", "Citra", 1),
            out("3205")
        ]
    );

    // an insert, an update, a hard delete, a row leaving the row filter;
    // then one transaction changing a key three times (net: deleted),
    // another twice (net: its last state), and inserting one it deletes
    t.db.exec("INSERT INTO penduduk VALUES ('3204', 'Dewi', 1, 'HIDUP')")
        .await;
    t.db.exec("UPDATE penduduk SET nama = 'Ani S' WHERE nik = '3201'")
        .await;
    t.db.exec("DELETE FROM penduduk WHERE nik = '3202'").await;
    t.db.exec("UPDATE penduduk SET status = 'RAHASIA' WHERE nik = '3203'")
        .await;
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for stmt in [
        "UPDATE penduduk SET nama = 'Dewi A' WHERE nik = '3204'",
        "UPDATE penduduk SET nama = 'Dewi B' WHERE nik = '3204'",
        "DELETE FROM penduduk WHERE nik = '3204'",
        "UPDATE penduduk SET nama = 'Ani T' WHERE nik = '3201'",
        "UPDATE penduduk SET nama = 'Ani U' WHERE nik = '3201'",
        "INSERT INTO penduduk VALUES ('3299', 'Sekejap', 1, 'HIDUP')",
        "DELETE FROM penduduk WHERE nik = '3299'",
    ] {
        tx.execute(stmt).await.unwrap();
    }
    tx.commit().await.unwrap();
    // rows are read as they are now: each journal entry shows the
    // row's current state, in commit order, keys ordered in a commit
    let got = f.expect(&adapter, 3, 7).await;
    assert_eq!(
        got,
        vec![
            del("3204"), // inserted, then gone by the time it is read
            up("3201", "Ani U", 1),
            del("3202"),
            out("3203"),
            up("3201", "Ani U", 1),
            del("3204"),
            del("3299"),
        ],
    );
    let last = f.after.clone().unwrap();
    let lsn: u64 = last.change.parse().expect("a commit LSN as a JSON integer");
    assert!(lsn > 0);
    assert_eq!(last.key, "\"3299\"");

    // the receipt log: a `changes` line per poll that returned changes
    let log = jembatan_adapter::read_receipt_log(&t.db.receipt_log()).unwrap();
    assert!(
        log.iter()
            .any(|e| matches!(e, LogEntry::Changes(c) if c.rows > 0))
    );

    // positions that are not this source's are refused without quoting them
    for (change, key) in [
        ("\"2026-01-01\"", "\"1\""),
        ("-1", "\"1\""),
        ("\"s:x\"", "\"1\""),
    ] {
        let bad = pb::ChangePosition {
            change: change.into(),
            key: key.into(),
        };
        let err = poll(&adapter, request(Some(bad), 5, None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{change}");
        assert!(!err.message().contains(change), "{}", err.message());
    }
    pool.close().await;
    adapter.close().await;
    drop(adapter);
    t.drop().await;
}

#[tokio::test]
async fn a_transaction_committed_late_comes_in_commit_order_and_nothing_is_missed() {
    let Some(t) = Logical::new("('1', 'A', 1, 'HIDUP'), ('2', 'B', 1, 'HIDUP')").await else {
        return;
    };
    let adapter = t.adapter().await;
    let mut f = Follower::new(None);
    f.drain(&adapter, 10).await;
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    // a long transaction writes first and commits last
    let mut late = pool.begin().await.unwrap();
    late.execute("UPDATE penduduk SET nama = 'A late' WHERE nik = '1'")
        .await
        .unwrap();
    t.db.exec("UPDATE penduduk SET nama = 'B early' WHERE nik = '2'")
        .await;
    assert_eq!(f.expect(&adapter, 10, 1).await, vec![up("2", "B early", 1)]);
    late.commit().await.unwrap();
    assert_eq!(f.expect(&adapter, 10, 1).await, vec![up("1", "A late", 1)]);
    pool.close().await;
    adapter.close().await;
    drop(adapter);
    t.drop().await;
}

#[tokio::test]
async fn a_restarted_adapter_loses_nothing_and_two_followers_share_the_slot() {
    let Some(t) = Logical::new("('1', 'A', 1, 'HIDUP')").await else {
        return;
    };
    let adapter = t.adapter().await;
    let mut one = Follower::new(None);
    let mut two = Follower::new(Some(json!({"field": "kec", "op": "eq", "value": 2})));
    one.drain(&adapter, 10).await;
    two.drain(&adapter, 10).await;
    t.db.exec("INSERT INTO penduduk VALUES ('2', 'B', 2, 'HIDUP')")
        .await;
    // a follower still in the snapshot (its position is the snapshot's)
    // finds the new row on the snapshot's next page, but the journal holds
    // its insert: it comes from the journal, and the page gives only its
    // position (outside the scope: nothing a consumer would see)
    assert_eq!(
        one.expect(&adapter, 10, 2).await,
        vec![out("2"), up("2", "B", 2)]
    );
    assert!(one.after.as_ref().unwrap().change.parse::<u64>().is_ok());
    // the adapter stops; changes go on while it is away
    adapter.close().await;
    drop(adapter);
    t.db.exec("UPDATE penduduk SET kec = 2 WHERE nik = '1'")
        .await;
    t.db.exec("DELETE FROM penduduk WHERE nik = '2'").await;
    let adapter = t.adapter().await;
    // each follower from its own position, on the one slot
    assert_eq!(
        one.expect(&adapter, 10, 2).await,
        vec![up("1", "A", 2), del("2")]
    );
    assert_eq!(
        two.expect(&adapter, 10, 2).await,
        // key 2's insert and delete in one poll: once, at its last change
        vec![up("1", "A", 2), del("2")]
    );
    adapter.close().await;
    drop(adapter);

    // a journal that does not hold a position (a new file, the slot
    // consumed past it) refuses it: the subscription must start again
    let fresh = Arc::new(
        Adapter::connect(&t.db.config(&t.config("other.sqlite")))
            .await
            .expect("adapter starts"),
    );
    let err = poll(&fresh, request(one.after.clone(), 10, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("start a new subscription"),
        "{}",
        err.message()
    );
    // and a truncation of the table ends every position before it
    let mut after_new = Follower::new(None);
    after_new.drain(&fresh, 10).await;
    t.db.exec("TRUNCATE penduduk").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match poll(&fresh, request(after_new.after.clone(), 10, None)).await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(got) => panic!("the truncation never refused the position: {got:?}"),
        }
    };
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("truncated"), "{}", err.message());
    fresh.close().await;
    drop(fresh);
    t.drop().await;
}

#[tokio::test]
async fn startup_refuses_logical_sources_that_cannot_work() {
    let Some(t) = Logical::new("('1', 'A', 1, 'HIDUP')").await else {
        return;
    };
    t.db.exec("CREATE TABLE lain (id INTEGER PRIMARY KEY, kode VARCHAR(8) NOT NULL UNIQUE)")
        .await;
    let refusal = |config: String| {
        let config: AdapterConfig = t.db.config(&config);
        async move {
            Adapter::connect(&config)
                .await
                .expect_err("the adapter must refuse to start")
                .to_string()
        }
    };
    let cases = [
        (
            "no such slot",
            t.config("j.sqlite")
                .replace(&format!("slot = \"{}\"", t.slot), "slot = \"tidak_ada\""),
            "no replication slot \"tidak_ada\"; create it with SELECT pg_create_logical_replication_slot('tidak_ada', 'pgoutput')",
        ),
        (
            "no such publication",
            t.config("j.sqlite").replace(
                &format!("publication = \"{}\"", t.publication),
                "publication = \"tidak_ada\"",
            ),
            "no publication \"tidak_ada\"; create it with CREATE PUBLICATION \"tidak_ada\" FOR TABLE penduduk",
        ),
        (
            "a table outside the publication",
            t.config("j.sqlite")
                .replace("table = \"penduduk\"", "table = \"lain\"")
                .replace("key = \"nik\"", "key = \"kode\"")
                .replace("[\"nik\", \"nama\", \"kec\"]", "[\"id\", \"kode\"]")
                .replace(
                    "row_filter = { field = \"status\", op = \"ne\", value = \"RAHASIA\" }",
                    "",
                ),
            "table lain is not in publication",
        ),
    ];
    for (name, config, want) in cases {
        let err = refusal(config).await;
        assert!(err.contains(want), "{name}: {err}");
    }
    // a slot of another plugin
    let other = SlotGuard {
        admin_url: t._guard.admin_url.clone(),
        slot: format!("{}_td", t.slot),
    };
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let made = pool
        .execute(AssertSqlSafe(format!(
            "SELECT pg_create_logical_replication_slot('{}', 'test_decoding')",
            other.slot
        )))
        .await;
    pool.close().await;
    match made {
        Ok(_) => {
            let err = refusal(t.config("j.sqlite").replace(
                &format!("slot = \"{}\"", t.slot),
                &format!("slot = \"{}\"", other.slot),
            ))
            .await;
            assert!(
                err.contains(&format!("replication slot \"{}\" uses the plugin \"test_decoding\"; the adapter reads pgoutput slots", other.slot)),
                "{err}"
            );
        }
        Err(e) => println!("no test_decoding plugin on this server ({e}): its case is skipped"),
    }
    drop_slot(&other.admin_url, &other.slot).await;
    // a role that may read the table but not replication slots
    let role = format!("jembatan_norepl_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    for sql in [
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role} LOGIN NOREPLICATION"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"),
    ] {
        pool.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    let (scheme, rest) = t.db.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let as_role = format!("{scheme}://{role}@{host}");
    match sqlx::PgPool::connect(&as_role).await {
        Ok(probe) => {
            probe.close().await;
            let config = t.config("j.sqlite");
            let mut config: AdapterConfig = t.db.config(&config);
            config.database = as_role.clone();
            let err = Adapter::connect(&config)
                .await
                .expect_err("the adapter must refuse to start")
                .to_string();
            assert!(
                err.contains(&format!(
                    "role \"{role}\" may not read replication slots; grant it with ALTER ROLE \"{role}\" REPLICATION"
                )),
                "{err}"
            );
        }
        Err(e) => println!("cannot log in as a new role ({e}): its case is skipped"),
    }
    for sql in [
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM {role}"),
        format!("DROP ROLE {role}"),
    ] {
        pool.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    pool.close().await;
    // a key outside the replica identity (the primary key is `id`)
    t.db.exec(&format!(
        "ALTER PUBLICATION {} ADD TABLE lain",
        t.publication
    ))
    .await;
    let err = refusal(
        t.config("j.sqlite")
            .replace("table = \"penduduk\"", "table = \"lain\"")
            .replace("key = \"nik\"", "key = \"kode\"")
            .replace("[\"nik\", \"nama\", \"kec\"]", "[\"id\", \"kode\"]")
            .replace(
                "row_filter = { field = \"status\", op = \"ne\", value = \"RAHASIA\" }",
                "",
            ),
    )
    .await;
    assert!(
        err.contains("key \"kode\" is not in the replica identity of table lain"),
        "{err}"
    );
    // and a polling-only setting on a logical source, at config load
    let err = AdapterConfig::from_toml(
        &format!(
            "version = 1\nagency = \"x\"\ndatabase = \"{}\"\nlisten = \"127.0.0.1:0\"\nreceipt_log = \"r\"\n\
             [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n{}lag = \"1s\"\n",
            t.db.url,
            t.config("j.sqlite")
        ),
        t.db.dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`deleted` and `lag` apply to a polling `column` only"),
        "{err}"
    );
    t.drop().await;
}
