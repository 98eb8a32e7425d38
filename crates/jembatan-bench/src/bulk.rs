//! B1: a full-table `Query` through the broker, against `COPY ... TO STDOUT`
//! and a plain sqlx fetch of the same columns.

use std::time::Instant;

use futures::TryStreamExt;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use sqlx::Row;
use sqlx::postgres::PgRow;
use tonic::transport::Channel;

use crate::cluster::{Cluster, DATASET, PURPOSE, TARGET_SCHEMA};
use crate::population::Population;
use crate::{BenchError, BulkFigures};

/// Rows and bytes of one full read and how long it took.
pub(crate) struct Read {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
}

impl Read {
    pub(crate) fn per_s(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }
}

pub(crate) async fn run(
    population: &Population,
    cluster: &Cluster,
) -> Result<BulkFigures, BenchError> {
    // warm the server's cache so that the first timed read is not penalised
    copy_out(population).await?;
    let copy = copy_out(population).await?;
    let fetch = fetch(population).await?;
    let mut client = cluster.consumer().await?;
    let jembatan = query(&mut client, 0, Some(TARGET_SCHEMA)).await?;
    let unmapped = query(&mut client, 0, None).await?;
    for (what, read) in [
        ("COPY", &copy),
        ("fetch", &fetch),
        ("Query", &jembatan),
        ("Query without mapping", &unmapped),
    ] {
        if read.rows != population.rows {
            return Err(BenchError::Inconsistent(format!(
                "{what} returned {} rows of {}",
                read.rows, population.rows
            )));
        }
    }
    Ok(BulkFigures {
        rows_streamed: jembatan.rows,
        bytes_streamed: jembatan.bytes,
        seconds: jembatan.seconds,
        rows_per_s: jembatan.per_s(),
        direct_rows: copy.rows,
        direct_bytes: copy.bytes,
        direct_seconds: copy.seconds,
        direct_rows_per_s: copy.per_s(),
        fetch_rows: fetch.rows,
        fetch_seconds: fetch.seconds,
        fetch_rows_per_s: fetch.per_s(),
        unmapped_rows_per_s: unmapped.per_s(),
        unmapped_seconds: unmapped.seconds,
    })
}

/// `COPY (SELECT ...) TO STDOUT` in text format, counting lines and bytes.
async fn copy_out(population: &Population) -> Result<Read, BenchError> {
    let mut conn = population.pool.acquire().await?;
    let statement = format!("COPY ({}) TO STDOUT", population.select_all());
    let started = Instant::now();
    let mut stream = conn.copy_out_raw(&statement).await?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = stream.try_next().await? {
        bytes += chunk.len() as u64;
        rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok(Read {
        rows,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A plain sqlx fetch of every column, each value decoded.
async fn fetch(population: &Population) -> Result<Read, BenchError> {
    let sql = population.select_all();
    let started = Instant::now();
    let mut stream = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&population.pool);
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(row) = stream.try_next().await? {
        rows += 1;
        bytes += decoded_len(&row)?;
    }
    Ok(Read {
        rows,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn decoded_len(row: &PgRow) -> Result<u64, sqlx::Error> {
    let mut len = 0;
    for i in 0..row.len() {
        if i == 4 {
            let d: Option<chrono::NaiveDate> = row.try_get(i)?;
            len += d.map_or(0, |_| 10);
        } else {
            let s: Option<&str> = row.try_get(i)?;
            len += s.map_or(0, str::len);
        }
    }
    Ok(len as u64)
}

/// A `Query` of every granted field, in the provider's schema or
/// translated into `target`; `limit` 0 is the whole table. Rows and bytes
/// are the receipt's, checked against what arrived.
pub(crate) async fn query(
    client: &mut ExchangeClient<Channel>,
    limit: u64,
    target: Option<&str>,
) -> Result<Read, BenchError> {
    let started = Instant::now();
    let mut stream = client
        .query(pb::QueryRequest {
            dataset: DATASET.into(),
            purpose: PURPOSE.into(),
            limit,
            target_schema: target.unwrap_or_default().into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut receipt = None;
    while let Some(msg) = stream.message().await? {
        match msg.item {
            Some(pb::query_response::Item::Batch(b)) => {
                rows += b.records.len() as u64;
                bytes += b.records.iter().map(|r| r.len() as u64).sum::<u64>();
            }
            Some(pb::query_response::Item::Receipt(r)) => receipt = Some(r),
            None => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let receipt =
        receipt.ok_or_else(|| BenchError::Inconsistent("query ended without a receipt".into()))?;
    if receipt.rows != rows || receipt.bytes != bytes {
        return Err(BenchError::Inconsistent(format!(
            "receipt says {} rows / {} bytes, {rows} / {bytes} arrived",
            receipt.rows, receipt.bytes
        )));
    }
    Ok(Read {
        rows,
        bytes,
        seconds,
    })
}
