//! The audit log's append path (group commit) and read path.
//!
//! Appends go through one task per broker process that gathers waiting
//! entries into a batch and writes them in one transaction, so the durable
//! commit is paid once per batch, not once per entry. Sequence numbers
//! (leaf indices) are assigned inside that transaction under a lock —
//! SQLite's write lock, or a PostgreSQL advisory lock shared by every
//! replica — so the log stays gap-free and totally ordered. On PostgreSQL
//! the whole batch is one call of `jembatan_audit_append` (one round trip).

use jembatan_core::AuditEntry;
use sqlx::Row;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::{Backend, Store, StoreError};

/// Most entries written in one transaction.
const MAX_BATCH: usize = 1024;

/// An entry as stored, with its place on the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub seq: u64,
    pub entry: AuditEntry,
    pub canonical: Vec<u8>,
    pub entry_sha256: String,
}

/// An entry waiting for the appender: serialized and hashed by the caller
/// (so that work runs on every core, not in the one appender task), its
/// `seq` assigned when its batch is written.
pub(crate) struct Pending {
    pub(crate) stored: StoredEntry,
    /// The entry ends its exchange: the exchange's row among the open
    /// ones ([`Store::open_exchange`]) goes in the same commit.
    pub(crate) ends: bool,
    reply: oneshot::Sender<Result<StoredEntry, Arc<StoreError>>>,
}

/// What a pending entry's appender waits on.
pub(crate) type Reply = oneshot::Receiver<Result<StoredEntry, Arc<StoreError>>>;

impl Pending {
    /// `entry` serialized and hashed, to be numbered when written;
    /// `ends`: an exchange's end, written with its exchange forgotten
    /// among the open ones.
    pub(crate) fn new(entry: AuditEntry, ends: bool) -> (Pending, Reply) {
        let (reply, rx) = oneshot::channel();
        let canonical = entry.canonical_bytes();
        let stored = StoredEntry {
            seq: 0,
            entry_sha256: AuditEntry::sha256(&canonical),
            entry,
            canonical,
        };
        (
            Pending {
                stored,
                ends,
                reply,
            },
            rx,
        )
    }
}

/// Handle to the audit log's appender; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    tx: mpsc::Sender<Pending>,
    appended: Arc<watch::Sender<u64>>,
}

impl AuditLog {
    /// Starts the appender task for `store`.
    pub fn start(store: Store) -> AuditLog {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let appended = Arc::new(watch::Sender::new(0));
        if let (Backend::Sqlite, Err(err)) = (store.backend(), store.sqlite_writer()) {
            // every append is refused, saying why
            tracing::error!(error = %err, "the audit log's writer did not start");
        }
        tokio::spawn(run_appender(store.clone(), rx, appended.clone()));
        AuditLog {
            store,
            tx,
            appended,
        }
    }

    /// Watches the log size as of this process's latest committed append
    /// (0 before the first one); other replicas' appends are not seen here.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Appends an entry and returns once it is durably committed, with its
    /// sequence number. An error means the entry is not on the log.
    pub async fn append(&self, entry: AuditEntry) -> Result<StoredEntry, StoreError> {
        self.append_as(entry, false).await
    }

    /// Appends an exchange's end entry and, in the same commit, forgets
    /// the exchange among the open ones ([`Store::open_exchange`]): once
    /// this returns `Ok` the entry is durable and the exchange no longer
    /// counts against its agency's limit; after an error neither is so.
    pub async fn append_end(&self, entry: AuditEntry) -> Result<StoredEntry, StoreError> {
        self.append_as(entry, true).await
    }

    async fn append_as(&self, entry: AuditEntry, ends: bool) -> Result<StoredEntry, StoreError> {
        let started = std::time::Instant::now();
        let metrics = jembatan_telemetry::metrics();
        metrics.audit_queued();
        let result = self.append_queued(Pending::new(entry, ends)).await;
        match &result {
            Ok(stored) => metrics.audit_committed(&stored.entry, started.elapsed()),
            Err(_) => metrics.audit_failed(),
        }
        result
    }

