//! Change subscriptions through a real broker and a real adapter on a
//! SQLite provider database (and the main scenarios on PostgreSQL and
//! MariaDB polling sources and a PostgreSQL logical replication source,
//! with hard deletes): changes in order under the agreement's row
//! filter, deletes for rows that leave the scope and nothing for rows
//! never in it, exact resumption from any cursor (also on a restarted
//! broker), revocation, cursors bound to their subscription, and every
//! batch on the audit log before it leaves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jembatan_core::{AuditEntry, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use jembatan_testkit::{BrokerHandle, Federation, Kind, ProviderDb, agreement_toml, eq, nik};

const CHANGES: &str = r#"
[datasets.changes]
column = "diubah"
deleted = { field = "status", op = "eq", value = "DIHAPUS" }
lag = "0s"
poll_interval = "50ms"
"#;

/// The same dataset read from PostgreSQL logical replication: no
/// tombstone filter (a row set `DIHAPUS` leaves the dataset's row filter
/// and becomes a delete, as it does with a tombstone), rows the database
/// removes are deletes too.
fn logical_changes(slot: &str) -> String {
    format!(
        r#"row_filter = {{ field = "status", op = "ne", value = "DIHAPUS" }}
[datasets.changes]
logical = {{ slot = "{slot}", publication = "jembatan_penduduk" }}
journal = "journal.sqlite"
"#
    )
}

/// How the provider's adapter reads the changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Polls of the change column, on a backend.
    Polling(Kind),
    /// PostgreSQL logical replication.
    Logical,
}

impl Source {
    fn kind(self) -> Kind {
        match self {
            Source::Polling(kind) => kind,
            Source::Logical => Kind::Postgres,
        }
    }
}

/// The district the agreement's row filter lets through.
const KEC: &str = "15.07.01";

/// A provider database whose rows carry a change time.
struct Provider {
    pool: AnyPool,
    kind: Kind,
    /// The next change time, in seconds after 2020-01-01.
    clock: u64,
    /// Whether the source sees rows the database removes.
    hard_deletes: bool,
    /// Dropped (for PostgreSQL and MariaDB) after the federation.
    _db: ProviderDb,
}

/// A change time `n` seconds after 2020-01-01 (in the past: a polling
/// source holds back rows dated in the future), as a SQL literal.
fn at(kind: Kind, n: u64) -> String {
    let t = chrono::NaiveDate::from_ymd_opt(2020, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(n as i64);
    match kind {
        Kind::Sqlite => format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S")),
        Kind::Postgres | Kind::MySql => format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S")),
    }
}

impl Provider {
    /// The residents of the federation's usual table on `kind`, each
    /// with a change time; every two share one (ties). `None` when the
    /// backend is not configured.
    async fn new(kind: Kind, dir: &std::path::Path, rows: usize) -> Option<Provider> {
        let db = ProviderDb::new(kind, dir, rows, "").await?;
        let url = match kind {
            Kind::Sqlite => format!("{}?mode=rwc", db.url),
            _ => db.url.clone(),
        };
        let pool = AnyPool::connect(&url).await.unwrap();
        let column = match kind {
            Kind::Sqlite => "DATETIME",
            Kind::Postgres => "TIMESTAMP(6)",
            Kind::MySql => "DATETIME(6)",
        };
        pool.execute(AssertSqlSafe(format!(
            "ALTER TABLE penduduk ADD COLUMN diubah {column}"
        )))
        .await
        .unwrap();
        let mut p = Provider {
            pool,
            kind,
            clock: 0,
            hard_deletes: false,
            _db: db,
        };
        for i in 0..rows {
            // the federation's table has a tenth of its residents dead
            p.exec(format!(
                "UPDATE penduduk SET status = 'HIDUP', diubah = {} WHERE nik = '{}'",
                at(kind, i as u64 / 2),
                nik(i)
            ))
            .await;
        }
        p.clock = rows as u64;
        Some(p)
    }

    /// Removes a row (`DELETE`).
    async fn delete(&self, i: usize) {
        self.exec(format!("DELETE FROM penduduk WHERE nik = '{}'", nik(i)))
            .await;
    }

    /// Publishes the table and creates a `pgoutput` slot for it; the slot
    /// is named for the test, and dropped with the database. `None` (after
    /// saying why) when `wal_level` is not `logical`.
    async fn replicate(&mut self) -> Option<String> {
        let level: String = sqlx::query("SELECT current_setting('wal_level')")
            .fetch_one(&self.pool)
            .await
            .unwrap()
            .get(0);
        if level != "logical" {
            println!("skipped: PostgreSQL's wal_level is {level}, not logical");
            return None;
        }
        let slot = format!("jembatan_t_{}", uuid::Uuid::new_v4().simple());
        self.exec("CREATE PUBLICATION jembatan_penduduk FOR TABLE penduduk".into())
            .await;
        self.exec(format!(
            "SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        ))
        .await;
        self.hard_deletes = true;
        Some(slot)
    }

    async fn exec(&self, sql: String) {
        self.pool.execute(AssertSqlSafe(sql)).await.unwrap();
    }

    fn tick(&mut self) -> String {
        self.clock += 1;
        at(self.kind, self.clock)
    }

    async fn set(&mut self, i: usize, column: &str, value: &str) {
        let now = self.tick();
        self.exec(format!(
            "UPDATE penduduk SET {column} = '{value}', diubah = {now} WHERE nik = '{}'",
            nik(i)
        ))
        .await;
    }

    async fn insert(&mut self, i: usize, kec: &str) {
        let now = self.tick();
        self.exec(format!(
            "INSERT INTO penduduk (nik, nama, tgl_lahir, kecamatan, status, diubah) \
             VALUES ('{}', 'WARGA {i}', '1970-01-01', '{kec}', 'HIDUP', {now})",
            nik(i)
        ))
        .await;
    }

    /// What the consumer may see now: the rows in the district and not
    /// deleted, as the consumer's records (by `nik`).
    async fn visible(&self) -> BTreeMap<String, Value> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT nik, nama, kecamatan, status FROM penduduk \
             WHERE kecamatan = '{KEC}' AND status <> 'DIHAPUS'"
        )))
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|row| {
                let get = |i: usize| row.try_get::<String, _>(i).unwrap();
                let record = serde_json::json!({
                    "nik": get(0), "nama": get(1), "kecamatan": get(2), "status": get(3)
                });
                (get(0), record)
            })
            .collect()
    }
}

