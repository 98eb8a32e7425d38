//! Reading a SQLite store's audit log straight from the file, to verify it.
//!
//! Through sqlx each row is copied value by value on its worker thread and
//! handed to the async caller: over a million entries that was about a
//! quarter of `audit verify`'s time. Here each core opens its own read-only
//! connection on a contiguous slice of seqs and borrows every value from
//! SQLite into one reused [`RawEntry`], so a row costs no allocation before
//! its check.

use std::path::Path;
use std::time::Duration;

use jembatan_tlog::merkle::{Hash, leaf_hash};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::VerifyError;
use crate::{RawEntry, StoreError};

/// Rows each thread reads per round; bounds the leaf hashes held at once.
const SLICE: u64 = 1 << 16;

const SELECT: &str = "SELECT seq, exchange_id, kind, recorded_at, caller, consumer, provider,
        dataset, purpose, decision, status, subject_hash, CAST(entry AS BLOB), entry_sha256
    FROM audit_log WHERE seq >= ?1 AND seq < ?2 ORDER BY seq";

/// The text columns after `seq`, in [`SELECT`] order.
const TEXT_COLUMNS: [&str; 11] = [
    "exchange_id",
    "kind",
    "recorded_at",
    "caller",
    "consumer",
    "provider",
    "dataset",
    "purpose",
    "decision",
    "status",
    "subject_hash",
];

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
/// first, read on all cores. Fails naming the first bad or missing entry.
pub(super) fn leaves(
    path: &Path,
    from: u64,
    to: u64,
    check: fn(&RawEntry) -> Result<(), VerifyError>,
) -> Result<Vec<Hash>, VerifyError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let slice = (to - from).div_ceil(threads).clamp(1, SLICE);
    let mut hashes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    let mut next = from;
    while next < to {
        let slices: Vec<(u64, u64)> = (0..threads)
            .map(|n| (next + n * slice).min(to))
            .map(|start| (start, (start + slice).min(to)))
            .filter(|(start, end)| start < end)
            .collect();
        let parts: Vec<Result<Vec<Hash>, VerifyError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = slices
                .iter()
                .map(|&(start, end)| scope.spawn(move || read_slice(path, start, end, check)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(VerifyError::Store(StoreError::AuditUnavailable(
                            "a verification thread panicked".into(),
                        )))
                    })
                })
                .collect()
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

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads, checks and hashes the rows `from..to` in order on one connection.
/// Returns fewer hashes than rows asked for when the slice ends early.
fn read_slice(
    path: &Path,
    from: u64,
    to: u64,
    check: fn(&RawEntry) -> Result<(), VerifyError>,
) -> Result<Vec<Hash>, VerifyError> {
    let conn = open(path)?;
    let mut statement = conn.prepare(SELECT).map_err(store_error)?;
    let mut rows = statement
        .query([to_i64(from), to_i64(to)])
        .map_err(store_error)?;
    let mut hashes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    let mut row = RawEntry::default();
    let mut expected = from;
    while let Some(r) = rows.next().map_err(store_error)? {
        row.seq = match r.get_ref(0).map_err(store_error)? {
            ValueRef::Integer(n) => u64::try_from(n).map_err(|_| corrupt(expected, "seq"))?,
            _ => return Err(corrupt(expected, "seq")),
        };
        if row.seq != expected {
            return Err(VerifyError::MissingEntry {
                missing: expected,
                found: row.seq,
            });
        }
        fill(&mut row, r)?;
        check(&row)?;
        hashes.push(leaf_hash(&row.entry));
        expected += 1;
    }
    Ok(hashes)
}

fn corrupt(seq: u64, column: &str) -> VerifyError {
    VerifyError::Store(StoreError::Corrupt {
        what: format!("audit entry {seq}"),
        message: format!("column {column} is not an integer seq"),
    })
}

/// Copies one row's values into `row`, reusing its buffers. A text column
/// holding anything but text (or NULL where NULL is allowed) cannot match
/// the entry bytes, and is named as such.
fn fill(row: &mut RawEntry, r: &rusqlite::Row<'_>) -> Result<(), VerifyError> {
    let seq = row.seq;
    for (i, column) in TEXT_COLUMNS.into_iter().enumerate() {
        let value = r.get_ref(i + 1).map_err(store_error)?;
        let text = match value {
            ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        };
        let slot = text_slot(row, i);
        match (text, value, slot) {
            (Some(text), _, Slot::Required(s)) => set(s, text),
            (Some(text), _, Slot::Optional(s)) => set(s.get_or_insert_with(String::new), text),
            (None, ValueRef::Null, Slot::Optional(s)) => *s = None,
            _ => return Err(VerifyError::Column { seq, column }),
        }
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

fn set(slot: &mut String, text: &str) {
    slot.clear();
    slot.push_str(text);
}

enum Slot<'a> {
    Required(&'a mut String),
    Optional(&'a mut Option<String>),
}

/// The field of `row` for `TEXT_COLUMNS[i]`.
fn text_slot(row: &mut RawEntry, i: usize) -> Slot<'_> {
    match i {
        0 => Slot::Required(&mut row.exchange_id),
        1 => Slot::Required(&mut row.kind),
        2 => Slot::Required(&mut row.recorded_at),
        3 => Slot::Required(&mut row.caller),
        4 => Slot::Optional(&mut row.consumer),
        5 => Slot::Optional(&mut row.provider),
        6 => Slot::Optional(&mut row.dataset),
        7 => Slot::Optional(&mut row.purpose),
        8 => Slot::Required(&mut row.decision),
        9 => Slot::Required(&mut row.status),
        _ => Slot::Optional(&mut row.subject_hash),
    }
}
