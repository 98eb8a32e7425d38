//! Adapter configuration: the TOML file naming the database, the TLS files
//! and the whitelist of datasets.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jembatan_core::dbtls::DatabaseTls;
use jembatan_core::{AgencyId, DatasetId, FieldName, Filter, InvalidArgument};
use jembatan_pki::TlsFiles;
use serde::Deserialize;

use crate::adapter::MAX_BATCH_SIZE;
use crate::error::AdapterError;

/// Records per batch when neither the config nor the request chooses.
pub const DEFAULT_BATCH_SIZE: u32 = 500;
/// Longest a fetch may run, from the request to its last batch, when the
/// config does not choose.
pub const DEFAULT_MAX_QUERY_TIME: Duration = Duration::from_secs(10 * 60);
/// Database connections the adapter keeps when the config does not say.
/// Each running fetch holds one for as long as its rows stream.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
/// The most `max_connections` may be.
pub const MAX_MAX_CONNECTIONS: u32 = 1024;
/// The largest `max_query_time` a config may set.
const MAX_MAX_QUERY_TIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The database backend, chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres://` and `postgresql://` URLs.
    Postgres,
    /// `mysql://` URLs (MariaDB and MySQL).
    MySql,
}

impl Backend {
    /// The backend a database URL names, if it is one the adapter supports.
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("mysql://") {
            Some(Backend::MySql)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }
}

/// A validated adapter configuration with every path resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub agency: AgencyId,
    /// sqlx database URL; a relative SQLite path is resolved against the
    /// config file's directory.
    pub database: String,
    /// TLS to the database: its CA, and whether a database off this
    /// machine may be reached without verified TLS.
    pub database_tls: DatabaseTls,
    pub listen: SocketAddr,
    /// Address serving metrics in the Prometheus text format
    /// (`GET /metrics`, plain HTTP, counts only); none when absent.
    pub metrics_listen: Option<SocketAddr>,
    pub receipt_log: PathBuf,
    pub batch_size: u32,
    /// Longest a fetch may run, from the request to its last batch; a
    /// caller's shorter deadline (`grpc-timeout`) takes precedence.
    pub max_query_time: Duration,
    /// Database connections in the adapter's pool: each running fetch
    /// holds one until its last row is sent or it is cancelled.
    pub max_connections: u32,
    pub tls: TlsFiles,
    pub datasets: Vec<DatasetConfig>,
}

/// One whitelisted dataset: a table and the columns it may expose.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Dataset name, unique in the file; the dataset id is
    /// `<agency>.<name>`.
    pub name: String,
    /// Table (or view) name, without schema: a `.` is refused (use
    /// `schema`).
    pub table: String,
    /// PostgreSQL schema of the table; the connection's current schema
    /// when absent. Not allowed for other backends.
    #[serde(default)]
    pub schema: Option<String>,
    /// Key column, one of `columns`: lookups use it, and fetches are
    /// ordered by it.
    #[serde(default)]
    pub key: Option<FieldName>,
    /// Exposed columns, in the order `Describe` lists them: at least one,
    /// no duplicates. Only these ever leave the database.
    pub columns: Vec<FieldName>,
    /// Fixed filter ANDed to every fetch; may name columns of the table
    /// that are not exposed.
    #[serde(default)]
    pub row_filter: Option<Filter>,
    /// How the dataset's changes are read, for subscriptions; the dataset
    /// offers none when absent. Read by polling: no trigger and no write
    /// in the database.
    #[serde(default)]
    pub changes: Option<ChangesConfig>,
}

