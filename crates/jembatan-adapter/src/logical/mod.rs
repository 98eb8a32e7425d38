//! PostgreSQL logical replication as a change source: the start-up checks
//! of a slot and its publication, and the reader that consumes a slot
//! through the SQL interface into the adapter's journal, advancing the
//! slot only once the changes are durable there.

pub(crate) mod journal;
pub(crate) mod pgoutput;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::config::LogicalConfig;
use crate::sql::Dialect;
pub(crate) use journal::JournalKey;
use journal::{Committed, Journal};
use pgoutput::{Datum, Message};

/// Most changes one peek of the slot asks for (whole transactions are
/// returned, so a peek may hold more).
const PEEK_CHANGES: i32 = 10_000;
/// How long the reader waits before peeking again when the slot had
/// nothing new.
const READ_INTERVAL: Duration = Duration::from_millis(20);
/// The longest wait after a failed peek.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the journal is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH: i64 = 946_684_800;

/// What a slot's changes are journaled as: a dataset on one table, and
/// its key column.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) dataset: String,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) key: String,
    /// The key is an integer column (else its text form is kept).
    pub(crate) integer: bool,
}

/// One slot consumed into one journal: what `Changes` reads.
#[derive(Debug)]
pub(crate) struct Feed {
    pub(crate) slot: String,
    publication: String,
    pub(crate) journal: Journal,
    retain: Duration,
    /// Every transaction committed at or before this LSN is journaled
    /// (and visible to new statements).
    consumed: AtomicU64,
    /// Changes committed at or before this LSN are no longer kept.
    pruned: AtomicU64,
    /// Every transaction whose commit is in the WAL before this position
    /// is journaled (or touched no dataset of the slot).
    scanned: AtomicU64,
    targets: std::sync::Mutex<Vec<Target>>,
}

