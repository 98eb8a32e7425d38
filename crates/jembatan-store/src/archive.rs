//! Moving old ranges of the audit log out of the store, into archive files
//! that verify on their own.
//!
//! [`archive`] picks the newest signed checkpoint at or below the bound
//! asked for (a `seq`, or a time), checks every entry from the archived
//! point so far up to it against the checkpoints on the way (as `audit
//! verify` does), and writes them to a file: a header line holding the
//! tree's compact range where the file starts and those signed
//! checkpoints, then one line per entry in the form `audit export` writes.
//! Only once the file is durable does it record the range in
//! `audit_archives` and delete the entries below `up_to` (the checkpoint's
//! size rounded down to a multiple of 256) with their subject index rows,
//! in bounded transactions. The migration's triggers let an entry leave
//! only below a recorded `up_to`.
//!
//! What stays: every checkpoint, and the tree's tiles (full below
//! `up_to`), so inclusion and consistency proofs of archived entries are
//! still made and checked against signed roots; the entries from `up_to`
//! on, so the broker's start-up check (tiles, plus the entries after the
//! last full tile) is unchanged. [`verify_archive`] checks a file with the
//! checkpoint key alone; [`crate::verify::verify`] checks the store from
//! `up_to` on, resuming the tree from the tiles and anchoring it to the
//! first signed checkpoint at or above `up_to`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::TryStreamExt;
use jembatan_core::AuditEntry;
use jembatan_tlog::merkle::{CompactRange, Hash, leaf_hash};
use jembatan_tlog::note::Verifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::audit::add_index_rows;
use crate::checkpoints::{to_i64, to_u64};
use crate::verify::{VerifyError, check_checkpoint, check_entry, raw_rows};
use crate::{Backend, Store, StoreError, StoredCheckpoint, now};

/// The header's format tag and version.
pub const FORMAT: &str = "jembatan-audit-archive/1";

/// Entries read from the store per page while writing a file.
const PAGE: u64 = 4096;

/// Entries deleted per transaction.
const DELETE_STEP: u64 = 20_000;

/// A range recorded as archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRecord {
    /// Entries below this `seq` have left the store.
    pub up_to: u64,
    /// The archive file's first entry.
    pub from_seq: u64,
    /// Size of the signed checkpoint the file ends at (at or above `up_to`).
    pub checkpoint: u64,
    /// SHA-256 of the file, lowercase hex.
    pub file_sha256: String,
    pub archived_at: String,
}

/// Which entries to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Entries below this `seq`.
    Below(u64),
    /// Entries recorded before this time (as `format_instant` writes it).
    Before(String),
}

/// What [`archive`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub record: ArchiveRecord,
    /// Entries written to the file (`from_seq` to `checkpoint`).
    pub entries: u64,
    /// Bytes written to the file.
    pub bytes: u64,
    /// Rows deleted from the store (entries and subject index rows).
    pub removed: u64,
}

