//! The SQLite store's writer: one thread with a connection of its own
//! that writes the audit log's group commits and the bookkeeping of
//! running exchanges. Everything the broker writes on its hot paths goes
//! through it, so those writes never wait on each other for SQLite's
//! write lock (whose busy handler sleeps a millisecond and more per try),
//! and each costs one hand-over between threads: through sqlx every
//! statement is handed to the connection's worker thread and back.
//!
//! An audit batch is written whole — `BEGIN IMMEDIATE`, the next
//! sequence number, the entries, the subject index, `COMMIT` with
//! `synchronous = FULL`, so a batch acknowledged is on disk. The
//! bookkeeping statements waiting at the same time ([`LightOp`]) are
//! written together in one transaction whose commit does not wait for
//! the disk: each becomes durable with the next audit batch, which
//! follows it in the same write-ahead log.
//!
//! The subject index rows go into `audit_subjects_recent` (migration
//! 0018), and between batches the thread moves them into
//! `audit_subjects` a run of consecutive hashes at a time ([`Merge`]),
//! so the large index is written in order rather than at random.
//!
//! Other writers (agreements, quotas, the registry, other processes on
//! the same file) keep using the pool; SQLite's write lock and busy
//! timeout order them with this one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::audit::{Pending, number, subject_keys};

/// The next entry's `seq` on a SQLite store: one past the highest stored,
/// or past the archived range when nothing after it is stored yet.
pub(crate) const NEXT_SEQ: &str = "SELECT max(COALESCE((SELECT MAX(seq) + 1 FROM audit_log), 0),
            COALESCE((SELECT MAX(up_to) FROM audit_archives), 0))";

/// Before every `(subject_key, seq)` row of the subject index.
const BEFORE_ALL: (i64, i64) = (i64::MIN, -1);

/// Most bookkeeping statements written in one transaction.
const MOST_LIGHT: usize = 512;

/// A bookkeeping write: statements on the writer's connection, inside a
/// savepoint of their own; returns the rows they changed.
pub(crate) type LightOp = Box<dyn FnOnce(&Connection) -> rusqlite::Result<usize> + Send>;

/// Work for the writer thread, and where to hand back the outcome.
enum Job {
    Append {
        batch: Vec<Pending>,
        done: oneshot::Sender<(Vec<Pending>, Result<(), StoreError>)>,
    },
    Light {
        op: LightOp,
        done: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// Handle to the writer thread; the thread ends when the handle is
/// dropped.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Append { batch, .. } => f
                .debug_struct("Append")
                .field("entries", &batch.len())
                .finish(),
            Job::Light { .. } => f.debug_struct("Light").finish_non_exhaustive(),
        }
    }
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::AuditUnavailable(format!("cannot write the SQLite store: {e}"))
}

fn light_error(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e.to_string())
}

impl SqliteWriter {
    /// Opens the writer's connection on the store file at `path` and
    /// starts its thread.
    pub(crate) fn start(path: &Path) -> Result<SqliteWriter, StoreError> {
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
        let recent: i64 = conn
            .query_row("SELECT COUNT(*) FROM audit_subjects_recent", [], |r| {
                r.get(0)
            })
            .map_err(sqlite_error)?;
        let mut merge = Merge::new(usize::try_from(recent).unwrap_or(0));
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("jembatan-store-writer".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut appends = Vec::new();
                    let mut lights = Vec::new();
                    let mut next = Some(first);
                    while let Some(job) = next.take() {
                        match job {
                            Job::Append { batch, done } => appends.push((batch, done)),
                            Job::Light { op, done } => lights.push((op, done)),
                        }
                        if lights.len() < MOST_LIGHT {
                            next = queue.try_recv().ok();
                        }
                    }
                    // commits that wait for the disk, but for bookkeeping
                    let mut full = true;
                    if !lights.is_empty() {
                        write_light(&mut conn, lights);
                        full = false;
                    }
                    for (mut batch, done) in appends {
                        let restored = if full { Ok(()) } else { durable(&conn) };
                        full = restored.is_ok();
                        let written = restored.and_then(|()| write(&mut conn, &mut batch));
                        let added = match &written {
                            Ok(added) => *added,
                            Err(_) => 0,
                        };
                        let _ = done.send((batch, written.map(|_| ())));
                        if let Err(err) = merge.after(&mut conn, added) {
                            // the rows stay where they are, found by
                            // searches; the next batch tries again
                            tracing::warn!(error = %err, "cannot move subject index rows");
                        }
                    }
                }
            })
            .map_err(|e| {
                StoreError::AuditUnavailable(format!("cannot start the store's writer: {e}"))
            })?;
        Ok(SqliteWriter { jobs })
    }

    /// Writes `batch` in one transaction, numbering its entries after the
    /// log's last; hands the batch back with the outcome.
    pub(crate) async fn write(
        &self,
        batch: Vec<Pending>,
    ) -> (Vec<Pending>, Result<(), StoreError>) {
        let (done, outcome) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError(Job::Append { batch, .. })) =
            self.jobs.send(Job::Append { batch, done })
        {
            return (batch, Err(StoreError::AppenderStopped));
        }
        // the thread answers every job it takes; it only stops when the
        // handle is gone
        outcome
            .await
            .unwrap_or_else(|_| (Vec::new(), Err(StoreError::AppenderStopped)))
    }

    /// Runs a bookkeeping write, committed with the others waiting at the
    /// same time without waiting for the disk (durable with the next
    /// audit batch); returns the rows it changed.
    pub(crate) async fn light(&self, op: LightOp) -> Result<usize, StoreError> {
        let (done, outcome) = oneshot::channel();
        if self.jobs.send(Job::Light { op, done }).is_err() {
            return Err(StoreError::AppenderStopped);
        }
        outcome.await.unwrap_or(Err(StoreError::AppenderStopped))
    }
}

