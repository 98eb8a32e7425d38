//! Support for the end-to-end tests: the built `jembatan` binary run as
//! separate processes — a provider's adapter and several broker replicas
//! on one PostgreSQL store, on loopback ports, with certificates from
//! `jembatan pki` — and gRPC clients holding agency certificates.
//!
//! The binary is the one cargo built beside the test executable
//! (`target/<profile>/jembatan`): `cargo test --workspace` builds it;
//! alone, run `cargo build -p jembatan-cli` first.

pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jembatan_pki::TlsFiles;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::{Kind, ProviderDb};
use tonic::transport::{Channel, Endpoint};

/// The `jembatan` binary cargo built for this profile.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> -> target/<profile>/jembatan
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable sits in target/<profile>/deps");
    let bin = profile.join(format!("jembatan{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p jembatan-cli` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A `jembatan` command run in `dir`.
pub fn jembatan(dir: &Path) -> Command {
    let mut command = Command::new(binary());
    command.current_dir(dir);
    command
}

/// Runs a `jembatan` command in `dir` and returns its output, failing the
/// test with its words when it fails.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    let out = jembatan(dir).args(args).output().expect("jembatan runs");
    assert!(
        out.status.success(),
        "jembatan {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process, killed when dropped however the test ends; its
/// standard error goes to a log file in the test's directory.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Process {
        Process::spawn_with_env(dir, name, args, &[])
    }

    /// [`Process::spawn`] with `env` added to the process's environment.
    pub fn spawn_with_env(
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = jembatan(dir)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("jembatan starts");
        Process { child, log }
    }

    /// Kills the process with SIGKILL: no shutdown runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM) and waits for it, at most 60 s.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{} exited {status}", self.log.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not stop within 60 s", self.log.display());
    }

    /// What the process wrote to standard error so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, what: &Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port}: {}",
            what.logged()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use jembatan_testkit::{PgStore, nik};

/// A provider (`prov`, its table `penduduk` behind a real adapter — or
/// several), two consumer agencies (`dinsos`, `dinkes`) and broker
/// replicas on one PostgreSQL store, each a process of its own. Each
/// process serves its Prometheus endpoint (`metrics_listen`) on a loopback
/// port of its own.
pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub store: String,
    /// The provider's adapters, in the order the brokers' config lists
    /// them; `None` once killed.
    pub adapters: Vec<Option<Process>>,
    /// Their endpoints, as the brokers' config names them.
    pub adapter_endpoints: Vec<String>,
    /// Each adapter's `metrics_listen` port, in the same order.
    pub adapter_metrics_ports: Vec<u16>,
    /// The replicas; `None` once stopped.
    pub brokers: Vec<Option<Process>>,
    pub ports: Vec<u16>,
    /// Each replica's `metrics_listen` port.
    pub metrics_ports: Vec<u16>,
}

/// What a [`Cluster`] runs, beyond its store and replicas.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Residents in the provider's SQLite table `penduduk`.
    pub rows: usize,
    /// Broker replicas.
    pub replicas: usize,
    /// TOML keys of the brokers' config.
    pub settings: String,
    /// TOML tables of the brokers' config (`[[agreements]]`, more
    /// `[[datasets]]`).
    pub tables: String,
    /// Adapter processes of the provider, on the same database, each with
    /// its own port and receipt log (`receipts-<i>.jsonl`).
    pub adapters: usize,
    /// The provider's database: its SQLite file with `penduduk` when
    /// `None`.
    pub database: Option<String>,
    /// TOML `[[datasets]]` of the adapters' config besides `penduduk`
    /// (which is served only from the SQLite file).
    pub adapter_datasets: String,
}

impl Spec {
    /// `replicas` brokers with `settings` and `tables` before one adapter
    /// on `rows` residents.
    pub fn new(rows: usize, replicas: usize, settings: &str, tables: &str) -> Spec {
        Spec {
            rows,
            replicas,
            settings: settings.to_owned(),
            tables: tables.to_owned(),
            adapters: 1,
            database: None,
            adapter_datasets: String::new(),
        }
    }
}

impl Cluster {
    /// Certificates, the provider's database of `rows` residents, its
    /// adapter, and `replicas` brokers on `store` with `settings` (TOML
    /// keys) and `tables` (`[[agreements]]`) in their config.
    pub async fn start(
        store: &str,
        rows: usize,
        replicas: usize,
        settings: &str,
        tables: &str,
    ) -> Cluster {
        Cluster::start_spec(store, &Spec::new(rows, replicas, settings, tables)).await
    }

    /// [`Cluster::start`] with `env(name)` added to the environment of
    /// each server process, `name` being `adapter-<i>` or `broker-<i>` (the
    /// `OTEL_*` variables of its telemetry, for instance).
    pub async fn start_with_env(
        store: &str,
        rows: usize,
        replicas: usize,
        settings: &str,
        tables: &str,
        env: impl Fn(&str) -> Vec<(String, String)>,
    ) -> Cluster {
        let spec = Spec::new(rows, replicas, settings, tables);
        Cluster::start_spec_with_env(store, &spec, env).await
    }

