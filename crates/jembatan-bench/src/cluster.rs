//! A development PKI, an adapter in front of the benchmark schema and a
//! broker with one approved agreement, served in process on loopback.

use std::path::Path;
use std::sync::Arc;

use jembatan_adapter::{Adapter, AdapterConfig};
use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Identity, Role};
use jembatan_pki::TlsFiles;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::BenchError;
use crate::population::{COLUMNS, Population};

/// Provider agency (the population registry).
pub(crate) const PROVIDER: &str = "dukcapil";
/// Consumer agency.
pub(crate) const CONSUMER: &str = "dinsos";
/// Dataset id on the broker.
pub(crate) const DATASET: &str = "dukcapil.penduduk";
/// Purpose named by the agreement and every request.
pub(crate) const PURPOSE: &str = "bench";

/// Certificates of the broker, the adapter and the consumer.
pub(crate) struct Certs {
    pub(crate) broker: TlsFiles,
    pub(crate) adapter: TlsFiles,
    pub(crate) consumer: TlsFiles,
}

fn identity(role: Role, agency: Option<&str>) -> Result<Identity, BenchError> {
    let agency = agency
        .map(|a| a.parse())
        .transpose()
        .map_err(|e| BenchError::Options(format!("agency id: {e}")))?;
    Identity::new(role, agency).map_err(BenchError::Options)
}

impl Certs {
    /// A development CA in `dir` and the three certificates.
    pub(crate) fn issue(dir: &Path) -> Result<Certs, BenchError> {
        let ids = [
            identity(Role::Broker, None)?,
            identity(Role::Adapter, Some(PROVIDER))?,
            identity(Role::Agency, Some(CONSUMER))?,
        ];
        let mut issued = jembatan_pki::dev_pki(dir, &ids)?;
        if issued.len() != 3 {
            return Err(BenchError::Inconsistent(
                "dev PKI issued a wrong count".into(),
            ));
        }
        let consumer = issued.pop().map(|(_, f)| f);
        let adapter = issued.pop().map(|(_, f)| f);
        let broker = issued.pop().map(|(_, f)| f);
        match (broker, adapter, consumer) {
            (Some(broker), Some(adapter), Some(consumer)) => Ok(Certs {
                broker,
                adapter,
                consumer,
            }),
            _ => Err(BenchError::Inconsistent(
                "dev PKI issued a wrong count".into(),
            )),
        }
    }
}

/// Adapter config text whitelisting every column of `penduduk`.
pub(crate) fn adapter_toml(
    population: &Population,
    port: u16,
    tls: &TlsFiles,
    receipt_log: &Path,
) -> String {
    let columns: Vec<String> = COLUMNS.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"version = 1
agency = "{PROVIDER}"
database = "{db}"
listen = "127.0.0.1:{port}"
receipt_log = "{log}"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[[datasets]]
name = "penduduk"
table = "penduduk"
schema = "{schema}"
key = "nik"
columns = [{columns}]
"#,
        db = population.url,
        log = receipt_log.display(),
        ca = tls.ca.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        schema = population.schema,
        columns = columns.join(", "),
    )
}

/// Broker config text: the provider's adapter at `adapter_port`, one
/// approved agreement granting every column to the consumer.
pub(crate) fn broker_toml(
    listen_port: u16,
    adapter_port: u16,
    tls: &TlsFiles,
    dir: &Path,
) -> String {
    let columns: Vec<String> = COLUMNS.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"version = 1
listen = "127.0.0.1:{listen_port}"
store = "{store}"
audit_key = "{audit_key}"
checkpoint_key = "{checkpoint_key}"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[[agencies]]
id = "{PROVIDER}"
name = "Dinas Kependudukan dan Pencatatan Sipil"
adapter = "https://127.0.0.1:{adapter_port}"
[[agencies]]
id = "{CONSUMER}"
name = "Dinas Sosial"
[[datasets]]
id = "{DATASET}"
key = "nik"
[[agreements]]
id = "bench-1"
provider = "{PROVIDER}"
consumer = "{CONSUMER}"
dataset = "{DATASET}"
fields = [{columns}]
purpose = "{PURPOSE}"
valid_from = "2020-01-01"
valid_until = "2099-01-01"
status = "approved"
"#,
        store = dir.join("broker.db").display(),
        audit_key = dir.join("audit.key").display(),
        checkpoint_key = dir.join("checkpoint.key").display(),
        ca = tls.ca.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        columns = columns.join(", "),
    )
}

/// Adapter and broker served in this process.
pub(crate) struct Cluster {
    pub(crate) broker: Broker,
    pub(crate) broker_port: u16,
    pub(crate) certs: Certs,
    stop: watch::Sender<bool>,
}

impl Cluster {
    pub(crate) async fn start(population: &Population, dir: &Path) -> Result<Cluster, BenchError> {
        let dir = dir.join("in-process");
        std::fs::create_dir_all(&dir)?;
        let certs = Certs::issue(&dir.join("certs"))?;
        let (stop, stop_rx) = watch::channel(false);
        let shutdown = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };

        let adapter_listener = TcpListener::bind("127.0.0.1:0").await?;
        let adapter_port = adapter_listener.local_addr()?.port();
        let text = adapter_toml(
            population,
            adapter_port,
            &certs.adapter,
            &dir.join("receipts.jsonl"),
        );
        let config = AdapterConfig::from_toml(&text, &dir)?;
        let adapter = Arc::new(Adapter::connect(&config).await?);
        tokio::spawn(jembatan_adapter::serve(
            adapter,
            adapter_listener,
            config.tls.server_config()?,
            shutdown(),
        ));

        let text = broker_toml(0, adapter_port, &certs.broker, &dir);
        let config = BrokerConfig::from_toml(&text, &dir)
            .map_err(|e| BenchError::Options(format!("broker config: {e}")))?;
        let broker = Broker::start(&config).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let broker_port = listener.local_addr()?.port();
        tokio::spawn(jembatan_broker::serve(
            broker.clone(),
            listener,
            config.tls.server_config()?,
            shutdown(),
        ));
        Ok(Cluster {
            broker,
            broker_port,
            certs,
            stop,
        })
    }

    /// A consumer client on its own connection.
    pub(crate) async fn consumer(&self) -> Result<ExchangeClient<Channel>, BenchError> {
        consumer(self.broker_port, &self.certs.consumer).await
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(err) = self.broker.shutdown().await {
            crate::progress(format_args!("broker shutdown: {err}"));
        }
    }
}

/// A consumer client of the broker at `port` on its own connection.
pub(crate) async fn consumer(
    port: u16,
    tls: &TlsFiles,
) -> Result<ExchangeClient<Channel>, BenchError> {
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .map_err(|e| BenchError::Options(e.to_string()))?
        .tls_config(tls.client_config("localhost")?)?
        .connect()
        .await?;
    Ok(ExchangeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}
