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
//! delivered) and takebacks (deletes delivered) are kept, numbered by the
//! batch, and a stream resumed from a cursor of batch `n` first drops
//! every batch after `n`: the subscription is then exactly as it was when
//! that cursor was issued, and the same changes produce the same
//! deliveries again.
//!
//! A batch is one row (migration 0017): its gifts and takebacks as two
//! packed arrays of 32-byte hashes, appended at the end of the table.
//! What a subscription holds is the fold of its rows in batch order
//! ([`HeldKeys`]), which a stream loads once, when it first needs it, and
//! then keeps up to date in memory as it records batches.
//!
//! Batches are numbered from 1; a batch is recorded only as the next of
//! the last one recorded, and only by the stream resumed last (each
//! resume takes a new generation): of two streams following one
//! subscription (the consumer resumed while an old connection lingered,
//! perhaps on another replica), the older one records nothing more.
//!
//! Cost: 32 bytes per key delivered per batch, plus about 60 bytes per
//! batch. Every [`COMPACT_EVERY`] batches, history older than the last
//! [`RESUMABLE_BATCHES`] batches is folded into the set of keys held at
//! that point (when it has grown by a quarter of that set since the last
//! fold, so folding writes each key at most a few times over), so a
//! subscription that holds a million residents costs about 32 MB plus its
//! recent history. A cursor older than the folded history is refused.

use std::collections::HashSet;

use sqlx::Row;

use crate::{Store, StoreError};

/// Most hashes one call takes.
pub const MAX_KEYS_PER_CALL: usize = 20_000;
/// Batches of history kept exact: a cursor at most this many batches
/// behind the subscription's last batch can be resumed.
pub const RESUMABLE_BATCHES: u64 = 4_096;
/// How often (in batches) older history is folded.
pub const COMPACT_EVERY: u64 = 256;
/// Bytes of one key hash in the packed arrays.
const HASH_BYTES: usize = 32;

/// A key's keyed hash (HMAC-SHA-256 under the broker's audit key), as
/// the subscription tables keep it: 32 bytes.
pub type KeyHash = [u8; HASH_BYTES];

/// Moves a subscription's last batch from `$3` to `$2`, for the stream
/// of generation `$4` only.
const NEXT_BATCH: &str = "UPDATE subscriptions SET last_batch = $2 \
     WHERE subscription_id = $1 AND last_batch = $3 AND generation = $4";
/// Appends a batch's keys given and taken.
const ADD_BATCH: &str = "INSERT INTO subscription_key_batches \
     (subscription_id, batch, part, given, taken) VALUES ($1, $2, 0, $3, $4)";
/// Hashes in one row of folded history.
const PER_PART: usize = MAX_KEYS_PER_CALL;

/// The keys a subscription holds (given, and not taken back since), as
/// their keyed hashes folded to 128 bits: 16 bytes a key, about 24 with
/// the table. The hashes are HMACs under the broker's audit key, so two
/// of a subscription's keys folding alike is as likely as guessing a
/// 128-bit secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldKeys {
    keys: HashSet<u128>,
}

