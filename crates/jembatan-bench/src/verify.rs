//! B5: batch verification — `Exchange.VerifyBatch` calls of 10,000 keys,
//! each verifying a resident's name (one in ten misspelt), against direct
//! `WHERE nik = ANY($1)` batches of the same keys with the names compared
//! in the client, in the same run.

use std::time::Instant;

use jembatan_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, DATASET, PURPOSE};
use crate::population::{Population, nik};
use crate::{BenchError, VerifyFigures};

/// Keys per call, the most one call may hold.
pub(crate) const BATCH: usize = jembatan_core::limits::MAX_VERIFY_BATCH_KEYS;

/// The keys verified: a resident's row number and whether the name sent
/// is the registered one.
fn keys(rows: u64, n: u64) -> Vec<(u64, bool)> {
    let mut rng = StdRng::seed_from_u64(0x7665_7269);
    (0..n)
        .map(|k| (rng.random_range(1..=rows), k % 10 != 0))
        .collect()
}

fn name(i: u64, right: bool) -> String {
    if right {
        format!("WARGA {i}")
    } else {
        format!("WARGA {i}X")
    }
}

pub(crate) async fn run(
    population: &Population,
    cluster: &Cluster,
    n: u64,
) -> Result<VerifyFigures, BenchError> {
    let keys = keys(population.rows, n);
    let want = keys.iter().filter(|(_, right)| *right).count() as u64;
    let (matched, seconds) = through_broker(cluster, &keys).await?;
    let (direct_matched, direct_seconds) = direct(population, &keys).await?;
    if matched != want || direct_matched != want {
        return Err(BenchError::Inconsistent(format!(
            "{want} names are right; the broker matched {matched}, the database {direct_matched}"
        )));
    }
    Ok(VerifyFigures {
        keys: n,
        batch: BATCH.min(keys.len()),
        per_s: n as f64 / seconds.max(1e-9),
        direct_per_s: n as f64 / direct_seconds.max(1e-9),
    })
}

/// Verifies every key through the broker; returns the keys that matched
/// and the seconds taken.
async fn through_broker(cluster: &Cluster, keys: &[(u64, bool)]) -> Result<(u64, f64), BenchError> {
    let mut client = cluster.consumer().await?;
    let string = |s: String| pb::Scalar {
        kind: Some(pb::scalar::Kind::StringValue(s)),
    };
    let started = Instant::now();
    let mut matched = 0;
    for chunk in keys.chunks(BATCH) {
        let items = chunk
            .iter()
            .map(|&(i, right)| pb::VerifyItem {
                key: Some(string(nik(i))),
                verify: [("nama_lengkap".to_owned(), string(name(i, right)))]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut stream = client
            .verify_batch(pb::VerifyBatchRequest {
                dataset: DATASET.into(),
                purpose: PURPOSE.into(),
                items,
            })
            .await?
            .into_inner();
        let mut answers = 0;
        let mut receipt = false;
        while let Some(message) = stream.message().await? {
            match message.item {
                Some(pb::query_response::Item::Batch(batch)) => {
                    answers += batch.records.len();
                    matched += batch
                        .records
                        .iter()
                        .filter(|a| a.contains("\"result\":\"matches\""))
                        .count() as u64;
                }
                Some(pb::query_response::Item::Receipt(_)) => receipt = true,
                None => {}
            }
        }
        if answers != chunk.len() || !receipt {
            return Err(BenchError::Inconsistent(format!(
                "{answers} answers for {} keys, receipt {receipt}",
                chunk.len()
            )));
        }
    }
    Ok((matched, started.elapsed().as_secs_f64()))
}

/// The same keys as `= ANY($1)` batches of the same size, names compared
/// in the client.
async fn direct(population: &Population, keys: &[(u64, bool)]) -> Result<(u64, f64), BenchError> {
    let sql = format!(
        "SELECT nik, nama_lengkap FROM {}.penduduk WHERE nik = ANY($1)",
        population.schema
    );
    let mut conn = population.pool.acquire().await?;
    // prepared before the clock starts
    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(vec![nik(1)])
        .fetch_all(&mut *conn)
        .await?;
    let started = Instant::now();
    let mut matched = 0;
    for chunk in keys.chunks(BATCH) {
        let niks: Vec<String> = chunk.iter().map(|&(i, _)| nik(i)).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&niks)
            .fetch_all(&mut *conn)
            .await?;
        let found: std::collections::HashMap<String, String> = rows.into_iter().collect();
        for (k, &(i, right)) in niks.iter().zip(chunk) {
            if found.get(k).is_some_and(|n| *n == name(i, right)) {
                matched += 1;
            }
        }
    }
    Ok((matched, started.elapsed().as_secs_f64()))
}
