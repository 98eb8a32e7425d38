//! Broker replicas sharing the store: each one's lease, the exchanges it
//! has open (counted per consumer, and per consumer and provider for
//! query streams), and the leases on work one replica at a time does.
//!
//! Every time here is milliseconds since the Unix epoch by the database's
//! own clock (`now_ms`), so replicas on machines whose clocks disagree
//! still agree on whose lease is over. A replica is *gone* once its lease
//! has been over for a grace period; its open exchanges then stop counting
//! against the stream limit and are handed to whoever closes them.

use std::time::Duration;

use rusqlite::types::Value;
use sqlx::Row;

use crate::checkpoints::to_i64;
use crate::{Backend, Store, StoreError, now};

/// The database's clock, in milliseconds since the Unix epoch.
fn now_ms(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A replica as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub id: String,
    /// Where it runs (host and process), for operators.
    pub name: String,
    pub started_at: String,
    /// Milliseconds from now until its lease is over (negative: over).
    pub lease_left_ms: i64,
    /// When it was found gone, if it was.
    pub gone_at: Option<String>,
    /// Exchanges it has open.
    pub open: u64,
}

/// An exchange a gone replica left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOpen {
    pub exchange_id: String,
    pub replica: String,
}

impl Store {
    /// Runs one bookkeeping statement (`$1`... numbered in the order they
    /// first appear) whose commit does not wait for the disk: on a SQLite
    /// file through the store's writer thread, with the others waiting
    /// at the same time, so running exchanges never wait for the write
    /// lock behind the audit log; otherwise on the light pool. Returns
    /// the rows it changed.
    async fn light_write(&self, sql: String, args: Vec<Value>) -> Result<u64, StoreError> {
        if self.has_sqlite_writer() {
            let writer = self.sqlite_writer()?;
            let changed = writer
                .light(Box::new(move |conn| {
                    conn.prepare_cached(&sql)?
                        .execute(rusqlite::params_from_iter(args))
                }))
                .await?;
            return Ok(changed as u64);
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for arg in args {
            query = match arg {
                Value::Integer(n) => query.bind(n),
                Value::Text(t) => query.bind(t),
                Value::Real(r) => query.bind(r),
                Value::Null => query.bind(None::<String>),
                Value::Blob(b) => query.bind(b),
            };
        }
        Ok(query.execute(self.light_pool()).await?.rows_affected())
    }

    /// Registers a replica with a lease of `lease` from now.
    pub async fn register_replica(
        &self,
        id: &str,
        name: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO replicas (id, name, started_at, lease_until, gone_at)
             VALUES ($1, $2, $3, {} + $4, NULL)",
            now_ms(self.backend())
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(name)
            .bind(now())
            .bind(millis(lease))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Renews a replica's lease to `lease` from now; `false` when the
    /// replica was found gone meanwhile (it must not act under this id
    /// again) or is not registered.
    pub async fn renew_replica(&self, id: &str, lease: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE replicas SET lease_until = {} + $1 WHERE id = $2 AND gone_at IS NULL",
            now_ms(self.backend())
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(millis(lease))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up a replica's leases at a clean shutdown and removes it,
    /// unless it still has exchanges open: those are closed once its
    /// lease runs out, like a dead replica's.
    pub async fn retire_replica(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM leases WHERE holder = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM replicas WHERE id = $1
               AND NOT EXISTS (SELECT 1 FROM open_exchanges WHERE replica = $2)",
        )
        .bind(id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks gone every replica whose lease has been over for longer than
    /// `grace`; returns their ids.
    pub async fn mark_gone_replicas(&self, grace: Duration) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "UPDATE replicas SET gone_at = $1
             WHERE gone_at IS NULL AND lease_until + $2 < {}
             RETURNING id",
            now_ms(self.backend())
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now())
            .bind(millis(grace))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Removes gone replicas that have no exchange open any more.
    pub async fn forget_gone_replicas(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM replicas WHERE gone_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM open_exchanges o WHERE o.replica = replicas.id)",
        )
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Every registered replica, oldest first, with its open exchanges.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        let sql = format!(
            "SELECT r.id, r.name, r.started_at, r.lease_until - {}, r.gone_at,
                    (SELECT COUNT(*) FROM open_exchanges o WHERE o.replica = r.id)
             FROM replicas r ORDER BY r.started_at, r.id",
            now_ms(self.backend())
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRow {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    started_at: r.try_get(2)?,
                    lease_left_ms: r.try_get(3)?,
                    gone_at: r.try_get(4)?,
                    open: r.try_get::<i64, _>(5)?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Opens an exchange for `replica` unless `consumer` already has
    /// `limit` exchanges open on replicas that are not gone (a lease over
    /// by more than `grace` counts as gone). The count and the insert are
    /// one atomic step for every replica sharing the store: SQLite's write
    /// lock, or an advisory lock per consumer on PostgreSQL. Returns
    /// whether it was opened. The commit does not wait for the disk: the
    /// row is durable once the exchange's decision entry is.
    pub async fn open_exchange(
        &self,
        exchange_id: &str,
        replica: &str,
        consumer: &str,
        limit: u64,
        grace: Duration,
    ) -> Result<bool, StoreError> {
        if self.backend() == Backend::Postgres {
            let opened: bool = sqlx::query("SELECT jembatan_open_exchange($1, $2, $3, $4, $5, $6)")
                .bind(exchange_id)
                .bind(replica)
                .bind(consumer)
                .bind(now())
                .bind(to_i64(limit))
                .bind(millis(grace))
                .fetch_one(self.light_pool())
                .await?
                .try_get(0)?;
            return Ok(opened);
        }
        // one statement under SQLite's one writer: counted and inserted
        // atomically
        let sql = format!(
            "INSERT INTO open_exchanges (exchange_id, replica, consumer, opened_at)
             SELECT $1, $2, $3, $4
             WHERE (SELECT COUNT(*) FROM open_exchanges o JOIN replicas r ON r.id = o.replica
                    WHERE o.consumer = $5 AND r.gone_at IS NULL
                      AND r.lease_until + $6 >= {}) < $7",
            now_ms(self.backend())
        );
        let done = self
            .light_write(
                sql,
                vec![
                    Value::from(exchange_id.to_owned()),
                    Value::from(replica.to_owned()),
                    Value::from(consumer.to_owned()),
                    Value::from(now()),
                    Value::from(consumer.to_owned()),
                    Value::from(millis(grace)),
                    Value::from(to_i64(limit)),
                ],
            )
            .await?;
        Ok(done == 1)
    }

    /// Counts the open exchange `exchange_id` of `consumer` among its
    /// query streams against `provider`, unless it already has `limit` of
    /// them open on replicas that are not gone (a lease over by more than
    /// `grace` counts as gone). The count and the update are one atomic
    /// step for every replica sharing the store, as in
    /// [`Store::open_exchange`]: SQLite's write lock, or an advisory lock
    /// per consumer and provider on PostgreSQL. Returns whether it was
    /// taken; `false` too when the exchange is not open.
    pub async fn take_provider_stream(
        &self,
        exchange_id: &str,
        consumer: &str,
        provider: &str,
        limit: u64,
        grace: Duration,
    ) -> Result<bool, StoreError> {
        if self.backend() == Backend::Postgres {
            let taken: bool =
                sqlx::query("SELECT jembatan_take_provider_stream($1, $2, $3, $4, $5)")
                    .bind(exchange_id)
                    .bind(consumer)
                    .bind(provider)
                    .bind(to_i64(limit))
                    .bind(millis(grace))
                    .fetch_one(self.light_pool())
                    .await?
                    .try_get(0)?;
            return Ok(taken);
        }
        // one statement under SQLite's one writer: counted and updated
        // atomically
        let sql = format!(
            "UPDATE open_exchanges SET provider = $1
             WHERE exchange_id = $2 AND consumer = $3
               AND (SELECT COUNT(*) FROM open_exchanges o JOIN replicas r ON r.id = o.replica
                    WHERE o.consumer = $4 AND o.provider = $5 AND r.gone_at IS NULL
                      AND r.lease_until + $6 >= {}) < $7",
            now_ms(self.backend())
        );
        let done = self
            .light_write(
                sql,
                vec![
                    Value::from(provider.to_owned()),
                    Value::from(exchange_id.to_owned()),
                    Value::from(consumer.to_owned()),
                    Value::from(consumer.to_owned()),
                    Value::from(provider.to_owned()),
                    Value::from(millis(grace)),
                    Value::from(to_i64(limit)),
                ],
            )
            .await?;
        Ok(done == 1)
    }

    /// Stops counting the open exchange `exchange_id` as a query stream
    /// against its provider: the adapter's stream is over. (An exchange
    /// that ends stops counting anyway: its row goes.)
    pub async fn release_provider_stream(&self, exchange_id: &str) -> Result<(), StoreError> {
        self.light_write(
            "UPDATE open_exchanges SET provider = NULL WHERE exchange_id = $1".into(),
            vec![Value::from(exchange_id.to_owned())],
        )
        .await?;
        Ok(())
    }

    /// Forgets an open exchange: it ended, or it was never allowed.
    pub async fn close_exchange(&self, exchange_id: &str) -> Result<(), StoreError> {
        self.light_write(
            "DELETE FROM open_exchanges WHERE exchange_id = $1".into(),
            vec![Value::from(exchange_id.to_owned())],
        )
        .await?;
        Ok(())
    }

    /// Exchanges left open by gone replicas (or by replicas no longer
    /// registered), oldest first, at most `limit`.
    pub async fn left_open(&self, limit: u64) -> Result<Vec<LeftOpen>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.exchange_id, o.replica FROM open_exchanges o
             LEFT JOIN replicas r ON r.id = o.replica
             WHERE r.id IS NULL OR r.gone_at IS NOT NULL
             ORDER BY o.opened_at, o.exchange_id LIMIT $1",
        )
        .bind(to_i64(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LeftOpen {
                    exchange_id: r.try_get(0)?,
                    replica: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// The exchanges `replica` has open, oldest first.
    pub async fn open_exchanges_of(&self, replica: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT exchange_id FROM open_exchanges WHERE replica = $1
             ORDER BY opened_at, exchange_id",
        )
        .bind(replica)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Takes or renews the lease `name` for `holder` until `lease` from
    /// now: granted when nobody holds it, `holder` does, or the holder's
    /// lease is over. Returns whether `holder` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now_ms = now_ms(self.backend());
        let sql = format!(
            "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, {now_ms} + $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
             WHERE leases.holder = excluded.holder OR leases.until_ms < {now_ms}"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(millis(lease))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up the lease `name` if `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Who holds the lease `name` and for how many more milliseconds
    /// (negative: over), if anyone took it.
    pub async fn lease(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        let sql = format!(
            "SELECT holder, until_ms - {} FROM leases WHERE name = $1",
            now_ms(self.backend())
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }
}