impl HeldKeys {
    /// Whether the key whose hash is `hash` is held.
    pub fn contains(&self, hash: &KeyHash) -> bool {
        self.keys.contains(&short(hash))
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Applies a recorded batch: `given` held, then `taken` no longer.
    pub fn apply(&mut self, given: &[KeyHash], taken: &[KeyHash]) {
        for h in given {
            self.keys.insert(short(h));
        }
        for h in taken {
            self.keys.remove(&short(h));
        }
    }
}

/// A key hash as 64 hex digits, in bytes.
fn parse(hash: &str) -> Result<[u8; HASH_BYTES], StoreError> {
    let mut out = [0u8; HASH_BYTES];
    hex::decode_to_slice(hash, &mut out).map_err(|_| {
        StoreError::Invalid(format!("a key hash must be {} hex digits", 2 * HASH_BYTES))
    })?;
    Ok(out)
}

/// A key hash folded to 128 bits: its two halves XORed.
fn short(hash: &[u8]) -> u128 {
    let (mut high, mut low) = ([0u8; 16], [0u8; 16]);
    high.copy_from_slice(&hash[..16]);
    low.copy_from_slice(&hash[16..HASH_BYTES]);
    u128::from_be_bytes(high) ^ u128::from_be_bytes(low)
}

/// The hashes of a packed array.
fn unpack<'a>(what: &str, packed: &'a [u8]) -> Result<std::slice::ChunksExact<'a, u8>, StoreError> {
    if !packed.len().is_multiple_of(HASH_BYTES) {
        return Err(StoreError::Corrupt {
            what: what.into(),
            message: format!("{} bytes is not a whole number of key hashes", packed.len()),
        });
    }
    Ok(packed.chunks_exact(HASH_BYTES))
}

/// Folds rows `(given, taken)` in batch order into the full hashes held.
fn fold(
    subscription: &str,
    rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<HashSet<KeyHash>, StoreError> {
    let what = format!("the key history of subscription {subscription}");
    let mut held = HashSet::new();
    for (given, taken) in rows {
        for h in unpack(&what, &given)? {
            let mut k = [0u8; HASH_BYTES];
            k.copy_from_slice(h);
            held.insert(k);
        }
        for h in unpack(&what, &taken)? {
            let mut k = [0u8; HASH_BYTES];
            k.copy_from_slice(h);
            held.remove(&k);
        }
    }
    Ok(held)
}

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
            "DELETE FROM subscription_key_batches WHERE subscription_id = $1 AND batch > $2",
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

    /// The keys `subscription` holds now: the fold of its recorded
    /// batches.
    pub async fn subscription_keys(&self, subscription: &str) -> Result<HeldKeys, StoreError> {
        let rows = key_rows(self.pool(), subscription, i64::MAX).await?;
        let keys = fold(subscription, rows)?.iter().map(|h| short(h)).collect();
        Ok(HeldKeys { keys })
    }

    /// Which of `key_hashes` `subscription` holds now: given, and not
    /// taken back since.
    pub async fn subscription_holds(
        &self,
        subscription: &str,
        key_hashes: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        check_len(key_hashes.len())?;
        let held = self.subscription_keys(subscription).await?;
        let mut out = HashSet::new();
        for h in key_hashes {
            if held.contains(&parse(h)?) {
                out.insert(h.clone());
            }
        }
        Ok(out)
    }

    /// Records batch `batch` of `subscription` for the stream resumed as
    /// `generation`: the keys given (upserts delivered) and taken back
    /// (deletes delivered), in one transaction. `false`, recording
    /// nothing, when `batch` is not the next after the last recorded or
    /// the subscription was resumed again since: another stream follows it.
    ///
    /// The commit does not wait for the disk: the batch is durable with
    /// the next durable commit, which is the batch's `delivery` entry,
    /// written before the batch is sent. On a SQLite file the store's
    /// writer thread writes it, in the order asked before that entry,
    /// unless the batch also folds history.
    pub async fn record_subscription_batch(
        &self,
        subscription: &str,
        generation: u64,
        batch: u64,
        given: &[KeyHash],
        taken: &[KeyHash],
    ) -> Result<bool, StoreError> {
        check_len(given.len() + taken.len())?;
        let at = to_i64(batch, "batch")?;
        let generation = to_i64(generation, "generation")?;
        // the hashes of each list packed end to end
        let (given, taken) = (given.concat(), taken.concat());
        let fold = batch.is_multiple_of(COMPACT_EVERY) && batch > RESUMABLE_BATCHES;
        if !fold && self.has_sqlite_writer() {
            // through the store's writer thread, with the audit log's
            // batches, rather than waiting for SQLite's write lock
            let id = subscription.to_owned();
            let recorded = self
                .sqlite_writer()?
                .light(Box::new(move |conn| {
                    let moved =
                        conn.prepare_cached(NEXT_BATCH)?
                            .execute(rusqlite::named_params! {
                                "$1": id, "$2": at, "$3": at - 1, "$4": generation,
                            })?;
                    if moved != 1 {
                        return Ok(0);
                    }
                    conn.prepare_cached(ADD_BATCH)?
                        .execute(rusqlite::named_params! {
                            "$1": id, "$2": at, "$3": given, "$4": taken,
                        })
                }))
                .await?;
            return Ok(recorded == 1);
        }
        let mut tx = self.begin_light_write().await?;
        let moved = sqlx::query(NEXT_BATCH)
            .bind(subscription)
            .bind(at)
            .bind(at - 1)
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(ADD_BATCH)
            .bind(subscription)
            .bind(at)
            .bind(given)
            .bind(taken)
            .execute(&mut *tx)
            .await?;
        if fold {
            let horizon = to_i64(batch - RESUMABLE_BATCHES, "horizon")?;
            fold_history(&mut tx, subscription, horizon).await?;
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
        Ok(self.subscription_keys(subscription).await?.len() as u64)
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
    /// be resumed); returns how many key hashes its history held.
    pub async fn forget_subscription(&self, subscription: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let bytes: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(length(given) + length(taken)) FROM subscription_key_batches \
             WHERE subscription_id = $1",
        )
        .bind(subscription)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM subscription_key_batches WHERE subscription_id = $1")
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM subscriptions WHERE subscription_id = $1")
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(crate::checkpoints::to_u64(bytes.unwrap_or(0), "key history size")? / HASH_BYTES as u64)
    }
}

/// The rows `(given, taken)` of `subscription` before batch `before`, in
/// batch order.
async fn key_rows<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    subscription: &str,
    before: i64,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT given, taken FROM subscription_key_batches \
         WHERE subscription_id = $1 AND batch < $2 ORDER BY batch, part",
    )
    .bind(subscription)
    .bind(before)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get::<Vec<u8>, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
        .collect()
}

