//! B3: durable audit appends per second with many concurrent appenders,
//! through `AuditLog` on a fresh SQLite store and a fresh PostgreSQL database.

use std::path::Path;
use std::time::{Duration, Instant};

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::{AuditLog, Store};
use tokio::task::JoinSet;

use crate::{AUDIT_APPENDERS, AuditFigures, BenchError};

/// Appends made and how long they took.
pub(crate) struct Appends {
    count: u64,
    seconds: f64,
}

impl Appends {
    pub(crate) fn per_s(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

/// The name of the key that signs the bench logs' checkpoints.
pub(crate) const BENCH_LOG_ORIGIN: &str = "bench.jembatan/audit-log";

/// The key that signs the bench logs' checkpoints (fixed, so a filled log
/// can be verified and a broker started on it).
pub(crate) fn bench_signer() -> Result<jembatan_tlog::note::Signer, BenchError> {
    jembatan_tlog::note::Signer::from_seed(BENCH_LOG_ORIGIN, &[7; 32])
        .map_err(|e| BenchError::Inconsistent(e.to_string()))
}

/// The SQLite log B3 fills, in the bench's directory.
pub(crate) const LOG_FILE: &str = "audit-bench.db";

/// B3 on SQLite and PostgreSQL, then `verify` on the SQLite log (at
/// [`LOG_FILE`]) filled to `verify_entries`. The broker start figures are
/// taken on that log after ([`crate::start::run`]).
pub(crate) async fn run(
    pg_url: &str,
    dir: &Path,
    duration: Duration,
    verify_entries: u64,
) -> Result<AuditFigures, BenchError> {
    let path = dir.join(LOG_FILE);
    let path_text = path
        .to_str()
        .ok_or_else(|| BenchError::Options("temporary directory is not UTF-8".into()))?;
    let store = Store::connect(path_text).await?;
    let sqlite = append_for(&store, duration).await;
    let verified = match &sqlite {
        Ok(_) => Some(time_verify(&store, verify_entries).await),
        Err(_) => None,
    };
    store.close().await;
    let sqlite = sqlite?;
    let (verify_entries, verify_seconds) = verified.transpose()?.unwrap_or_default();
    let pg = on_fresh_pg_database(pg_url, duration).await?;
    Ok(AuditFigures {
        appenders: AUDIT_APPENDERS,
        sqlite_appends: sqlite.count,
        sqlite_per_s: sqlite.per_s(),
        pg_appends: pg.count,
        pg_per_s: pg.per_s(),
        verify_entries,
        verify_seconds,
        starts: Vec::new(),
        archive: None,
    })
}

/// Fills the log to `entries` (many appenders, large group commits; not
/// timed), signs a checkpoint of it, and times the offline verification:
/// every entry re-read, checked canonical, re-hashed into the tree, and
/// the checkpoint's signature and root checked.
async fn time_verify(store: &Store, entries: u64) -> Result<(u64, f64), BenchError> {
    let (size, verifier) = fill_log(store, entries).await?;
    let started = Instant::now();
    let report = jembatan_store::verify::verify(store, &verifier)
        .await
        .map_err(|e| BenchError::Inconsistent(format!("the bench log does not verify: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    if report.size != size {
        return Err(BenchError::Inconsistent(format!(
            "verified {} entries of {size}",
            report.size
        )));
    }
    Ok((size, seconds))
}

/// Appends lookup-shaped entries to `store`'s log through its own append
/// path (`AuditLog`, 2048 appenders at once, so the group commit writes
/// batches of up to 1024) until it holds at least `entries`.
pub async fn fill_entries(store: &Store, entries: u64) -> Result<(), BenchError> {
    const FILLERS: u64 = 2048;
    let log = AuditLog::start(store.clone());
    let have = log.size().await?;
    if have < entries {
        let missing = entries - have;
        let mut set = JoinSet::new();
        for task in 0..FILLERS {
            let log = log.clone();
            let share = missing / FILLERS + u64::from(task < missing % FILLERS);
            set.spawn(async move {
                for n in 0..share {
                    log.append(entry(&format!("fill-{task}-{n}"))).await?;
                }
                Ok::<(), BenchError>(())
            });
        }
        while let Some(joined) = set.join_next().await {
            joined.map_err(|e| BenchError::Inconsistent(format!("filler task: {e}")))??;
        }
    }
    Ok(())
}

/// Appends lookup-shaped entries to `store`'s log until it holds at least
/// `entries`, then signs a checkpoint of the whole log with the bench's
/// fixed key and stores it. Returns the log size and the key's verifier,
/// so `jembatan audit verify` can be run (and profiled) on the result.
pub async fn fill_log(
    store: &Store,
    entries: u64,
) -> Result<(u64, jembatan_tlog::note::Verifier), BenchError> {
    fill_entries(store, entries).await?;
    let mut range = jembatan_tlog::merkle::CompactRange::new();
    jembatan_store::verify::catch_up(store, &mut range, None)
        .await
        .map_err(|e| BenchError::Inconsistent(format!("cannot read the log back: {e}")))?;
    let size = range.size();
    let signer = bench_signer()?;
    let note = jembatan_tlog::note::Checkpoint::new(signer.name(), size, range.root())
        .sign(&signer)
        .map_err(|e| BenchError::Inconsistent(e.to_string()))?;
    store
        .add_checkpoint(size, &hex::encode(range.root()), &note)
        .await?;
    Ok((size, signer.verifier()))
}

/// Creates a database, appends to its store, drops it (also on error).
async fn on_fresh_pg_database(url: &str, duration: Duration) -> Result<Appends, BenchError> {
    let admin = Store::admin_pool(url).await?;
    let name = format!(
        "jembatan_bench_audit_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    let measured = async {
        let store = Store::connect(&replace_db(url, &name)?).await?;
        let appends = append_for(&store, duration).await;
        store.close().await;
        appends
    }
    .await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin)
    .await;
    admin.close().await;
    let appends = measured?;
    dropped?;
    Ok(appends)
}

pub(crate) fn replace_db(url: &str, db: &str) -> Result<String, BenchError> {
    let (base, rest) = url
        .split_once("://")
        .ok_or_else(|| BenchError::Options(format!("not a database URL: {url}")))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Ok(format!("{base}://{authority}/{db}{query}"))
}

/// `AUDIT_APPENDERS` tasks appending until `duration` has passed; the count
/// is checked against the log's size.
async fn append_for(store: &Store, duration: Duration) -> Result<Appends, BenchError> {
    append_through(std::slice::from_ref(store), duration).await
}

/// [`append_for`] with the appenders spread over several handles of one
/// store, each with its own `AuditLog` — as replicas append.
pub(crate) async fn append_through(
    stores: &[Store],
    duration: Duration,
) -> Result<Appends, BenchError> {
    let logs: Vec<AuditLog> = stores.iter().map(|s| AuditLog::start(s.clone())).collect();
    let log = logs[0].clone();
    let before = log.size().await?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = JoinSet::new();
    for task in 0..AUDIT_APPENDERS {
        let log = logs[task % logs.len()].clone();
        set.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                log.append(entry(&format!("bench-{task}-{n}"))).await?;
                n += 1;
            }
            Ok::<u64, BenchError>(n)
        });
    }
    let mut count = 0;
    while let Some(joined) = set.join_next().await {
        count += joined.map_err(|e| BenchError::Inconsistent(format!("appender task: {e}")))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = log.size().await?;
    if after - before != count {
        return Err(BenchError::Inconsistent(format!(
            "{count} appends acknowledged, the log grew by {}",
            after - before
        )));
    }
    Ok(Appends { count, seconds })
}

/// A decision entry shaped like the broker's for a lookup.
fn entry(exchange_id: &str) -> AuditEntry {
    AuditEntry {
        v: 1,
        kind: EntryKind::Decision,
        exchange_id: exchange_id.into(),
        time: chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        operation: "lookup".into(),
        caller: "agency:dinsos".into(),
        consumer: Some("dinsos".into()),
        provider: Some("dukcapil".into()),
        dataset: Some("dukcapil.penduduk".into()),
        purpose: Some("bench".into()),
        fields: vec!["nik".into(), "nama_lengkap".into(), "kode_desa".into()],
        filter: None,
        subject_hash: Some("0".repeat(64)),
        subjects: Vec::new(),
        unregistered_purpose: None,
        limit: None,
        agreement_id: Some("bench-1".into()),
        agreement_terms_sha256: Some("0".repeat(64)),
        translation: None,
        decision: Decision::Allow,
        reasons: vec![],
        status: ExchangeStatus::Started,
        rows: 0,
        bytes: 0,
        payload_sha256: None,
        received: None,
        duration_ms: None,
        error: None,
        trace_id: None,
        adapter_endpoint: None,
        change: None,
        registry: None,
        subscription: None,
    }
}
