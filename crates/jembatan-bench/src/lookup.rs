//! B2: audited `Lookup`s by random existing NIK with N concurrent clients,
//! against prepared point queries through a pool of N connections; and the
//! same lookups through the HTTP/JSON door, against the gRPC ones.

use std::time::{Duration, Instant};

use jembatan_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;

use crate::cluster::{Cluster, DATASET, PURPOSE};
use crate::population::{Population, nik};
use crate::{BenchError, LookupFigures};

/// Lookups done by one side and their latencies in microseconds.
#[derive(Default)]
pub(crate) struct Side {
    pub(crate) done: u64,
    pub(crate) found: u64,
    /// Exchanges the broker refused with `Unavailable` (audit log not
    /// writable at that moment); not counted in `done`.
    refused: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Side {
    fn merge(&mut self, other: Side) {
        self.done += other.done;
        self.found += other.found;
        self.refused += other.refused;
        self.latencies_us.extend(other.latencies_us);
    }

    pub(crate) fn per_s(&self) -> f64 {
        self.done as f64 / self.seconds.max(1e-9)
    }

    /// Latency at quantile `q` in milliseconds (nearest rank).
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let n = self.latencies_us.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_us[rank - 1] as f64 / 1000.0
    }
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub(crate) async fn run(
    population: &Population,
    cluster: &Cluster,
    concurrency: usize,
    duration: Duration,
) -> Result<LookupFigures, BenchError> {
    let jembatan = through_broker(population, cluster, concurrency, duration).await?;
    let http = through_http(population, cluster, concurrency, duration).await?;
    let direct = direct(population, concurrency, duration).await?;
    if jembatan.found != jembatan.done || direct.found != direct.done || http.found != http.done {
        return Err(BenchError::Inconsistent(format!(
            "existing NIKs not found: {} of {} through the broker, {} of {} directly",
            jembatan.done - jembatan.found,
            jembatan.done,
            direct.done - direct.found,
            direct.done
        )));
    }
    Ok(LookupFigures {
        concurrency,
        lookups: jembatan.done,
        refused: jembatan.refused,
        per_s: jembatan.per_s(),
        p50_ms: jembatan.quantile_ms(0.50),
        p99_ms: jembatan.quantile_ms(0.99),
        p999_ms: jembatan.quantile_ms(0.999),
        direct_lookups: direct.done,
        direct_per_s: direct.per_s(),
        direct_p50_ms: direct.quantile_ms(0.50),
        direct_p99_ms: direct.quantile_ms(0.99),
        direct_p999_ms: direct.quantile_ms(0.999),
        http_lookups: http.done,
        http_per_s: http.per_s(),
        http_p50_ms: http.quantile_ms(0.50),
        http_p99_ms: http.quantile_ms(0.99),
    })
}

/// Runs `concurrency` tasks made by `task(i, deadline)` and merges their sides.
async fn timed<F, Fut>(concurrency: usize, duration: Duration, task: F) -> Result<Side, BenchError>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = Result<Side, BenchError>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = JoinSet::new();
    for i in 0..concurrency {
        set.spawn(task(i, deadline));
    }
    let mut total = Side::default();
    while let Some(joined) = set.join_next().await {
        let side = joined.map_err(|e| BenchError::Inconsistent(format!("lookup task: {e}")))??;
        total.merge(side);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    Ok(total)
}

pub(crate) async fn through_broker(
    population: &Population,
    cluster: &Cluster,
    concurrency: usize,
    duration: Duration,
) -> Result<Side, BenchError> {
    // connect every client before the clock starts, spread over the
    // replicas when there are several
    let mut clients = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        clients.push(cluster.consumer_of(i).await?);
    }
    let rows = population.rows;
    let clients = std::sync::Mutex::new(clients);
    timed(concurrency, duration, |i, deadline| {
        let client = clients.lock().ok().and_then(|mut c| c.pop());
        async move {
            let mut client = client.ok_or_else(|| BenchError::Inconsistent("no client".into()))?;
            let mut rng = StdRng::seed_from_u64(0x6a65_6d62 + i as u64);
            let mut side = Side::default();
            while Instant::now() < deadline {
                let key = nik(rng.random_range(1..=rows));
                let started = Instant::now();
                let resp = client
                    .lookup(pb::LookupRequest {
                        dataset: DATASET.into(),
                        purpose: PURPOSE.into(),
                        key: Some(pb::Scalar {
                            kind: Some(pb::scalar::Kind::StringValue(key)),
                        }),
                        ..Default::default()
                    })
                    .await;
                let resp = match resp {
                    Ok(resp) => resp.into_inner(),
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        side.refused += 1;
                        continue;
                    }
                    Err(status) => return Err(status.into()),
                };
                side.latencies_us.push(elapsed_us(started));
                side.done += 1;
                side.found += u64::from(resp.found && !resp.record.is_empty());
            }
            Ok(side)
        }
    })
    .await
}

