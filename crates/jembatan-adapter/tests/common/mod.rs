//! Test databases: a fresh, isolated namespace per test on SQLite,
//! PostgreSQL or MariaDB, and helpers to build adapters and read fetches.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use jembatan_adapter::{Adapter, AdapterConfig, DatasetConfig};
use jembatan_proto::v1 as pb;
use sqlx::{AssertSqlSafe, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

/// An isolated database namespace that lives for one test.
pub struct TestDb {
    pub kind: Kind,
    /// URL the adapter connects with.
    pub url: String,
    pub dir: tempfile::TempDir,
    admin_url: String,
    namespace: String,
    dropped: bool,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

impl TestDb {
    /// A fresh namespace, or `None` (after printing why) when the backend's
    /// URL is not set.
    pub async fn new(kind: Kind) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("tempdir");
        match kind {
            Kind::Sqlite => {
                let path = dir.path().join("test.db");
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(opts)
                    .await
                    .expect("create sqlite");
                pool.close().await;
                Some(TestDb {
                    kind,
                    url: format!("sqlite://{}", path.display()),
                    dir,
                    admin_url: String::new(),
                    namespace: String::new(),
                    dropped: true,
                })
            }
            Kind::Postgres => {
                let Ok(admin_url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
                    println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
                    return None;
                };
                let schema = unique("jembatan_t_");
                let pool = sqlx::PgPool::connect(&admin_url)
                    .await
                    .expect("connect postgres");
                pool.execute(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .await
                    .expect("create schema");
                pool.close().await;
                let sep = if admin_url.contains('?') { '&' } else { '?' };
                Some(TestDb {
                    kind,
                    url: format!("{admin_url}{sep}options=-c%20search_path%3D{schema}"),
                    dir,
                    admin_url,
                    namespace: schema,
                    dropped: false,
                })
            }
            Kind::MySql => {
                let Ok(admin_url) = std::env::var("JEMBATAN_TEST_MYSQL_URL") else {
                    println!("skipped: no MariaDB (set JEMBATAN_TEST_MYSQL_URL)");
                    return None;
                };
                let name = unique("jembatan_t_");
                let pool = sqlx::MySqlPool::connect(&admin_url)
                    .await
                    .expect("connect mariadb");
                pool.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create database");
                pool.close().await;
                let scheme_end = admin_url.find("://").expect("url scheme") + 3;
                let path_start = admin_url[scheme_end..]
                    .find('/')
                    .map(|i| i + scheme_end)
                    .unwrap_or(admin_url.len());
                let query = admin_url[path_start..]
                    .find('?')
                    .map(|i| &admin_url[path_start + i..])
                    .unwrap_or("");
                Some(TestDb {
                    kind,
                    url: format!("{}/{name}{query}", &admin_url[..path_start]),
                    dir,
                    admin_url,
                    namespace: name,
                    dropped: false,
                })
            }
        }
    }

    /// Runs statements (separated by `;` at line ends) in the namespace.
    pub async fn exec(&self, sql: &str) {
        for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            let r = match self.kind {
                Kind::Sqlite => {
                    let pool = self.sqlite().await;
                    let r = pool
                        .execute(AssertSqlSafe(stmt.to_owned()))
                        .await
                        .map(|_| ());
                    pool.close().await;
                    r
                }
                Kind::Postgres => {
                    let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
                    let r = pool
                        .execute(AssertSqlSafe(stmt.to_owned()))
                        .await
                        .map(|_| ());
                    pool.close().await;
                    r
                }
                Kind::MySql => {
                    let pool = sqlx::MySqlPool::connect(&self.url).await.expect("connect");
                    let r = pool
                        .execute(AssertSqlSafe(stmt.to_owned()))
                        .await
                        .map(|_| ());
                    pool.close().await;
                    r
                }
            };
            r.unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
    }

    pub async fn sqlite(&self) -> sqlx::SqlitePool {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url).expect("url");
        sqlx::SqlitePool::connect_with(opts)
            .await
            .expect("connect sqlite")
    }

    /// Counts the rows of a table, straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self.kind {
            Kind::Sqlite => {
                let pool = self.sqlite().await;
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&pool)
                    .await
                    .expect("count");
                pool.close().await;
                n
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&pool)
                    .await
                    .expect("count");
                pool.close().await;
                n
            }
            Kind::MySql => {
                let pool = sqlx::MySqlPool::connect(&self.url).await.expect("connect");
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&pool)
                    .await
                    .expect("count");
                pool.close().await;
                n
            }
        }
    }

    /// Drops the namespace.
    pub async fn drop_namespace(mut self) {
        drop_namespace(self.kind, &self.admin_url, &self.namespace).await;
        self.dropped = true;
    }

    pub fn receipt_log(&self) -> PathBuf {
        self.dir.path().join("receipts.jsonl")
    }

    /// A config for agency `disdukcapil` over this database.
    pub fn config(&self, datasets: &str) -> AdapterConfig {
        let text = format!(
            r#"
version = 1
agency = "disdukcapil"
database = "{}"
listen = "127.0.0.1:0"
receipt_log = "receipts.jsonl"
batch_size = 100

[tls]
ca = "ca.pem"
cert = "adapter.pem"
key = "adapter-key.pem"

{datasets}
"#,
            self.url
        );
        AdapterConfig::from_toml(&text, self.dir.path()).expect("test config")
    }

    pub async fn adapter(&self, datasets: &str) -> Arc<Adapter> {
        Arc::new(
            Adapter::connect(&self.config(datasets))
                .await
                .expect("adapter starts"),
        )
    }
}

pub fn dataset(name: &str) -> DatasetConfig {
    DatasetConfig {
        name: name.into(),
        table: name.into(),
        schema: None,
        key: None,
        columns: Vec::new(),
        row_filter: None,
        changes: None,
    }
}