    /// A cluster as `spec` says, its brokers on `store`.
    pub async fn start_spec(store: &str, spec: &Spec) -> Cluster {
        Cluster::start_spec_with_env(store, spec, |_| Vec::new()).await
    }

    /// [`Cluster::start_spec`] with `env(name)` added to each server
    /// process's environment (see [`Cluster::start_with_env`]).
    pub async fn start_spec_with_env(
        store: &str,
        spec: &Spec,
        env: impl Fn(&str) -> Vec<(String, String)>,
    ) -> Cluster {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().to_owned();
        run(&dir, &["pki", "init", "--dir", "certs"]);
        for args in [
            &[
                "--role",
                "broker",
                "--host",
                "localhost",
                "--host",
                "127.0.0.1",
            ][..],
            &[
                "--role",
                "adapter",
                "--agency",
                "prov",
                "--host",
                "localhost",
            ],
            &["--role", "agency", "--agency", "prov"],
            &["--role", "agency", "--agency", "dinsos"],
            &["--role", "agency", "--agency", "dinkes"],
        ] {
            let mut all = vec!["pki", "issue", "--dir", "certs"];
            all.extend_from_slice(args);
            run(&dir, &all);
        }
        let penduduk = match &spec.database {
            None => {
                ProviderDb::new(Kind::Sqlite, &dir, spec.rows, "")
                    .await
                    .expect("SQLite is always there");
                r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama", "kecamatan"]
"#
            }
            Some(_) => "",
        };
        let database = spec
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("prov.db").display()));
        let mut adapters = Vec::new();
        let mut adapter_endpoints = Vec::new();
        let mut adapter_metrics_ports = Vec::new();
        for i in 0..spec.adapters {
            let adapter_port = free_port();
            let adapter_metrics_port = free_port();
            let config = format!("adapter-{i}.toml");
            std::fs::write(
                dir.join(&config),
                format!(
                    r#"version = 1
agency = "prov"
database = "{database}"
listen = "127.0.0.1:{adapter_port}"
metrics_listen = "127.0.0.1:{adapter_metrics_port}"
receipt_log = "receipts-{i}.jsonl"
[tls]
ca = "certs/ca.pem"
cert = "certs/adapter-prov.pem"
key = "certs/adapter-prov-key.pem"
{penduduk}
{more}
"#,
                    more = spec.adapter_datasets
                ),
            )
            .expect("adapter config");
            let name = format!("adapter-{i}");
            let adapter = Process::spawn_with_env(
                &dir,
                &name,
                &["adapter", "--config", &config],
                &env(&name),
            );
            wait_for_port(adapter_port, &adapter).await;
            wait_for_port(adapter_metrics_port, &adapter).await;
            adapters.push(Some(adapter));
            adapter_metrics_ports.push(adapter_metrics_port);
            adapter_endpoints.push(format!("https://localhost:{adapter_port}"));
        }

        let ports: Vec<u16> = (0..spec.replicas).map(|_| free_port()).collect();
        let metrics_ports: Vec<u16> = (0..spec.replicas).map(|_| free_port()).collect();
        for (i, (port, metrics_port)) in ports.iter().zip(&metrics_ports).enumerate() {
            let settings = format!(
                "metrics_listen = \"127.0.0.1:{metrics_port}\"\n{}",
                spec.settings
            );
            std::fs::write(
                dir.join(format!("broker-{i}.toml")),
                broker_toml(store, *port, &adapter_endpoints, &settings, &spec.tables),
            )
            .expect("broker config");
        }
        // the replicas share keys made once, before any starts
        run(
            &dir,
            &["broker", "--config", "broker-0.toml", "--create-keys"],
        );
        let mut brokers = Vec::new();
        for i in 0..spec.replicas {
            let config = format!("broker-{i}.toml");
            let name = format!("broker-{i}");
            brokers.push(Process::spawn_with_env(
                &dir,
                &name,
                &["broker", "--config", &config],
                &env(&name),
            ));
        }
        for ((broker, port), metrics_port) in brokers.iter().zip(&ports).zip(&metrics_ports) {
            wait_for_port(*port, broker).await;
            wait_for_port(*metrics_port, broker).await;
        }
        Cluster {
            _tmp: tmp,
            dir,
            store: store.to_owned(),
            adapters,
            adapter_endpoints,
            adapter_metrics_ports,
            brokers: brokers.into_iter().map(Some).collect(),
            ports,
            metrics_ports,
        }
    }

    /// Kills adapter `i` with SIGKILL.
    pub fn kill_adapter(&mut self, i: usize) {
        if let Some(mut adapter) = self.adapters[i].take() {
            adapter.kill();
        }
    }

    /// The certificate files of `who` (`dinsos`, `dinkes`, `prov`).
    pub fn agency(&self, who: &str) -> TlsFiles {
        let certs = self.dir.join("certs");
        TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("agency-{who}.pem")),
            key: certs.join(format!("agency-{who}-key.pem")),
            crl: None,
        }
    }

    /// A connection to replica `i` as agency `who`, with small HTTP/2
    /// windows so that a stream left unread holds the broker back.
    pub async fn exchange(&self, i: usize, who: &str) -> ExchangeClient<Channel> {
        let channel = Endpoint::from_shared(format!("https://localhost:{}", self.ports[i]))
            .expect("endpoint")
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .tls_config(self.agency(who).client_config("localhost").expect("TLS"))
            .expect("TLS config")
            .connect()
            .await
            .expect("connected");
        ExchangeClient::new(channel)
    }

    /// Kills replica `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut broker) = self.brokers[i].take() {
            broker.kill();
        }
    }

    /// Stops every replica still running with SIGTERM (each signs its
    /// last checkpoint as it stops).
    pub fn stop(&mut self) {
        for broker in self.brokers.iter_mut() {
            if let Some(mut broker) = broker.take() {
                broker.terminate();
            }
        }
    }

    /// What the running replicas logged.
    pub fn logged(&self) -> String {
        self.brokers
            .iter()
            .flatten()
            .map(Process::logged)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every entry of the log, as `jembatan audit export` writes them.
    pub fn export(&self) -> Vec<serde_json::Value> {
        let out = run(
            &self.dir,
            &[
                "audit",
                "export",
                "--format",
                "jsonl",
                "--store",
                &self.store,
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("an exported entry"))
            .collect()
    }

    /// `jembatan audit verify` on the store: its exit code and words.
    pub fn verify(&self) -> (Option<i32>, String) {
        let out = jembatan(&self.dir)
            .args(["audit", "verify", "--store", &self.store, "--public-key"])
            .arg(self.dir.join("checkpoint.key.pub"))
            .output()
            .expect("jembatan runs");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

fn broker_toml(
    store: &str,
    port: u16,
    adapters: &[String],
    settings: &str,
    tables: &str,
) -> String {
    let adapters = adapters
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"version = 1
listen = "127.0.0.1:{port}"
store = "{store}"
audit_key = "audit.key"
checkpoint_key = "checkpoint.key"
agreement_watch_interval = "200ms"
{settings}
[tls]
ca = "certs/ca.pem"
cert = "certs/broker.pem"
key = "certs/broker-key.pem"
[[agencies]]
id = "prov"
name = "Provider"
adapter = [{adapters}]
[[agencies]]
id = "dinsos"
name = "Dinas Sosial"
[[agencies]]
id = "dinkes"
name = "Dinas Kesehatan"
[[datasets]]
id = "prov.penduduk"
key = "nik"
[[purposes]]
id = "bansos"
legal_basis = "Permensos 3/2021"
{tables}
"#
    )
}

/// An approved `[[agreements]]` table for `consumer` on `prov.penduduk`
/// with `extra` TOML (a quota).
pub fn agreement(id: &str, consumer: &str, extra: &str) -> String {
    format!(
        r#"
[[agreements]]
id = "{id}"
provider = "prov"
consumer = "{consumer}"
dataset = "prov.penduduk"
fields = ["nik", "nama", "kecamatan"]
purpose = "bansos"
valid_from = "2020-01-01"
status = "approved"
{extra}
"#
    )
}

/// A query of `prov.penduduk` for the bansos purpose.
pub fn query(limit: u64) -> pb::QueryRequest {
    pb::QueryRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: vec!["nik".into(), "nama".into()],
        limit,
        ..Default::default()
    }
}

/// A lookup of resident `i`.
pub fn lookup(i: usize) -> pb::LookupRequest {
    pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: vec!["nama".into()],
        key: Some(pb::Scalar {
            kind: Some(pb::scalar::Kind::StringValue(nik(i))),
        }),
        ..Default::default()
    }
}