/// Progress of a long archive, for the operator's display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Entries checked and written to the file, of all.
    Writing { done: u64, total: u64 },
    /// Entries removed from the store, of all.
    Removing { done: u64, total: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read or write the store: {0}")]
    Store(#[from] StoreError),
    #[error("the log does not verify, nothing archived: {0}")]
    Verify(#[from] VerifyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists already: archive to a new file")]
    Exists(PathBuf),
    #[error("nothing to archive: {0}")]
    Nothing(String),
    #[error("{path} line {line}: {message}")]
    File {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The archive file's first line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    /// The checkpoint key's name (the notes' origin).
    origin: String,
    from: u64,
    to: u64,
    /// The tree of the entries before `from` as a compact range: the
    /// roots of its perfect subtrees, largest first, lowercase hex.
    tree: Vec<String>,
    /// The signed checkpoints from above `from` to `to`, in size order.
    checkpoints: Vec<HeaderCheckpoint>,
    archived_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderCheckpoint {
    size: u64,
    root: String,
    note: String,
    created_at: String,
}

/// One entry as `audit export --format jsonl` and archive files write it:
/// `seq`, leaf hash, `entry_sha256`, the canonical bytes in base64 and
/// the entry as JSON.
pub fn entry_line(seq: u64, canonical: &[u8], entry_sha256: &str) -> Result<String, String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(canonical)
        .map_err(|e| format!("entry {seq}: not JSON: {e}"))?;
    let text = std::str::from_utf8(canonical).map_err(|e| format!("entry {seq}: {e}"))?;
    Ok(json_line(seq, text, entry_sha256, &leaf_hash(canonical)))
}

/// [`entry_line`] for an entry whose bytes `text` are known to be one JSON
/// value, with its leaf hash. The entry is shown as its bytes are, copied
/// in rather than parsed into a tree and written out again (a canonical
/// entry is already compact JSON with its keys in order).
fn json_line(seq: u64, text: &str, entry_sha256: &str, leaf: &Hash) -> String {
    // a hex digest needs no escaping, but a stored column may hold anything
    let sha = serde_json::Value::from(entry_sha256);
    // keys in the order a JSON map sorts them, as `audit export` always wrote
    format!(
        "{{\"canonical\":\"{}\",\"entry\":{text},\"entry_sha256\":{sha},\"leaf_hash\":\"{}\",\"seq\":{seq}}}",
        STANDARD.encode(text),
        hex::encode(leaf),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    seq: u64,
    leaf_hash: String,
    entry_sha256: String,
    canonical: String,
    entry: serde_json::Value,
}

impl Store {
    /// The ranges archived so far, oldest first.
    pub async fn archives(&self) -> Result<Vec<ArchiveRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT up_to, from_seq, checkpoint, file_sha256, archived_at
             FROM audit_archives ORDER BY up_to",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ArchiveRecord {
                    up_to: to_u64(r.try_get(0)?, "archived up_to")?,
                    from_seq: to_u64(r.try_get(1)?, "archived from_seq")?,
                    checkpoint: to_u64(r.try_get(2)?, "archived checkpoint")?,
                    file_sha256: r.try_get(3)?,
                    archived_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// The first entry still in the store: entries below it are archived
    /// (0 when none is).
    pub async fn archived_up_to(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COALESCE(MAX(up_to), 0) FROM audit_archives")
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        to_u64(n, "archived up_to")
    }

    /// The first `seq` at or after `from` recorded at or after `time`
    /// (the log's size when none is).
    async fn first_at_or_after(&self, from: u64, time: &str) -> Result<u64, StoreError> {
        let n: Option<i64> =
            sqlx::query("SELECT MIN(seq) FROM audit_log WHERE seq >= $1 AND recorded_at >= $2")
                .bind(to_i64(from))
                .bind(time)
                .fetch_one(self.pool())
                .await?
                .try_get(0)?;
        match n {
            Some(n) => to_u64(n, "audit entry seq"),
            None => self.audit_log_size().await,
        }
    }
}

/// Writes the entries from the archived point so far up to the newest
/// signed checkpoint within `bound` to a new file at `path`, then removes
/// those below the checkpoint's size rounded down to 256 from the store.
/// See the module docs.
pub async fn archive(
    store: &Store,
    verifier: &Verifier,
    bound: &Bound,
    path: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Archived, ArchiveError> {
    if path.exists() {
        return Err(ArchiveError::Exists(path.to_owned()));
    }
    // an earlier run stopped while deleting: finish it first
    let mut removed = remove_archived(store, progress).await?;
    let from = store.archived_up_to().await?;
    let limit = match bound {
        Bound::Below(seq) => *seq,
        Bound::Before(time) => store.first_at_or_after(from, time).await?,
    };
    let checkpoints = store.checkpoints().await?;
    let Some(last) = checkpoints.iter().rev().find(|c| c.size <= limit).cloned() else {
        return Err(ArchiveError::Nothing(format!(
            "no signed checkpoint covers fewer than {} entries",
            limit.saturating_add(1)
        )));
    };
    let up_to = last.size & !255;
    if up_to <= from {
        return Err(ArchiveError::Nothing(if from == 0 {
            format!(
                "the newest signed checkpoint within the bound covers {} entries; an archived \
                 range ends on a multiple of 256 entries, so it needs one covering at least 256",
                last.size
            )
        } else {
            format!(
                "entries below {from} are archived already, and the newest signed checkpoint \
                 within the bound is at size {}; an archived range ends on a multiple of 256 \
                 entries, so the next needs one covering at least {}",
                last.size,
                from + 256
            )
        }));
    }
    let tiled = store.tiles_size().await?;
    if tiled < last.size {
        return Err(ArchiveError::Nothing(format!(
            "the tree's tiles cover {tiled} entries, fewer than the checkpoint at size {}: \
             start the broker once so that it builds them",
            last.size
        )));
    }
    let covered: Vec<StoredCheckpoint> = checkpoints
        .into_iter()
        .filter(|c| c.size > from && c.size <= last.size)
        .collect();
    let tree = if from == 0 {
        CompactRange::new()
    } else {
        store.tree_at(from).await?
    };
    let archived_at = now();
    let header = Header {
        format: FORMAT.to_owned(),
        origin: verifier.name().to_owned(),
        from,
        to: last.size,
        tree: tree.hashes().iter().map(hex::encode).collect(),
        checkpoints: covered
            .iter()
            .map(|c| HeaderCheckpoint {
                size: c.size,
                root: c.root_hash.clone(),
                note: c.note.clone(),
                created_at: c.created_at.clone(),
            })
            .collect(),
        archived_at: archived_at.clone(),
    };
    let partial = partial_path(path);
    let written = write_file(store, verifier, &header, tree, &covered, &partial, progress).await;
    let (bytes, file_sha256) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if path.exists() {
        let _ = std::fs::remove_file(&partial);
        return Err(ArchiveError::Exists(path.to_owned()));
    }
    std::fs::rename(&partial, path).map_err(io(path))?;
    sync_parent(path)?;
    let record = ArchiveRecord {
        up_to,
        from_seq: from,
        checkpoint: last.size,
        file_sha256,
        archived_at,
    };
    record_archive(store, &record).await?;
    removed += remove_archived(store, progress).await?;
    Ok(Archived {
        entries: last.size - from,
        bytes,
        removed,
        record,
    })
}

/// `FILE.partial`, where the file is written before it is renamed.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> Result<(), ArchiveError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io(parent))
}

/// Writes and syncs the file, checking each entry and each checkpoint on
/// the way; its length and SHA-256.
async fn write_file(
    store: &Store,
    verifier: &Verifier,
    header: &Header,
    mut tree: CompactRange,
    covered: &[StoredCheckpoint],
    path: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(u64, String), ArchiveError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    let mut out = Hashing::new(file);
    let text = serde_json::to_string(header).map_err(|e| ArchiveError::File {
        path: path.to_owned(),
        line: 1,
        message: e.to_string(),
    })?;
    writeln!(out, "{text}").map_err(io(path))?;
    let (from, to) = (header.from, header.to);
    let mut checkpoints = covered.iter().peekable();
    while tree.size() < to {
        let next = tree.size();
        let page = raw_rows(store, next, to.min(next + PAGE)).await?;
        if page.is_empty() {
            return Err(VerifyError::CheckpointBeyondLog {
                size: to,
                log_size: next,
            }
            .into());
        }
        for row in &page {
            let expected = tree.size();
            if row.seq != expected {
                return Err(VerifyError::MissingEntry {
                    missing: expected,
                    found: row.seq,
                }
                .into());
            }
            check_entry(row)?;
            let leaf = leaf_hash(&row.entry);
            tree.push(leaf)
                .map_err(|_| VerifyError::TreeFull { seq: row.seq })?;
            // canonical, so one JSON value: its text goes in as it is
            let text = std::str::from_utf8(&row.entry).map_err(|e| VerifyError::NotCanonical {
                seq: row.seq,
                message: e.to_string(),
            })?;
            writeln!(
                out,
                "{}",
                json_line(row.seq, text, &row.entry_sha256, &leaf)
            )
            .map_err(io(path))?;
            while let Some(c) = checkpoints.next_if(|c| c.size == tree.size()) {
                check_checkpoint(c, &tree.root(), verifier)?;
            }
        }
        progress(Progress::Writing {
            done: tree.size() - from,
            total: to - from,
        });
    }
    if let Some(c) = checkpoints.next() {
        return Err(VerifyError::CheckpointBeyondLog {
            size: c.size,
            log_size: tree.size(),
        }
        .into());
    }
    let (file, bytes, sha256) = out.finish().map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok((bytes, sha256))
}

/// The archive file being written: counted and hashed as it goes.
struct Hashing {
    inner: std::io::BufWriter<std::fs::File>,
    sha256: Sha256,
    bytes: u64,
}

impl Hashing {
    fn new(file: std::fs::File) -> Self {
        Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, file),
            sha256: Sha256::new(),
            bytes: 0,
        }
    }

    /// The file, flushed, with its length and SHA-256.
    fn finish(self) -> std::io::Result<(std::fs::File, u64, String)> {
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        Ok((file, self.bytes, hex::encode(self.sha256.finalize())))
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

async fn record_archive(store: &Store, record: &ArchiveRecord) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    sqlx::query(
        "INSERT INTO audit_archives (up_to, from_seq, checkpoint, file_sha256, archived_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(to_i64(record.up_to))
    .bind(to_i64(record.from_seq))
    .bind(to_i64(record.checkpoint))
    .bind(&record.file_sha256)
    .bind(&record.archived_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes what is still stored below the archived point (the entries and
/// their subject index rows), a bounded range of entries per transaction;
/// the rows deleted. An entry's index rows are found from the subjects
/// its canonical text names, and leave in the same transaction as it.
pub async fn remove_archived(
    store: &Store,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<u64, StoreError> {
    remove_archived_by(store, progress, MOST_SUBJECTS_DELETED).await
}

/// [`remove_archived`], a transaction's range of entries ending early
/// once they name `most_subjects` subjects.
async fn remove_archived_by(
    store: &Store,
    progress: &mut (dyn FnMut(Progress) + Send),
    most_subjects: usize,
) -> Result<u64, StoreError> {
    let up_to = store.archived_up_to().await?;
    let lowest: Option<i64> = sqlx::query("SELECT MIN(seq) FROM audit_log")
        .fetch_one(store.pool())
        .await?
        .try_get(0)?;
    let mut next = lowest.map_or(Ok(up_to), |n| to_u64(n, "audit entry seq"))?;
    let start = next;
    let mut removed = 0;
    while next < up_to {
        let mut tx = store.begin_write().await?;
        let until = up_to.min(next + DELETE_STEP);
        let (end, rows) = indexed_below(&mut tx, next, until, most_subjects).await?;
        for part in rows.chunks(DELETE_SUBJECTS) {
            removed += delete_index_rows(&mut tx, store.backend(), part).await?;
        }
        let done = sqlx::query("DELETE FROM audit_log WHERE seq >= $1 AND seq < $2")
            .bind(to_i64(next))
            .bind(to_i64(end))
            .execute(&mut *tx)
            .await?;
        removed += done.rows_affected();
        tx.commit().await?;
        next = end;
        progress(Progress::Removing {
            done: next - start,
            total: up_to - start,
        });
    }
    Ok(removed)
}

/// Subject index rows one statement deletes.
const DELETE_SUBJECTS: usize = 16_384;

/// Most subject index rows deleted in one transaction: a range of entries
/// ends early, after the entry that brings its rows to this.
const MOST_SUBJECTS_DELETED: usize = 262_144;

/// The subject index rows `(subject_key, seq)` of the entries from `from`
/// on, below `until`, and where those entries end: at `until`, or after
/// the entry that brings the rows to `most` (never before one entry).
async fn indexed_below(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    from: u64,
    until: u64,
    most: usize,
) -> Result<(u64, Vec<(i64, i64)>), StoreError> {
    let mut rows = Vec::new();
    let mut end = until;
    let mut entries =
        sqlx::query("SELECT seq, entry FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq")
            .bind(to_i64(from))
            .bind(to_i64(until))
            .fetch(&mut **tx);
    while let Some(row) = entries.try_next().await? {
        let seq: i64 = row.try_get(0)?;
        let text: &[u8] = row.try_get(1)?;
        add_index_rows(&mut rows, seq, text);
        if rows.len() >= most {
            end = to_u64(seq, "audit entry seq")? + 1;
            break;
        }
    }
    Ok((end, rows))
}

/// Deletes the subject index rows `rows` (those already gone are no
/// matter); the rows deleted.
async fn delete_index_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    rows: &[(i64, i64)],
) -> Result<u64, StoreError> {
    let sql = match backend {
        Backend::Sqlite => {
            "DELETE FROM audit_subjects WHERE (subject_key, seq) IN \
             (SELECT value ->> 0, value ->> 1 FROM json_each($1))"
        }
        Backend::Postgres => {
            "DELETE FROM audit_subjects WHERE (subject_key, seq) IN \
             (SELECT (e ->> 0)::bigint, (e ->> 1)::bigint FROM jsonb_array_elements($1::jsonb) AS e)"
        }
    };
    // pairs of integers: serializing cannot fail
    let json = serde_json::to_string(rows).unwrap_or_default();
    let done = sqlx::query(sql).bind(json).execute(&mut **tx).await?;
    Ok(done.rows_affected())
}

/// What an archive file verified to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The first entry in the file.
    pub from: u64,
    /// One past the last: the size of the signed checkpoint it ends at.
    pub to: u64,
    /// The tree's root at `to`.
    pub root: Hash,
    /// Checkpoints verified.
    pub checkpoints: usize,
    /// SHA-256 of the file, lowercase hex.
    pub file_sha256: String,
}

/// Checks an archive file with the checkpoint key alone: every entry
/// canonical, in order and matching its `entry_sha256`, leaf hash and
/// shown JSON, and every checkpoint in the header signed and committing
/// to the tree of the entries up to it (the last one at the file's end).
pub fn verify_archive(path: &Path, verifier: &Verifier) -> Result<ArchiveReport, ArchiveError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut sha256 = Sha256::new();
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file);
    let bad = |line: u64, message: String| ArchiveError::File {
        path: path.to_owned(),
        line,
        message,
    };
    let mut text = String::new();
    let mut number = 0u64;
    let mut next_line = |text: &mut String| -> Result<bool, ArchiveError> {
        text.clear();
        let n = lines.read_line(text).map_err(io(path))?;
        sha256.update(text.as_bytes());
        Ok(n > 0)
    };
    number += 1;
    if !next_line(&mut text)? {
        return Err(bad(number, "the file is empty".into()));
    }
    let header: Header = serde_json::from_str(&text)
        .map_err(|e| bad(number, format!("not an archive header: {e}")))?;
    if header.format != FORMAT {
        return Err(bad(
            number,
            format!("format {:?}, expected {FORMAT:?}", header.format),
        ));
    }
    if header.origin != verifier.name() {
        return Err(bad(
            number,
            format!(
                "the checkpoints are of {:?}, the key is {:?}",
                header.origin,
                verifier.name()
            ),
        ));
    }
    let hashes = header
        .tree
        .iter()
        .map(hex::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(number, "a tree hash is not hex".into()))?;
    let mut tree = CompactRange::from_slices(header.from, &hashes).ok_or_else(|| {
        bad(
            number,
            format!(
                "the tree is not the compact range of {} entries (one 32-byte hash per set bit)",
                header.from
            ),
        )
    })?;
    let sizes: Vec<u64> = header.checkpoints.iter().map(|c| c.size).collect();
    let ordered = sizes.windows(2).all(|w| w[0] < w[1]);
    match header.checkpoints.last() {
        Some(last) if ordered && last.size == header.to && header.from < header.to => {}
        _ => {
            return Err(bad(
                number,
                "the checkpoints must increase and end at the file's last entry".into(),
            ));
        }
    }
    let mut checkpoints = header
        .checkpoints
        .iter()
        .map(|c| StoredCheckpoint {
            size: c.size,
            root_hash: c.root.clone(),
            note: c.note.clone(),
            created_at: c.created_at.clone(),
        })
        .peekable();
    if let Some(c) = checkpoints.peek()
        && c.size <= header.from
    {
        return Err(bad(
            number,
            format!(
                "checkpoint at size {} is not after the first entry {}",
                c.size, header.from
            ),
        ));
    }
    let mut verified = 0;
    while tree.size() < header.to {
        number += 1;
        let seq = tree.size();
        if !next_line(&mut text)? {
            return Err(bad(
                number,
                format!("the file ends before entry {seq} (it claims {})", header.to),
            ));
        }
        let line: EntryLine = serde_json::from_str(&text)
            .map_err(|e| bad(number, format!("not an entry line: {e}")))?;
        if line.seq != seq {
            return Err(VerifyError::MissingEntry {
                missing: seq,
                found: line.seq,
            }
            .into());
        }
        let canonical = STANDARD
            .decode(&line.canonical)
            .map_err(|e| bad(number, format!("entry {seq}: canonical is not base64: {e}")))?;
        AuditEntry::from_canonical(&canonical).map_err(|e| VerifyError::NotCanonical {
            seq,
            message: e.to_string(),
        })?;
        if !AuditEntry::sha256_is(&canonical, &line.entry_sha256) {
            return Err(VerifyError::EntryHash { seq }.into());
        }
        let leaf = leaf_hash(&canonical);
        if line.leaf_hash != hex::encode(leaf) {
            return Err(bad(
                number,
                format!("entry {seq}: leaf_hash does not match the entry bytes"),
            ));
        }
        let shown: serde_json::Value = serde_json::from_slice(&canonical)
            .map_err(|e| bad(number, format!("entry {seq}: {e}")))?;
        if shown != line.entry {
            return Err(bad(
                number,
                format!("entry {seq}: the entry shown is not the canonical entry"),
            ));
        }
        tree.push(leaf).map_err(|_| VerifyError::TreeFull { seq })?;
        while let Some(c) = checkpoints.next_if(|c| c.size == tree.size()) {
            check_checkpoint(&c, &tree.root(), verifier)?;
            verified += 1;
        }
    }
    number += 1;
    if next_line(&mut text)? {
        return Err(bad(
            number,
            format!("more lines after the last entry {}", header.to - 1),
        ));
    }
    Ok(ArchiveReport {
        from: header.from,
        to: header.to,
        root: tree.root(),
        checkpoints: verified,
        file_sha256: hex::encode(sha256.finalize()),
    })
}

/// The canonical bytes of entry `seq` from an archive file, checked
/// against the line's `entry_sha256` (its leaf hash is what a proof of it
/// is checked with). Reads the file up to that line.
pub fn read_entry(path: &Path, seq: u64) -> Result<Vec<u8>, ArchiveError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file).lines();
    let bad = |line: u64, message: String| ArchiveError::File {
        path: path.to_owned(),
        line,
        message,
    };
    let first = lines
        .next()
        .transpose()
        .map_err(io(path))?
        .ok_or_else(|| bad(1, "the file is empty".into()))?;
    let header: Header =
        serde_json::from_str(&first).map_err(|e| bad(1, format!("not an archive header: {e}")))?;
    if seq < header.from || seq >= header.to {
        return Err(bad(
            1,
            format!(
                "entry {seq} is not in this file: it holds entries {} to {}",
                header.from,
                header.to.saturating_sub(1)
            ),
        ));
    }
    let number = seq - header.from + 2;
    let text = lines
        .nth((seq - header.from) as usize)
        .transpose()
        .map_err(io(path))?
        .ok_or_else(|| bad(number, format!("the file ends before entry {seq}")))?;
    let line: EntryLine =
        serde_json::from_str(&text).map_err(|e| bad(number, format!("not an entry line: {e}")))?;
    if line.seq != seq {
        return Err(bad(
            number,
            format!("entry {} where {seq} belongs", line.seq),
        ));
    }
    let canonical = STANDARD
        .decode(&line.canonical)
        .map_err(|e| bad(number, format!("entry {seq}: canonical is not base64: {e}")))?;
    if !AuditEntry::sha256_is(&canonical, &line.entry_sha256) {
        return Err(VerifyError::EntryHash { seq }.into());
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line written by copying the entry's bytes in is the one a JSON
    /// value of the same fields serializes to.
    #[test]
    fn an_entry_line_is_the_json_of_its_fields() {
        let canonical = br#"{"caller":"agency:dinsos","kind":"decision","rows":3,"v":2}"#;
        let sha = AuditEntry::sha256(canonical);
        let entry: serde_json::Value = serde_json::from_slice(canonical).unwrap();
        let want = serde_json::json!({
            "seq": 7,
            "leaf_hash": hex::encode(leaf_hash(canonical)),
            "entry_sha256": sha,
            "canonical": STANDARD.encode(canonical),
            "entry": entry,
        })
        .to_string();
        assert_eq!(entry_line(7, canonical, &sha).unwrap(), want);
        let err = entry_line(8, b"{\"v\":", &sha).unwrap_err();
        assert!(err.starts_with("entry 8: not JSON"), "{err}");
        assert!(entry_line(9, b"{} {}", &sha).is_err());
    }

    /// A delivery entry naming `n` subjects of its own (`tag` apart).
    fn naming(tag: usize, n: usize) -> AuditEntry {
        let hashes: Vec<String> = (0..n)
            .map(|i| AuditEntry::sha256(format!("{tag}.{i}").as_bytes()))
            .collect();
        crate::audit::delivery_naming(&hashes.iter().map(String::as_str).collect::<Vec<_>>())
    }

    async fn count(store: &Store, sql: &'static str) -> i64 {
        sqlx::query(sql)
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    }

    /// Archived entries leave with exactly their own index rows, found
    /// from the subjects they name, in transactions cut by the subjects
    /// they hold; entries above the archived point keep theirs.
    #[tokio::test]
    async fn archived_entries_leave_with_the_index_rows_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(dir.path().join("a.db").to_str().unwrap())
            .await
            .unwrap();
        let log = crate::AuditLog::start(store.clone());
        for i in 0..300 {
            log.append(naming(i, 3)).await.unwrap();
        }
        store.catch_up_subjects().await.unwrap();
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM audit_subjects").await,
            900
        );
        sqlx::query(
            "INSERT INTO audit_archives (up_to, from_seq, checkpoint, file_sha256, archived_at)
             VALUES (256, 0, 300, 'f', 't')",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let mut steps = Vec::new();
        // 10 subjects a transaction: the 4th entry brings its rows to 12
        let removed = remove_archived_by(&store, &mut |p| steps.push(p), 10)
            .await
            .unwrap();
        assert_eq!(removed, 256 * 4);
        assert_eq!(steps.len(), 64);
        assert_eq!(
            steps.last(),
            Some(&Progress::Removing {
                done: 256,
                total: 256
            })
        );
        let below = "SELECT COUNT(*) FROM audit_subjects WHERE seq < 256";
        assert_eq!(count(&store, below).await, 0);
        let above = "SELECT COUNT(*) FROM audit_subjects WHERE seq >= 256";
        assert_eq!(count(&store, above).await, 44 * 3);
        assert_eq!(count(&store, "SELECT MIN(seq) FROM audit_log").await, 256);
        // what is left is found by subject as before
        let last = naming(299, 3).subjects[2].clone();
        let query = crate::EntryQuery {
            subject_hash: Some(last),
            ..Default::default()
        };
        let found = store.query_entries(&query, 10).await.unwrap();
        assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), [299]);
        store.close().await;
    }
}
