//! The demo's change subscription: Dinas Sosial follows the population
//! registry's living residents of one district in its own schema,
//! Disdukcapil records a death and a move in its database, and Dinas
//! Sosial flags the social-aid recipients concerned from the changes its
//! running subscription delivers.
//!
//! The consumer side keeps what a real consumer keeps: each resident's
//! record by the change's key handle (stable for this agency and
//! dataset), so that a delete — which in a translated subscription
//! carries no field — still names the resident it was given before.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use serde_json::Value;
use sqlx::SqlitePool;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::scenario::{DemoError, step};
use crate::wilayah::Wilayah;

/// Longest wait for the subscription to deliver every resident of the
/// district, and then for the two changes.
const CATCH_UP: Duration = Duration::from_secs(120);
const CHANGES: Duration = Duration::from_secs(20);
/// Changes per batch.
const BATCH: u32 = 2_000;

/// What the subscription step did, for the demo's report.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    /// The subscription stream's exchange id.
    pub(crate) exchange_id: String,
    /// Changes delivered (catch-up included).
    pub(crate) changes: u64,
    /// Rows the batches' receipts counted.
    pub(crate) receipt_rows: u64,
    /// One line per recipient flagged, as printed.
    pub(crate) flagged: Vec<String>,
}

/// Where the step runs: the registry's database (the provider writes to
/// it), Dinas Sosial's own database (its aid recipients), the district.
pub(crate) struct Setting<'a> {
    pub(crate) registry_url: &'a str,
    pub(crate) aid_url: &'a str,
    pub(crate) district: &'a str,
    pub(crate) purpose: &'a str,
}

/// The consumer's copy of the residents it follows, by key handle.
#[derive(Default)]
struct Copy {
    rows: HashMap<String, Value>,
    batches: u64,
    changes: u64,
    receipt_rows: u64,
    last_receipt: Option<pb::Receipt>,
}

/// A change the consumer noticed in a resident it held.
enum Noticed {
    /// The record left the subscription: it was given, then deleted.
    Left(Value),
    /// The resident's village changed: before, after.
    Moved(Value, Value),
}

impl Copy {
    /// Applies a batch; returns what changed for residents held before.
    fn apply(&mut self, batch: pb::ChangeBatch) -> Result<Vec<Noticed>, DemoError> {
        self.batches += 1;
        self.changes += batch.changes.len() as u64;
        if let Some(r) = batch.receipt {
            self.receipt_rows += r.rows;
            self.last_receipt = Some(r);
        }
        let mut noticed = Vec::new();
        for change in batch.changes {
            if change.op == pb::ChangeOp::Delete as i32 {
                if let Some(before) = self.rows.remove(&change.key) {
                    noticed.push(Noticed::Left(before));
                }
                continue;
            }
            let record: Value =
                serde_json::from_str(&change.record).map_err(step("read a delivered record"))?;
            let village = |r: &Value| r["address"]["village_code"].clone();
            if let Some(before) = self.rows.insert(change.key, record.clone())
                && village(&before) != village(&record)
            {
                noticed.push(Noticed::Moved(before, record));
            }
        }
        Ok(noticed)
    }
}

/// The next batch of the stream, or `None` when `deadline` passed.
async fn next_batch(
    stream: &mut Streaming<pb::SubscribeResponse>,
    deadline: Instant,
) -> Result<Option<pb::ChangeBatch>, DemoError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, stream.message()).await {
            Err(_) => return Ok(None),
            Ok(m) => m.map_err(step("subscription"))?,
        };
        match message.and_then(|m| m.item) {
            Some(pb::subscribe_response::Item::Batch(b)) => return Ok(Some(b)),
            Some(pb::subscribe_response::Item::Started(_)) => {}
            None => {
                return Err(DemoError::Step(
                    "the subscription ended while the demo followed it".into(),
                ));
            }
        }
    }
}

