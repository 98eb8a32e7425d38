//! Moving a SQLite store to PostgreSQL: every table of the store copied
//! value for value, in primary-key order and in bounded batches, into an
//! empty PostgreSQL store in one transaction; then both stores verified
//! and compared.
//!
//! The source is read through rusqlite in one read transaction (one
//! snapshot of every table) on a blocking thread, which hands batches of
//! at most [`BATCH_ROWS`] rows (and about [`BATCH_BYTES`]) to the writer
//! through a channel of two: memory stays flat however long the log. Each
//! batch is one `INSERT … SELECT FROM UNNEST(…)` with one array per column.
//! Entry bytes, leaf hashes, tiles and checkpoint notes are copied as they
//! are, so the copy has the same tree and the same signed checkpoints.
//!
//! The target's transaction commits only after the source's audit log is
//! found the same size as when the copy began: a broker appending to the
//! source during the copy fails it, and leaves the target empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jembatan_tlog::note::Verifier;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sqlx::Row;
use sqlx::postgres::Postgres;

use crate::verify::{VerifyReport, verify};
use crate::{Backend, Store, StoreError, normalize_url};

/// Rows per INSERT.
pub const BATCH_ROWS: usize = 10_000;

/// Bytes of values per INSERT, about: a batch of large rows ends early.
pub const BATCH_BYTES: usize = 8 << 20;

/// The type of a column, the same on both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TEXT NOT NULL.
    Text,
    /// TEXT, NULL allowed.
    OptText,
    /// INTEGER / BIGINT NOT NULL.
    Int,
    /// BLOB / BYTEA NOT NULL.
    Bytes,
}

impl Kind {
    fn pg_array(self) -> &'static str {
        match self {
            Kind::Text | Kind::OptText => "text[]",
            Kind::Int => "bigint[]",
            Kind::Bytes => "bytea[]",
        }
    }
}

/// One table of the store: its columns and primary key.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: &'static [&'static str],
}

use Kind::{Bytes, Int, OptText, Text};