/// The same lookups as JSON through the HTTP/JSON door: each client on an
/// HTTP/2 connection of its own, with the consumer's certificate.
async fn through_http(
    population: &Population,
    cluster: &Cluster,
    concurrency: usize,
    duration: Duration,
) -> Result<Side, BenchError> {
    let config = std::sync::Arc::new(
        jembatan_pki::rustls_config(&cluster.certs.consumer, &[b"h2"])
            .map_err(|e| BenchError::Inconsistent(format!("HTTP client TLS: {e}")))?,
    );
    let port = cluster.broker_port;
    // connect every client before the clock starts
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")
            .map_err(|e| BenchError::Inconsistent(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .map_err(|e| BenchError::Inconsistent(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(conn);
        clients.push(sender);
    }
    let rows = population.rows;
    let clients = std::sync::Mutex::new(clients);
    let uri = format!("https://localhost:{port}/exchange/v1/lookup");
    timed(concurrency, duration, |i, deadline| {
        let sender = clients.lock().ok().and_then(|mut c| c.pop());
        let uri = uri.clone();
        async move {
            use http_body_util::BodyExt;
            let mut sender = sender.ok_or_else(|| BenchError::Inconsistent("no client".into()))?;
            let mut rng = StdRng::seed_from_u64(0x6a65_6d62 + i as u64);
            let mut side = Side::default();
            let failed =
                |e: &dyn std::fmt::Display| BenchError::Inconsistent(format!("HTTP lookup: {e}"));
            while Instant::now() < deadline {
                let key = nik(rng.random_range(1..=rows));
                let body = serde_json::json!({"dataset": DATASET, "purpose": PURPOSE, "key": key});
                let request = hyper::Request::post(&uri)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(hyper::body::Bytes::from(
                        body.to_string(),
                    )))
                    .map_err(|e| failed(&e))?;
                let started = Instant::now();
                let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| failed(&e))?
                    .to_bytes();
                if status == hyper::StatusCode::SERVICE_UNAVAILABLE {
                    side.refused += 1;
                    continue;
                }
                if !status.is_success() {
                    return Err(failed(&format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&bytes)
                    )));
                }
                let answer: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| failed(&e))?;
                side.latencies_us.push(elapsed_us(started));
                side.done += 1;
                side.found += u64::from(answer["found"] == true && answer["record"].is_string());
            }
            Ok(side)
        }
    })
    .await
}

async fn direct(
    population: &Population,
    concurrency: usize,
    duration: Duration,
) -> Result<Side, BenchError> {
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .min_connections(concurrency as u32)
        .connect(&population.url)
        .await?;
    let sql = format!("{} WHERE nik = $1", population.select_all());
    // open every connection and prepare the statement on it before the clock starts
    let mut warm = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut conn = pool.acquire().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(nik(1))
            .fetch_optional(&mut *conn)
            .await?;
        warm.push(conn);
    }
    drop(warm);
    let rows = population.rows;
    let side = timed(concurrency, duration, |i, deadline| {
        let pool = pool.clone();
        let sql = sql.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(0x6a65_6d62 + i as u64);
            let mut side = Side::default();
            while Instant::now() < deadline {
                let key = nik(rng.random_range(1..=rows));
                let started = Instant::now();
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(key)
                    .fetch_optional(&pool)
                    .await?;
                side.latencies_us.push(elapsed_us(started));
                side.done += 1;
                side.found += u64::from(row.is_some());
            }
            Ok(side)
        }
    })
    .await;
    pool.close().await;
    side
}