/// Poll interval of a polling change source when `changes` does not choose.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Poll interval of a logical replication source when `changes` does not
/// choose: its changes are read from a local journal, so polls are cheap.
pub const DEFAULT_LOGICAL_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lag window of timestamp change columns when `changes` does not choose.
pub const DEFAULT_CHANGE_LAG: Duration = Duration::from_millis(500);
/// How long a logical replication journal keeps changes when `changes`
/// does not choose.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest `poll_interval` and `lag` a config may set.
const MAX_CHANGE_DURATION: Duration = Duration::from_secs(60 * 60);
/// The shortest and longest `retain`.
const MIN_RETAIN: Duration = Duration::from_secs(60);
const MAX_RETAIN: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// A dataset's change source: either a monotonic change column read
/// after a position, `(change, key)`, in that order (`column`), or a
/// PostgreSQL logical replication slot consumed into a local journal
/// (`logical`). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesConfig {
    /// Polling source: the change column, a timestamp the application sets
    /// on every insert and update (`updated_at`) or an increasing integer
    /// version. Rows where it is NULL are not seen. Its values travel to
    /// the broker in positions, sealed from consumers.
    #[serde(default)]
    pub column: Option<FieldName>,
    /// PostgreSQL only: a logical replication source, the publication and
    /// the `pgoutput` slot the agency created for the table
    /// (`{ slot = "jembatan_penduduk", publication = "jembatan_penduduk" }`).
    /// Sees every committed insert, update and `DELETE`; needs
    /// `wal_level = logical` and a role with `REPLICATION`.
    #[serde(default)]
    pub logical: Option<LogicalConfig>,
    /// The unique, non-null key that orders rows with the same change
    /// value; one of `columns`. The dataset's `key` when absent. For a
    /// logical source it must be (part of) the table's replica identity.
    #[serde(default)]
    pub key: Option<FieldName>,
    /// Polling source only: rows this filter matches are deletions
    /// (tombstones), the change is a `delete` carrying only the key. May
    /// name columns that are not exposed (`{ field = "status", op = "eq",
    /// value = "DIHAPUS" }`).
    #[serde(default)]
    pub deleted: Option<Filter>,
    /// How often a subscriber polls (`"500ms"`; 50ms to 1h). Default
    /// 500ms for a polling source, 50ms for a logical one.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<jembatan_core::config_schema::HumanDuration>")]
    #[schemars(extend("default" = humantime::format_duration(DEFAULT_POLL_INTERVAL).to_string()))]
    pub poll_interval: Option<Duration>,
    /// Timestamp change columns only: changes younger than this by the
    /// database's clock are not returned yet, so a transaction that
    /// commits up to this long after setting its change value is still
    /// seen (`"2s"`; 0s to 1h). Refused for integer change columns.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<jembatan_core::config_schema::HumanDuration>")]
    #[schemars(extend("default" = humantime::format_duration(DEFAULT_CHANGE_LAG).to_string()))]
    pub lag: Option<Duration>,
    /// Logical source only, required: the adapter's local journal (an
    /// SQLite file, created if missing; relative to the config file) that
    /// the slot is consumed into before the slot is advanced. Datasets
    /// sharing a slot name the same journal.
    #[serde(default)]
    pub journal: Option<PathBuf>,
    /// Logical source only: how long the journal keeps changes (`"7d"`;
    /// 1m to 366d). A subscription whose position is older can no longer
    /// be resumed and must start again.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<jembatan_core::config_schema::HumanDuration>")]
    #[schemars(extend("default" = humantime::format_duration(DEFAULT_RETAIN).to_string()))]
    pub retain: Option<Duration>,
}

/// A PostgreSQL logical replication source: a publication that includes
/// the dataset's table, and a logical slot with the `pgoutput` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogicalConfig {
    /// The logical replication slot (`pgoutput` plugin) the adapter
    /// consumes; one adapter process per slot.
    pub slot: String,
    /// The publication the slot's changes are filtered by; it must
    /// include the dataset's table.
    pub publication: String,
}

impl ChangesConfig {
    /// The poll interval, the default for the source's kind when the
    /// config does not choose.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval.unwrap_or(if self.logical.is_some() {
            DEFAULT_LOGICAL_POLL_INTERVAL
        } else {
            DEFAULT_POLL_INTERVAL
        })
    }

    /// How long a logical source's journal keeps changes.
    pub fn retain(&self) -> Duration {
        self.retain.unwrap_or(DEFAULT_RETAIN)
    }
}

