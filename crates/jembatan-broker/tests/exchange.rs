//! End-to-end exchanges in process on 127.0.0.1:0: a provider's SQLite
//! database behind a real adapter, the broker, and consumers, all with
//! certificates from a development CA.

use std::path::{Path, PathBuf};

use jembatan_adapter::{AdapterConfig, LogEntry, read_receipt_log};
use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Decision, EntryKind, ExchangeStatus, Identity, Role};
use jembatan_pki::TlsFiles;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_proto::{DENIAL_METADATA_KEY, RECEIPT_METADATA_KEY};
use jembatan_testkit::{Pki, Stop, serve};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const ROWS: usize = 60;

struct Harness {
    dir: PathBuf,
    broker: Broker,
    broker_port: u16,
    adapter_port: u16,
    files: Pki,
    receipt_log: PathBuf,
    _stop: Stop,
    _tmp: tempfile::TempDir,
}

fn ident(role: Role, agency: Option<&str>) -> Identity {
    Identity::new(role, agency.map(|a| a.parse().unwrap())).unwrap()
}

async fn make_db(path: &Path) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, agama TEXT,
         kecamatan TEXT NOT NULL, status TEXT NOT NULL, ibu TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for i in 0..ROWS {
        let kec = if i % 3 == 0 { "15.07.01" } else { "15.07.02" };
        let status = if i % 10 == 9 { "MENINGGAL" } else { "HIDUP" };
        sqlx::query("INSERT INTO penduduk VALUES (?, ?, 'ISLAM', ?, ?, 'SITI')")
            .bind(format!("15070{i:011}"))
            .bind(format!("WARGA {i}"))
            .bind(kec)
            .bind(status)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

/// The provider's schema, two consumer schemas and their mappings,
/// registered at start.
const REGISTRY_TOML: &str = r#"
[registry]
schemas = [
  { dataset = "prov.penduduk", file = "schemas/prov.json" },
  { dataset = "dinsos.orang", file = "schemas/orang.json" },
  { dataset = "dinsos.iman", file = "schemas/iman.json" },
]
mappings = ["schemas/orang.toml", "schemas/iman.toml"]
"#;

fn write_registry_files(dir: &Path) {
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let files = [
        (
            "prov.json",
            r#"{"type": "object", "properties": {
                "nik": {"type": "string", "pattern": "^[0-9]{16}$"},
                "nama": {"type": "string"}, "agama": {"type": "string"},
                "kecamatan": {"type": "string"},
                "status": {"enum": ["HIDUP", "MENINGGAL", "PINDAH"]}},
              "required": ["nik", "nama", "kecamatan", "status"],
              "additionalProperties": false}"#,
        ),
        (
            "orang.json",
            r#"{"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "district": {"type": "string"}, "masked": {"type": "string"},
                "alive": {"type": "boolean"}},
              "required": ["id", "name", "district"],
              "additionalProperties": false}"#,
        ),
        (
            "iman.json",
            r#"{"type": "object", "properties": {
                "id": {"type": "string"}, "religion": {"type": "string"}},
              "required": ["id"], "additionalProperties": false}"#,
        ),
        (
            "orang.toml",
            r#"
version = 1
source = "prov.penduduk@1"
target = "dinsos.orang@1"
[[rule]]
target = "id"
from = "nik"
[[rule]]
target = "name"
from = "nama"
[[rule]]
target = "district"
from = "kecamatan"
[[rule]]
target = "masked"
from = "nama"
ops = [{ mask = { keep_last = 2 } }]
[[rule]]
target = "alive"
when = { field = "status", op = "eq", value = "HIDUP" }
then = { const = true }
else = { const = false }
"#,
        ),
        (
            "iman.toml",
            r#"
version = 1
source = "prov.penduduk@1"
target = "dinsos.iman@1"
[[rule]]
target = "id"
from = "nik"
[[rule]]
target = "religion"
from = "agama"
"#,
        ),
    ];
    for (name, text) in files {
        std::fs::write(schemas.join(name), text).unwrap();
    }
}

async fn harness() -> Harness {
    harness_with_store("broker.db").await
}

async fn harness_with_store(store: &str) -> Harness {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    make_db(&dir.join("prov.db")).await;
    let ids = [
        ("broker", ident(Role::Broker, None)),
        ("adapter", ident(Role::Adapter, Some("prov"))),
        ("dinsos", ident(Role::Agency, Some("dinsos"))),
        ("dinkes", ident(Role::Agency, Some("dinkes"))),
        ("bpn", ident(Role::Agency, Some("bpn"))),
        ("lpse", ident(Role::Agency, Some("lpse"))),
        ("kominfo", ident(Role::Agency, Some("kominfo"))),
        ("auditor", ident(Role::Auditor, None)),
        ("integrator-dinsos", ident(Role::Integrator, Some("dinsos"))),
        ("integrator-prov", ident(Role::Integrator, Some("prov"))),
        ("operator", ident(Role::Operator, None)),
    ];
    let files = Pki::issue(&dir.join("certs"), &ids).unwrap();
    let stop = Stop::new();
    let (adapter_listener, adapter_port) = serve::loopback().await.unwrap();
    let a = &files["adapter"];
    let adapter_toml = format!(
        r#"
version = 1
agency = "prov"
database = "sqlite://{db}"
listen = "127.0.0.1:{adapter_port}"
receipt_log = "receipts.jsonl"
# small batches: every exchange spans several, so the broker admits
# batches concurrently and must still deliver them in order
batch_size = 4
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "agama", "kecamatan", "status"]
"#,
        db = dir.join("prov.db").display(),
        ca = a.ca.display(),
        cert = a.cert.display(),
        key = a.key.display()
    );
    let config = AdapterConfig::from_toml(&adapter_toml, &dir).unwrap();
    let receipt_log = config.receipt_log.clone();
    serve::adapter(&config, adapter_listener, stop.signal())
        .await
        .unwrap();

    let b = &files["broker"];
    let agreement = |id: &str, consumer: &str, status: &str, from: &str, until: &str| {
        format!(
            r#"
[[agreements]]
id = "{id}"
provider = "prov"
consumer = "{consumer}"
dataset = "prov.penduduk"
fields = ["nik", "nama", "kecamatan", "status"]
purpose = "bansos"
valid_from = "{from}"
valid_until = "{until}"
row_filter = {{ field = "status", op = "eq", value = "HIDUP" }}
status = "{status}"
"#
        )
    };
    let broker_toml = format!(
        r#"
version = 1
listen = "127.0.0.1:0"
store = "{store}"
audit_key = "audit.key"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[[agencies]]
id = "prov"
name = "Provider"
adapter = "https://127.0.0.1:{adapter_port}"
[[agencies]]
id = "ghost"
name = "Provider without adapter"
[[agencies]]
id = "dinsos"
name = "Dinas Sosial"
[[agencies]]
id = "dinkes"
name = "Dinas Kesehatan"
[[agencies]]
id = "bpn"
name = "Badan Pertanahan"
[[agencies]]
id = "lpse"
name = "Layanan Pengadaan"
[[agencies]]
id = "kominfo"
name = "Dinas Kominfo"
[[datasets]]
id = "prov.penduduk"
key = "nik"
[[datasets]]
id = "ghost.data"
{a1}{a2}{a3}{a4}{a5}
[[agreements]]
id = "ghost-1"
provider = "ghost"
consumer = "dinsos"
dataset = "ghost.data"
fields = ["x"]
purpose = "bansos"
valid_from = "2020-01-01"
status = "approved"
"#,
        ca = b.ca.display(),
        cert = b.cert.display(),
        key = b.key.display(),
        a1 = agreement("ok-1", "dinsos", "approved", "2020-01-01", "2099-01-01"),
        a2 = agreement(
            "expired-1",
            "dinkes",
            "approved",
            "2020-01-01",
            "2021-01-01"
        ),
        a3 = agreement("revoked-1", "bpn", "revoked", "2020-01-01", "2099-01-01"),
        a4 = agreement("proposed-1", "lpse", "proposed", "2020-01-01", "2099-01-01"),
        a5 = agreement(
            "future-1",
            "kominfo",
            "approved",
            "2098-01-01",
            "2099-01-01"
        ),
    );
    write_registry_files(&dir);
    let broker_toml = format!("{broker_toml}{REGISTRY_TOML}");
    let config = BrokerConfig::from_toml(&broker_toml, &dir).unwrap();
    let (listener, _) = serve::loopback().await.unwrap();
    let served = serve::broker(&config, listener, stop.signal())
        .await
        .unwrap();
    Harness {
        dir,
        broker: served.broker,
        broker_port: served.port,
        adapter_port,
        files,
        receipt_log,
        _stop: stop,
        _tmp: tmp,
    }
}

