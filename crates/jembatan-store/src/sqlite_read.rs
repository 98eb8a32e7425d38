//! The single-row read every decision starts with, the policy version,
//! made on the caller's thread on a SQLite file store. Through sqlx each
//! statement is handed to a connection's worker thread and back: two
//! thread switches and a channel each way, several times the read's own
//! cost at thousands of decisions a second.
//!
//! The read is of one hot page: it takes microseconds and, the file being
//! in WAL mode, waits for no writer. Each read is a transaction of its
//! own, so it sees every commit made before it began, through any
//! connection or process: a policy change whose call has returned is seen
//! as when the pool read it.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// A read-only connection on the store file.
#[derive(Debug)]
pub(crate) struct Reader {
    conn: Mutex<Connection>,
}

impl Reader {
    /// How long a read waits for a lock (only while the file's WAL index
    /// is rebuilt) before the pool reads instead.
    const BUSY: Duration = Duration::from_millis(50);

    pub(crate) fn open(path: &Path) -> Result<Reader, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Self::BUSY)?;
        Ok(Reader {
            conn: Mutex::new(conn),
        })
    }

    /// The policy version (see [`crate::Store::policy_version`]).
    pub(crate) fn policy_version(&self) -> Result<i64, rusqlite::Error> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut read = conn.prepare_cached("SELECT n FROM policy_version WHERE id = 1")?;
        let n: Option<i64> = read.query_row([], |r| r.get(0)).optional()?;
        Ok(n.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    /// The version read on the caller's thread is the one the pool reads,
    /// after every change, whichever connection or store made it.
    #[tokio::test]
    async fn the_version_read_directly_follows_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store = Store::connect(path.to_str().unwrap()).await.unwrap();
        let other = Store::connect(path.to_str().unwrap()).await.unwrap();
        let reader = store.sqlite_reader().expect("a file store has a reader");
        let pooled = || async {
            let n: Option<i64> = sqlx::query_scalar("SELECT n FROM policy_version WHERE id = 1")
                .fetch_optional(store.pool())
                .await
                .unwrap();
            n.unwrap_or(0)
        };
        let before = reader.policy_version().unwrap();
        assert_eq!(before, pooled().await);
        for (i, by) in [&store, &other, &other, &store].into_iter().enumerate() {
            sqlx::query(
                "INSERT INTO policy_version (id, n) VALUES (1, 1) \
                 ON CONFLICT (id) DO UPDATE SET n = n + 1",
            )
            .execute(by.pool())
            .await
            .unwrap();
            let read = reader.policy_version().unwrap();
            assert_eq!(read, pooled().await);
            assert_eq!(read, before.max(0) + i as i64 + 1, "after change {i}");
        }
        for s in [store, other] {
            s.close().await;
        }
    }
}