/// A fetch request for `disdukcapil.<dataset>`.
pub fn fetch(
    dataset: &str,
    columns: &[&str],
    filter: Option<serde_json::Value>,
) -> pb::FetchRequest {
    pb::FetchRequest {
        exchange_id: uuid::Uuid::new_v4().to_string(),
        dataset: format!("disdukcapil.{dataset}"),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        filter: filter.map(|f| {
            serde_json::from_value::<jembatan_core::Filter>(f)
                .expect("test filter")
                .to_proto()
        }),
        limit: 0,
        batch_size: 0,
        consumer: "dinsos".into(),
        purpose: "verifikasi bansos".into(),
        parts: Vec::new(),
    }
}

/// Runs a fetch to the end; returns the batches' records.
pub async fn run(
    adapter: &Arc<Adapter>,
    req: pb::FetchRequest,
) -> Result<Vec<Vec<String>>, tonic::Status> {
    let mut stream = adapter.fetch(req)?;
    let mut batches = Vec::new();
    while let Some(item) = stream.next().await {
        batches.push(item?.batch.expect("batch").records);
    }
    Ok(batches)
}

/// Runs a fetch and returns all records flattened.
pub async fn records(adapter: &Arc<Adapter>, req: pb::FetchRequest) -> Vec<String> {
    run(adapter, req).await.expect("fetch succeeds").concat()
}

/// Waits until the receipt log has `n` entries.
pub async fn log_entries(path: &Path, n: usize) -> Vec<jembatan_adapter::LogEntry> {
    for _ in 0..200 {
        if let Ok(entries) = jembatan_adapter::read_receipt_log(path)
            && entries.len() >= n
        {
            return entries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("receipt log {} never reached {n} entries", path.display());
}

async fn drop_namespace(kind: Kind, admin_url: &str, namespace: &str) {
    match kind {
        Kind::Sqlite => {}
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(admin_url).await.expect("connect");
            pool.execute(AssertSqlSafe(format!("DROP SCHEMA {namespace} CASCADE")))
                .await
                .expect("drop schema");
            pool.close().await;
        }
        Kind::MySql => {
            let pool = sqlx::MySqlPool::connect(admin_url).await.expect("connect");
            pool.execute(AssertSqlSafe(format!("DROP DATABASE {namespace}")))
                .await
                .expect("drop database");
            pool.close().await;
        }
    }
}

impl Drop for TestDb {
    /// A test that panicked before `drop_namespace` still cleans up.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (kind, admin_url, namespace) =
            (self.kind, self.admin_url.clone(), self.namespace.clone());
        let cleanup = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_namespace(kind, &admin_url, &namespace));
            }
        });
        let _ = cleanup.join();
    }
}

/// An adapter served over mutual TLS on 127.0.0.1:0, with the broker's
/// certificate to call it.
pub struct Served {
    pub port: u16,
    pub broker: jembatan_pki::TlsFiles,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), jembatan_adapter::AdapterError>>>,
    _pki: tempfile::TempDir,
}

impl Served {
    /// Starts the gRPC server of `adapter` (agency `disdukcapil`).
    pub async fn start(adapter: Arc<Adapter>) -> Served {
        use jembatan_core::{Identity, Role};
        let pki = tempfile::tempdir().expect("tempdir");
        let broker = Identity::new(Role::Broker, None).expect("broker");
        let server_id = Identity::new(Role::Adapter, Some("disdukcapil".parse().expect("agency")))
            .expect("adapter");
        let files = jembatan_pki::dev_pki(pki.path(), &[broker.clone(), server_id.clone()])
            .expect("dev pki");
        let get = |id: &Identity| {
            files
                .iter()
                .find(|(i, _)| i == id)
                .expect("issued")
                .1
                .clone()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(jembatan_adapter::serve(
            adapter,
            listener,
            get(&server_id).server_config().expect("server tls"),
            async {
                let _ = stopped.await;
            },
        ));
        Served {
            port,
            broker: get(&broker),
            stop: Some(stop),
            server: Some(server),
            _pki: pki,
        }
    }

    /// A channel with the broker's certificate.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", self.port))
            .expect("endpoint")
            .connect_timeout(std::time::Duration::from_secs(5))
            .tls_config(self.broker.client_config("localhost").expect("client tls"))
            .expect("tls config")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(
        &self,
    ) -> jembatan_proto::v1::adapter_client::AdapterClient<tonic::transport::Channel> {
        jembatan_proto::v1::adapter_client::AdapterClient::new(self.channel().await)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .expect("server stops")
                .expect("server task")
                .expect("server result");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs a fetch over gRPC to the end; returns its records.
pub async fn fetch_grpc(
    client: &mut jembatan_proto::v1::adapter_client::AdapterClient<tonic::transport::Channel>,
    req: impl tonic::IntoRequest<pb::FetchRequest>,
) -> Result<Vec<String>, tonic::Status> {
    let mut stream = client.fetch(req).await?.into_inner();
    let mut records = Vec::new();
    while let Some(msg) = stream.message().await? {
        records.extend(msg.batch.expect("batch").records);
    }
    Ok(records)
}

/// A codec that sends request bytes as given, for requests no generated
/// client would encode (invalid UTF-8 in a string field, garbage).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, Self::Error> {
        use prost::bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends raw bytes as a `Fetch` request and reads the stream to its end.
/// Returns the number of response messages, or the status.
pub async fn fetch_raw(
    channel: tonic::transport::Channel,
    body: Vec<u8>,
) -> Result<usize, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/jembatan.v1.Adapter/Fetch");
    let mut stream = grpc
        .server_streaming(tonic::Request::new(body), path, RawCodec)
        .await?
        .into_inner();
    let mut n = 0;
    while stream.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}