impl Feed {
    /// Opens the journal for a slot; the reader starts with [`Feed::start`].
    pub(crate) async fn open(
        config: &LogicalConfig,
        journal: &std::path::Path,
        retain: Duration,
    ) -> Result<Feed, crate::error::AdapterError> {
        Ok(Feed {
            slot: config.slot.clone(),
            publication: config.publication.clone(),
            journal: Journal::open(journal).await?,
            retain,
            consumed: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            targets: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Adds a dataset this slot's reader journals.
    pub(crate) fn add_target(&self, target: Target) {
        if let Ok(mut targets) = self.targets.lock() {
            targets.push(target);
        }
    }

    fn targets(&self) -> Vec<Target> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The LSN up to which every commit is journaled.
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Acquire)
    }

    /// The LSN up to which changes are no longer kept.
    pub(crate) fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::Acquire)
    }

    /// Waits until every transaction committed before the database's
    /// current WAL position is journaled: what a statement that just ran
    /// saw, the journal then holds.
    pub(crate) async fn caught_up(&self, pool: &PgPool) -> Result<(), CatchUpError> {
        let now: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(pool)
            .await?;
        let now = parse_lsn(&now).unwrap_or(u64::MAX);
        let start = Instant::now();
        while self.scanned.load(Ordering::Acquire) < now {
            if start.elapsed() > CATCH_UP_WITHIN {
                return Err(CatchUpError::Behind(CATCH_UP_WITHIN));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Reads the slot's mark from the journal (starting a new journal at
    /// the slot's confirmed position), then spawns the reader. The reader
    /// stops when the handle is dropped.
    pub(crate) async fn start(
        self: &Arc<Self>,
        pool: PgPool,
    ) -> Result<ReaderHandle, crate::error::AdapterError> {
        let err = |source| crate::error::AdapterError::Database {
            context: format!("reading replication slot {:?}", self.slot),
            source,
        };
        let confirmed: Option<String> = sqlx::query_scalar(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_optional(&pool)
        .await
        .map_err(err)?
        .flatten();
        let confirmed = confirmed.as_deref().and_then(parse_lsn).unwrap_or_default();
        let mark = self
            .journal
            .mark(&self.slot, confirmed)
            .await
            .map_err(|source| crate::error::AdapterError::Database {
                context: format!("opening the change journal of slot {:?}", self.slot),
                source,
            })?;
        self.consumed.store(mark.consumed, Ordering::Release);
        self.pruned.store(mark.pruned, Ordering::Release);
        let feed = Arc::clone(self);
        let task = tokio::spawn(async move { feed.run(pool).await });
        Ok(ReaderHandle(task))
    }

    async fn run(self: Arc<Self>, pool: PgPool) {
        let targets = self.targets();
        let datasets: Vec<String> = targets.iter().map(|t| t.dataset.clone()).collect();
        let mut relations = HashMap::new();
        let mut backoff = Duration::ZERO;
        let mut last_prune: Option<Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let cutoff = chrono::Utc::now().timestamp()
                    - i64::try_from(self.retain.as_secs()).unwrap_or(i64::MAX);
                match self.journal.prune(&self.slot, &datasets, cutoff).await {
                    Ok(pruned) => {
                        self.pruned.fetch_max(pruned, Ordering::AcqRel);
                    }
                    Err(e) => {
                        tracing::warn!(slot = %self.slot, error = %e, "cannot prune the change journal")
                    }
                }
            }
            match self.step(&pool, &targets, &mut relations).await {
                Ok(true) => backoff = Duration::ZERO,
                Ok(false) => {
                    backoff = Duration::ZERO;
                    tokio::time::sleep(READ_INTERVAL).await;
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                    tracing::warn!(
                        slot = %self.slot,
                        error = %e,
                        retry_in = ?backoff,
                        "cannot read the replication slot"
                    );
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Peeks at the slot, journals the committed transactions and
    /// advances the slot past them; `false` when the slot had nothing.
    async fn step(
        &self,
        pool: &PgPool,
        targets: &[Target],
        relations: &mut HashMap<u32, Vec<(usize, usize)>>,
    ) -> Result<bool, StepError> {
        // everything committed before this point is in what the peek reads
        let flushed: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(pool)
            .await?;
        let flushed = parse_lsn(&flushed).unwrap_or_default();
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
             'proto_version', '1', 'publication_names', $3)",
        )
        .bind(&self.slot)
        .bind(PEEK_CHANGES)
        .bind(Dialect::Postgres.quote_ident(&self.publication))
        .fetch_all(pool)
        .await?;
        let Peeked { done, xids, last } =
            fold(&self.slot, &rows, targets, relations, self.consumed())?;
        let complete = rows.len() < PEEK_CHANGES as usize;
        let Some((commit_lsn, end_lsn)) = last else {
            if complete {
                self.scanned.fetch_max(flushed, Ordering::AcqRel);
            }
            return Ok(false);
        };
        // a commit is decoded once its record is flushed, a moment before
        // other sessions see it: the rows are read only once they would
        wait_visible(pool, &xids).await?;
        self.journal
            .record(&self.slot, &done, commit_lsn, end_lsn)
            .await?;
        self.consumed.fetch_max(commit_lsn, Ordering::AcqRel);
        sqlx::query("SELECT 1 FROM pg_replication_slot_advance($1, $2::pg_lsn)")
            .bind(&self.slot)
            .bind(format_lsn(end_lsn))
            .execute(pool)
            .await?;
        if complete {
            self.scanned.fetch_max(flushed, Ordering::AcqRel);
        }
        if !done.is_empty() {
            tracing::debug!(slot = %self.slot, transactions = done.len(), lsn = commit_lsn, "changes journaled");
        }
        Ok(true)
    }
}

/// What one peek held: the transactions committed after the journal's
/// consumed mark that changed a dataset of the slot, their transaction
/// ids, and the last commit's `(LSN, end LSN)`.
#[derive(Debug, Default)]
pub(crate) struct Peeked {
    pub(crate) done: Vec<Committed>,
    pub(crate) xids: Vec<u32>,
    pub(crate) last: Option<(u64, u64)>,
}

/// Decodes a peek's messages into each committed transaction's net effect
/// per key of each target: an insert's or update's new key (upserted), a
/// delete's old key, an update that changes the key deleting the old one;
/// the last change of a key in a transaction wins. `relations` keeps, per
/// relation id, the targets on it and where their key column is.
pub(crate) fn fold(
    slot: &str,
    rows: &[Vec<u8>],
    targets: &[Target],
    relations: &mut HashMap<u32, Vec<(usize, usize)>>,
    consumed: u64,
) -> Result<Peeked, StepError> {
    let mut done = Vec::new();
    let mut xids = Vec::new();
    let mut open: Option<(u32, Committed)> = None;
    let mut last: Option<(u64, u64)> = None;
    for data in rows {
        match pgoutput::decode(data)? {
            Message::Begin { xid } => open = Some((xid, Committed::default())),
            Message::Relation(r) => {
                let mut found = Vec::new();
                for (i, t) in targets.iter().enumerate() {
                    if t.schema != r.namespace || t.table != r.name {
                        continue;
                    }
                    match r.columns.iter().position(|c| *c == t.key) {
                        Some(at) => found.push((i, at)),
                        // the table changed under the adapter: say so
                        // rather than follow it without its key
                        None => tracing::error!(
                            slot = %slot,
                            dataset = %t.dataset,
                            key = %t.key,
                            "the table no longer has the dataset's key column; its changes are not journaled"
                        ),
                    }
                }
                relations.insert(r.id, found);
            }
            Message::Insert { relation, new } => {
                let tx = &mut open.as_mut().ok_or(StepError::Order)?.1;
                for &(t, at) in relations.get(&relation).into_iter().flatten() {
                    if let Some(key) = key_of(&targets[t], &new, at)? {
                        tx.keys.insert((targets[t].dataset.clone(), key), false);
                    }
                }
            }
            Message::Update { relation, old, new } => {
                let tx = &mut open.as_mut().ok_or(StepError::Order)?.1;
                for &(t, at) in relations.get(&relation).into_iter().flatten() {
                    let before = match &old {
                        Some(old) => key_of(&targets[t], old, at)?,
                        None => None,
                    };
                    let after = key_of(&targets[t], &new, at)?;
                    let dataset = &targets[t].dataset;
                    match (before, after) {
                        (Some(b), Some(a)) if b != a => {
                            tx.keys.insert((dataset.clone(), b), true);
                            tx.keys.insert((dataset.clone(), a), false);
                        }
                        (_, Some(a)) => {
                            tx.keys.insert((dataset.clone(), a), false);
                        }
                        // the new key unchanged and TOASTed: the old one names the row
                        (Some(b), None) => {
                            tx.keys.insert((dataset.clone(), b), false);
                        }
                        (None, None) => tracing::warn!(
                            slot = %slot,
                            dataset = %dataset,
                            "an update without a readable key was skipped"
                        ),
                    }
                }
            }
            Message::Delete { relation, old } => {
                let tx = &mut open.as_mut().ok_or(StepError::Order)?.1;
                for &(t, at) in relations.get(&relation).into_iter().flatten() {
                    match key_of(&targets[t], &old, at)? {
                        Some(key) => {
                            tx.keys.insert((targets[t].dataset.clone(), key), true);
                        }
                        None => tracing::warn!(
                            slot = %slot,
                            dataset = %targets[t].dataset,
                            "a delete without its key was skipped (is the key in the replica identity?)"
                        ),
                    }
                }
            }
            Message::Truncate {
                relations: truncated,
            } => {
                let tx = &mut open.as_mut().ok_or(StepError::Order)?.1;
                for id in truncated {
                    for &(t, _) in relations.get(&id).into_iter().flatten() {
                        tx.truncated.insert(targets[t].dataset.clone());
                    }
                }
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                time,
            } => {
                let (xid, mut tx) = open.take().ok_or(StepError::Order)?;
                last = Some((commit_lsn, end_lsn));
                if commit_lsn > consumed && !(tx.keys.is_empty() && tx.truncated.is_empty()) {
                    tx.lsn = commit_lsn;
                    tx.time = time.div_euclid(1_000_000) + PG_EPOCH;
                    done.push(tx);
                    xids.push(xid);
                }
            }
            Message::Other(_) => {}
        }
    }
    Ok(Peeked { done, xids, last })
}

/// Why one step of the reader failed; the reader tries again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Decode(#[from] pgoutput::DecodeError),
    #[error("a change outside a transaction")]
    Order,
    #[error("a key that is not an integer in integer key column {0:?}")]
    Key(String),
    #[error("transactions did not become visible within {0:?}")]
    NotVisible(Duration),
}

/// The key of a target in a tuple: `None` when it is null or unchanged
/// (not sent).
fn key_of(
    target: &Target,
    tuple: &[Datum<'_>],
    at: usize,
) -> Result<Option<JournalKey>, StepError> {
    match tuple.get(at) {
        Some(Datum::Text(bytes)) => {
            let text = String::from_utf8_lossy(bytes);
            if target.integer {
                text.parse::<i64>()
                    .map(|i| Some(JournalKey::Int(i)))
                    .map_err(|_| StepError::Key(target.key.clone()))
            } else {
                Ok(Some(JournalKey::Text(text.into_owned())))
            }
        }
        _ => Ok(None),
    }
}

/// How long a snapshot page waits for the journal to catch up with it.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(10);

/// Why the journal could not be caught up with the database.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatchUpError {
    #[error("{0}")]
    Db(#[from] sqlx::Error),
    #[error("the change journal did not catch up with the database within {0:?}")]
    Behind(Duration),
}

/// How long the reader waits for decoded transactions to become visible.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// Waits until every transaction of `xids` is visible to new statements:
/// below the current snapshot's `xmax` and not among its running ones
/// (32-bit transaction ids compared as PostgreSQL does, modulo 2^32).
async fn wait_visible(pool: &PgPool, xids: &[u32]) -> Result<(), StepError> {
    if xids.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    loop {
        let (xmax, xip): (String, Vec<String>) = sqlx::query_as(
            "SELECT pg_snapshot_xmax(s)::text, \
             ARRAY(SELECT x::text FROM pg_snapshot_xip(s) x) FROM pg_current_snapshot() s",
        )
        .fetch_one(pool)
        .await?;
        let low = |t: &str| t.parse::<u64>().map(|x| x as u32).unwrap_or_default();
        let xmax = low(&xmax);
        let running: Vec<u32> = xip.iter().map(|x| low(x)).collect();
        let visible = xids
            .iter()
            .all(|&x| (x.wrapping_sub(xmax) as i32) < 0 && !running.contains(&x));
        if visible {
            return Ok(());
        }
        if start.elapsed() > VISIBLE_WITHIN {
            return Err(StepError::NotVisible(VISIBLE_WITHIN));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A WAL position's text form, `X/Y`.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Reads a WAL position's text form.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= 0xFFFF_FFFF && lo <= 0xFFFF_FFFF).then_some((hi << 32) | lo)
}

/// A running slot reader; dropping it stops the reader.
#[derive(Debug)]
pub(crate) struct ReaderHandle(tokio::task::JoinHandle<()>);

impl ReaderHandle {
    /// Stops the reader.
    pub(crate) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for ReaderHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checks a logical replication source against the live database:
/// `wal_level`, the role's right to read slots, the slot (logical,
/// `pgoutput`, this database), the publication (publishing inserts,
/// updates and deletes, including the table) and that the key is in the
/// table's replica identity. Problems are in words, for the start-up
/// refusal.
pub(crate) async fn check(
    pool: &PgPool,
    logical: &LogicalConfig,
    schema: Option<&str>,
    table: &str,
    key: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let mut problems = Vec::new();
    let slot = &logical.slot;
    let publication = &logical.publication;
    let wal_level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(pool)
        .await?;
    if wal_level != "logical" {
        problems.push(format!(
            "the server's wal_level is {wal_level}; logical replication needs wal_level = logical \
             (set in postgresql.conf, then restart PostgreSQL)"
        ));
    }
    let (user, may): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    if !may {
        problems.push(format!(
            "role {user:?} may not read replication slots; grant it with ALTER ROLE {} REPLICATION",
            Dialect::Postgres.quote_ident(&user)
        ));
    }
    let found: Option<(String, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT slot_type::text, coalesce(plugin::text, ''), database::text, \
         coalesce(database = current_database(), false) FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    match found {
        None => problems.push(format!(
            "no replication slot {slot:?}; create it with \
             SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        )),
        Some((kind, _, _, _)) if kind != "logical" => problems.push(format!(
            "replication slot {slot:?} is a {kind} slot; a logical slot with the pgoutput plugin is needed"
        )),
        Some((_, plugin, _, _)) if plugin != "pgoutput" => problems.push(format!(
            "replication slot {slot:?} uses the plugin {plugin:?}; the adapter reads pgoutput slots \
             (SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput'))"
        )),
        Some((_, _, database, false)) => problems.push(format!(
            "replication slot {slot:?} belongs to database {:?}, not to the adapter's",
            database.unwrap_or_default()
        )),
        Some(_) => {}
    }
    let publishes: Option<(bool, bool, bool)> = sqlx::query_as(
        "SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = $1",
    )
    .bind(publication)
    .fetch_optional(pool)
    .await?;
    let qualified = match schema {
        Some(s) => format!("{s}.{table}"),
        None => table.to_owned(),
    };
    match publishes {
        None => problems.push(format!(
            "no publication {publication:?}; create it with CREATE PUBLICATION {} FOR TABLE {qualified}",
            Dialect::Postgres.quote_ident(publication)
        )),
        Some((insert, update, delete)) => {
            if !(insert && update && delete) {
                problems.push(format!(
                    "publication {publication:?} does not publish every insert, update and delete; \
                     create it without a `publish` option"
                ));
            }
            let included: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 \
                 AND schemaname = coalesce($2, current_schema()) AND tablename = $3)",
            )
            .bind(publication)
            .bind(schema)
            .bind(table)
            .fetch_one(pool)
            .await?;
            if !included {
                problems.push(format!(
                    "table {qualified} is not in publication {publication:?}; add it with \
                     ALTER PUBLICATION {} ADD TABLE {qualified}",
                    Dialect::Postgres.quote_ident(publication)
                ));
            }
        }
    }
    let partitioned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = coalesce($1, current_schema()) AND c.relname = $2 AND c.relkind = 'p') \
         AND NOT coalesce((SELECT pubviaroot FROM pg_publication WHERE pubname = $3), true)",
    )
    .bind(schema)
    .bind(table)
    .bind(publication)
    .fetch_one(pool)
    .await?;
    if partitioned {
        problems.push(format!(
            "table {qualified} is partitioned and publication {publication:?} publishes its \
             partitions' changes under their own names; create the publication WITH \
             (publish_via_partition_root = true)"
        ));
    }
    let identity: Option<(String, bool)> = sqlx::query_as(
        "SELECT c.relreplident::text, c.relreplident = 'f' OR EXISTS ( \
           SELECT 1 FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
           WHERE i.indrelid = c.oid AND a.attname = $3 \
             AND ((c.relreplident = 'd' AND i.indisprimary) \
               OR (c.relreplident = 'i' AND i.indisreplident))) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = coalesce($1, current_schema()) AND c.relname = $2 AND c.relkind IN ('r', 'p')",
    )
    .bind(schema)
    .bind(table)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    match identity {
        None => problems.push(format!(
            "{qualified} is not a table; logical replication follows tables, not views"
        )),
        Some((_, true)) => {}
        Some((ident, false)) => problems.push(format!(
            "key {key:?} is not in the replica identity of table {qualified} (replica identity {}); \
             a deleted row is known by its replica identity: make {key:?} the primary key, or \
             ALTER TABLE {qualified} REPLICA IDENTITY USING INDEX on a unique index of it",
            match ident.as_str() {
                "d" => "default: the primary key",
                "n" => "nothing",
                "i" => "an index",
                _ => "full",
            }
        )),
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::pgoutput::tests::{begin, change, commit, relation, tuple};
    use super::*;

    fn targets() -> Vec<Target> {
        vec![
            Target {
                dataset: "d.penduduk".into(),
                schema: "public".into(),
                table: "penduduk".into(),
                key: "nik".into(),
                integer: false,
            },
            Target {
                dataset: "d.versi".into(),
                schema: "public".into(),
                table: "versi".into(),
                key: "id".into(),
                integer: true,
            },
        ]
    }

    /// One kept transaction: `(lsn, [(dataset, key, deleted)], truncated)`.
    type Kept = (u64, Vec<(String, JournalKey, bool)>, Vec<String>);

    fn summary(p: &Peeked) -> Vec<Kept> {
        p.done
            .iter()
            .map(|c| {
                (
                    c.lsn,
                    c.keys
                        .iter()
                        .map(|((d, k), del)| (d.clone(), k.clone(), *del))
                        .collect(),
                    c.truncated.iter().cloned().collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_peek_folds_into_each_transactions_net_effect_per_key() {
        let t = |s: &str| JournalKey::Text(s.into());
        let key = |k: &str| tuple(&[Some(k), None]);
        let rows = vec![
            relation(1, "public", "penduduk", &["nik", "nama"]),
            relation(2, "public", "versi", &["nama", "id"]),
            relation(3, "public", "lain", &["x"]),
            // 1: an insert, an update, an update moving a key, a delete
            begin(501),
            change(b'I', 1, &[(b'N', tuple(&[Some("3201"), Some("Ani")]))]),
            change(b'U', 1, &[(b'N', tuple(&[Some("3202"), Some("Budi")]))]),
            change(
                b'U',
                1,
                &[
                    (b'K', key("3203")),
                    (b'N', tuple(&[Some("3204"), Some("\u{0}unchanged")])),
                ],
            ),
            change(b'D', 1, &[(b'K', key("3205"))]),
            change(b'I', 3, &[(b'N', tuple(&[Some("x")]))]),
            commit(100, 108),
            // 2: one key inserted, then deleted; another deleted, then
            // inserted again; an integer key; a TOASTed key left unsent
            begin(502),
            change(b'I', 1, &[(b'N', tuple(&[Some("3301"), Some("A")]))]),
            change(b'D', 1, &[(b'K', key("3301"))]),
            change(b'D', 1, &[(b'K', key("3201"))]),
            change(b'I', 1, &[(b'N', tuple(&[Some("3201"), Some("Ani B")]))]),
            change(b'U', 2, &[(b'N', tuple(&[Some("v"), Some("42")]))]),
            change(
                b'U',
                1,
                &[
                    (b'K', key("3206")),
                    (b'N', tuple(&[Some("\u{0}unchanged"), None])),
                ],
            ),
            commit(200, 208),
            // 3: only a table no dataset follows
            begin(503),
            change(b'I', 3, &[(b'N', tuple(&[Some("y")]))]),
            commit(300, 308),
            // 4: a truncate
            begin(504),
            {
                let mut m = vec![b'T'];
                m.extend(1u32.to_be_bytes());
                m.push(0);
                m.extend(1u32.to_be_bytes());
                m
            },
            commit(400, 408),
        ];
        let mut relations = HashMap::new();
        let peeked = fold("s", &rows, &targets(), &mut relations, 0).unwrap();
        let p = "d.penduduk".to_owned();
        assert_eq!(
            summary(&peeked),
            vec![
                (
                    100,
                    vec![
                        (p.clone(), t("3201"), false),
                        (p.clone(), t("3202"), false),
                        (p.clone(), t("3203"), true),
                        (p.clone(), t("3204"), false),
                        (p.clone(), t("3205"), true),
                    ],
                    vec![],
                ),
                (
                    200,
                    vec![
                        (p.clone(), t("3201"), false),
                        (p.clone(), t("3206"), false),
                        (p.clone(), t("3301"), true),
                        ("d.versi".into(), JournalKey::Int(42), false),
                    ],
                    vec![],
                ),
                (400, vec![], vec![p.clone()]),
            ]
        );
        assert_eq!(peeked.xids, vec![501, 502, 504]);
        assert_eq!(peeked.last, Some((400, 408)));

        // read again after a crash before the slot advanced: what the
        // journal holds already is passed over
        let again = fold("s", &rows, &targets(), &mut relations, 200).unwrap();
        assert_eq!(again.xids, vec![504]);
        assert_eq!(again.last, Some((400, 408)));
    }

    #[test]
    fn a_change_outside_a_transaction_or_a_bad_integer_key_is_an_error() {
        let mut relations = HashMap::new();
        let rows = vec![
            relation(2, "public", "versi", &["id"]),
            change(b'I', 2, &[(b'N', tuple(&[Some("1")]))]),
        ];
        assert!(matches!(
            fold("s", &rows, &targets(), &mut relations, 0),
            Err(StepError::Order)
        ));
        let rows = vec![
            relation(2, "public", "versi", &["id"]),
            begin(1),
            change(b'I', 2, &[(b'N', tuple(&[Some("satu")]))]),
            commit(10, 18),
        ];
        assert!(matches!(
            fold("s", &rows, &targets(), &mut relations, 0),
            Err(StepError::Key(_))
        ));
    }

    #[test]
    fn lsns_read_and_write_as_postgresql_does() {
        let cases = [
            ("0/0", 0u64),
            ("0/16B3748", 0x16B_3748),
            ("1/0", 1 << 32),
            ("A/FF", (10 << 32) | 0xFF),
        ];
        for (text, lsn) in cases {
            assert_eq!(parse_lsn(text), Some(lsn), "{text}");
            assert_eq!(format_lsn(lsn), text, "{text}");
        }
        for bad in ["", "0", "x/1", "1/", "100000000/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }
}
