//! The broker's store: agencies, datasets, agreements and the audit log.
//!
//! One URL picks the backend: a file path or `sqlite:` URL for the embedded
//! default, `postgres://` when several broker replicas share one store.
//! Both run the same SQL through sqlx's `Any` driver; only the migrations
//! and the appender's lock differ.

mod agreements;
pub mod archive;
mod audit;
mod checkpoints;
pub mod migrate;
mod query;
mod registry;
mod replicas;
mod sqlite_read;
mod sqlite_writer;
mod subscriptions;
mod tiles;
pub mod verify;

use std::str::FromStr;

use jembatan_core::agreement::format_instant;
use jembatan_core::dbtls::{self, DatabaseTls, Endpoint, Transport};
use jembatan_core::{AgencyId, DatasetId};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

pub use agreements::{AgreementFilter, QuotaKind, StatusChange};
pub use audit::{AuditLog, StoredEntry, subject_key};
pub use checkpoints::{RawEntry, StoredCheckpoint};
pub use query::EntryQuery;
pub use registry::{
    RegistryDataset, StoredMapping, StoredSchemaVersion, UnknownVersionState, VersionState,
};
pub use replicas::{LeftOpen, ReplicaRow};
pub use subscriptions::{
    COMPACT_EVERY, HeldKeys, KeyHash, MAX_KEYS_PER_CALL, RESUMABLE_BATCHES, Resumed,
};
pub use tiles::InclusionInputs;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?} is not supported: use a file path, sqlite:PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("store database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A write through the SQLite store's writer thread failed.
    #[error("store database error: {0}")]
    Sqlite(String),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store holds an unreadable {what}: {message}")]
    Corrupt { what: String, message: String },
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),
    /// The batch an appended entry was in could not be written.
    #[error("audit log unavailable: {0}")]
    AuditAppend(std::sync::Arc<StoreError>),
    #[error("audit log unavailable: appender stopped")]
    AppenderStopped,
    #[error("store {0} does not exist")]
    Missing(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store connection refused by its TLS settings: {0}")]
    Transport(#[from] jembatan_core::dbtls::PlaintextRefused),
    #[error("store TLS settings: {0}")]
    TlsConfig(String),
    /// A call the store refuses before touching the database.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A registered agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    pub id: AgencyId,
    pub name: String,
    /// Where its adapter listens (`https://host:port`), if it provides
    /// data: the endpoints in the order the broker tries them (empty when
    /// it provides none). Stored in `agencies.adapter_endpoint`, one per
    /// line.
    pub adapter_endpoints: Vec<String>,
}

/// The `adapter_endpoint` column's text for `endpoints`: one per line
/// (an endpoint is a URL, which holds no line break), `NULL` for none.
fn join_endpoints(endpoints: &[String]) -> Option<String> {
    (!endpoints.is_empty()).then(|| endpoints.join("\n"))
}

/// The endpoints the `adapter_endpoint` column holds, in order.
fn split_endpoints(column: Option<String>) -> Vec<String> {
    column
        .iter()
        .flat_map(|text| text.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A registered dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub id: DatasetId,
    /// The field lookups use, if the dataset offers lookups.
    pub key_field: Option<String>,
    pub description: String,
}

/// Handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// A small pool whose commits do not wait for the disk, for the
    /// bookkeeping of running exchanges (`replicas.rs`). What it writes
    /// becomes durable with the next durable commit on the same database
    /// (both write one sequential log: SQLite's WAL, PostgreSQL's WAL), so
    /// an exchange's open row is durable once its decision entry is.
    light: AnyPool,
    backend: Backend,
    /// The SQLite database file, for readers that bypass the pool.
    sqlite_file: Option<std::sync::Arc<std::path::Path>>,
    /// The SQLite file's writer thread, started on first use and shared
    /// by every clone: audit batches and the bookkeeping of running
    /// exchanges ([`sqlite_writer`]).
    writer: std::sync::Arc<std::sync::OnceLock<Result<sqlite_writer::SqliteWriter, String>>>,
    /// A read-only connection on the SQLite file for the policy version,
    /// opened on first use (`None` when it could not be: the pool reads).
    reader: std::sync::Arc<std::sync::OnceLock<Option<sqlite_read::Reader>>>,
    /// A typed pool on the same PostgreSQL database, connected on first
    /// use, for reading the audit log without the `Any` layer's copies.
    pg_reader: Option<sqlx::PgPool>,
}

fn now() -> String {
    format_instant(&chrono::Utc::now())
}

/// Normalizes a store location to a sqlx URL.
fn normalize_url(url: &str) -> Result<(String, Backend), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_owned(), Backend::Postgres));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        if path.is_empty() {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = if path.contains("mode=") {
            format!("sqlite://{path}")
        } else {
            format!("sqlite://{path}{sep}mode=rwc")
        };
        return Ok((url, Backend::Sqlite));
    }
    if url.contains("://") || url.is_empty() {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    Ok((format!("sqlite://{url}?mode=rwc"), Backend::Sqlite))
}

