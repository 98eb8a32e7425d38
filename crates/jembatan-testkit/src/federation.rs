//! The test federation: a provider (`prov`) whose table `penduduk` sits
//! behind a real adapter (or fake ones), brokers sharing one store, and a
//! certificate for every role from a development CA, built with
//! [`Federation::builder`].

use std::path::PathBuf;

use jembatan_adapter::AdapterConfig;
use jembatan_broker::{Broker, BrokerConfig, BrokerError};
use jembatan_core::{Identity, Role};
use jembatan_proto::v1::adapter_server::Adapter as AdapterProtocol;
use jembatan_proto::v1::agreements_client::AgreementsClient;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::databases::{Kind, ProviderDb};
use crate::pki::Pki;
use crate::serve::{self, ChannelOptions, Stop};

/// Every certificate the federation has, by name.
pub const IDENTITIES: [(&str, Role, Option<&str>); 12] = [
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

/// The adapter's whitelist of `penduduk`.
const COLUMNS: &str = r#"["nik", "nama", "tgl_lahir", "kecamatan", "status"]"#;

/// How a [`Federation`] is built.
#[must_use]
pub struct Builder {
    rows: usize,
    tmp: Option<tempfile::TempDir>,
    database: Option<String>,
    dataset_extra: String,
    real_adapter: bool,
    revocation_list: bool,
}

impl Builder {
    /// The residents in the provider's table (default 30); with
    /// [`Builder::database`], how many the given database holds.
    pub fn rows(mut self, rows: usize) -> Builder {
        self.rows = rows;
        self
    }

    /// Files (certificates, the store, receipt logs) go to `tmp`, which
    /// the federation keeps; a fresh directory by default.
    pub fn dir(mut self, tmp: tempfile::TempDir) -> Builder {
        self.tmp = Some(tmp);
        self
    }

    /// The adapter serves the table `penduduk` (`nik`, `nama`,
    /// `tgl_lahir`, `kecamatan`, `status`) of the database at `url`
    /// instead of a fresh SQLite file ([`ProviderDb`] makes one on any
    /// engine).
    pub fn database(mut self, url: &str) -> Builder {
        self.database = Some(url.to_owned());
        self
    }

    /// More TOML in the adapter's dataset (its `[datasets.changes]`, say).
    pub fn dataset_extra(mut self, toml: &str) -> Builder {
        self.dataset_extra = toml.to_owned();
        self
    }

    /// No real adapter (and, unless [`Builder::database`] gives one, no
    /// provider database): the provider's endpoints are the fake adapters
    /// added with [`Federation::fake_adapter`].
    pub fn without_adapter(mut self) -> Builder {
        self.real_adapter = false;
        self
    }

    /// The CA's revocation list is written (empty) and broker and adapter
    /// check it (`[tls] crl`); revoke with [`Pki::ca`].
    pub fn revocation_list(mut self) -> Builder {
        self.revocation_list = true;
        self
    }

    /// Issues the certificates, makes the provider's database and starts
    /// its adapter; no broker yet.
    pub async fn start(self) -> Federation {
        let tmp = match self.tmp {
            Some(tmp) => tmp,
            None => tempfile::tempdir().unwrap(),
        };
        let dir = tmp.path().to_owned();
        let members: Vec<(&str, Identity)> = IDENTITIES
            .iter()
            .map(|(name, role, agency)| {
                let agency = agency.map(|a| a.parse().unwrap());
                (*name, Identity::new(*role, agency).unwrap())
            })
            .collect();
        let files = Pki::issue(&dir.join("certs"), &members).unwrap();
        let crl = self
            .revocation_list
            .then(|| files.revocation_list().unwrap());
        let (database, sqlite) = match self.database {
            Some(url) => (url, None),
            None if !self.real_adapter => (String::new(), None),
            None => {
                let db = ProviderDb::new(Kind::Sqlite, &dir, self.rows, "")
                    .await
                    .expect("SQLite is always there");
                (db.url.clone(), Some(db))
            }
        };
        let mut federation = Federation {
            dir,
            rows: self.rows,
            files,
            adapter_port: 0,
            adapters: Vec::new(),
            store: tmp.path().join("broker.db").display().to_string(),
            crl,
            stop: Stop::new(),
            database,
            dataset_extra: self.dataset_extra,
            _sqlite: sqlite,
            _tmp: tmp,
        };
        if self.real_adapter {
            let (listener, port) = serve::loopback().await.unwrap();
            let config = federation.adapter_config(port, "receipts.jsonl");
            serve::adapter(&config, listener, federation.stop.signal())
                .await
                .unwrap();
            federation.adapter_port = port;
            federation.adapters.push(endpoint(port));
        }
        federation
    }
}

/// A running test federation: the provider's adapter (or fakes), the
/// certificates, the directory holding them and the broker store; brokers
/// are started on it with [`Federation::broker`]. Everything it started
/// stops when it is dropped.
pub struct Federation {
    /// Where its files are (removed when it is dropped).
    pub dir: PathBuf,
    /// The residents in the provider's table.
    pub rows: usize,
    /// Every member's certificate, by the names of [`IDENTITIES`].
    pub files: Pki,
    /// The port of the provider's (first) adapter.
    pub adapter_port: u16,
    /// The provider's adapter endpoints, as broker configs list them.
    pub adapters: Vec<String>,
    /// The broker store's URL (a SQLite file in `dir` unless a test sets
    /// another before making broker configs).
    pub store: String,
    /// The revocation list broker and adapter check, when there is one.
    pub crl: Option<PathBuf>,
    stop: Stop,
    /// The provider's database URL.
    database: String,
    /// More TOML for the adapter's dataset (a change source).
    dataset_extra: String,
    _sqlite: Option<ProviderDb>,
    _tmp: tempfile::TempDir,
}

/// An adapter started apart from the federation's own.
pub struct AdapterHandle {
    pub port: u16,
    stop: Stop,
    served: Option<JoinHandle<Result<(), jembatan_adapter::AdapterError>>>,
}

impl AdapterHandle {
    /// Its endpoint, as a broker config names it.
    pub fn endpoint(&self) -> String {
        endpoint(self.port)
    }

    /// Stops it and waits until it no longer serves.
    pub async fn stop(&mut self) {
        self.stop.stop();
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
    }
}

/// One running broker of the federation.
pub struct BrokerHandle {
    pub broker: Broker,
    pub port: u16,
}

fn endpoint(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

impl Federation {
    /// The default federation: a provider with `rows` residents in SQLite
    /// behind its adapter; no broker yet.
    pub async fn start(rows: usize) -> Federation {
        Federation::builder().rows(rows).start().await
    }

    /// A federation to build: 30 residents in SQLite behind a real
    /// adapter unless told otherwise.
    pub fn builder() -> Builder {
        Builder {
            rows: 30,
            tmp: None,
            database: None,
            dataset_extra: String::new(),
            real_adapter: true,
            revocation_list: false,
        }
    }

    /// The provider's adapter config, listening on `port` and logging
    /// receipts to `receipt_log` (in the federation's directory).
    fn adapter_config(&self, port: u16, receipt_log: &str) -> AdapterConfig {
        let tls = &self.files["adapter"];
        let toml = format!(
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
{crl}
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = {COLUMNS}
{dataset_extra}
"#,
            database = self.database,
            ca = tls.ca.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
            crl = self.crl_line(),
            dataset_extra = self.dataset_extra,
        );
        AdapterConfig::from_toml(&toml, &self.dir).unwrap()
    }

    fn crl_line(&self) -> String {
        match &self.crl {
            Some(path) => format!("crl = {:?}", path.display().to_string()),
            None => String::new(),
        }
    }

    /// Another adapter of the provider on the same database, with a
    /// receipt log of its own (`receipt_log`, in the federation's
    /// directory); it stops when its handle is stopped or dropped. Broker
    /// configs do not list it: give its [`AdapterHandle::endpoint`].
    pub async fn another_adapter(&self, receipt_log: &str) -> AdapterHandle {
        let (listener, port) = serve::loopback().await.unwrap();
        let config = self.adapter_config(port, receipt_log);
        let stop = Stop::new();
        let served = serve::adapter(&config, listener, stop.signal())
            .await
            .unwrap();
        AdapterHandle {
            port,
            stop,
            served: Some(served),
        }
    }

    /// Serves `service` as one more adapter endpoint of the provider, with
    /// the adapter's certificate, until the federation stops; broker
    /// configs made after list it. Returns its endpoint.
    pub async fn fake_adapter<A: AdapterProtocol>(&mut self, service: A) -> String {
        let (listener, port) = serve::loopback().await.unwrap();
        serve::adapter_service(
            service,
            &self.files["adapter"],
            listener,
            self.stop.signal(),
        )
        .unwrap();
        if self.adapters.is_empty() {
            self.adapter_port = port;
        }
        self.adapters.push(endpoint(port));
        endpoint(port)
    }

    /// The broker config: the provider and two consumers (`dinsos`,
    /// `dinkes`; `luar` is certified but not registered), the provider's
    /// dataset, two registered purposes, plus `settings` (top-level keys)
    /// and `tables` (such as `[[agreements]]`).
    pub fn broker_config(&self, settings: &str, tables: &str) -> BrokerConfig {
        self.broker_config_with(settings, "", tables)
    }

    /// [`Federation::broker_config`] with more `[[agencies]]` tables.
    pub fn broker_config_with(&self, settings: &str, agencies: &str, tables: &str) -> BrokerConfig {
        let b = &self.files["broker"];
        let settings = if settings.contains("agreement_watch_interval") {
            settings.to_owned()
        } else {
            format!("agreement_watch_interval = \"100ms\"\n{settings}")
        };
        let adapter = match self.adapters.as_slice() {
            [] => String::new(),
            [one] => format!("adapter = {one:?}"),
            several => format!("adapter = {several:?}"),
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
{crl}
[[agencies]]
id = "prov"
name = "Provider"
{adapter}
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
            crl = self.crl_line(),
        );
        BrokerConfig::from_toml(&toml, &self.dir).unwrap()
    }

    /// Starts a broker (another replica when one runs: they share the
    /// store); it serves until the federation is dropped.
    pub async fn broker(&self, config: &BrokerConfig) -> BrokerHandle {
        self.broker_until(config, self.stop.signal()).await.0
    }

    /// Starts a broker that shuts down when `shutdown` completes; the
    /// task serving it ends when it has.
    pub async fn broker_until(
        &self,
        config: &BrokerConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (BrokerHandle, JoinHandle<Result<(), BrokerError>>) {
        let (listener, _) = serve::loopback().await.unwrap();
        let served = serve::broker(config, listener, shutdown).await.unwrap();
        let handle = BrokerHandle {
            broker: served.broker,
            port: served.port,
        };
        (handle, served.task)
    }

    /// A channel to the server on `port` presenting `who`'s certificate,
    /// with small HTTP/2 windows, so that a consumer that stops reading
    /// holds the broker back instead of buffering a whole stream.
    pub async fn channel(&self, port: u16, who: &str) -> Channel {
        let options = ChannelOptions {
            small_windows: true,
        };
        serve::channel(port, &self.files[who], options)
            .await
            .unwrap()
    }
}

impl BrokerHandle {
    /// An `Exchange` client of this broker, as `who`.
    pub async fn exchange(&self, f: &Federation, who: &str) -> ExchangeClient<Channel> {
        ExchangeClient::new(f.channel(self.port, who).await)
    }

    /// An `Agreements` client of this broker, as `who`.
    pub async fn agreements(&self, f: &Federation, who: &str) -> AgreementsClient<Channel> {
        AgreementsClient::new(f.channel(self.port, who).await)
    }
}
