//! B6: the cost of coordination — two brokers on one PostgreSQL store
//! against one broker on it, in the same run: lookups with 32 clients
//! (spread over the replicas), and durable audit appends (the appenders
//! spread over two store handles, each with its own `AuditLog`). On two
//! shared cores a ratio near 1 is expected; the figure is there so that
//! the cost of running replicas is visible and cannot grow unnoticed.

use std::path::Path;
use std::time::Duration;

use jembatan_store::Store;

use crate::audit::{append_through, replace_db};
use crate::cluster::Cluster;
use crate::lookup::{Side, through_broker};
use crate::population::Population;
use crate::{BenchError, ReplicaFigures};

/// Clients of the lookup figure.
pub(crate) const CLIENTS: usize = 32;

/// A fresh database on the server, dropped by [`FreshDb::drop_db`].
struct FreshDb {
    admin: sqlx::AnyPool,
    name: String,
    url: String,
}

impl FreshDb {
    async fn create(url: &str, what: &str) -> Result<FreshDb, BenchError> {
        let admin = Store::admin_pool(url).await?;
        let name = format!(
            "jembatan_bench_{what}_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        let url = replace_db(url, &name)?;
        Ok(FreshDb { admin, name, url })
    }

    async fn drop_db(self) -> Result<(), BenchError> {
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {}",
            self.name
        )))
        .execute(&self.admin)
        .await;
        self.admin.close().await;
        dropped?;
        Ok(())
    }
}

pub(crate) async fn run(
    population: &Population,
    dir: &Path,
    duration: Duration,
) -> Result<ReplicaFigures, BenchError> {
    let lookup_one = lookups(population, dir, 1, duration).await?.per_s();
    let lookup_two = lookups(population, dir, 2, duration).await?.per_s();
    let appends_one = appends(&population.url, 1, duration).await?;
    let appends_two = appends(&population.url, 2, duration).await?;
    Ok(ReplicaFigures {
        clients: CLIENTS,
        lookup_one_per_s: lookup_one,
        lookup_two_per_s: lookup_two,
        appends_one_per_s: appends_one,
        appends_two_per_s: appends_two,
    })
}

/// Lookups by [`CLIENTS`] clients through `brokers` replicas on a fresh
/// PostgreSQL store.
pub(crate) async fn lookups(
    population: &Population,
    dir: &Path,
    brokers: usize,
    duration: Duration,
) -> Result<Side, BenchError> {
    let db = FreshDb::create(&population.url, "replicas").await?;
    let measured = async {
        let dir = dir.join(format!("replicas-{brokers}"));
        std::fs::create_dir_all(&dir)?;
        let cluster = Cluster::start_on(population, &dir, Some(&db.url), brokers).await?;
        let side = through_broker(population, &cluster, CLIENTS, duration).await;
        cluster.stop().await;
        let side = side?;
        if side.found != side.done {
            return Err(BenchError::Inconsistent(format!(
                "{} of {} existing NIKs not found through {brokers} replicas",
                side.done - side.found,
                side.done
            )));
        }
        Ok(side)
    }
    .await;
    let dropped = db.drop_db().await;
    let side = measured?;
    dropped?;
    Ok(side)
}

/// Durable appends per second through `handles` handles of a fresh store.
async fn appends(url: &str, handles: usize, duration: Duration) -> Result<f64, BenchError> {
    let db = FreshDb::create(url, "replica_appends").await?;
    let measured = async {
        let mut stores = Vec::with_capacity(handles);
        for _ in 0..handles {
            stores.push(Store::connect(&db.url).await?);
        }
        let appends = append_through(&stores, duration).await;
        for store in stores {
            store.close().await;
        }
        appends.map(|a| a.per_s())
    }
    .await;
    let dropped = db.drop_db().await;
    let per_s = measured?;
    dropped?;
    Ok(per_s)
}
