//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`,
//! off by default): the adapter's filter typing and SQL rendering, its
//! receipt-log parser, and the decoding of a logical replication slot's
//! `pgoutput` messages into journaled changes, without a database or a
//! file. Not a stable API.

use std::path::Path;

use jembatan_core::Filter;

use crate::db::{ColumnType, map_mysql, map_postgres, map_sqlite};
use crate::receipts::{LogEntry, parse_receipt_log};
use crate::sql::{self, ColRef, Dialect, Select};
use crate::typed::typed_filter;

/// A whitelisted column and its type as each backend would describe it.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    pub name: &'a str,
    /// SQLite declared type.
    pub sqlite: &'a str,
    /// PostgreSQL `data_type`, `udt_name` and `typtype`.
    pub postgres: (&'a str, &'a str, &'a str),
    /// MariaDB `DATA_TYPE`, `COLUMN_TYPE` and whether a `json_valid`
    /// check marks it JSON.
    pub mysql: (&'a str, &'a str, bool),
}

/// A whitelisted table.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    pub schema: Option<&'a str>,
    pub table: &'a str,
    /// Key column: the SELECT is ordered by it.
    pub key: Option<&'a str>,
    pub columns: &'a [Column<'a>],
}

/// A rendered SELECT: its text and its bind values (as `Debug` text).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedSql {
    pub dialect: &'static str,
    pub sql: String,
    pub binds: Vec<String>,
}

/// Types the row filter and the request filter against `table` and
/// renders the SELECT of all its columns, for SQLite, PostgreSQL and
/// MariaDB in that order, as a fetch does. `Err` holds why the adapter
/// refuses the filter (or why a column type is unsupported).
pub fn render(
    table: &Table<'_>,
    row_filter: Option<&Filter>,
    filter: Option<&Filter>,
    limit: Option<u64>,
) -> Vec<Result<RenderedSql, RenderError>> {
    [
        (Dialect::Sqlite, "sqlite"),
        (Dialect::Postgres, "postgres"),
        (Dialect::MySql, "mysql"),
    ]
    .into_iter()
    .map(|(dialect, name)| render_one(table, dialect, name, row_filter, filter, limit))
    .collect()
}

/// Why a table and filter render no SELECT.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("column {column:?}: unsupported type on {dialect}")]
    UnsupportedType {
        column: String,
        dialect: &'static str,
    },
    /// The adapter refuses the filter, as a fetch would.
    #[error(transparent)]
    Refused(jembatan_core::InvalidArgument),
}

fn column_type(c: &Column<'_>, dialect: Dialect) -> Option<ColumnType> {
    match dialect {
        Dialect::Sqlite => Some(map_sqlite(c.sqlite)),
        Dialect::Postgres => map_postgres(c.postgres.0, c.postgres.1, c.postgres.2),
        Dialect::MySql => map_mysql(c.mysql.0, c.mysql.1, c.mysql.2),
    }
}

fn render_one(
    table: &Table<'_>,
    dialect: Dialect,
    name: &'static str,
    row_filter: Option<&Filter>,
    filter: Option<&Filter>,
    limit: Option<u64>,
) -> Result<RenderedSql, RenderError> {
    let mut types = Vec::with_capacity(table.columns.len());
    for c in table.columns {
        let ty = column_type(c, dialect).ok_or_else(|| RenderError::UnsupportedType {
            column: c.name.to_owned(),
            dialect: name,
        })?;
        types.push((c.name, ty));
    }
    let lookup = |n: &str| types.iter().find(|(c, _)| *c == n).map(|(_, t)| *t);
    let typed = |f: Option<&Filter>| {
        f.map(|f| typed_filter(f, dialect, &lookup))
            .transpose()
            .map_err(RenderError::Refused)
    };
    let row_filter = typed(row_filter)?;
    let filter = typed(filter)?;
    let cols: Vec<ColRef> = types
        .iter()
        .map(|(n, t)| ColRef {
            name: (*n).to_owned(),
            cast_to_text: t.selected_as_text(),
        })
        .collect();
    let rendered = sql::render(
        dialect,
        &Select {
            schema: table.schema,
            table: table.table,
            columns: &cols,
            row_filter: row_filter.as_ref(),
            filter: filter.as_ref(),
            order_by: table.key,
            limit,
        },
    );
    Ok(RenderedSql {
        dialect: name,
        sql: rendered.sql,
        binds: rendered.binds.iter().map(|b| format!("{b:?}")).collect(),
    })
}

/// Parses receipt-log text as [`crate::read_receipt_log`] parses the file.
pub fn parse_receipt_log_text(text: &str) -> Result<Vec<LogEntry>, crate::AdapterError> {
    parse_receipt_log(text, Path::new("<fuzz input>"))
}

/// What a peek of `pgoutput` messages comes to, as the logical reader
/// folds it for the datasets `penduduk` (text key `nik` of
/// `public.penduduk`) and `kk` (integer key `no` of `public.kk`): per
/// committed transaction that changed them, its commit LSN and its changed
/// keys as `(dataset, key text, deleted)`; then the last commit's
/// `(LSN, end LSN)`. `Err` holds why the reader would refuse the peek.
pub fn fold_pgoutput(messages: &[Vec<u8>], consumed: u64) -> Result<PgoutputFold, String> {
    use crate::logical::{JournalKey, Target, fold};
    let target = |dataset: &str, table: &str, key: &str, integer: bool| Target {
        dataset: dataset.into(),
        schema: "public".into(),
        table: table.into(),
        key: key.into(),
        integer,
    };
    let targets = [
        target("penduduk", "penduduk", "nik", false),
        target("kk", "kk", "no", true),
    ];
    let mut relations = std::collections::HashMap::new();
    let peeked =
        fold("fuzz", messages, &targets, &mut relations, consumed).map_err(|e| e.to_string())?;
    let transactions = peeked
        .done
        .iter()
        .map(|tx| {
            let keys = tx
                .keys
                .iter()
                .map(|((dataset, key), deleted)| {
                    let key = match key {
                        JournalKey::Int(i) => i.to_string(),
                        JournalKey::Text(t) => t.clone(),
                    };
                    (dataset.clone(), key, *deleted)
                })
                .collect();
            FoldedTransaction {
                lsn: tx.lsn,
                keys,
                truncated: tx.truncated.iter().cloned().collect(),
            }
        })
        .collect();
    Ok(PgoutputFold {
        transactions,
        last: peeked.last,
    })
}

/// See [`fold_pgoutput`].
#[derive(Debug, Clone, PartialEq)]
pub struct PgoutputFold {
    pub transactions: Vec<FoldedTransaction>,
    pub last: Option<(u64, u64)>,
}

/// One committed transaction of a [`PgoutputFold`].
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedTransaction {
    pub lsn: u64,
    /// `(dataset, key text, deleted)`, the last change of each key.
    pub keys: Vec<(String, String, bool)>,
    /// Datasets whose table was truncated.
    pub truncated: Vec<String>,
}