async fn channel(port: u16, files: &TlsFiles) -> Result<Channel, serve::ServeError> {
    serve::channel(port, files, Default::default()).await
}

impl Harness {
    async fn consumer(&self, who: &str) -> ExchangeClient<Channel> {
        ExchangeClient::new(channel(self.broker_port, &self.files[who]).await.unwrap())
    }

    /// The served fetches once the adapter has logged at least `n` (it
    /// appends its line as the fetch ends, which the broker does not wait
    /// for); what is there after 10 s otherwise.
    async fn served_at_least(&self, n: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let served = self.served();
            if served >= n || std::time::Instant::now() > deadline {
                return served;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn served(&self) -> usize {
        if !self.receipt_log.exists() {
            return 0;
        }
        read_receipt_log(&self.receipt_log)
            .unwrap()
            .iter()
            .filter(|e| matches!(e, LogEntry::Served(_)))
            .count()
    }
}

fn query(fields: &[&str], filter: Option<pb::Filter>) -> pb::QueryRequest {
    pb::QueryRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: fields.iter().map(|s| s.to_string()).collect(),
        filter,
        ..Default::default()
    }
}

fn eq(field: &str, value: &str) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: pb::Operator::Eq as i32,
            value: Some(pb::Scalar {
                kind: Some(pb::scalar::Kind::StringValue(value.into())),
            }),
            values: vec![],
        })),
    }
}

struct Outcome {
    records: Vec<serde_json::Map<String, serde_json::Value>>,
    raw: Vec<String>,
    receipt: Option<pb::Receipt>,
    trailer_receipt: Option<pb::Receipt>,
}

async fn run_query(
    client: &mut ExchangeClient<Channel>,
    req: pb::QueryRequest,
) -> Result<Outcome, tonic::Status> {
    let mut stream = client.query(req).await?.into_inner();
    let mut out = Outcome {
        records: vec![],
        raw: vec![],
        receipt: None,
        trailer_receipt: None,
    };
    while let Some(msg) = stream.message().await? {
        match msg.item.unwrap() {
            pb::query_response::Item::Batch(b) => {
                for r in b.records {
                    out.records.push(serde_json::from_str(&r).unwrap());
                    out.raw.push(r);
                }
            }
            pb::query_response::Item::Receipt(r) => out.receipt = Some(r),
        }
    }
    let trailers = stream.trailers().await?.unwrap_or_default();
    out.trailer_receipt = trailers
        .get_bin(RECEIPT_METADATA_KEY)
        .map(|v| pb::Receipt::decode(v.to_bytes().unwrap()).unwrap());
    Ok(out)
}

/// The log's exchange entries, leaving out agreement lifecycle steps
/// (the harness's expired agreement is recorded as expired at start).
async fn exchange_entries(broker: &Broker, n: u64) -> Vec<jembatan_store::StoredEntry> {
    broker
        .audit()
        .entries(0, n + 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| !matches!(e.entry.kind, EntryKind::Agreement | EntryKind::Registry))
        .collect()
}

/// The registry entries on the log from `from` on.
async fn registry_entries(broker: &Broker, from: u64) -> Vec<jembatan_core::AuditEntry> {
    broker
        .audit()
        .entries(from, 1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.kind == EntryKind::Registry)
        .map(|e| e.entry)
        .collect()
}

fn denial(status: &tonic::Status) -> pb::DenialDetails {
    let bytes = status
        .metadata()
        .get_bin(DENIAL_METADATA_KEY)
        .expect("denial trailer")
        .to_bytes()
        .unwrap();
    pb::DenialDetails::decode(bytes).unwrap()
}

#[tokio::test]
async fn allowed_query_streams_granted_fields_under_the_row_filter_with_a_receipt() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    let out = run_query(
        &mut c,
        query(
            &["nik", "nama", "status"],
            Some(eq("kecamatan", "15.07.01")),
        ),
    )
    .await
    .unwrap();
    // kecamatan 15.07.01 is every third row; the agreement's row filter drops MENINGGAL
    let want = (0..ROWS).filter(|i| i % 3 == 0 && i % 10 != 9).count();
    assert_eq!(out.records.len(), want);
    for r in &out.records {
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        for k in ["nik", "nama", "status"] {
            assert!(r.contains_key(k));
        }
        assert_eq!(r["status"], "HIDUP");
    }
    let receipt = out.receipt.expect("receipt message");
    assert_eq!(out.trailer_receipt.as_ref(), Some(&receipt));
    assert_eq!(receipt.rows, want as u64);
    let mut hasher = Sha256::new();
    for r in &out.raw {
        hasher.update(r.as_bytes());
        hasher.update(b"\n");
    }
    assert_eq!(receipt.payload_sha256, hex::encode(hasher.finalize()));

    // the log holds the allow decision, then the completion
    let entries = h
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    let (d, c) = (&entries[0], &entries[1]);
    assert_eq!(
        (d.entry.kind, d.entry.decision, d.entry.status),
        (
            EntryKind::Decision,
            Decision::Allow,
            ExchangeStatus::Started
        )
    );
    assert_eq!(
        (c.entry.kind, c.entry.status),
        (EntryKind::Completion, ExchangeStatus::Ok)
    );
    assert_eq!(d.seq, receipt.decision_seq);
    assert_eq!(c.seq, receipt.entry_seq);
    assert!(d.seq < c.seq);
    assert_eq!(c.entry.rows, want as u64);
    assert_eq!(
        c.entry.payload_sha256.as_deref(),
        Some(receipt.payload_sha256.as_str())
    );
    assert_eq!(c.entry_sha256, receipt.entry_sha256);
    assert_eq!(
        receipt.leaf_hash,
        hex::encode(jembatan_tlog::merkle::leaf_hash(&c.canonical))
    );
    assert_eq!(d.entry.caller, "agency:dinsos");
    assert_eq!(d.entry.agreement_id.as_deref(), Some("ok-1"));
    assert!(d.entry.agreement_terms_sha256.is_some());
    assert_eq!(d.entry.fields, vec!["nik", "nama", "status"]);
    assert!(d.entry.filter.is_some());
    assert_eq!(h.served_at_least(1).await, 1);
}

#[tokio::test]
async fn default_fields_are_the_granted_ones() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    let out = run_query(&mut c, query(&[], None)).await.unwrap();
    assert_eq!(out.records.len(), (0..ROWS).filter(|i| i % 10 != 9).count());
    let keys: Vec<&String> = out.records[0].keys().collect();
    assert_eq!(
        keys.len(),
        4,
        "agama is whitelisted at the adapter but not granted: {keys:?}"
    );
    assert!(!out.records[0].contains_key("agama"));
}