/// Checks a PostgreSQL store URL against the TLS rule
/// ([`jembatan_core::dbtls`]) and adds the CA file of `tls` to it.
fn secure_url(url: String, tls: &DatabaseTls) -> Result<String, StoreError> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    let options = PgConnectOptions::from_str(&url)?;
    let transport = match options.get_ssl_mode() {
        PgSslMode::Disable => Transport::Plaintext,
        PgSslMode::Allow | PgSslMode::Prefer => Transport::MaybePlaintext,
        PgSslMode::Require => Transport::Unverified,
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => Transport::Verified,
    };
    let endpoint = match options.get_socket() {
        Some(_) => Endpoint::Socket,
        None => Endpoint::Host(options.get_host()),
    };
    dbtls::check(endpoint, transport, tls)?;
    let Some(ca) = &tls.ca else {
        return Ok(url);
    };
    if dbtls::url_names_ca(&url) {
        return Err(StoreError::TlsConfig(
            "the CA is named twice, by `ca` and in the store URL (sslrootcert)".into(),
        ));
    }
    let ca = ca
        .to_str()
        .ok_or_else(|| StoreError::TlsConfig(format!("CA path {} is not UTF-8", ca.display())))?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}sslrootcert={}", percent_encode(ca)))
}

/// Checks a store location and its TLS settings without connecting: the
/// URL is one the store supports and, for PostgreSQL, meets the TLS rule.
pub fn check_url(url: &str, tls: &DatabaseTls) -> Result<(), StoreError> {
    match normalize_url(url)? {
        (url, Backend::Postgres) => secure_url(url, tls).map(drop),
        (_, Backend::Sqlite) => Ok(()),
    }
}