/// Every table the store's migrations create, in an order that satisfies
/// their foreign keys. A store holding a table or column not named here
/// is refused rather than copied in part.
const TABLES: [Table; 19] = [
    Table {
        name: "agencies",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("adapter_endpoint", OptText),
            ("updated_at", Text),
        ],
        key: &["id"],
    },
    Table {
        name: "datasets",
        columns: &[
            ("id", Text),
            ("provider", Text),
            ("key_field", OptText),
            ("description", Text),
            ("updated_at", Text),
        ],
        key: &["id"],
    },
    Table {
        name: "agreements",
        columns: &[
            ("id", Text),
            ("provider", Text),
            ("consumer", Text),
            ("dataset", Text),
            ("status", Text),
            ("document", Text),
            ("updated_at", Text),
        ],
        key: &["id"],
    },
    Table {
        name: "registry_datasets",
        columns: &[
            ("dataset", Text),
            ("compatibility", OptText),
            ("optional_friendly", Int),
            ("updated_at", Text),
        ],
        key: &["dataset"],
    },
    Table {
        name: "schemas",
        columns: &[("schema_id", Text), ("document", Text)],
        key: &["schema_id"],
    },
    Table {
        name: "schema_versions",
        columns: &[
            ("dataset", Text),
            ("version", Int),
            ("schema_id", Text),
            ("state", Text),
            ("registered_at", Text),
            ("registered_by", Text),
        ],
        key: &["dataset", "version"],
    },
    Table {
        name: "mappings",
        columns: &[
            ("source", Text),
            ("target", Text),
            ("version", Int),
            ("document", Text),
            ("registered_at", Text),
            ("registered_by", Text),
            ("state", Text),
        ],
        key: &["source", "target", "version"],
    },
    Table {
        name: "quota_usage",
        columns: &[
            ("agreement_id", Text),
            ("quota", Text),
            ("window_start", Text),
            ("used", Int),
        ],
        key: &["agreement_id", "quota", "window_start"],
    },
    // before the log: a range archived out of it is not expected back
    Table {
        name: "audit_archives",
        columns: &[
            ("up_to", Int),
            ("from_seq", Int),
            ("checkpoint", Int),
            ("file_sha256", Text),
            ("archived_at", Text),
        ],
        key: &["up_to"],
    },
    Table {
        name: "audit_log",
        columns: &[
            ("seq", Int),
            ("exchange_id", Text),
            ("kind", Text),
            ("recorded_at", Text),
            ("caller", Text),
            ("consumer", OptText),
            ("provider", OptText),
            ("dataset", OptText),
            ("purpose", OptText),
            ("decision", Text),
            ("status", Text),
            ("subject_hash", OptText),
            ("entry", Bytes),
            ("entry_sha256", Text),
        ],
        key: &["seq"],
    },
    Table {
        name: "audit_subjects",
        columns: &[("subject_key", Int), ("seq", Int)],
        key: &["subject_key", "seq"],
    },
    Table {
        name: "checkpoints",
        columns: &[
            ("size", Int),
            ("root_hash", Text),
            ("note", Text),
            ("created_at", Text),
        ],
        key: &["size"],
    },
    Table {
        name: "subscriptions",
        columns: &[
            ("subscription_id", Text),
            ("last_batch", Int),
            ("horizon", Int),
            ("generation", Int),
        ],
        key: &["subscription_id"],
    },
    Table {
        name: "subscription_key_batches",
        columns: &[
            ("subscription_id", Text),
            ("batch", Int),
            ("part", Int),
            ("given", Bytes),
            ("taken", Bytes),
        ],
        key: &["subscription_id", "batch", "part"],
    },
    Table {
        name: "audit_tiles",
        columns: &[("level", Int), ("idx", Int), ("hashes", Bytes)],
        key: &["level", "idx"],
    },
    // a stopped broker's open exchanges are carried over, so that a
    // broker on the new store closes them `abandoned`
    Table {
        name: "replicas",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("started_at", Text),
            ("lease_until", Int),
            ("gone_at", OptText),
        ],
        key: &["id"],
    },
    Table {
        name: "open_exchanges",
        columns: &[
            ("exchange_id", Text),
            ("replica", Text),
            ("consumer", Text),
            ("opened_at", Text),
            ("provider", OptText),
        ],
        key: &["exchange_id"],
    },
    Table {
        name: "leases",
        columns: &[("name", Text), ("holder", Text), ("until_ms", Int)],
        key: &["name"],
    },
    // last: copying the tables before it moved it through their triggers
    // (see `insert`)
    Table {
        name: "policy_version",
        columns: &[("id", Int), ("n", Int)],
        key: &["id"],
    },
];

/// SQLite-only tables, not copied: how far the subject index has come
/// (migration 0021; PostgreSQL writes the index with the entries, and a
/// source's index is brought up to its log before the copy).
const SQLITE_ONLY: [&str; 1] = ["audit_subjects_through"];

/// The names of every table a migration copies, in copy order.
pub fn table_names() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|t| t.name)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the source must be a SQLite store (sqlite:PATH), not {0}")]
    SourceNotSqlite(String),
    #[error("the target must be a PostgreSQL store (postgres://...), not {0}")]
    TargetNotPostgres(String),
    #[error("{path} is not a Jembatan SQLite store: {why}")]
    NotAStore { path: String, why: String },
    #[error(
        "the target store is not empty: table {table} holds rows; \
         migrate into a new, empty database"
    )]
    TargetNotEmpty { table: &'static str },
    #[error("the {side} store's tables are not the ones this version copies: {why}")]
    UnknownSchema { side: &'static str, why: String },
    #[error("{table} row {row}: column {column} does not hold {expected}")]
    Value {
        table: &'static str,
        column: &'static str,
        row: u64,
        expected: &'static str,
    },
    #[error(
        "the source's audit log changed during the copy ({before} entries at the start, \
         {after} at the end): stop every broker using it and migrate again; \
         nothing was committed to the target"
    )]
    SourceChanged { before: u64, after: u64 },
    #[error("cannot read the source store: {0}")]
    Source(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        MigrateError::Store(StoreError::Database(e))
    }
}

fn source_error(e: rusqlite::Error) -> MigrateError {
    MigrateError::Source(e.to_string())
}

/// How far the copy of one table has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub table: &'static str,
    pub copied: u64,
    pub total: u64,
}

