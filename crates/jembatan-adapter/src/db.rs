//! Database access per backend: opening pools, reading the live schema,
//! mapping column types to JSON kinds, binding values and turning rows
//! into JSON records.
//!
//! Each backend keeps its own pool type (no `sqlx::Any`, which loses
//! types), so every column is decoded with the Rust type its database
//! type calls for.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use futures::{Stream, StreamExt};
use jembatan_core::dbtls::DatabaseTls;
use jembatan_core::record::{Cell, RecordEncoder};
use serde_json::Value;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, Row as _, TypeInfo as _, ValueRef as _};

use crate::config::Backend;
use crate::error::{AdapterError, redact_url};
use crate::kind::ColumnKind;
use crate::sql::{BindValue, Dialect, Rendered};

/// How much longer than the adapter's own deadline the database's limit
/// on a statement is: the adapter stops the fetch and answers first, the
/// database then stops the statement.
const SERVER_LIMIT_SLACK: Duration = Duration::from_millis(250);
/// SQLite virtual-machine steps between two checks of a query's deadline.
const SQLITE_PROGRESS_STEPS: i32 = 10_000;

/// An open database, one pool type per backend.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool, MySqlFlavor),
}

/// MariaDB and MySQL name their statement time limits differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MySqlFlavor {
    MariaDb,
    MySql,
}

impl MySqlFlavor {
    /// Sets the session's limit on every statement.
    fn session_limit(self, limit: Duration) -> String {
        match self {
            MySqlFlavor::MariaDb => {
                format!(
                    "SET SESSION max_statement_time = {:.3}",
                    limit.as_secs_f64()
                )
            }
            MySqlFlavor::MySql => format!("SET SESSION max_execution_time = {}", millis(limit)),
        }
    }

    /// `sql` (a SELECT) with its own time limit.
    fn statement_limit(self, sql: &str, limit: Duration) -> String {
        match self {
            MySqlFlavor::MariaDb => format!(
                "SET STATEMENT max_statement_time = {:.3} FOR {sql}",
                limit.as_secs_f64()
            ),
            MySqlFlavor::MySql => match sql.strip_prefix("SELECT ") {
                Some(rest) => format!("SELECT /*+ MAX_EXECUTION_TIME({}) */ {rest}", millis(limit)),
                None => sql.to_owned(),
            },
        }
    }
}

/// Whole milliseconds, at least 1 (0 means "no limit" to the databases).
fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// How often PostgreSQL (14 and later) checks, while a statement runs,
/// that the adapter's connection is still there.
const CLIENT_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// How long a query may run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryTime {
    /// When the adapter stops the fetch.
    pub(crate) deadline: Instant,
    /// Set when the caller's deadline is shorter than the session's
    /// `max_query_time`: the statement then gets its own limit in the
    /// database.
    pub(crate) statement_limit: Option<Duration>,
}

impl Db {
    /// Opens a pool for the URL's backend. SQLite files must exist.
    /// `max_query_time` becomes every session's statement time limit (with
    /// a little slack, so the adapter's own deadline answers first); SQLite,
    /// in process, checks each query's deadline as it runs. The pool keeps
    /// at most `max_connections` connections.
    /// A PostgreSQL or MariaDB server off this machine must be reached
    /// with verified TLS unless `tls` accepts less
    /// ([`jembatan_core::dbtls`]).
    pub(crate) async fn open(
        url: &str,
        tls: &DatabaseTls,
        max_query_time: Duration,
        max_connections: u32,
    ) -> Result<Db, AdapterError> {
        let connect_err = |source| AdapterError::Connect {
            url: redact_url(url),
            source,
        };
        let Some(backend) = Backend::from_url(url) else {
            return Err(AdapterError::Config {
                origin: "database URL".into(),
                message: format!(
                    "{:?} must start with sqlite:, postgres://, postgresql:// or mysql://",
                    redact_url(url)
                ),
            });
        };
        Ok(match backend {
            Backend::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(connect_err)?
                    .create_if_missing(false);
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max_connections)
                        .after_release(|conn, _meta| {
                            Box::pin(async move {
                                // the deadline check of the last query goes with it
                                conn.lock_handle().await?.set_progress_handler(0, || true);
                                Ok(true)
                            })
                        })
                        .connect_with(opts)
                        .await
                        .map_err(connect_err)?,
                )
            }
            Backend::Postgres => {
                let limit = millis(max_query_time + SERVER_LIMIT_SLACK);
                let opts = PgConnectOptions::from_str(url).map_err(connect_err)?;
                let opts = crate::transport::secure_postgres(opts, url, tls)?
                    .options([("statement_timeout", format!("{limit}ms"))]);
                // PostgreSQL 14 and later look for a client that went away
                // while a statement runs: a fetch dropped early (the
                // consumer cancelled) closes its connection, and the server
                // stops the statement within this interval instead of
                // running it on to statement_timeout
                let version = {
                    let conn = sqlx::PgConnection::connect_with(&opts)
                        .await
                        .map_err(connect_err)?;
                    let version = conn.server_version_num();
                    // closing is a courtesy to the server; the version is known
                    let _ = conn.close().await;
                    version
                };
                let opts = if version.is_some_and(|v| v >= 140_000) {
                    opts.options([(
                        "client_connection_check_interval",
                        format!("{}ms", millis(CLIENT_CHECK_INTERVAL)),
                    )])
                } else {
                    opts
                };
                Db::Postgres(
                    PgPoolOptions::new()
                        .max_connections(max_connections)
                        .connect_with(opts)
                        .await
                        .map_err(connect_err)?,
                )
            }
            Backend::MySql => {
                let opts = MySqlConnectOptions::from_str(url).map_err(connect_err)?;
                let opts = crate::transport::secure_mysql(opts, url, tls)?;
                let flavor = {
                    let mut conn = sqlx::MySqlConnection::connect_with(&opts)
                        .await
                        .map_err(connect_err)?;
                    let version: String = sqlx::query_scalar("SELECT VERSION()")
                        .fetch_one(&mut conn)
                        .await
                        .map_err(connect_err)?;
                    // closing is a courtesy to the server; the version is known
                    let _ = conn.close().await;
                    if version.contains("MariaDB") {
                        MySqlFlavor::MariaDb
                    } else {
                        MySqlFlavor::MySql
                    }
                };
                let session_limit = flavor.session_limit(max_query_time + SERVER_LIMIT_SLACK);
                let pool = MySqlPoolOptions::new()
                    .max_connections(max_connections)
                    .after_connect(move |conn, _meta| {
                        let session_limit = session_limit.clone();
                        Box::pin(async move {
                            // prefix matches write their ESCAPE character as '\\'
                            conn.execute(
                                "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
                            )
                            .await?;
                            conn.execute(AssertSqlSafe(session_limit)).await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await
                    .map_err(connect_err)?;
                Db::MySql(pool, flavor)
            }
        })
    }

    /// The PostgreSQL pool, for a PostgreSQL database.
    pub(crate) fn postgres(&self) -> Option<&PgPool> {
        match self {
            Db::Postgres(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
            Db::MySql(..) => Dialect::MySql,
        }
    }

    /// Asks the database for one trivial row: whether it answers.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Db::MySql(p, _) => sqlx::query("SELECT 1").execute(p).await.map(drop),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
            Db::MySql(p, _) => p.close().await,
        }
    }
}

