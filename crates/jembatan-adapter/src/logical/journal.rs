//! The adapter's local journal of a logical replication slot (an SQLite
//! file): per dataset, the keys each committed transaction changed, in
//! `(commit LSN, key)` order, written before the slot is advanced.

use std::path::Path;
use std::str::FromStr;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row as _, Sqlite, Transaction};

use crate::error::AdapterError;

/// A key as the journal keeps it: an integer or a text, as positions
/// carry it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum JournalKey {
    Int(i64),
    Text(String),
}

impl JournalKey {
    /// The key as a position's JSON value.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            JournalKey::Int(i) => Value::from(*i),
            JournalKey::Text(s) => Value::from(s.as_str()),
        }
    }

    /// The key of a JSON value read from a row or a position.
    pub(crate) fn from_json(v: &Value) -> Option<JournalKey> {
        match v {
            Value::String(s) => Some(JournalKey::Text(s.clone())),
            Value::Number(n) => n.as_i64().map(JournalKey::Int),
            _ => None,
        }
    }
}

/// One committed transaction's net effect on the slot's datasets.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Committed {
    pub(crate) lsn: u64,
    /// Seconds since the Unix epoch, by the database's commit time.
    pub(crate) time: i64,
    /// `(dataset, key) → deleted`, the last change of each key in the
    /// transaction.
    pub(crate) keys: std::collections::BTreeMap<(String, JournalKey), bool>,
    /// Datasets whose table the transaction truncated.
    pub(crate) truncated: std::collections::BTreeSet<String>,
}

/// A journal row read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) lsn: u64,
    pub(crate) key: JournalKey,
}

/// Where a slot's consumption stands in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotMark {
    /// Every transaction committed at or before this LSN is journaled.
    pub(crate) consumed: u64,
    /// Changes committed at or before this LSN are no longer kept.
    pub(crate) pruned: u64,
}

/// An open journal file.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    pool: SqlitePool,
}

/// LSNs are stored as SQLite integers (`i64`); PostgreSQL's WAL positions
/// stay far below 2^63.
fn lsn_i64(lsn: u64) -> i64 {
    i64::try_from(lsn).unwrap_or(i64::MAX)
}

fn lsn_u64(lsn: i64) -> u64 {
    u64::try_from(lsn).unwrap_or_default()
}

impl Journal {
    /// Opens (creating if missing) the journal at `path`.
    pub(crate) async fn open(path: &Path) -> Result<Journal, AdapterError> {
        let err = |source| AdapterError::Database {
            context: format!("opening the change journal {}", path.display()),
            source,
        };
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(err)?;
        for stmt in [
            "CREATE TABLE IF NOT EXISTS slots (slot TEXT PRIMARY KEY, consumed INTEGER NOT NULL, \
             pruned INTEGER NOT NULL, slot_end INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS changes (dataset TEXT NOT NULL, lsn INTEGER NOT NULL, \
             key ANY NOT NULL, deleted INTEGER NOT NULL, committed INTEGER NOT NULL, \
             PRIMARY KEY (dataset, lsn, key)) STRICT, WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS changes_committed ON changes (committed)",
            "CREATE TABLE IF NOT EXISTS truncates (dataset TEXT NOT NULL, lsn INTEGER NOT NULL, \
             committed INTEGER NOT NULL, PRIMARY KEY (dataset, lsn)) WITHOUT ROWID",
        ] {
            sqlx::query(stmt).execute(&pool).await.map_err(err)?;
        }
        Ok(Journal { pool })
    }

