//! A federation in one process on 127.0.0.1:0, for the broker's
//! integration tests: a provider (`prov`) whose SQLite table `penduduk`
//! sits behind a real adapter, one or more brokers sharing one store,
//! and a certificate for every role from a development CA.
#![allow(dead_code)] // each test binary uses a different part

mod databases;

#[allow(unused_imports)] // each test binary uses a different part
pub(crate) use databases::{Kind, PgStore, ProviderDb};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jembatan_adapter::{Adapter, AdapterConfig};
use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Identity, Role};
use jembatan_pki::TlsFiles;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::agreements_client::AgreementsClient;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// Every certificate the federation has, by name.
pub(crate) const IDENTITIES: [(&str, Role, Option<&str>); 12] = [
    ("broker", Role::Broker, None),
    ("adapter", Role::Adapter, Some("prov")),
    ("prov", Role::Agency, Some("prov")),
    ("dinsos", Role::Agency, Some("dinsos")),
    ("dinkes", Role::Agency, Some("dinkes")),
    ("auditor", Role::Auditor, None),
    ("operator", Role::Operator, None),
    ("integrator-prov", Role::Integrator, Some("prov")),
    ("integrator-dinsos", Role::Integrator, Some("dinsos")),
    ("adapter-dinsos", Role::Adapter, Some("dinsos")),
    // an agency the CA certified but the broker does not register
    ("luar", Role::Agency, Some("luar")),
    ("integrator-luar", Role::Integrator, Some("luar")),
];

pub(crate) struct Federation {
    _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) rows: usize,
    pub(crate) files: HashMap<String, TlsFiles>,
    pub(crate) adapter_port: u16,
    pub(crate) store: String,
    stop: watch::Sender<bool>,
    /// The provider's database URL.
    database: String,
    /// More TOML for the adapter's dataset (a change source).
    dataset_extra: String,
}

/// An adapter started apart from the federation's own.
pub(crate) struct AdapterHandle {
    pub(crate) port: u16,
    stop: watch::Sender<bool>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl AdapterHandle {
    /// Its endpoint, as a broker config names it.
    pub(crate) fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Stops it and waits until it no longer serves.
    pub(crate) async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(served) = self.served.take() {
            served.await.unwrap();
        }
    }
}

impl Drop for AdapterHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves an adapter of `prov` on `database` (the table `penduduk`) at
/// `listener` until `shutdown`; returns the serving task.
async fn serve_adapter(
    files: &TlsFiles,
    dir: &Path,
    database: &str,
    listener: TcpListener,
    receipt_log: &str,
    dataset_extra: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let port = listener.local_addr().unwrap().port();
    let adapter_toml = format!(
        r#"
version = 1
agency = "prov"
database = "{database}"
listen = "127.0.0.1:{port}"
receipt_log = "{receipt_log}"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "tgl_lahir", "kecamatan", "status"]
{dataset_extra}
"#,
        ca = files.ca.display(),
        cert = files.cert.display(),
        key = files.key.display()
    );
    let config = AdapterConfig::from_toml(&adapter_toml, dir).unwrap();
    let adapter = Arc::new(Adapter::connect(&config).await.unwrap());
    let served = jembatan_adapter::serve(
        adapter,
        listener,
        config.tls.server_config().unwrap(),
        shutdown,
    );
    tokio::spawn(async move {
        served.await.unwrap();
    })
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One running broker of the federation.
pub(crate) struct BrokerHandle {
    pub(crate) broker: Broker,
    pub(crate) port: u16,
}

/// The `nik` of row `i`.
pub(crate) fn nik(i: usize) -> String {
    format!("15070{i:011}")
}

async fn make_db(path: &Path, rows: usize) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, tgl_lahir TEXT,
         kecamatan TEXT NOT NULL, status TEXT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..rows {
        let kec = if i % 3 == 0 { "15.07.01" } else { "15.07.02" };
        let status = if i % 10 == 9 { "MENINGGAL" } else { "HIDUP" };
        sqlx::query("INSERT INTO penduduk VALUES (?, ?, ?, ?, ?)")
            .bind(nik(i))
            .bind(format!("WARGA {i}"))
            .bind(format!("19{:02}-0{}-1{}", 50 + i % 50, 1 + i % 9, i % 10))
            .bind(kec)
            .bind(status)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
}