#[tokio::test]
async fn every_denial_reason_is_refused_explained_and_audited() {
    let h = harness().await;
    let cases: Vec<(&str, &str, pb::QueryRequest, &str)> = vec![
        (
            "no agreement for dataset",
            "dinsos",
            pb::QueryRequest {
                dataset: "ghost.nothing".into(),
                ..query(&["nik"], None)
            },
            "unknown_dataset",
        ),
        (
            "wrong purpose",
            "dinsos",
            pb::QueryRequest {
                purpose: "kampanye".into(),
                ..query(&["nik"], None)
            },
            "wrong_purpose",
        ),
        (
            "field not granted",
            "dinsos",
            query(&["nik", "agama"], None),
            "field_not_granted",
        ),
        (
            "filter on a field not granted",
            "dinsos",
            query(&["nik"], Some(eq("agama", "ISLAM"))),
            "filter_field_not_granted",
        ),
        ("expired", "dinkes", query(&["nik"], None), "expired"),
        ("revoked", "bpn", query(&["nik"], None), "revoked"),
        (
            "not approved",
            "lpse",
            query(&["nik"], None),
            "not_approved",
        ),
        (
            "not yet valid",
            "kominfo",
            query(&["nik"], None),
            "not_yet_valid",
        ),
        (
            "auditor is no consumer",
            "auditor",
            query(&["nik"], None),
            "role_not_allowed",
        ),
    ];
    for (name, who, req, code) in cases {
        let mut c = h.consumer(who).await;
        let status = run_query(&mut c, req)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: allowed"));
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status:?}");
        assert!(
            status.message().contains(code),
            "{name}: {}",
            status.message()
        );
        let details = denial(&status);
        assert_eq!(details.reasons[0].reason, code, "{name}");
        assert!(!details.reasons[0].message.is_empty());
        let entries = h
            .broker
            .audit()
            .exchange(&details.exchange_id)
            .await
            .unwrap();
        assert_eq!(entries.len(), 1, "{name}");
        let e = &entries[0];
        assert_eq!(e.seq, details.entry_seq);
        assert_eq!(
            (e.entry.decision, e.entry.status),
            (Decision::Deny, ExchangeStatus::Denied),
            "{name}"
        );
        assert_eq!(e.entry.reasons[0].code.as_str(), code, "{name}");
    }
    // a denial never reaches the provider
    assert_eq!(h.served(), 0);
    // no agreement at all: dinkes has none for ghost.data
    let mut c = h.consumer("dinkes").await;
    let status = run_query(
        &mut c,
        pb::QueryRequest {
            dataset: "ghost.data".into(),
            ..query(&["x"], None)
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(denial(&status).reasons[0].reason, "no_agreement");
}

#[tokio::test]
async fn identity_comes_from_the_certificate() {
    let h = harness().await;
    // the same request succeeds for dinsos and is refused for dinkes: nothing in it names the consumer
    let mut ok = h.consumer("dinsos").await;
    assert!(run_query(&mut ok, query(&["nik"], None)).await.is_ok());
    let mut other = h.consumer("dinkes").await;
    let status = run_query(&mut other, query(&["nik"], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied);
    let e = &h
        .broker
        .audit()
        .exchange(&denial(&status).exchange_id)
        .await
        .unwrap()[0];
    assert_eq!(e.entry.caller, "agency:dinkes");
    assert_eq!(e.entry.consumer.as_deref(), Some("dinkes"));
}

#[tokio::test]
async fn certificates_from_another_ca_are_rejected() {
    let h = harness().await;
    let other = tempfile::tempdir().unwrap();
    let issued =
        jembatan_pki::dev_pki(other.path(), &[ident(Role::Agency, Some("dinsos"))]).unwrap();
    let mut foreign = issued[0].1.clone();
    // trust the real CA, present a certificate it never issued
    foreign.ca = h.files["dinsos"].ca.clone();
    let result = match channel(h.broker_port, &foreign).await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => run_query(&mut ExchangeClient::new(ch), query(&["nik"], None))
            .await
            .map(|_| ())
            .map_err(|s| s.to_string()),
    };
    assert!(result.is_err(), "a foreign certificate was accepted");
    assert_eq!(h.served(), 0);
}

#[tokio::test]
async fn adapter_serves_only_the_broker_and_only_its_whitelist() {
    let h = harness().await;
    let fetch = |columns: &[&str]| pb::FetchRequest {
        exchange_id: "x".into(),
        dataset: "prov.penduduk".into(),
        columns: columns.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    // an agency going around the broker is refused
    let mut agency = AdapterClient::new(channel(h.adapter_port, &h.files["dinsos"]).await.unwrap());
    let status = agency.fetch(fetch(&["nik"])).await.err().unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // even the broker cannot get a column off the whitelist
    let mut broker = AdapterClient::new(channel(h.adapter_port, &h.files["broker"]).await.unwrap());
    let status = broker.fetch(fetch(&["nik", "ibu"])).await.err().unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("ibu"), "{}", status.message());
    let status = broker
        .fetch(pb::FetchRequest {
            dataset: "prov.rahasia".into(),
            ..fetch(&["nik"])
        })
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn every_receipt_reaches_the_adapters_log() {
    // concurrent exchanges: their receipts go back to the adapter in
    // batches, and each lands in its log exactly once
    let h = harness().await;
    let lookups = (0..24).map(|i| {
        let h = &h;
        async move {
            let mut c = h.consumer("dinsos").await;
            c.lookup(pb::LookupRequest {
                dataset: "prov.penduduk".into(),
                purpose: "bansos".into(),
                fields: vec!["nik".into()],
                key: Some(pb::Scalar {
                    kind: Some(pb::scalar::Kind::StringValue(format!("15070{i:011}"))),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap()
        }
    });
    let mut want: Vec<(String, u64, String)> = futures::future::join_all(lookups)
        .await
        .into_iter()
        .map(|r| (r.exchange_id, r.entry_seq, r.payload_sha256))
        .collect();
    want.sort();
    let logged = || -> Vec<(String, u64, String)> {
        let mut got: Vec<_> = read_receipt_log(&h.receipt_log)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Receipt(r) => Some((
                    r.receipt.exchange_id,
                    r.receipt.entry_seq,
                    r.receipt.payload_sha256,
                )),
                _ => None,
            })
            .collect();
        got.sort();
        got
    };
    for _ in 0..100 {
        if logged().len() >= want.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(logged(), want);
}

#[tokio::test]
async fn lookup_finds_one_record_and_logs_only_a_keyed_hash_of_the_key() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    let nik = format!("15070{:011}", 3);
    let resp = c
        .lookup(pb::LookupRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            fields: vec!["nik".into(), "nama".into()],
            key: Some(pb::Scalar {
                kind: Some(pb::scalar::Kind::StringValue(nik.clone())),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(resp.metadata().get_bin(RECEIPT_METADATA_KEY).is_some());
    let resp = resp.into_inner();
    assert!(resp.found);
    let rec: serde_json::Value = serde_json::from_str(&resp.record).unwrap();
    assert_eq!(rec, serde_json::json!({"nik": nik, "nama": "WARGA 3"}));
    let receipt = resp.receipt.unwrap();
    assert_eq!(receipt.rows, 1);
    let entries = h
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    // one entry: the decision and the answer, written before it left
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.kind, EntryKind::Answered);
    assert_eq!(entries[0].seq, receipt.entry_seq);
    assert_eq!(receipt.decision_seq, receipt.entry_seq);
    assert_eq!(entries[0].entry.rows, 1);
    for e in &entries {
        let text = String::from_utf8(e.canonical.clone()).unwrap();
        assert!(
            !text.contains(&nik),
            "the NIK is on the log in clear: {text}"
        );
        assert_eq!(e.entry.subject_hash.as_ref().map(String::len), Some(64));
    }
    // a deceased resident is outside the agreement's row filter: not found
    let dead = format!("15070{:011}", 9);
    let resp = c
        .lookup(pb::LookupRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            key: Some(pb::Scalar {
                kind: Some(pb::scalar::Kind::StringValue(dead)),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.found);
    assert_eq!(resp.receipt.unwrap().rows, 0);
}

fn verify_item(key: &str, field: &str, value: &str) -> pb::VerifyItem {
    let scalar = |v: &str| pb::Scalar {
        kind: Some(pb::scalar::Kind::StringValue(v.to_owned())),
    };
    pb::VerifyItem {
        key: Some(scalar(key)),
        verify: [(field.to_owned(), scalar(value))].into_iter().collect(),
    }
}

#[tokio::test]
async fn a_batch_verification_answers_every_key_in_order_in_one_entry() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    let nik = |i: u32| format!("15070{i:011}");
    let items = vec![
        verify_item(&nik(1), "nama", "WARGA 1"),
        verify_item(&nik(2), "nama", "SOMEONE ELSE"),
        // outside the agreement's row filter (deceased): not found
        verify_item(&nik(9), "nama", "WARGA 9"),
        verify_item("1507999999999999", "nama", "NOBODY"),
        verify_item(&nik(1), "nama", "WARGA 1"),
    ];
    let request = pb::VerifyBatchRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        items: items.clone(),
    };
    let mut stream = c.verify_batch(request).await.unwrap().into_inner();
    let mut answers = Vec::new();
    let mut receipt = None;
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.item {
            Some(pb::query_response::Item::Batch(b)) => answers.extend(b.records),
            Some(pb::query_response::Item::Receipt(r)) => receipt = Some(r),
            None => {}
        }
    }
    let parsed: Vec<serde_json::Value> = answers
        .iter()
        .map(|a| serde_json::from_str(a).unwrap())
        .collect();
    use serde_json::json;
    assert_eq!(
        parsed,
        [
            json!({"i": 0, "result": "matches", "fields": {"nama": true}}),
            json!({"i": 1, "result": "does_not_match", "fields": {"nama": false}}),
            json!({"i": 2, "result": "not_found", "fields": {}}),
            json!({"i": 3, "result": "not_found", "fields": {}}),
            json!({"i": 4, "result": "matches", "fields": {"nama": true}}),
        ]
    );
    let receipt = receipt.expect("a receipt");
    assert_eq!(receipt.rows, 5);
    let mut hasher = Sha256::new();
    for a in &answers {
        hasher.update(a.as_bytes());
        hasher.update(b"\n");
    }
    assert_eq!(receipt.payload_sha256, hex::encode(hasher.finalize()));
    // one fetch for every key; one entry for the whole call
    assert_eq!(h.served_at_least(1).await, 1);
    let entries = h
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.seq, receipt.entry_seq);
    assert_eq!(receipt.decision_seq, receipt.entry_seq);
    assert_eq!(e.entry.kind, EntryKind::Answered);
    assert_eq!(e.entry.operation, "verify_batch");
    assert_eq!(
        (e.entry.decision, e.entry.status),
        (Decision::Allow, ExchangeStatus::Ok)
    );
    assert_eq!(e.entry.rows, 5);
    // every key is in the subject index, as a keyed hash only
    let key = jembatan_broker::read_audit_key(&h.dir.join("audit.key")).unwrap();
    let mut want: Vec<String> = [nik(1), nik(2), nik(9), "1507999999999999".into()]
        .iter()
        .map(|k| jembatan_broker::subject_hash(&key, "prov.penduduk", k))
        .collect();
    want.sort();
    let mut got = e.entry.subjects.clone();
    got.sort();
    assert_eq!(got, want);
    let text = String::from_utf8(e.canonical.clone()).unwrap();
    for secret in [nik(1), nik(2), "WARGA 1".into(), "SOMEONE ELSE".into()] {
        assert!(!text.contains(&secret), "{secret} is on the log in clear");
    }

    // bad input is refused, naming the field, and logged
    let mut bad_batches = vec![
        (Vec::new(), "items"),
        (vec![verify_item(&nik(1), "nama", "X"); 10_001], "items"),
        (
            vec![pb::VerifyItem {
                key: items[0].key.clone(),
                verify: Default::default(),
            }],
            "items[0].verify",
        ),
    ];
    for (items, field) in bad_batches.drain(..) {
        let status = c
            .verify_batch(pb::VerifyBatchRequest {
                dataset: "prov.penduduk".into(),
                purpose: "bansos".into(),
                items,
            })
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
    // an agency without an agreement is denied, on the log
    let mut d = h.consumer("dinkes").await;
    let status = d
        .verify_batch(pb::VerifyBatchRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            items: vec![verify_item(&nik(1), "nama", "WARGA 1")],
        })
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(h.served(), 1, "nothing more was fetched");
    let all = exchange_entries(&h.broker, 100).await;
    assert_eq!(all.len(), 5, "the call, three invalid ones and a denial");
}

#[tokio::test]
async fn unwritable_audit_log_refuses_the_exchange_before_any_record_leaves() {
    let h = harness().await;
    sqlx::query("CREATE TRIGGER full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(h.broker.store().pool())
        .await
        .unwrap();
    let mut c = h.consumer("dinsos").await;
    let status = run_query(&mut c, query(&["nik"], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("audit log"),
        "{}",
        status.message()
    );
    // denials fail closed too
    let mut d = h.consumer("dinkes").await;
    let status = run_query(&mut d, query(&["nik"], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(h.served(), 0, "the adapter was asked for data");
    assert!(exchange_entries(&h.broker, 100).await.is_empty());
}

#[tokio::test]
async fn no_receipt_when_the_completion_cannot_be_written() {
    let h = harness().await;
    sqlx::query(
        "CREATE TRIGGER full BEFORE INSERT ON audit_log WHEN NEW.kind = 'completion'
         BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(h.broker.store().pool())
    .await
    .unwrap();
    let mut c = h.consumer("dinsos").await;
    let status = run_query(&mut c, query(&["nik"], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // the decision entry is there and shows an exchange that never completed
    let entries = exchange_entries(&h.broker, 10).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.status, ExchangeStatus::Started);
}

#[tokio::test]
async fn invalid_requests_are_rejected_and_audited() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    let cases = vec![
        (
            "bad dataset id",
            pb::QueryRequest {
                dataset: "penduduk".into(),
                ..query(&["nik"], None)
            },
            "dataset",
        ),
        (
            "no purpose",
            pb::QueryRequest {
                purpose: " ".into(),
                ..query(&["nik"], None)
            },
            "purpose",
        ),
        (
            "injected field",
            query(&["nik\" FROM penduduk; --"], None),
            "field",
        ),
        ("duplicate field", query(&["nik", "nik"], None), "twice"),
        (
            "unknown target schema",
            pb::QueryRequest {
                target_schema: "dinsos.warga@1".into(),
                ..query(&["nik"], None)
            },
            "no schema dinsos.warga@1 is registered",
        ),
    ];
    for (name, req, want) in cases {
        let status = run_query(&mut c, req).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains(want),
            "{name}: {}",
            status.message()
        );
    }
    let entries = exchange_entries(&h.broker, 100).await;
    assert_eq!(entries.len(), 5);
    assert!(
        entries
            .iter()
            .all(|e| e.entry.status == ExchangeStatus::Invalid && e.entry.error.is_some())
    );
    assert_eq!(h.served(), 0);
}

#[tokio::test]
async fn an_unreachable_adapter_fails_the_exchange_on_the_log() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    let status = run_query(
        &mut c,
        pb::QueryRequest {
            dataset: "ghost.data".into(),
            ..query(&["x"], None)
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let entries = exchange_entries(&h.broker, 10).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].entry.status, ExchangeStatus::Failed);
    assert!(
        entries[1]
            .entry
            .error
            .as_deref()
            .unwrap()
            .contains("no adapter")
    );
    let _ = &h.dir;
}

#[tokio::test]
async fn exchanges_work_on_a_postgres_store() {
    let Some(pg) = jembatan_testkit::PgStore::fresh("jembatan_e2e").await else {
        return;
    };
    let h = harness_with_store(&pg.url).await;
    let mut c = h.consumer("dinsos").await;
    let out = run_query(&mut c, query(&["nik"], None)).await.unwrap();
    assert_eq!(out.records.len(), (0..ROWS).filter(|i| i % 10 != 9).count());
    let mut d = h.consumer("dinkes").await;
    let status = run_query(&mut d, query(&["nik"], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied);
    let entries = exchange_entries(&h.broker, 10).await;
    let kinds: Vec<(u64, ExchangeStatus)> =
        entries.iter().map(|e| (e.seq, e.entry.status)).collect();
    assert_eq!(
        kinds,
        // seq 0 is the harness's expired agreement, recorded at start
        vec![
            (1, ExchangeStatus::Started),
            (2, ExchangeStatus::Ok),
            (3, ExchangeStatus::Denied)
        ]
    );
    h.broker.store().close().await;
    drop(h);
    pg.drop_db().await;
}

#[tokio::test]
async fn plaintext_is_refused_by_broker_and_adapter() {
    let h = harness().await;
    for port in [h.broker_port, h.adapter_port] {
        let attempt = async {
            let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            ExchangeClient::new(channel)
                .query(query(&["nik"], None))
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        };
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await;
        assert!(
            !matches!(result, Ok(Ok(()))),
            "a plaintext call to port {port} was answered"
        );
    }
    assert_eq!(h.served(), 0);
    assert!(exchange_entries(&h.broker, 100).await.is_empty());
}

// ---- translation between schemas, and the registry ----

fn translated(target: &str, fields: &[&str], filter: Option<pb::Filter>) -> pb::QueryRequest {
    pb::QueryRequest {
        target_schema: target.into(),
        ..query(fields, filter)
    }
}

fn predicate(field: &str, op: pb::Operator, value: &str) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: op as i32,
            value: Some(pb::Scalar {
                kind: Some(pb::scalar::Kind::StringValue(value.into())),
            }),
            values: vec![],
        })),
    }
}

fn all_of(filters: Vec<pb::Filter>) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::All(pb::FilterList { filters })),
    }
}

