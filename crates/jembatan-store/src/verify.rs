//! Offline verification of the audit log against its signed checkpoints.
//!
//! Entry `seq` is leaf `seq` of an RFC 6962 Merkle tree whose leaf hash is
//! `SHA-256(0x00 || canonical entry bytes)`. [`verify`] streams every stored
//! entry in order and checks that the log is gap-free from 0, that each
//! entry's bytes are canonical and agree with `entry_sha256` and with the
//! indexed columns, and that every stored checkpoint is signed by the
//! expected key and commits to the root recomputed from the entries at its
//! size. Since every checkpoint is compared with a prefix of the same leaf
//! sequence, checkpoints that verify are also consistent with each other.
//! The first problem found is reported, naming the entry or checkpoint.
//! On a store whose oldest entries have been archived (`archive.rs`), the
//! check starts where the stored entries do.

use jembatan_core::AuditEntry;
use jembatan_tlog::merkle::tile::{Tile, TileBuilder, TileError, TileId, needed_for_root};
use jembatan_tlog::merkle::{CompactRange, Hash, TreeFullError, leaf_hash};
use jembatan_tlog::note::{Checkpoint, Verifier};

use crate::{RawEntry, Store, StoreError, StoredCheckpoint};

mod postgres;
mod sqlite;

/// Entries read per page while streaming the log.
const PAGE: u64 = 4096;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries verified (the tree size).
    pub size: u64,
    /// Root of the tree of all entries.
    pub root: Hash,
    /// Checkpoints verified.
    pub checkpoints: usize,
    /// Entries below this one are archived: checked through the tiles
    /// and the signed checkpoints only (their files verify on their own,
    /// see [`crate::archive::verify_archive`]).
    pub archived: u64,
}

impl VerifyReport {
    /// The root in lowercase hex.
    pub fn root_hex(&self) -> String {
        hex::encode(self.root)
    }
}

/// The first problem found on the log.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the store: {0}")]
    Store(#[from] StoreError),
    #[error("entry {missing} missing: {}", describe_jump(*.missing, *.found))]
    MissingEntry { missing: u64, found: u64 },
    #[error("entry {seq}: stored bytes are not a canonical entry: {message}")]
    NotCanonical { seq: u64, message: String },
    #[error("entry {seq}: stored entry_sha256 does not match the entry bytes")]
    EntryHash { seq: u64 },
    #[error("entry {seq}: stored bytes do not match the indexed column {column}")]
    Column { seq: u64, column: &'static str },
    #[error("entry {seq}: the tree is full")]
    TreeFull { seq: u64 },
    #[error("checkpoint at size {size}: sizes do not increase after size {previous}")]
    CheckpointOrder { size: u64, previous: u64 },
    #[error("checkpoint at size {size}: the log has only {log_size} entries")]
    CheckpointBeyondLog { size: u64, log_size: u64 },
    #[error("checkpoint at size {size}: signature does not verify with key {key}: {message}")]
    CheckpointSignature {
        size: u64,
        key: String,
        message: String,
    },
    #[error("checkpoint at size {size}: {message}")]
    CheckpointNote { size: u64, message: String },
    #[error("checkpoint at size {size}: root does not match the entries")]
    CheckpointRoot { size: u64 },
    #[error("the tree's tiles: {0}")]
    Tiles(#[from] TileError),
    #[error(
        "entries below {up_to} are archived, but no signed checkpoint at or above that size is \
         stored: the tree where the store's entries resume cannot be checked"
    )]
    ArchiveUnanchored { up_to: u64 },
}

fn describe_jump(missing: u64, found: u64) -> String {
    match missing.checked_sub(1) {
        Some(previous) => format!("seq jumps from {previous} to {found}"),
        None => format!("the log starts at seq {found}"),
    }
}