impl Federation {
    /// A provider with `rows` residents behind its adapter; no broker yet.
    pub(crate) async fn start(rows: usize) -> Federation {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("prov.db");
        make_db(&db, rows).await;
        Federation::with_database(tmp, &format!("sqlite://{}", db.display()), rows).await
    }

    /// A provider whose adapter serves the table `penduduk` (`nik`, `nama`,
    /// `tgl_lahir`, `kecamatan`, `status`; `rows` rows) of the database at
    /// `database`; files go to `tmp`.
    pub(crate) async fn with_database(
        tmp: tempfile::TempDir,
        database: &str,
        rows: usize,
    ) -> Federation {
        Federation::with_dataset(tmp, database, rows, "").await
    }

    /// [`Federation::with_database`] with `dataset_extra` TOML in the
    /// adapter's dataset (its `[datasets.changes]`, say).
    pub(crate) async fn with_dataset(
        tmp: tempfile::TempDir,
        database: &str,
        rows: usize,
        dataset_extra: &str,
    ) -> Federation {
        let dir = tmp.path().to_owned();
        let all: Vec<Identity> = IDENTITIES
            .iter()
            .map(|(_, role, agency)| {
                Identity::new(*role, agency.map(|a| a.parse().unwrap())).unwrap()
            })
            .collect();
        let issued = jembatan_pki::dev_pki(&dir.join("certs"), &all).unwrap();
        let files: HashMap<String, TlsFiles> = IDENTITIES
            .iter()
            .zip(&all)
            .map(|((name, _, _), id)| {
                let f = issued.iter().find(|(x, _)| x == id).unwrap().1.clone();
                (name.to_string(), f)
            })
            .collect();
        let (stop, _) = watch::channel(false);
        let adapter_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let adapter_port = adapter_listener.local_addr().unwrap().port();
        let mut rx = stop.subscribe();
        serve_adapter(
            &files["adapter"],
            &dir,
            database,
            adapter_listener,
            "receipts.jsonl",
            dataset_extra,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )
        .await;
        let store = dir.join("broker.db").display().to_string();
        Federation {
            _tmp: tmp,
            dir,
            rows,
            files,
            adapter_port,
            store,
            stop,
            database: database.to_owned(),
            dataset_extra: dataset_extra.to_owned(),
        }
    }

