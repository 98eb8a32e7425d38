//! The SQLite store's audit writer: one thread with a connection of its
//! own that writes each group commit whole — `BEGIN IMMEDIATE`, the next
//! sequence number, the entries, the subject index, `COMMIT` — so a batch
//! costs one hand-over between threads. Through sqlx every statement is
//! handed to the connection's worker thread and back, five or more per
//! batch.
//!
//! The connection is set up as the store's pool connections are (WAL,
//! `synchronous = FULL`: a batch acknowledged is on disk). Other writers
//! (agreements, quotas, running exchanges) keep using the pool; SQLite's
//! write lock and busy timeout order them with this one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{Pending, number};
use crate::StoreError;

/// A batch to write, and where to hand it back with the outcome.
struct Job {
    batch: Vec<Pending>,
    done: oneshot::Sender<(Vec<Pending>, Result<(), StoreError>)>,
}

/// Handle to the writer thread; the thread ends when the handle is
/// dropped.
#[derive(Debug)]
pub(super) struct SqliteWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("entries", &self.batch.len())
            .finish()
    }
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::AuditUnavailable(format!("cannot write the SQLite store: {e}"))
}

impl SqliteWriter {
    /// Opens the writer's connection on the store file at `path` and
    /// starts its thread.
    pub(super) fn start(path: &Path) -> Result<SqliteWriter, StoreError> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_error)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sqlite_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite_error)?;
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(sqlite_error)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("jembatan-audit-writer".into())
            .spawn(move || {
                while let Ok(Job { mut batch, done }) = queue.recv() {
                    let written = write(&mut conn, &mut batch);
                    let _ = done.send((batch, written));
                }
            })
            .map_err(|e| {
                StoreError::AuditUnavailable(format!("cannot start the audit writer: {e}"))
            })?;
        Ok(SqliteWriter { jobs })
    }

    /// Writes `batch` in one transaction, numbering its entries after the
    /// log's last; hands the batch back with the outcome.
    pub(super) async fn write(
        &self,
        batch: Vec<Pending>,
    ) -> (Vec<Pending>, Result<(), StoreError>) {
        let (done, outcome) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(Job { batch, done }) {
            return (job.batch, Err(StoreError::AppenderStopped));
        }
        // the thread answers every job it takes; it only stops when the
        // handle is gone
        outcome
            .await
            .unwrap_or_else(|_| (Vec::new(), Err(StoreError::AppenderStopped)))
    }
}

fn write(conn: &mut Connection, batch: &mut [Pending]) -> Result<(), StoreError> {
    // IMMEDIATE: the write lock from the first statement, so the sequence
    // number read below is still the next one at the insert
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let next: i64 = tx
        .query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_log", [], |r| {
            r.get(0)
        })
        .map_err(sqlite_error)?;
    number(batch, next);
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO audit_log (seq, exchange_id, kind, recorded_at, caller, consumer,
                     provider, dataset, purpose, decision, status, subject_hash, entry,
                     entry_sha256)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .map_err(sqlite_error)?;
        let mut subject = tx
            .prepare("INSERT INTO audit_subjects (seq, subject_hash) VALUES (?, ?)")
            .map_err(sqlite_error)?;
        for p in batch.iter() {
            let (s, e) = (&p.stored, &p.stored.entry);
            let seq = s.seq as i64;
            insert
                .execute(params![
                    seq,
                    e.exchange_id,
                    e.kind.as_str(),
                    e.time,
                    e.caller,
                    e.consumer,
                    e.provider,
                    e.dataset,
                    e.purpose,
                    e.decision.as_str(),
                    e.status.as_str(),
                    e.subject_hash,
                    s.canonical,
                    s.entry_sha256,
                ])
                .map_err(sqlite_error)?;
            // the subject index, in the same transaction as the entries
            let mut hashes = e.all_subjects();
            hashes.sort_unstable();
            for hash in hashes {
                subject.execute(params![seq, hash]).map_err(sqlite_error)?;
            }
        }
    }
    tx.commit().map_err(sqlite_error)
}