/// Percent-encodes everything but unreserved URL characters and `/`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Store {
    /// Opens (creating if needed) the store at `url` and runs migrations,
    /// with the default TLS rule (verified TLS to any host off this
    /// machine; see [`Store::connect_with`]).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, &DatabaseTls::default()).await
    }

    /// Opens (creating if needed) the store at `url` and runs migrations.
    /// A PostgreSQL store off this machine must be reached with verified
    /// TLS (`sslmode=verify-ca` or `verify-full`, the CA from `tls.ca` or
    /// the URL's `sslrootcert`) unless `tls.allow_plaintext`.
    pub async fn connect_with(url: &str, tls: &DatabaseTls) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalize_url(url)?;
        let url = match backend {
            Backend::Postgres => secure_url(url, tls)?,
            Backend::Sqlite => url,
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let light = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 2 } else { 4 })
            .min_connections(0)
            .test_before_acquire(backend != Backend::Sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            // no fsync at commit: the next FULL commit on
                            // the WAL makes these writes durable with it
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                        }
                        Backend::Postgres => {
                            conn.execute("SET synchronous_commit = off").await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            // A SQLite connection is a handle on a local file: it cannot go
            // stale, and a ping costs a round trip to its worker thread.
            .test_before_acquire(backend != Backend::Sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Durable commits: an audit entry acknowledged is on disk.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA cache_size = -65536").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        let (sqlite_file, pg_reader) = match backend {
            Backend::Sqlite => (sqlite_file(&pool).await?, None),
            Backend::Postgres => (
                None,
                Some(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(4)
                        .min_connections(0)
                        .idle_timeout(std::time::Duration::from_secs(30))
                        .connect_lazy(&url)?,
                ),
            ),
        };
        Ok(Store {
            pool,
            light,
            backend,
            sqlite_file,
            writer: Default::default(),
            reader: Default::default(),
            pg_reader,
        })
    }

    /// Opens an existing store and runs migrations, refusing to create a
    /// new empty one: a SQLite file must already exist.
    pub async fn open_existing(url: &str) -> Result<Store, StoreError> {
        Store::open_existing_with(url, &DatabaseTls::default()).await
    }

    /// [`Store::open_existing`] with TLS settings (see
    /// [`Store::connect_with`]).
    pub async fn open_existing_with(url: &str, tls: &DatabaseTls) -> Result<Store, StoreError> {
        if let (sqlite_url, Backend::Sqlite) = normalize_url(url)? {
            let path = sqlite_url
                .strip_prefix("sqlite://")
                .unwrap_or(&sqlite_url)
                .split('?')
                .next()
                .unwrap_or_default();
            if !std::path::Path::new(path).is_file() {
                return Err(StoreError::Missing(path.to_owned()));
            }
        }
        Store::connect_with(url, tls).await
    }

    /// A plain connection pool on a PostgreSQL server, for administrative
    /// statements such as creating databases (tests and `jembatan bench`).
    pub async fn admin_pool(url: &str) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        Ok(AnyPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await?)
    }

    /// Begins a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`): a deferred transaction that reads
    /// and then writes cannot upgrade its lock once another writer has
    /// committed, and fails with "database is locked" whatever the busy
    /// timeout.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// [`Store::begin_write`] on the pool whose commits do not wait for
    /// the disk: what it commits is durable once a later commit on the
    /// main pool or the audit writer is (SQLite's WAL and PostgreSQL's
    /// write-ahead log are flushed in order). For writes that an audit
    /// entry always follows before anyone is told of them.
    pub(crate) async fn begin_light_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.light.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.light.begin().await?,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for the bookkeeping of running exchanges, whose commits
    /// do not wait for the disk (see the field).
    pub(crate) fn light_pool(&self) -> &AnyPool {
        &self.light
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The typed PostgreSQL pool for reading the audit log, on PostgreSQL.
    pub(crate) fn pg_reader(&self) -> Option<&sqlx::PgPool> {
        self.pg_reader.as_ref()
    }

    /// The SQLite database file, when the store is one on disk.
    pub(crate) fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.sqlite_file.as_deref()
    }

    /// Whether this store writes through a writer thread: a SQLite store
    /// on a file.
    pub(crate) fn has_sqlite_writer(&self) -> bool {
        self.backend == Backend::Sqlite && self.sqlite_file.is_some()
    }

    /// The SQLite file's writer thread, started on first use. `Err` on a
    /// PostgreSQL store, a SQLite store in memory, or when the thread's
    /// connection could not be opened (the reason).
    pub(crate) fn sqlite_writer(&self) -> Result<&sqlite_writer::SqliteWriter, StoreError> {
        let Some(path) = self.sqlite_file() else {
            return Err(StoreError::AuditUnavailable(match self.backend {
                Backend::Sqlite => "a SQLite store in memory has no file to write".into(),
                Backend::Postgres => "a PostgreSQL store has no SQLite writer".into(),
            }));
        };
        self.writer
            .get_or_init(|| sqlite_writer::SqliteWriter::start(path).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|why| StoreError::AuditUnavailable(why.clone()))
    }

    /// The SQLite file's read-only connection, opened on first use;
    /// `None` on PostgreSQL, in memory, or when it cannot be opened.
    pub(crate) fn sqlite_reader(&self) -> Option<&sqlite_read::Reader> {
        let path = self.sqlite_file()?;
        self.reader
            .get_or_init(|| match sqlite_read::Reader::open(path) {
                Ok(reader) => Some(reader),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot open a read connection on the store file; the pool reads the policy version");
                    None
                }
            })
            .as_ref()
    }

    /// Brings the subject index up to the end of the log. A SQLite
    /// store's index trails its log (see migration 0021) and catches up
    /// on its own; this is for a copy or a count that needs every row
    /// now. A PostgreSQL store writes the index with its entries.
    pub async fn catch_up_subjects(&self) -> Result<(), StoreError> {
        if self.has_sqlite_writer() {
            self.sqlite_writer()?.catch_up().await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.light.close().await;
        if let Some(reader) = &self.pg_reader {
            reader.close().await;
        }
    }

    pub async fn upsert_agency(&self, agency: &Agency) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agencies (id, name, adapter_endpoint, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 adapter_endpoint = excluded.adapter_endpoint, updated_at = excluded.updated_at",
        )
        .bind(agency.id.as_str())
        .bind(&agency.name)
        .bind(join_endpoints(&agency.adapter_endpoints))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn agency(&self, id: &AgencyId) -> Result<Option<Agency>, StoreError> {
        let row = sqlx::query("SELECT id, name, adapter_endpoint FROM agencies WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Agency {
                id: parse(&r.try_get::<String, _>(0)?, "agency id")?,
                name: r.try_get(1)?,
                adapter_endpoints: split_endpoints(r.try_get(2)?),
            })
        })
        .transpose()
    }

    pub async fn upsert_dataset(&self, dataset: &Dataset) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO datasets (id, provider, key_field, description, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET key_field = excluded.key_field,
                 description = excluded.description, updated_at = excluded.updated_at",
        )
        .bind(dataset.id.as_str())
        .bind(dataset.id.agency().as_str())
        .bind(dataset.key_field.as_deref())
        .bind(&dataset.description)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn dataset(&self, id: &DatasetId) -> Result<Option<Dataset>, StoreError> {
        let row = sqlx::query("SELECT id, key_field, description FROM datasets WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Dataset {
                id: parse(&r.try_get::<String, _>(0)?, "dataset id")?,
                key_field: r.try_get(1)?,
                description: r.try_get(2)?,
            })
        })
        .transpose()
    }
}

