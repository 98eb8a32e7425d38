//! A development PKI, an adapter in front of the benchmark schema and a
//! broker with one approved agreement, served in process on loopback.

use std::path::Path;

use jembatan_adapter::AdapterConfig;
use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Identity, Role};
use jembatan_pki::TlsFiles;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::serve::{self, ChannelOptions};
use jembatan_testkit::{Pki, Stop};
use tonic::transport::Channel;

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
/// The consumer's own schema, which B1 also reads the table in.
pub(crate) const TARGET_SCHEMA: &str = "dinsos.warga@1";

/// The provider's schema, the consumer's and the mapping between them,
/// written under `<dir>/schemas` and registered by the broker at start.
const REGISTRY_FILES: [(&str, &str); 3] = [
    (
        "penduduk.json",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "nik": {"type": "string", "pattern": "^[0-9]{16}$"},
    "no_kk": {"type": "string", "pattern": "^[0-9]{16}$"},
    "nama_lengkap": {"type": "string", "minLength": 1, "maxLength": 120},
    "tempat_lahir": {"type": "string", "maxLength": 80},
    "tgl_lahir": {"type": "string", "format": "date"},
    "jenis_kelamin": {"enum": ["LAKI-LAKI", "PEREMPUAN"]},
    "agama": {"type": "string", "maxLength": 40},
    "pekerjaan": {"type": "string", "maxLength": 80},
    "kode_desa": {"type": "string", "pattern": "^[0-9]{2}\\.[0-9]{2}\\.[0-9]{2}\\.[0-9]{4}$"},
    "kode_kecamatan": {"type": "string", "pattern": "^[0-9]{2}\\.[0-9]{2}\\.[0-9]{2}$"},
    "status": {"enum": ["HIDUP", "MENINGGAL", "PINDAH"]}
  },
  "required": ["nik", "no_kk", "nama_lengkap", "tempat_lahir", "tgl_lahir", "jenis_kelamin",
               "agama", "pekerjaan", "kode_desa", "kode_kecamatan", "status"],
  "additionalProperties": false
}"#,
    ),
    (
        "warga.json",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "nik": {"type": "string", "pattern": "^[0-9]{16}$"},
    "family_card": {"type": "string", "pattern": "^[0-9]{16}$"},
    "full_name": {"type": "string", "minLength": 1},
    "birth_place": {"type": "string"},
    "birth_date": {"type": "string", "format": "date"},
    "sex": {"enum": ["M", "F"]},
    "religion": {"type": "string"},
    "occupation": {"type": "string"},
    "district_code": {"type": "string"},
    "address": {
      "type": "object",
      "properties": {"village_code": {"type": "string"}},
      "required": ["village_code"],
      "additionalProperties": false
    },
    "alive": {"type": "boolean"}
  },
  "required": ["nik", "full_name", "birth_date", "sex", "district_code", "address", "alive"],
  "additionalProperties": false
}"#,
    ),
    (
        "penduduk-to-warga.toml",
        r#"version = 1
source = "dukcapil.penduduk@1"
target = "dinsos.warga@1"
[[rule]]
target = "nik"
from = "nik"
[[rule]]
target = "family_card"
from = "no_kk"
[[rule]]
target = "full_name"
from = "nama_lengkap"
[[rule]]
target = "birth_place"
from = "tempat_lahir"
[[rule]]
target = "birth_date"
from = "tgl_lahir"
ops = [{ date = { parse = "%Y-%m-%d", format = "%Y-%m-%d" } }]
[[rule]]
target = "sex"
from = "jenis_kelamin"
ops = [{ value_map = { map = { "LAKI-LAKI" = "M", PEREMPUAN = "F" } } }]
[[rule]]
target = "religion"
from = "agama"
[[rule]]
target = "occupation"
from = "pekerjaan"
[[rule]]
target = "district_code"
from = "kode_kecamatan"
[[rule]]
target = "address.village_code"
from = "kode_desa"
[[rule]]
target = "alive"
when = { field = "status", op = "eq", value = "HIDUP" }
then = { const = true }
else = { const = false }
"#,
    ),
];

const REGISTRY_TOML: &str = r#"
[registry]
schemas = [
  { dataset = "dukcapil.penduduk", file = "schemas/penduduk.json" },
  { dataset = "dinsos.warga", file = "schemas/warga.json" },
]
mappings = ["schemas/penduduk-to-warga.toml"]
"#;

/// Writes the registry's files under `<dir>/schemas`.
pub(crate) fn write_registry_files(dir: &Path) -> Result<(), BenchError> {
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(&schemas)?;
    for (name, text) in REGISTRY_FILES {
        std::fs::write(schemas.join(name), text)?;
    }
    Ok(())
}

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
    Identity::new(role, agency).map_err(|e| BenchError::Options(e.to_string()))
}

impl Certs {
    /// A development CA in `dir` and the three certificates.
    pub(crate) fn issue(dir: &Path) -> Result<Certs, BenchError> {
        let pki = Pki::issue(
            dir,
            &[
                ("broker", identity(Role::Broker, None)?),
                ("adapter", identity(Role::Adapter, Some(PROVIDER))?),
                ("consumer", identity(Role::Agency, Some(CONSUMER))?),
            ],
        )?;
        Ok(Certs {
            broker: pki["broker"].clone(),
            adapter: pki["adapter"].clone(),
            consumer: pki["consumer"].clone(),
        })
    }
}

