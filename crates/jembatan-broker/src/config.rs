//! The broker's TOML config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jembatan_core::{AgencyId, Agreement, DatasetId, FieldName};
use jembatan_pki::TlsFiles;
use serde::Deserialize;

use crate::BrokerError;
pub use crate::lifecycle::Purpose;

/// Broker configuration. Relative paths are resolved against the config
/// file's directory.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Config format version; must be 1.
    pub version: u32,
    /// Address the Exchange service listens on.
    pub listen: SocketAddr,
    /// Address serving metrics in the Prometheus text format
    /// (`GET /metrics`, plain HTTP, counts only); none when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Store location: a file path or `sqlite:PATH` (embedded default), or
    /// `postgres://...`.
    pub store: String,
    /// TLS to a PostgreSQL store: the CA its certificate must chain to,
    /// and whether a store off this machine may be reached without
    /// verified TLS (`allow_plaintext`, off by default).
    #[serde(default)]
    pub store_tls: jembatan_core::dbtls::DatabaseTls,
    /// File holding the secret (hex) that keys the hashes of lookup keys
    /// on the audit log; created on first start.
    pub audit_key: PathBuf,
    /// File holding the C2SP signer key (`PRIVATE+KEY+<origin>+...`) that
    /// signs the audit log's checkpoints; created on first start (mode
    /// 0600) with `<file>.pub` holding the verifier key.
    #[serde(default = "default_checkpoint_key")]
    pub checkpoint_key: PathBuf,
    /// The audit log's identity: the first line of its checkpoints and the
    /// name of the checkpoint key.
    #[serde(default = "default_log_origin")]
    pub log_origin: String,
    /// Sign a checkpoint after this many new entries...
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ...or after this long, whichever comes first (`"10s"`, `"1m"`).
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    #[schemars(with = "jembatan_core::config_schema::HumanDuration")]
    pub checkpoint_interval: Duration,
    /// After start, re-check every stored audit entry and checkpoint in
    /// the background, on one thread, as `jembatan audit verify` does, and
    /// report the outcome (a log line and the `jembatan_audit_recheck_ok`
    /// gauge). Start itself checks only the latest checkpoint against the
    /// stored tiles. Turn it off where a log of billions of entries is
    /// verified elsewhere (on a replica of the store).
    #[serde(default = "default_true")]
    pub recheck_log: bool,
    /// The broker's certificate and key, and the federation's CA that
    /// every agency's certificate must chain to.
    pub tls: TlsFiles,
    /// The agencies registered with this broker. Only their certificates
    /// exchange data, take agreement steps or write to the registry; a
    /// certificate of any other agency is refused even when the
    /// federation's CA issued it.
    #[serde(default)]
    pub agencies: Vec<AgencyConfig>,
    /// The datasets offered through this broker, each provided by one of
    /// `agencies` (the agency part of its id).
    #[serde(default)]
    pub datasets: Vec<DatasetConfig>,
    /// Agreements stored at start unless one with the same id is stored
    /// already (the stored one wins: it may have been approved or revoked
    /// since through the Agreements service).
    #[serde(default)]
    pub agreements: Vec<Agreement>,
    /// The legal bases agreements may name as their purpose. Proposals
    /// must name one; config agreements too, when any are listed.
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    /// Whether an operator approves agreements after their provider.
    #[serde(default)]
    pub operator_approval: bool,
    /// How often the broker looks for agreements revoked through another
    /// replica and for agreements whose window ended (`"1s"`).
    #[serde(default = "default_agreement_watch", with = "humantime_serde")]
    #[schemars(with = "jembatan_core::config_schema::HumanDuration")]
    pub agreement_watch_interval: Duration,
    /// Most exchanges one agency may have running at once, across every
    /// broker replica sharing the store (counted in the store; exchanges
    /// of a replica found gone stop counting).
    #[serde(default = "default_max_streams_per_agency")]
    pub max_streams_per_agency: usize,
    /// Most query streams one consumer agency may have open at once
    /// against one provider, across every broker replica sharing the
    /// store (counted in the store, like `max_streams_per_agency`). Each
    /// holds one of the provider adapter's database connections while it
    /// runs.
    #[serde(default = "default_max_streams_per_provider")]
    pub max_streams_per_provider: usize,
    /// How long a query stream may wait for its consumer to take the next
    /// batch (`"30s"`); a stream left unread longer is ended, logged
    /// `cancelled`, and its adapter stream and database connection freed.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    #[schemars(with = "jembatan_core::config_schema::HumanDuration")]
    pub stall_timeout: Duration,
    /// On SIGTERM (or Ctrl-C) the broker stops taking calls and gives
    /// running query streams this long to finish (`"20s"`); those still
    /// running then end `Unavailable`, logged `cancelled`, before the last
    /// checkpoint is signed and the process exits.
    #[serde(default = "default_drain_time", with = "humantime_serde")]
    #[schemars(with = "jembatan_core::config_schema::HumanDuration")]
    pub drain_time: Duration,
    /// How often this broker renews its replica lease in the store and
    /// looks for replicas that are gone (`"2s"`).
    #[serde(default = "default_replica_heartbeat", with = "humantime_serde")]
    #[schemars(with = "jembatan_core::config_schema::HumanDuration")]
    pub replica_heartbeat: Duration,
    /// How long a replica lease lasts from each renewal (`"10s"`; at least
    /// twice `replica_heartbeat`). A broker that cannot renew it in time
    /// stops starting and ending exchanges; one whose lease has been over
    /// for one more `replica_heartbeat` is gone, and a surviving replica
    /// closes its open exchanges `abandoned`.
    #[serde(default = "default_replica_lease", with = "humantime_serde")]
    #[schemars(with = "jembatan_core::config_schema::HumanDuration")]
    pub replica_lease: Duration,
    /// How often gRPC health checks that the audit log can be written
    /// (`jembatan.v1.Exchange` is NOT_SERVING while it cannot).
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    #[schemars(with = "jembatan_core::config_schema::HumanDuration")]
    pub health_interval: Duration,
    /// The schema registry: its default compatibility mode, and the
    /// schemas, mappings and secrets registered at start.
    #[serde(default)]
    pub registry: RegistryConfig,
}

