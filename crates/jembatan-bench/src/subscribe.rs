//! B7: change subscriptions (`Exchange.Subscribe`) on the `penduduk`
//! table, whose `diubah` column every write sets:
//!
//! - catch-up: a new subscription reads every row from the first change,
//!   10,000 changes a batch, against a `Query` of the same rows in the
//!   same run (both in the provider's schema);
//! - latency: single-row `UPDATE`s spread over the phase, each timed from
//!   its commit to its arrival at a running subscription (the adapter
//!   polls at its default interval and lag);
//! - memory: the RSS of a broker run as a child process holding 100
//!   subscriptions, against the same broker idle;
//! - logical: the latency phase again with the adapter reading a
//!   PostgreSQL logical replication slot (when `wal_level = logical`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::cluster::{Cluster, DATASET, PURPOSE};
use crate::memory::Children;
use crate::population::{Population, nik};
use crate::{BenchError, Options, SubscribeFigures, SubscribeLogical, SubscribeRss};

/// Subscriptions the memory figure holds open.
pub const SUBSCRIPTIONS: usize = 100;
/// Changes per batch.
const BATCH: u32 = 10_000;
/// Time between two updates of the latency phase (fewer over short phases
/// are spread wider).
const UPDATE_EVERY: Duration = Duration::from_millis(100);
/// Fewest updates the latency phase makes.
const MIN_UPDATES: u64 = 10;
/// Connections the memory figure's subscriptions share.
const CONNECTIONS: usize = 10;
/// How long every change of the latency phase may take to arrive after
/// the last update.
const SETTLE: Duration = Duration::from_secs(15);

fn request(cursor: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        dataset: DATASET.into(),
        purpose: PURPOSE.into(),
        cursor: cursor.into(),
        batch_size: BATCH,
        ..Default::default()
    }
}

/// A subscription stream past its `started` message.
async fn open(
    client: &mut ExchangeClient<Channel>,
    cursor: &str,
) -> Result<Streaming<pb::SubscribeResponse>, BenchError> {
    let mut stream = client.subscribe(request(cursor)).await?.into_inner();
    match stream.message().await? {
        Some(pb::SubscribeResponse {
            item: Some(pb::subscribe_response::Item::Started(_)),
        }) => Ok(stream),
        other => Err(BenchError::Inconsistent(format!(
            "a subscription began with {other:?} instead of its start"
        ))),
    }
}

/// The next batch, checked against its receipt.
async fn batch(
    stream: &mut Streaming<pb::SubscribeResponse>,
) -> Result<pb::ChangeBatch, BenchError> {
    loop {
        match stream.message().await? {
            Some(pb::SubscribeResponse {
                item: Some(pb::subscribe_response::Item::Batch(b)),
            }) => {
                if let Some(r) = &b.receipt
                    && r.rows != b.changes.len() as u64
                {
                    return Err(BenchError::Inconsistent(format!(
                        "a batch of {} changes has a receipt for {}",
                        b.changes.len(),
                        r.rows
                    )));
                }
                return Ok(b);
            }
            Some(_) => {}
            None => {
                return Err(BenchError::Inconsistent(
                    "a subscription ended while it was read".into(),
                ));
            }
        }
    }
}

/// A subscription read from `cursor` until `rows` changes arrived: how
/// long that took and the cursor after them.
struct CaughtUp {
    changes: u64,
    seconds: f64,
    cursor: String,
}

async fn catch_up(
    client: &mut ExchangeClient<Channel>,
    cursor: &str,
    rows: u64,
) -> Result<CaughtUp, BenchError> {
    let started = Instant::now();
    let mut stream = open(client, cursor).await?;
    let mut caught = CaughtUp {
        changes: 0,
        seconds: 0.0,
        cursor: cursor.to_owned(),
    };
    while caught.changes < rows {
        let b = batch(&mut stream).await?;
        caught.changes += b.changes.len() as u64;
        caught.cursor = b.cursor;
    }
    caught.seconds = started.elapsed().as_secs_f64();
    Ok(caught)
}