/// `S*** B***`: each word's first letter.
fn mask_name(name: &str) -> String {
    name.split_whitespace()
        .map(|w| {
            let first: String = w.chars().take(1).collect();
            format!("{first}***")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `150701******1234`: the region digits and the last four.
fn mask_nik(nik: &str) -> String {
    if nik.len() != 16 || !nik.is_ascii() {
        return "****************".into();
    }
    format!("{}******{}", &nik[..6], &nik[12..])
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Residents of the district who are active aid recipients (in Dinas
/// Sosial's database) and alive in the registry: the first dies, the
/// second moves to the district's first other village.
async fn pick(
    registry: &SqlitePool,
    aid: &SqlitePool,
    district: &str,
) -> Result<(String, String, String), DemoError> {
    let recipients: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT nik FROM penerima_bansos WHERE tahun = 2025 AND status = 'AKTIF' \
         AND program <> 'PBI-JK' AND kode_kecamatan = ? ORDER BY nik",
    )
    .bind(district)
    .fetch_all(aid)
    .await
    .map_err(step("read aid recipients"))?;
    let mut living = Vec::new();
    for nik in recipients {
        let village: Option<String> = sqlx::query_scalar(
            "SELECT kode_desa FROM penduduk WHERE nik = ? AND status = 'HIDUP' AND kode_kecamatan = ?",
        )
        .bind(&nik)
        .bind(district)
        .fetch_optional(registry)
        .await
        .map_err(step("read the registry"))?;
        if let Some(v) = village {
            living.push((nik, v));
        }
        if living.len() == 2 {
            break;
        }
    }
    let [(dies, _), (moves, from)] = <[(String, String); 2]>::try_from(living)
        .map_err(|_| DemoError::Step(format!("two living aid recipients in {district}")))?;
    let wilayah = Wilayah::load().map_err(step("load wilayah"))?;
    let to = wilayah
        .district(district)
        .and_then(|d| d.villages.iter().find(|v| v.code != from))
        .map(|v| v.code.clone())
        .ok_or_else(|| DemoError::Step(format!("a second village in {district}")))?;
    Ok((dies, moves, to))
}

/// Runs the step: subscribe, catch up, the registry's two updates, the
/// two flags.
pub(crate) async fn death_and_move(
    out: &mut impl Write,
    client: &mut ExchangeClient<Channel>,
    setting: &Setting<'_>,
) -> Result<Followed, DemoError> {
    let w = step::<std::io::Error>;
    let district = setting.district;
    let registry = SqlitePool::connect(setting.registry_url)
        .await
        .map_err(step("open the registry's database"))?;
    let aid = SqlitePool::connect(&format!("{}?mode=ro", setting.aid_url))
        .await
        .map_err(step("open Dinas Sosial's database"))?;
    let (dies, moves, to) = pick(&registry, &aid, district).await?;
    let wilayah = Wilayah::load().map_err(step("load wilayah"))?;
    let district_name = wilayah
        .district(district)
        .map_or_else(|| district.to_owned(), |d| d.name.clone());

    writeln!(
        out,
        "\n▶ Dinas Sosial subscribes to the registry's changes in district {district_name}, in its own schema (agreement term subscribe)"
    )
    .map_err(w("write output"))?;
    writeln!(
        out,
        "    Subscribe disdukcapil.penduduk as dinsos.warga@1 filter district_code={district} purpose={:?}",
        setting.purpose
    )
    .map_err(w("write output"))?;
    let request = pb::SubscribeRequest {
        dataset: "disdukcapil.penduduk".into(),
        target_schema: "dinsos.warga@1".into(),
        purpose: setting.purpose.into(),
        fields: vec![],
        filter: Some(crate::scenario::eq("district_code", district)),
        cursor: String::new(),
        batch_size: BATCH,
    };
    let started_at = Instant::now();
    let mut stream = client
        .clone()
        .max_decoding_message_size(32 << 20)
        .subscribe(request)
        .await
        .map_err(step("subscription refused"))?
        .into_inner();
    let started = match stream.message().await.map_err(step("subscription"))? {
        Some(pb::SubscribeResponse {
            item: Some(pb::subscribe_response::Item::Started(s)),
        }) => s,
        _ => {
            return Err(DemoError::Step(
                "the subscription did not start with its id".into(),
            ));
        }
    };
    // how many the registry holds, only to know when the catch-up is
    // done before the registry changes
    let expected: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM penduduk WHERE kode_kecamatan = ? AND status = 'HIDUP'",
    )
    .bind(district)
    .fetch_one(&registry)
    .await
    .map_err(step("count the district's residents"))?;
    let mut copy = Copy::default();
    let deadline = Instant::now() + CATCH_UP;
    while (copy.rows.len() as i64) < expected {
        let Some(batch) = next_batch(&mut stream, deadline).await? else {
            return Err(DemoError::Step(format!(
                "the subscription delivered {} of {expected} residents in {CATCH_UP:?}",
                copy.rows.len()
            )));
        };
        copy.apply(batch)?;
    }
    writeln!(
        out,
        "    ✔ allowed — subscription {} (decision entry #{}); caught up in {:.1}s: {} living residents in {} batches, each a delivery entry before it left",
        started.subscription_id,
        started.decision_seq,
        started_at.elapsed().as_secs_f64(),
        copy.rows.len(),
        copy.batches
    )
    .map_err(w("write output"))?;
    if let Some(r) = &copy.last_receipt {
        writeln!(
            out,
            "    last batch: audit entry #{} · {} changes · payload sha256 {}… · the cursor resumes after it",
            r.entry_seq,
            r.rows,
            &r.payload_sha256[..r.payload_sha256.len().min(16)]
        )
        .map_err(w("write output"))?;
    }

    writeln!(
        out,
        "\n▶ Disdukcapil records a death and a move in its own database (plain SQL, setting diubah)"
    )
    .map_err(w("write output"))?;
    let now = "strftime('%Y-%m-%dT%H:%M:%f', 'now')";
    let death = format!("UPDATE penduduk SET status = 'MENINGGAL', diubah = {now} WHERE nik = ?");
    let moved = format!("UPDATE penduduk SET kode_desa = ?, diubah = {now} WHERE nik = ?");
    sqlx::query(sqlx::AssertSqlSafe(death.clone()))
        .bind(&dies)
        .execute(&registry)
        .await
        .map_err(step("record a death"))?;
    sqlx::query(sqlx::AssertSqlSafe(moved.clone()))
        .bind(&to)
        .bind(&moves)
        .execute(&registry)
        .await
        .map_err(step("record a move"))?;
    let written = Instant::now();
    registry.close().await;
    writeln!(
        out,
        "    {}\n    {}",
        death.replace('?', &format!("'{}'", mask_nik(&dies))),
        moved
            .replacen('?', &format!("'{to}'"), 1)
            .replace('?', &format!("'{}'", mask_nik(&moves)))
    )
    .map_err(w("write output"))?;

    writeln!(
        out,
        "\n▶ Dinas Sosial's running subscription delivers both; it checks them against its aid recipients"
    )
    .map_err(w("write output"))?;
    let mut flagged = Vec::new();
    let deadline = Instant::now() + CHANGES;
    while flagged.len() < 2 {
        let Some(batch) = next_batch(&mut stream, deadline).await? else {
            return Err(DemoError::Step(format!(
                "the subscription delivered {} of the 2 changes within {CHANGES:?}",
                flagged.len()
            )));
        };
        let receipt = batch.receipt.clone();
        let n = batch.changes.len();
        for noticed in copy.apply(batch)? {
            let (record, what) = match &noticed {
                Noticed::Left(before) => (
                    before,
                    format!(
                        "no longer a living resident of {district_name} in the registry (the subscription deleted the record: died or moved away)"
                    ),
                ),
                Noticed::Moved(before, after) => {
                    let village = |r: &Value| {
                        let code = text(&r["address"]["village_code"]).to_owned();
                        wilayah.village(&code).map_or_else(
                            || code.clone(),
                            |v| format!("{} ({code})", v.display_name()),
                        )
                    };
                    (
                        after,
                        format!("moved from {} to {}", village(before), village(after)),
                    )
                }
            };
            let nik = text(&record["nik"]);
            let programs: Vec<String> = sqlx::query_as::<_, (String, i64)>(
                "SELECT program, tahun FROM penerima_bansos WHERE nik = ? AND status = 'AKTIF' \
                 ORDER BY tahun DESC, program",
            )
            .bind(nik)
            .fetch_all(&aid)
            .await
            .map_err(step("read aid recipients"))?
            .into_iter()
            .map(|(p, y)| format!("{p} {y}"))
            .collect();
            if programs.is_empty() {
                continue;
            }
            let line = format!(
                "bansos recipient {} (NIK {}; {}) flagged: {what}",
                mask_name(text(&record["full_name"])),
                mask_nik(nik),
                programs.join(", ")
            );
            writeln!(
                out,
                "    ⚑ {line}\n      {:.1}s after the update · {n} change(s) in the batch{}",
                written.elapsed().as_secs_f64(),
                receipt
                    .as_ref()
                    .map_or_else(String::new, |r| format!(" · audit entry #{}", r.entry_seq))
            )
            .map_err(w("write output"))?;
            flagged.push(line);
        }
    }
    aid.close().await;
    Ok(Followed {
        exchange_id: started.exchange_id,
        changes: copy.changes,
        receipt_rows: copy.receipt_rows,
        flagged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_initials_and_the_nik_region_and_tail() {
        assert_eq!(mask_name("SITI  AMINAH"), "S*** A***");
        assert_eq!(mask_nik("1507012345678901"), "150701******8901");
        assert_eq!(mask_nik("123"), "****************");
    }

    #[test]
    fn a_delete_names_the_resident_held_under_its_handle() {
        let mut copy = Copy::default();
        let upsert = |key: &str, village: &str| pb::ChangeRecord {
            op: pb::ChangeOp::Upsert as i32,
            key: key.into(),
            record: format!(r#"{{"nik":"1","address":{{"village_code":"{village}"}}}}"#),
        };
        let batch = |changes| pb::ChangeBatch {
            changes,
            cursor: String::new(),
            receipt: None,
        };
        let noticed = copy
            .apply(batch(vec![upsert("a", "v1"), upsert("b", "v1")]))
            .unwrap();
        assert!(noticed.is_empty());
        let noticed = copy
            .apply(batch(vec![
                upsert("a", "v2"),
                pb::ChangeRecord {
                    op: pb::ChangeOp::Delete as i32,
                    key: "b".into(),
                    record: "{}".into(),
                },
                // a delete for a handle never given names nobody
                pb::ChangeRecord {
                    op: pb::ChangeOp::Delete as i32,
                    key: "c".into(),
                    record: "{}".into(),
                },
            ]))
            .unwrap();
        assert!(
            matches!(&noticed[..], [Noticed::Moved(_, after), Noticed::Left(before)]
            if after["address"]["village_code"] == "v2" && before["nik"] == "1")
        );
        assert_eq!(copy.rows.len(), 1);
    }
}
