//! A subscription through the real binaries: the adapter's change source
//! on a SQLite table, a broker on a SQLite store, a consumer following
//! the district's residents; then `audit crosscheck` finds every change
//! poll the adapter answered on the broker's log, and names one the
//! broker never logged; and `audit verify` holds.

use std::time::Duration;

use jembatan_e2e::{Cluster, Spec, agreement, jembatan, nik};
use jembatan_proto::v1 as pb;

const KEC: &str = "15.07.01";

const DATASET: &str = r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "kecamatan"]
[datasets.changes]
column = "diubah"
lag = "0s"
poll_interval = "100ms"
"#;

fn at(n: u64) -> String {
    format!(
        "2021-01-01T{:02}:{:02}:{:02}",
        n / 3600,
        (n / 60) % 60,
        n % 60
    )
}

/// Reads the stream until `want` changes were delivered; returns them.
async fn changes(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
    want: usize,
) -> Vec<pb::ChangeRecord> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < want {
            let message = stream.message().await.unwrap().expect("the stream goes on");
            if let Some(pb::subscribe_response::Item::Batch(b)) = message.item {
                got.extend(b.changes);
            }
        }
    })
    .await
    .expect("the changes arrive");
    got
}

#[tokio::test]
async fn a_subscription_through_the_binaries_crosschecks_with_the_adapters_receipt_log() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("prov.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, kecamatan TEXT NOT NULL, diubah DATETIME)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for i in 0..30 {
        let kec = if i % 3 == 0 { KEC } else { "15.07.02" };
        sqlx::query("INSERT INTO penduduk VALUES (?, ?, ?, ?)")
            .bind(nik(i))
            .bind(format!("WARGA {i}"))
            .bind(kec)
            .bind(at(i as u64))
            .execute(&pool)
            .await
            .unwrap();
    }
    let mut spec = Spec::new(
        0,
        1,
        "",
        &agreement(
            "sub-1",
            "dinsos",
            &format!(
                "subscribe = true\nrow_filter = {{ field = \"kecamatan\", op = \"eq\", value = \"{KEC}\" }}"
            ),
        ),
    );
    spec.database = Some(format!("sqlite://{}", db.display()));
    spec.adapter_datasets = DATASET.to_owned();
    let mut cluster = Cluster::start_spec("broker.db", &spec).await;
    let mut dinsos = cluster.exchange(0, "dinsos").await;
    let mut stream = dinsos
        .subscribe(pb::SubscribeRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            batch_size: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // the district's ten residents
    let first = changes(&mut stream, 10).await;
    assert!(first.iter().all(|c| c.op == pb::ChangeOp::Upsert as i32));
    // one moves away: a delete carrying the key, which is granted
    sqlx::query("UPDATE penduduk SET kecamatan = '15.07.03', diubah = ? WHERE nik = ?")
        .bind(at(100))
        .bind(nik(3))
        .execute(&pool)
        .await
        .unwrap();
    let moved = changes(&mut stream, 1).await;
    assert_eq!(moved[0].op, pb::ChangeOp::Delete as i32);
    assert_eq!(moved[0].record, format!("{{\"nik\":\"{}\"}}", nik(3)));
    drop(stream);
    // the stream's end reaches the log, and receipts reach the adapter
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop();

    let receipts = cluster.dir.join("receipts-0.jsonl");
    let crosscheck = || {
        jembatan(&cluster.dir)
            .args(["audit", "crosscheck", "--store", "broker.db", "--receipts"])
            .arg(&receipts)
            .output()
            .unwrap()
    };
    let out = crosscheck();
    let words = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{words}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(words.contains("all agree"), "{words}");
    let polls: u64 = words
        .split(" change polls")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{words}"));
    assert!(polls >= 4, "{words}");

    // a poll the adapter answered that the broker never logged is named
    let log = std::fs::read_to_string(&receipts).unwrap();
    let poll = log
        .lines()
        .find(|l| l.contains("\"kind\":\"changes\""))
        .unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(poll).unwrap();
    forged["rows"] = 3.into();
    forged["payload_sha256"] = "00".repeat(32).into();
    // before the stream's last two polls, which the broker may have read
    // and not delivered when the stream ended
    let mut lines: Vec<String> = log.lines().map(str::to_owned).collect();
    let at = lines.iter().position(|l| l == poll).unwrap() + 1;
    lines.insert(at, forged.to_string());
    std::fs::write(&receipts, lines.join("\n") + "\n").unwrap();
    let out = crosscheck();
    let words = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{words}");
    assert!(
        words.contains("that no delivery entry on the broker's log accounts for"),
        "{words}"
    );

    let (code, words) = cluster.verify();
    assert_eq!(code, Some(0), "{words}");
    // no resident's key in clear on the log
    let exported = serde_json::to_string(&cluster.export()).unwrap();
    assert!(!exported.contains(&nik(3)));
}