/// What a migration copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Rows copied, per table in copy order.
    pub rows: Vec<(&'static str, u64)>,
    /// Entries of the audit log copied.
    pub log_size: u64,
    /// `table.column` of every PostgreSQL sequence moved past the copied
    /// values (none in the current schema: audit seqs are numbered from
    /// the log itself).
    pub sequences: Vec<String>,
}

/// Checks the two locations: the source a SQLite store on disk, the target
/// PostgreSQL. Returns the source's file.
fn check_locations(from: &str, to: &str) -> Result<PathBuf, MigrateError> {
    let from_url = match normalize_url(from) {
        Ok((url, Backend::Sqlite)) => url,
        _ => return Err(MigrateError::SourceNotSqlite(describe_location(from))),
    };
    if !matches!(normalize_url(to), Ok((_, Backend::Postgres))) {
        return Err(MigrateError::TargetNotPostgres(describe_location(to)));
    }
    let path = from_url
        .strip_prefix("sqlite://")
        .unwrap_or(&from_url)
        .split('?')
        .next()
        .unwrap_or_default();
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(MigrateError::NotAStore {
            path: path.display().to_string(),
            why: "no such file".into(),
        });
    }
    // Before anything opens it read-write (and would create tables in any
    // SQLite file): it must be a store already.
    let conn = open_source(&path)?;
    let found: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'
             AND name IN ('_sqlx_migrations', 'audit_log', 'agencies')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| MigrateError::NotAStore {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    if found != 3 {
        return Err(MigrateError::NotAStore {
            path: path.display().to_string(),
            why: "it has no audit_log, agencies or migrations table".into(),
        });
    }
    Ok(path)
}

/// A location for an error message: a URL by its scheme only (it may
/// carry a password), a file path as it is.
fn describe_location(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, _)) => format!("a {scheme}:// URL"),
        None => format!("{location:?}"),
    }
}

fn open_source(path: &Path) -> Result<Connection, MigrateError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(source_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(source_error)?;
    Ok(conn)
}

/// Opens the source store (bringing its schema up to date, as any command
/// opening it does) and the target (created and migrated by the store's
/// normal connect), after checking what each is.
pub async fn open_stores(
    from: &str,
    to: &str,
    tls: &jembatan_core::dbtls::DatabaseTls,
) -> Result<(Store, Store), MigrateError> {
    check_locations(from, to)?;
    let source = Store::open_existing(from).await?;
    let target = match Store::connect_with(to, tls).await {
        Ok(target) => target,
        Err(e) => {
            source.close().await;
            return Err(e.into());
        }
    };
    Ok((source, target))
}

/// Copies every table of `source` (a SQLite store) into `target` (an
/// empty PostgreSQL store), calling `progress` after each batch. The
/// target is written in one transaction: on any error it is left as it
/// was. See the module docs.
pub async fn migrate(
    source: &Store,
    target: &Store,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<MigrateReport, MigrateError> {
    let Some(path) = source.sqlite_file().map(Path::to_owned) else {
        return Err(MigrateError::SourceNotSqlite(
            "a store with no SQLite file".into(),
        ));
    };
    let Some(writer) = target.pg_reader() else {
        return Err(MigrateError::TargetNotPostgres(
            "a store that is not PostgreSQL".into(),
        ));
    };
    check_source_schema(&open_source(&path)?)?;
    check_target_schema(writer).await?;
    // the copy holds every subject row the entries name
    source.catch_up_subjects().await?;

    let mut tx = writer.begin().await?;
    // Appenders of any broker already started on the target wait for the
    // copy (the lock every appender takes; see migration 0004).
    sqlx::query("SELECT pg_advisory_xact_lock(116983859405172)")
        .execute(&mut *tx)
        .await?;
    for table in &TABLES {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", table.name);
        let found: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *tx)
            .await?;
        if found {
            return Err(MigrateError::TargetNotEmpty { table: table.name });
        }
    }

    let (sender, mut batches) = tokio::sync::mpsc::channel(2);
    let reader_path = path.clone();
    let reader = tokio::task::spawn_blocking(move || read_source(&reader_path, &sender));
    let mut start: Option<Snapshot> = None;
    let mut copied = [0u64; TABLES.len()];
    while let Some(message) = batches.recv().await {
        match message {
            Message::Start(snapshot) => start = Some(snapshot),
            Message::Batch(batch) => {
                let (i, rows) = (batch.table, batch.rows as u64);
                let table = &TABLES[i];
                insert(&mut tx, table, batch).await?;
                copied[i] += rows;
                progress(Progress {
                    table: table.name,
                    copied: copied[i],
                    total: start.as_ref().map_or(copied[i], |s| s.rows[i]),
                });
            }
        }
    }
    reader
        .await
        .map_err(|e| MigrateError::Source(format!("reading task failed: {e}")))??;
    let Some(start) = start else {
        return Err(MigrateError::Source("nothing was read".into()));
    };
    for (i, table) in TABLES.iter().enumerate() {
        if copied[i] != start.rows[i] {
            return Err(MigrateError::Source(format!(
                "{} rows of {} counted but {} read",
                start.rows[i], table.name, copied[i]
            )));
        }
    }
    let sequences = advance_sequences(&mut tx).await?;

    // The source must not have moved on while it was read: a broker still
    // appending would leave entries behind.
    let after = tokio::task::spawn_blocking(move || log_size(&open_source(&path)?))
        .await
        .map_err(|e| MigrateError::Source(format!("reading task failed: {e}")))??;
    if after != start.log_size {
        return Err(MigrateError::SourceChanged {
            before: start.log_size,
            after,
        });
    }
    tx.commit().await?;
    Ok(MigrateReport {
        rows: TABLES.iter().map(|t| t.name).zip(copied).collect(),
        log_size: start.log_size,
        sequences,
    })
}