impl VerifyError {
    /// The entry seq or checkpoint size the error names, if any.
    pub fn position(&self) -> Option<u64> {
        match self {
            VerifyError::Store(_) | VerifyError::Tiles(_) => None,
            VerifyError::MissingEntry { missing: n, .. }
            | VerifyError::NotCanonical { seq: n, .. }
            | VerifyError::EntryHash { seq: n }
            | VerifyError::Column { seq: n, .. }
            | VerifyError::TreeFull { seq: n }
            | VerifyError::CheckpointOrder { size: n, .. }
            | VerifyError::CheckpointBeyondLog { size: n, .. }
            | VerifyError::CheckpointSignature { size: n, .. }
            | VerifyError::CheckpointNote { size: n, .. }
            | VerifyError::CheckpointRoot { size: n }
            | VerifyError::ArchiveUnanchored { up_to: n } => Some(*n),
        }
    }
}

/// Extends `range` with the leaves of the stored entries from
/// `range.size()` on, up to `stop_at` entries in all (or to the end of the
/// log), calling `check` on each row first. Fails on a gap in `seq`.
///
/// A SQLite file is read directly on every core (see [`sqlite`]). On
/// PostgreSQL it is pipelined: pages are seq ranges read over several
/// connections of the typed pool at once while earlier pages are checked
/// and hashed on every core (see [`postgres`]). Rows are still judged
/// strictly in order, so the first bad entry is the one named.
async fn extend<T: Tree>(
    store: &Store,
    range: &mut T,
    stop_at: Option<u64>,
    check: Check,
    threads: usize,
) -> Result<(), VerifyError> {
    let joined = |e: tokio::task::JoinError| {
        VerifyError::Store(StoreError::AuditUnavailable(format!(
            "verification task failed: {e}"
        )))
    };
    let in_flight = threads.max(2);
    // Entries appended while a pass runs (by this or another replica) are
    // taken by the next pass; a pass that finds nothing new ends it.
    loop {
        let mut end = store.audit_log_size().await?;
        if let Some(stop) = stop_at {
            end = end.min(stop);
        }
        if end <= range.size() {
            return Ok(());
        }
        if let Some(file) = store.sqlite_file() {
            while range.size() < end {
                let (file, from) = (file.to_owned(), range.size());
                let to = end.min(from + (1 << 20));
                let hashes = tokio::task::spawn_blocking(move || {
                    sqlite::leaves(&file, from, to, check, threads)
                })
                .await
                .map_err(joined)??;
                push_all(range, hashes)?;
            }
            continue;
        }
        let Some(reader) = store.pg_reader() else {
            return Err(VerifyError::Store(StoreError::AuditUnavailable(
                "an in-memory SQLite store has no file to read its log from".into(),
            )));
        };
        let mut pages = std::collections::VecDeque::new();
        let mut next_from = range.size();
        loop {
            while pages.len() < in_flight && next_from < end {
                let (from, to) = (next_from, (next_from + PAGE).min(end));
                let reader = reader.clone();
                pages.push_back(tokio::spawn(async move {
                    postgres::page(&reader, from, to).await
                }));
                next_from = to;
            }
            let Some(page) = pages.pop_front() else {
                break;
            };
            let page = page.await.map_err(joined)??;
            if page.is_empty() {
                // A gap as wide as the page: the next row names it.
                continue;
            }
            let from = range.size();
            let hashes =
                tokio::task::spawn_blocking(move || postgres::leaves(&page, from, check, threads))
                    .await
                    .map_err(joined)??;
            push_all(range, hashes)?;
        }
    }
}

/// The stored rows with `from <= seq < to`, in order, as stored (a gap
/// is left out: the caller names it), read as [`verify`] reads them: a
/// SQLite file directly, PostgreSQL through the typed pool. A page for
/// callers that need the rows themselves, such as an archive.
pub(crate) async fn raw_rows(
    store: &Store,
    from: u64,
    to: u64,
) -> Result<Vec<RawEntry>, VerifyError> {
    let joined = |e: tokio::task::JoinError| {
        VerifyError::Store(StoreError::AuditUnavailable(format!(
            "reading the log stopped: {e}"
        )))
    };
    if let Some(file) = store.sqlite_file() {
        let file = file.to_owned();
        return tokio::task::spawn_blocking(move || sqlite::rows(&file, from, to))
            .await
            .map_err(joined)?;
    }
    match store.pg_reader() {
        Some(reader) => {
            let page = postgres::page(reader, from, to).await?;
            tokio::task::spawn_blocking(move || postgres::rows(&page))
                .await
                .map_err(joined)?
        }
        None => Ok(store.raw_entries(from, to.saturating_sub(from)).await?),
    }
}