    /// The slot's mark, started at `confirmed` (the slot's confirmed
    /// position) for a slot the journal has not seen: nothing before it is
    /// kept. When the slot stands past where the journal advanced it (it
    /// was consumed elsewhere, or the journal is an old copy), the changes
    /// in between are lost to it: the mark moves up to the slot and
    /// positions before it are refused.
    pub(crate) async fn mark(&self, slot: &str, confirmed: u64) -> Result<SlotMark, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT OR IGNORE INTO slots (slot, consumed, pruned, slot_end) VALUES (?, ?, ?, ?)",
        )
        .bind(slot)
        .bind(lsn_i64(confirmed))
        .bind(lsn_i64(confirmed))
        .bind(lsn_i64(confirmed))
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT consumed, pruned, slot_end FROM slots WHERE slot = ?")
            .bind(slot)
            .fetch_one(&mut *tx)
            .await?;
        let mut mark = SlotMark {
            consumed: lsn_u64(row.get(0)),
            pruned: lsn_u64(row.get(1)),
        };
        let slot_end = lsn_u64(row.get(2));
        if confirmed > slot_end {
            tracing::warn!(
                slot,
                journal = mark.consumed,
                slot_at = confirmed,
                "the replication slot stands past the change journal; changes in between are not in the journal and older positions are refused"
            );
            mark = SlotMark {
                consumed: confirmed,
                pruned: confirmed,
            };
            sqlx::query("UPDATE slots SET consumed = ?, pruned = ?, slot_end = ? WHERE slot = ?")
                .bind(lsn_i64(confirmed))
                .bind(lsn_i64(confirmed))
                .bind(lsn_i64(confirmed))
                .bind(slot)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(mark)
    }

    /// Keeps committed transactions, the slot's new consumed mark (the
    /// last commit's LSN) and where the slot is then advanced to (`end`,
    /// the end of that commit) in one durable transaction. Rewriting a
    /// transaction already kept (the slot was not advanced before a
    /// crash) changes nothing.
    pub(crate) async fn record(
        &self,
        slot: &str,
        committed: &[Committed],
        consumed: u64,
        end: u64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for c in committed {
            insert(&mut tx, c).await?;
        }
        sqlx::query(
            "UPDATE slots SET consumed = max(consumed, ?), slot_end = max(slot_end, ?) WHERE slot = ?",
        )
        .bind(lsn_i64(consumed))
        .bind(lsn_i64(end))
        .bind(slot)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Up to `limit` entries of a dataset strictly after `(lsn, key)`
    /// (after every key of `lsn` when `key` is `None`), in that order.
    pub(crate) async fn after(
        &self,
        dataset: &str,
        lsn: u64,
        key: Option<&JournalKey>,
        limit: u32,
    ) -> Result<Vec<Entry>, sqlx::Error> {
        let rows = match key {
            None => {
                sqlx::query(
                    "SELECT lsn, key, typeof(key) = 'integer' FROM changes \
                     WHERE dataset = ? AND lsn > ? ORDER BY lsn, key LIMIT ?",
                )
                .bind(dataset)
                .bind(lsn_i64(lsn))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(key) => {
                let q = sqlx::query(
                    "SELECT lsn, key, typeof(key) = 'integer' FROM changes WHERE dataset = ? \
                     AND (lsn > ? OR (lsn = ? AND key > ?)) ORDER BY lsn, key LIMIT ?",
                )
                .bind(dataset)
                .bind(lsn_i64(lsn))
                .bind(lsn_i64(lsn));
                let q = match key {
                    JournalKey::Int(i) => q.bind(*i),
                    JournalKey::Text(s) => q.bind(s.clone()),
                };
                q.bind(i64::from(limit)).fetch_all(&self.pool).await?
            }
        };
        rows.into_iter()
            .map(|row| {
                let lsn: i64 = row.try_get(0)?;
                let key = if row.try_get::<bool, _>(2)? {
                    JournalKey::Int(row.try_get(1)?)
                } else {
                    JournalKey::Text(row.try_get(1)?)
                };
                Ok(Entry {
                    lsn: lsn_u64(lsn),
                    key,
                })
            })
            .collect()
    }

    /// Which of `keys` the journal holds a change of after `lsn`.
    pub(crate) async fn changed_after(
        &self,
        dataset: &str,
        lsn: u64,
        keys: &[JournalKey],
    ) -> Result<std::collections::HashSet<JournalKey>, sqlx::Error> {
        let mut found = std::collections::HashSet::new();
        // bound parameters per statement stay far below SQLite's limit
        for part in keys.chunks(1000) {
            let mut sql = String::from(
                "SELECT DISTINCT key, typeof(key) = 'integer' FROM changes \
                 WHERE dataset = ? AND lsn > ? AND key IN (",
            );
            for i in 0..part.len() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
            }
            sql.push(')');
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(dataset.to_owned())
                .bind(lsn_i64(lsn));
            for key in part {
                q = match key {
                    JournalKey::Int(i) => q.bind(*i),
                    JournalKey::Text(s) => q.bind(s.clone()),
                };
            }
            for row in q.fetch_all(&self.pool).await? {
                found.insert(if row.try_get::<bool, _>(1)? {
                    JournalKey::Int(row.try_get(0)?)
                } else {
                    JournalKey::Text(row.try_get(0)?)
                });
            }
        }
        Ok(found)
    }

    /// The first truncation of a dataset's table after `lsn`, if any.
    pub(crate) async fn truncated_after(
        &self,
        dataset: &str,
        lsn: u64,
    ) -> Result<Option<u64>, sqlx::Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT min(lsn) FROM truncates WHERE dataset = ? AND lsn > ?")
                .bind(dataset)
                .bind(lsn_i64(lsn))
                .fetch_one(&self.pool)
                .await?;
        Ok(found.map(lsn_u64))
    }

    /// Drops changes committed before `cutoff` (seconds since the Unix
    /// epoch); returns the slot's new pruned mark.
    pub(crate) async fn prune(
        &self,
        slot: &str,
        datasets: &[String],
        cutoff: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut newest: Option<i64> = None;
        for d in datasets {
            for table in ["changes", "truncates"] {
                let n: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT max(lsn) FROM {table} WHERE dataset = ? AND committed < ?"
                )))
                .bind(d)
                .bind(cutoff)
                .fetch_one(&mut *tx)
                .await?;
                newest = newest.max(n);
            }
        }
        if let Some(newest) = newest {
            for d in datasets {
                for table in ["changes", "truncates"] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE dataset = ? AND lsn <= ?"
                    )))
                    .bind(d)
                    .bind(newest)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            sqlx::query("UPDATE slots SET pruned = max(pruned, ?) WHERE slot = ?")
                .bind(newest)
                .bind(slot)
                .execute(&mut *tx)
                .await?;
        }
        let pruned: i64 = sqlx::query_scalar("SELECT pruned FROM slots WHERE slot = ?")
            .bind(slot)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(lsn_u64(pruned))
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert(tx: &mut Transaction<'_, Sqlite>, c: &Committed) -> Result<(), sqlx::Error> {
    for ((dataset, key), deleted) in &c.keys {
        let q = sqlx::query(
            "INSERT OR REPLACE INTO changes (dataset, lsn, key, deleted, committed) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(dataset)
        .bind(lsn_i64(c.lsn));
        let q = match key {
            JournalKey::Int(i) => q.bind(*i),
            JournalKey::Text(s) => q.bind(s.clone()),
        };
        q.bind(i64::from(*deleted))
            .bind(c.time)
            .execute(&mut **tx)
            .await?;
    }
    for dataset in &c.truncated {
        sqlx::query("INSERT OR REPLACE INTO truncates (dataset, lsn, committed) VALUES (?, ?, ?)")
            .bind(dataset)
            .bind(lsn_i64(c.lsn))
            .bind(c.time)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(lsn: u64, time: i64, keys: &[(&str, JournalKey, bool)]) -> Committed {
        Committed {
            lsn,
            time,
            keys: keys
                .iter()
                .map(|(d, k, del)| ((d.to_string(), k.clone()), *del))
                .collect(),
            truncated: Default::default(),
        }
    }

    #[tokio::test]
    async fn entries_come_back_in_lsn_then_key_order_and_prune_moves_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
        let mark = j.mark("s", 50).await.unwrap();
        assert_eq!(
            mark,
            SlotMark {
                consumed: 50,
                pruned: 50
            }
        );
        let t = |s: &str| JournalKey::Text(s.into());
        j.record(
            "s",
            &[
                committed(
                    100,
                    10,
                    &[
                        ("p", t("b"), false),
                        ("p", t("a"), true),
                        ("q", t("z"), false),
                    ],
                ),
                committed(200, 20, &[("p", t("a"), false)]),
            ],
            200,
            208,
        )
        .await
        .unwrap();
        // the same transactions again (a crash before the slot advanced)
        j.record(
            "s",
            &[committed(200, 20, &[("p", t("a"), false)])],
            200,
            208,
        )
        .await
        .unwrap();
        let keys = |es: Vec<Entry>| es.into_iter().map(|e| (e.lsn, e.key)).collect::<Vec<_>>();
        assert_eq!(
            keys(j.after("p", 0, None, 10).await.unwrap()),
            vec![(100, t("a")), (100, t("b")), (200, t("a"))]
        );
        assert_eq!(
            keys(j.after("p", 100, Some(&t("a")), 10).await.unwrap()),
            vec![(100, t("b")), (200, t("a"))]
        );
        assert_eq!(
            keys(j.after("p", 100, None, 1).await.unwrap()),
            vec![(200, t("a"))]
        );
        // the slot where the journal advanced it, or behind (a crash
        // before the advance): the journal's mark holds
        assert_eq!(
            j.mark("s", 208).await.unwrap(),
            SlotMark {
                consumed: 200,
                pruned: 50
            }
        );
        assert_eq!(
            j.mark("s", 60).await.unwrap(),
            SlotMark {
                consumed: 200,
                pruned: 50
            }
        );
        let pruned = j.prune("s", &["p".into(), "q".into()], 15).await.unwrap();
        assert_eq!(pruned, 100);
        assert_eq!(
            keys(j.after("p", 0, None, 10).await.unwrap()),
            vec![(200, t("a"))]
        );
        assert_eq!(keys(j.after("q", 0, None, 10).await.unwrap()), vec![]);
        // a slot consumed elsewhere: everything before it is lost to the journal
        assert_eq!(
            j.mark("s", 500).await.unwrap(),
            SlotMark {
                consumed: 500,
                pruned: 500
            }
        );
        j.close().await;
    }

    #[tokio::test]
    async fn integer_keys_order_numerically() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
        j.mark("s", 0).await.unwrap();
        let i = JournalKey::Int;
        j.record(
            "s",
            &[committed(10, 0, &[("p", i(10), false), ("p", i(9), false)])],
            10,
            18,
        )
        .await
        .unwrap();
        let got: Vec<_> = j
            .after("p", 10, Some(&i(-1)), 5)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(got, vec![i(9), i(10)]);
        j.close().await;
    }
}