/// Nearest-rank quantile of latencies in microseconds, in milliseconds.
fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let n = sorted_us.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted_us[rank - 1] as f64 / 1000.0
}

/// Catch-up and latency, on the in-process broker and adapter.
pub(crate) async fn run(
    population: &Population,
    cluster: &Cluster,
    duration: Duration,
) -> Result<SubscribeFigures, BenchError> {
    let mut client = cluster.consumer().await?;
    let query = crate::bulk::query(&mut client, 0, None).await?;
    let caught = catch_up(&mut client, "", population.rows).await?;
    if caught.changes != population.rows || query.rows != population.rows {
        return Err(BenchError::Inconsistent(format!(
            "the subscription caught up {} changes and the query read {} rows of {}",
            caught.changes, query.rows, population.rows
        )));
    }
    let mut latencies = latencies(population, &mut client, &caught.cursor, duration).await?;
    latencies.sort_unstable();
    Ok(SubscribeFigures {
        catchup_changes: caught.changes,
        catchup_seconds: caught.seconds,
        catchup_rows_per_s: caught.changes as f64 / caught.seconds.max(1e-9),
        query_rows: query.rows,
        query_rows_per_s: query.per_s(),
        updates: latencies.len() as u64,
        latency_p50_ms: quantile_ms(&latencies, 0.50),
        latency_p99_ms: quantile_ms(&latencies, 0.99),
        rss: SubscribeRss::Skipped("not run".into()),
        logical: SubscribeLogical::Skipped("not run".into()),
    })
}

/// Single-row updates spread over `duration`, each timed from its commit
/// to its arrival at a subscription resumed from `cursor` (the end of the
/// table); returns the latencies in microseconds.
async fn latencies(
    population: &Population,
    client: &mut ExchangeClient<Channel>,
    cursor: &str,
    duration: Duration,
) -> Result<Vec<u64>, BenchError> {
    let updates = (duration.as_millis() / UPDATE_EVERY.as_millis())
        .max(u128::from(MIN_UPDATES))
        .min(u128::from(population.rows)) as u64;
    let every = duration / u32::try_from(updates).unwrap_or(u32::MAX);
    let mut keys = HashSet::new();
    while (keys.len() as u64) < updates {
        keys.insert(nik(rand::random_range(1..=population.rows)));
    }
    let keys: Vec<String> = keys.into_iter().collect();
    let mut stream = open(client, cursor).await?;
    let sql = format!(
        "UPDATE {}.penduduk SET diubah = clock_timestamp() WHERE nik = $1",
        population.schema
    );
    let write = async {
        let mut committed = HashMap::new();
        let start = tokio::time::Instant::now();
        for (i, key) in keys.iter().enumerate() {
            tokio::time::sleep_until(start + every * i as u32).await;
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(key)
                .execute(&population.pool)
                .await?;
            committed.insert(key.clone(), Instant::now());
        }
        Ok::<_, BenchError>(committed)
    };
    let read = async {
        let mut arrived = HashMap::new();
        let deadline = tokio::time::Instant::now() + duration + SETTLE;
        while (arrived.len() as u64) < updates {
            let b = tokio::time::timeout_at(deadline, batch(&mut stream))
                .await
                .map_err(|_| {
                    BenchError::Inconsistent(format!(
                        "{} of {updates} updates arrived within {SETTLE:?} of the phase's end",
                        arrived.len()
                    ))
                })??;
            let now = Instant::now();
            for change in b.changes {
                let record: serde_json::Value = serde_json::from_str(&change.record)
                    .map_err(|e| BenchError::Inconsistent(format!("a change's record: {e}")))?;
                if let Some(key) = record["nik"].as_str() {
                    arrived.entry(key.to_owned()).or_insert(now);
                }
            }
        }
        Ok::<_, BenchError>(arrived)
    };
    let (committed, arrived) = tokio::try_join!(write, read)?;
    let mut latencies = Vec::with_capacity(keys.len());
    for key in &keys {
        match (committed.get(key), arrived.get(key)) {
            (Some(c), Some(a)) => latencies
                .push(u64::try_from(a.saturating_duration_since(*c).as_micros()).unwrap_or(0)),
            _ => {
                return Err(BenchError::Inconsistent(format!(
                    "update of {key} was not delivered"
                )));
            }
        }
    }
    Ok(latencies)
}

