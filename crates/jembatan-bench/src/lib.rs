//! `jembatan bench`: Jembatan measured against direct database reads in the
//! same run, so that ratios stay meaningful on a shared, noisy machine.
//!
//! One run sets up a fresh PostgreSQL schema holding a population-registry
//! table, a development PKI, an adapter and a broker in process, and then
//! measures:
//!
//! - B1 bulk: a full-table `Query` through broker ← adapter ← PostgreSQL,
//!   against `COPY ... TO STDOUT` and a plain sqlx fetch of the same columns;
//! - B2 lookups: audited `Lookup`s by random NIK with 1, 8 and 32 concurrent
//!   clients, against prepared point queries with the same concurrency;
//! - B3 audit: durable audit appends per second on SQLite and PostgreSQL,
//!   `verify` of a large log, and a broker's start time on it;
//! - B4 memory: peak RSS of a broker and an adapter run as child processes
//!   while they stream 100k (and more) rows;
//! - B5 batch verification: `VerifyBatch` calls of 10,000 keys against
//!   `WHERE nik = ANY($1)` batches of the same keys;
//! - B6 replicas: two brokers on one PostgreSQL store against one (lookups
//!   at 32 clients, audit appends);
//! - B7 subscriptions: a subscription catching up the whole table against
//!   a `Query` of it, the latency from an `UPDATE`'s commit to its delivery,
//!   and a child-process broker's RSS with 100 subscriptions against idle.
//!
//! Figures are never asserted; the report only checks that counts agree.

mod audit;
mod bulk;
mod cluster;
mod lookup;
mod memory;
mod population;
mod replicas;
mod report;
mod start;
mod subscribe;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

pub use audit::{fill_entries, fill_log};
pub use report::{
    AuditFigures, BulkFigures, LookupFigures, MAPPING, MemoryFigures, MemoryPoint,
    PgStoreLookupFigures, ReplicaFigures, Report, SubscribeFigures, SubscribeLogical, SubscribeRss,
    VerifyFigures,
};
pub use start::{ArchivePoint, StartPoint};
pub use subscribe::SUBSCRIPTIONS;

/// Rows in the table by default.
pub const DEFAULT_ROWS: u64 = 1_000_000;
/// Rows in the table with `--quick`.
pub const QUICK_ROWS: u64 = 50_000;
/// Duration of each timed phase by default.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Duration of each timed phase with `--quick`.
pub const QUICK_DURATION: Duration = Duration::from_secs(2);
/// Default PostgreSQL server.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Concurrency levels of the lookup figures.
pub const LOOKUP_CONCURRENCY: [usize; 3] = [1, 8, 32];
/// Concurrent appenders of the audit figures.
pub const AUDIT_APPENDERS: usize = 64;
/// Entries `jembatan audit verify` is timed on.
pub const VERIFY_ENTRIES: u64 = 1_000_000;
/// The larger log a broker's start is timed on too when `--rows` is at
/// least this.
pub const LARGE_LOG_ENTRIES: u64 = 10_000_000;
/// The same with `--quick`.
pub const QUICK_VERIFY_ENTRIES: u64 = 20_000;
/// Keys B5 verifies (at most the table's rows).
pub const VERIFY_BATCH_KEYS: u64 = 1_000_000;
/// The same with `--quick`.
pub const QUICK_VERIFY_BATCH_KEYS: u64 = 20_000;

/// One part of the benchmark, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// B1: full-table query against COPY and a plain fetch.
    Bulk,
    /// B2: audited lookups against prepared point queries.
    Lookup,
    /// B3: durable audit appends, `verify` of a large log, broker start.
    Audit,
    /// B4: broker and adapter peak RSS while streaming.
    Memory,
    /// B5: batch verification against `= ANY` batches.
    Verify,
    /// B6: two brokers on one PostgreSQL store against one.
    Replicas,
    /// B7: subscription catch-up, change latency and memory.
    Subscribe,
}