/// The schema registry's settings, and schemas and mappings to register
/// at start.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Mode for datasets that set none (`BACKWARD`, `FULL_TRANSITIVE`, ...).
    #[serde(default = "default_compatibility")]
    pub default_compatibility: String,
    /// Schemas registered at start, in order; one already registered is
    /// found again, an incompatible one stops the broker from starting.
    #[serde(default)]
    pub schemas: Vec<SchemaFile>,
    /// Mapping documents (TOML or JSON files) registered at start unless
    /// the same version is already stored.
    #[serde(default)]
    pub mappings: Vec<PathBuf>,
    /// Secrets named by mappings' `hash` operations: name -> file holding
    /// the key in hex (at least 32 bytes), created on first start.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            default_compatibility: default_compatibility(),
            schemas: Vec::new(),
            mappings: Vec::new(),
            secrets: std::collections::BTreeMap::new(),
        }
    }
}

fn default_compatibility() -> String {
    "BACKWARD".into()
}

/// A schema file to register as a dataset's next version.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaFile {
    /// The dataset the schema describes, `<agency>.<dataset>`.
    pub dataset: DatasetId,
    /// The schema file (JSON Schema), registered as the dataset's next
    /// version.
    pub file: PathBuf,
}

fn default_agreement_watch() -> Duration {
    Duration::from_secs(1)
}

fn default_max_streams_per_agency() -> usize {
    64
}

