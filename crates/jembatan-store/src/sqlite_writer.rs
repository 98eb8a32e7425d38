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
//! The subject index trails the log ([`Trail`], migration 0021): a
//! batch's commit holds its entries only, and between batches the thread
//! adds the subject rows of every entry written since the index last
//! caught up (kept as it wrote them, or read back from the entries when
//! another connection wrote some in between), sorted, so that the index
//! is written in long ordered runs rather than a row at a random place
//! for each subject. It starts catching up once the entries behind it
//! name [`Trail::MOST_SUBJECTS`] subjects or number
//! [`Trail::MOST_ENTRIES`], and whenever no work has come for
//! [`Trail::IDLE`], and writes the rows in chunks between its other
//! work; searches read the entries it has not reached yet from the log
//! itself.
//!
//! The write-ahead log is copied into the database by a thread of its
//! own ([`Checkpointer`]) rather than in whichever of the writer's
//! commits finds it past SQLite's threshold, so that no audit batch or
//! bookkeeping write waits for a checkpoint (a few megabytes written and
//! synced).
//!
//! Other writers (agreements, quotas, the registry, other processes on
//! the same file) keep using the pool; SQLite's write lock and busy
//! timeout order them with this one.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use std::sync::mpsc::{RecvTimeoutError, SyncSender, TryRecvError};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::audit::{Pending, add_index_rows, number, subject_key};

/// The next entry's `seq` on a SQLite store: one past the highest stored,
/// or past the archived range when nothing after it is stored yet.
pub(crate) const NEXT_SEQ: &str = "SELECT max(COALESCE((SELECT MAX(seq) + 1 FROM audit_log), 0),
            COALESCE((SELECT MAX(up_to) FROM audit_archives), 0))";