/// The file SQLite itself opened for the main database, as it names it
/// (None for an in-memory database).
async fn sqlite_file(
    pool: &AnyPool,
) -> Result<Option<std::sync::Arc<std::path::Path>>, StoreError> {
    let rows = sqlx::query("PRAGMA database_list").fetch_all(pool).await?;
    for row in rows {
        let name: String = row.try_get(1)?;
        let file: Option<String> = row.try_get(2)?;
        if name == "main" {
            return Ok(file
                .filter(|f| !f.is_empty())
                .map(|f| std::path::Path::new(&f).into()));
        }
    }
    Ok(None)
}

fn parse<T: FromStr>(s: &str, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| StoreError::Corrupt {
        what: what.into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let cases = [
            ("broker.db", Some("sqlite://broker.db?mode=rwc")),
            (
                "/tmp/x/broker.db",
                Some("sqlite:///tmp/x/broker.db?mode=rwc"),
            ),
            ("sqlite:broker.db", Some("sqlite://broker.db?mode=rwc")),
            (
                "sqlite://broker.db?mode=ro",
                Some("sqlite://broker.db?mode=ro"),
            ),
            ("postgres://u@h/db", Some("postgres://u@h/db")),
            ("mysql://root@h/db", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = normalize_url(input).ok().map(|(u, _)| u);
            assert_eq!(got.as_deref(), want, "{input}");
        }
    }
}
