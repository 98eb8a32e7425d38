//! The broker's TOML config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jembatan_core::{AgencyId, Agreement, DatasetId, FieldName};
use jembatan_pki::TlsFiles;
use serde::Deserialize;

use crate::BrokerError;
pub use crate::agreements::Purpose;

/// Broker configuration. Relative paths are resolved against the config
/// file's directory.
#[derive(Debug, Clone, Deserialize)]
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
    pub checkpoint_interval: Duration,
    pub tls: TlsFiles,
    /// The agencies registered with this broker. Only their certificates
    /// exchange data, take agreement steps or write to the registry; a
    /// certificate of any other agency is refused even when the
    /// federation's CA issued it.
    #[serde(default)]
    pub agencies: Vec<AgencyConfig>,
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
    pub agreement_watch_interval: Duration,
    /// Most exchanges one agency may have running at once on this broker.
    #[serde(default = "default_max_streams_per_agency")]
    pub max_streams_per_agency: usize,
    /// Most query streams one consumer agency may have open at once
    /// against one provider on this broker. Each holds one of the
    /// provider adapter's database connections while it runs.
    #[serde(default = "default_max_streams_per_provider")]
    pub max_streams_per_provider: usize,
    /// How long a query stream may wait for its consumer to take the next
    /// batch (`"30s"`); a stream left unread longer is ended, logged
    /// `cancelled`, and its adapter stream and database connection freed.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// How often gRPC health checks that the audit log can be written
    /// (`jembatan.v1.Exchange` is NOT_SERVING while it cannot).
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub health_interval: Duration,
    #[serde(default)]
    pub registry: RegistryConfig,
}

/// The schema registry's settings, and schemas and mappings to register
/// at start.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaFile {
    pub dataset: DatasetId,
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

fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_stall_timeout() -> Duration {
    DEFAULT_STALL_TIMEOUT
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    pub id: AgencyId,
    pub name: String,
    /// The agency's adapter, `https://host:port`, when it provides data.
    #[serde(default)]
    pub adapter: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
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
    pub fn load(path: &Path) -> Result<BrokerConfig, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|e| BrokerError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        BrokerConfig::from_toml(&text, base).map_err(|message| BrokerError::Config {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks a config; relative paths are taken from `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<BrokerConfig, String> {
        let mut config: BrokerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.version != 1 {
            return Err(format!(
                "version {} is not supported (expected 1)",
                config.version
            ));
        }
        config.tls = config.tls.relative_to(base);
        config.audit_key = base.join(&config.audit_key);
        config.checkpoint_key = base.join(&config.checkpoint_key);
        config
            .registry
            .default_compatibility
            .parse::<jembatan_schema::CompatMode>()
            .map_err(|e| format!("registry.default_compatibility: {e}"))?;
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
            return Err(format!(
                "log_origin {:?} must be non-empty, without spaces or '+'",
                config.log_origin
            ));
        }
        if config.checkpoint_every == 0 {
            return Err("checkpoint_every must be at least 1".into());
        }
        if config.checkpoint_interval.is_zero() {
            return Err("checkpoint_interval must be longer than 0s".into());
        }
        if !config.store.contains("://") && !config.store.starts_with("sqlite:") {
            config.store = base.join(&config.store).display().to_string();
        }
        config.store_tls = config.store_tls.relative_to(base);
        jembatan_store::check_url(&config.store, &config.store_tls)
            .map_err(|e| format!("store: {e}"))?;
        let mut seen = std::collections::BTreeSet::new();
        for a in &config.agencies {
            if !seen.insert(a.id.clone()) {
                return Err(format!("agency {} is declared twice", a.id));
            }
            if let Some(url) = &a.adapter
                && !url.starts_with("https://")
            {
                return Err(format!(
                    "agency {}: adapter {url:?} must be an https:// URL (plaintext is refused)",
                    a.id
                ));
            }
        }
        for d in &config.datasets {
            if !seen.contains(&d.id.agency()) {
                return Err(format!(
                    "dataset {}: its provider {} is not among the agencies",
                    d.id,
                    d.id.agency()
                ));
            }
        }
        let mut purposes = std::collections::BTreeSet::new();
        for p in &config.purposes {
            if p.id.trim().is_empty() || p.id.len() > jembatan_core::agreement::MAX_PURPOSE_BYTES {
                return Err(format!(
                    "purpose {:?}: an id of 1 to {} bytes is required",
                    p.id,
                    jembatan_core::agreement::MAX_PURPOSE_BYTES
                ));
            }
            if p.legal_basis.trim().is_empty() {
                return Err(format!("purpose {}: legal_basis is empty", p.id));
            }
            if !purposes.insert(p.id.as_str()) {
                return Err(format!("purpose {} is declared twice", p.id));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for a in &config.agreements {
            a.validate().map_err(|e| e.to_string())?;
            if !ids.insert(a.id.clone()) {
                return Err(format!("agreement {} is declared twice", a.id));
            }
            // only registered agencies act, so an agreement of another
            // could never be used
            for (side, agency) in [("consumer", &a.consumer), ("provider", &a.provider)] {
                if !seen.contains(agency) {
                    return Err(format!(
                        "agreement {}: its {side} {agency} is not among the agencies",
                        a.id
                    ));
                }
            }
            if !purposes.is_empty() && !purposes.contains(a.purpose.as_str()) {
                return Err(format!(
                    "agreement {}: purpose {:?} is not among the registered purposes",
                    a.id, a.purpose
                ));
            }
        }
        if config.max_streams_per_agency == 0 {
            return Err("max_streams_per_agency must be at least 1".into());
        }
        if !(1..=MAX_STREAMS_PER_PROVIDER).contains(&config.max_streams_per_provider) {
            return Err(format!(
                "max_streams_per_provider must be between 1 and {MAX_STREAMS_PER_PROVIDER}; got {}",
                config.max_streams_per_provider
            ));
        }
        if config.health_interval.is_zero() {
            return Err("health_interval must be longer than 0s".into());
        }
        if config.stall_timeout.is_zero() {
            return Err("stall_timeout must be longer than 0s".into());
        }
        if config.agreement_watch_interval.is_zero() {
            return Err("agreement_watch_interval must be longer than 0s".into());
        }
        Ok(config)
    }
}