    /// Another adapter of the provider on the same database, with a
    /// receipt log of its own (`receipt_log`, in the federation's
    /// directory); it stops when its handle is stopped or dropped.
    pub(crate) async fn another_adapter(&self, receipt_log: &str) -> AdapterHandle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut rx) = watch::channel(false);
        let served = serve_adapter(
            &self.files["adapter"],
            &self.dir,
            &self.database,
            listener,
            receipt_log,
            &self.dataset_extra,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )
        .await;
        AdapterHandle {
            port,
            stop,
            served: Some(served),
        }
    }

    /// The broker config: the provider and two consumers (`dinsos`,
    /// `dinkes`; `luar` is certified but not registered), the provider's
    /// dataset, two registered purposes, plus `extra` TOML (settings
    /// first, then tables such as `[[agreements]]`).
    pub(crate) fn broker_config(&self, settings: &str, tables: &str) -> BrokerConfig {
        self.broker_config_with(settings, "", tables)
    }

    /// [`Federation::broker_config`] with more `[[agencies]]` tables.
    pub(crate) fn broker_config_with(
        &self,
        settings: &str,
        agencies: &str,
        tables: &str,
    ) -> BrokerConfig {
        let b = &self.files["broker"];
        let settings = if settings.contains("agreement_watch_interval") {
            settings.to_owned()
        } else {
            format!("agreement_watch_interval = \"100ms\"\n{settings}")
        };
        let toml = format!(
            r#"
version = 1
listen = "127.0.0.1:0"
store = "{store}"
audit_key = "audit.key"
{settings}
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[[agencies]]
id = "prov"
name = "Provider"
adapter = "https://127.0.0.1:{port}"
[[agencies]]
id = "dinsos"
name = "Dinas Sosial"
[[agencies]]
id = "dinkes"
name = "Dinas Kesehatan"
{agencies}
[[datasets]]
id = "prov.penduduk"
key = "nik"
[[purposes]]
id = "bansos"
legal_basis = "Permensos 3/2021"
[[purposes]]
id = "kesehatan"
legal_basis = "UU 17/2023"
{tables}
"#,
            store = self.store,
            ca = b.ca.display(),
            cert = b.cert.display(),
            key = b.key.display(),
            port = self.adapter_port,
        );
        BrokerConfig::from_toml(&toml, &self.dir).unwrap()
    }

    /// Starts a broker (another replica when one runs: they share the store).
    pub(crate) async fn broker(&self, config: &BrokerConfig) -> BrokerHandle {
        let mut rx = self.stop.subscribe();
        self.broker_until(config, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
        .0
    }

    /// Starts a broker that shuts down when `shutdown` completes; the
    /// task serving it ends when it has.
    pub(crate) async fn broker_until(
        &self,
        config: &BrokerConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (
        BrokerHandle,
        tokio::task::JoinHandle<Result<(), jembatan_broker::BrokerError>>,
    ) {
        let broker = Broker::start(config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(jembatan_broker::serve(
            broker.clone(),
            listener,
            config.tls.server_config().unwrap(),
            shutdown,
        ));
        (BrokerHandle { broker, port }, served)
    }

    /// A channel with small HTTP/2 windows, so that a consumer that stops
    /// reading holds the broker back instead of buffering a whole stream.
    pub(crate) async fn channel(&self, port: u16, who: &str) -> Channel {
        Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .tls_config(self.files[who].client_config("localhost").unwrap())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

impl BrokerHandle {
    pub(crate) async fn exchange(&self, f: &Federation, who: &str) -> ExchangeClient<Channel> {
        ExchangeClient::new(f.channel(self.port, who).await)
    }

    pub(crate) async fn agreements(&self, f: &Federation, who: &str) -> AgreementsClient<Channel> {
        AgreementsClient::new(f.channel(self.port, who).await)
    }
}

/// An `[[agreements]]` table granting `fields` (TOML array text).
pub(crate) fn agreement_toml(
    id: &str,
    consumer: &str,
    fields: &str,
    status: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[[agreements]]
id = "{id}"
provider = "prov"
consumer = "{consumer}"
dataset = "prov.penduduk"
fields = {fields}
purpose = "bansos"
valid_from = "2020-01-01"
status = "{status}"
{extra}
"#
    )
}

pub(crate) fn query(fields: &[&str]) -> pb::QueryRequest {
    pb::QueryRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: fields.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub(crate) fn string(value: &str) -> pb::Scalar {
    pb::Scalar {
        kind: Some(pb::scalar::Kind::StringValue(value.into())),
    }
}

pub(crate) fn eq(field: &str, value: &str) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: pb::Operator::Eq as i32,
            value: Some(string(value)),
            values: vec![],
        })),
    }
}

/// What a query stream delivered before it ended, and how it ended.
pub(crate) struct Streamed {
    pub(crate) records: Vec<serde_json::Map<String, serde_json::Value>>,
    pub(crate) end: Result<(), tonic::Status>,
    pub(crate) receipt: Option<pb::Receipt>,
}

/// Reads a whole query stream, keeping what arrived before an error.
pub(crate) async fn run_query(
    client: &mut ExchangeClient<Channel>,
    req: pb::QueryRequest,
) -> Streamed {
    let mut out = Streamed {
        records: vec![],
        end: Ok(()),
        receipt: None,
    };
    let mut stream = match client.query(req).await {
        Ok(s) => s.into_inner(),
        Err(status) => {
            out.end = Err(status);
            return out;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(msg)) => match msg.item.unwrap() {
                pb::query_response::Item::Batch(b) => out
                    .records
                    .extend(b.records.iter().map(|r| serde_json::from_str(r).unwrap())),
                pb::query_response::Item::Receipt(r) => out.receipt = Some(r),
            },
            Ok(None) => break,
            Err(status) => {
                out.receipt = receipt_of(&status);
                out.end = Err(status);
                break;
            }
        }
    }
    out
}

pub(crate) fn receipt_of(status: &tonic::Status) -> Option<pb::Receipt> {
    jembatan_proto::trailers::receipt(status.metadata())
}

/// The denial codes a refused exchange's trailer carries.
pub(crate) fn denial_codes(status: &tonic::Status) -> Vec<String> {
    denial_details(status)
        .reasons
        .into_iter()
        .map(|r| r.reason)
        .collect()
}

/// A refused exchange's trailer; empty when it has none.
pub(crate) fn denial_details(status: &tonic::Status) -> pb::DenialDetails {
    jembatan_proto::trailers::denial_details(status.metadata()).unwrap_or_default()
}