/// The subject index's mark: every entry below it has its index rows.
pub(crate) const MARK: &str = "SELECT seq FROM audit_subjects_through";

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
    /// Bring the subject index up to the log's end now.
    CatchUp {
        done: oneshot::Sender<Result<u64, StoreError>>,
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
            Job::CatchUp { .. } => f.debug_struct("CatchUp").finish_non_exhaustive(),
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
        // the checkpointer copies the log; the writer's commits do only
        // when it has fallen far behind (or is gone)
        conn.pragma_update(None, "wal_autocheckpoint", Checkpointer::FALLBACK_PAGES)
            .map_err(sqlite_error)?;
        let checkpointer = Checkpointer::start(path)?;
        let mut trail = Trail::start(&conn)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("jembatan-store-writer".into())
            .spawn(move || {
                // a job that arrived while a chunk of the index was written
                let mut arrived: Option<Job> = None;
                loop {
                    let first = if let Some(job) = arrived.take() {
                        Some(job)
                    } else if trail.running() {
                        // the catch-up goes on between the other work
                        match queue.try_recv() {
                            Ok(job) => Some(job),
                            Err(TryRecvError::Empty) => None,
                            Err(TryRecvError::Disconnected) => break,
                        }
                    } else if trail.waiting() {
                        match queue.recv_timeout(Trail::IDLE) {
                            Ok(job) => Some(job),
                            Err(RecvTimeoutError::Timeout) => {
                                trail.begin(&mut conn);
                                None
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    } else {
                        match queue.recv() {
                            Ok(job) => Some(job),
                            Err(_) => break,
                        }
                    };
                    if let Some(first) = first {
                        serve(&mut conn, &queue, &mut trail, first);
                    }
                    // the chunk ends early for a job that arrives meanwhile
                    trail.step(&mut conn, &mut || {
                        arrived = queue.try_recv().ok();
                        arrived.is_some()
                    });
                    checkpointer.nudge();
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

    /// Brings the subject index up to the log's end; returns the `seq`
    /// it now reaches (every entry below it indexed).
    pub(crate) async fn catch_up(&self) -> Result<u64, StoreError> {
        let (done, outcome) = oneshot::channel();
        if self.jobs.send(Job::CatchUp { done }).is_err() {
            return Err(StoreError::AppenderStopped);
        }
        outcome.await.unwrap_or(Err(StoreError::AppenderStopped))
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

/// The thread that copies the write-ahead log into the database: woken
/// after the writer's work, it waits [`Checkpointer::EVERY`] (gathering
/// the wake-ups of that time) and runs a passive checkpoint on its own
/// connection, which neither waits for nor stops readers and writers.
/// The thread ends when the writer's handle is dropped.
struct Checkpointer {
    wake: SyncSender<()>,
}

impl Checkpointer {
    /// Time between two checkpoints while writes come.
    const EVERY: Duration = Duration::from_millis(100);
    /// Pages of log after which the writer's own commits checkpoint, as
    /// SQLite's do by default after 1,000: only if this thread falls
    /// that far behind.
    const FALLBACK_PAGES: i64 = 16_384;

    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_error)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("jembatan-store-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    std::thread::sleep(Checkpointer::EVERY);
                    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        r.get::<_, i64>(0)
                    });
                    if let Err(err) = checkpoint {
                        tracing::warn!(error = %err, "cannot checkpoint the store's write-ahead log");
                    }
                }
            })
            .map_err(|e| {
                StoreError::AuditUnavailable(format!("cannot start the store's checkpointer: {e}"))
            })?;
        Ok(Checkpointer { wake })
    }

    /// Asks for a checkpoint soon; one already asked for covers this.
    fn nudge(&self) {
        let _ = self.wake.try_send(());
    }
}

/// Serves `first` and the jobs waiting behind it: the bookkeeping in
/// one transaction, then each audit batch, then any catch-up asked for.
fn serve(
    conn: &mut Connection,
    queue: &std::sync::mpsc::Receiver<Job>,
    trail: &mut Trail,
    first: Job,
) {
    let mut appends = Vec::new();
    let mut lights = Vec::new();
    let mut catch_ups = Vec::new();
    let mut next = Some(first);
    while let Some(job) = next.take() {
        match job {
            Job::Append { batch, done } => appends.push((batch, done)),
            Job::Light { op, done } => lights.push((op, done)),
            Job::CatchUp { done } => catch_ups.push(done),
        }
        if lights.len() < MOST_LIGHT {
            next = queue.try_recv().ok();
        }
    }
    if !lights.is_empty() {
        write_light(conn, lights);
    }
    for (mut batch, done) in appends {
        let written = write(conn, &mut batch);
        if written.is_ok() {
            trail.keep(&batch);
        }
        let named = written.as_ref().ok().copied();
        let _ = done.send((batch, written.map(|_| ())));
        if let Some(named) = named {
            trail.after(conn, named);
        }
    }
    if !catch_ups.is_empty() {
        let through = trail.catch_up(conn);
        for done in catch_ups {
            let _ = done.send(match &through {
                Ok(n) => Ok(*n),
                Err(err) => Err(StoreError::AuditUnavailable(err.to_string())),
            });
        }
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

/// Puts the connection back to commits that wait for the disk (the
/// bookkeeping and the subject index commit without waiting), before an
/// audit batch.
fn durable(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error)
}

/// The subject index behind the log: how much the writer has written
/// since the index last caught up, when to catch up, and the catch-up
/// under way. A catch-up takes the rows of the entries behind the mark
/// ([`Run::read`]) and adds them in sorted chunks of [`Run::CHUNK`],
/// one transaction each with the writer's other work between them, so
/// that no audit batch waits for a whole run; the last chunk moves the
/// mark.
struct Trail {
    /// Entries written since the mark or the run under way, as this
    /// thread counts them (at start, the entries the index has not
    /// reached).
    entries: usize,
    /// Subjects those entries name.
    subjects: usize,
    /// Whether the last catch-up failed: the next waits for more work
    /// rather than for idle time, so a lasting fault is not retried (and
    /// logged) five times a second.
    failed: bool,
    /// The catch-up under way.
    run: Option<Run>,
    /// The index rows of the entries this thread wrote since the last
    /// run was read, so that the next run need not read them back.
    kept: Option<Kept>,
}

/// Index rows kept from the entries written: those of every entry from
/// `from` up to `next`, in the order written.
struct Kept {
    from: i64,
    next: i64,
    rows: Vec<(i64, i64)>,
}

/// A catch-up under way: the sorted rows of the entries from the mark
/// up to `through`, and how many are written.
struct Run {
    rows: Vec<(i64, i64)>,
    written: usize,
    through: i64,
}

impl Trail {
    /// Subjects named by the entries behind the index before it catches
    /// up: a search reads at most about this many from the log itself.
    const MOST_SUBJECTS: usize = 262_144;
    /// Entries behind the index before it catches up.
    const MOST_ENTRIES: usize = 4_096;
    /// Time without work after which the index catches up.
    const IDLE: Duration = Duration::from_millis(200);

    fn start(conn: &Connection) -> Result<Trail, StoreError> {
        let behind: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM audit_log WHERE seq >= ({MARK})"),
                [],
                |r| r.get(0),
            )
            .map_err(sqlite_error)?;
        Ok(Trail {
            entries: usize::try_from(behind).unwrap_or(0),
            subjects: 0,
            failed: false,
            run: None,
            kept: None,
        })
    }

    /// Keeps the index rows of a batch just written. A batch that does
    /// not follow the rows kept (entries written by another connection
    /// came between) drops them: the next run reads the entries back.
    fn keep(&mut self, batch: &[Pending]) {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        let (first, next) = (first.stored.seq as i64, last.stored.seq as i64 + 1);
        let mut kept = match self.kept.take() {
            Some(kept) if kept.next == first => kept,
            _ => Kept {
                from: first,
                next: first,
                rows: Vec::new(),
            },
        };
        for p in batch {
            let seq = p.stored.seq as i64;
            kept.rows.extend(
                p.stored
                    .entry
                    .all_subjects()
                    .map(|hash| (subject_key(hash), seq)),
            );
        }
        kept.next = next;
        self.kept = Some(kept);
    }

    /// Whether entries wait for the index to start catching up.
    fn waiting(&self) -> bool {
        self.entries > 0 && !self.failed && self.run.is_none()
    }

    /// Whether a catch-up is under way.
    fn running(&self) -> bool {
        self.run.is_some()
    }

    /// After a batch of `entries` entries naming `subjects` subjects:
    /// starts catching up when the entries behind the index reach either
    /// bound.
    fn after(&mut self, conn: &mut Connection, (entries, subjects): (usize, usize)) {
        self.entries += entries;
        self.subjects += subjects;
        self.failed = false;
        if self.run.is_none()
            && (self.subjects >= Trail::MOST_SUBJECTS || self.entries >= Trail::MOST_ENTRIES)
        {
            self.begin(conn);
        }
    }

    /// Starts a catch-up of every entry behind the mark.
    fn begin(&mut self, conn: &mut Connection) {
        if let Err(err) = self.read(conn) {
            self.fail(err);
        }
    }

    /// Writes the next chunk of the catch-up under way, if any, ending
    /// it early once `arrived` says other work waits.
    fn step(&mut self, conn: &mut Connection, arrived: &mut dyn FnMut() -> bool) {
        if let Err(err) = self.try_step(conn, arrived) {
            self.fail(err);
        }
    }

    /// Brings the index up to the log's end now: the run under way, then
    /// one of everything after it. Returns the mark it reaches.
    fn catch_up(&mut self, conn: &mut Connection) -> Result<u64, StoreError> {
        self.finish(conn)?;
        self.read(conn)?;
        self.finish(conn)?;
        let mark: i64 = conn
            .query_row(MARK, [], |r| r.get(0))
            .map_err(sqlite_error)?;
        Ok(u64::try_from(mark).unwrap_or(0))
    }

    /// Writes the rest of the run under way, if any.
    fn finish(&mut self, conn: &mut Connection) -> Result<(), StoreError> {
        while self.running() {
            self.try_step(conn, &mut || false)?;
        }
        Ok(())
    }

    /// Reads the run of every entry behind the mark: what it counted is
    /// in it.
    fn read(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.run = Run::read(conn, self.kept.take())?;
        self.entries = 0;
        self.subjects = 0;
        Ok(())
    }

    fn try_step(
        &mut self,
        conn: &mut Connection,
        arrived: &mut dyn FnMut() -> bool,
    ) -> Result<(), StoreError> {
        let Some(run) = &mut self.run else {
            return Ok(());
        };
        match run.step(conn, arrived) {
            Ok(done) => {
                if done {
                    self.run = None;
                }
                Ok(())
            }
            Err(err) => {
                self.run = None;
                // the entries stay behind the mark: the next run reads them
                self.entries = self.entries.max(1);
                Err(err)
            }
        }
    }

    fn fail(&mut self, err: StoreError) {
        tracing::warn!(error = %err, "cannot bring the subject index up to date");
        self.failed = true;
    }
}

impl Run {
    /// Most rows written per transaction.
    const CHUNK: usize = 16_384;
    /// Rows a chunk writes before it asks whether other work waits, and
    /// between two asks: a job waits for at most about this many inserts.
    const YIELD_EVERY: usize = 1_024;
    /// Rows one statement adds.
    const GROUP: usize = 64;

    /// The rows of every entry from the mark on, sorted: those `kept`
    /// when it holds exactly the entries from the mark to the log's end,
    /// otherwise read back from the entries' canonical text; `None` when
    /// no entry is behind the mark.
    fn read(conn: &Connection, kept: Option<Kept>) -> Result<Option<Run>, StoreError> {
        // one read transaction: the mark and the entries as of one moment
        let tx = conn.unchecked_transaction().map_err(sqlite_error)?;
        let from: i64 = tx.query_row(MARK, [], |r| r.get(0)).map_err(sqlite_error)?;
        let end: i64 = tx
            .query_row(NEXT_SEQ, [], |r| r.get(0))
            .map_err(sqlite_error)?;
        let read_back = !kept
            .as_ref()
            .is_some_and(|kept| kept.from == from && kept.next == end);
        let (mut rows, through) = match kept {
            Some(kept) if !read_back => (kept.rows, end),
            _ => Run::read_back(&tx, from)?,
        };
        tx.finish().map_err(sqlite_error)?;
        if through == from {
            return Ok(None);
        }
        rows.sort_unstable();
        rows.dedup();
        tracing::debug!(
            from,
            through,
            rows = rows.len(),
            read_back,
            "the subject index catches up"
        );
        Ok(Some(Run {
            rows,
            written: 0,
            through,
        }))
    }

    /// The rows of the entries from `from` on, read back from their
    /// canonical text, and the sequence number after the last of them.
    fn read_back(tx: &Connection, from: i64) -> Result<(Vec<(i64, i64)>, i64), StoreError> {
        let mut rows = Vec::new();
        let mut through = from;
        let mut read = tx
            .prepare("SELECT seq, entry FROM audit_log WHERE seq >= ?1 ORDER BY seq")
            .map_err(sqlite_error)?;
        let mut entries = read.query([from]).map_err(sqlite_error)?;
        while let Some(row) = entries.next().map_err(sqlite_error)? {
            let seq: i64 = row.get(0).map_err(sqlite_error)?;
            let text = row
                .get_ref(1)
                .and_then(|v| Ok(v.as_bytes()?))
                .map_err(sqlite_error)?;
            add_index_rows(&mut rows, seq, text);
            through = seq + 1;
        }
        Ok((rows, through))
    }

    /// Adds the next chunk of rows in one transaction: up to
    /// [`Run::CHUNK`] rows, fewer when `arrived` says (asked every
    /// [`Run::YIELD_EVERY`] rows) that other work waits. The last chunk
    /// moves the mark past the run's entries. Returns whether the run is
    /// done. The commit does not wait for the disk: rows and mark are
    /// lost or kept together, and the entries they come from are
    /// durable; a row added twice (after a crash between chunks) is
    /// added once.
    fn step(
        &mut self,
        conn: &mut Connection,
        arrived: &mut dyn FnMut() -> bool,
    ) -> Result<bool, StoreError> {
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite_error)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let most = self.rows.len().min(self.written + Run::CHUNK);
        let mut end = self.written;
        // an entry archived since the run was read has left: its rows too
        let archived: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(up_to), 0) FROM audit_archives",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite_error)?;
        {
            let mut insert = tx.prepare_cached(&insert_rows(1)).map_err(sqlite_error)?;
            // most rows go in groups, a statement each: fewer statements run
            let mut group = tx
                .prepare_cached(&insert_rows(Run::GROUP))
                .map_err(sqlite_error)?;
            let mut kept = Vec::with_capacity(Run::YIELD_EVERY);
            for part in self.rows[end..most].chunks(Run::YIELD_EVERY) {
                kept.clear();
                kept.extend(part.iter().filter(|(_, seq)| *seq >= archived));
                let mut groups = kept.chunks_exact(Run::GROUP);
                for rows in &mut groups {
                    for (i, (key, seq)) in rows.iter().enumerate() {
                        group
                            .raw_bind_parameter(2 * i + 1, key)
                            .and_then(|()| group.raw_bind_parameter(2 * i + 2, seq))
                            .map_err(sqlite_error)?;
                    }
                    group.raw_execute().map_err(sqlite_error)?;
                }
                for (key, seq) in groups.remainder() {
                    insert.execute(params![key, seq]).map_err(sqlite_error)?;
                }
                end += part.len();
                if end < most && arrived() {
                    break;
                }
            }
        }
        let done = end == self.rows.len();
        if done {
            tx.execute(
                "UPDATE audit_subjects_through SET seq = max(seq, ?1)",
                [self.through],
            )
            .map_err(sqlite_error)?;
        }
        tx.commit().map_err(sqlite_error)?;
        self.written = end;
        Ok(done)
    }
}