/// Most query streams a consumer may hold against one provider when the
/// config does not say: well below an adapter's default pool of 8
/// database connections, so that several consumers streaming at once
/// leave connections for lookups.
pub const DEFAULT_MAX_STREAMS_PER_PROVIDER: usize = 2;
/// The most `max_streams_per_provider` may be.
pub const MAX_STREAMS_PER_PROVIDER: usize = 64;
/// How long a stream waits for its consumer to read, when the config does
/// not say.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

fn default_max_streams_per_provider() -> usize {
    DEFAULT_MAX_STREAMS_PER_PROVIDER
}

/// How often a broker renews its replica lease, when the config does not
/// say.
pub const DEFAULT_REPLICA_HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a replica lease lasts, when the config does not say.
pub const DEFAULT_REPLICA_LEASE: Duration = Duration::from_secs(10);

fn default_replica_heartbeat() -> Duration {
    DEFAULT_REPLICA_HEARTBEAT
}

fn default_replica_lease() -> Duration {
    DEFAULT_REPLICA_LEASE
}

fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_stall_timeout() -> Duration {
    DEFAULT_STALL_TIMEOUT
}

/// How long running streams may finish after a shutdown signal, when the
/// config does not say.
pub const DEFAULT_DRAIN_TIME: Duration = Duration::from_secs(20);

fn default_true() -> bool {
    true
}

fn default_drain_time() -> Duration {
    DEFAULT_DRAIN_TIME
}

fn default_checkpoint_key() -> PathBuf {
    PathBuf::from("checkpoint.key")
}

fn default_log_origin() -> String {
    "jembatan.local/audit-log".into()
}

fn default_checkpoint_every() -> u64 {
    1000
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}

/// An agency registered with the broker.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    /// The agency's id, as carried in its certificates (`disdukcapil`).
    pub id: AgencyId,
    /// The agency's name, in words (`Dinas Kependudukan dan Pencatatan
    /// Sipil`).
    pub name: String,
    /// The agency's adapter, `https://host:port`, when it provides data;
    /// or a list of endpoints of the same adapter service
    /// (`["https://a1:7443", "https://a2:7443"]`, at most
    /// 16), tried in order: an exchange, a whitelist check or a receipt
    /// goes to the next when one cannot be reached or answers
    /// `UNAVAILABLE` before sending any record, and an endpoint that
    /// failed is tried after the others for a short while. Completion and
    /// answered audit entries name the endpoint that served.
    #[serde(default)]
    pub adapter: Option<AdapterEndpoints>,
}

/// Most endpoints one agency's adapter may list.
pub const MAX_ADAPTER_ENDPOINTS: usize = 16;

/// An agency's adapter endpoints: one URL, or several tried in order.
#[derive(Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(inline)]
pub enum AdapterEndpoints {
    /// One endpoint, `https://host:port`.
    One(String),
    /// Endpoints of the same adapter service, in the order they are tried.
    Several(Vec<String>),
}

impl AdapterEndpoints {
    /// The endpoints, in the order they are tried.
    pub fn urls(&self) -> &[String] {
        match self {
            AdapterEndpoints::One(url) => std::slice::from_ref(url),
            AdapterEndpoints::Several(urls) => urls,
        }
    }
}

impl From<&str> for AdapterEndpoints {
    fn from(url: &str) -> Self {
        AdapterEndpoints::One(url.to_owned())
    }
}

impl From<Vec<String>> for AdapterEndpoints {
    fn from(urls: Vec<String>) -> Self {
        AdapterEndpoints::Several(urls)
    }
}

