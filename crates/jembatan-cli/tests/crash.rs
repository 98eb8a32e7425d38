//! A broker killed in the middle of an exchange leaves a log that still
//! verifies and shows the exchange as started but never completed, until
//! the broker restarted closes it `abandoned`.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use support::{jembatan, listen_port};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, args: &[&str]) -> Killed {
    Killed(
        jembatan()
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A demo kept in `parent/demo` with `residents` residents.
fn kept_demo(parent: &Path, residents: u32) -> std::path::PathBuf {
    let dir = parent.join("demo");
    let out = jembatan()
        .args(["demo", "--residents", &residents.to_string(), "--keep"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Dinas Sosial's exchange client of the kept demo's broker at `port`.
async fn dinsos(dir: &Path, port: u16) -> ExchangeClient<tonic::transport::Channel> {
    ExchangeClient::new(support::channel(dir, "agency-dinsos", port).await)
}

#[tokio::test]
async fn broker_killed_mid_stream_leaves_a_verifiable_log_and_its_restart_closes_the_exchange_abandoned()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = kept_demo(tmp.path(), 30000);

    // fast leases: the restarted broker finds its predecessor gone at once
    let config = dir.join("broker.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("replica_heartbeat = \"200ms\"\nreplica_lease = \"1s\"\n{text}"),
    )
    .unwrap();

    let _adapter = spawn(&dir, &["adapter", "--config", "adapter-disdukcapil.toml"]);
    let mut broker = spawn(&dir, &["broker", "--config", "broker.toml"]);
    wait_for(listen_port(&dir.join("adapter-disdukcapil.toml"))).await;
    let port = listen_port(&dir.join("broker.toml"));
    wait_for(port).await;

    let mut client = dinsos(&dir, port).await;
    let mut stream = client
        .query(pb::QueryRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: "pemutakhiran data terpadu kesejahteraan sosial".into(),
            // every granted field: several MiB in all, more than the HTTP/2
            // windows and socket buffers between broker and client can hold
            fields: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // take one batch, then kill the broker while the rest is still coming
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.item,
        Some(pb::query_response::Item::Batch(_))
    ));
    broker.0.kill().unwrap();
    broker.0.wait().unwrap();
    // whatever was already buffered may still arrive, but never a receipt
    loop {
        match stream.message().await {
            Ok(Some(msg)) => assert!(
                matches!(msg.item, Some(pb::query_response::Item::Batch(_))),
                "a receipt arrived: the exchange completed before the kill"
            ),
            Ok(None) => panic!("the stream must break, not end cleanly"),
            Err(_) => break,
        }
    }

    verify(&dir);
    let entries = export(&dir);
    let last = &entries.last().unwrap()["entry"];
    assert_eq!(last["kind"], "decision");
    assert_eq!(last["status"], "started");
    assert_eq!(last["consumer"], "dinsos");
    let id = last["exchange_id"].as_str().unwrap().to_owned();
    let ends = |entries: &[serde_json::Value]| -> Vec<serde_json::Value> {
        entries
            .iter()
            .filter(|e| e["entry"]["exchange_id"] == id && e["entry"]["kind"] == "completion")
            .map(|e| e["entry"].clone())
            .collect()
    };
    assert!(
        ends(&entries).is_empty(),
        "the killed exchange shows as unfinished"
    );

    // restarted, the broker closes what its killed process left open
    let _restarted = spawn(&dir, &["broker", "--config", "broker.toml"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let end = loop {
        let found = ends(&export(&dir));
        if let Some(end) = found.first() {
            assert_eq!(found.len(), 1, "one end: {found:?}");
            break end.clone();
        }
        assert!(Instant::now() < deadline, "the exchange was never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(end["status"], "abandoned");
    assert_eq!(end["rows"], 0);
    assert_eq!(end["consumer"], "dinsos");
    assert!(
        end["error"].as_str().unwrap().contains("found gone"),
        "{end}"
    );
    verify(&dir);
}

/// `jembatan audit verify` passes on the kept demo's store.
fn verify(dir: &Path) {
    let out = jembatan()
        .args(["audit", "verify", "--store"])
        .arg(dir.join("broker.db"))
        .arg("--public-key")
        .arg(dir.join("checkpoint.key.pub"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every entry of the kept demo's log, as `audit export` writes them.
fn export(dir: &Path) -> Vec<serde_json::Value> {
    let out = jembatan()
        .args(["audit", "export", "--format", "jsonl", "--store"])
        .arg(dir.join("broker.db"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_lookup_whose_entry_never_becomes_durable_sends_nothing_and_crosscheck_names_its_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = kept_demo(tmp.path(), 2000);
    let _adapter = spawn(&dir, &["adapter", "--config", "adapter-disdukcapil.toml"]);
    let _broker = spawn(&dir, &["broker", "--config", "broker.toml"]);
    wait_for(listen_port(&dir.join("adapter-disdukcapil.toml"))).await;
    let port = listen_port(&dir.join("broker.toml"));
    wait_for(port).await;

    // the broker goes down between the adapter's answer and the lookup's
    // one entry: that entry never becomes durable
    let store = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("broker.db").display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER lost BEFORE INSERT ON audit_log WHEN NEW.kind = 'answered'
         BEGIN SELECT RAISE(ABORT, 'power cut'); END",
    )
    .execute(&store)
    .await
    .unwrap();
    let entries_before: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&store)
        .await
        .unwrap();
    let receipts = dir.join("receipts-disdukcapil.jsonl");
    let served_ids = || -> Vec<String> {
        std::fs::read_to_string(&receipts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["kind"] == "served")
            .filter_map(|l| l["exchange_id"].as_str().map(str::to_owned))
            .collect()
    };
    let served_before = served_ids();

    let status = dinsos(&dir, port)
        .await
        .lookup(pb::LookupRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: "pemutakhiran data terpadu kesejahteraan sosial".into(),
            fields: vec!["nik".into(), "nama_lengkap".into()],
            key: Some(pb::Scalar {
                kind: Some(pb::scalar::Kind::StringValue("1507010101900001".into())),
            }),
            ..Default::default()
        })
        .await
        .expect_err("no answer leaves without its entry");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("audit log"), "{status:?}");
    let entries_after: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&store)
        .await
        .unwrap();
    assert_eq!(entries_before, entries_after, "the lookup left an entry");

    // the adapter's receipt log shows the fetch; crosscheck names it
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let new: Vec<String> = served_ids()
            .into_iter()
            .filter(|id| !served_before.contains(id))
            .collect();
        if let [id] = new.as_slice() {
            break id.clone();
        }
        assert!(new.is_empty(), "more than one new fetch: {new:?}");
        assert!(
            Instant::now() < deadline,
            "the adapter did not log the fetch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = jembatan()
        .args(["audit", "crosscheck", "--store"])
        .arg(dir.join("broker.db"))
        .arg("--receipts")
        .arg(&receipts)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "exchange {id}: the adapter served it, but the broker's log has no entry of it"
        )),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