/// Adapter configuration, as written in its TOML file. Relative paths are
/// resolved against the config file's directory.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "AdapterConfig")]
struct RawConfig {
    /// Config format version; must be 1.
    version: u32,
    /// The agency this adapter serves (`disdukcapil`); its datasets' ids
    /// are `<agency>.<name>`, and the broker reaches it as this agency's
    /// adapter.
    agency: AgencyId,
    /// sqlx database URL: `sqlite:PATH` (a relative path is taken from the
    /// config file's directory), `postgres://...` or `mysql://...`
    /// (MariaDB and MySQL); the scheme picks the backend. SQLite files must
    /// exist already: the adapter never creates one. Give the adapter a
    /// read-only database user.
    database: String,
    /// TLS to the database: the CA its certificate must chain to, and
    /// whether a database off this machine may be reached without
    /// verified TLS (`allow_plaintext`, off by default).
    #[serde(default)]
    database_tls: DatabaseTls,
    /// Address the Adapter service listens on (`0.0.0.0:7101`); mutual
    /// TLS, so only clients with certificates from `tls.ca` complete the
    /// handshake.
    listen: SocketAddr,
    /// Address serving metrics in the Prometheus text format
    /// (`GET /metrics`, plain HTTP, counts and durations only, never
    /// data); keep it on loopback or an operations network. None when
    /// absent.
    #[serde(default)]
    metrics_listen: Option<SocketAddr>,
    /// The adapter's receipt log (JSON Lines, opened for append and
    /// created if missing): one line per fetch it
    /// served and per receipt the broker acknowledged, so the agency sees
    /// what left its database without trusting the broker.
    receipt_log: PathBuf,
    /// Records per batch when the request does not choose (1 to 10000).
    #[serde(default)]
    #[schemars(extend("default" = DEFAULT_BATCH_SIZE, "minimum" = 1, "maximum" = MAX_BATCH_SIZE))]
    batch_size: Option<u32>,
    /// Longest a fetch may run, from the request to its last batch
    /// (`"90s"`, `"10m"`; 1s to 24h); a caller's shorter deadline
    /// (`grpc-timeout`) takes precedence.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<jembatan_core::config_schema::HumanDuration>")]
    #[schemars(extend("default" = humantime::format_duration(DEFAULT_MAX_QUERY_TIME).to_string()))]
    max_query_time: Option<Duration>,
    /// Database connections in the adapter's pool (1 to 1024): each
    /// running fetch holds one until its last row is sent or it is
    /// cancelled.
    #[serde(default)]
    #[schemars(extend("default" = DEFAULT_MAX_CONNECTIONS, "minimum" = 1, "maximum" = MAX_MAX_CONNECTIONS))]
    max_connections: Option<u32>,
    /// The adapter's certificate and key, and the federation's CA that
    /// the broker's certificate must chain to.
    tls: TlsFiles,
    /// The whitelist: the only tables and columns the adapter serves.
    #[serde(default)]
    datasets: Vec<DatasetConfig>,
}

impl AdapterConfig {
    /// The JSON Schema of the config file, from its struct's fields,
    /// serde attributes and doc comments.
    pub fn schema() -> schemars::Schema {
        schemars::schema_for!(RawConfig)
    }

    /// Reads and validates the config file at `path`; relative paths in it
    /// are resolved against its directory.
    pub fn load(path: &Path) -> Result<AdapterConfig, AdapterError> {
        let text = std::fs::read_to_string(path).map_err(|source| AdapterError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &format!("adapter config {}", path.display()))
    }

