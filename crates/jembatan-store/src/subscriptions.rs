//! The keys each change subscription has been given, as keyed hashes.
//!
//! A subscription delivers a row's upsert while the row is in its scope.
//! When the row leaves the scope (or is deleted), the consumer must get a
//! delete — but only for a key it was given: a row that was never in its
//! scope must produce nothing, not even its key. The broker records the
//! keyed hash of each key it delivers and takes it back when it delivers
//! the key's delete; taking it back says whether it was there, in one
//! statement, so two replicas never both deliver one delete.
//!
//! Cost: one row per subscription and key currently delivered, about
//! 150 bytes with its index (a 64-character hash and a 36-character
//! subscription id) — some 150 MB for a subscription that was given a
//! million keys. Rows go when their key's delete is delivered or the
//! subscription is forgotten.

use crate::{Store, StoreError};

/// Most hashes one call records.
pub const MAX_KEYS_PER_CALL: usize = 10_000;
/// Rows one insert statement writes (two binds each, under every
/// backend's limit on bind parameters).
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Records that `subscription` was given the keys with these keyed
    /// hashes (at most [`MAX_KEYS_PER_CALL`]), in one transaction; a hash
    /// recorded already stays as it is. Returns how many were new.
    pub async fn add_subscription_keys(
        &self,
        subscription: &str,
        key_hashes: &[String],
    ) -> Result<u64, StoreError> {
        if key_hashes.len() > MAX_KEYS_PER_CALL {
            return Err(StoreError::Invalid(format!(
                "{} key hashes in one call; at most {MAX_KEYS_PER_CALL}",
                key_hashes.len()
            )));
        }
        if key_hashes.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut added = 0;
        for chunk in key_hashes.chunks(ROWS_PER_STATEMENT) {
            let mut sql =
                String::from("INSERT INTO subscription_keys (subscription_id, key_hash) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
            }
            sql.push_str(" ON CONFLICT (subscription_id, key_hash) DO NOTHING");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for hash in chunk {
                q = q.bind(subscription).bind(hash.as_str());
            }
            added += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Takes back a key `subscription` was given, when its delete is to
    /// be delivered: `true` when the key was recorded (deliver the
    /// delete), `false` when the subscription was never given it (deliver
    /// nothing).
    pub async fn take_subscription_key(
        &self,
        subscription: &str,
        key_hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM subscription_keys WHERE subscription_id = $1 AND key_hash = $2",
        )
        .bind(subscription)
        .bind(key_hash)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `subscription` holds the key with this hash.
    pub async fn has_subscription_key(
        &self,
        subscription: &str,
        key_hash: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM subscription_keys WHERE subscription_id = $1 AND key_hash = $2",
        )
        .bind(subscription)
        .bind(key_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// How many keys `subscription` holds.
    pub async fn subscription_key_count(&self, subscription: &str) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM subscription_keys WHERE subscription_id = $1")
                .bind(subscription)
                .fetch_one(self.pool())
                .await?;
        crate::checkpoints::to_u64(n, "subscription key count")
    }

    /// Forgets every key of `subscription`; returns how many there were.
    pub async fn forget_subscription(&self, subscription: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM subscription_keys WHERE subscription_id = $1")
            .bind(subscription)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