/// What the source's snapshot holds before any row is read.
struct Snapshot {
    rows: [u64; TABLES.len()],
    log_size: u64,
}

enum Message {
    Start(Snapshot),
    Batch(Batch),
}

/// Rows of one table, one vector per column.
struct Batch {
    table: usize,
    rows: usize,
    columns: Vec<Values>,
}

enum Values {
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Int(Vec<i64>),
    Bytes(Vec<Vec<u8>>),
}

impl Values {
    fn new(kind: Kind) -> Values {
        match kind {
            Kind::Text => Values::Text(Vec::new()),
            Kind::OptText => Values::OptText(Vec::new()),
            Kind::Int => Values::Int(Vec::new()),
            Kind::Bytes => Values::Bytes(Vec::new()),
        }
    }
}

fn log_size(conn: &Connection) -> Result<u64, MigrateError> {
    let size: i64 = conn
        .query_row(crate::sqlite_writer::NEXT_SEQ, [], |r| r.get(0))
        .map_err(source_error)?;
    Ok(u64::try_from(size).unwrap_or_default())
}

/// Reads every table in one read transaction and sends it in batches.
/// Stops quietly when the receiver has gone (the writer failed).
fn read_source(
    path: &Path,
    sender: &tokio::sync::mpsc::Sender<Message>,
) -> Result<(), MigrateError> {
    let conn = open_source(path)?;
    let tx = conn.unchecked_transaction().map_err(source_error)?;
    let mut rows = [0u64; TABLES.len()];
    for (i, table) in TABLES.iter().enumerate() {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name);
        let n: i64 = tx.query_row(&sql, [], |r| r.get(0)).map_err(source_error)?;
        rows[i] = u64::try_from(n).unwrap_or_default();
    }
    let log_size = log_size(&tx)?;
    let indexed: i64 = tx
        .query_row(crate::sqlite_writer::MARK, [], |r| r.get(0))
        .map_err(source_error)?;
    if u64::try_from(indexed).unwrap_or_default() < log_size {
        return Err(MigrateError::Source(format!(
            "the subject index covers {indexed} of the log's {log_size} entries: \
             stop every broker using the store and migrate again"
        )));
    }
    if sender
        .blocking_send(Message::Start(Snapshot { rows, log_size }))
        .is_err()
    {
        return Ok(());
    }
    for (i, table) in TABLES.iter().enumerate() {
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            columns.join(", "),
            table.name,
            table.key.join(", ")
        );
        let mut statement = tx.prepare(&sql).map_err(source_error)?;
        let mut cursor = statement.query([]).map_err(source_error)?;
        let mut batch = new_batch(i, table);
        let mut bytes = 0usize;
        let mut row_number = 0u64;
        while let Some(r) = cursor.next().map_err(source_error)? {
            for (c, ((column, kind), values)) in
                table.columns.iter().zip(&mut batch.columns).enumerate()
            {
                let value = r.get_ref(c).map_err(source_error)?;
                let bad = || MigrateError::Value {
                    table: table.name,
                    column,
                    row: row_number,
                    expected: match kind {
                        Kind::Text => "text",
                        Kind::OptText => "text or NULL",
                        Kind::Int => "an integer",
                        Kind::Bytes => "bytes (a BLOB)",
                    },
                };
                let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|_| bad());
                match (values, value) {
                    (Values::Text(v), ValueRef::Text(b)) => {
                        bytes += b.len();
                        v.push(text(b)?);
                    }
                    (Values::OptText(v), ValueRef::Text(b)) => {
                        bytes += b.len();
                        v.push(Some(text(b)?));
                    }
                    (Values::OptText(v), ValueRef::Null) => v.push(None),
                    (Values::Int(v), ValueRef::Integer(n)) => {
                        bytes += 8;
                        v.push(n);
                    }
                    (Values::Bytes(v), ValueRef::Blob(b)) => {
                        bytes += b.len();
                        v.push(b.to_vec());
                    }
                    _ => return Err(bad()),
                }
            }
            batch.rows += 1;
            row_number += 1;
            if batch.rows >= BATCH_ROWS || bytes >= BATCH_BYTES {
                let full = std::mem::replace(&mut batch, new_batch(i, table));
                bytes = 0;
                if sender.blocking_send(Message::Batch(full)).is_err() {
                    return Ok(());
                }
            }
        }
        if batch.rows > 0 && sender.blocking_send(Message::Batch(batch)).is_err() {
            return Ok(());
        }
    }
    tx.commit().map_err(source_error)?;
    Ok(())
}