    /// Parses and validates config text; relative paths are resolved
    /// against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<AdapterConfig, AdapterError> {
        Self::parse(text, base_dir, "adapter config")
    }

    fn parse(text: &str, base: &Path, origin: &str) -> Result<AdapterConfig, AdapterError> {
        let err = |message: String| AdapterError::Config {
            origin: origin.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim_end().to_owned();
            err(match line {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            })
        })?;
        if raw.version != 1 {
            return Err(err(format!(
                "version {} is not supported; this adapter reads version = 1",
                raw.version
            )));
        }
        let Some(backend) = Backend::from_url(&raw.database) else {
            return Err(err(format!(
                "database URL must start with sqlite:, postgres://, postgresql:// or mysql://; got {:?}",
                crate::error::redact_url(&raw.database)
            )));
        };
        let batch_size = raw.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
            return Err(err(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}; got {batch_size}"
            )));
        }
        let max_query_time = raw.max_query_time.unwrap_or(DEFAULT_MAX_QUERY_TIME);
        if max_query_time < Duration::from_secs(1) || max_query_time > MAX_MAX_QUERY_TIME {
            return Err(err(format!(
                "max_query_time must be between 1s and 24h; got {}",
                humantime::format_duration(max_query_time)
            )));
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 || max_connections > MAX_MAX_CONNECTIONS {
            return Err(err(format!(
                "max_connections must be between 1 and {MAX_MAX_CONNECTIONS}; got {max_connections}"
            )));
        }
        let database_tls = raw.database_tls.relative_to(base);
        crate::transport::check_url(&raw.database, &database_tls).map_err(|e| match e {
            AdapterError::Config { message, .. } => err(message),
            other => err(other.to_string()),
        })?;
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for d in &raw.datasets {
            if let Err(m) = d.check(&raw.agency, backend) {
                problems.push(format!("dataset {:?}: {m}", d.name));
            }
            if !names.insert(d.name.as_str()) {
                problems.push(format!("dataset {:?} is listed more than once", d.name));
            }
        }
        let mut datasets = raw.datasets;
        for d in &mut datasets {
            if let Some(journal) = d.changes.as_mut().and_then(|c| c.journal.as_mut()) {
                *journal = base.join(&*journal);
            }
        }
        problems.extend(shared_slots_agree(&datasets));
        if !problems.is_empty() {
            return Err(err(problems.join("; ")));
        }
        Ok(AdapterConfig {
            agency: raw.agency,
            database: resolve_database_url(&raw.database, base),
            database_tls,
            listen: raw.listen,
            metrics_listen: raw.metrics_listen,
            receipt_log: base.join(&raw.receipt_log),
            batch_size,
            max_query_time,
            max_connections,
            tls: raw.tls.relative_to(base),
            datasets,
        })
    }

    /// The backend the database URL names.
    pub fn backend(&self) -> Backend {
        // validated in `parse`; SQLite is the fallback for hand-built configs
        Backend::from_url(&self.database).unwrap_or(Backend::Sqlite)
    }
}

impl DatasetConfig {
    /// The dataset id, `<agency>.<name>`.
    pub fn id(&self, agency: &AgencyId) -> Result<DatasetId, DatasetConfigError> {
        DatasetId::new(agency, &self.name).map_err(DatasetConfigError::Name)
    }