/// What to run and how big.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows in the `penduduk` table.
    pub rows: u64,
    /// PostgreSQL server (any database on it; a schema and a database are
    /// created and dropped there).
    pub pg_url: String,
    /// Small and short, for smoke runs.
    pub quick: bool,
    /// Duration of each timed phase (lookups, audit appends).
    pub duration: Duration,
    /// The `jembatan` executable, to run broker and adapter as child
    /// processes for the memory figures; `None` skips them.
    pub exe: Option<PathBuf>,
    /// The parts to run; empty means all.
    pub only: Vec<Part>,
}

impl Options {
    /// Options with the defaults of `jembatan bench` for what is `None`.
    pub fn new(
        rows: Option<u64>,
        pg_url: String,
        quick: bool,
        duration: Option<Duration>,
        exe: Option<PathBuf>,
    ) -> Options {
        let (default_rows, default_duration) = if quick {
            (QUICK_ROWS, QUICK_DURATION)
        } else {
            (DEFAULT_ROWS, DEFAULT_DURATION)
        };
        Options {
            rows: rows.unwrap_or(default_rows),
            pg_url,
            quick,
            duration: duration.unwrap_or(default_duration),
            exe,
            only: Vec::new(),
        }
    }

    /// Whether `part` is to run.
    pub fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// Parses a duration such as `10s`, `500ms` or `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    humantime::parse_duration(text).map_err(|source| BadDuration {
        text: text.to_owned(),
        source,
    })
}