/// A bookkeeping statement waiting for the writer, and its caller.
type Waiting = (LightOp, oneshot::Sender<Result<usize, StoreError>>);

/// Writes bookkeeping statements in one transaction, each in a savepoint
/// so that one failing leaves the others; the commit does not wait for
/// the disk. Answers each with its outcome once the commit is done.
fn write_light(conn: &mut Connection, lights: Vec<Waiting>) {
    let begun = conn
        .pragma_update(None, "synchronous", "NORMAL")
        .and_then(|()| conn.transaction_with_behavior(TransactionBehavior::Immediate));
    let mut tx = match begun {
        Ok(tx) => tx,
        Err(err) => {
            let err = err.to_string();
            for (_, done) in lights {
                let _ = done.send(Err(StoreError::Sqlite(err.clone())));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(lights.len());
    for (op, done) in lights {
        // a savepoint dropped unreleased rolls back to before its statement
        let outcome = tx.savepoint().and_then(|sp| {
            let n = op(&sp)?;
            sp.commit()?;
            Ok(n)
        });
        answers.push((done, outcome.map_err(light_error)));
    }
    match tx.commit() {
        Ok(()) => {
            for (done, outcome) in answers {
                let _ = done.send(outcome);
            }
        }
        Err(err) => {
            let err = err.to_string();
            for (done, _) in answers {
                let _ = done.send(Err(StoreError::Sqlite(err.clone())));
            }
        }
    }
}

/// Puts the connection back to commits that wait for the disk, before an
/// audit batch.
fn durable(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error)
}

/// Moving subject index rows from `audit_subjects_recent` into
/// `audit_subjects`. Once the recent table holds more than
/// [`Merge::KEEP`] rows, each batch is followed by moving at least as
/// many rows as it added (and at least [`Merge::LEAST`]), the next run
/// of consecutive `(subject_key, seq)` after the last one moved,
/// wrapping around: a run covers a small slice of the hash order, so it
/// touches only that slice of the large index's pages.
struct Merge {
    /// Rows in the recent table, as this thread counts them.
    recent: usize,
    /// The last row moved; the next run starts after it.
    after: (i64, i64),
}

impl Merge {
    /// Rows the recent table keeps before moving any.
    const KEEP: usize = 65_536;
    /// Fewest rows one run moves.
    const LEAST: usize = 8_192;

    fn new(recent: usize) -> Merge {
        Merge {
            recent,
            after: BEFORE_ALL,
        }
    }

    /// After a batch that added `added` rows: moves a run when the
    /// recent table is over [`Merge::KEEP`].
    fn after(&mut self, conn: &mut Connection, added: usize) -> Result<(), StoreError> {
        self.recent += added;
        if self.recent <= Merge::KEEP {
            return Ok(());
        }
        let want = added.max(Merge::LEAST);
        let moved = move_run(conn, &mut self.after, want)?;
        self.recent = self.recent.saturating_sub(moved);
        Ok(())
    }
}

/// Moves the (at most `want`) rows of `audit_subjects_recent` after
/// `after` into `audit_subjects`, in one transaction; `after` becomes
/// the last row moved, or the start again when the run reached the end.
/// Returns how many rows moved.
fn move_run(
    conn: &mut Connection,
    after: &mut (i64, i64),
    want: usize,
) -> Result<usize, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let end: Option<(i64, i64)> = tx
        .query_row(
            "SELECT subject_key, seq FROM audit_subjects_recent \
             WHERE (subject_key, seq) > (?1, ?2) ORDER BY subject_key, seq \
             LIMIT 1 OFFSET ?3",
            params![after.0, after.1, want.saturating_sub(1) as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    // past every key: a run to the end of the table
    let last = end.unwrap_or((i64::MAX, i64::MAX));
    let range = "(subject_key, seq) > (?1, ?2) AND (subject_key, seq) <= (?3, ?4)";
    let moved = tx
        .execute(
            &format!(
                "INSERT INTO audit_subjects (subject_key, seq) \
                 SELECT subject_key, seq FROM audit_subjects_recent WHERE {range} \
                 ORDER BY subject_key, seq"
            ),
            params![after.0, after.1, last.0, last.1],
        )
        .map_err(sqlite_error)?;
    let deleted = tx
        .execute(
            &format!("DELETE FROM audit_subjects_recent WHERE {range}"),
            params![after.0, after.1, last.0, last.1],
        )
        .map_err(sqlite_error)?;
    if deleted != moved {
        return Err(StoreError::AuditUnavailable(format!(
            "moved {moved} subject index rows but removed {deleted}"
        )));
    }
    tx.commit().map_err(sqlite_error)?;
    *after = end.unwrap_or(BEFORE_ALL);
    Ok(moved)
}

/// Writes the batch; returns how many subject index rows it added.
fn write(conn: &mut Connection, batch: &mut [Pending]) -> Result<usize, StoreError> {
    // IMMEDIATE: the write lock from the first statement, so the sequence
    // number read below is still the next one at the insert
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let next: i64 = tx
        .query_row(NEXT_SEQ, [], |r| r.get(0))
        .map_err(sqlite_error)?;
    number(batch, next);
    let mut added = 0usize;
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
            .prepare("INSERT INTO audit_subjects_recent (seq, subject_key) VALUES (?, ?)")
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
            for key in subject_keys(e) {
                subject.execute(params![seq, key]).map_err(sqlite_error)?;
                added += 1;
            }
        }
    }
    tx.commit().map_err(sqlite_error)?;
    Ok(added)
}