    fn check(&self, agency: &AgencyId, backend: Backend) -> Result<(), DatasetConfigError> {
        self.id(agency)?;
        check_db_name("table", &self.table)?;
        if self.table.contains('.') {
            return Err(DatasetConfigError::QualifiedTable(self.table.clone()));
        }
        if let Some(schema) = &self.schema {
            if backend != Backend::Postgres {
                return Err(DatasetConfigError::SchemaNotPostgres(backend));
            }
            check_db_name("schema", schema)?;
        }
        if self.columns.is_empty() {
            return Err(DatasetConfigError::NoColumns);
        }
        let mut seen = BTreeSet::new();
        for c in &self.columns {
            if !seen.insert(c) {
                return Err(DatasetConfigError::DuplicateColumn(c.clone()));
            }
        }
        if let Some(key) = &self.key
            && !seen.contains(key)
        {
            return Err(DatasetConfigError::KeyNotAmongColumns(key.clone()));
        }
        if let Some(changes) = &self.changes {
            match (&changes.column, &changes.logical) {
                (None, None) => return Err(DatasetConfigError::NoChangeSource),
                (Some(_), Some(_)) => return Err(DatasetConfigError::TwoChangeSources),
                (Some(_), None) => {
                    if changes.journal.is_some() || changes.retain.is_some() {
                        return Err(DatasetConfigError::LogicalOnly);
                    }
                }
                (None, Some(logical)) => {
                    if backend != Backend::Postgres {
                        return Err(DatasetConfigError::LogicalNotPostgres(backend));
                    }
                    check_db_name("changes.logical.slot", &logical.slot)?;
                    check_db_name("changes.logical.publication", &logical.publication)?;
                    if changes.deleted.is_some() || changes.lag.is_some() {
                        return Err(DatasetConfigError::PollingOnly);
                    }
                    if changes.journal.is_none() {
                        return Err(DatasetConfigError::NoJournal);
                    }
                    let retain = changes.retain();
                    if !(MIN_RETAIN..=MAX_RETAIN).contains(&retain) {
                        return Err(DatasetConfigError::ChangeDuration(
                            "retain must be between 1m and 366d",
                            retain,
                        ));
                    }
                }
            }
            match changes.key.as_ref().or(self.key.as_ref()) {
                None => return Err(DatasetConfigError::ChangesWithoutKey),
                Some(key) if !seen.contains(key) => {
                    return Err(DatasetConfigError::ChangeKeyNotAmongColumns(key.clone()));
                }
                Some(_) => {}
            }
            let poll = changes.poll_interval();
            if poll < Duration::from_millis(50) || poll > MAX_CHANGE_DURATION {
                return Err(DatasetConfigError::ChangeDuration(
                    "poll_interval must be between 50ms and 1h",
                    poll,
                ));
            }
            if let Some(lag) = changes.lag
                && lag > MAX_CHANGE_DURATION
            {
                return Err(DatasetConfigError::ChangeDuration(
                    "lag must be at most 1h",
                    lag,
                ));
            }
        }
        Ok(())
    }
}

/// What is wrong with one dataset of the whitelist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatasetConfigError {
    /// The name does not make a dataset id.
    #[error("{}", .0.message)]
    Name(InvalidArgument),
    #[error("{0} is empty")]
    EmptyName(&'static str),
    #[error("{0} contains a NUL byte")]
    NulInName(&'static str),
    #[error("{0} is longer than 128 bytes")]
    LongName(&'static str),
    #[error(
        "table {0:?} contains '.'; name the table alone and put a PostgreSQL schema in `schema`"
    )]
    QualifiedTable(String),
    #[error("`schema` is supported only for PostgreSQL; this database is {}", .0.as_str())]
    SchemaNotPostgres(Backend),
    #[error("columns is empty; list at least one column to expose")]
    NoColumns,
    #[error("column \"{0}\" is listed more than once")]
    DuplicateColumn(FieldName),
    #[error("key \"{0}\" is not among columns")]
    KeyNotAmongColumns(FieldName),
    #[error("changes needs a key: set `key` of the dataset or of `changes`")]
    ChangesWithoutKey,
    #[error("changes: key \"{0}\" is not among columns")]
    ChangeKeyNotAmongColumns(FieldName),
    #[error("changes: {0}; got {got}", got = humantime::format_duration(*.1))]
    ChangeDuration(&'static str, Duration),
    #[error(
        "changes needs a source: set `column` (a polling change column) or `logical` (a PostgreSQL logical replication slot)"
    )]
    NoChangeSource,
    #[error("changes: set either `column` or `logical`, not both")]
    TwoChangeSources,
    #[error(
        "changes: `logical` (logical replication) is supported only for PostgreSQL; this database is {}",
        .0.as_str()
    )]
    LogicalNotPostgres(Backend),
    #[error(
        "changes: `deleted` and `lag` apply to a polling `column` only; a logical source sees deletions and commits exactly"
    )]
    PollingOnly,
    #[error("changes: `journal` and `retain` apply to a `logical` source only")]
    LogicalOnly,
    #[error(
        "changes: a `logical` source needs `journal`, the adapter's local SQLite file the slot is consumed into"
    )]
    NoJournal,
}

