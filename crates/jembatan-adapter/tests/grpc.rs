//! The Adapter gRPC service in process over real mutual TLS: only the
//! broker's certificate is served, foreign certificates fail the handshake,
//! the whitelist holds over the wire, and health answers (NOT_SERVING once
//! the database does not).

mod common;

use std::time::Duration;

use common::{Kind, TestDb, fetch, log_entries};
use jembatan_adapter::{FetchStatus, LogEntry, read_receipt_log, serve};
use jembatan_core::{Identity, Role};
use jembatan_pki::TlsFiles;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const DATASETS: &str = r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "umur"]
row_filter = { field = "status", op = "eq", value = "HIDUP" }
"#;

async fn channel(port: u16, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await
}

async fn client(port: u16, files: &TlsFiles) -> AdapterClient<Channel> {
    let tls = files.client_config("localhost").expect("client tls");
    AdapterClient::new(channel(port, tls).await.expect("connect"))
}

async fn fetch_all(
    client: &mut AdapterClient<Channel>,
    req: pb::FetchRequest,
) -> Result<Vec<String>, tonic::Status> {
    let mut stream = client.fetch(req).await?.into_inner();
    let mut records = Vec::new();
    while let Some(msg) = stream.message().await? {
        records.extend(msg.batch.expect("batch").records);
    }
    Ok(records)
}