    async fn append_queued(
        &self,
        (pending, rx): (Pending, Reply),
    ) -> Result<StoredEntry, StoreError> {
        self.tx
            .send(pending)
            .await
            .map_err(|_| StoreError::AppenderStopped)?;
        rx.await
            .map_err(|_| StoreError::AppenderStopped)?
            .map_err(StoreError::AuditAppend)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks that the log can be written, committing nothing: a probe
    /// row is inserted in a write transaction that is then rolled back, so
    /// whatever would refuse an entry (a read-only or full database, a
    /// lost connection, a lock held too long) refuses the probe.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        sqlx::query(
            "INSERT INTO audit_log (seq, exchange_id, kind, recorded_at, caller, decision, status, entry, entry_sha256)
             VALUES ($1, 'probe', 'probe', '', '', '', '', $2, '')",
        )
        .bind(-1i64)
        .bind(Vec::<u8>::new())
        .execute(&mut *tx)
        .await?;
        tx.rollback().await?;
        Ok(())
    }

    /// Entries with `seq >= from`, at most `limit`, in order.
    pub async fn entries(&self, from: u64, limit: u64) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, entry, entry_sha256 FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(to_i64(from))
        .bind(to_i64(limit))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Every entry of one exchange, in order.
    pub async fn exchange(&self, exchange_id: &str) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, entry, entry_sha256 FROM audit_log WHERE exchange_id = $1 ORDER BY seq",
        )
        .bind(exchange_id)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Number of entries on the log.
    pub async fn size(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log")
            .fetch_one(self.store.pool())
            .await?
            .try_get(0)?;
        Ok(n.max(0) as u64)
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<StoredEntry, StoreError> {
    let seq: i64 = row.try_get(0)?;
    let canonical: Vec<u8> = row.try_get(1)?;
    let entry_sha256: String = row.try_get(2)?;
    let entry = AuditEntry::from_canonical(&canonical).map_err(|e| StoreError::Corrupt {
        what: format!("audit entry {seq}"),
        message: e.to_string(),
    })?;
    Ok(StoredEntry {
        seq: seq.max(0) as u64,
        entry,
        canonical,
        entry_sha256,
    })
}

/// Batches written at once. On PostgreSQL a second batch travels and is
/// parsed while the first holds the appenders' lock and commits, then
/// waits for the lock: numbering stays gap-free and in lock order. SQLite
/// has one writer at a time in one process, so one batch.
fn batches_in_flight(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    }
}

async fn run_appender(
    store: Store,
    mut rx: mpsc::Receiver<Pending>,
    appended: Arc<watch::Sender<u64>>,
) {
    let limit = batches_in_flight(store.backend());
    let mut writing = tokio::task::JoinSet::new();
    loop {
        // grows to what arrives; nothing is allocated on turns that only
        // collect a finished write
        let mut batch = Vec::new();
        tokio::select! {
            received = rx.recv_many(&mut batch, MAX_BATCH), if writing.len() < limit => {
                if received == 0 {
                    break;
                }
                let (store, appended) = (store.clone(), appended.clone());
                writing.spawn(async move { write_and_reply(&store, batch, &appended).await });
            }
            Some(_) = writing.join_next(), if !writing.is_empty() => {}
        }
    }
    while writing.join_next().await.is_some() {}
}

/// Writes one batch and answers its appenders.
/// On PostgreSQL one call of `jembatan_audit_append`; on SQLite the
/// file's writer thread ([`Store::sqlite_writer`]), or the reason there
/// is none (a store in memory, a writer that did not start).
async fn write_and_reply(store: &Store, mut batch: Vec<Pending>, appended: &watch::Sender<u64>) {
    let written = match store.backend() {
        Backend::Postgres => write_batch_pg(store, &mut batch).await,
        Backend::Sqlite => match store.sqlite_writer() {
            Ok(writer) => {
                let (back, written) = writer.write(batch).await;
                batch = back;
                written
            }
            Err(err) => Err(err),
        },
    };
    match written {
        Ok(()) => {
            if let Some(last) = batch.last() {
                let size = last.stored.seq + 1;
                appended.send_if_modified(|n| {
                    let grew = size > *n;
                    *n = (*n).max(size);
                    grew
                });
            }
            for pending in batch {
                let _ = pending.reply.send(Ok(pending.stored));
            }
        }
        Err(err) => {
            tracing::error!(error = %err, entries = batch.len(), "audit append failed");
            let err = Arc::new(err);
            for pending in batch {
                let _ = pending.reply.send(Err(Arc::clone(&err)));
            }
        }
    }
}