/// Adapter config text whitelisting every column of `penduduk`.
pub(crate) fn adapter_toml(
    population: &Population,
    port: u16,
    tls: &TlsFiles,
    receipt_log: &Path,
) -> String {
    adapter_toml_with(population, port, tls, receipt_log, None)
}

/// [`adapter_toml`] whose dataset reads its changes from a logical
/// replication slot and publication, when given, instead of its change
/// column.
pub(crate) fn adapter_toml_with(
    population: &Population,
    port: u16,
    tls: &TlsFiles,
    receipt_log: &Path,
    logical: Option<(&str, &str)>,
) -> String {
    let changes = match logical {
        None => format!("column = \"{}\"", crate::population::CHANGE_COLUMN),
        Some((slot, publication)) => format!(
            "logical = {{ slot = \"{slot}\", publication = \"{publication}\" }}\njournal = \"journal.sqlite\""
        ),
    };
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
[datasets.changes]
{changes}
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
    broker_toml_on(listen_port, adapter_port, tls, dir, None)
}

/// [`broker_toml`] with the store at `store` (a PostgreSQL URL, shared by
/// replicas) instead of a SQLite file in `dir`.
pub(crate) fn broker_toml_on(
    listen_port: u16,
    adapter_port: u16,
    tls: &TlsFiles,
    dir: &Path,
    store: Option<&str>,
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
subscribe = true
{REGISTRY_TOML}"#,
        store = store.map_or_else(
            || dir.join("broker.db").display().to_string(),
            str::to_owned
        ),
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
    /// Further replicas on the same store (see [`Cluster::start_on`]).
    replicas: Vec<(Broker, u16)>,
    stop: Stop,
}

impl Cluster {
    pub(crate) async fn start(population: &Population, dir: &Path) -> Result<Cluster, BenchError> {
        Cluster::start_on(population, &dir.join("in-process"), None, 1).await
    }

    /// `brokers` replicas (sharing keys and the store at `store`, a
    /// SQLite file in `dir` when `None`) in front of one adapter.
    pub(crate) async fn start_on(
        population: &Population,
        dir: &Path,
        store: Option<&str>,
        brokers: usize,
    ) -> Result<Cluster, BenchError> {
        Cluster::start_with(population, dir, store, brokers, None).await
    }

    /// [`Cluster::start_on`], the adapter reading the dataset's changes
    /// from a logical replication `(slot, publication)` when given.
    pub(crate) async fn start_with(
        population: &Population,
        dir: &Path,
        store: Option<&str>,
        brokers: usize,
        logical: Option<(&str, &str)>,
    ) -> Result<Cluster, BenchError> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let certs = Certs::issue(&dir.join("certs"))?;
        let stop = Stop::new();
        let (adapter_listener, adapter_port) = serve::loopback().await?;
        let text = adapter_toml_with(
            population,
            adapter_port,
            &certs.adapter,
            &dir.join("receipts.jsonl"),
            logical,
        );
        let config = AdapterConfig::from_toml(&text, &dir)?;
        serve::adapter(&config, adapter_listener, stop.signal()).await?;

        write_registry_files(&dir)?;
        let text = broker_toml_on(0, adapter_port, &certs.broker, &dir, store);
        let config = BrokerConfig::from_toml(&text, &dir)
            .map_err(|e| BenchError::Options(format!("broker config: {e}")))?;
        let mut started = Vec::with_capacity(brokers.max(1));
        for _ in 0..brokers.max(1) {
            let (listener, _) = serve::loopback().await?;
            let served = serve::broker(&config, listener, stop.signal()).await?;
            started.push((served.broker, served.port));
        }
        let (broker, broker_port) = started.remove(0);
        Ok(Cluster {
            broker,
            broker_port,
            certs,
            replicas: started,
            stop,
        })
    }

    /// A consumer client of replica `i` (modulo the replicas there are).
    pub(crate) async fn consumer_of(
        &self,
        i: usize,
    ) -> Result<ExchangeClient<Channel>, BenchError> {
        let k = i % (self.replicas.len() + 1);
        let port = if k == 0 {
            self.broker_port
        } else {
            self.replicas[k - 1].1
        };
        consumer(port, &self.certs.consumer).await
    }

    /// A consumer client on its own connection.
    pub(crate) async fn consumer(&self) -> Result<ExchangeClient<Channel>, BenchError> {
        consumer(self.broker_port, &self.certs.consumer).await
    }

    pub(crate) async fn stop(self) {
        self.stop.stop();
        for broker in std::iter::once(&self.broker).chain(self.replicas.iter().map(|(b, _)| b)) {
            if let Err(err) = broker.shutdown().await {
                crate::progress(format_args!("broker shutdown: {err}"));
            }
        }
    }
}

/// A consumer client of the broker at `port` on its own connection.
pub(crate) async fn consumer(
    port: u16,
    tls: &TlsFiles,
) -> Result<ExchangeClient<Channel>, BenchError> {
    let channel = serve::channel(port, tls, ChannelOptions::default()).await?;
    Ok(ExchangeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}