/// A federation whose provider's dataset (on `kind`) has a change source,
/// and a broker whose agreement lets `dinsos` subscribe to the district's
/// residents. `None` when the backend is not configured.
async fn federation(kind: Kind, rows: usize) -> Option<(Federation, Provider, BrokerHandle)> {
    federation_on(Source::Polling(kind), rows, None).await
}

/// [`federation`] with the broker's store at `store` (a PostgreSQL URL).
async fn federation_on(
    source: Source,
    rows: usize,
    store: Option<&str>,
) -> Option<(Federation, Provider, BrokerHandle)> {
    sqlx::any::install_default_drivers();
    let tmp = tempfile::tempdir().unwrap();
    let mut provider = Provider::new(source.kind(), tmp.path(), rows).await?;
    let changes = match source {
        Source::Polling(_) => CHANGES.to_owned(),
        Source::Logical => logical_changes(&provider.replicate().await?),
    };
    let url = provider._db.url.clone();
    let mut f = Federation::builder()
        .dir(tmp)
        .database(&url)
        .rows(rows)
        .dataset_extra(&changes)
        .start()
        .await;
    if let Some(store) = store {
        f.store = store.to_owned();
    }
    let b = f.broker(&config(&f)).await;
    Some((f, provider, b))
}

fn config(f: &Federation) -> jembatan_broker::BrokerConfig {
    let filter =
        format!("row_filter = {{ field = \"kecamatan\", op = \"eq\", value = \"{KEC}\" }}");
    let tables = [
        agreement_toml(
            "sub-1",
            "dinsos",
            r#"["nik", "nama", "kecamatan", "status"]"#,
            "approved",
            &format!("subscribe = true\n{filter}"),
        ),
        // queries only
        agreement_toml("query-1", "dinkes", r#"["nik", "nama"]"#, "approved", ""),
    ]
    .concat();
    f.broker_config("", &tables)
}

fn request(cursor: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        dataset: "prov.penduduk".into(),
        target_schema: String::new(),
        purpose: "bansos".into(),
        fields: vec![],
        filter: None,
        cursor: cursor.into(),
        batch_size: 7,
    }
}