/// How a column's values are read from a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// SQLite: by the stored value's runtime type.
    SqliteDynamic,
    /// SQLite column declared JSON: TEXT parsed as JSON, else as stored.
    SqliteJson,
    I16,
    I32,
    I64,
    U64,
    F32,
    F64,
    Bool,
    Date,
    DateTime,
    DateTimeUtc,
    Time,
    Text,
    Bytes,
    /// A native JSON type (PostgreSQL json / jsonb).
    Json,
    /// JSON stored as text (MariaDB JSON, MySQL JSON).
    JsonText,
    Uuid,
}

/// A column's JSON kind and how to read and compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColumnType {
    pub(crate) kind: ColumnKind,
    pub(crate) decoder: Decoder,
    /// Read and compare as text (types without a native decoding).
    pub(crate) cast_to_text: bool,
    /// Read as text but compare natively (PostgreSQL numeric: its text
    /// form keeps every digit, beyond what a Rust decimal holds).
    pub(crate) read_as_text: bool,
}

impl ColumnType {
    /// Whether the SELECT reads the column as text.
    pub(crate) fn selected_as_text(&self) -> bool {
        self.cast_to_text || self.read_as_text
    }
}

const fn ty(kind: ColumnKind, decoder: Decoder) -> ColumnType {
    ColumnType {
        kind,
        decoder,
        cast_to_text: false,
        read_as_text: false,
    }
}

const fn text_cast() -> ColumnType {
    ColumnType {
        kind: ColumnKind::String,
        decoder: Decoder::Text,
        cast_to_text: true,
        read_as_text: false,
    }
}

/// Maps a SQLite declared type (its affinity rules, plus the date, time,
/// boolean, decimal and JSON names SQLite itself ignores).
pub(crate) fn map_sqlite(declared: &str) -> ColumnType {
    use ColumnKind as K;
    let d = declared.to_ascii_uppercase();
    let has = |s: &str| d.contains(s);
    let kind = if has("BOOL") {
        K::Boolean
    } else if has("DATETIME") || has("TIMESTAMP") {
        K::DateTime
    } else if has("DATE") {
        K::Date
    } else if has("TIME") {
        K::Time
    } else if has("DECIMAL") || has("NUMERIC") || has("MONEY") {
        K::Decimal
    } else if has("JSON") {
        return ty(K::Json, Decoder::SqliteJson);
    } else if has("INT") {
        K::Integer
    } else if has("CHAR") || has("CLOB") || has("TEXT") || has("UUID") || d.trim().is_empty() {
        K::String
    } else if has("BLOB") {
        K::Bytes
    } else {
        K::Number
    };
    ty(kind, Decoder::SqliteDynamic)
}

/// Maps a PostgreSQL column (`information_schema.columns.data_type`, the
/// `udt_name`, and `pg_type.typtype`); `None` when unsupported.
pub(crate) fn map_postgres(data_type: &str, udt_name: &str, typtype: &str) -> Option<ColumnType> {
    use ColumnKind as K;
    Some(match data_type {
        "smallint" => ty(K::Integer, Decoder::I16),
        "integer" => ty(K::Integer, Decoder::I32),
        "bigint" => ty(K::Integer, Decoder::I64),
        "real" => ty(K::Number, Decoder::F32),
        "double precision" => ty(K::Number, Decoder::F64),
        "numeric" => ColumnType {
            read_as_text: true,
            ..ty(K::Decimal, Decoder::Text)
        },
        "boolean" => ty(K::Boolean, Decoder::Bool),
        "date" => ty(K::Date, Decoder::Date),
        "timestamp without time zone" => ty(K::DateTime, Decoder::DateTime),
        "timestamp with time zone" => ty(K::DateTime, Decoder::DateTimeUtc),
        "time without time zone" => ty(K::Time, Decoder::Time),
        "text" | "character varying" | "character" | "name" => ty(K::String, Decoder::Text),
        "bytea" => ty(K::Bytes, Decoder::Bytes),
        "json" | "jsonb" => ty(K::Json, Decoder::Json),
        "uuid" => ty(K::String, Decoder::Uuid),
        "interval" | "inet" | "cidr" | "macaddr" | "macaddr8" | "xml" | "bit" | "bit varying" => {
            text_cast()
        }
        "USER-DEFINED" if typtype == "e" || udt_name == "citext" => text_cast(),
        _ => return None,
    })
}

/// Maps a MariaDB / MySQL column (`DATA_TYPE`, `COLUMN_TYPE`, and whether
/// a `json_valid` check marks a MariaDB JSON column); `None` when
/// unsupported.
pub(crate) fn map_mysql(data_type: &str, column_type: &str, is_json: bool) -> Option<ColumnType> {
    use ColumnKind as K;
    let unsigned = column_type.contains("unsigned");
    Some(match data_type {
        "tinyint" if column_type.starts_with("tinyint(1)") => ty(K::Boolean, Decoder::Bool),
        "bool" | "boolean" => ty(K::Boolean, Decoder::Bool),
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" if unsigned => {
            ty(K::Integer, Decoder::U64)
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            ty(K::Integer, Decoder::I64)
        }
        // DECIMAL travels as text in MariaDB's protocol: read it as sent
        "decimal" | "numeric" => ty(K::Decimal, Decoder::Text),
        "float" => ty(K::Number, Decoder::F32),
        "double" | "real" | "double precision" => ty(K::Number, Decoder::F64),
        "date" => ty(K::Date, Decoder::Date),
        "datetime" => ty(K::DateTime, Decoder::DateTime),
        "timestamp" => ty(K::DateTime, Decoder::DateTimeUtc),
        "time" => ty(K::Time, Decoder::Time),
        "json" => ty(K::Json, Decoder::JsonText),
        "longtext" | "text" | "mediumtext" | "tinytext" if is_json => {
            ty(K::Json, Decoder::JsonText)
        }
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            ty(K::String, Decoder::Text)
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            ty(K::Bytes, Decoder::Bytes)
        }
        "uuid" | "inet4" | "inet6" => text_cast(),
        _ => return None,
    })
}

/// A column of a live table.
#[derive(Debug, Clone)]
pub(crate) struct TableColumn {
    pub(crate) name: String,
    pub(crate) db_type: String,
    pub(crate) nullable: bool,
    pub(crate) primary_key: bool,
    /// `None` when the adapter cannot serve this type.
    pub(crate) mapping: Option<ColumnType>,
}

/// A table (or view) of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    /// PostgreSQL schema, when it is not the connection's current schema.
    pub(crate) schema: Option<String>,
    pub(crate) name: String,
}

