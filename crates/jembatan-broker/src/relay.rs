//! Relaying records from the provider's adapter to the consumer: checks
//! each record against the grant, hashes what is delivered, writes the
//! completion entry and hands out the receipt.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use jembatan_core::{AgreementStatus, Decision, Denial, DenialCode, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use jembatan_store::QuotaKind;
use prost::Message;
use ring::digest::{Context as Sha256, SHA256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Response, Status, Streaming};

use crate::RECEIPT_METADATA_KEY;
pub(crate) use crate::adapters::AdapterPool;
use crate::exchange::{Allowed, Shape, State};

/// Most bytes of one record the broker accepts from an adapter.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// Records counted and hashed: what was delivered to the consumer, and
/// for translated exchanges also what the adapter sent.
struct Tally {
    rows: u64,
    bytes: u64,
    hasher: Sha256,
    received: Option<(u64, u64, Sha256)>,
    /// For a lookup with values to verify: whether each matched.
    verified: BTreeMap<String, bool>,
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
            hasher: Sha256::new(&SHA256),
            // what the adapter sent differs from what is delivered
            received: (allowed.translation.is_some() || allowed.shape.is_some())
                .then(|| (0, 0, Sha256::new(&SHA256))),
            verified: BTreeMap::new(),
        }
    }

    /// Counts and hashes records as delivered to the consumer.
    fn deliver(&mut self, records: &[String]) {
        for record in records {
            self.rows += 1;
            self.bytes += record.len() as u64;
            self.hasher.update(record.as_bytes());
            self.hasher.update(b"\n");
        }
    }

    fn receive(&mut self, records: &[String]) {
        if let Some((rows, bytes, hasher)) = &mut self.received {
            for record in records {
                *rows += 1;
                *bytes += record.len() as u64;
                hasher.update(record.as_bytes());
                hasher.update(b"\n");
            }
        }
    }

    /// Checks a batch from the adapter — every record a JSON object holding
    /// only fetched fields, the total within the limit — and shapes
    /// (masks, verifies) and translates it as the exchange requires. The
    /// records returned are what may be delivered; the caller counts them
    /// with [`Tally::deliver`] once it sends them, so the tally is always
    /// what the consumer received.
    fn admit_batch(&mut self, records: Vec<String>, allowed: &Allowed) -> Result<Next, String> {
        // A record the broker changes is parsed once, here; otherwise only
        // its keys are read.
        let parsed = match (&allowed.translation, &allowed.shape) {
            (None, None) => {
                for record in &records {
                    check_record(record, allowed)?;
                }
                Vec::new()
            }
            _ => records
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
        let received_before = self.received_rows();
        self.receive(&records);
        Ok(match (&allowed.translation, &allowed.shape) {
            (None, None) => Next::Send(records),
            (None, Some(shape)) => Next::Send(
                parsed
                    .into_iter()
                    .map(|mut record| {
                        shape_record(&mut record, shape, &mut self.verified);
                        serde_json::Value::Object(record).to_string()
                    })
                    .collect(),
            ),
            (Some(t), shape) => {
                let mut out = Vec::with_capacity(records.len());
                let mut last = false;
                for (i, mut record) in parsed.into_iter().enumerate() {
                    if let Some(shape) = shape {
                        shape_record(&mut record, shape, &mut self.verified);
                    }
                    let translated = t
                        .translator
                        .translate(record, t.residual.as_ref(), &t.fields)
                        .map_err(|e| format!("record {}: {e}", received_before + i as u64 + 1))?;
                    if let Some(r) = translated {
                        out.push(r);
                        if t.limit > 0 && self.rows + out.len() as u64 >= t.limit {
                            last = true;
                            break;
                        }
                    }
                }
                if last {
                    Next::Last(out)
                } else {
                    Next::Send(out)
                }
            }
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

/// Masks a record's masked fields, compares the values to verify, and
/// drops the fields fetched only for verifying.
fn shape_record(
    record: &mut serde_json::Map<String, serde_json::Value>,
    shape: &Shape,
    verified: &mut BTreeMap<String, bool>,
) {
    for (field, rule) in &shape.masks {
        if let Some(v) = record.get_mut(field) {
            *v = rule.apply(v);
        }
    }
    for (field, want) in &shape.verify {
        let matched = record.get(field).is_some_and(|v| {
            jembatan_core::filter::compare(v, want) == Some(std::cmp::Ordering::Equal)
        });
        verified.insert(field.clone(), matched);
    }
    for field in &shape.drop {
        record.remove(field);
    }
}

/// One record from the adapter must be a JSON object of granted fields.
fn check_record(record: &str, allowed: &Allowed) -> Result<(), String> {
    check_size(record)?;
    // Only the keys matter here.
    let keys = jembatan_core::record::record_keys(record)
        .map_err(|e| format!("adapter sent a record that is not a JSON object: {e}"))?;
    check_keys(keys.into_iter(), allowed)
}

/// The same checks as [`check_record`], keeping the parsed object for the
/// translator.
fn parse_record(
    record: &str,
    allowed: &Allowed,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    check_size(record)?;
    let map = jembatan_core::record::parse_record(record)
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
            Vec::new(),
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
    reasons: Vec<Denial>,
) -> Result<pb::Receipt, Status> {
    let payload_sha256 = hex::encode(tally.hasher.clone().finish());
    let mut entry = allowed
        .facts
        .entry(EntryKind::Completion, Decision::Allow, status);
    entry.reasons = reasons;
    entry.rows = tally.rows;
    entry.bytes = tally.bytes;
    entry.payload_sha256 = Some(payload_sha256.clone());
    entry.received = tally
        .received
        .as_ref()
        .map(|(rows, bytes, hasher)| jembatan_core::Received {
            rows: *rows,
            bytes: *bytes,
            payload_sha256: hex::encode(hasher.clone().finish()),
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

/// Why a running exchange ends before its records do.
struct Stop {
    how: ExchangeStatus,
    status: Status,
    reasons: Vec<Denial>,
}

impl Stop {
    fn new(how: ExchangeStatus, status: Status) -> Self {
        Self {
            how,
            status,
            reasons: Vec::new(),
        }
    }

    /// The agreement stopped being in force, or its quota ran out.
    fn denied(code: DenialCode, status: Status, allowed: &Allowed) -> Self {
        let reason = Denial::new(code, status.message()).agreement(&allowed.agreement.id);
        Self {
            how: ExchangeStatus::Stopped,
            status,
            reasons: vec![reason],
        }
    }
}

/// Takes up to `records.len()` rows of the agreement's daily quota and
/// keeps only that many records. `Err` when the store cannot count.
async fn charge_rows(
    state: &State,
    allowed: &Allowed,
    records: &mut Vec<String>,
) -> Result<bool, Stop> {
    let per_day = allowed.agreement.quota.rows_per_day;
    if per_day == 0 || records.is_empty() {
        return Ok(true);
    }
    let day = QuotaKind::RowsPerDay.window(chrono::Utc::now());
    let n = records.len() as u64;
    let taken = state
        .store
        .take_quota_up_to(
            &allowed.agreement.id,
            QuotaKind::RowsPerDay,
            &day,
            n,
            per_day,
        )
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "quota store failed");
            Stop::new(
                ExchangeStatus::Failed,
                Status::unavailable("the broker store is unavailable"),
            )
        })?;
    records.truncate(usize::try_from(taken).unwrap_or(usize::MAX));
    Ok(taken == n)
}

/// Why the agreement is no longer in force, if it is not.
fn out_of_force(allowed: &Allowed, status: AgreementStatus) -> Option<Stop> {
    let id = &allowed.agreement.id;
    match status {
        AgreementStatus::Approved => None,
        AgreementStatus::Revoked => Some(Stop::denied(
            DenialCode::Revoked,
            Status::permission_denied(format!(
                "agreement {id} was revoked while the exchange was running"
            )),
            allowed,
        )),
        AgreementStatus::Expired => Some(Stop::denied(
            DenialCode::Expired,
            Status::permission_denied(format!(
                "agreement {id} expired while the exchange was running"
            )),
            allowed,
        )),
        AgreementStatus::Proposed | AgreementStatus::ProviderApproved => Some(Stop::denied(
            DenialCode::NotApproved,
            Status::permission_denied(format!("agreement {id} is no longer approved")),
            allowed,
        )),
    }
}

/// Sleeps until the agreement's window ends (forever if it never does).
async fn until_end(allowed: &Allowed) {
    match allowed.agreement.valid_until {
        Some(until) => {
            let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// Streams an allowed query to the consumer.
pub(crate) async fn query(
    state: Arc<State>,
    allowed: Allowed,
) -> Result<Response<ReceiverStream<Result<pb::QueryResponse, Status>>>, Status> {
    // subscribed before the first record, so no change is missed
    let mut events = state.lifecycle.events.subscribe();
    let (mut stream, client) = open_fetch(&state, &allowed).await?;
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut tally = Tally::new(&allowed);
        let agreement_id = allowed.agreement.id.clone();
        let outcome: Result<(), Stop> = loop {
            // biased: a revocation or expiry is seen before the next batch
            let next = tokio::select! {
                biased;
                () = tx.closed() => break Err(Stop::new(ExchangeStatus::Cancelled, Status::cancelled("consumer went away"))),
                () = until_end(&allowed) => {
                    let status = Status::permission_denied(format!(
                        "agreement {agreement_id} expired while the exchange was running"
                    ));
                    break Err(Stop::denied(DenialCode::Expired, status, &allowed));
                }
                event = events.recv() => {
                    let status = match event {
                        Ok(e) if e.id == agreement_id => Some(e.status),
                        Ok(_) => None,
                        // missed some: read the agreement itself
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            match state.store.agreement(&agreement_id).await {
                                Ok(Some(a)) => Some(a.status),
                                Ok(None) => Some(AgreementStatus::Revoked),
                                Err(err) => {
                                    tracing::error!(error = %err, "store read failed");
                                    break Err(Stop::new(ExchangeStatus::Failed, Status::unavailable("the broker store is unavailable")));
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
                    };
                    if let Some(stop) = status.and_then(|s| out_of_force(&allowed, s)) {
                        break Err(stop);
                    }
                    continue;
                }
                next = stream.message() => next,
            };
            match next {
                Ok(Some(msg)) => {
                    let records = msg.batch.unwrap_or_default().records;
                    let (mut records, last) = match tally.admit_batch(records, &allowed) {
                        Ok(Next::Send(r)) => (r, false),
                        Ok(Next::Last(r)) => (r, true),
                        Err(err) => {
                            tracing::warn!(provider = %allowed.provider, error = %err, "adapter sent a bad record");
                            break Err(Stop::new(
                                ExchangeStatus::Failed,
                                Status::internal(format!("the exchange was stopped: {err}")),
                            ));
                        }
                    };
                    let within_quota = match charge_rows(&state, &allowed, &mut records).await {
                        Ok(all) => all,
                        Err(stop) => break Err(stop),
                    };
                    if !records.is_empty() {
                        tally.deliver(&records);
                        let item = pb::query_response::Item::Batch(pb::RecordBatch { records });
                        if tx
                            .send(Ok(pb::QueryResponse { item: Some(item) }))
                            .await
                            .is_err()
                        {
                            break Err(Stop::new(
                                ExchangeStatus::Cancelled,
                                Status::cancelled("consumer went away"),
                            ));
                        }
                    }
                    if !within_quota {
                        let status = Status::resource_exhausted(format!(
                            "agreement {} allows {} rows per day: the quota ran out after {} rows of this exchange",
                            allowed.agreement.id, allowed.agreement.quota.rows_per_day, tally.rows
                        ));
                        break Err(Stop::denied(DenialCode::QuotaExhausted, status, &allowed));
                    }
                    if last {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => {
                    break Err(Stop::new(
                        ExchangeStatus::Failed,
                        adapter_status(&allowed.provider.to_string(), status),
                    ));
                }
            }
        };
        match outcome {
            Ok(()) => match finish(
                &state,
                &allowed,
                &tally,
                ExchangeStatus::Ok,
                None,
                Vec::new(),
            )
            .await
            {
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
            Err(stop) => {
                let error = Some(stop.status.message().to_owned());
                let result = finish(&state, &allowed, &tally, stop.how, error, stop.reasons).await;
                let status = match result {
                    Ok(receipt) => {
                        let mut s = stop.status;
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
    let outcome: Result<(), Stop> = loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                let batch = msg.batch.unwrap_or_default().records;
                match tally.admit_batch(batch, &allowed) {
                    Ok(Next::Send(r) | Next::Last(r)) => records.extend(r),
                    Err(err) => {
                        break Err(Stop::new(
                            ExchangeStatus::Failed,
                            Status::internal(format!("the exchange was stopped: {err}")),
                        ));
                    }
                }
                if records.len() > 1 {
                    break Err(Stop::new(
                        ExchangeStatus::Failed,
                        Status::internal(
                            "the exchange was stopped: the dataset's key matched more than one record",
                        ),
                    ));
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(Stop::new(
                    ExchangeStatus::Failed,
                    adapter_status(&allowed.provider.to_string(), status),
                ));
            }
        }
    };
    let outcome = match outcome {
        Ok(()) => match charge_rows(&state, &allowed, &mut records).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let status = Status::resource_exhausted(format!(
                    "agreement {} allows {} rows per day and none are left today",
                    allowed.agreement.id, allowed.agreement.quota.rows_per_day
                ));
                Err(Stop::denied(DenialCode::QuotaExhausted, status, &allowed))
            }
            Err(stop) => Err(stop),
        },
        Err(stop) => Err(stop),
    };
    match outcome {
        Ok(()) => {
            tally.deliver(&records);
            let receipt = finish(
                &state,
                &allowed,
                &tally,
                ExchangeStatus::Ok,
                None,
                Vec::new(),
            )
            .await?;
            let found = !records.is_empty();
            let verified = if found {
                std::mem::take(&mut tally.verified).into_iter().collect()
            } else {
                Default::default()
            };
            let mut response = Response::new(pb::LookupResponse {
                found,
                record: records.pop().unwrap_or_default(),
                receipt: Some(receipt.clone()),
                verified,
            });
            insert_receipt(response.metadata_mut(), &receipt);
            acknowledge(client, &allowed, receipt);
            Ok(response)
        }
        Err(stop) => {
            // nothing reached the consumer: the completion records no rows
            let error = Some(stop.status.message().to_owned());
            finish(
                &state,
                &allowed,
                &Tally::new(&allowed),
                stop.how,
                error,
                stop.reasons,
            )
            .await?;
            Err(stop.status)
        }
    }
}