/// A consumer following a subscription: its copy of the rows, checked
/// change by change.
#[derive(Default)]
struct Consumer {
    /// By key handle.
    rows: HashMap<String, Value>,
    /// Every line received, in order.
    lines: Vec<String>,
    /// The cursor after each batch, with the number of lines so far.
    cursors: Vec<(String, usize)>,
    /// Handles ever given.
    given: HashSet<String>,
    subscription: String,
}

impl Consumer {
    fn apply(&mut self, batch: pb::ChangeBatch) {
        let receipt = batch.receipt.clone();
        let mut hasher = jembatan_core::PayloadHasher::new();
        for c in &batch.changes {
            let line = format!(
                "{{\"op\":\"{}\",\"key\":\"{}\",\"record\":{}}}",
                if c.op == pb::ChangeOp::Delete as i32 {
                    "delete"
                } else {
                    "upsert"
                },
                c.key,
                c.record
            );
            hasher.update(&line);
            self.lines.push(line);
            assert_eq!(c.key.len(), 64, "a key handle, never a key");
            let record: Value = serde_json::from_str(&c.record).unwrap();
            if c.op == pb::ChangeOp::Upsert as i32 {
                assert_eq!(record["kecamatan"], KEC, "only rows in the scope");
                self.given.insert(c.key.clone());
                self.rows.insert(c.key.clone(), record);
            } else {
                assert!(
                    self.given.contains(&c.key),
                    "a delete only for a key given before"
                );
                // the key field is granted unmasked: it comes with the delete
                let nik = record["nik"].as_str().unwrap();
                assert_eq!(self.rows[&c.key]["nik"], nik);
                self.rows.remove(&c.key);
            }
        }
        match receipt {
            Some(r) => {
                assert_eq!(r.rows, batch.changes.len() as u64);
                assert_eq!(
                    r.payload_sha256,
                    hasher.hex(),
                    "the receipt covers the lines"
                );
            }
            None => assert!(
                batch.changes.is_empty(),
                "a batch with changes has its receipt"
            ),
        }
        assert!(batch.cursor.starts_with("c1."));
        self.cursors.push((batch.cursor, self.lines.len()));
    }

    /// The rows as the provider's, by `nik`.
    fn by_nik(&self) -> BTreeMap<String, Value> {
        self.rows
            .values()
            .map(|r| (r["nik"].as_str().unwrap().to_owned(), r.clone()))
            .collect()
    }

    fn cursor(&self) -> String {
        self.cursors.last().map(|c| c.0.clone()).unwrap_or_default()
    }
}

async fn open(
    client: &mut ExchangeClient<Channel>,
    req: pb::SubscribeRequest,
) -> Result<(Streaming<pb::SubscribeResponse>, pb::SubscriptionStarted), tonic::Status> {
    let mut stream = client.subscribe(req).await?.into_inner();
    let first = stream.message().await?.expect("a first message");
    match first.item {
        Some(pb::subscribe_response::Item::Started(s)) => Ok((stream, s)),
        other => panic!("the stream starts with its subscription, not {other:?}"),
    }
}

/// Reads batches until the consumer's rows equal `want` (or 20 s pass).
async fn until_equal(
    stream: &mut Streaming<pb::SubscribeResponse>,
    consumer: &mut Consumer,
    want: &BTreeMap<String, Value>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while consumer.by_nik() != *want {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the consumer's rows never matched the provider's: has {:?}, wants {:?}",
                    consumer.by_nik().keys().collect::<Vec<_>>(),
                    want.keys().collect::<Vec<_>>()
                )
            })
            .unwrap()
            .expect("the stream goes on");
        match next.item {
            Some(pb::subscribe_response::Item::Batch(b)) => consumer.apply(b),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// No batch with changes arrives for a while.
async fn quiet(stream: &mut Streaming<pb::SubscribeResponse>) {
    let until = tokio::time::Instant::now() + Duration::from_millis(400);
    while let Ok(next) = tokio::time::timeout_at(until, stream.message()).await {
        if let Some(pb::subscribe_response::Item::Batch(b)) = next.unwrap().unwrap().item {
            assert!(
                b.changes.is_empty(),
                "nothing more to deliver: {:?}",
                b.changes
            );
        }
    }
}

/// [`quiet`], except that a logical replication source may deliver a
/// row again that changed in two transactions read by two polls (each
/// poll reads the row as it is then): the consumer's rows must not move.
async fn settled(
    stream: &mut Streaming<pb::SubscribeResponse>,
    consumer: &mut Consumer,
    source: Source,
) {
    if source != Source::Logical {
        return quiet(stream).await;
    }
    let held = consumer.by_nik();
    let until = tokio::time::Instant::now() + Duration::from_millis(400);
    while let Ok(next) = tokio::time::timeout_at(until, stream.message()).await {
        if let Some(pb::subscribe_response::Item::Batch(b)) = next.unwrap().unwrap().item {
            consumer.apply(b);
            assert_eq!(consumer.by_nik(), held, "the same rows again, nothing new");
        }
    }
}

async fn entries(b: &BrokerHandle) -> Vec<AuditEntry> {
    let size = b.broker.audit().size().await.unwrap();
    b.broker
        .audit()
        .entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry)
        .collect()
}