impl<'de> Deserialize<'de> for AdapterEndpoints {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AdapterEndpoints;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an https:// URL or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Self::Value, E> {
                Ok(AdapterEndpoints::One(url.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    urls.push(url);
                }
                Ok(AdapterEndpoints::Several(urls))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A dataset offered through the broker.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The dataset's id, `<agency>.<dataset>`; the agency part names its
    /// provider, which must be among `agencies`.
    pub id: DatasetId,
    /// Field that lookups use, if the dataset offers lookups.
    #[serde(default)]
    pub key: Option<FieldName>,
    /// Further fields whose values identify a person (`no_kk`, `npwp`):
    /// a filter value on one of them, like the key, reaches the audit log
    /// only as its keyed hash, found by `audit who-accessed`. Values on
    /// every other field are logged by their shape only.
    #[serde(default)]
    pub subject_keys: Vec<FieldName>,
    /// What the dataset holds, in words; stored with the dataset in the
    /// broker's store.
    #[serde(default)]
    pub description: String,
}

impl DatasetConfig {
    /// The fields whose values are subject keys: the key and `subject_keys`.
    pub fn subject_fields(&self) -> std::collections::BTreeSet<String> {
        self.key
            .iter()
            .chain(&self.subject_keys)
            .map(|f| f.to_string())
            .collect()
    }
}

impl BrokerConfig {
    /// The JSON Schema of the config file, from these structs' fields,
    /// serde attributes and doc comments.
    pub fn schema() -> schemars::Schema {
        schemars::schema_for!(BrokerConfig)
    }