fn new_batch(table: usize, spec: &Table) -> Batch {
    Batch {
        table,
        rows: 0,
        columns: spec.columns.iter().map(|(_, k)| Values::new(*k)).collect(),
    }
}

/// Inserts one batch: one statement, one array per column.
async fn insert(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    table: &Table,
    batch: Batch,
) -> Result<(), MigrateError> {
    if table.name == "policy_version" {
        // the triggers of the tables copied before counted their rows as
        // changes; the source's own count replaces that
        sqlx::query("DELETE FROM policy_version")
            .execute(&mut **tx)
            .await?;
    }
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let arrays: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| format!("${}::{}", i + 1, kind.pg_array()))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT * FROM UNNEST({})",
        table.name,
        columns.join(", "),
        arrays.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for values in batch.columns {
        query = match values {
            Values::Text(v) => query.bind(v),
            Values::OptText(v) => query.bind(v),
            Values::Int(v) => query.bind(v),
            Values::Bytes(v) => query.bind(v),
        };
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// The columns of a table as its backend lists them, by name.
type Columns = BTreeMap<String, BTreeMap<String, String>>;

/// Compares the tables and columns found with [`TABLES`]: every store
/// table known, every column known, none missing.
fn compare_schema(side: &'static str, found: &Columns) -> Result<(), MigrateError> {
    let unknown = |why: String| MigrateError::UnknownSchema { side, why };
    for (name, columns) in found {
        let Some(table) = TABLES.iter().find(|t| t.name == name) else {
            return Err(unknown(format!(
                "table {name} is not one this version knows"
            )));
        };
        for column in columns.keys() {
            if !table.columns.iter().any(|(c, _)| c == column) {
                return Err(unknown(format!(
                    "column {name}.{column} is not one this version knows"
                )));
            }
        }
    }
    for table in &TABLES {
        let Some(columns) = found.get(table.name) else {
            return Err(unknown(format!("table {} is missing", table.name)));
        };
        for (column, _) in table.columns {
            if !columns.contains_key(*column) {
                return Err(unknown(format!(
                    "column {}.{column} is missing",
                    table.name
                )));
            }
        }
    }
    Ok(())
}

fn check_source_schema(conn: &Connection) -> Result<(), MigrateError> {
    let mut tables = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
        )
        .map_err(source_error)?;
    let names: Vec<String> = tables
        .query_map([], |r| r.get(0))
        .map_err(source_error)?
        .collect::<Result<_, _>>()
        .map_err(source_error)?;
    let mut found = Columns::new();
    for name in names {
        let mut info = conn
            .prepare("SELECT name, type FROM pragma_table_info(?1)")
            .map_err(source_error)?;
        let columns = info
            .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(source_error)?
            .collect::<Result<_, _>>()
            .map_err(source_error)?;
        found.insert(name, columns);
    }
    for name in SQLITE_ONLY {
        found.remove(name);
    }
    compare_schema("source", &found)
}