/// A subject's key in the subject index: the first 8 bytes of its keyed
/// hash, big-endian, as a signed 64-bit integer. Each of the first 16
/// characters is read as a lowercase hex digit, one that is not counting
/// as `f` and a missing one as `0`, so that every text has a key and the
/// migration that keyed the index (0020) computes the same one in SQL.
/// Different hashes can share a key: a search by hash keeps only the
/// entries that name the hash itself.
pub fn subject_key(hash: &str) -> i64 {
    let mut chars = hash.chars();
    let mut key = 0u64;
    for _ in 0..16 {
        let digit = match chars.next() {
            None => 0,
            Some(c @ '0'..='9') => c as u64 - '0' as u64,
            Some(c @ 'a'..='f') => c as u64 - 'a' as u64 + 10,
            Some(_) => 15,
        };
        key = key << 4 | digit;
    }
    key as i64
}

/// The subject index keys of every subject `entry` names, in key order,
/// each once (hashes sharing a key are one row of the index).
pub(crate) fn subject_keys(entry: &AuditEntry) -> Vec<i64> {
    let mut keys: Vec<i64> = entry.all_subjects().map(subject_key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The subjects an entry's canonical text names: the lookup key's hash
/// and `subjects` (see `AuditEntry::all_subjects`); every other field is
/// skipped unread.
#[derive(serde::Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    subject_hash: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    subjects: Vec<std::borrow::Cow<'a, str>>,
}

/// Adds to `rows` the subject index rows `(subject_key, seq)` of entry
/// `seq`, read from its canonical text `text`, in the entry's order (a
/// key may come twice). An entry that is not JSON has none: it is logged
/// and skipped (`audit verify` names it).
pub(crate) fn add_index_rows(rows: &mut Vec<(i64, i64)>, seq: i64, text: &[u8]) {
    match serde_json::from_slice::<Named<'_>>(text) {
        Ok(named) => rows.extend(
            named
                .subject_hash
                .iter()
                .chain(&named.subjects)
                .map(|hash| (subject_key(hash), seq)),
        ),
        Err(err) => tracing::warn!(seq, error = %err, "an audit entry is not JSON"),
    }
}

/// A v2 delivery entry naming `subjects`, for the store's tests.
#[cfg(test)]
pub(crate) fn delivery_naming(subjects: &[&str]) -> AuditEntry {
    let mut e: AuditEntry = serde_json::from_str(
        r#"{"v":2,"kind":"delivery","exchange_id":"x","time":"2026-01-01T00:00:00.000000Z","operation":"subscribe","caller":"agency:dinsos","consumer":"dinsos","provider":"disdukcapil","dataset":"disdukcapil.penduduk","purpose":"bansos","fields":["nik"],"filter":null,"subject_hash":null,"limit":null,"agreement_id":"a","agreement_terms_sha256":null,"decision":"allow","reasons":[],"status":"ok","rows":0,"bytes":0,"payload_sha256":null,"duration_ms":null,"error":null,"trace_id":null}"#,
    )
    .expect("the fixture is an entry");
    e.subjects = subjects.iter().map(|s| (*s).to_owned()).collect();
    e
}

/// Numbers the batch's entries consecutively from `next`.
pub(crate) fn number(batch: &mut [Pending], next: i64) {
    for (i, pending) in batch.iter_mut().enumerate() {
        pending.stored.seq = (next + i as i64) as u64;
    }
}

/// One audit_log row as `jembatan_audit_append` reads it.
#[derive(serde::Serialize)]
struct PgRow<'a> {
    exchange_id: &'a str,
    kind: &'a str,
    recorded_at: &'a str,
    caller: &'a str,
    consumer: Option<&'a str>,
    provider: Option<&'a str>,
    dataset: Option<&'a str>,
    purpose: Option<&'a str>,
    decision: &'a str,
    status: &'a str,
    subject_hash: Option<&'a str>,
    /// The canonical entry bytes in base64.
    entry: String,
    entry_sha256: &'a str,
}

/// One row of the subject index: the entry's place in its batch and the
/// key of a subject it names.
#[derive(serde::Serialize)]
struct PgSubject {
    i: usize,
    k: i64,
}

