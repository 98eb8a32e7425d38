//! The HTTP/JSON door on the broker's mTLS port: queries streamed as
//! NDJSON with their receipt, subscriptions streamed as NDJSON batch by
//! batch until the agreement is revoked, lookups with plain JSON keys, agreements,
//! denials and bad input as JSON errors, identity from the certificate,
//! clients that offer only HTTP/1.1 in ALPN, and the OpenAPI document
//! kept equal to `docs/openapi.json`.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jembatan_broker::MAX_REQUEST_BYTES;
use jembatan_core::{Decision, ExchangeStatus};
use jembatan_testkit::{BrokerHandle, Federation, agreement_toml, nik};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tonic::codegen::{Bytes, http};

const H1: &[u8] = b"http/1.1";
const H2: &[u8] = b"h2";

/// An answer of the door.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// A TLS connection to the broker as `who`, offering `alpn`.
async fn connect(
    f: &Federation,
    port: u16,
    who: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = jembatan_pki::rustls_config(&f.files[who], &[alpn]).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "negotiated");
    tls
}

/// One request over a connection whose ALPN offered only `alpn`.
async fn call_with(
    f: &Federation,
    b: &BrokerHandle,
    who: &str,
    alpn: &[u8],
    request: http::request::Builder,
    body: Vec<u8>,
) -> Answer {
    let io = TokioIo::new(connect(f, b.port, who, alpn).await);
    let request = request
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = if alpn == H2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body: body.to_vec(),
    }
}

/// `method path` with a JSON body, over HTTP/1.1.
async fn call(
    f: &Federation,
    b: &BrokerHandle,
    who: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", b.port))
        .header(http::header::HOST, "localhost");
    let body = body.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    call_with(f, b, who, H1, request, body).await
}

/// `POST path` with a JSON body, over HTTP/1.1.
async fn post(f: &Federation, b: &BrokerHandle, who: &str, path: &str, body: Value) -> Answer {
    call(f, b, who, "POST", path, Some(body)).await
}

/// A federation whose `dinsos` may read `nik`, `nama` and `kecamatan` for
/// `bansos`; `dinkes` has no agreement.
async fn federation() -> (Federation, BrokerHandle) {
    let f = Federation::start(30).await;
    let config = f.broker_config(
        "",
        &agreement_toml(
            "a-1",
            "dinsos",
            r#"["nik", "nama", "kecamatan"]"#,
            "approved",
            "",
        ),
    );
    let b = f.broker(&config).await;
    (f, b)
}

fn query_body() -> Value {
    json!({
        "dataset": "prov.penduduk",
        "purpose": "bansos",
        "fields": ["nik", "nama"],
        "filter": {"predicate": {"field": "kecamatan", "op": "OPERATOR_EQ", "value": "15.07.01"}},
    })
}