async fn check_target_schema(pool: &sqlx::PgPool) -> Result<(), MigrateError> {
    let rows = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
           AND c.table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await?;
    let mut found = Columns::new();
    for row in rows {
        found
            .entry(row.try_get(0)?)
            .or_default()
            .insert(row.try_get(1)?, row.try_get(2)?);
    }
    compare_schema("target", &found)
}

/// Moves every sequence feeding a column of the store's tables (serial
/// or identity) past the largest value copied, so the next row the store
/// adds does not collide with a copied one. Returns `table.column` of each.
async fn advance_sequences(
    tx: &mut sqlx::Transaction<'static, Postgres>,
) -> Result<Vec<String>, MigrateError> {
    let names: Vec<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
    let rows = sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = ANY($1)
           AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')
         ORDER BY table_name, column_name",
    )
    .bind(&names)
    .fetch_all(&mut **tx)
    .await?;
    let mut advanced = Vec::new();
    for row in rows {
        let (table, column): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        advance_sequence(tx, &table, &column).await?;
        advanced.push(format!("{table}.{column}"));
    }
    Ok(advanced)
}

/// Sets the sequence of `table.column` so that its next value is one past
/// the column's largest (1 on an empty table).
async fn advance_sequence(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    table: &str,
    column: &str,
) -> Result<(), MigrateError> {
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let sql = format!(
        "SELECT setval(pg_get_serial_sequence($1, $2),
                       COALESCE((SELECT MAX({}) FROM {}), 0) + 1, false)",
        quote(column),
        quote(table)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(quote(table))
        .bind(column)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One store as the comparison after a migration sees it.
#[derive(Debug, Clone)]
pub struct Side {
    /// The verification of its log and checkpoints, or why it failed.
    pub verified: Result<VerifyReport, String>,
    pub checkpoints: usize,
    /// Size and root of the latest checkpoint.
    pub latest_checkpoint: Option<(u64, String)>,
    /// Rows per table, in copy order.
    pub rows: Vec<(&'static str, u64)>,
}

/// Both stores after a migration; [`Comparison::differences`] says where
/// they disagree.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub source: Side,
    pub target: Side,
}

impl Comparison {
    /// Everything that differs between the stores, or fails on either, in
    /// words; empty when the copy is proven.
    pub fn differences(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, side) in [("source", &self.source), ("target", &self.target)] {
            if let Err(e) = &side.verified {
                out.push(format!("the {name} store does not verify: {e}"));
            }
        }
        if let (Ok(s), Ok(t)) = (&self.source.verified, &self.target.verified) {
            if s.size != t.size {
                out.push(format!(
                    "audit log size: {} in the source, {} in the target",
                    s.size, t.size
                ));
            }
            if s.root != t.root {
                out.push(format!(
                    "root hash: {} in the source, {} in the target",
                    s.root_hex(),
                    t.root_hex()
                ));
            }
        }
        if self.source.checkpoints != self.target.checkpoints {
            out.push(format!(
                "checkpoints: {} in the source, {} in the target",
                self.source.checkpoints, self.target.checkpoints
            ));
        }
        if self.source.latest_checkpoint != self.target.latest_checkpoint {
            out.push(format!(
                "latest checkpoint: {} in the source, {} in the target",
                describe_checkpoint(&self.source.latest_checkpoint),
                describe_checkpoint(&self.target.latest_checkpoint)
            ));
        }
        for ((table, s), (_, t)) in self.source.rows.iter().zip(&self.target.rows) {
            if s != t {
                out.push(format!(
                    "table {table}: {s} rows in the source, {t} in the target"
                ));
            }
        }
        out
    }
}