/// The check each row gets before its leaf is hashed.
type Check = fn(&RawEntry) -> Result<(), VerifyError>;

/// A tree the leaves of stored entries are appended to.
trait Tree {
    fn size(&self) -> u64;
    fn push(&mut self, leaf: Hash) -> Result<(), TreeFullError>;
}

impl Tree for CompactRange {
    fn size(&self) -> u64 {
        CompactRange::size(self)
    }
    fn push(&mut self, leaf: Hash) -> Result<(), TreeFullError> {
        CompactRange::push(self, leaf)
    }
}

impl Tree for TileBuilder {
    fn size(&self) -> u64 {
        TileBuilder::size(self)
    }
    fn push(&mut self, leaf: Hash) -> Result<(), TreeFullError> {
        TileBuilder::push(self, leaf)
    }
}

fn push_all<T: Tree>(range: &mut T, hashes: Vec<Hash>) -> Result<(), VerifyError> {
    for hash in hashes {
        let seq = range.size();
        range
            .push(hash)
            .map_err(|_| VerifyError::TreeFull { seq })?;
    }
    Ok(())
}

/// Checks rows that must come in seq order from a given one and collects
/// their leaf hashes. Each row is read into one reused [`RawEntry`], so a
/// row costs no allocation before its check.
struct Leaves {
    check: Check,
    expected: u64,
    row: RawEntry,
    hashes: Vec<Hash>,
}

impl Leaves {
    fn new(from: u64, capacity: usize, check: Check) -> Leaves {
        Leaves {
            check,
            expected: from,
            row: RawEntry::default(),
            hashes: Vec::with_capacity(capacity),
        }
    }

    /// Takes the row numbered `seq`, whose other values `fill` reads.
    fn push(
        &mut self,
        seq: u64,
        fill: impl FnOnce(&mut RawEntry) -> Result<(), VerifyError>,
    ) -> Result<(), VerifyError> {
        if seq != self.expected {
            return Err(VerifyError::MissingEntry {
                missing: self.expected,
                found: seq,
            });
        }
        self.row.seq = seq;
        fill(&mut self.row)?;
        (self.check)(&self.row)?;
        self.hashes.push(leaf_hash(&self.row.entry));
        self.expected += 1;
        Ok(())
    }
}

/// The indexed text columns of a [`RawEntry`], in [`crate::checkpoints::raw_columns`]
/// order after `seq`.
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

/// Sets text column `i` of `row` (see [`TEXT_COLUMNS`]) to `value`, reusing
/// its buffer. `None` is NULL, which only the optional columns may hold;
/// in another the row cannot match its entry, and the column is named.
fn set_text(row: &mut RawEntry, i: usize, value: Option<&str>) -> Result<(), VerifyError> {
    let seq = row.seq;
    match (text_slot(row, i), value) {
        (Slot::Required(s), Some(text)) => set(s, text),
        (Slot::Optional(s), Some(text)) => set(s.get_or_insert_with(String::new), text),
        (Slot::Optional(s), None) => *s = None,
        (Slot::Required(_), None) => {
            return Err(VerifyError::Column {
                seq,
                column: TEXT_COLUMNS[i],
            });
        }
    }
    Ok(())
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

fn set(slot: &mut String, text: &str) {
    slot.clear();
    slot.push_str(text);
}

/// Runs `work` on each part, one thread per part (the first on this one),
/// and returns the results in the parts' order.
fn on_cores<P: Send, T: Send>(
    parts: Vec<P>,
    work: impl Fn(P) -> Result<T, VerifyError> + Sync,
) -> Vec<Result<T, VerifyError>> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let work = &work;
        let others: Vec<_> = parts.map(|p| scope.spawn(move || work(p))).collect();
        let mut results = vec![work(first)];
        for other in others {
            results.push(other.join().unwrap_or_else(|_| {
                Err(VerifyError::Store(StoreError::AuditUnavailable(
                    "a verification thread panicked".into(),
                )))
            }));
        }
        results
    })
}

