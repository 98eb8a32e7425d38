//! Relaying records from the provider's adapter to the consumer: checks
//! each record against the grant, hashes what is delivered, writes the
//! completion entry and hands out the receipt.

use std::sync::Arc;
use std::time::Duration;

use jembatan_core::{Decision, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Response, Status, Streaming};

use crate::RECEIPT_METADATA_KEY;
pub(crate) use crate::adapters::AdapterPool;
use crate::exchange::{Allowed, State};

/// Most bytes of one record the broker accepts from an adapter.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// Records counted and hashed: what was delivered to the consumer, and
/// for translated exchanges also what the adapter sent.
struct Tally {
    rows: u64,
    bytes: u64,
    hasher: Sha256,
    received: Option<(u64, u64, Sha256)>,
}

/// What to do after a batch.
enum Next {
    /// Send these records and read on.
    Send(Vec<String>),
    /// Send these records; the consumer's limit is reached.
    Last(Vec<String>),
}

impl Tally {
    fn new(allowed: &Allowed) -> Self {
        Self {
            rows: 0,
            bytes: 0,
            hasher: Sha256::new(),
            received: allowed.translation.as_ref().map(|_| (0, 0, Sha256::new())),
        }
    }

    /// Checks a batch from the adapter — every record a JSON object holding
    /// only granted fields, the total within the limit — translates it when
    /// the consumer asked for another schema, and only then counts and
    /// hashes it: a batch is delivered whole or not at all, so the tally is
    /// always what the consumer received.
    fn admit_batch(&mut self, records: Vec<String>, allowed: &Allowed) -> Result<Next, String> {
        // A translated record is parsed once, here, and the parsed object
        // is what the translator reads; otherwise only its keys are read.
        let parsed = match &allowed.translation {
            None => {
                for record in &records {
                    check_record(record, allowed)?;
                }
                Vec::new()
            }
            Some(_) => records
                .iter()
                .map(|r| parse_record(r, allowed))
                .collect::<Result<Vec<_>, String>>()?,
        };
        let limit = allowed.fetch.limit;
        if limit > 0 && self.received_rows() + records.len() as u64 > limit {
            return Err(format!(
                "adapter sent more than the limit of {limit} records"
            ));
        }
        let (out, last) = match &allowed.translation {
            None => (records, false),
            Some(t) => {
                if let Some((rows, bytes, hasher)) = &mut self.received {
                    for record in &records {
                        *rows += 1;
                        *bytes += record.len() as u64;
                        hasher.update(record.as_bytes());
                        hasher.update(b"\n");
                    }
                }
                let mut out = Vec::with_capacity(records.len());
                let mut last = false;
                for (i, record) in parsed.into_iter().enumerate() {
                    let translated = t
                        .translator
                        .translate(record, t.residual.as_ref(), &t.fields)
                        .map_err(|e| {
                            format!(
                                "record {}: {e}",
                                self.received_rows() - records.len() as u64 + i as u64 + 1
                            )
                        })?;
                    if let Some(r) = translated {
                        out.push(r);
                        if t.limit > 0 && self.rows + out.len() as u64 >= t.limit {
                            last = true;
                            break;
                        }
                    }
                }
                (out, last)
            }
        };
        for record in &out {
            self.rows += 1;
            self.bytes += record.len() as u64;
            self.hasher.update(record.as_bytes());
            self.hasher.update(b"\n");
        }
        Ok(if last {
            Next::Last(out)
        } else {
            Next::Send(out)
        })
    }

    /// Records received from the adapter so far.
    fn received_rows(&self) -> u64 {
        match &self.received {
            Some((rows, _, _)) => *rows,
            None => self.rows,
        }
    }
}

/// One record from the adapter must be a JSON object of granted fields.
fn check_record(record: &str, allowed: &Allowed) -> Result<(), String> {
    check_size(record)?;
    // Only the keys matter here: values are skipped, not built, and keys
    // borrow from the record (field names never need JSON escapes).
    let keys: std::collections::HashMap<&str, serde::de::IgnoredAny> = serde_json::from_str(record)
        .map_err(|e| format!("adapter sent a record that is not a JSON object: {e}"))?;
    check_keys(keys.keys().copied(), allowed)
}

/// The same checks as [`check_record`], keeping the parsed object for the
/// translator.
fn parse_record(
    record: &str,
    allowed: &Allowed,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    check_size(record)?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(record)
        .map_err(|e| format!("adapter sent a record that is not a JSON object: {e}"))?;
    check_keys(map.keys().map(String::as_str), allowed)?;
    Ok(map)
}

fn check_size(record: &str) -> Result<(), String> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(format!("adapter sent a record of {} bytes", record.len()));
    }
    Ok(())
}