#[tokio::test]
async fn only_the_broker_is_served_over_mtls() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    db.exec(
        "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT, umur INTEGER, status TEXT, password TEXT);\n\
         INSERT INTO penduduk VALUES ('3201', 'Budi', 30, 'HIDUP', 'rahasia'), \
           ('3202', 'Siti', 25, 'HIDUP', 'rahasia'), ('3299', 'Almarhum', 80, 'MATI', 'rahasia')",
    )
    .await;
    let adapter = db.adapter(DATASETS).await;

    let pki = tempfile::tempdir().expect("tempdir");
    let broker = Identity::new(Role::Broker, None).expect("broker");
    let dinsos =
        Identity::new(Role::Agency, Some("dinsos".parse().expect("agency"))).expect("agency");
    let server_id = Identity::new(Role::Adapter, Some("disdukcapil".parse().expect("agency")))
        .expect("adapter");
    let files = jembatan_pki::dev_pki(
        pki.path(),
        &[broker.clone(), dinsos.clone(), server_id.clone()],
    )
    .expect("dev pki");
    let get = |id: &Identity| {
        files
            .iter()
            .find(|(i, _)| i == id)
            .expect("issued")
            .1
            .clone()
    };
    let other_pki = tempfile::tempdir().expect("tempdir");
    let foreign = jembatan_pki::dev_pki(other_pki.path(), std::slice::from_ref(&broker))
        .expect("foreign pki")[0]
        .1
        .clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        adapter.clone(),
        listener,
        get(&server_id).server_config().expect("server tls"),
        async {
            let _ = stopped.await;
        },
    ));

    // the broker describes and fetches
    let mut broker_client = client(port, &get(&broker)).await;
    let described = broker_client
        .describe(pb::DescribeRequest {})
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.agency, "disdukcapil");
    assert_eq!(described.datasets.len(), 1);
    let d = &described.datasets[0];
    assert_eq!(d.dataset, "disdukcapil.penduduk");
    assert_eq!(d.key_column, "nik");
    let cols: Vec<(&str, i32, &str)> = d
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.kind, c.db_type.as_str()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("nik", pb::ColumnKind::String as i32, "TEXT"),
            ("nama", pb::ColumnKind::String as i32, "TEXT"),
            ("umur", pb::ColumnKind::Integer as i32, "INTEGER"),
        ]
    );

    let req = fetch("penduduk", &["nik", "nama", "umur"], None);
    let exchange = req.exchange_id.clone();
    let records = fetch_all(&mut broker_client, req).await.expect("fetch");
    assert_eq!(
        records,
        vec![
            r#"{"nik":"3201","nama":"Budi","umur":30}"#,
            r#"{"nik":"3202","nama":"Siti","umur":25}"#,
        ]
    );
    let entries = log_entries(&db.receipt_log(), 1).await;
    let LogEntry::Served(served) = &entries[0] else {
        panic!("served entry expected")
    };
    let mut h = Sha256::new();
    for r in &records {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    let payload = hex::encode(h.finalize());
    assert_eq!(served.exchange_id, exchange);
    assert_eq!(served.status, FetchStatus::Ok);
    assert_eq!(served.rows, 2);
    assert_eq!(served.payload_sha256, payload);

    // the broker's receipt is recorded
    broker_client
        .acknowledge(pb::AcknowledgeRequest {
            dataset: "disdukcapil.penduduk".into(),
            consumer: "dinsos".into(),
            receipt: Some(pb::Receipt {
                exchange_id: exchange.clone(),
                entry_seq: 42,
                decision_seq: 41,
                payload_sha256: payload.clone(),
                rows: 2,
                bytes: 78,
                completed_at: None,
                entry_sha256: "ab".repeat(32),
                leaf_hash: "cd".repeat(32),
                checkpoint: String::new(),
            }),
        })
        .await
        .expect("acknowledge");
    let entries = log_entries(&db.receipt_log(), 2).await;
    let LogEntry::Receipt(receipt) = &entries[1] else {
        panic!("receipt entry expected")
    };
    assert_eq!(receipt.dataset, "disdukcapil.penduduk");
    assert_eq!(receipt.consumer, "dinsos");
    assert_eq!(receipt.receipt.exchange_id, exchange);
    assert_eq!(receipt.receipt.entry_seq, 42);
    assert_eq!(receipt.receipt.payload_sha256, payload);
    assert_eq!(receipt.receipt.leaf_hash, "cd".repeat(32));

    // receipts in a batch are recorded in order
    let ack = |dataset: &str, seq: u64| pb::AcknowledgeRequest {
        dataset: dataset.into(),
        consumer: "dinsos".into(),
        receipt: Some(pb::Receipt {
            exchange_id: format!("batch-{seq}"),
            entry_seq: seq,
            ..Default::default()
        }),
    };
    broker_client
        .acknowledge_batch(pb::AcknowledgeBatchRequest {
            receipts: vec![
                ack("disdukcapil.penduduk", 50),
                ack("disdukcapil.penduduk", 52),
            ],
        })
        .await
        .expect("acknowledge batch");
    let entries = log_entries(&db.receipt_log(), 4).await;
    let seqs: Vec<(String, u64)> = entries[2..]
        .iter()
        .map(|e| match e {
            LogEntry::Receipt(r) => (r.receipt.exchange_id.clone(), r.receipt.entry_seq),
            other => panic!("receipt entry expected, got {other:?}"),
        })
        .collect();
    assert_eq!(
        seqs,
        [("batch-50".to_owned(), 50), ("batch-52".to_owned(), 52)]
    );
    // a batch with a bad receipt is refused whole, naming it; nothing of
    // it reaches the log
    let status = broker_client
        .acknowledge_batch(pb::AcknowledgeBatchRequest {
            receipts: vec![
                ack("disdukcapil.penduduk", 60),
                ack("disdukcapil.keluarga", 61),
            ],
        })
        .await
        .expect_err("a receipt for an unknown dataset");
    assert!(
        status.message().starts_with("receipt 1 of the batch: "),
        "{status:?}"
    );
    let status = broker_client
        .acknowledge_batch(pb::AcknowledgeBatchRequest {
            receipts: vec![
                ack("disdukcapil.penduduk", 70);
                jembatan_adapter::MAX_RECEIPTS_PER_BATCH + 1
            ],
        })
        .await
        .expect_err("too many receipts");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        read_receipt_log(&db.receipt_log()).unwrap().len(),
        4,
        "refused batches write nothing"
    );

    // off-whitelist requests sent straight to the adapter by the broker
    let off: Vec<(&str, pb::FetchRequest, &str)> = vec![
        (
            "dataset",
            fetch("keluarga", &["nik"], None),
            "disdukcapil.keluarga",
        ),
        (
            "column",
            fetch("penduduk", &["nik", "password"], None),
            "\"password\"",
        ),
        (
            "filter field",
            fetch(
                "penduduk",
                &["nik"],
                Some(json!({"field": "password", "op": "prefix", "value": "r"})),
            ),
            "\"password\"",
        ),
    ];
    for (name, req, want) in off {
        let status = fetch_all(&mut broker_client, req).await.expect_err(name);
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status:?}");
        assert!(
            status.message().contains(want),
            "{name}: {}",
            status.message()
        );
    }

    // health answers SERVING for the adapter service
    let tls = get(&broker).client_config("localhost").expect("tls");
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        channel(port, tls).await.expect("connect"),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jembatan.v1.Adapter".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // reflection lists the adapter service
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let tls = get(&broker).client_config("localhost").expect("tls");
        let mut reflection =
            ServerReflectionClient::new(channel(port, tls).await.expect("connect"));
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses
            .message()
            .await
            .expect("reflection answer")
            .expect("one answer");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("list services response expected");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"jembatan.v1.Adapter"), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    }

    // an agency certificate from the same CA is refused on every RPC
    let mut agency_client = client(port, &get(&dinsos)).await;
    let want = "this adapter serves only the broker; caller is agency:dinsos";
    let status = agency_client
        .describe(pb::DescribeRequest {})
        .await
        .expect_err("describe");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), want);
    let status = fetch_all(&mut agency_client, fetch("penduduk", &["nik"], None))
        .await
        .expect_err("fetch");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), want);
    let status = agency_client
        .acknowledge(pb::AcknowledgeRequest {
            dataset: "disdukcapil.penduduk".into(),
            consumer: "dinsos".into(),
            receipt: Some(pb::Receipt::default()),
        })
        .await
        .expect_err("acknowledge");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = agency_client
        .acknowledge_batch(pb::AcknowledgeBatchRequest {
            receipts: vec![pb::AcknowledgeRequest::default()],
        })
        .await
        .expect_err("acknowledge batch");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), want);
    let changes = pb::ChangesRequest {
        dataset: "disdukcapil.penduduk".into(),
        columns: vec!["nik".into()],
        ..Default::default()
    };
    let status = agency_client
        .changes(changes.clone())
        .await
        .expect_err("changes");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), want);
    // the broker may poll only datasets that declare a change source
    let status = broker_client
        .changes(changes)
        .await
        .expect_err("changes of a dataset without a change source");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "dataset disdukcapil.penduduk offers no changes: its adapter config declares no `changes`"
    );
    // the adapter's own certificate is not the broker either
    let mut self_client = client(port, &get(&server_id)).await;
    let status = self_client
        .describe(pb::DescribeRequest {})
        .await
        .expect_err("describe");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().ends_with("caller is adapter:disdukcapil"),
        "{}",
        status.message()
    );

    // a broker certificate from another CA fails the handshake, even when
    // it trusts the adapter's CA
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&get(&broker).ca).expect("ca"),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&foreign.cert).expect("cert"),
            std::fs::read(&foreign.key).expect("key"),
        ))
        .domain_name("localhost");
    match channel(port, tls).await {
        Err(_) => {}
        Ok(ch) => {
            let status = AdapterClient::new(ch)
                .describe(pb::DescribeRequest {})
                .await
                .expect_err("foreign client certificate must not be served");
            // TLS 1.3 finishes the client side first; the server's alert then
            // surfaces as a transport error on the first call
            assert!(
                status.code() == Code::Unavailable
                    || (status.code() == Code::Unknown && status.message() == "transport error"),
                "{status:?}"
            );
        }
    }
    // and a client that trusts only the other CA refuses the adapter
    let tls = foreign.client_config("localhost").expect("tls");
    assert!(
        channel(port, tls).await.is_err(),
        "foreign CA must not trust the adapter"
    );

    // nothing the refused callers asked for reached the receipt log: it
    // holds the served fetch and the three receipts the broker gave
    assert_eq!(
        jembatan_adapter::read_receipt_log(&db.receipt_log())
            .expect("log")
            .len(),
        4
    );

    // a database that does not answer turns health NOT_SERVING (checked
    // every 5 s)
    adapter.close().await;
    let mut not_serving = false;
    for _ in 0..70 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "jembatan.v1.Adapter".into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        not_serving,
        "health stayed SERVING with the database closed"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .expect("server task")
        .expect("server result");
    adapter.close().await;
}