/// Folds the history of `subscription` before batch `horizon` into rows
/// of batch `horizon - 1` holding the keys held at that point — when the
/// rows after the last fold have grown to a quarter of it (or there was
/// none): a fold rewrites every key held, so folding less often keeps the
/// writes per delivered key bounded.
async fn fold_history(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    subscription: &str,
    horizon: i64,
) -> Result<(), StoreError> {
    let sizes = sqlx::query(
        "SELECT batch, SUM(length(given) + length(taken)) FROM subscription_key_batches \
         WHERE subscription_id = $1 AND batch < $2 GROUP BY batch ORDER BY batch",
    )
    .bind(subscription)
    .bind(horizon)
    .fetch_all(&mut **tx)
    .await?;
    let sizes = sizes
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<Vec<(i64, i64)>, StoreError>>()?;
    let Some((_, first)) = sizes.first() else {
        return Ok(());
    };
    let since: i64 = sizes[1..].iter().map(|(_, n)| n).sum();
    if sizes.len() == 1 || since * 4 < *first {
        return Ok(());
    }
    let loaded = key_rows(&mut **tx, subscription, horizon).await?;
    let mut held: Vec<[u8; HASH_BYTES]> = fold(subscription, loaded)?.into_iter().collect();
    held.sort_unstable();
    sqlx::query("DELETE FROM subscription_key_batches WHERE subscription_id = $1 AND batch < $2")
        .bind(subscription)
        .bind(horizon)
        .execute(&mut **tx)
        .await?;
    for (part, chunk) in held.chunks(PER_PART).enumerate() {
        sqlx::query(
            "INSERT INTO subscription_key_batches (subscription_id, batch, part, given, taken) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(subscription)
        .bind(horizon - 1)
        .bind(part as i64)
        .bind(chunk.concat())
        .bind(Vec::<u8>::new())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