fn describe_checkpoint(c: &Option<(u64, String)>) -> String {
    match c {
        Some((size, root)) => format!("size {size} root {root}"),
        None => "none".into(),
    }
}

/// Rows in each of the store's tables, in copy order.
pub async fn row_counts(store: &Store) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let mut out = Vec::with_capacity(TABLES.len());
    for table in &TABLES {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name);
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(store.pool())
            .await?;
        out.push((table.name, u64::try_from(n).unwrap_or_default()));
    }
    Ok(out)
}

async fn side(store: &Store, verifier: &Verifier) -> Result<Side, StoreError> {
    store.catch_up_subjects().await?;
    let verified = verify(store, verifier).await.map_err(|e| e.to_string());
    let checkpoints = store.checkpoints().await?;
    Ok(Side {
        verified,
        checkpoints: checkpoints.len(),
        latest_checkpoint: checkpoints.last().map(|c| (c.size, c.root_hash.clone())),
        rows: row_counts(store).await?,
    })
}

/// Verifies both stores as `jembatan audit verify` does and gathers what
/// the copy must agree on: log size, root, checkpoints, rows per table.
pub async fn compare(
    source: &Store,
    target: &Store,
    verifier: &Verifier,
) -> Result<Comparison, StoreError> {
    Ok(Comparison {
        source: side(source, verifier).await?,
        target: side(target, verifier).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_before_anything_is_opened() {
        let cases = [
            (
                "postgres://u@h/db",
                "postgres://u@h/db2",
                "must be a SQLite",
            ),
            (
                "mysql://u:secret@h/db",
                "postgres://u@h/db2",
                "must be a SQLite store (sqlite:PATH), not a mysql:// URL",
            ),
            (
                "sqlite:/nowhere/broker.db",
                "sqlite:/tmp/x.db",
                "must be a PostgreSQL",
            ),
            (
                "sqlite:/nowhere/broker.db",
                "/tmp/x.db",
                "must be a PostgreSQL",
            ),
            (
                "sqlite:/nowhere/broker.db",
                "mysql://u@h/db",
                "must be a PostgreSQL",
            ),
            (
                "sqlite:/nowhere/broker.db",
                "postgres://u@h/db",
                "no such file",
            ),
        ];
        for (from, to, expected) in cases {
            let err = check_locations(from, to).unwrap_err().to_string();
            assert!(err.contains(expected), "{from} -> {to}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn a_sqlite_file_that_is_not_a_store_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        drop(conn);
        let err = check_locations(&format!("sqlite:{}", path.display()), "postgres://u@h/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a Jembatan SQLite store"), "{err}");
        let tables: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1, "the file was changed");
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"not a database at all, just text").unwrap();
        let err = check_locations(&format!("sqlite:{}", junk.display()), "postgres://u@h/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a Jembatan SQLite store"), "{err}");
    }

    #[test]
    fn every_table_of_the_migrations_is_copied() {
        // Each CREATE TABLE of either backend's migrations names a table
        // in TABLES (unless a DROP TABLE removed it), and each table there
        // is created by both.
        for backend in ["sqlite", "postgres"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            // the migrations in the order they run
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|f| f.unwrap().path())
                .collect();
            files.sort();
            let mut created: Vec<String> = Vec::new();
            for file in files {
                let text = std::fs::read_to_string(file).unwrap();
                for line in text.lines() {
                    let line = line.trim().trim_end_matches(';');
                    if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                        created.push(rest.split_whitespace().next().unwrap().to_owned());
                    }
                    // a table a later migration replaced is not copied
                    if let Some(rest) = line.strip_prefix("DROP TABLE ") {
                        created.retain(|t| t != rest.trim());
                    }
                    if let Some(rest) = line.strip_prefix("ALTER TABLE ")
                        && let Some((from, to)) = rest.split_once(" RENAME TO ")
                    {
                        created.retain(|t| t != from.trim());
                        created.push(to.trim().to_owned());
                    }
                }
            }
            created.sort();
            let mut known: Vec<String> = table_names().map(str::to_owned).collect();
            if backend == "sqlite" {
                known.extend(SQLITE_ONLY.iter().map(|name| (*name).to_owned()));
            }
            known.sort();
            assert_eq!(created, known, "{backend}");
        }
    }
}
