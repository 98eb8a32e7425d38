//! Writing generated tables into a fresh SQLite file: one transaction, multi-row INSERTs.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};

use super::DataError;

/// Rows per multi-row INSERT.
const CHUNK_ROWS: usize = 500;

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    Null,
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::Null, Into::into)
    }
}

/// A table to create and fill.
#[derive(Debug)]
pub(crate) struct TableData {
    pub(crate) name: &'static str,
    /// `CREATE TABLE` statement.
    pub(crate) ddl: &'static str,
    /// Column names in `rows` order.
    pub(crate) columns: &'static [&'static str],
    /// `CREATE INDEX` statements, run after the load.
    pub(crate) indexes: &'static [&'static str],
    pub(crate) rows: Vec<Vec<Value>>,
}

/// Create the file's tables and load them. The file must already exist (created empty by the
/// caller with `create_new`, which is what makes overwriting impossible).
pub(crate) async fn write_database(
    path: &Path,
    mut tables: Vec<TableData>,
) -> Result<(), DataError> {
    let db_err = |source: sqlx::Error| DataError::Database {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Memory)
        .synchronous(SqliteSynchronous::Off)
        .pragma("cache_size", "-65536")
        .connect()
        .await
        .map_err(db_err)?;
    let mut tx = conn.begin().await.map_err(db_err)?;
    for table in &mut tables {
        // Clustered (WITHOUT ROWID) tables load much faster in key order.
        if table.ddl.contains("WITHOUT ROWID") {
            table.rows.sort_by(|a, b| match (a.first(), b.first()) {
                (Some(Value::Text(x)), Some(Value::Text(y))) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            });
        }
        sqlx::raw_sql(table.ddl)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let head = format!("INSERT INTO {} ({}) ", table.name, table.columns.join(", "));
        for chunk in table.rows.chunks(CHUNK_ROWS) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(head.clone());
            qb.push_values(chunk, |mut b, row| {
                for v in row {
                    match v {
                        Value::Text(s) => b.push_bind(s.as_str()),
                        Value::Int(i) => b.push_bind(*i),
                        Value::Null => b.push_bind(None::<i64>),
                    };
                }
            });
            qb.build().execute(&mut *tx).await.map_err(db_err)?;
        }
        for index in table.indexes.iter().copied() {
            sqlx::raw_sql(index)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
    }
    tx.commit().await.map_err(db_err)?;
    sqlx::raw_sql("ANALYZE")
        .execute(&mut conn)
        .await
        .map_err(db_err)?;
    conn.close().await.map_err(db_err)?;
    Ok(())
}