#[tokio::test]
async fn an_allowed_query_streams_ndjson_records_then_the_receipt() {
    let (f, b) = federation().await;
    let answer = post(&f, &b, "dinsos", "/exchange/v1/query", query_body()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content_type, "application/x-ndjson");
    let text = answer.text();
    let (records, last) = text
        .trim_end_matches('\n')
        .rsplit_once('\n')
        .expect("records and a receipt line");
    let records = format!("{records}\n");
    let rows: Vec<Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // kecamatan 15.07.01 is every third resident
    assert_eq!(rows.len(), 10, "{text}");
    assert_eq!(rows[0], json!({"nik": nik(0), "nama": "WARGA 0"}));
    let receipt = &serde_json::from_str::<Value>(last).unwrap()["receipt"];
    assert_eq!(receipt["rows"], "10");
    // the record lines are exactly what the receipt's hash covers
    let sha = hex::encode(Sha256::digest(records.as_bytes()));
    assert_eq!(receipt["payloadSha256"], sha);
    assert_eq!(receipt["bytes"], (records.len() - rows.len()).to_string());
    // the decision entry and the completion entry the receipt names
    let entries = b
        .broker
        .audit()
        .exchange(receipt["exchangeId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].entry.decision, Decision::Allow);
    assert_eq!(receipt["decisionSeq"], entries[0].seq.to_string());
    assert_eq!(receipt["entrySeq"], entries[1].seq.to_string());
    assert_eq!(entries[1].entry.status, ExchangeStatus::Ok);
    assert_eq!(entries[0].entry.caller, "agency:dinsos");

    // proto field names are read too, and a limit ends the stream early
    let answer = post(
        &f,
        &b,
        "dinsos",
        "/exchange/v1/query",
        json!({
            "dataset": "prov.penduduk", "purpose": "bansos", "fields": ["nik"],
            "target_schema": "", "limit": 3,
        }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let lines: Vec<Value> = answer
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["receipt"]["rows"], "3");
}

#[tokio::test]
async fn a_stream_cut_after_records_began_ends_with_an_error_line() {
    let f = Federation::start(30).await;
    let tables = agreement_toml(
        "rows-1",
        "dinkes",
        r#"["nik"]"#,
        "approved",
        "quota = { rows_per_day = 7 }",
    );
    let b = f.broker(&f.broker_config("", &tables)).await;
    let body = json!({"dataset": "prov.penduduk", "purpose": "bansos", "fields": ["nik"]});
    let answer = post(&f, &b, "dinkes", "/exchange/v1/query", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(lines[..7].iter().all(|l| l["nik"].is_string()), "{text}");
    let error = &lines[7]["error"];
    assert_eq!(error["code"], "RESOURCE_EXHAUSTED", "{text}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("7 rows per day")
    );
    // the receipt counts the records that were sent
    assert_eq!(error["receipt"]["rows"], "7", "{text}");
    let records: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
    let sha = hex::encode(Sha256::digest(records.as_bytes()));
    assert_eq!(error["receipt"]["payloadSha256"], sha);
}

/// A provider database whose residents carry a change time, behind an
/// adapter that declares it as the dataset's change source; `dinsos` may
/// subscribe.
async fn subscribing_federation(rows: usize) -> (Federation, BrokerHandle) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("prov.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, tgl_lahir TEXT,
         kecamatan TEXT NOT NULL, status TEXT NOT NULL, diubah DATETIME)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for i in 0..rows {
        sqlx::query(
            "INSERT INTO penduduk VALUES (?, ?, '1970-01-01', '15.07.01', 'HIDUP', '2020-01-01T00:00:00')",
        )
        .bind(nik(i))
        .bind(format!("WARGA {i}"))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let changes =
        "\n[datasets.changes]\ncolumn = \"diubah\"\nlag = \"0s\"\npoll_interval = \"50ms\"\n";
    let f = Federation::builder()
        .dir(tmp)
        .database(&format!("sqlite://{}", db.display()))
        .rows(rows)
        .dataset_extra(changes)
        .start()
        .await;
    let config = f.broker_config(
        "",
        &agreement_toml(
            "sub-1",
            "dinsos",
            r#"["nik", "nama"]"#,
            "approved",
            "subscribe = true",
        ),
    );
    let b = f.broker(&config).await;
    (f, b)
}

#[tokio::test]
async fn a_subscription_streams_ndjson_batches_until_the_agreement_is_revoked() {
    let (f, b) = subscribing_federation(12).await;

    // refused before the stream starts: a JSON error answer
    let body = json!({"dataset": "prov.penduduk", "purpose": "bansos", "batchSize": 5});
    let answer = post(&f, &b, "dinkes", "/exchange/v1/subscribe", body.clone()).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "PERMISSION_DENIED");

    let io = TokioIo::new(connect(&f, b.port, "dinsos", H1).await);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "https://localhost:{}/exchange/v1/subscribe",
            b.port
        ))
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let mut body = response.into_body();
    let mut text = String::new();
    let mut lines: Vec<Value> = Vec::new();
    let mut changes = 0;
    let mut revoked = false;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
            .await
            .expect("a line within 30 s");
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = text.find('\n') {
            let line: Value = serde_json::from_str(&text[..end]).unwrap();
            text.drain(..=end);
            if let Some(batch) = line.get("batch") {
                changes += batch["changes"].as_array().map_or(0, Vec::len);
            }
            lines.push(line);
        }
        if changes == 12 && !revoked {
            // every change is in: the provider revokes, the stream ends
            let answer = call(&f, &b, "prov", "POST", "/agreements/v1/sub-1/revoke", None).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            revoked = true;
        }
    }
    assert!(
        text.is_empty(),
        "the last line ends with a newline: {text:?}"
    );
    let started = &lines[0]["started"];
    assert!(
        !started["subscriptionId"].as_str().unwrap().is_empty(),
        "{lines:?}"
    );
    assert!(
        started["decisionSeq"].as_str().is_some(),
        "uint64 as a string: {started}"
    );
    // each batch: its changes, its cursor, a receipt whose payload hash
    // covers the change lines
    let batches: Vec<&Value> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| &l["batch"])
        .collect();
    assert_eq!(batches.len(), 3, "batches of at most 5: {lines:?}");
    let mut niks = Vec::new();
    for batch in &batches {
        assert!(
            batch["cursor"].as_str().unwrap().starts_with("c1."),
            "{batch}"
        );
        let mut hasher = jembatan_core::PayloadHasher::new();
        for change in batch["changes"].as_array().unwrap() {
            assert_eq!(change["op"], "CHANGE_OP_UPSERT", "{change}");
            let record = change["record"].as_str().unwrap();
            let line = format!(
                "{{\"op\":\"upsert\",\"key\":\"{}\",\"record\":{record}}}",
                change["key"].as_str().unwrap()
            );
            hasher.update(&line);
            let record: Value = serde_json::from_str(record).unwrap();
            niks.push(record["nik"].as_str().unwrap().to_owned());
        }
        assert_eq!(batch["receipt"]["payloadSha256"], hasher.hex(), "{batch}");
    }
    assert_eq!(niks, (0..12).map(nik).collect::<Vec<_>>());
    let error = &lines[lines.len() - 1]["error"];
    assert_eq!(error["code"], "PERMISSION_DENIED", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("revoked"),
        "{error}"
    );
}

