//! The consumer's deadline (`grpc-timeout`) reaches the adapter: a query
//! on a provider whose statement never produces a row ends soon after the
//! consumer's deadline, stopped by the adapter, even when the consumer's
//! client does not cancel the call itself — and the exchange's end is on
//! the log.

use std::time::{Duration, Instant};

use jembatan_adapter::{FetchStatus, LogEntry, read_receipt_log};
use jembatan_core::{EntryKind, ExchangeStatus};
use jembatan_testkit::{Federation, agreement_toml, query};

/// A provider whose `penduduk` is a view that counts to four billion
/// before it finds a row.
async fn slow_provider() -> Federation {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lambat.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE VIEW penduduk AS WITH RECURSIVE c(x) AS \
         (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000000000) \
         SELECT CAST(x AS TEXT) AS nik, 'WARGA' AS nama, '2000-01-01' AS tgl_lahir, \
         '15.07.01' AS kecamatan, 'HIDUP' AS status FROM c WHERE x < 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    Federation::builder()
        .dir(tmp)
        .database(&format!("sqlite://{}", path.display()))
        .rows(0)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_deadline_stops_the_adapters_statement() {
    let f = slow_provider().await;
    let config = f.broker_config(
        "",
        &agreement_toml("a-dinsos", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    let b = f.broker(&config).await;
    let mut client = b.exchange(&f, "dinsos").await;
    // the header alone: tonic's client does not cancel on it, so only the
    // broker passing it on can stop the statement
    let mut request = tonic::Request::new(query(&["nik", "nama"]));
    request.set_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        match client.query(request).await {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => panic!("a query of a view without rows ended without an error"),
                        Err(status) => break status,
                    }
                }
            }
        }
    })
    .await
    .expect("the query ends at the consumer's deadline, not at the adapter's max_query_time");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(6),
        "ended after {elapsed:?}: {ended:?}"
    );

    assert_eq!(ended.code(), tonic::Code::DeadlineExceeded, "{ended:?}");
    assert!(
        ended.message().contains("caller's deadline"),
        "{}",
        ended.message()
    );

    // the adapter stopped the statement at the deadline it was given
    // (its line is appended as the fetch ends, which nobody waits for)
    let log = f.dir.join("receipts.jsonl");
    let logged = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let served = read_receipt_log(&log)
            .unwrap_or_default()
            .into_iter()
            .find_map(|e| match e {
                LogEntry::Served(s) => Some(s),
                _ => None,
            });
        match served {
            Some(served) => break served,
            None if Instant::now() < logged => tokio::time::sleep(Duration::from_millis(20)).await,
            None => panic!("the adapter did not log the fetch"),
        }
    };
    assert_eq!(served.status, FetchStatus::Failed, "{served:?}");

    // and the exchange has its end on the broker's log
    let entries = b.broker.audit().entries(0, 10).await.unwrap();
    let completion = entries
        .iter()
        .find(|e| e.entry.kind == EntryKind::Completion)
        .expect("a completion entry");
    assert_ne!(completion.entry.status, ExchangeStatus::Ok);
    println!("ended {} ms after the call: {ended:?}", elapsed.as_millis());
}
