//! Signed checkpoints of the audit log and the raw reader of stored entries.
//!
//! A checkpoint row keeps a signed C2SP checkpoint note committing to the
//! Merkle tree of the first `size` entries. Rows only ever grow in size: a
//! checkpoint whose size is not above the latest one is never stored.

use sqlx::Row;

use crate::{Backend, Store, StoreError, now};

/// Advisory lock key that serializes checkpoint writers across replicas.
const CHECKPOINT_LOCK_KEY: i64 = 0x6a65_6d62_6163; // "jembac"

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size (number of entries) the checkpoint commits to.
    pub size: u64,
    /// The tree's root, lowercase hex.
    pub root_hash: String,
    /// The signed checkpoint note.
    pub note: String,
    pub created_at: String,
}

/// An audit log row exactly as stored, before any parsing: what a verifier
/// needs to check the indexed columns against the entry bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    pub seq: u64,
    pub exchange_id: String,
    pub kind: String,
    pub recorded_at: String,
    pub caller: String,
    pub consumer: Option<String>,
    pub provider: Option<String>,
    pub dataset: Option<String>,
    pub purpose: Option<String>,
    pub decision: String,
    pub status: String,
    pub subject_hash: Option<String>,
    /// The canonical entry bytes (the Merkle leaf's data).
    pub entry: Vec<u8>,
    pub entry_sha256: String,
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        what: what.into(),
        message: format!("negative number {n}"),
    })
}

fn checkpoint_from_row(row: &sqlx::any::AnyRow) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        size: to_u64(row.try_get(0)?, "checkpoint size")?,
        root_hash: row.try_get(1)?,
        note: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

impl Store {
    /// Stores a checkpoint if its size is above every stored checkpoint's;
    /// returns whether it was stored.
    pub async fn add_checkpoint(
        &self,
        size: u64,
        root_hash: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CHECKPOINT_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "INSERT INTO checkpoints (size, root_hash, note, created_at)
             SELECT $1, $2, $3, $4
             WHERE NOT EXISTS (SELECT 1 FROM checkpoints WHERE size >= $5)",
        )
        .bind(to_i64(size))
        .bind(root_hash)
        .bind(note)
        .bind(now())
        .bind(to_i64(size))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every checkpoint, by increasing size.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows =
            sqlx::query("SELECT size, root_hash, note, created_at FROM checkpoints ORDER BY size")
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// The checkpoint with the largest size, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT size, root_hash, note, created_at FROM checkpoints ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// The checkpoint of tree size `size`, if one was stored.
    pub async fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT size, root_hash, note, created_at FROM checkpoints WHERE size = $1",
        )
        .bind(to_i64(size))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// Number of entries on the audit log: one past the highest `seq`,
    /// counting entries moved out to archive files (see `archive.rs`).
    pub async fn audit_log_size(&self) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE((SELECT MAX(seq) + 1 FROM audit_log), 0),
                    COALESCE((SELECT MAX(up_to) FROM audit_archives), 0)",
        )
        .fetch_one(self.pool())
        .await?;
        let stored = to_u64(row.try_get(0)?, "audit log size")?;
        let archived = to_u64(row.try_get(1)?, "archived audit log size")?;
        Ok(stored.max(archived))
    }

    /// Audit log rows with `seq >= from`, at most `limit`, in order, as
    /// stored (nothing parsed). Page through the log with it.
    pub async fn raw_entries(&self, from: u64, limit: u64) -> Result<Vec<RawEntry>, StoreError> {
        let sql = format!(
            "SELECT {} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
            raw_columns(self.backend())
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64(from))
            .bind(to_i64(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(raw_entry_from_row).collect()
    }
}

/// The columns of a [`RawEntry`], in the order [`raw_entry_from_row`] reads.
pub(crate) fn raw_columns(backend: Backend) -> &'static str {
    match backend {
        // SQLite would hand back an entry rewritten as TEXT as text: read it
        // as bytes whatever its storage class, so the tree sees what is there.
        Backend::Sqlite => {
            "seq, exchange_id, kind, recorded_at, caller, consumer, provider, dataset,
             purpose, decision, status, subject_hash, CAST(entry AS BLOB), entry_sha256"
        }
        Backend::Postgres => {
            "seq, exchange_id, kind, recorded_at, caller, consumer, provider, dataset,
             purpose, decision, status, subject_hash, entry, entry_sha256"
        }
    }
}

pub(crate) fn raw_entry_from_row(r: &sqlx::any::AnyRow) -> Result<RawEntry, StoreError> {
    Ok(RawEntry {
        seq: to_u64(r.try_get(0)?, "audit entry seq")?,
        exchange_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        recorded_at: r.try_get(3)?,
        caller: r.try_get(4)?,
        consumer: r.try_get(5)?,
        provider: r.try_get(6)?,
        dataset: r.try_get(7)?,
        purpose: r.try_get(8)?,
        decision: r.try_get(9)?,
        status: r.try_get(10)?,
        subject_hash: r.try_get(11)?,
        entry: r.try_get(12)?,
        entry_sha256: r.try_get(13)?,
    })
}