#[tokio::test]
async fn a_batch_verification_streams_one_answer_line_per_key_then_the_receipt() {
    let (f, b) = federation().await;
    let body = json!({
        "dataset": "prov.penduduk",
        "purpose": "bansos",
        "items": [
            {"key": nik(3), "verify": {"nama": "WARGA 3"}},
            {"key": nik(4), "verify": {"nama": "SOMEONE ELSE"}},
            {"key": "1507999999999999", "verify": {"nama": "NOBODY"}},
        ],
    });
    let answer = post(&f, &b, "dinsos", "/exchange/v1/verify-batch", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content_type, "application/x-ndjson");
    let text = answer.text();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[..3],
        [
            json!({"i": 0, "result": "matches", "fields": {"nama": true}}),
            json!({"i": 1, "result": "does_not_match", "fields": {"nama": false}}),
            json!({"i": 2, "result": "not_found", "fields": {}}),
        ]
    );
    // the answer lines hash to the receipt's payload hash
    let receipt = &lines[3]["receipt"];
    let answers: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        receipt["payloadSha256"],
        hex::encode(Sha256::digest(answers.as_bytes()))
    );
    // one entry, durable before the answers; no key or value in clear
    let entries = b
        .broker
        .audit()
        .exchange(receipt["exchangeId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let logged = String::from_utf8(entries[0].canonical.clone()).unwrap();
    for secret in [nik(3), nik(4), "WARGA 3".into(), "SOMEONE ELSE".into()] {
        assert!(!logged.contains(&secret), "{secret} is on the log in clear");
    }
}

#[tokio::test]
async fn a_lookup_takes_a_plain_key_and_values_to_verify() {
    let (f, b) = federation().await;
    let key = nik(3);
    let body = json!({
        "dataset": "prov.penduduk",
        "purpose": "bansos",
        "fields": ["nik", "nama"],
        "key": key,
        "verify": {"nama": "WARGA 3", "kecamatan": {"stringValue": "15.07.09"}},
    });
    // over HTTP/2 this time, as curl offers by default
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost:{}/exchange/v1/lookup", b.port));
    let answer = call_with(&f, &b, "dinsos", H2, request, body.to_string().into_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let out = answer.json();
    assert_eq!(out["found"], true);
    let record: Value = serde_json::from_str(out["record"].as_str().unwrap()).unwrap();
    assert_eq!(record, json!({"nik": key, "nama": "WARGA 3"}));
    assert_eq!(out["verified"], json!({"nama": true, "kecamatan": false}));
    let receipt = &out["receipt"];
    assert_eq!(receipt["rows"], "1");
    let entries = b
        .broker
        .audit()
        .exchange(receipt["exchangeId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "a lookup is one entry");
    for e in &entries {
        let text = String::from_utf8(e.canonical.clone()).unwrap();
        assert!(!text.contains(&key), "the key is on the log in clear");
        assert!(!text.contains("WARGA 3"), "a value to verify is on the log");
    }

    // nobody by that key
    let absent =
        json!({"dataset": "prov.penduduk", "purpose": "bansos", "key": "1507999999999999"});
    let out = post(&f, &b, "dinsos", "/exchange/v1/lookup", absent)
        .await
        .json();
    assert_eq!(out["found"], false);
    assert_eq!(out["receipt"]["rows"], "0");
}

#[tokio::test]
async fn a_denial_is_403_with_its_reasons_and_audit_entry() {
    let (f, b) = federation().await;
    let cases = [
        ("dinkes", query_body(), "no_agreement"),
        (
            "dinsos",
            json!({"dataset": "prov.penduduk", "purpose": "bansos", "fields": ["tgl_lahir"]}),
            "field_not_granted",
        ),
        (
            "dinsos",
            json!({"dataset": "prov.penduduk", "purpose": "kesehatan", "fields": ["nik"]}),
            "wrong_purpose",
        ),
    ];
    for (who, body, reason) in cases {
        let answer = call(&f, &b, who, "POST", "/exchange/v1/query", Some(body)).await;
        assert_eq!(answer.status, 403, "{reason}: {}", answer.text());
        assert_eq!(answer.content_type, "application/json");
        let error = &answer.json()["error"];
        assert_eq!(error["code"], "PERMISSION_DENIED");
        assert!(error["message"].as_str().unwrap().contains(reason));
        assert_eq!(error["reasons"][0]["reason"], reason);
        let index = error["auditIndex"].as_u64().expect("auditIndex");
        let entries = b
            .broker
            .audit()
            .exchange(error["exchangeId"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(entries.len(), 1, "{reason}");
        assert_eq!(entries[0].seq, index);
        assert_eq!(
            (entries[0].entry.decision, entries[0].entry.status),
            (Decision::Deny, ExchangeStatus::Denied)
        );
        assert_eq!(entries[0].entry.reasons[0].code.as_str(), reason);
    }
    // a lookup is refused the same way
    let lookup = json!({"dataset": "prov.penduduk", "purpose": "bansos", "key": nik(3)});
    let answer = post(&f, &b, "dinkes", "/exchange/v1/lookup", lookup).await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.json()["error"]["reasons"][0]["reason"],
        "no_agreement"
    );
}

#[tokio::test]
async fn an_unwritable_audit_log_is_503_and_nothing_is_served() {
    let (f, b) = federation().await;
    sqlx::query(
        "CREATE TRIGGER full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(b.broker.store().pool())
    .await
    .unwrap();
    let answer = post(&f, &b, "dinsos", "/exchange/v1/query", query_body()).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "UNAVAILABLE");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_json_error() {
    let (f, b) = federation().await;
    let raw = |body: &[u8]| {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("https://localhost:{}/exchange/v1/query", b.port))
            .header(http::header::HOST, "localhost");
        call_with(&f, &b, "dinsos", H1, request, body.to_vec())
    };
    let answer = raw(b"{\"dataset\": ").await;
    assert_eq!(answer.status, 400);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "INVALID_ARGUMENT");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{error}"
    );

    let mut big = b"{\"dataset\": \"".to_vec();
    big.resize(MAX_REQUEST_BYTES + 10, b'a');
    big.extend_from_slice(b"\"}");
    let answer = raw(&big).await;
    assert_eq!(answer.status, 413);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "RESOURCE_EXHAUSTED");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("max_request_bytes")
    );

    // the same body streamed without a length is cut off at the limit
    let io = TokioIo::new(connect(&f, b.port, "dinsos", H1).await);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = big
        .chunks(64 << 10)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let request = http::Request::post("/exchange/v1/query")
        .header(http::header::HOST, "localhost")
        .body(http_body_util::StreamBody::new(futures::stream::iter(
            chunks,
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(
        response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some()
    );
    assert_eq!(response.status(), 413);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "RESOURCE_EXHAUSTED");

    let cases = [
        (
            json!({"dataset": "prov.penduduk", "purpose": "bansos", "limit": "many"}),
            "QueryRequest",
        ),
        (
            json!({"dataset": "prov.penduduk", "purpose": "bansos", "colour": "red"}),
            "colour",
        ),
        (
            json!({"dataset": "prov.penduduk", "purpose": "bansos",
                   "filter": {"predicate": {"field": "nik", "op": "OPERATOR_LIKE", "value": "1"}}}),
            "OPERATOR_LIKE",
        ),
        (json!(["not", "an", "object"]), "QueryRequest"),
    ];
    for (body, named) in cases {
        let answer = post(&f, &b, "dinsos", "/exchange/v1/query", body).await;
        assert_eq!(answer.status, 400, "{named}: {}", answer.text());
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(named), "{named}: {message}");
    }

    // a request the service refuses as invalid is on the log, as over gRPC
    let answer = post(
        &f,
        &b,
        "dinsos",
        "/exchange/v1/query",
        json!({"dataset": "no dataset", "purpose": "bansos"}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "INVALID_ARGUMENT");
    let logged = b.broker.audit().entries(0, 100).await.unwrap();
    assert!(
        logged
            .iter()
            .any(|e| e.entry.status == ExchangeStatus::Invalid),
        "the invalid request is not on the log"
    );
}

#[tokio::test]
async fn identity_comes_from_the_certificate_not_the_request() {
    let (f, b) = federation().await;
    // no body field names the consumer
    let mut body = query_body();
    body["consumer"] = "dinsos".into();
    let answer = post(&f, &b, "dinkes", "/exchange/v1/query", body).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    // nor does a header: dinkes stays dinkes
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost:{}/exchange/v1/query", b.port))
        .header(http::header::HOST, "localhost")
        .header("x-agency", "dinsos")
        .header("x-consumer", "agency:dinsos");
    let answer = call_with(
        &f,
        &b,
        "dinkes",
        H1,
        request,
        query_body().to_string().into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    let error = &answer.json()["error"];
    let entry = &b
        .broker
        .audit()
        .exchange(error["exchangeId"].as_str().unwrap())
        .await
        .unwrap()[0];
    assert_eq!(entry.entry.caller, "agency:dinkes");
    assert_eq!(entry.entry.consumer.as_deref(), Some("dinkes"));
    // an agreement proposed in another agency's name is refused
    let propose = json!({"agreement": {
        "consumer": "dinsos", "dataset": "prov.penduduk", "purpose": "kesehatan",
        "fields": [{"field": "nik", "mode": "ACCESS_MODE_READ"}],
    }});
    let answer = post(&f, &b, "dinkes", "/agreements/v1/propose", propose).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn agreements_go_through_their_lifecycle_over_http() {
    let (f, b) = federation().await;
    let propose = json!({"agreement": {
        "dataset": "prov.penduduk",
        "purpose": "kesehatan",
        "fields": [{"field": "nik", "mode": "ACCESS_MODE_READ"}, {"field": "nama", "mode": "READ_NOT_A_MODE"}],
    }});
    let answer = post(&f, &b, "dinkes", "/agreements/v1/propose", propose).await;
    assert_eq!(answer.status, 400, "an unknown mode: {}", answer.text());

    let propose = json!({"agreement": {
        "dataset": "prov.penduduk",
        "purpose": "kesehatan",
        "fields": [{"field": "nik", "mode": "ACCESS_MODE_READ"}, {"field": "nama", "mode": 1}],
        "validFrom": "2020-01-01T00:00:00Z",
        "rowFilter": {"predicate": {"field": "kecamatan", "op": "OPERATOR_EQ", "value": "15.07.02"}},
    }});
    let answer = post(&f, &b, "dinkes", "/agreements/v1/propose", propose).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let proposed = answer.json();
    assert_eq!(proposed["status"], "AGREEMENT_STATUS_PROPOSED");
    assert_eq!(proposed["consumer"], "dinkes");
    assert_eq!(proposed["provider"], "prov");
    let id = proposed["id"].as_str().unwrap().to_owned();

    // only the provider approves
    let path = format!("/agreements/v1/{id}/approve");
    let answer = call(&f, &b, "dinkes", "POST", &path, None).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    let answer = call(&f, &b, "prov", "POST", &path, Some(json!({"id": "other"}))).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    let answer = call(&f, &b, "prov", "POST", &path, None).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["status"], "AGREEMENT_STATUS_APPROVED");

    let got = call(
        &f,
        &b,
        "dinkes",
        "GET",
        &format!("/agreements/v1/{id}"),
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["status"], "AGREEMENT_STATUS_APPROVED");
    let missing = call(&f, &b, "dinkes", "GET", "/agreements/v1/no-such", None).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["error"]["code"], "NOT_FOUND");
    let list = call(
        &f,
        &b,
        "dinkes",
        "GET",
        "/agreements/v1?consumer=dinkes&status=AGREEMENT_STATUS_APPROVED",
        None,
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let ids: Vec<&str> = list["agreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    for bad in ["colour=red", "status=AGREEMENT_STATUS_SIGNED"] {
        let bad = call(
            &f,
            &b,
            "dinkes",
            "GET",
            &format!("/agreements/v1?{bad}"),
            None,
        )
        .await;
        assert_eq!(bad.status, 400, "{}", bad.text());
        assert_eq!(bad.json()["error"]["code"], "INVALID_ARGUMENT");
    }

    let query = json!({"dataset": "prov.penduduk", "purpose": "kesehatan", "fields": ["nik"]});
    let answer = post(&f, &b, "dinkes", "/exchange/v1/query", query.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // 30 residents, two of every three in 15.07.02, and the receipt line
    assert_eq!(answer.text().lines().count(), 21);

    let answer = call(
        &f,
        &b,
        "dinkes",
        "POST",
        &format!("/agreements/v1/{id}/revoke"),
        Some(json!({"reason": "no longer needed"})),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["status"], "AGREEMENT_STATUS_REVOKED");
    let answer = post(&f, &b, "dinkes", "/exchange/v1/query", query).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["error"]["reasons"][0]["reason"], "revoked");
}

#[tokio::test]
async fn a_client_offering_only_http1_gets_an_answer() {
    let (f, b) = federation().await;
    // connect() asserts that `http/1.1` was negotiated
    let answer = call(&f, &b, "dinsos", "GET", "/registry/v1/datasets", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.json()["datasets"].is_array());
}

/// The committed document.
fn committed_document() -> (std::path::PathBuf, Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    (path, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_openapi_document_is_served_matches_docs_and_covers_every_route() {
    let (f, b) = federation().await;
    let answer = call(&f, &b, "dinsos", "GET", "/openapi.json", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let served = answer.json();
    let (path, committed) = committed_document();
    if std::env::var_os("JEMBATAN_UPDATE_OPENAPI").is_some() {
        let mut text = serde_json::to_string_pretty(&served).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    } else {
        assert!(
            served == committed,
            "docs/openapi.json differs from the served document; \
             rerun this test with JEMBATAN_UPDATE_OPENAPI=1 to rewrite it"
        );
    }

    // every schema named after a message has the message's JSON field names
    let schemas = served["components"]["schemas"].as_object().unwrap();
    let mut messages = 0;
    for (name, schema) in schemas {
        let Ok(m) = jembatan_proto::json::message_descriptor(name) else {
            continue;
        };
        messages += 1;
        let mut want: Vec<String> = m.fields().map(|f| f.json_name().to_owned()).collect();
        let mut have: Vec<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no properties"))
            .keys()
            .cloned()
            .collect();
        want.sort();
        have.sort();
        assert_eq!(have, want, "{name}");
    }
    assert!(messages >= 10, "{messages} message schemas");

    // every documented route is served: each answers JSON from its
    // handler, never the router's empty 404 or 405
    let paths = served["paths"].as_object().unwrap();
    for route in [
        "/exchange/v1/query",
        "/exchange/v1/lookup",
        "/exchange/v1/test-mapping",
        "/agreements/v1/propose",
        "/agreements/v1/{id}/approve",
        "/agreements/v1/{id}/revoke",
        "/agreements/v1/{id}",
        "/agreements/v1",
        "/openapi.json",
        "/registry/v1/datasets",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    for (route, methods) in paths {
        let concrete = route
            .replace("{id}", "no-such")
            .replace("{dataset}", "prov.penduduk")
            .replace("{version}", "1")
            .replace("{source}", "prov.penduduk@1")
            .replace("{target}", "dinsos.penduduk@1");
        assert!(!concrete.contains('{'), "{route}: unknown parameter");
        for method in methods.as_object().unwrap().keys() {
            let body = (method == "post").then(|| json!({}));
            let answer = call(&f, &b, "dinsos", &method.to_uppercase(), &concrete, body).await;
            assert!(
                answer.content_type.starts_with("application/")
                    && !answer.content_type.starts_with("application/grpc")
                    && !answer.body.is_empty(),
                "{method} {route}: {} {:?}",
                answer.status,
                answer.content_type
            );
        }
    }
}

/// The gRPC requests of [`both_doors_write_the_same_audit_entries`].
async fn through_grpc(f: &Federation, b: &BrokerHandle) {
    use jembatan_proto::v1 as pb;
    let mut client = b.exchange(f, "dinsos").await;
    let lookup = pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: vec!["nik".into(), "nama".into()],
        key: Some(jembatan_testkit::string(&nik(3))),
        verify: [("nama".to_owned(), jembatan_testkit::string("WARGA 3"))].into(),
        ..Default::default()
    };
    client.lookup(lookup).await.unwrap();
    let mut query = jembatan_testkit::query(&["nik", "nama"]);
    query.filter = Some(jembatan_testkit::eq("kecamatan", "15.07.01"));
    jembatan_testkit::run_query(&mut client, query)
        .await
        .end
        .unwrap();
    let mut denied = jembatan_testkit::query(&["nik"]);
    denied.purpose = "kesehatan".into();
    let refused = jembatan_testkit::run_query(&mut client, denied)
        .await
        .end
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

/// The same requests as JSON.
async fn through_http(f: &Federation, b: &BrokerHandle) {
    let lookup = json!({
        "dataset": "prov.penduduk",
        "purpose": "bansos",
        "fields": ["nik", "nama"],
        "key": nik(3),
        "verify": {"nama": "WARGA 3"},
    });
    let answer = call(f, b, "dinsos", "POST", "/exchange/v1/lookup", Some(lookup)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = call(
        f,
        b,
        "dinsos",
        "POST",
        "/exchange/v1/query",
        Some(query_body()),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let denied = json!({"dataset": "prov.penduduk", "purpose": "kesehatan", "fields": ["nik"]});
    let answer = call(f, b, "dinsos", "POST", "/exchange/v1/query", Some(denied)).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
}

/// An entry as JSON without what differs between any two exchanges: its
/// id and time, how long it took.
fn comparable(entry: &jembatan_core::AuditEntry) -> Value {
    let mut v = serde_json::to_value(entry).unwrap();
    let object = v.as_object_mut().unwrap();
    for varying in ["exchange_id", "time", "duration_ms", "trace_id"] {
        object.remove(varying);
    }
    v
}

/// One code path: the same lookup, query and denied query through gRPC
/// and through the HTTP/JSON door write the same audit entries, field for
/// field, apart from ids and times.
#[tokio::test]
async fn both_doors_write_the_same_audit_entries() {
    let (f, b) = federation().await;
    let audit = b.broker.audit();
    through_grpc(&f, &b).await;
    let grpc: Vec<Value> = audit
        .entries(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| comparable(&e.entry))
        .collect();
    through_http(&f, &b).await;
    let all = audit.entries(0, 100).await.unwrap();
    let http: Vec<Value> = all[grpc.len()..]
        .iter()
        .map(|e| comparable(&e.entry))
        .collect();
    // the query: a decision and an end; the lookup and the denial: one
    // entry each
    assert_eq!(grpc.len(), 4, "{grpc:#?}");
    assert_eq!(http, grpc);
}

/// A client whose certificate is not the federation's gets no answer and
/// leaves nothing on the log: the handshake is refused.
#[tokio::test]
async fn a_client_without_a_federation_certificate_gets_nothing() {
    let (f, b) = federation().await;
    let before = b.broker.store().audit_log_size().await.unwrap();
    // a certificate of another CA, for the same agency name
    let other = tempfile::tempdir().unwrap();
    let identity =
        jembatan_core::Identity::new(jembatan_core::Role::Agency, Some("dinsos".parse().unwrap()))
            .unwrap();
    let issued = jembatan_pki::dev_pki(other.path(), &[identity]).unwrap();
    // trusting the federation's CA, presenting the other one's certificate
    let foreign = jembatan_pki::TlsFiles {
        ca: f.files["dinsos"].ca.clone(),
        ..issued[0].1.clone()
    };
    let config = jembatan_pki::rustls_config(&foreign, &[H1]).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
    let refused = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        // TLS 1.3: the server's refusal arrives with the first read
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = query_body().to_string();
        let request = format!(
            "POST /exchange/v1/query HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    }
    .await;
    match refused {
        Err(_) => {}
        Ok(answer) => assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer)),
    }
    assert_eq!(
        b.broker.store().audit_log_size().await.unwrap(),
        before,
        "a refused handshake writes nothing to the log"
    );
}