/// Datasets that share a slot must name the same publication, journal and
/// retention: one reader consumes the slot into one journal.
fn shared_slots_agree(datasets: &[DatasetConfig]) -> Vec<String> {
    let mut seen: std::collections::BTreeMap<&str, (&str, &ChangesConfig)> =
        std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for d in datasets {
        let Some(changes) = &d.changes else { continue };
        let Some(logical) = &changes.logical else {
            continue;
        };
        match seen.get(logical.slot.as_str()) {
            None => {
                seen.insert(&logical.slot, (&d.name, changes));
            }
            Some((first, other)) => {
                let same = other.logical.as_ref().map(|l| &l.publication)
                    == Some(&logical.publication)
                    && other.journal == changes.journal
                    && other.retain() == changes.retain();
                if !same {
                    problems.push(format!(
                        "dataset {:?}: changes: slot {:?} is also used by dataset {first:?} with another \
                         publication, journal or retain; datasets sharing a slot must name the same three",
                        d.name, logical.slot
                    ));
                }
            }
        }
    }
    problems
}

/// Checks a table or schema name (`what`) before it reaches the database.
fn check_db_name(what: &'static str, s: &str) -> Result<(), DatasetConfigError> {
    if s.is_empty() {
        return Err(DatasetConfigError::EmptyName(what));
    }
    if s.contains('\0') {
        return Err(DatasetConfigError::NulInName(what));
    }
    if s.len() > 128 {
        return Err(DatasetConfigError::LongName(what));
    }
    Ok(())
}