/// PostgreSQL: the whole batch in one statement and one round trip, through
/// `jembatan_audit_append` (migrations 0004, 0006), which takes the
/// appenders' advisory lock, numbers the entries after the latest one and
/// inserts them, with the subject index (migration 0008) filled in the same
/// statement; its transaction has committed when it returns.
async fn write_batch_pg(store: &Store, batch: &mut [Pending]) -> Result<(), StoreError> {
    use base64::Engine;
    let rows: Vec<PgRow<'_>> = batch
        .iter()
        .map(|Pending { stored: s, .. }| {
            let e = &s.entry;
            PgRow {
                exchange_id: &e.exchange_id,
                kind: e.kind.as_str(),
                recorded_at: &e.time,
                caller: &e.caller,
                consumer: e.consumer.as_deref(),
                provider: e.provider.as_deref(),
                dataset: e.dataset.as_deref(),
                purpose: e.purpose.as_deref(),
                decision: e.decision.as_str(),
                status: e.status.as_str(),
                subject_hash: e.subject_hash.as_deref(),
                entry: base64::engine::general_purpose::STANDARD.encode(&s.canonical),
                entry_sha256: &s.entry_sha256,
            }
        })
        .collect();
    let subjects: Vec<PgSubject> = batch
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            subject_keys(&p.stored.entry)
                .into_iter()
                .map(move |k| PgSubject { i, k })
        })
        .collect();
    let ended: Vec<&str> = batch
        .iter()
        .filter(|p| p.ends)
        .map(|p| p.stored.entry.exchange_id.as_str())
        .collect();
    // Plain data with string keys: serializing cannot fail.
    let json = serde_json::to_string(&rows).unwrap_or_default();
    let subjects = serde_json::to_string(&subjects).unwrap_or_default();
    let ended = serde_json::to_string(&ended).unwrap_or_default();
    // `appended` runs once (a CTE with a volatile function is evaluated
    // once); the index rows go in with the entries, and the ended
    // exchanges leave the open ones, in one transaction.
    let base: i64 = sqlx::query(
        "WITH appended AS (SELECT jembatan_audit_append($1::jsonb) AS base),
              indexed AS (
                  INSERT INTO audit_subjects (seq, subject_key)
                  SELECT a.base + s.i, s.k
                  FROM appended a, jsonb_to_recordset($2::jsonb) AS s(i bigint, k bigint)),
              forgotten AS (
                  DELETE FROM open_exchanges
                  WHERE exchange_id IN (SELECT jsonb_array_elements_text($3::jsonb)))
         SELECT base FROM appended",
    )
    .bind(json)
    .bind(subjects)
    .bind(ended)
    .fetch_one(store.pool())
    .await?
    .try_get(0)?;
    number(batch, base);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::subject_key;

    #[test]
    fn a_subject_key_is_the_hash_first_eight_bytes() {
        let hash = format!("{}{}", "8000000000000001", "ab".repeat(24));
        assert_eq!(subject_key(&hash), i64::MIN + 1);
        assert_eq!(subject_key(&"0f".repeat(32)), 0x0f0f_0f0f_0f0f_0f0f);
        // every text has a key: a missing digit is 0, a foreign one f
        assert_eq!(subject_key("ab"), 0xab00_0000_0000_0000_u64 as i64);
        assert_eq!(subject_key(""), 0);
        assert_eq!(subject_key("AB"), -1_i64 << 56);
        assert_eq!(subject_key("é1"), 0xf100_0000_0000_0000_u64 as i64);
    }

    /// The migration that keyed the index computes, in SQL, the key the
    /// store computes for the rows it writes.
    #[test]
    fn the_migration_keys_rows_as_the_store_does() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE audit_archives (up_to INTEGER);
             CREATE TABLE audit_subjects (subject_hash TEXT NOT NULL, seq INTEGER NOT NULL,
                 PRIMARY KEY (subject_hash, seq));
             CREATE TABLE audit_subjects_recent (subject_hash TEXT NOT NULL,
                 seq INTEGER NOT NULL, PRIMARY KEY (subject_hash, seq)) WITHOUT ROWID;",
        )
        .unwrap();
        let texts = [
            "ffffffffffffffff".repeat(4),
            "0123456789abcdef".repeat(4),
            "7fffffffffffffff0000".to_owned(),
            "8000000000000000".to_owned(),
            "ab".to_owned(),
            String::new(),
            "AB12".to_owned(),
            "é1x".to_owned(),
        ];
        for (seq, text) in texts.iter().enumerate() {
            let table = if seq % 2 == 0 {
                "audit_subjects"
            } else {
                "audit_subjects_recent"
            };
            conn.execute(
                &format!("INSERT INTO {table} (subject_hash, seq) VALUES (?1, ?2)"),
                rusqlite::params![text, seq as i64],
            )
            .unwrap();
        }
        conn.execute_batch(include_str!(
            "../migrations/sqlite/0020_audit_subject_keys.sql"
        ))
        .unwrap();
        for (seq, text) in texts.iter().enumerate() {
            let key: i64 = conn
                .query_row(
                    "SELECT subject_key FROM audit_subjects WHERE seq = ?1",
                    [seq as i64],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(key, subject_key(text), "{text:?}");
        }
    }
}