/// `name` with all but its last two characters masked.
fn masked(name: &str) -> String {
    let n = name.chars().count();
    name.chars()
        .enumerate()
        .map(|(i, c)| if i + 2 >= n { c } else { '*' })
        .collect()
}

#[tokio::test]
async fn records_arrive_in_the_consumers_own_schema() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    // `district` is a plain rename of `kecamatan`: pushed to the adapter
    let out = run_query(
        &mut c,
        translated("dinsos.orang@1", &[], Some(eq("district", "15.07.01"))),
    )
    .await
    .unwrap();
    let want: Vec<usize> = (0..ROWS).filter(|i| i % 3 == 0 && i % 10 != 9).collect();
    assert_eq!(out.records.len(), want.len());
    for (r, i) in out.records.iter().zip(&want) {
        let name = format!("WARGA {i}");
        assert_eq!(r["id"], format!("15070{i:011}"));
        assert_eq!(r["name"], name.as_str());
        assert_eq!(r["district"], "15.07.01");
        assert_eq!(r["masked"], masked(&name).as_str());
        assert_eq!(r["alive"], true);
        assert_eq!(r.len(), 5, "only mapped fields reach the consumer: {r:?}");
    }
    let receipt = out.receipt.unwrap();
    assert_eq!(receipt.rows, want.len() as u64);
    let mut hasher = Sha256::new();
    for raw in &out.raw {
        hasher.update(raw.as_bytes());
        hasher.update(b"\n");
    }
    assert_eq!(receipt.payload_sha256, hex::encode(hasher.finalize()));

    // the log names the schemas and the mapping; the completion also
    // says what the adapter sent before translation
    let entries = h
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    for e in &entries {
        let t = e
            .entry
            .translation
            .as_ref()
            .expect("translation on the entry");
        assert_eq!(t.source_schema, "prov.penduduk@1");
        assert_eq!(t.target_schema, "dinsos.orang@1");
        assert_eq!(t.mapping_version, 1);
        assert!(
            t.source_schema_id.starts_with("sha256:") && t.target_schema_id.starts_with("sha256:")
        );
    }
    let decision = &entries[0].entry;
    assert_eq!(
        decision.fields,
        ["kecamatan", "nama", "nik", "status"],
        "the columns the mapping reads"
    );
    let completion = &entries[1].entry;
    assert_eq!(completion.status, ExchangeStatus::Ok);
    let received = completion.received.as_ref().expect("received tally");
    assert_eq!(received.rows, want.len() as u64);
    // what the adapter logged serving is what the broker logged receiving
    // (its line is appended as the fetch ends, which the broker does not
    // wait for)
    h.served_at_least(1).await;
    let served = read_receipt_log(&h.receipt_log)
        .unwrap()
        .into_iter()
        .find_map(|e| match e {
            LogEntry::Served(s) if s.exchange_id == receipt.exchange_id => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(served.rows, received.rows);
    assert_eq!(served.payload_sha256, received.payload_sha256);
    assert_eq!(served.columns, ["kecamatan", "nama", "nik", "status"]);
}

#[tokio::test]
async fn filters_the_mapping_cannot_push_down_apply_after_translation() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    // one record: `masked` is computed, so the filter runs in the broker
    let out = run_query(
        &mut c,
        translated(
            "dinsos.orang@1",
            &["id", "masked"],
            Some(predicate("masked", pb::Operator::Eq, "******13")),
        ),
    )
    .await
    .unwrap();
    assert_eq!(out.records.len(), 1);
    assert_eq!(out.records[0]["id"], format!("15070{:011}", 13));
    assert_eq!(
        out.records[0].len(),
        2,
        "fields picked: {:?}",
        out.records[0]
    );
    // a prefix on the computed field with a limit: the broker stops at 5
    let mut req = translated(
        "dinsos.orang@1",
        &["id"],
        Some(all_of(vec![
            predicate("masked", pb::Operator::Prefix, "******"),
            eq("district", "15.07.02"),
        ])),
    );
    req.limit = 5;
    let out = run_query(&mut c, req).await.unwrap();
    let want: Vec<String> = (10..ROWS)
        .filter(|i| i % 3 != 0 && i % 10 != 9)
        .take(5)
        .map(|i| format!("15070{i:011}"))
        .collect();
    let got: Vec<String> = out
        .records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, want);
    assert_eq!(out.receipt.unwrap().rows, 5);
}