/// Resolves a relative SQLite file path against `base`; other URLs are
/// returned unchanged.
fn resolve_database_url(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (path, query) = match rest.find('?') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() {
        return url.to_owned();
    }
    format!("sqlite://{}{query}", base.join(path).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1
agency = "disdukcapil"
database = "sqlite://siak.db"
listen = "127.0.0.1:7101"
receipt_log = "receipts.jsonl"

[tls]
ca = "certs/ca.pem"
cert = "certs/adapter-disdukcapil.pem"
key = "certs/adapter-disdukcapil-key.pem"

[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama_lengkap", "tgl_lahir"]
row_filter = { field = "status", op = "eq", value = "HIDUP" }
"#;

    const LOGICAL: &str = "logical = { slot = \"jembatan\", publication = \"jembatan\" }\njournal = \"changes.sqlite\"\n";

    fn on_postgres(config: &str) -> String {
        config.replace("sqlite://siak.db", "postgres://adapter@127.0.0.1/siak")
    }

    #[test]
    fn a_logical_source_resolves_its_journal_and_polls_at_50ms() {
        let text = format!("{}[datasets.changes]\n{LOGICAL}", on_postgres(GOOD));
        let c = AdapterConfig::from_toml(&text, Path::new("/etc/jembatan")).unwrap();
        let changes = c.datasets[0].changes.as_ref().unwrap();
        assert_eq!(
            changes.journal.as_deref(),
            Some(Path::new("/etc/jembatan/changes.sqlite"))
        );
        assert_eq!(changes.poll_interval(), DEFAULT_LOGICAL_POLL_INTERVAL);
        assert_eq!(changes.retain(), DEFAULT_RETAIN);
        assert_eq!(
            changes.logical,
            Some(LogicalConfig {
                slot: "jembatan".into(),
                publication: "jembatan".into()
            })
        );
    }

    #[test]
    fn good_config_resolves_paths() {
        let c = AdapterConfig::from_toml(GOOD, Path::new("/etc/jembatan")).unwrap();
        assert_eq!(c.database, "sqlite:///etc/jembatan/siak.db");
        assert_eq!(c.receipt_log, Path::new("/etc/jembatan/receipts.jsonl"));
        assert_eq!(c.tls.ca, Path::new("/etc/jembatan/certs/ca.pem"));
        assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(c.max_query_time, DEFAULT_MAX_QUERY_TIME);
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        let c = AdapterConfig::from_toml(
            &GOOD.replace("receipt_log =", "max_connections = 32\nreceipt_log ="),
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(c.max_connections, 32);
        let c = AdapterConfig::from_toml(
            &GOOD.replace("receipt_log =", "max_query_time = \"90s\"\nreceipt_log ="),
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(c.max_query_time, Duration::from_secs(90));
        assert_eq!(c.backend(), Backend::Sqlite);
        assert_eq!(c.datasets.len(), 1);
        assert_eq!(
            c.datasets[0].id(&c.agency).unwrap().as_str(),
            "disdukcapil.penduduk"
        );
        assert!(c.datasets[0].row_filter.is_some());
    }

    #[test]
    fn database_urls_resolve() {
        let base = Path::new("/srv/a");
        let cases = [
            ("sqlite://siak.db", "sqlite:///srv/a/siak.db"),
            ("sqlite:siak.db?mode=ro", "sqlite:///srv/a/siak.db?mode=ro"),
            ("sqlite:///var/siak.db", "sqlite:///var/siak.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ];
        for (url, want) in cases {
            assert_eq!(resolve_database_url(url, base), want, "{url}");
        }
    }

    #[test]
    fn config_errors_name_the_problem() {
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "misspelled key",
                GOOD.replace("columns =", "colums ="),
                "unknown field `colums`, expected one of",
            ),
            (
                "missing columns",
                GOOD.replace("columns = [\"nik\", \"nama_lengkap\", \"tgl_lahir\"]", ""),
                "missing field `columns`",
            ),
            (
                "version 2",
                GOOD.replace("version = 1", "version = 2"),
                "version 2 is not supported",
            ),
            (
                "no version",
                GOOD.replace("version = 1", ""),
                "missing field `version`",
            ),
            (
                "key not in columns",
                GOOD.replace("key = \"nik\"", "key = \"nkk\""),
                "key \"nkk\" is not among columns",
            ),
            (
                "empty columns",
                GOOD.replace("[\"nik\", \"nama_lengkap\", \"tgl_lahir\"]", "[]"),
                "columns is empty",
            ),
            (
                "duplicate column",
                GOOD.replace("\"tgl_lahir\"]", "\"nik\"]"),
                "column \"nik\" is listed more than once",
            ),
            (
                "duplicate dataset",
                format!(
                    "{GOOD}\n[[datasets]]\nname = \"penduduk\"\ntable = \"x\"\ncolumns = [\"a\"]\n"
                ),
                "dataset \"penduduk\" is listed more than once",
            ),
            (
                "schema.table",
                GOOD.replace("table = \"penduduk\"", "table = \"public.penduduk\""),
                "contains '.'",
            ),
            (
                "schema on sqlite",
                GOOD.replace(
                    "table = \"penduduk\"",
                    "table = \"penduduk\"\nschema = \"public\"",
                ),
                "`schema` is supported only for PostgreSQL",
            ),
            (
                "no connections",
                GOOD.replace("receipt_log =", "max_connections = 0\nreceipt_log ="),
                "max_connections must be between 1 and 1024; got 0",
            ),
            (
                "bad scheme",
                GOOD.replace("sqlite://siak.db", "oracle://x"),
                "database URL must start with",
            ),
            (
                "bad agency",
                GOOD.replace("\"disdukcapil\"", "\"Dukcapil\""),
                "must start with a lowercase ASCII letter",
            ),
            (
                "bad dataset name",
                GOOD.replace("name = \"penduduk\"", "name = \"pen duduk\""),
                "dataset name",
            ),
            (
                "bad column name",
                GOOD.replace("\"tgl_lahir\"", "\"tgl lahir\""),
                "field name",
            ),
            (
                "bad row filter",
                GOOD.replace("op = \"eq\"", "op = \"like\""),
                "a filter is",
            ),
            (
                "batch size",
                GOOD.replace("receipt_log =", "batch_size = 0\nreceipt_log ="),
                "batch_size must be between 1 and 10000",
            ),
            (
                "max query time zero",
                GOOD.replace("receipt_log =", "max_query_time = \"0s\"\nreceipt_log ="),
                "max_query_time must be between 1s and 24h; got 0s",
            ),
            (
                "max query time too long",
                GOOD.replace("receipt_log =", "max_query_time = \"2days\"\nreceipt_log ="),
                "max_query_time must be between 1s and 24h; got 2days",
            ),
            (
                "max query time without unit",
                GOOD.replace("receipt_log =", "max_query_time = \"30\"\nreceipt_log ="),
                "invalid value: string \"30\", expected a duration (line 6)",
            ),
            (
                "unknown tls key",
                GOOD.replace("[tls]", "[tls]\npassword = \"x\""),
                "unknown field `password`",
            ),
            (
                "changes without a source",
                format!("{GOOD}[datasets.changes]\npoll_interval = \"1s\"\n"),
                "changes needs a source: set `column`",
            ),
            (
                "both sources",
                format!("{GOOD}[datasets.changes]\ncolumn = \"diubah\"\n{LOGICAL}"),
                "set either `column` or `logical`, not both",
            ),
            (
                "logical on sqlite",
                format!("{GOOD}[datasets.changes]\n{LOGICAL}"),
                "`logical` (logical replication) is supported only for PostgreSQL; this database is sqlite",
            ),
            (
                "a journal for a polling source",
                format!("{GOOD}[datasets.changes]\ncolumn = \"diubah\"\njournal = \"j\"\n"),
                "`journal` and `retain` apply to a `logical` source only",
            ),
            (
                "logical without a journal",
                format!(
                    "{}[datasets.changes]\n{}",
                    on_postgres(GOOD),
                    LOGICAL.replace("journal = \"changes.sqlite\"\n", "")
                ),
                "a `logical` source needs `journal`",
            ),
            (
                "tombstones on a logical source",
                format!(
                    "{}[datasets.changes]\n{LOGICAL}deleted = {{ field = \"status\", op = \"eq\", value = \"X\" }}\n",
                    on_postgres(GOOD)
                ),
                "`deleted` and `lag` apply to a polling `column` only",
            ),
            (
                "retain too short",
                format!(
                    "{}[datasets.changes]\n{LOGICAL}retain = \"10s\"\n",
                    on_postgres(GOOD)
                ),
                "retain must be between 1m and 366d; got 10s",
            ),
            (
                "a shared slot with another publication",
                format!(
                    "{}[datasets.changes]\n{LOGICAL}\n[[datasets]]\nname = \"kk\"\ntable = \"kk\"\nkey = \"nkk\"\n\
                     columns = [\"nkk\"]\n[datasets.changes]\n{}",
                    on_postgres(GOOD),
                    LOGICAL.replace("publication = \"jembatan\"", "publication = \"lain\"")
                ),
                "slot \"jembatan\" is also used by dataset \"penduduk\" with another publication, journal or retain",
            ),
        ];
        for (name, text, want) in cases {
            let err = AdapterConfig::from_toml(&text, Path::new("/x"))
                .expect_err(name)
                .to_string();
            assert!(err.starts_with("adapter config: "), "{name}: {err}");
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapter.toml");
        std::fs::write(&path, GOOD.replace("columns =", "colums =")).unwrap();
        let err = AdapterConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "adapter config {}: unknown field `colums`, expected one of",
                path.display()
            )),
            "{err}"
        );
        assert!(err.ends_with("(line 17)"), "{err}");
    }
}
