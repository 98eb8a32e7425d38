//! Reading a PostgreSQL store's audit log page by page, to verify it.
//!
//! Rows come through the store's typed pool and stay as sqlx's `PgRow`s
//! (one buffer per row) until a checking thread borrows their values into
//! one reused [`RawEntry`]: no `Any` conversion, no string per value.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::VerifyError;
use crate::{RawEntry, StoreError};

const SELECT: &str = "SELECT seq, exchange_id, kind, recorded_at, caller, consumer, provider,
        dataset, purpose, decision, status, subject_hash, entry, entry_sha256
    FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq";

/// The rows with `from <= seq < to`, in order.
pub(super) async fn page(reader: &PgPool, from: u64, to: u64) -> Result<Vec<PgRow>, StoreError> {
    Ok(sqlx::query(SELECT)
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .fetch_all(reader)
        .await?)
}

/// Copies one row's values into `row`, reusing its buffers.
pub(super) fn fill(r: &PgRow, row: &mut RawEntry) -> Result<(), VerifyError> {
    let seq: i64 = r.try_get(0).map_err(StoreError::from)?;
    row.seq = u64::try_from(seq).map_err(|_| {
        VerifyError::Store(StoreError::Corrupt {
            what: "audit entry seq".into(),
            message: format!("negative number {seq}"),
        })
    })?;
    let text = |i: usize| r.try_get::<Option<&str>, _>(i).map_err(StoreError::from);
    set(&mut row.exchange_id, text(1)?);
    set(&mut row.kind, text(2)?);
    set(&mut row.recorded_at, text(3)?);
    set(&mut row.caller, text(4)?);
    set_optional(&mut row.consumer, text(5)?);
    set_optional(&mut row.provider, text(6)?);
    set_optional(&mut row.dataset, text(7)?);
    set_optional(&mut row.purpose, text(8)?);
    set(&mut row.decision, text(9)?);
    set(&mut row.status, text(10)?);
    set_optional(&mut row.subject_hash, text(11)?);
    let entry: &[u8] = r.try_get(12).map_err(StoreError::from)?;
    row.entry.clear();
    row.entry.extend_from_slice(entry);
    set(&mut row.entry_sha256, text(13)?);
    Ok(())
}

/// The columns are NOT NULL; a NULL (impossible without changing the
/// table) reads as empty text, which the entry cannot match.
fn set(slot: &mut String, value: Option<&str>) {
    slot.clear();
    slot.push_str(value.unwrap_or_default());
}

fn set_optional(slot: &mut Option<String>, value: Option<&str>) {
    match value {
        Some(text) => {
            let s = slot.get_or_insert_with(String::new);
            s.clear();
            s.push_str(text);
        }
        None => *slot = None,
    }
}
