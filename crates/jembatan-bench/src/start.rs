//! Broker start on a large log: how long `Broker::start` takes on a store
//! already holding `entries` audit entries and a signed checkpoint of
//! them. The first start on such a store builds the tree's hash tiles
//! (a store filled outside a broker has none); every later start resumes
//! from the stored tiles and checks only the latest checkpoint, so its
//! time should not grow with the log. Then the log's first entries are
//! archived (`audit archive`), timed.

use std::path::Path;
use std::time::Instant;

use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Identity, Role};
use jembatan_store::Store;
use jembatan_testkit::Pki;

use crate::BenchError;
use crate::audit::{BENCH_LOG_ORIGIN, bench_signer, fill_log};

/// Start times of a broker on one store.
#[derive(Debug, Clone, PartialEq)]
pub struct StartPoint {
    /// Audit entries in the store.
    pub entries: u64,
    /// Seconds the first start took (building the tiles).
    pub first_start_s: f64,
    /// Seconds a later start took (from the stored tiles).
    pub start_s: f64,
}

/// The start times on the SQLite log at `store` (already holding
/// `entries` and a checkpoint of them), then on the same log filled on to
/// each of `more` in turn.
pub(crate) async fn run(
    store: &Path,
    entries: u64,
    more: &[u64],
    dir: &Path,
) -> Result<Vec<StartPoint>, BenchError> {
    crate::progress(format_args!("broker start on a log of {entries} entries"));
    let mut starts = vec![time_starts(store, entries, dir).await?];
    let url = store
        .to_str()
        .ok_or_else(|| BenchError::Options("temporary directory is not UTF-8".into()))?;
    for &entries in more {
        crate::progress(format_args!(
            "filling the log to {entries} entries for the broker start figure"
        ));
        let filling = Store::connect(url).await?;
        let filled = fill_log(&filling, entries).await;
        filling.close().await;
        let (size, _) = filled?;
        crate::progress(format_args!("broker start on a log of {size} entries"));
        starts.push(time_starts(store, size, dir).await?);
    }
    Ok(starts)
}

/// Starts and shuts down a broker on the SQLite store at `store` twice,
/// timing each `Broker::start`. The store's checkpoints must be signed by
/// the bench's key ([`bench_signer`]), which the broker is given.
async fn time_starts(store: &Path, entries: u64, dir: &Path) -> Result<StartPoint, BenchError> {
    let dir = dir.join(format!("start-{entries}"));
    std::fs::create_dir_all(&dir)?;
    let broker_id = Identity::new(Role::Broker, None)
        .map_err(|e| BenchError::Inconsistent(format!("broker identity: {e}")))?;
    let pki = Pki::issue(&dir.join("certs"), &[("broker", broker_id)])?;
    let tls = &pki["broker"];
    let signer = bench_signer()?;
    let key = dir.join("checkpoint.key");
    if !key.exists() {
        jembatan_pki::files::create_secret(&key, (signer.to_key_string() + "\n").as_bytes())?;
    }
    let toml = format!(
        "version = 1\nlisten = \"127.0.0.1:0\"\nstore = {store:?}\naudit_key = {audit_key:?}\n\
         checkpoint_key = {key:?}\nlog_origin = {BENCH_LOG_ORIGIN:?}\n\
         checkpoint_every = 1000000000\ncheckpoint_interval = \"1h\"\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {tls_key:?}\n",
        store = store.display().to_string(),
        audit_key = dir.join("audit.key").display().to_string(),
        key = key.display().to_string(),
        ca = tls.ca.display().to_string(),
        cert = tls.cert.display().to_string(),
        tls_key = tls.key.display().to_string(),
    );
    let config = BrokerConfig::from_toml(&toml, &dir)
        .map_err(|e| BenchError::Inconsistent(format!("start bench broker config: {e}")))?;
    let first_start_s = start_once(&config).await?;
    let start_s = start_once(&config).await?;
    Ok(StartPoint {
        entries,
        first_start_s,
        start_s,
    })
}

/// Seconds `Broker::start` took; the broker is shut down after.
async fn start_once(config: &BrokerConfig) -> Result<f64, BenchError> {
    let started = Instant::now();
    let broker = Broker::start(config).await?;
    let seconds = started.elapsed().as_secs_f64();
    broker.shutdown().await?;
    Ok(seconds)
}

/// `audit archive` of the first entries of a log.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivePoint {
    /// Entries written to the archive file.
    pub entries: u64,
    /// Seconds the archive took: checking and writing the entries, then
    /// removing them from the store.
    pub seconds: f64,
}

/// Archives the entries of the SQLite log at `store` below `below` (which
/// a signed checkpoint must cover; the tiles are built by [`run`]'s first
/// start), timed.
pub(crate) async fn archive(
    store: &Path,
    below: u64,
    dir: &Path,
) -> Result<ArchivePoint, BenchError> {
    crate::progress(format_args!(
        "audit archive of the log's first {below} entries"
    ));
    let url = store
        .to_str()
        .ok_or_else(|| BenchError::Options("temporary directory is not UTF-8".into()))?;
    let opened = Store::connect(url).await?;
    let verifier = bench_signer()?.verifier();
    let file = dir.join("archive-0.jsonl");
    let started = Instant::now();
    let archived = jembatan_store::archive::archive(
        &opened,
        &verifier,
        &jembatan_store::archive::Bound::Below(below),
        &file,
        &mut |_| {},
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    opened.close().await;
    let archived = archived.map_err(|e| BenchError::Inconsistent(format!("audit archive: {e}")))?;
    std::fs::remove_file(&file)?;
    Ok(ArchivePoint {
        entries: archived.entries,
        seconds,
    })
}