/// Every key must be a column the exchange fetched (the grant).
fn check_keys<'a>(
    mut keys: impl Iterator<Item = &'a str>,
    allowed: &Allowed,
) -> Result<(), String> {
    match keys.find(|k| !allowed.fetch.columns.iter().any(|c| c == k)) {
        Some(extra) => Err(format!(
            "adapter sent field {:?} outside the grant",
            jembatan_core::ids::truncate(extra, 64)
        )),
        None => Ok(()),
    }
}

/// Opens the adapter's `Fetch` stream for an allowed exchange. Failure is
/// recorded as the exchange's completion.
async fn open_fetch(
    state: &State,
    allowed: &Allowed,
) -> Result<(Streaming<pb::FetchResponse>, AdapterClient<Channel>), Status> {
    let endpoint = match state.store.agency(&allowed.provider).await {
        Ok(Some(agency)) => agency.adapter_endpoint,
        Ok(None) => None,
        Err(err) => {
            tracing::error!(error = %err, "store read failed");
            None
        }
    };
    let result: Result<_, Status> = async {
        let endpoint = endpoint.ok_or_else(|| {
            Status::unavailable(format!(
                "provider {} has no adapter registered",
                allowed.provider
            ))
        })?;
        let mut client = AdapterClient::new(state.adapters.channel(&endpoint, &allowed.provider)?)
            .max_decoding_message_size(16 << 20);
        let stream = client
            .fetch(allowed.fetch.clone())
            .await
            .map_err(|s| adapter_status(&allowed.provider.to_string(), s))?
            .into_inner();
        Ok((stream, client))
    }
    .await;
    if let Err(status) = &result {
        finish(
            state,
            allowed,
            &Tally::new(allowed),
            ExchangeStatus::Failed,
            Some(status.message().to_owned()),
        )
        .await?;
    }
    result
}

/// Maps an adapter's error to what the consumer sees: the adapter's
/// refusal is passed on, transport trouble is `Unavailable`.
fn adapter_status(provider: &str, status: Status) -> Status {
    if let Some(reason) = crate::adapters::wrong_identity(&status) {
        tracing::warn!(provider, error = %status, "adapter failed the identity check");
        return Status::unavailable(format!(
            "provider {provider}'s adapter failed the identity check: {reason}"
        ));
    }
    match status.code() {
        Code::PermissionDenied | Code::InvalidArgument | Code::Unauthenticated => Status::new(
            status.code(),
            format!(
                "provider {provider}'s adapter refused: {}",
                status.message()
            ),
        ),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled => {
            tracing::warn!(provider, error = %status, "adapter unreachable");
            Status::unavailable(format!("provider {provider}'s adapter is unreachable"))
        }
        _ => {
            tracing::warn!(provider, error = %status, "adapter failed");
            Status::unavailable(format!("provider {provider}'s adapter failed"))
        }
    }
}

/// Writes the completion entry and builds the receipt. The receipt exists
/// only if the entry is durable.
async fn finish(
    state: &State,
    allowed: &Allowed,
    tally: &Tally,
    status: ExchangeStatus,
    error: Option<String>,
) -> Result<pb::Receipt, Status> {
    let payload_sha256 = hex::encode(tally.hasher.clone().finalize());
    let mut entry = allowed
        .facts
        .entry(EntryKind::Completion, Decision::Allow, status);
    entry.rows = tally.rows;
    entry.bytes = tally.bytes;
    entry.payload_sha256 = Some(payload_sha256.clone());
    entry.received = tally
        .received
        .as_ref()
        .map(|(rows, bytes, hasher)| jembatan_core::Received {
            rows: *rows,
            bytes: *bytes,
            payload_sha256: hex::encode(hasher.clone().finalize()),
        });
    entry.duration_ms = Some(allowed.facts.elapsed_ms());
    entry.error = error;
    let stored = state.audit.append(entry).await.map_err(|err| {
        tracing::error!(error = %err, "audit completion write failed");
        Status::unavailable("the audit log cannot be written; no receipt can be issued")
    })?;
    let now = chrono::Utc::now();
    Ok(pb::Receipt {
        exchange_id: allowed.facts.exchange_id.clone(),
        entry_seq: stored.seq,
        decision_seq: allowed.decision_seq,
        payload_sha256,
        rows: tally.rows,
        bytes: tally.bytes,
        completed_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        leaf_hash: hex::encode(jembatan_tlog::merkle::leaf_hash(&stored.canonical)),
        entry_sha256: stored.entry_sha256,
        checkpoint: state.checkpoint_notes.borrow().clone().unwrap_or_default(),
    })
}

fn insert_receipt(md: &mut MetadataMap, receipt: &pb::Receipt) {
    md.insert_bin(
        RECEIPT_METADATA_KEY,
        MetadataValue::from_bytes(&receipt.encode_to_vec()),
    );
}