/// The statement that adds `n` rows to the subject index.
fn insert_rows(n: usize) -> String {
    let mut sql = String::from("INSERT OR IGNORE INTO audit_subjects (subject_key, seq) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "(?{}, ?{})", 2 * i + 1, 2 * i + 2);
    }
    sql
}

/// Writes the batch (the subject index follows, see [`Trail`]) and
/// forgets the exchanges its end entries end among the open ones; returns
/// how many entries it wrote and how many subjects they name.
fn write(conn: &mut Connection, batch: &mut [Pending]) -> Result<(usize, usize), StoreError> {
    // the commit waits for the disk, whatever the thread wrote before
    durable(conn)?;
    // IMMEDIATE: the write lock from the first statement, so the sequence
    // number read below is still the next one at the insert
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let next: i64 = tx
        .query_row(NEXT_SEQ, [], |r| r.get(0))
        .map_err(sqlite_error)?;
    number(batch, next);
    let mut named = 0usize;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO audit_log (seq, exchange_id, kind, recorded_at, caller, consumer,
                     provider, dataset, purpose, decision, status, subject_hash, entry,
                     entry_sha256)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
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
            named += e.all_subjects().count();
        }
        // ended exchanges leave the open ones with their end entries
        if batch.iter().any(|p| p.ends) {
            let mut forget = tx
                .prepare_cached("DELETE FROM open_exchanges WHERE exchange_id = ?")
                .map_err(sqlite_error)?;
            for p in batch.iter().filter(|p| p.ends) {
                forget
                    .execute([&p.stored.entry.exchange_id])
                    .map_err(sqlite_error)?;
            }
        }
    }
    tx.commit().map_err(sqlite_error)?;
    Ok((batch.len(), named))
}

