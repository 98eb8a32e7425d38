//! Shutting down: after the signal the broker takes no new calls, lets a
//! running query stream finish for `drain_time`, then ends one still
//! running `Unavailable` with its `cancelled` completion entry on the log,
//! and the last checkpoint, signed after, covers every entry.

use std::time::{Duration, Instant};

use jembatan_core::{EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_testkit::{Federation, agreement_toml, query};
use tokio::sync::oneshot;
use tonic::Code;

const GRANT: &str = r#"["nik", "nama", "tgl_lahir", "kecamatan", "status"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outliving_the_drain_time_ends_logged_cancelled_before_the_last_checkpoint() {
    let f = Federation::start(30_000).await;
    let config = f.broker_config(
        "drain_time = \"1s\"\nstall_timeout = \"60s\"",
        &agreement_toml("a-dinsos", "dinsos", GRANT, "approved", ""),
    );
    let (signal, signalled) = oneshot::channel::<()>();
    let (handle, served) = f
        .broker_until(&config, async move {
            let _ = signalled.await;
        })
        .await;
    let (broker, port) = (handle.broker, handle.port);

    // a consumer reads the first batch of a long stream, then holds it
    let mut client = pb::exchange_client::ExchangeClient::new(f.channel(port, "dinsos").await);
    let mut stream = client
        .query(query(&["nik", "nama"]))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.item,
        Some(pb::query_response::Item::Batch(_))
    ));

    let signalled_at = Instant::now();
    signal.send(()).unwrap();
    // no new connection is taken once the signal is in
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(f.files["dinsos"].client_config("localhost").unwrap())
            .unwrap()
            .connect(),
    )
    .await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a new connection was taken after the signal"
    );

    // held unread past the drain time, the stream is ended: the consumer
    // reading again is told why at once, ahead of what it left unread
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the stream ends after drain_time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ran to its end instead of being drained"),
            Err(status) => break status,
        }
    };
    assert!(signalled_at.elapsed() >= Duration::from_secs(1));
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("shutting down"), "{}", end.message());
    drop(stream);
    drop(client);

    // the server returns once every call has ended
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("serve returns after the drain")
        .unwrap()
        .unwrap();

    // the stream's end is on the log, and the last checkpoint covers it
    let entries = broker.audit().entries(0, 100).await.unwrap();
    let completion = entries
        .iter()
        .find(|e| e.entry.kind == EntryKind::Completion)
        .expect("a completion entry");
    assert_eq!(completion.entry.status, ExchangeStatus::Cancelled);
    assert!(
        completion
            .entry
            .error
            .as_deref()
            .is_some_and(|m| m.contains("shutting down")),
        "{:?}",
        completion.entry.error
    );
    let size = broker.store().audit_log_size().await.unwrap();
    broker.shutdown().await.unwrap();
    let store = jembatan_store::Store::connect(&f.store).await.unwrap();
    let latest = store
        .latest_checkpoint()
        .await
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(latest.size, size, "the last checkpoint covers every entry");
}