/// How a query stream went, as its consumer saw it.
#[derive(Debug, Default)]
pub struct Seen {
    pub records: usize,
    pub receipt: Option<pb::Receipt>,
    pub end: Option<tonic::Status>,
}

/// Reads a query stream to its end.
pub async fn read_stream(stream: &mut tonic::Streaming<pb::QueryResponse>, seen: &mut Seen) {
    loop {
        match stream.message().await {
            Ok(Some(message)) => match message.item {
                Some(pb::query_response::Item::Batch(batch)) => {
                    seen.records += batch.records.len();
                }
                Some(pb::query_response::Item::Receipt(receipt)) => seen.receipt = Some(receipt),
                None => {}
            },
            Ok(None) => return,
            Err(status) => {
                if seen.receipt.is_none() {
                    seen.receipt = jembatan_proto::trailers::receipt(status.metadata());
                }
                seen.end = Some(status);
                return;
            }
        }
    }
}

/// Runs a whole query.
pub async fn run_query(client: &mut ExchangeClient<Channel>, request: pb::QueryRequest) -> Seen {
    let mut seen = Seen::default();
    match client.query(request).await {
        Ok(response) => read_stream(&mut response.into_inner(), &mut seen).await,
        Err(status) => seen.end = Some(status),
    }
    seen
}