    pub fn load(path: &Path) -> Result<BrokerConfig, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|e| BrokerError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        BrokerConfig::from_toml(&text, base).map_err(|source| BrokerError::BadConfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses and checks a config; relative paths are taken from `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<BrokerConfig, ConfigError> {
        use ConfigError as E;
        let mut config: BrokerConfig =
            toml::from_str(text).map_err(|e| E::Syntax(e.to_string()))?;
        if config.version != 1 {
            return Err(E::Version(config.version));
        }
        config.tls = config.tls.relative_to(base);
        config.audit_key = base.join(&config.audit_key);
        config.checkpoint_key = base.join(&config.checkpoint_key);
        config
            .registry
            .default_compatibility
            .parse::<jembatan_schema::CompatMode>()
            .map_err(|e| E::Compatibility(e.to_string()))?;
        for s in &mut config.registry.schemas {
            s.file = base.join(&s.file);
        }
        for m in &mut config.registry.mappings {
            *m = base.join(&*m);
        }
        for path in config.registry.secrets.values_mut() {
            *path = base.join(&*path);
        }
        if !jembatan_tlog::note::is_valid_key_name(&config.log_origin) {
            return Err(E::LogOrigin(config.log_origin));
        }
        if config.checkpoint_every == 0 {
            return Err(E::AtLeastOne("checkpoint_every"));
        }
        if config.checkpoint_interval.is_zero() {
            return Err(E::ZeroDuration("checkpoint_interval"));
        }
        if !config.store.contains("://") && !config.store.starts_with("sqlite:") {
            config.store = base.join(&config.store).display().to_string();
        }
        config.store_tls = config.store_tls.relative_to(base);
        jembatan_store::check_url(&config.store, &config.store_tls).map_err(E::Store)?;
        let mut seen = std::collections::BTreeSet::new();
        for a in &config.agencies {
            if !seen.insert(a.id.clone()) {
                return Err(E::AgencyTwice(a.id.clone()));
            }
            if let Some(endpoints) = &a.adapter {
                check_endpoints(&a.id, endpoints.urls())?;
            }
        }
        for d in &config.datasets {
            if !seen.contains(&d.id.agency()) {
                return Err(E::DatasetProvider {
                    dataset: d.id.clone(),
                });
            }
        }
        let mut purposes = std::collections::BTreeSet::new();
        for p in &config.purposes {
            if p.id.trim().is_empty() || p.id.len() > jembatan_core::agreement::MAX_PURPOSE_BYTES {
                return Err(E::PurposeId(p.id.clone()));
            }
            if p.legal_basis.trim().is_empty() {
                return Err(E::NoLegalBasis(p.id.clone()));
            }
            if !purposes.insert(p.id.as_str()) {
                return Err(E::PurposeTwice(p.id.clone()));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for a in &config.agreements {
            a.validate()?;
            if !ids.insert(a.id.clone()) {
                return Err(E::AgreementTwice(a.id.clone()));
            }
            // only registered agencies act, so an agreement of another
            // could never be used
            for (side, agency) in [("consumer", &a.consumer), ("provider", &a.provider)] {
                if !seen.contains(agency) {
                    return Err(E::AgreementParty {
                        id: a.id.clone(),
                        side,
                        agency: agency.clone(),
                    });
                }
            }
            if !purposes.is_empty() && !purposes.contains(a.purpose.as_str()) {
                return Err(E::AgreementPurpose {
                    id: a.id.clone(),
                    purpose: a.purpose.clone(),
                });
            }
        }
        if config.max_streams_per_agency == 0 {
            return Err(E::AtLeastOne("max_streams_per_agency"));
        }
        if !(1..=MAX_STREAMS_PER_PROVIDER).contains(&config.max_streams_per_provider) {
            return Err(E::StreamsPerProvider(config.max_streams_per_provider));
        }
        if config.health_interval.is_zero() {
            return Err(E::ZeroDuration("health_interval"));
        }
        if config.stall_timeout.is_zero() {
            return Err(E::ZeroDuration("stall_timeout"));
        }
        if config.agreement_watch_interval.is_zero() {
            return Err(E::ZeroDuration("agreement_watch_interval"));
        }
        if config.replica_heartbeat.is_zero() {
            return Err(E::ZeroDuration("replica_heartbeat"));
        }
        if config.replica_lease < config.replica_heartbeat * 2 {
            return Err(E::ReplicaLease {
                lease: config.replica_lease,
                heartbeat: config.replica_heartbeat,
            });
        }
        Ok(config)
    }
}

/// Checks an agency's adapter endpoints: 1 to [`MAX_ADAPTER_ENDPOINTS`]
/// `https://` URLs, each once, none with white space (the store keeps
/// them one per line).
fn check_endpoints(agency: &AgencyId, urls: &[String]) -> Result<(), ConfigError> {
    use ConfigError as E;
    if urls.is_empty() || urls.len() > MAX_ADAPTER_ENDPOINTS {
        return Err(E::AdapterCount {
            agency: agency.clone(),
            count: urls.len(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for url in urls {
        if !url.starts_with("https://") {
            return Err(E::PlaintextAdapter {
                agency: agency.clone(),
                url: url.clone(),
            });
        }
        if url.contains(char::is_whitespace) {
            return Err(E::AdapterSpace {
                agency: agency.clone(),
                url: url.clone(),
            });
        }
        if !seen.insert(url.as_str()) {
            return Err(E::AdapterTwice {
                agency: agency.clone(),
                url: url.clone(),
            });
        }
    }
    Ok(())
}

/// What is wrong with a broker config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("version {0} is not supported (expected 1)")]
    Version(u32),
    #[error("registry.default_compatibility: {0}")]
    Compatibility(String),
    #[error("log_origin {0:?} must be non-empty, without spaces or '+'")]
    LogOrigin(String),
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    #[error("{0} must be longer than 0s")]
    ZeroDuration(&'static str),
    #[error("store: {0}")]
    Store(jembatan_store::StoreError),
    #[error("agency {0} is declared twice")]
    AgencyTwice(AgencyId),
    #[error("agency {agency}: adapter {url:?} must be an https:// URL (plaintext is refused)")]
    PlaintextAdapter { agency: AgencyId, url: String },
    #[error(
        "agency {agency}: adapter lists {count} endpoints; 1 to {MAX_ADAPTER_ENDPOINTS} are allowed"
    )]
    AdapterCount { agency: AgencyId, count: usize },
    #[error("agency {agency}: adapter {url:?} holds white space")]
    AdapterSpace { agency: AgencyId, url: String },
    #[error("agency {agency}: adapter {url:?} is listed twice")]
    AdapterTwice { agency: AgencyId, url: String },
    #[error("dataset {dataset}: its provider {} is not among the agencies", dataset.agency())]
    DatasetProvider { dataset: DatasetId },
    #[error(
        "purpose {0:?}: an id of 1 to {max} bytes is required",
        max = jembatan_core::agreement::MAX_PURPOSE_BYTES
    )]
    PurposeId(String),
    #[error("purpose {0}: legal_basis is empty")]
    NoLegalBasis(String),
    #[error("purpose {0} is declared twice")]
    PurposeTwice(String),
    #[error(transparent)]
    Agreement(#[from] jembatan_core::InvalidArgument),
    #[error("agreement {0} is declared twice")]
    AgreementTwice(String),
    #[error("agreement {id}: its {side} {agency} is not among the agencies")]
    AgreementParty {
        id: String,
        side: &'static str,
        agency: AgencyId,
    },
    #[error("agreement {id}: purpose {purpose:?} is not among the registered purposes")]
    AgreementPurpose { id: String, purpose: String },
    #[error("max_streams_per_provider must be between 1 and {MAX_STREAMS_PER_PROVIDER}; got {0}")]
    StreamsPerProvider(usize),
    #[error(
        "replica_lease ({}) must be at least twice replica_heartbeat ({}), so that one missed renewal does not end the lease",
        humantime::format_duration(*lease),
        humantime::format_duration(*heartbeat)
    )]
    ReplicaLease {
        lease: Duration,
        heartbeat: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config whose one agency has `adapter = <adapter>`.
    fn with_adapter(adapter: &str) -> Result<BrokerConfig, ConfigError> {
        let toml = format!(
            r#"
version = 1
listen = "127.0.0.1:0"
store = "broker.db"
audit_key = "audit.key"
[tls]
ca = "ca.pem"
cert = "broker.pem"
key = "broker.key"
[[agencies]]
id = "prov"
name = "Provider"
adapter = {adapter}
"#
        );
        BrokerConfig::from_toml(&toml, Path::new("/etc/jembatan"))
    }

    #[test]
    fn an_adapter_is_one_endpoint_or_a_list_tried_in_order() {
        let one = with_adapter(r#""https://a:7443""#).expect("one endpoint");
        let one = one.agencies[0].adapter.as_ref().expect("adapter");
        assert_eq!(one.urls(), ["https://a:7443"]);
        let two = with_adapter(r#"["https://b:7443", "https://a:7443"]"#).expect("a list");
        let two = two.agencies[0].adapter.as_ref().expect("adapter");
        assert_eq!(two.urls(), ["https://b:7443", "https://a:7443"], "in order");
    }

    #[test]
    fn bad_adapter_endpoints_are_refused_naming_the_fault() {
        let many = format!(
            "[{}]",
            (0..=MAX_ADAPTER_ENDPOINTS)
                .map(|i| format!("\"https://a{i}:7443\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let cases = [
            (r#"[]"#, "adapter lists 0 endpoints; 1 to 16 are allowed"),
            (
                many.as_str(),
                "adapter lists 17 endpoints; 1 to 16 are allowed",
            ),
            (
                r#"["https://a:7443", "http://b:7443"]"#,
                r#"adapter "http://b:7443" must be an https:// URL (plaintext is refused)"#,
            ),
            (
                r#"["https://a:7443", "https://a:7443"]"#,
                r#"adapter "https://a:7443" is listed twice"#,
            ),
            (r#""https://a:7443\nhttps://b:7443""#, "holds white space"),
            (r#"7443"#, "an https:// URL or a list of them"),
            (
                r#"[7443]"#,
                "invalid type: integer `7443`, expected a string",
            ),
        ];
        for (adapter, want) in cases {
            let err = with_adapter(adapter).expect_err(adapter).to_string();
            assert!(err.contains(want), "{adapter}: {err}");
        }
    }
}