fn db_err(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> AdapterError {
    let context = context.into();
    move |source| AdapterError::Database { context, source }
}

/// The columns of a table in table order; empty when there is no such table.
pub(crate) async fn table_columns(
    db: &Db,
    schema: Option<&str>,
    table: &str,
) -> Result<Vec<TableColumn>, AdapterError> {
    let ctx = format!("reading the columns of table {table:?}");
    match db {
        Db::Sqlite(pool) => {
            let rows = sqlx::query(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .map_err(db_err(ctx.clone()))?;
            rows.iter()
                .map(|r| {
                    let declared: String = r.try_get(1)?;
                    Ok(TableColumn {
                        name: r.try_get(0)?,
                        nullable: r.try_get::<i64, _>(2)? == 0,
                        primary_key: r.try_get::<i64, _>(3)? > 0,
                        mapping: Some(map_sqlite(&declared)),
                        db_type: declared,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(db_err(ctx))
        }
        Db::Postgres(pool) => {
            let rows = sqlx::query(
                "SELECT c.column_name::text, c.data_type::text, c.udt_name::text, \
                   (c.is_nullable::text = 'YES') AS nullable, \
                   COALESCE((SELECT t.typtype::text FROM pg_catalog.pg_type t \
                     JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
                     WHERE t.typname = c.udt_name AND n.nspname = c.udt_schema), '') AS typtype, \
                   EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                     JOIN pg_catalog.pg_class r ON r.oid = i.indrelid \
                     JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
                     JOIN pg_catalog.pg_attribute a \
                       ON a.attrelid = r.oid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indisprimary AND rn.nspname = c.table_schema \
                       AND r.relname = c.table_name AND a.attname = c.column_name) AS pk \
                 FROM information_schema.columns c \
                 WHERE c.table_schema = COALESCE($1::text, current_schema()::text) \
                   AND c.table_name = $2 \
                 ORDER BY c.ordinal_position",
            )
            .bind(schema)
            .bind(table)
            .fetch_all(pool)
            .await
            .map_err(db_err(ctx.clone()))?;
            rows.iter()
                .map(|r| {
                    let data_type: String = r.try_get(1)?;
                    let udt: String = r.try_get(2)?;
                    let typtype: String = r.try_get(4)?;
                    let db_type = if matches!(data_type.as_str(), "USER-DEFINED" | "ARRAY") {
                        udt.clone()
                    } else {
                        data_type.clone()
                    };
                    Ok(TableColumn {
                        name: r.try_get(0)?,
                        nullable: r.try_get(3)?,
                        primary_key: r.try_get(5)?,
                        mapping: map_postgres(&data_type, &udt, &typtype),
                        db_type,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(db_err(ctx))
        }
        Db::MySql(pool, _) => {
            let rows = sqlx::query(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .map_err(db_err(ctx.clone()))?;
            let json_columns = mariadb_json_columns(pool, table).await;
            rows.iter()
                .map(|r| {
                    let name: String = r.try_get_unchecked(0)?;
                    let data_type = r.try_get_unchecked::<String, _>(1)?.to_ascii_lowercase();
                    let column_type = r.try_get_unchecked::<String, _>(2)?.to_ascii_lowercase();
                    let nullable: String = r.try_get_unchecked(3)?;
                    let key: String = r.try_get_unchecked(4)?;
                    let is_json = json_columns.iter().any(|c| c == &name);
                    Ok(TableColumn {
                        mapping: map_mysql(&data_type, &column_type, is_json),
                        db_type: if is_json { "json".into() } else { column_type },
                        nullable: nullable == "YES",
                        primary_key: key == "PRI",
                        name,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(db_err(ctx))
        }
    }
}

/// What of a table this database role cannot read, when the table
/// exists. PostgreSQL hides such tables and columns from
/// `information_schema`; its catalogs (`pg_class`, `pg_attribute`,
/// readable by every role) say they exist. MariaDB and MySQL hide them
/// everywhere, so they cannot be told from missing ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Unreadable {
    /// The table exists and the role may not read it (no `USAGE` on its
    /// schema or no `SELECT` on it), in words; `None` when it may.
    pub(crate) table: Option<String>,
    /// Columns that exist and the role may not select.
    pub(crate) columns: Vec<String>,
}

/// See [`Unreadable`]; always empty for SQLite (no privileges) and for
/// MariaDB/MySQL (which cannot tell).
pub(crate) async fn unreadable(
    db: &Db,
    schema: Option<&str>,
    table: &str,
) -> Result<Unreadable, AdapterError> {
    let Db::Postgres(pool) = db else {
        return Ok(Unreadable::default());
    };
    let ctx = format!("reading the privileges on table {table:?}");
    let row = sqlx::query(
        "SELECT c.oid::bigint, has_schema_privilege(n.oid, 'USAGE'), \
           has_table_privilege(c.oid, 'SELECT'), n.nspname::text, current_user::text \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = COALESCE($1::text, current_schema()::text) AND c.relname = $2 \
           AND c.relkind IN ('r', 'v', 'm', 'p', 'f')",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(pool)
    .await
    .map_err(db_err(ctx.clone()))?;
    let Some(row) = row else {
        return Ok(Unreadable::default());
    };
    let read = |row: &PgRow| -> Result<(i64, bool, bool, String, String), sqlx::Error> {
        Ok((
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        ))
    };
    let (oid, usage, select, nspname, role) = read(&row).map_err(db_err(ctx.clone()))?;
    if !usage {
        return Ok(Unreadable {
            table: Some(format!(
                "database role {role:?} has no USAGE privilege on schema {nspname:?}"
            )),
            columns: Vec::new(),
        });
    }
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = $1::bigint::oid AND a.attnum > 0 AND NOT a.attisdropped \
           AND NOT has_column_privilege(a.attrelid, a.attnum, 'SELECT') \
         ORDER BY a.attnum",
    )
    .bind(oid)
    .fetch_all(pool)
    .await
    .map_err(db_err(ctx))?;
    // without SELECT on the table, SELECT on some columns still reads
    // those: callers look at `table` only when no column was visible
    let table = (!select).then(|| format!("database role {role:?} has no SELECT privilege on it"));
    Ok(Unreadable { table, columns })
}

/// Tables and views that exist but this database role may not read at
/// all (PostgreSQL only: see [`Unreadable`]), sorted by name.
pub(crate) async fn unreadable_tables(db: &Db) -> Result<Vec<TableName>, AdapterError> {
    let Db::Postgres(pool) = db else {
        return Ok(Vec::new());
    };
    let ctx = "listing tables this role cannot read";
    let rows = sqlx::query(
        "SELECT n.nspname::text, c.relname::text, \
           (n.nspname::text = current_schema()::text) AS current \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_%' \
           AND NOT c.relispartition \
           AND NOT (has_schema_privilege(n.oid, 'USAGE') \
             AND has_any_column_privilege(c.oid, 'SELECT')) \
         ORDER BY c.relname, n.nspname",
    )
    .fetch_all(pool)
    .await
    .map_err(db_err(ctx))?;
    rows.iter()
        .map(|r| {
            let current: bool = r.try_get(2)?;
            Ok(TableName {
                schema: if current { None } else { Some(r.try_get(0)?) },
                name: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_err(ctx))
}

/// MariaDB stores JSON as LONGTEXT with a `json_valid(col)` check; finds
/// those columns. Errors (e.g. MySQL, which lacks the `TABLE_NAME` column
/// there and has a real JSON type) mean none.
async fn mariadb_json_columns(pool: &MySqlPool, table: &str) -> Vec<String> {
    let rows = sqlx::query(
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(pool)
    .await;
    let Ok(rows) = rows else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| r.try_get_unchecked::<String, _>(0).ok())
        .filter_map(|clause| {
            let inner = clause
                .trim()
                .strip_prefix("json_valid(`")?
                .strip_suffix("`)")?;
            Some(inner.replace("``", "`"))
        })
        .collect()
}

/// Every user table and view, sorted by name. Skips SQLite internals and
/// sqlx's migration table.
pub(crate) async fn list_tables(db: &Db) -> Result<Vec<TableName>, AdapterError> {
    let ctx = "listing tables";
    let mut tables = match db {
        Db::Sqlite(pool) => {
            let rows = sqlx::query(
                "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            )
            .fetch_all(pool)
            .await
            .map_err(db_err(ctx))?;
            rows.iter()
                .map(|r| {
                    Ok(TableName {
                        schema: None,
                        name: r.try_get(0)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err(ctx))?
        }
        Db::Postgres(pool) => {
            let rows = sqlx::query(
                "SELECT table_schema::text, table_name::text, \
                   (table_schema::text = current_schema()::text) AS current \
                 FROM information_schema.tables \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
                   AND table_schema NOT LIKE 'pg\\_%' \
                   AND table_type IN ('BASE TABLE', 'VIEW')",
            )
            .fetch_all(pool)
            .await
            .map_err(db_err(ctx))?;
            rows.iter()
                .map(|r| {
                    let current: bool = r.try_get(2)?;
                    Ok(TableName {
                        schema: if current { None } else { Some(r.try_get(0)?) },
                        name: r.try_get(1)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err(ctx))?
        }
        Db::MySql(pool, _) => {
            let rows = sqlx::query(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'VIEW')",
            )
            .fetch_all(pool)
            .await
            .map_err(db_err(ctx))?;
            rows.iter()
                .map(|r| {
                    Ok(TableName {
                        schema: None,
                        name: r.try_get_unchecked(0)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err(ctx))?
        }
    };
    tables.retain(|t| t.name != "_sqlx_migrations");
    tables.sort_by(|a, b| (&a.name, &a.schema).cmp(&(&b.name, &b.schema)));
    Ok(tables)
}

/// Why a row could not become a record. The detail is for the log only.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    #[error("column {column:?}: {message}")]
    Value { column: String, message: String },
    /// The poll cannot be answered from where it stands (a logical
    /// source's journal no longer holds its position); the caller is told.
    #[error("{0}")]
    Refused(crate::error::Refused),
}

/// A column as it is read into records: its JSON key and decoder.
#[derive(Debug, Clone)]
pub(crate) struct OutColumn {
    pub(crate) name: String,
    pub(crate) decoder: Decoder,
}

type Q<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

fn bind_sqlite(mut q: Q<'static, sqlx::Sqlite>, binds: Vec<BindValue>) -> Q<'static, sqlx::Sqlite> {
    for b in binds {
        q = match b {
            BindValue::Bool(v) => q.bind(v),
            BindValue::Int(v) => q.bind(v),
            BindValue::Float(v) => q.bind(v),
            BindValue::Text(v) => q.bind(v),
            // SQLite compares text with NUMERIC-affinity columns numerically
            BindValue::Decimal(v) => q.bind(v.to_string()),
            BindValue::Date(v) => q.bind(v),
            BindValue::DateTime(v) => q.bind(v),
            BindValue::DateTimeUtc(v) => q.bind(v),
            BindValue::Time(v) => q.bind(v),
            BindValue::Uuid(v) => q.bind(v.to_string()),
        };
    }
    q
}

fn bind_postgres(
    mut q: Q<'static, sqlx::Postgres>,
    binds: Vec<BindValue>,
) -> Q<'static, sqlx::Postgres> {
    for b in binds {
        q = match b {
            BindValue::Bool(v) => q.bind(v),
            BindValue::Int(v) => q.bind(v),
            BindValue::Float(v) => q.bind(v),
            BindValue::Text(v) => q.bind(v),
            BindValue::Decimal(v) => q.bind(v),
            BindValue::Date(v) => q.bind(v),
            BindValue::DateTime(v) => q.bind(v),
            BindValue::DateTimeUtc(v) => q.bind(v),
            BindValue::Time(v) => q.bind(v),
            BindValue::Uuid(v) => q.bind(v),
        };
    }
    q
}

fn bind_mysql(mut q: Q<'static, sqlx::MySql>, binds: Vec<BindValue>) -> Q<'static, sqlx::MySql> {
    for b in binds {
        q = match b {
            BindValue::Bool(v) => q.bind(v),
            BindValue::Int(v) => q.bind(v),
            BindValue::Float(v) => q.bind(v),
            BindValue::Text(v) => q.bind(v),
            BindValue::Decimal(v) => q.bind(v),
            BindValue::Date(v) => q.bind(v),
            BindValue::DateTime(v) => q.bind(v),
            BindValue::DateTimeUtc(v) => q.bind(v),
            BindValue::Time(v) => q.bind(v),
            BindValue::Uuid(v) => q.bind(v.to_string()),
        };
    }
    q
}

/// Sets its flag when dropped: a query's stream going away stops the query.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A pooled connection serving one fetch: back to the pool when the fetch
/// read its last row; taken out of the pool and its socket closed at once
/// when the fetch was dropped before (the caller went away, or its
/// deadline passed). A statement left unfinished leaves its remaining
/// messages on the connection: the pool would drain them before reusing
/// it, and a graceful close waits behind the running statement too, so
/// either would hold the connection — and keep the statement running —
/// for seconds after the fetch was gone. A closed socket is what
/// PostgreSQL's `client_connection_check_interval` looks for.
struct FetchConnection<DB: sqlx::Database> {
    conn: Option<sqlx::pool::PoolConnection<DB>>,
    finished: bool,
}

impl<DB: sqlx::Database> FetchConnection<DB> {
    fn new(conn: sqlx::pool::PoolConnection<DB>) -> Self {
        Self {
            conn: Some(conn),
            finished: false,
        }
    }

    fn conn(&mut self) -> &mut sqlx::pool::PoolConnection<DB> {
        self.conn
            .as_mut()
            .expect("the connection is taken only when dropped")
    }
}

impl<DB: sqlx::Database> Drop for FetchConnection<DB> {
    fn drop(&mut self) {
        if !self.finished
            && let Some(conn) = self.conn.take()
        {
            // out of the pool (which opens another when needed); dropping
            // the connection closes its socket without a goodbye
            drop(conn.detach());
        }
    }
}

/// How long the kill of a dropped fetch's statement may wait for a
/// connection and its answer.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Kills the statement running on a MariaDB or MySQL connection
/// (`KILL QUERY <id>`, from another connection of the pool) when dropped
/// armed: the fetch reading it was dropped before its end (the caller
/// went away). Unlike PostgreSQL, the server does not notice a closed
/// client connection while a statement runs; without this the statement
/// would run on until `max_query_time`.
struct KillOnDrop {
    pool: MySqlPool,
    connection_id: u64,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                connection_id = self.connection_id,
                "no runtime to kill a dropped fetch's statement; it runs until max_query_time"
            );
            return;
        };
        let (pool, id) = (self.pool.clone(), self.connection_id);
        runtime.spawn(async move {
            // the id is a number the server gave: no text of anyone's
            let kill = format!("KILL QUERY {id}");
            let killed = tokio::time::timeout(KILL_TIMEOUT, async {
                let mut conn = pool.acquire().await?;
                sqlx::query(AssertSqlSafe(kill)).execute(&mut *conn).await
            })
            .await;
            match killed {
                Ok(Ok(_)) => tracing::debug!(connection_id = id, "dropped fetch's statement killed"),
                // ER_NO_SUCH_THREAD: the connection had ended already
                Ok(Err(sqlx::Error::Database(e)))
                    if e
                        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|e| e.number() == 1094) =>
                {
                    tracing::debug!(connection_id = id, "dropped fetch's statement had ended");
                }
                Ok(Err(e)) => tracing::warn!(connection_id = id, error = %e, "cannot kill a dropped fetch's statement; it runs until max_query_time"),
                Err(_) => tracing::warn!(connection_id = id, "killing a dropped fetch's statement timed out; it runs until max_query_time"),
            }
        });
    }
}

/// Streams the query's rows as JSON record texts, keys in `columns` order
/// (see [`rows`]).
pub(crate) fn records(
    db: Db,
    query: Rendered,
    columns: Arc<[OutColumn]>,
    time: QueryTime,
) -> impl Stream<Item = Result<String, RecordError>> + Send + 'static {
    let encoder = RecordEncoder::new(columns.iter().map(|c| c.name.as_str()));
    rows(db, query, RecordReader { encoder, columns }, time)
}

/// How one row of a statement becomes an item: `value(i, decoder)`
/// reads result column `i`.
pub(crate) trait RowReader: Send + 'static {
    type Item: Send + 'static;
    fn read(&mut self, value: &mut ReadValue<'_>) -> Result<Self::Item, RecordError>;
}

/// Reads one value of the current row (its text borrowed from the row).
pub(crate) type ReadValue<'a> = dyn FnMut(usize, Decoder) -> Result<Cell<'a>, ValueError> + 'a;

/// Rows as record texts, keys in `columns` order.
struct RecordReader {
    encoder: RecordEncoder,
    columns: Arc<[OutColumn]>,
}

impl RowReader for RecordReader {
    type Item = String;

    fn read(&mut self, value: &mut ReadValue<'_>) -> Result<String, RecordError> {
        record(&mut self.encoder, &self.columns, 0, value)
    }
}

/// One row of a change poll ([`crate::sql::render_changes`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChangeRow {
    pub(crate) change: Value,
    pub(crate) key: Value,
    pub(crate) deleted: bool,
    pub(crate) in_scope: bool,
    /// The record, for an upsert in scope only: the other columns of a
    /// row outside the scope or deleted are not even decoded.
    pub(crate) record: Option<String>,
}

/// Reads change poll rows: the change value and key with their own
/// decoders, the two flags, then the record's columns.
#[derive(Clone)]
pub(crate) struct ChangeReader {
    encoder: RecordEncoder,
    columns: Arc<[OutColumn]>,
    change: Decoder,
    key: Decoder,
    /// How the database returns the `CASE ... THEN 1 ELSE 0 END` flags.
    flag: Decoder,
}

impl ChangeReader {
    pub(crate) fn new(
        dialect: Dialect,
        change: Decoder,
        key: Decoder,
        columns: Arc<[OutColumn]>,
    ) -> ChangeReader {
        ChangeReader {
            encoder: RecordEncoder::new(columns.iter().map(|c| c.name.as_str())),
            columns,
            change,
            key,
            flag: match dialect {
                Dialect::Sqlite => Decoder::SqliteDynamic,
                Dialect::Postgres => Decoder::I32,
                Dialect::MySql => Decoder::I64,
            },
        }
    }
}

/// Result columns before the record's in a change poll.
const CHANGE_HEAD: usize = 4;

impl RowReader for ChangeReader {
    type Item = ChangeRow;

    fn read(&mut self, value: &mut ReadValue<'_>) -> Result<ChangeRow, RecordError> {
        let mut head = |i: usize, d: Decoder, what: &str| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                value(i, d).map(Cell::into_value)
            }))
            .unwrap_or_else(|_| {
                Err(ValueError::Other(
                    "the driver could not decode the value (out of range)".into(),
                ))
            })
            .map_err(|e| RecordError::Value {
                column: what.to_owned(),
                message: match e {
                    ValueError::Db(e) => e.to_string(),
                    ValueError::Other(m) => m,
                },
            })
        };
        let change = head(0, self.change, "change column")?;
        let key = head(1, self.key, "change key")?;
        let deleted = head(2, self.flag, "deleted flag")?.as_i64() == Some(1);
        let in_scope = head(3, self.flag, "scope flag")?.as_i64() == Some(1);
        if change.is_null() || key.is_null() {
            return Err(RecordError::Value {
                column: "change key".into(),
                message: "a row has a NULL key; change keys must be unique and not null".into(),
            });
        }
        let record = if in_scope && !deleted {
            Some(record(
                &mut self.encoder,
                &self.columns,
                CHANGE_HEAD,
                value,
            )?)
        } else {
            None
        };
        Ok(ChangeRow {
            change,
            key,
            deleted,
            in_scope,
            record,
        })
    }
}

/// Streams a statement's rows through `reader`. The stream owns its pool
/// handle; dropping it stops reading, and the database stops the
/// statement by `time` at the latest.
pub(crate) fn rows<R: RowReader>(
    db: Db,
    query: Rendered,
    mut reader: R,
    time: QueryTime,
) -> impl Stream<Item = Result<R::Item, RecordError>> + Send + 'static {
    async_stream::stream! {
        let Rendered { sql, binds } = query;
        match db {
            Db::Sqlite(pool) => {
                let mut conn = match pool.acquire().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        yield Err(e.into());
                        return;
                    }
                };
                // SQLite runs in process: a progress handler interrupts the
                // statement once the fetch is dropped or past its deadline
                let stop = Arc::new(AtomicBool::new(false));
                let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
                let deadline = time.deadline + SERVER_LIMIT_SLACK;
                match conn.lock_handle().await {
                    Ok(mut handle) => handle.set_progress_handler(SQLITE_PROGRESS_STEPS, move || {
                        !stop.load(Ordering::Relaxed) && Instant::now() < deadline
                    }),
                    Err(e) => {
                        yield Err(e.into());
                        return;
                    }
                }
                let q = bind_sqlite(sqlx::query(AssertSqlSafe(sql)), binds);
                let mut rows = q.fetch(&mut *conn);
                while let Some(row) = rows.next().await {
                    yield row.map_err(RecordError::from).and_then(|r| reader.read(&mut |i, d| sqlite_value(&r, i, d)));
                }
            }
            Db::Postgres(pool) => {
                let mut fetch = match pool.acquire().await {
                    Ok(conn) => FetchConnection::new(conn),
                    Err(e) => {
                        yield Err(e.into());
                        return;
                    }
                };
                match time.statement_limit {
                None => {
                    let q = bind_postgres(sqlx::query(AssertSqlSafe(sql)), binds);
                    let mut rows = q.fetch(&mut **fetch.conn());
                    let mut checked = PgChecked::default();
                    while let Some(row) = rows.next().await {
                        yield row.map_err(RecordError::from).and_then(|r| reader.read(&mut |i, d| checked.value(&r, i, d)));
                    }
                }
                Some(limit) => {
                    // a shorter limit than the session's, for this statement only
                    let mut tx = match fetch.conn().begin().await {
                        Ok(tx) => tx,
                        Err(e) => {
                            yield Err(e.into());
                            return;
                        }
                    };
                    let set = sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                        .bind(format!("{}ms", millis(limit + SERVER_LIMIT_SLACK)))
                        .execute(&mut *tx)
                        .await;
                    if let Err(e) = set {
                        yield Err(e.into());
                        return;
                    }
                    {
                        let q = bind_postgres(sqlx::query(AssertSqlSafe(sql)), binds);
                        let mut rows = q.fetch(&mut *tx);
                        let mut checked = PgChecked::default();
                        while let Some(row) = rows.next().await {
                            yield row.map_err(RecordError::from).and_then(|r| reader.read(&mut |i, d| checked.value(&r, i, d)));
                        }
                    }
                    // the transaction only read; ending it cannot lose anything
                    if let Err(e) = tx.rollback().await {
                        yield Err(e.into());
                    }
                }
                }
                fetch.finished = true;
            }
            Db::MySql(pool, flavor) => {
                let (sql, persistent) = match time.statement_limit {
                    None => (sql, true),
                    // each limit makes a different statement text: not worth caching
                    Some(limit) => (flavor.statement_limit(&sql, limit + SERVER_LIMIT_SLACK), false),
                };
                let mut fetch = match pool.acquire().await {
                    Ok(conn) => FetchConnection::new(conn),
                    Err(e) => {
                        yield Err(e.into());
                        return;
                    }
                };
                // the server does not notice a closed connection while a
                // statement runs: a fetch dropped before its end has the
                // statement killed from another connection
                let id: u64 = match sqlx::query_scalar("SELECT CONNECTION_ID()")
                    .persistent(true)
                    .fetch_one(&mut **fetch.conn())
                    .await
                {
                    Ok(id) => id,
                    Err(e) => {
                        yield Err(e.into());
                        return;
                    }
                };
                let mut kill = KillOnDrop {
                    pool: pool.clone(),
                    connection_id: id,
                    armed: true,
                };
                let q = bind_mysql(sqlx::query(AssertSqlSafe(sql)).persistent(persistent), binds);
                let mut rows = q.fetch(&mut **fetch.conn());
                while let Some(row) = rows.next().await {
                    yield row.map_err(RecordError::from).and_then(|r| reader.read(&mut |i, d| mysql_value(&r, i, d)));
                }
                drop(rows);
                kill.armed = false;
                fetch.finished = true;
            }
        }
    }
}

/// Writes one record as a JSON object, keys in column order.
fn record(
    encoder: &mut RecordEncoder,
    columns: &[OutColumn],
    offset: usize,
    value: &mut ReadValue<'_>,
) -> Result<String, RecordError> {
    encoder.encode(|i| {
        let c = &columns[i];
        // some driver decodings panic on out-of-range values (e.g. PostgreSQL
        // 'infinity' dates); such a value fails the fetch instead
        let v = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            value(offset + i, c.decoder)
        }))
        .unwrap_or_else(|_| {
            Err(ValueError::Other(
                "the driver could not decode the value (out of range)".into(),
            ))
        });
        v.map_err(|e| match e {
            ValueError::Db(e) => RecordError::Value {
                column: c.name.clone(),
                message: e.to_string(),
            },
            ValueError::Other(message) => RecordError::Value {
                column: c.name.clone(),
                message,
            },
        })
    })
}

pub(crate) enum ValueError {
    Db(sqlx::Error),
    Other(String),
}

impl From<sqlx::Error> for ValueError {
    fn from(e: sqlx::Error) -> Self {
        ValueError::Db(e)
    }
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map(f).unwrap_or(Value::Null)
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// f32 through its shortest decimal form, so 0.1f32 reads 0.1, not
/// 0.10000000149011612.
fn float32(f: f32) -> Value {
    f.to_string()
        .parse::<f64>()
        .map(float)
        .unwrap_or(Value::Null)
}

fn frac(nanos: u32) -> &'static str {
    if nanos == 0 { "" } else { "%.6f" }
}

// Dates and times are written digit by digit rather than through
// `chrono`'s `format`, which parses its pattern again for every value (a
// few percent of a bulk read's CPU). What the digits cannot say exactly
// as `chrono` does — a year outside 0..=9999, which it writes with a sign,
// or a leap second — takes `chrono`'s path; a property test holds the two
// to the same text.

/// `%Y-%m-%d`, when the year is four digits.
fn push_date(out: &mut String, d: NaiveDate) -> bool {
    use chrono::Datelike;
    let year = d.year();
    if !(0..=9999).contains(&year) {
        return false;
    }
    push_digits(out, year as u32, 4);
    out.push('-');
    push_digits(out, d.month(), 2);
    out.push('-');
    push_digits(out, d.day(), 2);
    true
}

/// `%H:%M:%S` and, when the time has a fraction, `%.6f`; not for a leap
/// second.
fn push_time(out: &mut String, t: NaiveTime) -> bool {
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return false;
    }
    push_digits(out, t.hour(), 2);
    out.push(':');
    push_digits(out, t.minute(), 2);
    out.push(':');
    push_digits(out, t.second(), 2);
    if nanos != 0 {
        out.push('.');
        push_digits(out, nanos / 1000, 6);
    }
    true
}

/// `n` in `width` decimal digits, zero-padded (`n` has no more).
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = n / 10u32.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

pub(crate) fn fmt_date(d: NaiveDate) -> Value {
    let mut out = String::with_capacity(10);
    if push_date(&mut out, d) {
        return Value::String(out);
    }
    Value::String(d.format("%Y-%m-%d").to_string())
}

/// `%Y-%m-%dT%H:%M:%S`, and `%.6f` when the time has a fraction.
fn datetime_text(d: NaiveDateTime) -> String {
    let mut out = String::with_capacity(27);
    if push_date(&mut out, d.date()) {
        out.push('T');
        if push_time(&mut out, d.time()) {
            return out;
        }
    }
    let f = format!("%Y-%m-%dT%H:%M:%S{}", frac(d.nanosecond()));
    d.format(&f).to_string()
}

pub(crate) fn fmt_datetime(d: NaiveDateTime) -> Value {
    Value::String(datetime_text(d))
}

pub(crate) fn fmt_datetime_utc(d: DateTime<Utc>) -> Value {
    let mut out = datetime_text(d.naive_utc());
    out.push('Z');
    Value::String(out)
}

pub(crate) fn fmt_time(t: NaiveTime) -> Value {
    let mut out = String::with_capacity(15);
    if push_time(&mut out, t) {
        return Value::String(out);
    }
    let f = format!("%H:%M:%S{}", frac(t.nanosecond()));
    Value::String(t.format(&f).to_string())
}

fn b64(bytes: Vec<u8>) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn json_text(s: String) -> Result<Value, ValueError> {
    serde_json::from_str(&s).map_err(|e| ValueError::Other(format!("stored JSON is invalid: {e}")))
}

fn sqlite_value(row: &SqliteRow, i: usize, d: Decoder) -> Result<Cell<'_>, ValueError> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Json(Value::Null));
    }
    Ok(Cell::Json(match raw.type_info().name() {
        "INTEGER" => Value::from(row.try_get_unchecked::<i64, _>(i)?),
        "REAL" => float(row.try_get_unchecked::<f64, _>(i)?),
        "BLOB" => b64(row.try_get_unchecked::<Vec<u8>, _>(i)?),
        _ => {
            let s: &str = row.try_get_unchecked(i)?;
            if d != Decoder::SqliteJson {
                return Ok(Cell::Text(s));
            }
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
        }
    }))
}

/// The columns of a PostgreSQL result whose type was checked against
/// their decoder. Every row of a result has the same column types, so a
/// column's values are type-checked until one that is not NULL passes,
/// and decoded unchecked after that.
#[derive(Default)]
struct PgChecked(Vec<Option<Decoder>>);

impl PgChecked {
    fn value<'r>(&mut self, row: &'r PgRow, i: usize, d: Decoder) -> Result<Cell<'r>, ValueError> {
        if self.0.get(i).copied().flatten() == Some(d) {
            return pg_value(row, i, d, false);
        }
        let cell = pg_value(row, i, d, true)?;
        // a NULL is not type-checked by the driver
        if !row.try_get_raw(i)?.is_null() {
            if self.0.len() <= i {
                self.0.resize(i + 1, None);
            }
            self.0[i] = Some(d);
        }
        Ok(cell)
    }
}

/// A value of the result's column `i` as `d` decodes it; `check`: whether
/// the driver checks the column's type against the decoder's first.
fn pg_value(row: &PgRow, i: usize, d: Decoder, check: bool) -> Result<Cell<'_>, ValueError> {
    macro_rules! get {
        ($t:ty) => {
            if check {
                row.try_get::<Option<$t>, _>(i)?
            } else {
                row.try_get_unchecked::<Option<$t>, _>(i)?
            }
        };
    }
    Ok(Cell::Json(match d {
        Decoder::I16 => opt(get!(i16), Value::from),
        Decoder::I32 => opt(get!(i32), Value::from),
        Decoder::I64 => opt(get!(i64), Value::from),
        Decoder::U64 => opt(get!(i64), Value::from),
        Decoder::F32 => opt(get!(f32), float32),
        Decoder::F64 => opt(get!(f64), float),
        Decoder::Bool => opt(get!(bool), Value::Bool),
        Decoder::Date => opt(get!(NaiveDate), fmt_date),
        Decoder::DateTime => opt(get!(NaiveDateTime), fmt_datetime),
        Decoder::DateTimeUtc => opt(get!(DateTime<Utc>), fmt_datetime_utc),
        Decoder::Time => opt(get!(NaiveTime), fmt_time),
        Decoder::Text | Decoder::SqliteDynamic => {
            return Ok(match get!(&str) {
                Some(text) => Cell::Text(text),
                None => Cell::Json(Value::Null),
            });
        }
        Decoder::Bytes => opt(get!(Vec<u8>), b64),
        Decoder::Json => get!(Value).unwrap_or(Value::Null),
        Decoder::JsonText | Decoder::SqliteJson => match get!(String) {
            Some(s) => json_text(s)?,
            None => Value::Null,
        },
        Decoder::Uuid => opt(get!(uuid::Uuid), |u| Value::String(u.to_string())),
    }))
}

fn mysql_value(row: &MySqlRow, i: usize, d: Decoder) -> Result<Cell<'_>, ValueError> {
    if row.try_get_raw(i)?.is_null() {
        return Ok(Cell::Json(Value::Null));
    }
    Ok(Cell::Json(match d {
        Decoder::I16 | Decoder::I32 | Decoder::I64 => {
            Value::from(row.try_get_unchecked::<i64, _>(i)?)
        }
        Decoder::U64 => Value::from(row.try_get_unchecked::<u64, _>(i)?),
        Decoder::F32 => float32(row.try_get_unchecked::<f32, _>(i)?),
        Decoder::F64 => float(row.try_get_unchecked::<f64, _>(i)?),
        Decoder::Bool => Value::Bool(row.try_get_unchecked::<i64, _>(i)? != 0),
        Decoder::Date => fmt_date(row.try_get_unchecked::<NaiveDate, _>(i)?),
        Decoder::DateTime => fmt_datetime(row.try_get_unchecked::<NaiveDateTime, _>(i)?),
        Decoder::DateTimeUtc => fmt_datetime_utc(row.try_get_unchecked::<DateTime<Utc>, _>(i)?),
        Decoder::Time => fmt_time(row.try_get_unchecked::<NaiveTime, _>(i)?),
        Decoder::Text | Decoder::SqliteDynamic | Decoder::Uuid => {
            return Ok(Cell::Text(row.try_get_unchecked::<&str, _>(i)?));
        }
        Decoder::Bytes => b64(row.try_get_unchecked::<Vec<u8>, _>(i)?),
        Decoder::Json | Decoder::JsonText | Decoder::SqliteJson => {
            json_text(row.try_get_unchecked::<String, _>(i)?)?
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnKind as K;
    use proptest::prelude::*;

    /// Dates and times as `chrono` formats them, the reference for the
    /// digit-by-digit writers.
    fn chrono_text(d: NaiveDateTime) -> [String; 4] {
        let f = frac(d.nanosecond());
        [
            d.date().format("%Y-%m-%d").to_string(),
            d.format(&format!("%Y-%m-%dT%H:%M:%S{f}")).to_string(),
            d.and_utc()
                .format(&format!("%Y-%m-%dT%H:%M:%S{f}Z"))
                .to_string(),
            d.time().format(&format!("%H:%M:%S{f}")).to_string(),
        ]
    }

    fn written(d: NaiveDateTime) -> [String; 4] {
        let text = |v: Value| match v {
            Value::String(s) => s,
            other => panic!("{other:?}"),
        };
        [
            text(fmt_date(d.date())),
            text(fmt_datetime(d)),
            text(fmt_datetime_utc(d.and_utc())),
            text(fmt_time(d.time())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn dates_and_times_are_written_as_chrono_writes_them(
            days in -100_000_000i64..100_000_000,
            second in 0u32..86_400,
            nanos in prop_oneof![Just(0u32), 0u32..2_000_000_000, Just(1_000_000_000u32)],
            leap in any::<bool>(),
        ) {
            let date = NaiveDate::from_num_days_from_ce_opt(days as i32)
                .unwrap_or(NaiveDate::MIN);
            // a leap second only on the minute's last second
            let (second, nanos) = if leap { (86_399, nanos) } else { (second, nanos % 1_000_000_000) };
            let Some(time) = NaiveTime::from_num_seconds_from_midnight_opt(second, nanos) else {
                return Ok(());
            };
            let d = date.and_time(time);
            prop_assert_eq!(written(d), chrono_text(d));
        }
    }

    #[test]
    fn dates_at_the_edges_are_written_as_chrono_writes_them() {
        let at = |y, m, d, h, mi, sec, nano| {
            NaiveDate::from_ymd_opt(y, m, d)
                .and_then(|date| date.and_hms_nano_opt(h, mi, sec, nano))
                .unwrap()
        };
        let edges = [
            NaiveDate::MIN.and_hms_opt(0, 0, 0).unwrap(),
            NaiveDate::MAX
                .and_hms_nano_opt(23, 59, 59, 999_999_999)
                .unwrap(),
            at(0, 1, 1, 0, 0, 0, 0),
            at(-1, 12, 31, 23, 59, 59, 0),
            at(9999, 12, 31, 23, 59, 59, 1_000),
            at(10000, 1, 1, 0, 0, 0, 0),
            at(2016, 12, 31, 23, 59, 59, 1_500_000_000),
            at(2026, 12, 6, 20, 1, 2, 999),
        ];
        for d in edges {
            assert_eq!(written(d), chrono_text(d), "{d:?}");
        }
    }

    /// A poll far into a large table reads its batch from the index on
    /// `(change, key)`, not every change before the position: PostgreSQL
    /// had filtered those out one by one on every poll.
    #[tokio::test]
    async fn a_poll_far_into_the_table_reads_only_its_batch() {
        use crate::sql::{ChangeSelect, ColRef, Horizon, render_changes};
        let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
            eprintln!("skipped: no PostgreSQL");
            return;
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let schema = format!("jembatan_poll_{}", std::process::id());
        let setup = format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL,
                 diubah TIMESTAMPTZ NOT NULL);
             INSERT INTO {schema}.penduduk
                 SELECT lpad(i::text, 16, '0'), 'n' || i,
                        TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 second'
                 FROM generate_series(1, 20000) AS i;
             CREATE INDEX penduduk_perubahan ON {schema}.penduduk (diubah, nik);
             ANALYZE {schema}.penduduk;"
        );
        pool.execute(AssertSqlSafe(setup)).await.unwrap();
        let col = |name: &str| ColRef {
            name: name.into(),
            cast_to_text: false,
        };
        let (change, key, columns) = (col("diubah"), col("nik"), [col("nik"), col("nama")]);
        let at = DateTime::parse_from_rfc3339("2026-01-01T05:00:00Z")
            .unwrap()
            .to_utc();
        let rendered = render_changes(
            Dialect::Postgres,
            &ChangeSelect {
                schema: Some(&schema),
                table: "penduduk",
                change: &change,
                key: &key,
                columns: &columns,
                deleted: None,
                scope: &[],
                after: Some((
                    BindValue::DateTimeUtc(at),
                    BindValue::Text(format!("{:016}", 18_000)),
                )),
                horizon: Some(Horizon::Zoned(Duration::ZERO)),
                limit: 100,
            },
        );
        let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", rendered.sql);
        let q = bind_postgres(sqlx::query(AssertSqlSafe(explain)), rendered.binds);
        let plan: Value = q.fetch_one(&pool).await.unwrap().get(0);
        pool.execute(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .await
            .unwrap();
        /// Rows returned and rows filtered out, over every node of a plan.
        fn rows(node: &Value, out: &mut (u64, u64)) {
            match node {
                Value::Object(map) => {
                    if map.contains_key("Node Type") {
                        let n = |k: &str| map.get(k).and_then(Value::as_u64).unwrap_or(0);
                        out.1 += n("Rows Removed by Filter");
                        if map.get("Node Type").and_then(Value::as_str) == Some("Limit") {
                            out.0 += n("Actual Rows");
                        }
                    }
                    map.values().for_each(|v| rows(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| rows(v, out)),
                _ => {}
            }
        }
        let mut seen = (0, 0);
        rows(&plan, &mut seen);
        assert_eq!(seen.0, 100, "{plan}");
        // the scan starts at the position: nothing before it is read
        assert!(seen.1 < 1_000, "{} rows filtered out: {plan}", seen.1);
    }

    #[test]
    fn sqlite_declared_types() {
        let cases = [
            ("INTEGER", K::Integer),
            ("bigint", K::Integer),
            ("TEXT", K::String),
            ("VARCHAR(16)", K::String),
            ("", K::String),
            ("BLOB", K::Bytes),
            ("REAL", K::Number),
            ("DOUBLE PRECISION", K::Number),
            ("DATE", K::Date),
            ("DATETIME", K::DateTime),
            ("TIMESTAMP", K::DateTime),
            ("TIME", K::Time),
            ("BOOLEAN", K::Boolean),
            ("DECIMAL(15,2)", K::Decimal),
            ("NUMERIC", K::Decimal),
            ("JSON", K::Json),
        ];
        for (declared, want) in cases {
            assert_eq!(map_sqlite(declared).kind, want, "{declared:?}");
        }
    }

    #[test]
    fn mysql_types() {
        let cases = [
            ("tinyint", "tinyint(1)", false, Some(K::Boolean)),
            ("tinyint", "tinyint(4)", false, Some(K::Integer)),
            ("bigint", "bigint(20) unsigned", false, Some(K::Integer)),
            ("decimal", "decimal(15,2)", false, Some(K::Decimal)),
            ("timestamp", "timestamp", false, Some(K::DateTime)),
            ("longtext", "longtext", true, Some(K::Json)),
            ("longtext", "longtext", false, Some(K::String)),
            ("enum", "enum('a','b')", false, Some(K::String)),
            ("geometry", "geometry", false, None),
        ];
        for (dt, ct, json, want) in cases {
            assert_eq!(map_mysql(dt, ct, json).map(|t| t.kind), want, "{ct}");
        }
        assert_eq!(
            map_mysql("bigint", "bigint unsigned", false).map(|t| t.decoder),
            Some(Decoder::U64)
        );
    }

    #[test]
    fn postgres_types() {
        assert_eq!(map_postgres("USER-DEFINED", "mood", "e"), Some(text_cast()));
        assert_eq!(map_postgres("USER-DEFINED", "geometry", "b"), None);
        assert_eq!(map_postgres("ARRAY", "_int4", "b"), None);
        assert_eq!(
            map_postgres("timestamp with time zone", "timestamptz", "b").map(|t| t.decoder),
            Some(Decoder::DateTimeUtc)
        );
    }

    #[test]
    fn temporal_formats() {
        let d = NaiveDate::from_ymd_opt(2020, 1, 31).unwrap();
        let t = NaiveTime::from_hms_micro_opt(7, 5, 9, 120).unwrap();
        assert_eq!(fmt_date(d), "2020-01-31");
        assert_eq!(fmt_time(t), "07:05:09.000120");
        assert_eq!(
            fmt_datetime(d.and_hms_opt(1, 2, 3).unwrap()),
            "2020-01-31T01:02:03"
        );
        assert_eq!(
            fmt_datetime_utc(d.and_time(t).and_utc()),
            "2020-01-31T07:05:09.000120Z"
        );
        assert_eq!(float32(0.1), serde_json::json!(0.1));
        assert_eq!(float(f64::NAN), Value::Null);
    }
}