/// Extends `range` with the leaves of every stored entry from `range.size()`
/// on (possibly appended by another replica), up to `stop_at` entries in
/// all when given. Checks only that `seq` is gap-free; see [`verify`] for
/// the full check.
pub async fn catch_up(
    store: &Store,
    range: &mut CompactRange,
    stop_at: Option<u64>,
) -> Result<(), VerifyError> {
    extend(store, range, stop_at, |_| Ok(()), all_cores()).await
}

/// Entries hashed between two writes of tiles: bounds the leaf hashes and
/// tiles held at once (2 MiB of each).
const TILE_STEP: u64 = 1 << 16;

/// Like [`catch_up`], into a [`TileBuilder`], writing the tiles that
/// changed to the store every [`TILE_STEP`] entries and at the end. On an
/// error the builder may be ahead of the stored tiles: resume from the
/// store ([`Store::tile_builder`]) before using it again.
pub async fn catch_up_tiles(
    store: &Store,
    tiles: &mut TileBuilder,
    stop_at: Option<u64>,
) -> Result<(), VerifyError> {
    loop {
        let mut end = store.audit_log_size().await?;
        if let Some(stop) = stop_at {
            end = end.min(stop);
        }
        if end <= tiles.size() {
            return Ok(());
        }
        let step = end.min(tiles.size().saturating_add(TILE_STEP));
        extend(store, tiles, Some(step), |_| Ok(()), all_cores()).await?;
        store.write_tiles(&tiles.take_changed()).await?;
    }
}

/// The root of the first `size` entries as the broker checks it at start:
/// from the stored tiles, except the entries after the last full tile
/// (fewer than 256), which are hashed from the log itself. O(log n) reads;
/// [`verify`] is the check of every entry.
pub async fn tiles_root_with_tail(store: &Store, size: u64) -> Result<Hash, VerifyError> {
    let mut tiles = store.tiles(&needed_for_root(size)).await?;
    let tail = size % 256;
    if tail > 0 {
        let from = size - tail;
        let mut hashes = Vec::with_capacity(tail as usize);
        for row in store.raw_entries(from, tail).await? {
            let expected = from + hashes.len() as u64;
            if row.seq != expected {
                return Err(VerifyError::MissingEntry {
                    missing: expected,
                    found: row.seq,
                });
            }
            hashes.push(leaf_hash(&row.entry));
        }
        if (hashes.len() as u64) < tail {
            return Err(VerifyError::CheckpointBeyondLog {
                size,
                log_size: from + hashes.len() as u64,
            });
        }
        tiles.replace(Tile {
            id: TileId {
                level: 0,
                index: size >> 8,
            },
            hashes,
        });
    }
    Ok(tiles.root(size)?)
}

/// The leaf hashes of the first `size` entries.
pub async fn leaf_hashes(store: &Store, size: u64) -> Result<Vec<Hash>, VerifyError> {
    let mut leaves = Vec::new();
    let mut from = 0;
    while from < size {
        let page = store.raw_entries(from, (size - from).min(PAGE)).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            if row.seq != from {
                return Err(VerifyError::MissingEntry {
                    missing: from,
                    found: row.seq,
                });
            }
            leaves.push(leaf_hash(&row.entry));
            from += 1;
        }
    }
    Ok(leaves)
}