/// Tells the provider's adapter the receipt, for its own log. Best effort.
fn acknowledge(mut client: AdapterClient<Channel>, allowed: &Allowed, receipt: pb::Receipt) {
    let request = pb::AcknowledgeRequest {
        dataset: allowed.dataset.to_string(),
        consumer: allowed.fetch.consumer.clone(),
        receipt: Some(receipt),
    };
    tokio::spawn(async move {
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_secs(10));
        if let Err(err) = client.acknowledge(request).await {
            tracing::warn!(error = %err, "adapter did not take the receipt");
        }
    });
}

/// Streams an allowed query to the consumer.
pub(crate) async fn query(
    state: Arc<State>,
    allowed: Allowed,
) -> Result<Response<ReceiverStream<Result<pb::QueryResponse, Status>>>, Status> {
    let (mut stream, client) = open_fetch(&state, &allowed).await?;
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut tally = Tally::new(&allowed);
        let outcome: Result<(), (ExchangeStatus, Status)> = loop {
            let next = tokio::select! {
                next = stream.message() => next,
                () = tx.closed() => break Err((ExchangeStatus::Cancelled, Status::cancelled("consumer went away"))),
            };
            match next {
                Ok(Some(msg)) => {
                    let records = msg.batch.unwrap_or_default().records;
                    let (records, last) = match tally.admit_batch(records, &allowed) {
                        Ok(Next::Send(r)) => (r, false),
                        Ok(Next::Last(r)) => (r, true),
                        Err(err) => {
                            tracing::warn!(provider = %allowed.provider, error = %err, "adapter sent a bad record");
                            break Err((
                                ExchangeStatus::Failed,
                                Status::internal(format!("the exchange was stopped: {err}")),
                            ));
                        }
                    };
                    if !records.is_empty() {
                        let item = pb::query_response::Item::Batch(pb::RecordBatch { records });
                        if tx
                            .send(Ok(pb::QueryResponse { item: Some(item) }))
                            .await
                            .is_err()
                        {
                            break Err((
                                ExchangeStatus::Cancelled,
                                Status::cancelled("consumer went away"),
                            ));
                        }
                    }
                    if last {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => {
                    break Err((
                        ExchangeStatus::Failed,
                        adapter_status(&allowed.provider.to_string(), status),
                    ));
                }
            }
        };
        match outcome {
            Ok(()) => match finish(&state, &allowed, &tally, ExchangeStatus::Ok, None).await {
                Ok(receipt) => {
                    let mut md = MetadataMap::new();
                    insert_receipt(&mut md, &receipt);
                    let item = pb::query_response::Item::Receipt(receipt.clone());
                    let _ = tx.send(Ok(pb::QueryResponse { item: Some(item) })).await;
                    let _ = tx.send(Err(Status::with_metadata(Code::Ok, "", md))).await;
                    acknowledge(client, &allowed, receipt);
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                }
            },
            Err((how, status)) => {
                let error = Some(status.message().to_owned());
                let result = finish(&state, &allowed, &tally, how, error).await;
                let status = match result {
                    Ok(receipt) => {
                        let mut s = status;
                        insert_receipt(s.metadata_mut(), &receipt);
                        acknowledge(client, &allowed, receipt);
                        s
                    }
                    Err(s) => s,
                };
                let _ = tx.send(Err(status)).await;
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

/// Answers an allowed lookup.
pub(crate) async fn lookup(
    state: Arc<State>,
    allowed: Allowed,
) -> Result<Response<pb::LookupResponse>, Status> {
    let (mut stream, client) = open_fetch(&state, &allowed).await?;
    let mut tally = Tally::new(&allowed);
    let mut records = Vec::new();
    let outcome = loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                let batch = msg.batch.unwrap_or_default().records;
                match tally.admit_batch(batch, &allowed) {
                    Ok(Next::Send(r) | Next::Last(r)) => records.extend(r),
                    Err(err) => {
                        break Err(Status::internal(format!("the exchange was stopped: {err}")));
                    }
                }
                if records.len() > 1 {
                    break Err(Status::internal(
                        "the exchange was stopped: the dataset's key matched more than one record",
                    ));
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(adapter_status(&allowed.provider.to_string(), status)),
        }
    };
    match outcome {
        Ok(()) => {
            let receipt = finish(&state, &allowed, &tally, ExchangeStatus::Ok, None).await?;
            let found = !records.is_empty();
            let mut response = Response::new(pb::LookupResponse {
                found,
                record: records.pop().unwrap_or_default(),
                receipt: Some(receipt.clone()),
            });
            insert_receipt(response.metadata_mut(), &receipt);
            acknowledge(client, &allowed, receipt);
            Ok(response)
        }
        Err(status) => {
            // nothing reached the consumer: the completion records no rows
            let error = Some(status.message().to_owned());
            finish(
                &state,
                &allowed,
                &Tally::new(&allowed),
                ExchangeStatus::Failed,
                error,
            )
            .await?;
            Err(status)
        }
    }
}