#[tokio::test]
async fn translation_refusals_are_reasoned_and_logged() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    // the mapping to dinsos.iman reads `agama`, which the agreement does not grant
    let status = run_query(&mut c, translated("dinsos.iman@1", &[], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("agama"), "{}", status.message());
    // a field the consumer's schema does not have
    let status = run_query(&mut c, translated("dinsos.orang@1", &["religion"], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("religion is not in dinsos.orang@1"),
        "{}",
        status.message()
    );

    // a disabled target version is refused with its reason code
    let mut registry = pb::registry_client::RegistryClient::new(
        channel(h.broker_port, &h.files["integrator-dinsos"])
            .await
            .unwrap(),
    );
    registry
        .set_version_state(pb::SetVersionStateRequest {
            dataset: "dinsos.orang".into(),
            version: 1,
            state: pb::VersionState::Disabled as i32,
        })
        .await
        .unwrap();
    let status = run_query(&mut c, translated("dinsos.orang@1", &[], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let details = pb::DenialDetails::decode(
        status
            .metadata()
            .get_bin(DENIAL_METADATA_KEY)
            .unwrap()
            .to_bytes()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(details.reasons[0].reason, "schema_version_disabled");
    let entries = exchange_entries(&h.broker, 100).await;
    assert_eq!(entries.len(), 3, "every refusal is on the log");
    assert!(entries.iter().all(|e| e.entry.decision == Decision::Deny));
    assert_eq!(h.served(), 0, "nothing was fetched");
}

/// Version 2 of the `dinsos.orang` mapping: `district` through a value
/// map that knows only one of the two districts in the data.
const ORANG_V2_ONE_DISTRICT: &str = r#"{"version": 2, "source": "prov.penduduk@1",
    "target": "dinsos.orang@1",
    "rule": [{"target": "id", "from": "nik"}, {"target": "name", "from": "nama"},
             {"target": "district", "from": "kecamatan",
              "ops": [{"value_map": {"map": {"15.07.01": "Mendahara"}}}]}]}"#;

#[tokio::test]
async fn a_mapping_failure_names_version_and_rule_and_the_version_can_be_disabled() {
    let h = harness().await;
    let mut registry = pb::registry_client::RegistryClient::new(
        channel(h.broker_port, &h.files["integrator-dinsos"])
            .await
            .unwrap(),
    );
    registry
        .register_mapping(pb::RegisterMappingRequest {
            document_json: ORANG_V2_ONE_DISTRICT.into(),
        })
        .await
        .unwrap();
    let mut c = h.consumer("dinsos").await;
    let status = run_query(&mut c, translated("dinsos.orang@1", &[], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let want = "record 2 does not map: mapping prov.penduduk@1 -> dinsos.orang@1 version 2 \
                failed at rule 2 (district): value_map: the value is not in the map";
    assert!(status.message().contains(want), "{}", status.message());
    assert!(
        !status.message().contains("15.07.02") && !status.message().contains("adapter"),
        "no value of the record, and not blamed on the adapter: {}",
        status.message()
    );
    // the completion entry says the same
    let entries = exchange_entries(&h.broker, 100).await;
    let end = entries
        .iter()
        .find(|e| e.entry.kind == EntryKind::Completion)
        .expect("a completion entry");
    assert_eq!(end.entry.status, ExchangeStatus::Failed);
    let error = end.entry.error.as_deref().unwrap_or_default();
    assert!(error.contains(want), "{error}");
    assert!(!error.contains("15.07.02"), "{error}");
    assert_eq!(end.entry.translation.as_ref().unwrap().mapping_version, 2);

    // version 2 disabled: version 1 serves again, with no new version
    let set = |version: u32, state: pb::VersionState| pb::SetMappingStateRequest {
        source: "prov.penduduk@1".into(),
        target: "dinsos.orang@1".into(),
        version,
        state: state as i32,
    };
    for who in ["dinsos", "auditor"] {
        let mut other = pb::registry_client::RegistryClient::new(
            channel(h.broker_port, &h.files[who]).await.unwrap(),
        );
        let status = other
            .set_mapping_state(set(2, pb::VersionState::Disabled))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
    }
    let m = registry
        .set_mapping_state(set(2, pb::VersionState::Disabled))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((m.version, m.state), (2, pb::VersionState::Disabled as i32));
    let out = run_query(&mut c, translated("dinsos.orang@1", &[], None))
        .await
        .unwrap();
    let receipt = out.receipt.unwrap();
    assert!(receipt.rows > 2, "every record maps under version 1");
    let entries = h
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    assert_eq!(
        entries[0]
            .entry
            .translation
            .as_ref()
            .unwrap()
            .mapping_version,
        1
    );
    let got = registry
        .get_mapping(pb::GetMappingRequest {
            source: "prov.penduduk@1".into(),
            target: "dinsos.orang@1".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.version, 2,
        "still the latest registered, shown disabled"
    );
    assert_eq!(got.state, pb::VersionState::Disabled as i32);

    // every version disabled: denied, named, on the log
    registry
        .set_mapping_state(set(1, pb::VersionState::Disabled))
        .await
        .unwrap();
    let status = run_query(&mut c, translated("dinsos.orang@1", &[], None))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(denial(&status).reasons[0].reason, "mapping_disabled");
    assert!(
        status.message().contains(
            "every mapping to dinsos.orang@1 is disabled (prov.penduduk@1 -> dinsos.orang@1 version 2, prov.penduduk@1 -> dinsos.orang@1 version 1)"
        ),
        "{}",
        status.message()
    );
    // a version made active again serves at once
    registry
        .set_mapping_state(set(1, pb::VersionState::Active))
        .await
        .unwrap();
    run_query(&mut c, translated("dinsos.orang@1", &[], None))
        .await
        .unwrap();
    let status = registry
        .set_mapping_state(set(7, pb::VersionState::Disabled))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn the_registry_enforces_roles_compatibility_and_type_checks() {
    let h = harness().await;
    let client = |who: &str| {
        let files = h.files[who].clone();
        let port = h.broker_port;
        async move { pb::registry_client::RegistryClient::new(channel(port, &files).await.unwrap()) }
    };
    // any federation certificate reads
    let datasets = client("dinkes")
        .await
        .list_datasets(pb::ListDatasetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .datasets;
    let names: Vec<&str> = datasets.iter().map(|d| d.dataset.as_str()).collect();
    assert_eq!(names, ["dinsos.iman", "dinsos.orang", "prov.penduduk"]);
    // ...but not an adapter's (nor the broker's) certificate
    let status = client("adapter")
        .await
        .list_datasets(pb::ListDatasetsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(datasets.iter().all(|d| d.latest_version == 1));

    let v1 = client("dinsos")
        .await
        .get_schema(pb::GetSchemaRequest {
            reference: "dinsos.orang@latest".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut doc: serde_json::Value = serde_json::from_str(&v1.schema_json).unwrap();
    // an optional property on a closed model: backward compatible
    doc["properties"]["note"] = serde_json::json!({"type": "string"});
    let register = |who: &'static str, doc: String| {
        let c = client(who);
        async move {
            c.await
                .register_schema(pb::RegisterSchemaRequest {
                    dataset: "dinsos.orang".into(),
                    schema_json: doc,
                })
                .await
        }
    };
    for who in ["dinsos", "integrator-prov", "auditor", "operator"] {
        let status = register(who, doc.to_string()).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
    }
    let v2 = register("integrator-dinsos", doc.to_string())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.version.as_ref().unwrap().version, 2);
    assert!(!v2.already_registered);
    // the same content, keys in another order: the same version and id
    let reordered = serde_json::to_string_pretty(&doc).unwrap();
    let again = register("integrator-dinsos", reordered)
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_registered);
    assert_eq!(
        again.version.unwrap().schema_id,
        v2.version.unwrap().schema_id
    );

    // a new required property without a default breaks BACKWARD
    let mut bad = doc.clone();
    bad["properties"]["income"] = serde_json::json!({"type": "integer"});
    bad["required"]
        .as_array_mut()
        .unwrap()
        .push("income".into());
    let status = register("integrator-dinsos", bad.to_string())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let details = pb::CheckCompatibilityResponse::decode(
        status
            .metadata()
            .get_bin(jembatan_proto::INCOMPATIBILITY_METADATA_KEY)
            .unwrap()
            .to_bytes()
            .unwrap(),
    )
    .unwrap();
    let reason = &details.incompatibilities[0];
    assert_eq!(reason.kind, "required_added");
    assert_eq!(reason.against_version, 2);
    let example: serde_json::Value = serde_json::from_str(&reason.counterexample_json).unwrap();
    assert!(
        example.get("income").is_none(),
        "old documents lack it: {example}"
    );
    // an invalid schema names the JSON pointer of the fault
    let status = register("integrator-dinsos", r#"{"type": 5}"#.into())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("/type"), "{}", status.message());
    let versions = client("dinsos")
        .await
        .list_versions(pb::ListVersionsRequest {
            dataset: "dinsos.orang".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(versions.len(), 2, "refused schemas are never stored");

    // a mapping that cannot be right is never stored
    let status = client("integrator-dinsos")
        .await
        .register_mapping(pb::RegisterMappingRequest {
            document_json:
                r#"{"version": 2, "source": "prov.penduduk@1", "target": "dinsos.orang@1",
                "rule": [{"target": "id", "from": "nik_typo"}, {"target": "name", "from": "nama"},
                         {"target": "district", "from": "kecamatan"}]}"#
                    .into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("nik_typo"),
        "{}",
        status.message()
    );
    let status = client("dinsos")
        .await
        .register_mapping(pb::RegisterMappingRequest {
            document_json:
                r#"{"version": 2, "source": "prov.penduduk@1", "target": "dinsos.orang@1",
                "rule": [{"target": "id", "from": "nik"}, {"target": "name", "from": "nama"},
                         {"target": "district", "from": "kecamatan"}]}"#
                    .into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let m = client("integrator-dinsos")
        .await
        .register_mapping(pb::RegisterMappingRequest {
            document_json:
                r#"{"version": 2, "source": "prov.penduduk@1", "target": "dinsos.orang@1",
                "rule": [{"target": "id", "from": "nik"}, {"target": "name", "from": "nama"},
                         {"target": "district", "from": "kecamatan"}]}"#
                    .into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.version, 2);
    // the mappings reading or producing a dataset's records, every version
    let mut reader = client("dinsos").await;
    for dataset in ["dinsos.orang", "prov.penduduk"] {
        let listed = reader
            .list_mappings(pb::ListMappingsRequest {
                dataset: dataset.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .mappings;
        assert!(
            listed
                .iter()
                .all(|m| m.source.starts_with(&format!("{dataset}@"))
                    || m.target.starts_with(&format!("{dataset}@"))),
            "{listed:?}"
        );
        let versions: Vec<u32> = listed
            .iter()
            .filter(|m| m.target == "dinsos.orang@1")
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, [1, 2], "{dataset}: {listed:?}");
    }
    let all = reader
        .list_mappings(pb::ListMappingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .mappings;
    assert!(all.len() >= 2);
    let none = reader
        .list_mappings(pb::ListMappingsRequest {
            dataset: "prov.lain".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mappings;
    assert!(none.is_empty());
    let status = reader
        .list_mappings(pb::ListMappingsRequest {
            dataset: "nodot".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("dataset"), "{}", status.message());
    // the exchange now uses version 2: no `masked`, no `alive`
    let mut c = h.consumer("dinsos").await;
    let out = run_query(
        &mut c,
        translated("dinsos.orang@1", &[], Some(eq("district", "15.07.01"))),
    )
    .await
    .unwrap();
    assert!(
        out.records.iter().all(|r| r.len() == 3),
        "{:?}",
        out.records[0]
    );
    let entries = h
        .broker
        .audit()
        .exchange(&out.receipt.unwrap().exchange_id)
        .await
        .unwrap();
    assert_eq!(
        entries[0]
            .entry
            .translation
            .as_ref()
            .unwrap()
            .mapping_version,
        2
    );
}

#[tokio::test]
async fn every_registry_write_is_on_the_log_before_it_takes_effect() {
    let h = harness().await;
    let client = |who: &str| {
        let files = h.files[who].clone();
        let port = h.broker_port;
        async move { pb::registry_client::RegistryClient::new(channel(port, &files).await.unwrap()) }
    };
    let start = h.broker.audit().size().await.unwrap();
    let sha256 = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));

    // a schema registered: its version and content id, the document only
    // by its hash and length
    let v1 = client("dinsos")
        .await
        .get_schema(pb::GetSchemaRequest {
            reference: "dinsos.orang@1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut doc: serde_json::Value = serde_json::from_str(&v1.schema_json).unwrap();
    doc["properties"]["catatan_panjang_rahasia"] =
        serde_json::json!({"type": "string", "description": "TEKS-DOKUMEN-YANG-PANJANG"});
    let text = doc.to_string();
    let mut integrator = client("integrator-dinsos").await;
    let v2 = integrator
        .register_schema(pb::RegisterSchemaRequest {
            dataset: "dinsos.orang".into(),
            schema_json: text.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap();
    // the same content again: an entry, nothing stored
    integrator
        .register_schema(pb::RegisterSchemaRequest {
            dataset: "dinsos.orang".into(),
            schema_json: serde_json::to_string_pretty(&doc).unwrap(),
        })
        .await
        .unwrap();
    // refused: the wrong certificate, an invalid document, an unknown state
    let mut agency = client("dinsos").await;
    let status = agency
        .register_schema(pb::RegisterSchemaRequest {
            dataset: "dinsos.orang".into(),
            schema_json: text.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = integrator
        .register_schema(pb::RegisterSchemaRequest {
            dataset: "dinsos.orang".into(),
            schema_json: r#"{"type": 5}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = integrator
        .set_version_state(pb::SetVersionStateRequest {
            dataset: "dinsos.orang".into(),
            version: 1,
            state: 42,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // modes and states, from what they were to what they are
    client("operator")
        .await
        .set_compatibility(pb::SetCompatibilityRequest {
            dataset: "dinsos.orang".into(),
            mode: pb::CompatibilityMode::Full as i32,
            optional_friendly: true,
        })
        .await
        .unwrap();
    integrator
        .set_version_state(pb::SetVersionStateRequest {
            dataset: "dinsos.orang".into(),
            version: 1,
            state: pb::VersionState::Deprecated as i32,
        })
        .await
        .unwrap();
    // a mapping registered, and one that cannot be right
    let mapping = r#"{"version": 2, "source": "prov.penduduk@1", "target": "dinsos.orang@1",
        "rule": [{"target": "id", "from": "nik"}, {"target": "name", "from": "nama"},
                 {"target": "district", "from": "kecamatan"}]}"#;
    let m = integrator
        .register_mapping(pb::RegisterMappingRequest {
            document_json: mapping.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = integrator
        .register_mapping(pb::RegisterMappingRequest {
            document_json: mapping
                .replace(r#""version": 2"#, r#""version": 3"#)
                .replace("\"nik\"", "\"nik_typo\""),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    integrator
        .set_mapping_state(pb::SetMappingStateRequest {
            source: "prov.penduduk@1".into(),
            target: "dinsos.orang@1".into(),
            version: 2,
            state: pb::VersionState::Disabled as i32,
        })
        .await
        .unwrap();

    let entries = registry_entries(&h.broker, start).await;
    let seen: Vec<(&str, Decision, ExchangeStatus)> = entries
        .iter()
        .map(|e| (e.operation.as_str(), e.decision, e.status))
        .collect();
    use {Decision::*, ExchangeStatus as S};
    assert_eq!(
        seen,
        [
            ("registry.register_schema", Allow, S::Ok),
            ("registry.register_schema", Allow, S::Ok),
            ("registry.register_schema", Deny, S::Denied),
            ("registry.register_schema", Deny, S::Invalid),
            ("registry.set_version_state", Deny, S::Invalid),
            ("registry.set_compatibility", Allow, S::Ok),
            ("registry.set_version_state", Allow, S::Ok),
            ("registry.register_mapping", Allow, S::Ok),
            ("registry.register_mapping", Deny, S::Denied),
            ("registry.set_mapping_state", Allow, S::Ok),
        ]
    );
    let change = |i: usize| entries[i].registry.clone().unwrap();
    assert_eq!(entries[0].caller, "integrator:dinsos");
    assert_eq!(entries[0].dataset.as_deref(), Some("dinsos.orang"));
    assert_eq!(change(0).schema.as_deref(), Some("dinsos.orang@2"));
    assert_eq!(change(0).schema_id.as_deref(), Some(v2.schema_id.as_str()));
    assert_eq!(change(0).document_sha256, Some(sha256(&text)));
    assert_eq!(change(0).document_bytes, Some(text.len() as u64));
    assert!(!change(0).already_registered);
    assert!(change(1).already_registered);
    assert_eq!(change(1).schema.as_deref(), Some("dinsos.orang@2"));
    assert_eq!(entries[2].caller, "agency:dinsos");
    assert!(
        entries[2]
            .error
            .as_deref()
            .unwrap()
            .contains("only an integrator of dinsos")
    );
    assert!(entries[3].error.as_deref().unwrap().contains("/type"));
    assert_eq!(
        (change(5).from.as_deref(), change(5).to.as_deref()),
        (Some("default (BACKWARD)"), Some("FULL optional_friendly"))
    );
    assert_eq!(entries[5].caller, "operator");
    assert_eq!(
        (change(6).from.as_deref(), change(6).to.as_deref()),
        (Some("active"), Some("deprecated"))
    );
    assert_eq!(change(6).schema.as_deref(), Some("dinsos.orang@1"));
    assert_eq!(change(6).schema_id.as_deref(), Some(v1.schema_id.as_str()));
    assert_eq!(change(7).mapping_version, Some(m.version));
    assert_eq!(change(7).source.as_deref(), Some("prov.penduduk@1"));
    assert_eq!(change(7).mapping_sha256, Some(sha256(&m.document_json)));
    assert!(entries[8].error.as_deref().unwrap().contains("nik_typo"));
    assert_eq!(
        (change(9).from.as_deref(), change(9).to.as_deref()),
        (Some("active"), Some("disabled"))
    );
    assert_eq!(change(9).mapping_sha256, Some(sha256(&m.document_json)));
    // no document body is on the log
    for e in &entries {
        let bytes = String::from_utf8(e.canonical_bytes()).unwrap();
        assert!(!bytes.contains("TEKS-DOKUMEN-YANG-PANJANG"), "{bytes}");
        assert!(!bytes.contains("\"rule\""), "{bytes}");
    }

    // the log with its registry entries verifies: canonical bytes, indexed
    // columns, the tree against a signed checkpoint
    h.broker.checkpoint_now().await.unwrap();
    let report = jembatan_store::verify::verify(h.broker.store(), h.broker.checkpoint_verifier())
        .await
        .unwrap();
    assert_eq!(report.size, h.broker.audit().size().await.unwrap());

    // a write the store does not take: its entry, then a `failed` one
    sqlx::query(
        "CREATE TRIGGER no_mappings BEFORE INSERT ON mappings BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(h.broker.store().pool())
    .await
    .unwrap();
    let status = integrator
        .register_mapping(pb::RegisterMappingRequest {
            document_json: mapping.replace(r#""version": 2"#, r#""version": 3"#),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let size = h.broker.audit().size().await.unwrap();
    let last = registry_entries(&h.broker, size - 2).await;
    assert_eq!(last.len(), 2, "{last:?}");
    assert_eq!(last[0].exchange_id, last[1].exchange_id);
    assert_eq!((last[0].status, last[1].status), (S::Ok, S::Failed));
    assert!(
        last[1]
            .error
            .as_deref()
            .unwrap()
            .contains("did not take effect")
    );

    // a log that cannot be written refuses the write, which stores nothing
    sqlx::query("CREATE TRIGGER full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(h.broker.store().pool())
        .await
        .unwrap();
    let status = integrator
        .set_mapping_state(pb::SetMappingStateRequest {
            source: "prov.penduduk@1".into(),
            target: "dinsos.orang@1".into(),
            version: 2,
            state: pb::VersionState::Active as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("audit log"),
        "{}",
        status.message()
    );
    let still = agency
        .get_mapping(pb::GetMappingRequest {
            source: "prov.penduduk@1".into(),
            target: "dinsos.orang@1".into(),
            version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.state, pb::VersionState::Disabled as i32);
    assert_eq!(h.broker.audit().size().await.unwrap(), size);
}

/// A candidate mapping from `prov.penduduk@1` to `dinsos.orang@1`
/// (version 2, not registered) with `extra` rules after the required ones.
fn candidate(extra: &str) -> String {
    format!(
        r#"{{"version": 2, "source": "prov.penduduk@1", "target": "dinsos.orang@1",
        "rule": [{{"target": "id", "from": "nik"}}, {{"target": "name", "from": "nama"}}{extra}]}}"#
    )
}

#[tokio::test]
async fn a_candidate_mapping_is_dry_run_on_live_records_and_only_the_report_leaves() {
    let h = harness().await;
    let mut c = h.consumer("dinsos").await;
    let test = |document: String, limit: u64| pb::TestMappingRequest {
        document,
        purpose: "bansos".into(),
        limit,
    };

    // a candidate that handles every record: counts, no failure, nothing
    // delivered, and the test's entries before and after the fetch
    let passing = candidate(r#", {"target": "district", "from": "kecamatan"}"#);
    let report = c
        .test_mapping(test(passing.clone(), 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            report.records_checked,
            report.records_passed,
            report.records_failed
        ),
        (10, 10, 0),
        "{report:?}"
    );
    assert!(report.first_failure.is_none());
    assert_eq!(
        (
            report.source_schema.as_str(),
            report.target_schema.as_str(),
            report.mapping_version
        ),
        ("prov.penduduk@1", "dinsos.orang@1", 2)
    );
    assert_eq!(report.mapping_sha256.len(), 64);
    let receipt = report.receipt.clone().unwrap();
    assert_eq!(
        (receipt.rows, receipt.bytes),
        (0, 0),
        "no record is delivered"
    );
    let entries = h
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (decision, completion) = (&entries[0], &entries[1]);
    assert!(decision.seq < completion.seq);
    assert_eq!(decision.entry.kind, EntryKind::Decision);
    assert_eq!(decision.entry.status, ExchangeStatus::Started);
    for e in [&decision.entry, &completion.entry] {
        assert_eq!(e.operation, "mapping_test");
        assert_eq!(e.consumer.as_deref(), Some("dinsos"));
        assert_eq!(e.agreement_id.as_deref(), Some("ok-1"));
        let t = e.translation.as_ref().unwrap();
        assert_eq!(t.mapping_version, 2);
        assert_eq!(
            t.mapping_sha256.as_deref(),
            Some(report.mapping_sha256.as_str())
        );
        // the fields the agreement had to grant: those the mapping reads
        assert_eq!(e.limit, Some(10));
    }
    assert_eq!(completion.entry.status, ExchangeStatus::Ok);
    assert_eq!(completion.entry.rows, 0);
    assert_eq!(completion.entry.received.as_ref().unwrap().rows, 10);
    assert_eq!(completion.seq, receipt.entry_seq);

    // a candidate some records break: the first failure names the record,
    // the rule and the step, and no value of any record
    let failing = candidate(
        r#", {"target": "district", "from": "kecamatan", "ops": [{"value_map": {"map": {"15.07.01": "Muara Sabak Timur"}}}]}"#,
    );
    let report = c
        .test_mapping(test(failing, 30))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.records_checked, 30, "{report:?}");
    assert!(
        report.records_passed > 0 && report.records_failed > 0,
        "{report:?}"
    );
    assert_eq!(report.records_passed + report.records_failed, 30);
    let failure = report.first_failure.clone().unwrap();
    assert!((1..=30).contains(&failure.record), "{failure:?}");
    assert_eq!(failure.stage, "mapping");
    assert_eq!(
        (failure.rule, failure.rule_target.as_str()),
        (2, "district")
    );
    assert!(failure.message.contains("version 2"), "{}", failure.message);
    assert!(failure.message.contains("value_map"), "{}", failure.message);
    let shown = format!("{report:?}");
    for value in ["15.07.02", "WARGA", "150700000000"] {
        assert!(!shown.contains(value), "{value} in {shown}");
    }
    // a mapped record the target schema refuses: the schema's place
    let breaking = candidate(
        r#", {"target": "district", "from": "kecamatan"}, {"target": "alive", "from": "status"}"#,
    );
    let status = c.test_mapping(test(breaking, 5)).await.unwrap_err();
    // `alive` is a boolean: the type check already refuses a string
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("alive"), "{}", status.message());

    // denied as a query would be: a column the agreement does not grant,
    // an agreement no longer in force
    let reads_agama = candidate(
        r#", {"target": "district", "from": "kecamatan"}, {"target": "masked", "from": "agama"}"#,
    );
    let status = c.test_mapping(test(reads_agama, 5)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let details = denial(&status);
    assert!(
        details
            .reasons
            .iter()
            .any(|r| r.code == pb::DenialCode::FieldNotGranted as i32),
        "{details:?}"
    );
    let mut expired = h.consumer("dinkes").await;
    let status = expired
        .test_mapping(test(passing.clone(), 5))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let refused = h
        .broker
        .audit()
        .exchange(&denial(&status).exchange_id)
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].entry.operation, "mapping_test");
    assert_eq!(refused[0].entry.decision, Decision::Deny);

    // invalid: a document that does not parse, one that does not
    // type-check (its words go to the caller, not to the log), a limit
    // over the bound
    let before = h.broker.audit().size().await.unwrap();
    let status = c
        .test_mapping(test("version = \"SECRET-TEXT".into(), 5))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let typo = candidate(r#", {"target": "district", "from": "kecamatan_typo"}"#);
    let status = c.test_mapping(test(typo, 5)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("kecamatan_typo"),
        "{}",
        status.message()
    );
    let status = c
        .test_mapping(test(passing.clone(), 10_001))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("10000"), "{}", status.message());
    let invalid: Vec<_> = h
        .broker
        .audit()
        .entries(before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry)
        .collect();
    assert_eq!(invalid.len(), 3, "{invalid:?}");
    for e in &invalid {
        assert_eq!(
            (e.operation.as_str(), e.status),
            ("mapping_test", ExchangeStatus::Invalid)
        );
        let bytes = String::from_utf8(e.canonical_bytes()).unwrap();
        assert!(
            !bytes.contains("SECRET-TEXT") && !bytes.contains("kecamatan_typo"),
            "{bytes}"
        );
    }

    // the candidate was never registered: the pair still has version 1
    let mut registry = pb::registry_client::RegistryClient::new(
        channel(h.broker_port, &h.files["dinsos"]).await.unwrap(),
    );
    let latest = registry
        .get_mapping(pb::GetMappingRequest {
            source: "prov.penduduk@1".into(),
            target: "dinsos.orang@1".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.version, 1);
    // the adapter served each test's fetch, and its receipt log has them
    assert!(h.served_at_least(2).await >= 2);
}

/// GET over the broker's mTLS port, HTTP/2 as `curl` would.
async fn http_get(h: &Harness, who: &str, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let channel = channel(h.broker_port, &h.files[who]).await.unwrap();
    let request =
        tonic::codegen::http::Request::get(format!("https://localhost:{}{path}", h.broker_port))
            .body(tonic::body::Body::empty())
            .unwrap();
    let response = channel.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_registry_has_a_read_only_http_view() {
    let h = harness().await;
    let (status, body) = http_get(&h, "dinsos", "/registry/v1/datasets").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["datasets"].as_array().unwrap().len(), 3);
    assert_eq!(json["datasets"][1]["compatibility"], "BACKWARD");

    let (status, body) = http_get(
        &h,
        "dinsos",
        "/registry/v1/datasets/dinsos.orang/versions/latest",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], 1);
    let id = json["schema_id"].as_str().unwrap().to_owned();
    assert_eq!(json["schema"]["required"][0], "id");

    let (status, body) = http_get(&h, "auditor", &format!("/registry/v1/schemas/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let schema: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(schema["properties"]["id"]["type"], "string");

    let (status, body) = http_get(
        &h,
        "dinsos",
        "/registry/v1/mappings/prov.penduduk@1/dinsos.orang@1",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["document"]["target"], "dinsos.orang@1");

    let (status, body) = http_get(
        &h,
        "dinsos",
        "/registry/v1/datasets/dinsos.nothing/versions",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no schema is registered for dinsos.nothing"),
        "{body}"
    );
    let (status, _) = http_get(&h, "adapter", "/registry/v1/datasets").await;
    assert_eq!(status, 403);
    // gRPC still answers on the same port
    let (status, _) = http_get(&h, "dinsos", "/no/such/path").await;
    assert_ne!(status, 200);
}
