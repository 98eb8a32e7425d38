//! Reading a SQLite store's audit log straight from the file, to verify it.
//!
//! Through sqlx each row is copied value by value on its worker thread and
//! handed to the async caller: over a million entries that was about a
//! quarter of `audit verify`'s time. Here each core opens its own read-only
//! connection on a contiguous slice of seqs and borrows every value from
//! SQLite into its reused [`RawEntry`].

use std::path::Path;
use std::time::Duration;

use jembatan_tlog::merkle::Hash;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::{Check, Leaves, TEXT_COLUMNS, VerifyError, on_cores, set, set_text};
use crate::checkpoints::{raw_columns, to_i64};
use crate::{Backend, RawEntry, StoreError};

/// Rows each thread reads per round; bounds the leaf hashes held at once.
const SLICE: u64 = 1 << 16;

fn store_error(e: rusqlite::Error) -> VerifyError {
    VerifyError::Store(StoreError::AuditUnavailable(format!(
        "cannot read the SQLite store: {e}"
    )))
}

fn open(path: &Path) -> Result<Connection, VerifyError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(store_error)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(store_error)?;
    Ok(conn)
}

/// The leaf hashes of the entries `from..to`, each checked with `check`
/// first, read on `threads` threads. Fails naming the first bad or missing entry.
pub(super) fn leaves(
    path: &Path,
    from: u64,
    to: u64,
    check: Check,
    threads: usize,
) -> Result<Vec<Hash>, VerifyError> {
    let threads = threads.max(1) as u64;
    let slice = (to - from).div_ceil(threads).clamp(1, SLICE);
    let mut hashes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    let mut next = from;
    while next < to {
        let slices: Vec<(u64, u64)> = (0..threads)
            .map(|n| (next + n * slice).min(to))
            .map(|start| (start, (start + slice).min(to)))
            .filter(|(start, end)| start < end)
            .collect();
        let parts = on_cores(slices.clone(), |(start, end)| {
            read_slice(path, start, end, check)
        });
        for ((start, end), part) in slices.into_iter().zip(parts) {
            let part = part?;
            let read = part.len() as u64;
            hashes.extend(part);
            if read < end - start {
                return Err(missing(path, start + read));
            }
        }
        next = (next + threads * slice).min(to);
    }
    Ok(hashes)
}

/// The error for a log with no entry `seq`, naming the next one present.
fn missing(path: &Path, seq: u64) -> VerifyError {
    let found = open(path).and_then(|conn| {
        conn.query_row(
            "SELECT MIN(seq) FROM audit_log WHERE seq >= ?1",
            [to_i64(seq)],
            |r| r.get::<_, Option<i64>>(0),
        )
        .map_err(store_error)
    });
    match found {
        Ok(found) => VerifyError::MissingEntry {
            missing: seq,
            found: found.and_then(|n| u64::try_from(n).ok()).unwrap_or(seq),
        },
        Err(e) => e,
    }
}

/// Calls `each` with every stored row `from..to` and its `seq`, in
/// order, on one connection (a missing row is skipped: the caller names
/// gaps).
fn each_row(
    path: &Path,
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, &rusqlite::Row<'_>) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    let conn = open(path)?;
    let sql = format!(
        "SELECT {} FROM audit_log WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        raw_columns(Backend::Sqlite)
    );
    let mut statement = conn.prepare(&sql).map_err(store_error)?;
    let mut rows = statement
        .query([to_i64(from), to_i64(to)])
        .map_err(store_error)?;
    let mut after = from;
    while let Some(r) = rows.next().map_err(store_error)? {
        let seq = match r.get_ref(0).map_err(store_error)? {
            ValueRef::Integer(n) => u64::try_from(n).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            VerifyError::Store(StoreError::Corrupt {
                what: format!("audit entry {after}"),
                message: "column seq is not an integer seq".into(),
            })
        })?;
        each(seq, r)?;
        after = seq + 1;
    }
    Ok(())
}

/// Reads, checks and hashes the rows `from..to` in order on one connection.
/// Returns fewer hashes than rows asked for when the slice ends early.
fn read_slice(path: &Path, from: u64, to: u64, check: Check) -> Result<Vec<Hash>, VerifyError> {
    let mut leaves = Leaves::new(from, usize::try_from(to - from).unwrap_or(0), check);
    each_row(path, from, to, |seq, r| {
        leaves.push(seq, |row| fill(row, r))
    })?;
    Ok(leaves.hashes)
}

/// Copies one row's values after `seq` into `row`, reusing its buffers. A
/// text column holding anything but UTF-8 text (or NULL where NULL is
/// allowed) cannot match the entry bytes, and is named as such.
fn fill(row: &mut RawEntry, r: &rusqlite::Row<'_>) -> Result<(), VerifyError> {
    let seq = row.seq;
    for (i, column) in TEXT_COLUMNS.into_iter().enumerate() {
        let text = match r.get_ref(i + 1).map_err(store_error)? {
            ValueRef::Text(bytes) => {
                Some(std::str::from_utf8(bytes).map_err(|_| VerifyError::Column { seq, column })?)
            }
            ValueRef::Null => None,
            _ => return Err(VerifyError::Column { seq, column }),
        };
        set_text(row, i, text)?;
    }
    match r.get_ref(12).map_err(store_error)? {
        ValueRef::Blob(bytes) => {
            row.entry.clear();
            row.entry.extend_from_slice(bytes);
        }
        _ => {
            return Err(VerifyError::NotCanonical {
                seq,
                message: "no entry bytes".into(),
            });
        }
    }
    match r.get_ref(13).map_err(store_error)? {
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => set(&mut row.entry_sha256, text),
            Err(_) => return Err(VerifyError::EntryHash { seq }),
        },
        _ => return Err(VerifyError::EntryHash { seq }),
    }
    Ok(())
}

/// The rows `from..to` as stored, in order, read on one connection (what
/// is missing is left out: the caller names gaps).
pub(super) fn rows(path: &Path, from: u64, to: u64) -> Result<Vec<RawEntry>, VerifyError> {
    let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    each_row(path, from, to, |seq, r| {
        let mut row = RawEntry {
            seq,
            ..RawEntry::default()
        };
        fill(&mut row, r)?;
        out.push(row);
        Ok(())
    })?;
    Ok(out)
}