/// The broker's RSS idle and with [`SUBSCRIPTIONS`] subscriptions open,
/// broker and adapter run as child processes of the `jembatan` executable.
pub(crate) async fn rss(
    options: &Options,
    population: &Population,
    dir: &Path,
) -> Result<SubscribeRss, BenchError> {
    let exe = match Children::executable(options) {
        Ok(exe) => exe,
        Err(why) => return Ok(SubscribeRss::Skipped(why)),
    };
    // every subscription is one of the consumer's running exchanges
    let settings = format!("max_streams_per_agency = {}\n", SUBSCRIPTIONS * 2);
    let mut children =
        Children::start(exe, population, &dir.join("subscribe-children"), &settings).await?;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(children.consumer().await?);
    }
    // one subscription to the end of the table, for the cursor the others
    // resume from: they then poll and find nothing new, as subscriptions
    // do most of the time
    crate::progress(format_args!(
        "B7 subscriptions: catching up {} rows on the child broker",
        population.rows
    ));
    let caught = catch_up(&mut clients[0], "", population.rows).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_mib = children.broker.rss_mib()?;
    let mut streams = Vec::with_capacity(SUBSCRIPTIONS);
    for i in 0..SUBSCRIPTIONS {
        let client = &mut clients[i % CONNECTIONS];
        streams.push(open(client, &caught.cursor).await?);
    }
    // a few polls of each
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subscribed_mib = children.broker.rss_mib()?;
    children.adapter.check_running()?;
    drop(streams);
    Ok(SubscribeRss::Measured {
        subscriptions: SUBSCRIPTIONS,
        idle_mib,
        subscribed_mib,
    })
}

/// The latency phase on an in-process broker and adapter whose dataset
/// reads a logical replication slot made for it (a publication of the
/// table and a `pgoutput` slot, dropped after): a new subscription first
/// reads the table's snapshot, then the updates arrive through the slot.
/// Skipped when the server's `wal_level` is not `logical`.
pub(crate) async fn logical(
    population: &Population,
    dir: &Path,
    duration: Duration,
) -> Result<SubscribeLogical, BenchError> {
    let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&population.pool)
        .await?;
    if level != "logical" {
        return Ok(SubscribeLogical::Skipped(format!(
            "PostgreSQL's wal_level is {level}, not logical"
        )));
    }
    // the schema's name is unique to the run
    let name = format!("{}_logical", population.schema);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE PUBLICATION {name} FOR TABLE {}.penduduk",
        population.schema
    )))
    .execute(&population.pool)
    .await?;
    let measured = async {
        sqlx::query("SELECT 1 FROM pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&name)
            .execute(&population.pool)
            .await?;
        let cluster = Cluster::start_with(
            population,
            &dir.join("logical"),
            None,
            1,
            Some((name.as_str(), name.as_str())),
        )
        .await?;
        let result = async {
            let mut client = cluster.consumer().await?;
            let caught = catch_up(&mut client, "", population.rows).await?;
            let mut latencies =
                latencies(population, &mut client, &caught.cursor, duration).await?;
            latencies.sort_unstable();
            Ok::<_, BenchError>(SubscribeLogical::Measured {
                updates: latencies.len() as u64,
                latency_p50_ms: quantile_ms(&latencies, 0.50),
                latency_p99_ms: quantile_ms(&latencies, 0.99),
            })
        }
        .await;
        cluster.stop().await;
        result
    }
    .await;
    // the slot must not outlive the bench: it would hold WAL
    for _ in 0..100 {
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
        )
        .bind(&name)
        .execute(&population.pool)
        .await;
        let dropped = sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&name)
        .execute(&population.pool)
        .await;
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP PUBLICATION IF EXISTS {name}"
    )))
    .execute(&population.pool)
    .await?;
    measured
}
