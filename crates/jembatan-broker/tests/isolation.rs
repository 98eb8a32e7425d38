//! One consumer must not stall a provider for everyone: query streams one
//! agency holds open without reading leave other agencies' lookups and
//! queries answering within their deadline, on SQLite, PostgreSQL and
//! MariaDB adapters (the last two when `JEMBATAN_TEST_POSTGRES_URL` /
//! `JEMBATAN_TEST_MYSQL_URL` are set) and with the broker's store on
//! SQLite or PostgreSQL; a stream left unread past the broker's
//! `stall_timeout` is ended, logged `cancelled` and frees its adapter
//! stream; a consumer holds at most `max_streams_per_provider`
//! query streams against one provider.

use std::time::{Duration, Instant};

use jembatan_adapter::{FetchStatus, LogEntry, read_receipt_log};
use jembatan_core::{EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::{Federation, Kind, ProviderDb, agreement_toml, nik, query, string};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Streaming};

/// Rows of the provider's table: each unread stream has far more to send
/// than every buffer between the database and the consumer holds.
const ROWS: usize = 40_000;
/// Streams the holding agency opens and leaves unread.
const HELD: usize = 4;
/// The deadline of the other agency's lookups.
const DEADLINE: Duration = Duration::from_secs(5);
const FIELDS: [&str; 5] = ["nik", "nama", "tgl_lahir", "kecamatan", "status"];
const GRANT: &str = r#"["nik", "nama", "tgl_lahir", "kecamatan", "status"]"#;

/// A provider on `kind` with its adapter; `None` when the backend is
/// skipped.
async fn federation(kind: Kind) -> Option<(Federation, ProviderDb)> {
    let tmp = tempfile::tempdir().unwrap();
    let db = ProviderDb::new(
        kind,
        tmp.path(),
        ROWS,
        &format!(" {}", "ABCDEFGHIJ".repeat(12)),
    )
    .await?;
    let f = Federation::builder()
        .dir(tmp)
        .database(&db.url)
        .rows(ROWS)
        .start()
        .await;
    Some((f, db))
}

/// Agreements for `dinsos` and `dinkes`.
fn tables() -> String {
    agreement_toml("a-dinsos", "dinsos", GRANT, "approved", "")
        + &agreement_toml("a-dinkes", "dinkes", GRANT, "approved", "")
}

