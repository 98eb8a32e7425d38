//! Change subscriptions through a real broker and a real adapter on a
//! SQLite provider database: changes in order under the agreement's row
//! filter, deletes for rows that leave the scope and nothing for rows
//! never in it, exact resumption from any cursor (also on a restarted
//! broker), revocation, cursors bound to their subscription, and every
//! batch on the audit log before it leaves.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jembatan_core::{AuditEntry, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::SqlitePool;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use support::{BrokerHandle, Federation, agreement_toml, eq, nik};

const CHANGES: &str = r#"
[datasets.changes]
column = "diubah"
deleted = { field = "status", op = "eq", value = "DIHAPUS" }
lag = "0s"
poll_interval = "50ms"
"#;

/// The district the agreement's row filter lets through.
const KEC: &str = "15.07.01";

/// A provider database whose rows carry a change time.
struct Provider {
    pool: SqlitePool,
    /// The next change time, in seconds after 2020-01-01.
    clock: u64,
}

/// A change time `n` seconds after 2020-01-01 (in the past: a polling
/// source holds back rows dated in the future).
fn at(n: u64) -> String {
    let t = chrono::NaiveDate::from_ymd_opt(2020, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(n as i64);
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

impl Provider {
    /// `rows` residents; every two share a change time (ties).
    async fn new(path: &std::path::Path, rows: usize) -> Provider {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, tgl_lahir TEXT,
             kecamatan TEXT NOT NULL, status TEXT NOT NULL, diubah DATETIME)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let mut p = Provider { pool, clock: 0 };
        for i in 0..rows {
            let kec = if i % 3 == 0 { KEC } else { "15.07.02" };
            sqlx::query("INSERT INTO penduduk VALUES (?, ?, '1970-01-01', ?, 'HIDUP', ?)")
                .bind(nik(i))
                .bind(format!("WARGA {i}"))
                .bind(kec)
                .bind(at(i as u64 / 2))
                .execute(&p.pool)
                .await
                .unwrap();
        }
        p.clock = rows as u64;
        p
    }

    fn tick(&mut self) -> String {
        self.clock += 1;
        at(self.clock)
    }

    async fn set(&mut self, i: usize, column: &str, value: &str) {
        let now = self.tick();
        let sql = format!("UPDATE penduduk SET {column} = ?, diubah = ? WHERE nik = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .bind(now)
            .bind(nik(i))
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn insert(&mut self, i: usize, kec: &str) {
        let now = self.tick();
        sqlx::query("INSERT INTO penduduk VALUES (?, ?, '1970-01-01', ?, 'HIDUP', ?)")
            .bind(nik(i))
            .bind(format!("WARGA {i}"))
            .bind(kec)
            .bind(now)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// What the consumer may see now: the rows in the district and not
    /// deleted, as the consumer's records (by `nik`).
    async fn visible(&self) -> BTreeMap<String, Value> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT nik, nama, kecamatan, status FROM penduduk WHERE kecamatan = ? AND status <> 'DIHAPUS'",
        )
        .bind(KEC)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(nik, nama, kecamatan, status)| {
                let record = serde_json::json!({
                    "nik": nik, "nama": nama, "kecamatan": kecamatan, "status": status
                });
                (nik, record)
            })
            .collect()
    }
}

/// A federation whose provider's dataset has a change source, and a
/// broker whose agreement lets `dinsos` subscribe to the district's
/// residents.
async fn federation(rows: usize) -> (Federation, Provider, BrokerHandle) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("prov.db");
    let provider = Provider::new(&db, rows).await;
    let f =
        Federation::with_dataset(tmp, &format!("sqlite://{}", db.display()), rows, CHANGES).await;
    let b = f.broker(&config(&f)).await;
    (f, provider, b)
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
    let (f, mut p, b) = federation(40).await;
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
    quiet(&mut stream).await;
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
    let kept = c.lines.clone();
    let (mut stream, again) = open(&mut ex, request(&c.cursor())).await.unwrap();
    assert_eq!(
        again.subscription_id, c.subscription,
        "the same subscription"
    );
    assert_ne!(again.exchange_id, started.exchange_id, "another stream");
    until_equal(&mut stream, &mut c, &p.visible().await).await;
    quiet(&mut stream).await;
    assert_eq!(
        c.lines.len(),
        kept.len() + 2,
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
    quiet(&mut stream).await;
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
    assert_eq!(keys.len(), replayed.len(), "each row once: {replayed:#?}");
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
    let text: String = log
        .iter()
        .map(|e| String::from_utf8(e.canonical_bytes()).unwrap())
        .collect();
    for i in [0, 3, 6, 100] {
        assert!(!text.contains(&nik(i)), "no key in clear on the log");
    }
    assert!(!text.contains("c1."), "no cursor on the log");
}

#[tokio::test]
async fn a_restarted_broker_resumes_a_subscription_from_its_cursor() {
    let (f, mut p, b) = federation(12).await;
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
    let (f, p, b) = federation(6).await;
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
}

#[tokio::test]
async fn cursors_and_terms_are_checked_before_anything_flows() {
    let (f, p, b) = federation(6).await;
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
        support::denial_codes(&denied).contains(&"subscribe_not_granted".to_owned()),
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
    let (f, mut p, b) = federation(24).await;
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
        quiet(&mut stream).await;
        assert_eq!(c.by_nik(), p.visible().await, "seed {seed}");
        drop(stream);
    }
}