#[cfg(test)]
mod tests {
    use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};

    use super::*;

    fn named(subjects: &[&str]) -> AuditEntry {
        let e = crate::audit::delivery_naming(subjects);
        assert_eq!(
            (e.decision, e.status, e.kind),
            (Decision::Allow, ExchangeStatus::Ok, EntryKind::Delivery)
        );
        e
    }

    /// An entry naming `n` different subjects.
    fn naming(n: usize) -> AuditEntry {
        let hashes: Vec<String> = (0..n)
            .map(|i| AuditEntry::sha256(i.to_string().as_bytes()))
            .collect();
        named(&hashes.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The subject index's mark.
    fn mark(conn: &Connection) -> i64 {
        count(conn, MARK)
    }

    async fn store_file(dir: &Path) -> Connection {
        let path = dir.join("w.db");
        let store = crate::Store::connect(path.to_str().unwrap()).await.unwrap();
        store.close().await;
        Connection::open(&path).unwrap()
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The index's rows, in key order.
    fn index_rows(conn: &Connection) -> Vec<(i64, i64)> {
        conn.prepare("SELECT subject_key, seq FROM audit_subjects ORDER BY subject_key, seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// An audit batch commits waiting for the disk whatever the
    /// connection did before (bookkeeping and the index do not wait), and
    /// holds only its entries: the index follows from their text.
    #[tokio::test]
    async fn a_batch_commits_durably_and_the_index_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store_file(dir.path()).await;
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        let (a, b) = ("aa".repeat(32), "0b".repeat(32));
        let mut batch = vec![
            Pending::new(named(&[&a, &b]), false).0,
            Pending::new(named(&[&b]), false).0,
        ];
        assert_eq!(write(&mut conn, &mut batch).unwrap(), (2, 3));
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM audit_subjects"), 0);
        assert_eq!(mark(&conn), 0);

        let mut trail = Trail::start(&conn).unwrap();
        assert_eq!(trail.catch_up(&mut conn).unwrap(), 2);
        let rows = index_rows(&conn);
        let (ka, kb) = (subject_key(&a), subject_key(&b));
        // "aa…" is negative as a signed key
        assert_eq!(rows, [(ka, 0), (kb, 0), (kb, 1)]);
        // nothing behind: the mark stays, nothing is added twice
        assert_eq!(trail.catch_up(&mut conn).unwrap(), 2);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM audit_subjects"), 3);
    }

    /// A run takes the rows kept as the entries were written when they
    /// are those of every entry behind the mark, and reads the entries
    /// back when an entry written elsewhere came between.
    #[tokio::test]
    async fn a_run_takes_the_rows_kept_only_when_they_cover_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store_file(dir.path()).await;
        let (a, b, c) = ("aa".repeat(32), "0b".repeat(32), "0c".repeat(32));
        let mut trail = Trail::start(&conn).unwrap();
        let mut batch = vec![
            Pending::new(named(&[&a]), false).0,
            Pending::new(named(&[&b]), false).0,
        ];
        write(&mut conn, &mut batch).unwrap();
        // the rows kept stand in for the entries' own: a run that used
        // them indexes `c` where the entries name `a` and `b`
        let mut kept = vec![
            Pending::new(named(&[&c]), false).0,
            Pending::new(named(&[&c]), false).0,
        ];
        number(&mut kept, 0);
        trail.keep(&kept);
        assert_eq!(trail.catch_up(&mut conn).unwrap(), 2);
        let kc = subject_key(&c);
        assert_eq!(index_rows(&conn), [(kc, 0), (kc, 1)]);

        // one batch kept, then an entry written by another connection
        let mut batch = vec![Pending::new(named(&[&c]), false).0];
        write(&mut conn, &mut batch).unwrap();
        let mut kept = vec![Pending::new(named(&[&a]), false).0];
        number(&mut kept, 2);
        trail.keep(&kept);
        let mut outside = vec![Pending::new(named(&[&b]), false).0];
        write(&mut conn, &mut outside).unwrap();
        assert_eq!(trail.catch_up(&mut conn).unwrap(), 4);
        let kb = subject_key(&b);
        let mut want = vec![(kb, 3), (kc, 0), (kc, 1), (kc, 2)];
        want.sort_unstable();
        assert_eq!(index_rows(&conn), want, "read back from the entries");

        // rows kept that do not start at the mark are not taken
        let mut batch = vec![Pending::new(named(&[&a]), false).0];
        write(&mut conn, &mut batch).unwrap();
        let mut far = vec![Pending::new(named(&[&c]), false).0];
        number(&mut far, 9);
        trail.keep(&far);
        assert_eq!(trail.catch_up(&mut conn).unwrap(), 5);
        assert!(index_rows(&conn).contains(&(subject_key(&a), 4)));
    }

    /// Entries archived while a catch-up is under way leave without
    /// their rows: the run adds rows only for entries still stored.
    #[tokio::test]
    async fn a_catch_up_leaves_out_entries_archived_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store_file(dir.path()).await;
        let (a, b) = ("aa".repeat(32), "0b".repeat(32));
        let mut batch = vec![
            Pending::new(named(&[&a]), false).0,
            Pending::new(named(&[&b]), false).0,
        ];
        write(&mut conn, &mut batch).unwrap();
        let mut trail = Trail::start(&conn).unwrap();
        trail.begin(&mut conn);
        assert!(trail.running());
        conn.execute(
            "INSERT INTO audit_archives (up_to, from_seq, checkpoint, file_sha256, archived_at) \
             VALUES (1, 0, 1, 'x', 't')",
            [],
        )
        .unwrap();
        trail.finish(&mut conn).unwrap();
        assert_eq!(index_rows(&conn), [(subject_key(&b), 1)]);
        assert_eq!(count(&conn, MARK), 2);
    }

    /// Migration 0021 moves the rows waiting in the recent level into the
    /// index, and starts the mark past everything stored (all of it was
    /// indexed when written) or archived.
    #[test]
    fn the_migration_folds_the_recent_level_and_starts_past_the_log() {
        for (stored, archived, starts) in
            [(Some(7), None, 8), (Some(7), Some(20), 20), (None, None, 0)]
        {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch(
                "CREATE TABLE audit_log (seq INTEGER PRIMARY KEY);
                 CREATE TABLE audit_archives (up_to INTEGER);
                 CREATE TABLE audit_subjects (subject_key INTEGER NOT NULL,
                     seq INTEGER NOT NULL, PRIMARY KEY (subject_key, seq)) WITHOUT ROWID;
                 CREATE TABLE audit_subjects_recent (subject_key INTEGER NOT NULL,
                     seq INTEGER NOT NULL, PRIMARY KEY (subject_key, seq)) WITHOUT ROWID;
                 INSERT INTO audit_subjects VALUES (1, 0), (5, 2);
                 INSERT INTO audit_subjects_recent VALUES (-3, 1), (9, 2);",
            )
            .unwrap();
            if let Some(seq) = stored {
                conn.execute("INSERT INTO audit_log (seq) VALUES (?1)", [seq])
                    .unwrap();
            }
            if let Some(up_to) = archived {
                conn.execute("INSERT INTO audit_archives (up_to) VALUES (?1)", [up_to])
                    .unwrap();
            }
            conn.execute_batch(include_str!(
                "../migrations/sqlite/0021_audit_subjects_trailing.sql"
            ))
            .unwrap();
            assert_eq!(index_rows(&conn), [(-3, 1), (1, 0), (5, 2), (9, 2)]);
            assert_eq!(mark(&conn), starts);
            let recent = count(
                &conn,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'audit_subjects_recent'",
            );
            assert_eq!(recent, 0);
        }
    }

    /// The writer starts catching up when the entries behind the index
    /// name enough subjects or are enough entries, not before, and adds
    /// their rows a chunk at a time: the mark moves with the last chunk.
    #[tokio::test]
    async fn the_index_catches_up_at_either_bound_a_chunk_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store_file(dir.path()).await;
        let mut trail = Trail::start(&conn).unwrap();
        assert!(!trail.waiting() && !trail.running());
        // more subjects than one chunk holds
        let many = Run::CHUNK + 10;
        let mut batch = vec![Pending::new(naming(many), false).0];
        let written = write(&mut conn, &mut batch).unwrap();
        trail.after(&mut conn, written);
        assert!(trail.waiting() && !trail.running());
        // as if the entries behind named one subject short of the bound
        trail.subjects = Trail::MOST_SUBJECTS - 2;
        trail.after(&mut conn, (0, 1));
        assert!(!trail.running());
        trail.after(&mut conn, (0, 1));
        assert!(trail.running() && !trail.waiting());
        trail.step(&mut conn, &mut || false);
        let rows = "SELECT COUNT(*) FROM audit_subjects";
        assert_eq!((count(&conn, rows), mark(&conn)), (Run::CHUNK as i64, 0));
        trail.step(&mut conn, &mut || false);
        assert!(!trail.running());
        assert_eq!((count(&conn, rows), mark(&conn)), (many as i64, 1));
        // and by entries
        let mut batch = vec![Pending::new(named(&[]), false).0];
        let written = write(&mut conn, &mut batch).unwrap();
        trail.entries = Trail::MOST_ENTRIES - 1;
        trail.after(&mut conn, written);
        trail.step(&mut conn, &mut || false);
        assert_eq!(mark(&conn), 2);
        // a store opened with entries behind its index waits to catch up
        let mut batch = vec![Pending::new(named(&["dd"]), false).0];
        write(&mut conn, &mut batch).unwrap();
        assert!(Trail::start(&conn).unwrap().waiting());
    }

    /// A chunk ends early, after a whole number of its steps, when other
    /// work arrives; the mark moves only with the run's last row.
    #[tokio::test]
    async fn a_chunk_gives_way_to_work_that_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store_file(dir.path()).await;
        let rows = "SELECT COUNT(*) FROM audit_subjects";
        let mut trail = Trail::start(&conn).unwrap();
        let many = 3 * Run::YIELD_EVERY + 5;
        let mut batch = vec![Pending::new(naming(many), false).0];
        let written = write(&mut conn, &mut batch).unwrap();
        trail.after(&mut conn, written);
        trail.begin(&mut conn);
        assert!(trail.running());
        // work waits from the start: one step of rows, then the commit
        let mut asked = 0;
        trail.step(&mut conn, &mut || {
            asked += 1;
            true
        });
        assert_eq!(asked, 1);
        assert_eq!(count(&conn, rows), Run::YIELD_EVERY as i64);
        assert!(trail.running());
        assert_eq!(mark(&conn), 0);
        // work arrives at the second ask
        let mut asked = 0;
        trail.step(&mut conn, &mut || {
            asked += 1;
            asked == 2
        });
        assert_eq!(count(&conn, rows), 3 * Run::YIELD_EVERY as i64);
        assert_eq!(mark(&conn), 0);
        // the rest: the last rows are never followed by an ask
        trail.step(&mut conn, &mut || panic!("asked after the last rows"));
        assert!(!trail.running());
        assert_eq!((count(&conn, rows), mark(&conn)), (many as i64, 1));
    }

    /// What the writer commits reaches the database file without any
    /// other work and far below SQLite's own threshold (1,000 pages of
    /// log): the checkpointer copies it.
    #[tokio::test]
    async fn the_checkpointer_copies_the_log_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        // held open, so that no connection's close checkpoints
        let conn = store_file(dir.path()).await;
        let path = dir.path().join("w.db");
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        let writer = SqliteWriter::start(&path).unwrap();
        // about 130 KB of entry: some 35 pages
        let many = 2_000;
        let (_, written) = writer
            .write(vec![Pending::new(naming(many), false).0])
            .await;
        written.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size() < before + 100_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes (before: {before})",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM audit_log"), 1);
    }
}