/// A client of `who` on a connection of its own, with the HTTP/2 windows
/// of a client that sets none (so what it holds unread is what an
/// ordinary client holds).
async fn client(f: &Federation, port: u16, who: &str) -> ExchangeClient<Channel> {
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(f.files[who].client_config("localhost").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    ExchangeClient::new(channel)
}

/// Opens a query stream on a connection of its own and reads only its
/// first batch.
async fn open_and_read_one(
    f: &Federation,
    port: u16,
    who: &str,
) -> (Streaming<pb::QueryResponse>, usize) {
    let mut client = client(f, port, who).await;
    let mut stream = client.query(query(&FIELDS)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(pb::query_response::Item::Batch(batch)) = first.item else {
        panic!("the first message is a batch")
    };
    (stream, batch.records.len())
}

fn lookup(i: usize) -> Request<pb::LookupRequest> {
    let mut request = Request::new(pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: vec!["nik".into(), "nama".into()],
        key: Some(string(&nik(i))),
        ..Default::default()
    });
    request.set_timeout(DEADLINE);
    request
}

/// `dinsos` opens [`HELD`] query streams and reads one batch of each;
/// while it holds them, `dinkes`'s lookups answer within their deadline
/// and its own query runs to the end.
async fn unread_streams_do_not_stall_other_agencies(kind: Kind) {
    stall_test(kind, None).await;
}

/// [`unread_streams_do_not_stall_other_agencies`] with the broker's store
/// at `store` (the federation's SQLite file when `None`).
async fn stall_test(kind: Kind, store: Option<String>) {
    let Some((mut f, db)) = federation(kind).await else {
        return;
    };
    if let Some(url) = store {
        f.store = url;
    }
    let config = f.broker_config("max_streams_per_provider = 8", &tables());
    let b = f.broker(&config).await;
    let mut held = Vec::new();
    for n in 0..HELD {
        let opened = tokio::time::timeout(DEADLINE, open_and_read_one(&f, b.port, "dinsos"));
        held.push(opened.await.unwrap_or_else(|_| {
            panic!("{kind:?}: the holder's stream {n} got no first batch within {DEADLINE:?}")
        }));
    }
    // the unread batches fill every buffer on their way meanwhile
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut other = b.exchange(&f, "dinkes").await;
    for i in [0, 17, 4_242, ROWS - 1] {
        let started = Instant::now();
        let answer = other.lookup(lookup(i)).await;
        let took = started.elapsed();
        println!("{kind:?}: lookup with {HELD} unread streams held by another agency: {took:?}");
        let answer = answer.unwrap_or_else(|s| {
            panic!("{kind:?}: lookup {i} failed after {took:?} while {HELD} unread streams were held by another agency: {s:?}")
        });
        assert!(answer.into_inner().found);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        jembatan_testkit::run_query(&mut other, query(&["nik"])),
    )
    .await
    .unwrap_or_else(|_| panic!("{kind:?}: another agency's query stalled"));
    out.end.unwrap();
    assert_eq!(out.records.len(), ROWS);
    println!(
        "{kind:?}: a whole query beside them: {:?}",
        started.elapsed()
    );

    // the holder itself reads on to the end of one of its streams
    let (mut stream, mut rows) = held.pop().unwrap();
    loop {
        match stream.message().await.unwrap() {
            Some(pb::QueryResponse {
                item: Some(pb::query_response::Item::Batch(batch)),
            }) => rows += batch.records.len(),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(rows, ROWS);
    drop(held);
    drop(f);
    // the adapter lets go of its connections before the database goes
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_do_not_stall_other_agencies_sqlite() {
    unread_streams_do_not_stall_other_agencies(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_do_not_stall_other_agencies_postgres() {
    unread_streams_do_not_stall_other_agencies(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_do_not_stall_other_agencies_mariadb() {
    unread_streams_do_not_stall_other_agencies(Kind::MySql).await;
}

/// The same with the broker's store on PostgreSQL, as replicas share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_do_not_stall_other_agencies_on_a_postgres_store() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let name = format!("jembatan_iso_store_{}", uuid::Uuid::new_v4().simple());
    let admin = jembatan_store::Store::admin_pool(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    stall_test(Kind::Sqlite, Some(format!("{base}/{name}"))).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

/// Waits up to ten seconds for `found` to return something.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut found: impl FnMut() -> F,
) -> T {
    for _ in 0..200 {
        if let Some(t) = found().await {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within ten seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_left_unread_is_ended_cancelled_and_frees_its_slot_and_adapter_stream() {
    let (f, _db) = federation(Kind::Sqlite).await.unwrap();
    let config = f.broker_config(
        "stall_timeout = \"1s\"\nmax_streams_per_provider = 1",
        &tables(),
    );
    let b = f.broker(&config).await;
    let mut holder = b.exchange(&f, "dinsos").await;
    let (mut held, mut received) = open_and_read_one(&f, b.port, "dinsos").await;

    // while it is open, the holder's one stream against prov is taken;
    // another agency's is not
    let refused = holder.query(query(&["nik"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("max_streams_per_provider"),
        "{}",
        refused.message()
    );
    let mut other = b.exchange(&f, "dinkes").await;
    let mut limited = query(&["nik"]);
    limited.limit = 10;
    let out = jembatan_testkit::run_query(&mut other, limited.clone()).await;
    out.end.unwrap();
    assert_eq!(out.records.len(), 10);

    // left unread, the stream is ended and its end is on the log
    let audit = b.broker.audit();
    let completion = eventually("a cancelled completion", || async {
        let entries = audit.entries(0, 100).await.unwrap();
        entries.into_iter().find(|e| {
            e.entry.kind == EntryKind::Completion && e.entry.status == ExchangeStatus::Cancelled
        })
    })
    .await
    .entry;
    assert!(
        completion
            .error
            .as_deref()
            .unwrap()
            .contains("stall_timeout"),
        "{:?}",
        completion.error
    );
    let entries = audit.exchange(&completion.exchange_id).await.unwrap();
    assert_eq!(entries.len(), 2, "one decision, one end: {entries:?}");
    assert_eq!(entries[0].entry.status, ExchangeStatus::Started);
    // the limit's refusal is on the log too, naming the limit
    let all = audit.entries(0, 100).await.unwrap();
    assert!(all.iter().any(|e| {
        e.entry.status == ExchangeStatus::Invalid
            && e.entry.consumer.as_deref() == Some("dinsos")
            && e.entry
                .error
                .as_deref()
                .is_some_and(|m| m.contains("max_streams_per_provider"))
    }));

    // the adapter's stream ended too: its database connection is free
    let log = f.dir.join("receipts.jsonl");
    let served = eventually("the adapter's cancelled fetch", || async {
        read_receipt_log(&log)
            .ok()?
            .into_iter()
            .find_map(|e| match e {
                LogEntry::Served(s) if s.exchange_id == completion.exchange_id => Some(s),
                _ => None,
            })
    })
    .await;
    assert_eq!(served.status, FetchStatus::Cancelled);
    assert!(served.rows >= completion.rows);

    // the slot is free again
    let out = jembatan_testkit::run_query(&mut holder, limited).await;
    out.end.unwrap();

    // reading on, the holder gets what was on its way, then the end
    let end = loop {
        match held.message().await {
            Ok(Some(pb::QueryResponse {
                item: Some(pb::query_response::Item::Batch(batch)),
            })) => received += batch.records.len(),
            Ok(other) => panic!("no receipt for a cancelled stream: {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Cancelled, "{end:?}");
    assert!(end.message().contains("stall_timeout"), "{}", end.message());
    assert!(
        received as u64 <= completion.rows,
        "the log counts every row sent: {received} received, {} logged",
        completion.rows
    );
    assert!(completion.rows < ROWS as u64);
}

/// Two replicas on the store at `store` (the federation's SQLite file when
/// `None`): `dinsos`'s query streams against `prov` are counted over both,
/// so `max_streams_per_provider` holds for the deployment, not for each
/// replica; another consumer counts apart, and an ended stream frees its
/// place on every replica.
async fn provider_streams_across_replicas(store: Option<String>) {
    let (mut f, _db) = federation(Kind::Sqlite).await.unwrap();
    if let Some(url) = store {
        f.store = url;
    }
    let config = f.broker_config("max_streams_per_provider = 2", &tables());
    let one = f.broker(&config).await;
    let two = f.broker(&config).await;
    let (first, _) = open_and_read_one(&f, one.port, "dinsos").await;
    let (second, _) = open_and_read_one(&f, two.port, "dinsos").await;

    for b in [&one, &two] {
        let refused = client(&f, b.port, "dinsos")
            .await
            .query(query(&["nik"]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains(
                "has 2 query streams open against provider prov on the brokers sharing this store"
            ) && refused.message().contains("max_streams_per_provider"),
            "{}",
            refused.message()
        );
    }
    // the refusals are on the log
    let all = one.broker.audit().entries(0, 100).await.unwrap();
    let refusals = all
        .iter()
        .filter(|e| {
            e.entry.status == ExchangeStatus::Invalid
                && e.entry
                    .error
                    .as_deref()
                    .is_some_and(|m| m.contains("max_streams_per_provider"))
        })
        .count();
    assert_eq!(refusals, 2);

    // another consumer has places of its own
    let mut limited = query(&["nik"]);
    limited.limit = 10;
    let out =
        jembatan_testkit::run_query(&mut client(&f, two.port, "dinkes").await, limited.clone())
            .await;
    out.end.unwrap();
    assert_eq!(out.records.len(), 10);

    // the stream on the first replica ends: the second has a place again
    drop(first);
    let mut dinsos = client(&f, two.port, "dinsos").await;
    let started = Instant::now();
    loop {
        match jembatan_testkit::run_query(&mut dinsos, limited.clone())
            .await
            .end
        {
            Ok(()) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_provider_are_counted_across_replicas() {
    provider_streams_across_replicas(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_provider_are_counted_across_replicas_on_a_postgres_store() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let name = format!("jembatan_iso_prov_{}", uuid::Uuid::new_v4().simple());
    let admin = jembatan_store::Store::admin_pool(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    provider_streams_across_replicas(Some(format!("{base}/{name}"))).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}
