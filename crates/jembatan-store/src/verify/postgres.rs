//! Reading a PostgreSQL store's audit log page by page, to verify it.
//!
//! Rows come through the store's typed pool and stay as sqlx's `PgRow`s
//! (one buffer per row) until a checking thread borrows their values into
//! its reused [`RawEntry`]: no `Any` conversion, no string per value.

use jembatan_tlog::merkle::Hash;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::{Check, Leaves, TEXT_COLUMNS, VerifyError, on_cores, set_text};
use crate::checkpoints::{raw_columns, to_i64, to_u64};
use crate::{Backend, StoreError};

/// The rows with `from <= seq < to`, in order.
pub(super) async fn page(reader: &PgPool, from: u64, to: u64) -> Result<Vec<PgRow>, StoreError> {
    let sql = format!(
        "SELECT {} FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq",
        raw_columns(Backend::Postgres)
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to_i64(from))
        .bind(to_i64(to))
        .fetch_all(reader)
        .await?)
}

/// Checks a page of rows that should start at `from` and returns their
/// leaf hashes, split across the machine's cores. The first bad row in
/// order is the one named.
pub(super) fn leaves(
    page: &[PgRow],
    from: u64,
    check: Check,
    threads: usize,
) -> Result<Vec<Hash>, VerifyError> {
    let threads = threads.max(1);
    let chunk = page.len().div_ceil(threads).max(256);
    let parts: Vec<(u64, &[PgRow])> = page
        .chunks(chunk)
        .enumerate()
        .map(|(n, rows)| (from + (n * chunk) as u64, rows))
        .collect();
    let mut hashes = Vec::with_capacity(page.len());
    for part in on_cores(parts, |(start, rows)| {
        let mut leaves = Leaves::new(start, rows.len(), check);
        for r in rows {
            leaves.push(seq(r)?, |row| fill(r, row))?;
        }
        Ok(leaves.hashes)
    }) {
        hashes.extend(part?);
    }
    Ok(hashes)
}

fn seq(r: &PgRow) -> Result<u64, VerifyError> {
    Ok(to_u64(
        r.try_get(0).map_err(StoreError::from)?,
        "audit entry seq",
    )?)
}

/// Copies one row's values after `seq` into `row`, reusing its buffers.
fn fill(r: &PgRow, row: &mut super::RawEntry) -> Result<(), VerifyError> {
    for i in 0..TEXT_COLUMNS.len() {
        let text: Option<&str> = r.try_get(i + 1).map_err(StoreError::from)?;
        set_text(row, i, text)?;
    }
    let entry: &[u8] = r.try_get(12).map_err(StoreError::from)?;
    row.entry.clear();
    row.entry.extend_from_slice(entry);
    let sha: &str = r.try_get(13).map_err(StoreError::from)?;
    super::set(&mut row.entry_sha256, sha);
    Ok(())
}

/// A page of rows as stored, in order.
pub(super) fn rows(page: &[PgRow]) -> Result<Vec<super::RawEntry>, VerifyError> {
    page.iter()
        .map(|r| {
            let mut row = super::RawEntry {
                seq: seq(r)?,
                ..super::RawEntry::default()
            };
            fill(r, &mut row)?;
            Ok(row)
        })
        .collect()
}
