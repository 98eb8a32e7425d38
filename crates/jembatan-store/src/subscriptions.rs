//! Change subscriptions, and the keys each has been given, as keyed
//! hashes.
//!
//! A subscription delivers a row's upsert while the row is in its scope.
//! When the row leaves the scope (or is deleted), the consumer must get a
//! delete — but only for a key it was given: a row that was never in its
//! scope must produce nothing, not even its key.
//!
//! Whether a key was given must be known as of the consumer's cursor,
//! which can be behind the last batch the broker sent (batches lost in
//! flight when the connection broke). So each batch's gifts (upserts
//! delivered) and takebacks (deletes delivered) are kept as events
//! numbered by the batch, and a stream resumed from a cursor of batch
//! `n` first drops every event after `n`: the subscription is then
//! exactly as it was when that cursor was issued, and the same changes
//! produce the same deliveries again.
//!
//! Batches are numbered from 1; a batch is recorded only as the next of
//! the last one recorded, and only by the stream resumed last (each
//! resume takes a new generation): of two streams following one
//! subscription (the consumer resumed while an old connection lingered,
//! perhaps on another replica), the older one records nothing more.
//!
//! Cost: one row (about 150 bytes with its index) per key delivered per
//! batch, compacted every [`COMPACT_EVERY`] batches to one row per key
//! for history older than [`RESUMABLE_BATCHES`] batches — so about 150 MB
//! for a subscription that holds a million residents, plus the recent
//! history. A cursor older than the compacted history is refused.

use std::collections::HashSet;

use sqlx::Row;

use crate::{Store, StoreError};

/// Most hashes one call takes.
pub const MAX_KEYS_PER_CALL: usize = 20_000;
/// Batches of history kept exact: a cursor at most this many batches
/// behind the subscription's last batch can be resumed.
pub const RESUMABLE_BATCHES: u64 = 4_096;
/// How often (in batches) older history is compacted.
pub const COMPACT_EVERY: u64 = 256;
/// Keys in one lookup statement (under every backend's limit on binds).
const PER_STATEMENT: usize = 400;
/// Events in one insert statement: four binds each, 8,000 in all, under
/// SQLite's 32,766 and PostgreSQL's 65,535.
const EVENTS_PER_STATEMENT: usize = 2_000;

/// Whether a subscription can go on from a cursor's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// Rewound (or started, at batch 0): record `batch + 1` next, as
    /// this generation.
    Ready { generation: u64 },
    /// The store knows no such subscription (a cursor from another
    /// store, or a subscription forgotten).
    Unknown,
    /// The cursor is older than the history kept (`horizon` is the
    /// oldest batch that can be resumed).
    TooOld { horizon: u64 },
    /// The cursor names a batch the store never recorded.
    Ahead { last: u64 },
}

fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{what} {n} is out of range")))
}

fn check_len(n: usize) -> Result<(), StoreError> {
    if n > MAX_KEYS_PER_CALL {
        return Err(StoreError::Invalid(format!(
            "{n} key hashes in one call; at most {MAX_KEYS_PER_CALL}"
        )));
    }
    Ok(())
}

