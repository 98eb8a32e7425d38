//! Fresh databases for tests: the provider's `penduduk` table (the
//! residents of [`crate::Federation::start`]) on SQLite, PostgreSQL or
//! MariaDB, and broker stores on PostgreSQL, each made for the test and
//! dropped after it. PostgreSQL and MariaDB are used when
//! `JEMBATAN_TEST_POSTGRES_URL` / `JEMBATAN_TEST_MYSQL_URL` are set; without
//! them a test says it is skipped.

use std::str::FromStr;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Executor};

/// The `nik` of resident `i`: 16 digits, `15070` then `i`.
pub fn nik(i: usize) -> String {
    format!("15070{i:011}")
}

/// A provider database's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

/// The provider's database: a fresh file, schema or database per test.
pub struct ProviderDb {
    kind: Kind,
    /// The URL the adapter connects with.
    pub url: String,
    admin_url: String,
    namespace: String,
}

impl ProviderDb {
    /// A fresh database holding `penduduk` with `rows` rows (each `nama`
    /// followed by `pad`), the same residents as the SQLite one
    /// [`crate::Federation::start`] makes, or `None`
    /// (after saying so) when the backend's URL is not set.
    pub async fn new(
        kind: Kind,
        dir: &std::path::Path,
        rows: usize,
        pad: &str,
    ) -> Option<ProviderDb> {
        sqlx::any::install_default_drivers();
        let name = format!("jembatan_iso_{}", uuid::Uuid::new_v4().simple());
        let db = match kind {
            Kind::Sqlite => ProviderDb {
                kind,
                url: format!("sqlite://{}", dir.join("prov.db").display()),
                admin_url: String::new(),
                namespace: String::new(),
            },
            Kind::Postgres | Kind::MySql => {
                let (variable, engine) = match kind {
                    Kind::Postgres => ("JEMBATAN_TEST_POSTGRES_URL", "PostgreSQL"),
                    _ => ("JEMBATAN_TEST_MYSQL_URL", "MariaDB"),
                };
                let Ok(admin_url) = std::env::var(variable) else {
                    println!("skipped: no {engine} (set {variable})");
                    return None;
                };
                let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
                admin(&admin_url, &format!("CREATE DATABASE {name}")).await;
                ProviderDb {
                    kind,
                    url: format!("{base}/{name}"),
                    admin_url,
                    namespace: name,
                }
            }
        };
        let url = match kind {
            Kind::Sqlite => format!("{}?mode=rwc", db.url),
            _ => db.url.clone(),
        };
        // the rows are written as SQL text: kept out of the log, which
        // tests search for residents' values
        let options = AnyConnectOptions::from_str(&url)
            .expect("a database URL")
            .disable_statement_logging();
        let pool = AnyPool::connect_with(options).await.expect("connect");
        pool.execute(
            "CREATE TABLE penduduk (nik VARCHAR(16) PRIMARY KEY, nama VARCHAR(200) NOT NULL,
             tgl_lahir VARCHAR(10), kecamatan VARCHAR(8) NOT NULL, status VARCHAR(10) NOT NULL)",
        )
        .await
        .expect("create table");
        for chunk in (0..rows).collect::<Vec<_>>().chunks(1000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| {
                    let kec = if i % 3 == 0 { "15.07.01" } else { "15.07.02" };
                    let status = if i % 10 == 9 { "MENINGGAL" } else { "HIDUP" };
                    format!(
                        "('{}', 'WARGA {i}{pad}', '19{:02}-0{}-1{}', '{kec}', '{status}')",
                        nik(*i),
                        50 + i % 50,
                        1 + i % 9,
                        i % 10,
                    )
                })
                .collect();
            let insert = format!("INSERT INTO penduduk VALUES {}", values.join(", "));
            pool.execute(AssertSqlSafe(insert)).await.expect("insert");
        }
        pool.close().await;
        Some(db)
    }
}

impl Drop for ProviderDb {
    /// Drops the database, also when the test failed: on a thread of its
    /// own, since the test's runtime may be unwinding.
    fn drop(&mut self) {
        let statement = match self.kind {
            Kind::Sqlite => return,
            Kind::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.namespace),
            // a connection the adapter still holds must not keep it waiting
            Kind::MySql => format!("DROP DATABASE IF EXISTS {}", self.namespace),
        };
        let url = self.admin_url.clone();
        let kind = self.kind;
        let namespace = self.namespace.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let pool = AnyPool::connect(&url).await?;
                if kind == Kind::MySql {
                    pool.execute("SET SESSION lock_wait_timeout = 10").await?;
                }
                if kind == Kind::Postgres {
                    drop_slots(&pool, &namespace).await;
                }
                pool.execute(AssertSqlSafe(statement)).await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            println!("could not drop {}: {err}", self.namespace);
        }
    }
}

/// Drops the logical replication slots of a database (a database with a
/// slot cannot be dropped, and a slot left behind holds WAL forever),
/// ending the sessions that hold them first.
async fn drop_slots(pool: &AnyPool, database: &str) {
    for _ in 0..100 {
        let _ = pool
            .execute(AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE database = '{database}' AND active_pid IS NOT NULL"
            )))
            .await;
        let dropped = pool
            .execute(AssertSqlSafe(format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = '{database}'"
            )))
            .await;
        if dropped.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs one `statement` on the database at `url` (`CREATE DATABASE`, a
/// role, a publication), panicking with the statement when it fails.
pub async fn admin(url: &str, statement: &str) {
    let pool = AnyPool::connect(url).await.expect("connect as admin");
    pool.execute(AssertSqlSafe(statement.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    pool.close().await;
}

/// A fresh PostgreSQL database for a broker store (replicas share it), or
/// `None` with a skip line when `JEMBATAN_TEST_POSTGRES_URL` is unset.
pub struct PgStore {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgStore {
    /// A database named `prefix` and a random suffix.
    pub async fn fresh(prefix: &str) -> Option<PgStore> {
        sqlx::any::install_default_drivers();
        let Ok(admin_url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
            println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
            return None;
        };
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        admin(&admin_url, &format!("CREATE DATABASE {name}")).await;
        let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
        let url = format!("{base}/{name}");
        Some(PgStore {
            admin_url,
            name,
            url,
        })
    }

    /// Drops the database, closing what still holds it open.
    pub async fn drop_db(self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        admin(&self.admin_url, &statement).await;
    }
}
