//! The access log: one line per RPC on the broker and on the adapter,
//! naming the caller, the method, the status code, the duration and —
//! on the broker — the audit entry the response names.

use std::io::Write;
use std::sync::{Arc, Mutex};

use jembatan_proto::v1 as pb;
use jembatan_testkit::{Federation, agreement_toml, query};

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access-log lines written so far, as JSON `fields`.
fn access_lines(buffer: &Mutex<Vec<u8>>) -> Vec<serde_json::Value> {
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["target"] == "jembatan::access")
        .map(|l| l["fields"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_has_an_access_line_naming_its_audit_entry() {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = buffer.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("jembatan::access=info")
        .with_writer(move || Sink(sink.clone()))
        .init();

    let f = Federation::start(10).await;
    let grant = r#"["nik", "nama"]"#;
    let config = f.broker_config("", &agreement_toml("a-1", "dinsos", grant, "approved", ""));
    let b = f.broker(&config).await;
    let mut client = b.exchange(&f, "dinsos").await;

    let mut stream = client.query(query(&["nik"])).await.unwrap().into_inner();
    let mut receipt = None;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(pb::query_response::Item::Receipt(r)) = message.item {
            receipt = Some(r);
        }
    }
    let receipt = receipt.unwrap();
    let denied = client.query(query(&["status"])).await;
    let denied = match denied {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    let denial = jembatan_testkit::denial_details(&denied);

    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = access_lines(&buffer);
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let find = |rpc: &str, code: i64| {
        lines
            .iter()
            .find(|l| l["rpc"] == rpc && l["code"] == code)
            .unwrap_or_else(|| panic!("no {rpc} {code} in {lines:#?}"))
            .clone()
    };
    let allowed = find("jembatan.v1.Exchange/Query", 0);
    assert_eq!(allowed["caller"], "agency:dinsos");
    assert_eq!(allowed["status"], "OK");
    assert_eq!(
        allowed["audit_seq"], receipt.entry_seq,
        "the completion entry"
    );
    assert!(allowed["duration_ms"].as_f64().unwrap() >= 0.0);
    let refused = find("jembatan.v1.Exchange/Query", 7);
    assert_eq!(refused["status"], "PERMISSION_DENIED");
    assert_eq!(refused["audit_seq"], denial.entry_seq, "the denial's entry");
    let fetch = find("jembatan.v1.Adapter/Fetch", 0);
    assert_eq!(fetch["caller"], "broker");
    assert!(fetch.get("audit_seq").is_none());
    // the lines name no field, dataset or purpose of the request
    for line in &lines {
        let text = line.to_string();
        for word in ["penduduk", "bansos", "nik"] {
            assert!(!text.contains(word), "{word} in {text}");
        }
    }
}