#[tokio::test]
async fn a_subscription_follows_the_scope_and_resumes_exactly_once_from_any_cursor() {
    follows_the_scope(Source::Polling(Kind::Sqlite)).await;
}

#[tokio::test]
async fn a_subscription_follows_the_scope_on_postgres() {
    follows_the_scope(Source::Polling(Kind::Postgres)).await;
}

#[tokio::test]
async fn a_subscription_follows_the_scope_on_mariadb() {
    follows_the_scope(Source::Polling(Kind::MySql)).await;
}

#[tokio::test]
async fn a_subscription_follows_the_scope_on_postgres_logical_replication() {
    follows_the_scope(Source::Logical).await;
}

async fn follows_the_scope(source: Source) {
    let Some((f, mut p, b)) = federation_on(source, 40, None).await else {
        return;
    };
    let mut ex = b.exchange(&f, "dinsos").await;
    let (mut stream, started) = open(&mut ex, request("")).await.unwrap();
    let mut c = Consumer {
        subscription: started.subscription_id.clone(),
        ..Consumer::default()
    };
    // the district's 14 residents, in batches of at most 7 changes
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    assert_eq!(c.rows.len(), 14);

    // an update in scope, a death (tombstone), a move out of the
    // district, a change of a row never in scope, a newcomer, a move in
    p.set(0, "nama", "WARGA NOL").await;
    p.set(3, "status", "DIHAPUS").await;
    p.set(6, "kecamatan", "15.07.09").await;
    p.set(1, "nama", "TIDAK TERLIHAT").await;
    p.insert(100, KEC).await;
    p.insert(101, "15.07.02").await;
    p.set(2, "kecamatan", KEC).await;
    let before = c.lines.len();
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    settled(&mut stream, &mut c, source).await;
    let new: Vec<&String> = c.lines[before..].iter().collect();
    let ops: Vec<&str> = new
        .iter()
        .map(|l| {
            if l.contains("\"op\":\"delete\"") {
                "delete"
            } else {
                "upsert"
            }
        })
        .collect();
    // in change order; nothing at all for rows 1 and 101
    assert_eq!(
        ops,
        ["upsert", "delete", "delete", "upsert", "upsert"],
        "{new:#?}"
    );
    for secret in [nik(1), nik(101), "TIDAK TERLIHAT".into()] {
        assert!(c.lines.iter().all(|l| !l.contains(&secret)), "{secret}");
    }

    // the consumer goes; changes go on; it resumes from its cursor
    drop(stream);
    p.set(9, "nama", "WARGA SEMBILAN").await;
    p.set(100, "status", "DIHAPUS").await;
    if p.hard_deletes {
        p.delete(12).await;
    }
    let kept = c.lines.clone();
    let (mut stream, again) = open(&mut ex, request(&c.cursor())).await.unwrap();
    assert_eq!(
        again.subscription_id, c.subscription,
        "the same subscription"
    );
    assert_ne!(again.exchange_id, started.exchange_id, "another stream");
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    settled(&mut stream, &mut c, source).await;
    assert_eq!(
        c.lines.len(),
        kept.len() + 2 + usize::from(p.hard_deletes),
        "each change once: {:#?}",
        &c.lines[kept.len()..]
    );
    drop(stream);

    // from an older cursor, every change after it again, once each (a
    // polling source sees each row's latest change: the rows' states now)
    let (old_cursor, seen_then) = c.cursors[1].clone();
    let mut replay = Consumer::default();
    for line in &c.lines[..seen_then] {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_owned();
        replay.given.insert(key.clone());
        if v["op"] == "upsert" {
            replay.rows.insert(key, v["record"].clone());
        } else {
            replay.rows.remove(&key);
        }
    }
    let (mut stream, _) = open(&mut ex, request(&old_cursor)).await.unwrap();
    until_equal(&mut stream, &mut replay, &p.visible().await).await;
    settled(&mut stream, &mut replay, source).await;
    let replayed = &replay.lines[..];
    let keys: HashSet<&str> = replayed
        .iter()
        .map(|l| {
            l.split("\"key\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    if source == Source::Logical {
        // a row is read once per transaction that changed it after the
        // cursor, and a row changed during the snapshot once more: the
        // same state again, not each row once
        assert!(keys.len() <= replayed.len());
    } else {
        assert_eq!(keys.len(), replayed.len(), "each row once: {replayed:#?}");
    }
    assert!(!replayed.is_empty());
    drop(stream);

    // the log: a decision per stream, then a delivery entry per batch,
    // durable, naming keys only by hash; each stream's end
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = entries(&b).await;
    let subs: Vec<&AuditEntry> = log.iter().filter(|e| e.operation == "subscribe").collect();
    let decisions = subs
        .iter()
        .filter(|e| e.kind == EntryKind::Decision)
        .count();
    let ends: Vec<&&AuditEntry> = subs
        .iter()
        .filter(|e| e.kind == EntryKind::Completion)
        .collect();
    assert_eq!((decisions, ends.len()), (3, 3));
    assert!(ends.iter().all(|e| e.status == ExchangeStatus::Cancelled));
    let deliveries: Vec<&&AuditEntry> = subs
        .iter()
        .filter(|e| e.kind == EntryKind::Delivery)
        .collect();
    let delivered: u64 = deliveries.iter().map(|e| e.rows).sum();
    assert_eq!(
        delivered,
        (c.lines.len() + replay.lines.len()) as u64,
        "every line delivered is on the log"
    );
    for d in &deliveries {
        let mark = d.subscription.as_ref().unwrap();
        assert_eq!(mark.id, c.subscription);
        assert_eq!(mark.upserts + mark.deletes, d.rows);
        assert_eq!(
            d.subjects.len() as u64,
            d.rows,
            "each key delivered, by hash"
        );
        assert!(d.received.is_some() && d.adapter_endpoint.is_some());
    }
    // a handle is the consumer's own name for a key, never the log's
    // subject hash of it: holding one finds nobody in the subject index
    let subjects: HashSet<&str> = deliveries
        .iter()
        .flat_map(|d| d.subjects.iter().map(String::as_str))
        .collect();
    assert!(!subjects.is_empty());
    for handle in c.given.iter().chain(&replay.given) {
        assert!(
            !subjects.contains(handle.as_str()),
            "a handle is not the subject hash of its key"
        );
    }
    // each stream's end hashes its delivery entries' hashes, in order
    let mut hashed = 0;
    for end in &ends {
        let hashes: Vec<&str> = deliveries
            .iter()
            .filter(|d| d.exchange_id == end.exchange_id)
            .map(|d| d.payload_sha256.as_deref().unwrap())
            .collect();
        hashed += hashes.len();
        assert_eq!(
            end.payload_sha256.as_deref(),
            Some(jembatan_core::PayloadHasher::of(&hashes).as_str())
        );
    }
    assert_eq!(hashed, deliveries.len());
    let text: String = log
        .iter()
        .map(|e| String::from_utf8(e.canonical_bytes()).unwrap())
        .collect();
    for i in [0, 3, 6, 12, 100] {
        assert!(!text.contains(&nik(i)), "no key in clear on the log");
    }
    assert!(!text.contains("c1."), "no cursor on the log");
}

#[tokio::test]
async fn a_restarted_broker_resumes_a_subscription_from_its_cursor() {
    let (f, mut p, b) = federation(Kind::Sqlite, 12).await.unwrap();
    let mut ex = b.exchange(&f, "dinsos").await;
    let (mut stream, _) = open(&mut ex, request("")).await.unwrap();
    let mut c = Consumer::default();
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    drop(stream);
    b.broker.shutdown().await.unwrap();
    drop(b);
    p.set(0, "nama", "SESUDAH").await;
    p.set(3, "kecamatan", "15.07.02").await;
    let b = f.broker(&config(&f)).await;
    let mut ex = b.exchange(&f, "dinsos").await;
    let n = c.lines.len();
    let (mut stream, _) = open(&mut ex, request(&c.cursor())).await.unwrap();
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    quiet(&mut stream).await;
    assert_eq!(c.lines.len(), n + 2, "{:#?}", &c.lines[n..]);
}

#[tokio::test]
async fn a_revocation_ends_a_running_subscription_permission_denied() {
    let (f, p, b) = federation(Kind::Sqlite, 6).await.unwrap();
    let mut ex = b.exchange(&f, "dinsos").await;
    let (mut stream, _) = open(&mut ex, request("")).await.unwrap();
    let mut c = Consumer::default();
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    b.agreements(&f, "prov")
        .await
        .revoke(pb::RevokeRequest {
            id: "sub-1".into(),
            reason: "programme ended".into(),
        })
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the subscription ends");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("revoked"), "{}", end.message());
    // with the reason, as a denial, and the entry that records it
    assert_eq!(jembatan_testkit::denial_codes(&end), ["revoked"]);
    let stopped_at = jembatan_testkit::denial_details(&end).entry_seq;
    // and cannot be resumed
    let refused = open(&mut ex, request(&c.cursor())).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = entries(&b).await;
    let end = log
        .iter()
        .find(|e| e.operation == "subscribe" && e.kind == EntryKind::Completion)
        .unwrap();
    assert_eq!(end.status, ExchangeStatus::Stopped);
    let stored = b.broker.audit().entries(stopped_at, 1).await.unwrap();
    assert_eq!(
        stored[0].entry, *end,
        "the trailer names the completion entry"
    );
}

#[tokio::test]
async fn cursors_and_terms_are_checked_before_anything_flows() {
    let (f, p, b) = federation(Kind::Sqlite, 6).await.unwrap();
    let mut ex = b.exchange(&f, "dinsos").await;
    let (mut stream, _) = open(&mut ex, request("")).await.unwrap();
    let mut c = Consumer::default();
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    drop(stream);
    let cursor = c.cursor();

    // an agreement without the subscribe term
    let mut dinkes = b.exchange(&f, "dinkes").await;
    let denied = open(&mut dinkes, request("")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        jembatan_testkit::denial_codes(&denied).contains(&"subscribe_not_granted".to_owned()),
        "{denied:?}"
    );
    // another agency's use of the cursor
    let refused = open(&mut dinkes, request(&cursor)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // the cursor altered, or with another request
    let mut altered = cursor.clone().into_bytes();
    let i = altered.len() - 5;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let refused = open(&mut ex, request(&altered)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(!refused.message().contains(&altered));
    let mut other = request(&cursor);
    other.filter = Some(eq("status", "HIDUP"));
    let refused = open(&mut ex, other).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("another target schema, fields, filter")
    );
    let mut big = request("");
    big.batch_size = 10_001;
    assert_eq!(
        open(&mut ex, big).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // every refusal is on the log, without the cursor
    let log = entries(&b).await;
    let refusals = log
        .iter()
        .filter(|e| e.operation == "subscribe" && e.kind == EntryKind::Decision)
        .filter(|e| matches!(e.status, ExchangeStatus::Denied | ExchangeStatus::Invalid))
        .count();
    assert_eq!(refusals, 5);
    for e in &log {
        let text = String::from_utf8(e.canonical_bytes()).unwrap();
        assert!(!text.contains("c1."));
    }
}

/// For random changes and random disconnects, the consumer's rows end
/// equal to the provider's rows in scope, each change applied once.
#[tokio::test]
async fn random_changes_and_disconnects_end_with_the_providers_rows() {
    random_changes(Source::Polling(Kind::Sqlite)).await;
}

#[tokio::test]
async fn random_changes_and_disconnects_on_postgres_and_mariadb() {
    random_changes(Source::Polling(Kind::Postgres)).await;
    random_changes(Source::Polling(Kind::MySql)).await;
}

#[tokio::test]
async fn random_changes_deletes_and_disconnects_on_postgres_logical_replication() {
    random_changes(Source::Logical).await;
}

async fn random_changes(source: Source) {
    let Some((f, mut p, b)) = federation_on(source, 24, None).await else {
        return;
    };
    let mut ex = b.exchange(&f, "dinsos").await;
    for seed in [1u64, 2, 3] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut c = Consumer::default();
        let (mut stream, _) = open(&mut ex, request("")).await.unwrap();
        let mut next_new = 200 + seed as usize * 100;
        for _step in 0..12 {
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..24);
                match rng.random_range(0..5) {
                    0 => p.set(i, "nama", &format!("N{}", rng.random::<u16>())).await,
                    1 => {
                        let kec = if rng.random_bool(0.5) {
                            KEC
                        } else {
                            "15.07.02"
                        };
                        p.set(i, "kecamatan", kec).await
                    }
                    2 => {
                        let status = if rng.random_bool(0.5) {
                            "DIHAPUS"
                        } else {
                            "HIDUP"
                        };
                        p.set(i, "status", status).await
                    }
                    3 => {
                        let kec = if rng.random_bool(0.5) {
                            KEC
                        } else {
                            "15.07.02"
                        };
                        p.insert(next_new, kec).await;
                        next_new += 1;
                    }
                    // only a logical source sees rows the database removes
                    4 if p.hard_deletes => p.delete(i).await,
                    _ => {}
                }
            }
            if rng.random_bool(0.4) {
                // read a little, or nothing, then go and come back from
                // a cursor kept: possibly an older one
                if rng.random_bool(0.5) {
                    let _ = tokio::time::timeout(Duration::from_millis(150), async {
                        while let Ok(Some(m)) = stream.message().await {
                            if let Some(pb::subscribe_response::Item::Batch(b)) = m.item {
                                c.apply(b);
                            }
                        }
                    })
                    .await;
                }
                drop(stream);
                // the consumer forgets what came after the cursor it kept
                let keep = rng.random_range(0..=c.cursors.len());
                let (cursor, lines) = if keep == 0 {
                    (String::new(), 0)
                } else {
                    c.cursors[keep - 1].clone()
                };
                let mut back = Consumer::default();
                for line in &c.lines[..lines] {
                    let v: Value = serde_json::from_str(line).unwrap();
                    let key = v["key"].as_str().unwrap().to_owned();
                    back.given.insert(key.clone());
                    if v["op"] == "upsert" {
                        back.rows.insert(key, v["record"].clone());
                    } else {
                        back.rows.remove(&key);
                    }
                    back.lines.push(line.clone());
                }
                back.cursors = c.cursors[..keep].to_vec();
                c = back;
                stream = open(&mut ex, request(&cursor)).await.unwrap().0;
            }
        }
        until_equal(&mut stream, &mut c, &p.visible().await).await;
        settled(&mut stream, &mut c, source).await;
        assert_eq!(c.by_nik(), p.visible().await, "seed {seed}");
        drop(stream);
    }
}

/// Two replicas share a PostgreSQL store: a subscription followed on one
/// resumes on the other from its cursor, each change once; and a stream
/// left open on the first ends once the subscription moved on.
#[tokio::test]
async fn a_subscription_resumes_on_another_replica_sharing_a_postgres_store() {
    let Some(pg) = jembatan_testkit::PgStore::fresh("jembatan_subs").await else {
        return;
    };
    let (f, mut p, a) = federation_on(Source::Polling(Kind::Sqlite), 12, Some(&pg.url))
        .await
        .unwrap();
    let b = f.broker(&config(&f)).await;
    let mut on_a = a.exchange(&f, "dinsos").await;
    let (mut first, _) = open(&mut on_a, request("")).await.unwrap();
    let mut c = Consumer::default();
    until_equal(&mut first, &mut c, &p.visible().await).await;
    // the consumer moves to replica B; its old stream on A lingers
    let mut on_b = b.exchange(&f, "dinsos").await;
    let (mut second, _) = open(&mut on_b, request(&c.cursor())).await.unwrap();
    p.set(0, "nama", "PINDAH REPLIKA").await;
    p.set(3, "kecamatan", "15.07.02").await;
    let n = c.lines.len();
    until_equal(&mut second, &mut c, &p.visible().await).await;
    quiet(&mut second).await;
    assert_eq!(c.lines.len(), n + 2, "{:#?}", &c.lines[n..]);
    // the lingering stream cannot record a batch the other already did
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match first.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the lingering stream ends");
    if let Some(status) = ended {
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
    }
    drop((first, second, on_a, on_b));
    drop((a, b, f));
    pg.drop_db().await;
}