/// Text that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{text:?}: {source}")]
pub struct BadDuration {
    text: String,
    source: humantime::DurationError,
}

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker store: {0}")]
    Store(#[from] jembatan_store::StoreError),
    #[error("development PKI: {0}")]
    Pki(#[from] jembatan_pki::PkiError),
    #[error("adapter: {0}")]
    Adapter(#[from] jembatan_adapter::AdapterError),
    #[error("broker: {0}")]
    Broker(#[from] jembatan_broker::BrokerError),
    #[error("connection: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Serve(#[from] jembatan_testkit::serve::ServeError),
    #[error("exchange refused or failed: {0}")]
    Exchange(#[from] tonic::Status),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("child process: {0}")]
    Child(String),
    #[error("inconsistent result: {0}")]
    Inconsistent(String),
}

/// Runs every benchmark and returns the figures. The PostgreSQL schema and
/// database it creates are dropped before it returns, also on error.
pub async fn run(options: &Options) -> Result<Report, BenchError> {
    if options.rows == 0 {
        return Err(BenchError::Options("--rows must be at least 1".into()));
    }
    if options.duration.is_zero() {
        return Err(BenchError::Options("--duration must be positive".into()));
    }
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir()?;
    let mut report = if [
        Part::Bulk,
        Part::Lookup,
        Part::Memory,
        Part::Verify,
        Part::Replicas,
        Part::Subscribe,
    ]
    .iter()
    .any(|&p| options.runs(p))
    {
        let population = population::Population::create(&options.pg_url, options.rows).await?;
        let result = run_on(options, Some(&population), tmp.path()).await;
        let dropped = population.drop_schema().await;
        let report = result?;
        dropped?;
        report
    } else {
        run_on(options, None, tmp.path()).await?
    };
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The selected parts; `population` is there unless only B3 runs.
async fn run_on(
    options: &Options,
    population: Option<&population::Population>,
    dir: &std::path::Path,
) -> Result<Report, BenchError> {
    let mut report = Report::new(options);
    if let Some(population) = population
        && [Part::Bulk, Part::Lookup, Part::Verify, Part::Subscribe]
            .iter()
            .any(|&p| options.runs(p))
    {
        let cluster = cluster::Cluster::start(population, dir).await?;
        let measured = in_cluster(options, population, &cluster, &mut report).await;
        cluster.stop().await;
        measured?;
    }
    if let Some(population) = population
        && options.runs(Part::Lookup)
    {
        progress(format_args!(
            "B2 lookups on a PostgreSQL store: {} clients, {:?}",
            replicas::CLIENTS,
            options.duration
        ));
        let dir = dir.join("pg-store");
        std::fs::create_dir_all(&dir)?;
        let side = replicas::lookups(population, &dir, 1, options.duration).await?;
        report.lookups_pg_store = Some(PgStoreLookupFigures {
            clients: replicas::CLIENTS,
            per_s: side.per_s(),
            p50_ms: side.quantile_ms(0.50),
            p99_ms: side.quantile_ms(0.99),
        });
    }
    if options.runs(Part::Audit) {
        progress(format_args!(
            "B3 audit: {AUDIT_APPENDERS} appenders, {:?} per store",
            options.duration
        ));
        let verify_entries = if options.quick {
            QUICK_VERIFY_ENTRIES
        } else {
            VERIFY_ENTRIES
        };
        let more_starts: &[u64] = if options.rows >= LARGE_LOG_ENTRIES {
            &[LARGE_LOG_ENTRIES]
        } else {
            &[]
        };
        let mut figures =
            audit::run(&options.pg_url, dir, options.duration, verify_entries).await?;
        if figures.verify_entries > 0 {
            let log = dir.join(audit::LOG_FILE);
            figures.starts = start::run(&log, figures.verify_entries, more_starts, dir).await?;
            figures.archive = Some(start::archive(&log, figures.verify_entries, dir).await?);
        }
        report.audit = Some(figures);
    }
    if let Some(population) = population
        && options.runs(Part::Replicas)
    {
        progress(format_args!(
            "B6 replicas: one and two brokers on one PostgreSQL store, {:?} each",
            options.duration
        ));
        report.replicas = Some(replicas::run(population, dir, options.duration).await?);
    }
    if let Some(population) = population
        && options.runs(Part::Subscribe)
        && let Some(figures) = report.subscribe.as_mut()
    {
        progress(format_args!(
            "B7 subscriptions: broker RSS with {SUBSCRIPTIONS} subscriptions"
        ));
        figures.rss = subscribe::rss(options, population, dir).await?;
        progress(format_args!(
            "B7 subscriptions: updates over {:?} through PostgreSQL logical replication",
            options.duration
        ));
        figures.logical = subscribe::logical(population, dir, options.duration).await?;
        if let SubscribeLogical::Skipped(why) = &figures.logical {
            progress(format_args!("B7 logical replication skipped: {why}"));
        }
    }
    report.memory = if let Some(population) = population
        && options.runs(Part::Memory)
    {
        memory::run(options, population, dir).await?
    } else {
        MemoryFigures::Skipped("not selected with --only".into())
    };
    Ok(report)
}

/// B1, B2 and B5, on the in-process broker and adapter.
async fn in_cluster(
    options: &Options,
    population: &population::Population,
    cluster: &cluster::Cluster,
    report: &mut Report,
) -> Result<(), BenchError> {
    if options.runs(Part::Bulk) {
        progress(format_args!("B1 bulk: {} rows", options.rows));
        report.bulk = Some(bulk::run(population, cluster).await?);
    }
    if options.runs(Part::Lookup) {
        for &c in &LOOKUP_CONCURRENCY {
            progress(format_args!(
                "B2 lookups: {c} concurrent clients, {:?} each way",
                options.duration
            ));
            report
                .lookups
                .push(lookup::run(population, cluster, c, options.duration).await?);
        }
    }
    if options.runs(Part::Verify) {
        let most = if options.quick {
            QUICK_VERIFY_BATCH_KEYS
        } else {
            VERIFY_BATCH_KEYS
        };
        let keys = most.min(options.rows);
        progress(format_args!("B5 batch verification: {keys} keys"));
        report.verify = Some(verify::run(population, cluster, keys).await?);
    }
    if options.runs(Part::Subscribe) {
        progress(format_args!(
            "B7 subscriptions: catch-up of {} rows, then updates over {:?}",
            options.rows, options.duration
        ));
        report.subscribe = Some(subscribe::run(population, cluster, options.duration).await?);
    }
    Ok(())
}

fn progress(what: std::fmt::Arguments<'_>) {
    eprintln!("bench: {what}");
}