impl Store {
    /// Starts `subscription` (at batch 0, when the store does not know
    /// it) or resumes it at `batch`, a batch it recorded: every event
    /// after `batch` is dropped and `batch + 1` is the next to record. In
    /// one transaction.
    pub async fn resume_subscription(
        &self,
        subscription: &str,
        batch: u64,
    ) -> Result<Resumed, StoreError> {
        let at = to_i64(batch, "batch")?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT last_batch, horizon, generation FROM subscriptions WHERE subscription_id = $1",
        )
        .bind(subscription)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            if batch != 0 {
                return Ok(Resumed::Unknown);
            }
            sqlx::query(
                "INSERT INTO subscriptions (subscription_id, last_batch, horizon, generation) \
                 VALUES ($1, 0, 0, 1)",
            )
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Resumed::Ready { generation: 1 });
        };
        let last: i64 = row.try_get(0)?;
        let horizon: i64 = row.try_get(1)?;
        let generation: i64 = row.try_get(2)?;
        if at > last {
            return Ok(Resumed::Ahead {
                last: crate::checkpoints::to_u64(last, "last batch")?,
            });
        }
        if at < horizon {
            return Ok(Resumed::TooOld {
                horizon: crate::checkpoints::to_u64(horizon, "horizon")?,
            });
        }
        sqlx::query(
            "DELETE FROM subscription_key_events WHERE subscription_id = $1 AND batch > $2",
        )
        .bind(subscription)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE subscriptions SET last_batch = $2, generation = $3 WHERE subscription_id = $1",
        )
        .bind(subscription)
        .bind(at)
        .bind(generation + 1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Resumed::Ready {
            generation: crate::checkpoints::to_u64(generation + 1, "generation")?,
        })
    }

    /// Which of `key_hashes` `subscription` holds now: given, and not
    /// taken back since.
    pub async fn subscription_holds(
        &self,
        subscription: &str,
        key_hashes: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        check_len(key_hashes.len())?;
        let mut held = HashSet::new();
        for chunk in key_hashes.chunks(PER_STATEMENT) {
            let mut sql = String::from(
                "SELECT e.key_hash FROM subscription_key_events e \
                 WHERE e.subscription_id = ",
            );
            sql.push_str(&self.placeholder(1));
            sql.push_str(" AND e.given = 1 AND e.key_hash IN (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&self.placeholder(i + 2));
            }
            sql.push_str(
                ") AND e.batch = (SELECT MAX(m.batch) FROM subscription_key_events m \
                 WHERE m.subscription_id = e.subscription_id AND m.key_hash = e.key_hash)",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(subscription);
            for hash in chunk {
                q = q.bind(hash.as_str());
            }
            for row in q.fetch_all(self.pool()).await? {
                held.insert(row.try_get::<String, _>(0)?);
            }
        }
        Ok(held)
    }

    /// Records batch `batch` of `subscription` for the stream resumed as
    /// `generation`: the keys given (upserts delivered) and taken back
    /// (deletes delivered), in one transaction. `false`, recording
    /// nothing, when `batch` is not the next after the last recorded or
    /// the subscription was resumed again since: another stream follows it.
    pub async fn record_subscription_batch(
        &self,
        subscription: &str,
        generation: u64,
        batch: u64,
        given: &[String],
        taken: &[String],
    ) -> Result<bool, StoreError> {
        check_len(given.len() + taken.len())?;
        let at = to_i64(batch, "batch")?;
        let generation = to_i64(generation, "generation")?;
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE subscriptions SET last_batch = $2 \
             WHERE subscription_id = $1 AND last_batch = $3 AND generation = $4",
        )
        .bind(subscription)
        .bind(at)
        .bind(at - 1)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        let events: Vec<(&String, i64)> = given
            .iter()
            .map(|h| (h, 1))
            .chain(taken.iter().map(|h| (h, 0)))
            .collect();
        for chunk in events.chunks(EVENTS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO subscription_key_events (subscription_id, key_hash, batch, given) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let n = 4 * i;
                let p = |k| self.placeholder(n + k);
                sql.push_str(&format!("({}, {}, {}, {})", p(1), p(2), p(3), p(4)));
            }
            sql.push_str(
                " ON CONFLICT (subscription_id, key_hash, batch) DO UPDATE SET given = excluded.given",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (hash, given) in chunk {
                q = q
                    .bind(subscription)
                    .bind(hash.as_str())
                    .bind(at)
                    .bind(*given);
            }
            q.execute(&mut *tx).await?;
        }
        if batch.is_multiple_of(COMPACT_EVERY) && batch > RESUMABLE_BATCHES {
            let horizon = to_i64(batch - RESUMABLE_BATCHES, "horizon")?;
            // below the horizon, only each key's last event matters, and
            // only when it gave the key
            sqlx::query(
                "DELETE FROM subscription_key_events \
                 WHERE subscription_id = $1 AND batch < $2 AND (given = 0 OR EXISTS ( \
                   SELECT 1 FROM subscription_key_events n \
                   WHERE n.subscription_id = subscription_key_events.subscription_id \
                     AND n.key_hash = subscription_key_events.key_hash \
                     AND n.batch > subscription_key_events.batch AND n.batch < $2))",
            )
            .bind(subscription)
            .bind(horizon)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE subscriptions SET horizon = $2 WHERE subscription_id = $1")
                .bind(subscription)
                .bind(horizon)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// How many keys `subscription` holds now.
    pub async fn subscription_key_count(&self, subscription: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM subscription_key_events e \
             WHERE e.subscription_id = $1 AND e.given = 1 AND e.batch = ( \
               SELECT MAX(m.batch) FROM subscription_key_events m \
               WHERE m.subscription_id = e.subscription_id AND m.key_hash = e.key_hash)",
        )
        .bind(subscription)
        .fetch_one(self.pool())
        .await?;
        crate::checkpoints::to_u64(n, "subscription key count")
    }

    /// The last batch `subscription` recorded; `None` when unknown.
    pub async fn subscription_last_batch(
        &self,
        subscription: &str,
    ) -> Result<Option<u64>, StoreError> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT last_batch FROM subscriptions WHERE subscription_id = $1")
                .bind(subscription)
                .fetch_optional(self.pool())
                .await?;
        n.map(|n| crate::checkpoints::to_u64(n, "last batch"))
            .transpose()
    }

    /// Forgets `subscription` and its history (its cursors can no longer
    /// be resumed); returns how many key events there were.
    pub async fn forget_subscription(&self, subscription: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM subscription_key_events WHERE subscription_id = $1")
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM subscriptions WHERE subscription_id = $1")
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