/// Checks one stored row: canonical bytes, `entry_sha256`, indexed columns.
pub fn check_entry(row: &RawEntry) -> Result<(), VerifyError> {
    let seq = row.seq;
    let e = AuditEntry::from_canonical(&row.entry).map_err(|e| VerifyError::NotCanonical {
        seq,
        message: e.to_string(),
    })?;
    if !AuditEntry::sha256_is(&row.entry, &row.entry_sha256) {
        return Err(VerifyError::EntryHash { seq });
    }
    let columns: [(&'static str, Option<&str>, Option<&str>); 11] = [
        (
            "exchange_id",
            Some(row.exchange_id.as_str()),
            Some(e.exchange_id.as_str()),
        ),
        ("kind", Some(row.kind.as_str()), Some(e.kind.as_str())),
        (
            "recorded_at",
            Some(row.recorded_at.as_str()),
            Some(e.time.as_str()),
        ),
        ("caller", Some(row.caller.as_str()), Some(e.caller.as_str())),
        ("consumer", row.consumer.as_deref(), e.consumer.as_deref()),
        ("provider", row.provider.as_deref(), e.provider.as_deref()),
        ("dataset", row.dataset.as_deref(), e.dataset.as_deref()),
        ("purpose", row.purpose.as_deref(), e.purpose.as_deref()),
        (
            "decision",
            Some(row.decision.as_str()),
            Some(e.decision.as_str()),
        ),
        ("status", Some(row.status.as_str()), Some(e.status.as_str())),
        (
            "subject_hash",
            row.subject_hash.as_deref(),
            e.subject_hash.as_deref(),
        ),
    ];
    for (column, stored, from_bytes) in columns {
        if stored != from_bytes {
            return Err(VerifyError::Column { seq, column });
        }
    }
    Ok(())
}

/// Checks one stored checkpoint against the root recomputed at its size.
pub fn check_checkpoint(
    checkpoint: &StoredCheckpoint,
    root: &Hash,
    verifier: &Verifier,
) -> Result<(), VerifyError> {
    let size = checkpoint.size;
    let opened = Checkpoint::open(&checkpoint.note, verifier).map_err(|e| {
        VerifyError::CheckpointSignature {
            size,
            key: verifier.to_key_string(),
            message: e.to_string(),
        }
    })?;
    if opened.origin != verifier.name() {
        return Err(VerifyError::CheckpointNote {
            size,
            message: format!(
                "note names origin {:?}, expected {:?}",
                opened.origin,
                verifier.name()
            ),
        });
    }
    if opened.size != size {
        return Err(VerifyError::CheckpointNote {
            size,
            message: format!("note is for size {}", opened.size),
        });
    }
    if opened.root != *root || checkpoint.root_hash != hex::encode(root) {
        return Err(VerifyError::CheckpointRoot { size });
    }
    Ok(())
}

/// The threads a verification reads and hashes on when nothing else is
/// asked: every core.
fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Verifies the whole log and every checkpoint on every core; see the
/// module docs.
pub async fn verify(store: &Store, verifier: &Verifier) -> Result<VerifyReport, VerifyError> {
    verify_on(store, verifier, all_cores()).await
}

/// [`verify`] reading and hashing on at most `threads` threads: a broker
/// re-checking its log while it serves takes one.
pub async fn verify_on(
    store: &Store,
    verifier: &Verifier,
    threads: usize,
) -> Result<VerifyReport, VerifyError> {
    let checkpoints = store.checkpoints().await?;
    let mut previous: Option<u64> = None;
    for c in &checkpoints {
        if let Some(previous) = previous
            && c.size <= previous
        {
            return Err(VerifyError::CheckpointOrder {
                size: c.size,
                previous,
            });
        }
        previous = Some(c.size);
    }
    // Entries below `archived` have left the store for archive files
    // (`archive.rs`, which verify on their own): the tree resumes there
    // from the tiles, which the first signed checkpoint at or above it
    // then holds to account; checkpoints below it are checked against the
    // tiles alone.
    let archived = store.archived_up_to().await?;
    let mut range = match archived {
        0 => CompactRange::new(),
        n => store.tree_at(n).await?,
    };
    let mut anchored = archived == 0;
    for c in &checkpoints {
        if c.size < archived {
            let tiles = store.tiles(&needed_for_root(c.size)).await?;
            check_checkpoint(c, &tiles.root(c.size)?, verifier)?;
            continue;
        }
        anchored = true;
        extend(store, &mut range, Some(c.size), check_entry, threads).await?;
        if range.size() < c.size {
            return Err(VerifyError::CheckpointBeyondLog {
                size: c.size,
                log_size: range.size(),
            });
        }
        check_checkpoint(c, &range.root(), verifier)?;
    }
    if !anchored {
        return Err(VerifyError::ArchiveUnanchored { up_to: archived });
    }
    extend(store, &mut range, None, check_entry, threads).await?;
    Ok(VerifyReport {
        size: range.size(),
        root: range.root(),
        checkpoints: checkpoints.len(),
        archived,
    })
}
