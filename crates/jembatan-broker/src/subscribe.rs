//! Change subscriptions (`Exchange.Subscribe`): an allowed subscription,
//! its decision entry durable, polls the provider's adapter for the
//! dataset's changes after its position and delivers them, batch by
//! batch, until the consumer goes, the agreement stops being in force, a
//! quota runs out or the broker shuts down.
//!
//! Each poll that found changes becomes one `delivery` entry, durable
//! before its batch leaves: rows, payload hash and the cursor range (keys
//! only as keyed hashes), and what the adapter sent (`received`), for
//! `audit crosscheck` against the adapter's `changes` lines. A change of
//! a row the subscription may see is an upsert; a change of a row that
//! left its scope (or was deleted) is a delete, but only for a key the
//! subscription was given (the store keeps them as keyed hashes, see
//! `jembatan_store::subscriptions`); any other change produces nothing.
//!
//! The consumer resumes from the cursor of the last batch it kept
//! (sealed, see `cursor.rs`): the store rewinds what the subscription
//! holds to that batch, and the poll starts after that position, so
//! every change after it is delivered exactly once more.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use jembatan_core::{
    AgencyId, AgreementStatus, ChangeMark, DatasetId, Decision, DenialCode, EntryKind,
    ExchangeStatus, InvalidArgument, PayloadHasher, Received, SubscriptionMark,
};
use jembatan_pki::PeerCredential;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use jembatan_store::{HeldKeys, KeyHash};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use crate::adapters::{Lane, fails_over};
use crate::cursor::{CursorPosition, CursorSealer, MAX_CURSOR_BYTES};
use crate::error::{ExchangeError, from_adapter};
use crate::facts::{Ask, AuditKey, hash_text};
use crate::lifecycle::StatusEvent;
use crate::relay::{self, Allowed, Stop};
use crate::state::State;

/// Most changes one batch holds.
pub(crate) const MAX_SUBSCRIBE_BATCH: u64 = 10_000;
/// Changes per batch when the consumer does not say.
const DEFAULT_BATCH: u32 = 1_000;
/// How often to poll when the adapter does not say.
const DEFAULT_POLL: Duration = Duration::from_millis(500);
/// A stream that delivered nothing for this long gets its cursor anyway
/// (a batch without changes), so that a consumer resuming later does not
/// re-read what went by outside its scope.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Longest wait between polls while the provider's adapter is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest one poll may take at the adapter.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest position half (change value or key) accepted from an adapter.
const MAX_POSITION_BYTES: usize = 1024;

/// The subscription a stream follows, and where it starts: from a
/// consumer's cursor, or new.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub(crate) id: String,
    /// The last change the consumer kept; `None` from the first.
    pub(crate) after: Option<pb::ChangePosition>,
    /// The subscription's batch the cursor was issued at (0: new).
    pub(crate) batch: u64,
    /// What the subscription reads, hashed (see [`scope_of`]).
    pub(crate) scope: String,
    pub(crate) batch_size: u32,
    /// The stream's resume in the store: only the last one records.
    pub(crate) generation: u64,
}

impl Resume {
    /// The subscription of a request: the cursor's, opened and checked
    /// against the consumer, the dataset and what the request reads, or
    /// a new one. The words never quote the cursor.
    pub(crate) fn from_request(
        cursors: &CursorSealer,
        ask: &Ask,
        consumer: &AgencyId,
        dataset: &DatasetId,
    ) -> Result<Resume, InvalidArgument> {
        let scope = scope_of(ask);
        let batch_size = match u32::try_from(ask.limit) {
            Ok(0) => DEFAULT_BATCH,
            Ok(n) => n,
            Err(_) => DEFAULT_BATCH,
        };
        let Some(text) = ask.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(Resume {
                id: uuid::Uuid::now_v7().to_string(),
                after: None,
                batch: 0,
                scope,
                batch_size,
                generation: 0,
            });
        };
        let position = cursors
            .open(consumer, dataset, text)
            .map_err(|e| InvalidArgument::new("cursor", e.to_string()))?;
        if position.scope != scope {
            return Err(InvalidArgument::new(
                "cursor",
                "the cursor belongs to a subscription with another target schema, fields, filter or purpose: resume with the request it came from, or start a new subscription without a cursor",
            ));
        }
        let after = if position.at_start() {
            None
        } else {
            Some(pb::ChangePosition {
                change: position.change,
                key: position.key,
            })
        };
        Ok(Resume {
            id: position.subscription,
            after,
            batch: position.batch,
            scope,
            batch_size,
            generation: 0,
        })
    }

    /// The subscription as the decision entry names it.
    pub(crate) fn mark(&self, audit_key: &AuditKey, dataset: &DatasetId) -> SubscriptionMark {
        SubscriptionMark {
            id: self.id.clone(),
            batch: self.batch,
            after: self
                .after
                .as_ref()
                .map(|p| change_mark(audit_key, dataset, p)),
            ..SubscriptionMark::default()
        }
    }
}

/// What a subscription reads, as a hash bound into its cursors: the
/// target schema, the purpose, the fields (in any order) and the filter.
fn scope_of(ask: &Ask) -> String {
    let mut fields = ask.fields.clone();
    fields.sort();
    let mut hash = Sha256::new();
    for part in [&ask.target_schema, &ask.purpose] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for f in &fields {
        hash.update(f.as_bytes());
        hash.update([1]);
    }
    hash.update([0]);
    if let Some(filter) = &ask.filter {
        hash.update(filter.encode_to_vec());
    }
    hex::encode(hash.finalize())
}

/// A key as subject hashes take it, from the JSON text a position holds:
/// a string as it is, anything else as its JSON text.
fn key_text(json: &str) -> Option<Cow<'_, str>> {
    // a string without escapes, as most keys are, is read as it stands
    if let Some(inner) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"'))
        && !inner.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
    {
        return Some(Cow::Borrowed(inner));
    }
    match serde_json::from_str::<serde_json::Value>(json).ok()? {
        serde_json::Value::String(s) => Some(Cow::Owned(s)),
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
            Some(Cow::Borrowed(json.trim()))
        }
        _ => None,
    }
}

/// A position as the log keeps it: the change value, the key's hash.
fn change_mark(audit_key: &AuditKey, dataset: &DatasetId, p: &pb::ChangePosition) -> ChangeMark {
    let key = key_text(&p.key).unwrap_or(Cow::Borrowed(&p.key));
    ChangeMark {
        change: p.change.clone(),
        key_hash: audit_key.subject_hash(dataset.as_str(), &key),
    }
}

/// The stream of a subscription's messages.
pub(crate) type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

/// Follows an allowed subscription.
pub(crate) async fn subscribe(
    state: Arc<State>,
    mut allowed: Allowed,
    credential: Option<PeerCredential>,
) -> Result<Response<SubscribeStream>, Status> {
    let Some(resume) = allowed.resume.take() else {
        return Err(ExchangeError::NoConsumer.into());
    };
    let Some(consumer) = allowed.facts.consumer.clone() else {
        return Err(ExchangeError::NoConsumer.into());
    };
    let Some(key_field) = allowed.key_field.clone() else {
        return Err(ExchangeError::KeyField.into());
    };
    let (tx, rx) = mpsc::channel(4);
    let started = pb::SubscribeResponse {
        item: Some(pb::subscribe_response::Item::Started(
            pb::SubscriptionStarted {
                subscription_id: resume.id.clone(),
                exchange_id: allowed.facts.exchange_id.clone(),
                decision_seq: allowed.decision_seq.unwrap_or_default(),
            },
        )),
    };
    // the channel is new and empty
    let _ = tx.try_send(Ok(started));
    let held = allowed.held.take();
    // subscribed before the first poll, so no revocation is missed
    let events = state.lifecycle.events.subscribe();
    let allowed = Arc::new(allowed);
    tokio::spawn(async move {
        let interval = poll_interval(&state, &allowed).await;
        let delete_key = allowed
            .admit
            .passes_unchanged(key_field.as_str())
            .then(|| key_field.to_string());
        let mut follow = Follow {
            handle_domain: format!("subscription key\0{consumer}\0{}", allowed.dataset),
            consumer,
            credential,
            resume,
            delete_key,
            held: None,
            interval,
            rows: 0,
            bytes: 0,
            hasher: PayloadHasher::new(),
            received_rows: 0,
            endpoint: None,
            last_sent: Instant::now(),
            backoff: Duration::ZERO,
            policy_version: None,
            changes: 0,
            upserts: 0,
            deletes: 0,
        };
        let stop = follow.run(&state, &allowed, &tx, events).await;
        if let Some(held) = held {
            held.release().await;
        }
        let status = follow.end(&state, &allowed, stop).await;
        // the consumer is told, if it is still there
        let _ = tokio::time::timeout(state.isolation.stall_timeout, tx.send(Err(status))).await;
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

/// How often the provider's adapter asks to be polled for the dataset
/// (its `Describe`), or the default when it cannot say.
async fn poll_interval(state: &State, allowed: &Allowed) -> Duration {
    let Ok(endpoints) = relay::adapter_endpoints(
        state.store.agency(&allowed.provider).await,
        &allowed.provider,
    ) else {
        return DEFAULT_POLL;
    };
    match state.adapters.describe(&endpoints, &allowed.provider).await {
        Ok(described) => described
            .datasets
            .iter()
            .find(|d| d.dataset == allowed.dataset.as_str() || d.dataset == allowed.dataset.name())
            .and_then(|d| d.changes.as_ref())
            .map(|c| Duration::from_millis(u64::from(c.poll_interval_ms.max(10))))
            .unwrap_or(DEFAULT_POLL),
        Err(_) => DEFAULT_POLL,
    }
}

/// One poll of the provider's adapter, at the first endpoint that
/// answers: the changes the request asks for, and who served.
async fn poll(
    state: &State,
    allowed: &Allowed,
    request: pb::ChangesRequest,
) -> Result<(Vec<pb::Change>, String), Unpolled> {
    let endpoints = relay::adapter_endpoints(
        state.store.agency(&allowed.provider).await,
        &allowed.provider,
    )
    .map_err(|e| Unpolled::Stop(Stop::failed(e)))?;
    let mut last = Status::from(ExchangeError::NoAdapter {
        provider: allowed.provider.clone(),
    });
    for endpoint in state.adapters.order(&allowed.provider, &endpoints) {
        match poll_at(state, allowed, &endpoint, request.clone()).await {
            Ok(changes) => {
                state.adapters.mark_up(&allowed.provider, &endpoint);
                return Ok((changes, endpoint));
            }
            // nothing was delivered from a poll yet: any endpoint
            // that breaks is passed over, whenever it breaks
            Err(status) if fails_over(&status) => {
                state
                    .adapters
                    .mark_down(&allowed.provider, &endpoint, &status);
                last = status;
            }
            Err(status) => {
                return Err(Unpolled::Stop(Stop::new(
                    relay::adapter_end(allowed, &status),
                    from_adapter(&allowed.provider.to_string(), status),
                )));
            }
        }
    }
    Err(Unpolled::Retry(last))
}

/// One poll at one endpoint, read whole.
async fn poll_at(
    state: &State,
    allowed: &Allowed,
    endpoint: &str,
    request: pb::ChangesRequest,
) -> Result<Vec<pb::Change>, Status> {
    let channel = state
        .adapters
        .channel(endpoint, &allowed.provider, Lane::Calls)?;
    let mut client = AdapterClient::new(channel).max_decoding_message_size(16 << 20);
    let request_limit = request.limit;
    let mut request = allowed.facts.trace.request(request);
    request.set_timeout(POLL_TIMEOUT);
    let mut stream = client.changes(request).await?.into_inner();
    let mut changes = Vec::new();
    while let Some(message) = stream.message().await? {
        changes.extend(message.changes);
        if changes.len() > request_limit as usize {
            return Err(Status::internal(format!(
                "the adapter sent more than the {request_limit} changes asked for"
            )));
        }
    }
    Ok(changes)
}

/// Why a poll gave no changes to deliver.
enum Unpolled {
    /// No endpoint of the provider's adapter could be reached: try again.
    Retry(Status),
    /// The adapter refused or failed: the subscription ends.
    Stop(Stop),
}

/// A change the adapter sent, read.
struct Seen {
    position: pb::ChangePosition,
    /// The key's subject hash: what the store keeps, and the log in hex.
    hash: KeyHash,
    /// The key's handle, the consumer's name for it (in hex on the wire).
    handle: KeyHash,
    /// In scope and not deleted: the row's record came with it.
    upsert: bool,
}

/// A running subscription stream's state.
struct Follow {
    consumer: AgencyId,
    /// The consumer's client certificate, checked against the revocation
    /// list in force before each poll and each batch.
    credential: Option<PeerCredential>,
    resume: Resume,
    /// What each key's handle is keyed with, besides the audit key.
    handle_domain: String,
    /// The key field a delete carries, when the consumer's records carry
    /// it in clear.
    delete_key: Option<String>,
    /// The keys the subscription holds, loaded from the store when a
    /// change first leaves the scope, then kept up to date with each
    /// batch this stream records.
    held: Option<HeldKeys>,
    interval: Duration,
    /// Totals over the stream, for its completion entry.
    rows: u64,
    bytes: u64,
    hasher: PayloadHasher,
    received_rows: u64,
    changes: u64,
    upserts: u64,
    deletes: u64,
    /// The adapter endpoint of the last poll that found changes.
    endpoint: Option<String>,
    /// When a batch (or a cursor) was last sent to the consumer.
    last_sent: Instant,
    backoff: Duration,
    /// The store's policy version when the agreement was last read.
    policy_version: Option<i64>,
}

impl Follow {
    /// Polls and delivers until the subscription ends; returns why.
    async fn run(
        &mut self,
        state: &Arc<State>,
        allowed: &Arc<Allowed>,
        tx: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
        mut events: broadcast::Receiver<StatusEvent>,
    ) -> Stop {
        // the poll read ahead while the batch before it was delivered
        let mut ahead = None;
        loop {
            if let Err(stop) = self.in_force(state, allowed).await {
                return stop;
            }
            let polled = match ahead.take() {
                Some(polled) => polled,
                None => {
                    let request = self.changes_request(allowed, self.resume.after.clone());
                    tokio::select! {
                        biased;
                        stop = stop_signal(state, allowed, tx, &mut events) => return stop,
                        polled = poll(state, allowed, request) => polled,
                    }
                }
            };
            let full = match polled {
                Ok((changes, endpoint)) => {
                    self.backoff = Duration::ZERO;
                    let full = changes.len() >= self.resume.batch_size as usize;
                    // a full batch: more are waiting, so the next poll
                    // (after this batch's last change) runs while this one
                    // is checked, recorded and sent
                    let next = full
                        .then(|| changes.last().and_then(|c| c.position.clone()))
                        .flatten()
                        .map(|last| self.changes_request(allowed, Some(last)));
                    if !changes.is_empty() {
                        let delivered = match next {
                            Some(request) => {
                                // a task of its own, so that reading the
                                // poll's answer runs beside this batch
                                let (on, by) = (Arc::clone(state), Arc::clone(allowed));
                                let reading =
                                    tokio::spawn(async move { poll(&on, &by, request).await });
                                let (delivered, polled) = tokio::join!(
                                    self.deliver(state, allowed, tx, changes, endpoint),
                                    reading
                                );
                                ahead = Some(polled.unwrap_or_else(|lost| {
                                    Err(Unpolled::Retry(Status::internal(format!(
                                        "a poll's task ended early: {lost}"
                                    ))))
                                }));
                                delivered
                            }
                            None => self.deliver(state, allowed, tx, changes, endpoint).await,
                        };
                        if let Err(stop) = delivered {
                            return stop;
                        }
                    }
                    full
                }
                Err(Unpolled::Stop(stop)) => return stop,
                Err(Unpolled::Retry(status)) => {
                    self.backoff = (self.backoff * 2).clamp(self.interval, MAX_BACKOFF);
                    tracing::warn!(
                        provider = %allowed.provider,
                        exchange_id = %allowed.facts.exchange_id,
                        error = %status,
                        retry_in = ?self.backoff,
                        "no adapter endpoint answered a subscription's poll"
                    );
                    false
                }
            };
            if self.last_sent.elapsed() >= HEARTBEAT
                && let Err(stop) = self.send_cursor(state, allowed, tx).await
            {
                return stop;
            }
            // a full batch: more are waiting
            if full {
                continue;
            }
            let wait = self.backoff.max(self.interval);
            tokio::select! {
                biased;
                stop = stop_signal(state, allowed, tx, &mut events) => return stop,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Whether the consumer's certificate is still accepted and the
    /// agreement still in force, read again when the store's policy
    /// version moved (a change through any replica).
    async fn in_force(&mut self, state: &State, allowed: &Allowed) -> Result<(), Stop> {
        if let Some(Err(err)) = self.credential.as_ref().map(PeerCredential::check) {
            return Err(Stop::from_status(
                ExchangeStatus::Stopped,
                jembatan_core::error::status(&err),
            ));
        }
        let version = state
            .store
            .policy_version()
            .await
            .map_err(|e| Stop::failed(ExchangeError::store(e)))?;
        if self.policy_version == Some(version) {
            return Ok(());
        }
        let status = match state.store.agreement(&allowed.agreement.id).await {
            Ok(Some(a)) => a.status,
            Ok(None) => AgreementStatus::Revoked,
            Err(err) => return Err(Stop::failed(ExchangeError::store(err))),
        };
        if let Some(stop) = relay::out_of_force(allowed, status) {
            return Err(stop);
        }
        self.policy_version = Some(version);
        Ok(())
    }

    /// The poll for the changes after `after`.
    fn changes_request(
        &self,
        allowed: &Allowed,
        after: Option<pb::ChangePosition>,
    ) -> pb::ChangesRequest {
        pb::ChangesRequest {
            exchange_id: allowed.facts.exchange_id.clone(),
            dataset: allowed.dataset.to_string(),
            columns: allowed.fetch.columns.clone(),
            filter: allowed.fetch.filter.clone(),
            after,
            limit: self.resume.batch_size,
            consumer: self.consumer.to_string(),
            purpose: allowed.fetch.purpose.clone(),
        }
    }

    /// Delivers one poll's changes: what of them the consumer may have,
    /// recorded in the store and on the log before it is sent.
    async fn deliver(
        &mut self,
        state: &State,
        allowed: &Allowed,
        tx: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
        changes: Vec<pb::Change>,
        endpoint: String,
    ) -> Result<(), Stop> {
        let bad = |what: &'static str| {
            Stop::failed(ExchangeError::BadChange {
                provider: allowed.provider.to_string(),
                what,
            })
        };
        // what the adapter sent, counted as its receipt log counts it
        let mut received = PayloadHasher::new();
        let mut received_bytes = 0u64;
        // each change's position and whether it is an upsert; its key's
        // hashes follow below
        let mut seen = Vec::with_capacity(changes.len());
        let mut records = Vec::new();
        let polled = changes.len() as u64;
        for change in changes {
            let Some(position) = change.position else {
                return Err(bad("a change without its position"));
            };
            if position.change.is_empty()
                || position.change.len() > MAX_POSITION_BYTES
                || position.key.len() > MAX_POSITION_BYTES
            {
                return Err(bad("a change position that is empty or too long"));
            }
            if key_text(&position.key).is_none() {
                return Err(bad("a key that is not a JSON string, number or boolean"));
            }
            let upsert = change.op == pb::ChangeOp::Upsert as i32 && change.in_scope;
            if change.record.is_empty() {
                if upsert {
                    return Err(bad("an upsert in scope without its record"));
                }
            } else {
                if !upsert {
                    return Err(bad("the columns of a row outside the scope"));
                }
                received.update(&change.record);
                received_bytes += change.record.len() as u64;
                records.push(change.record);
            }
            seen.push(Seen {
                position,
                hash: KeyHash::default(),
                handle: KeyHash::default(),
                upsert,
            });
        }
        // the upserts' records, checked and shaped as a query's on a
        // worker thread while the keys are hashed here
        let upserts = records.len();
        let admitting = (!records.is_empty()).then(|| {
            let first = self.received_rows + 1;
            state.workers.admit(&allowed.admit, records, first)
        });
        for s in &mut seen {
            // checked above
            let key = key_text(&s.position.key).unwrap_or_default();
            s.hash = state
                .audit_key
                .subject_digest(allowed.dataset.as_str(), &key);
            s.handle = state.audit_key.subject_digest(&self.handle_domain, &key);
        }
        if self.held.is_none() && seen.iter().any(|s| !s.upsert) {
            let held = state
                .store
                .subscription_keys(&self.resume.id)
                .await
                .map_err(|e| Stop::failed(ExchangeError::store(e)))?;
            self.held = Some(held);
        }
        let admitted = match admitting {
            None => Vec::new(),
            Some(pending) => match pending.await {
                Ok(Ok(Ok(admitted))) => {
                    if let Some(err) = admitted.failed {
                        return Err(Stop::failed(err));
                    }
                    admitted.records
                }
                Ok(Ok(Err(err))) => return Err(Stop::failed(err)),
                Ok(Err(cause)) => return Err(Stop::failed(ExchangeError::AdmitLost(cause))),
                Err(join) => {
                    return Err(Stop::failed(ExchangeError::AdmitLost(Box::new(join))));
                }
            },
        };
        if admitted.len() != upserts {
            return Err(bad("a record the grant does not admit"));
        }
        // the daily rows count upserts; the batch ends before the first
        // one the quota has no room for
        let room = self.quota_room(state, allowed, upserts as u64).await?;
        let mut out: Vec<pb::ChangeRecord> = Vec::new();
        let (mut given, mut taken) = (Vec::new(), Vec::new());
        let mut consumed = 0usize;
        let mut admitted = admitted.into_iter();
        let mut upserted = 0u64;
        for s in &seen {
            if s.upsert {
                if upserted == room {
                    break;
                }
                upserted += 1;
                let record = admitted.next().unwrap_or_default();
                out.push(pb::ChangeRecord {
                    op: pb::ChangeOp::Upsert as i32,
                    key: hash_text(&s.handle),
                    record,
                });
                given.push(s.hash);
            } else if self
                .held
                .as_ref()
                .is_some_and(|keys| keys.contains(&s.hash))
            {
                let record = match &self.delete_key {
                    Some(field) => format!(
                        "{{{}:{}}}",
                        serde_json::Value::String(field.clone()),
                        s.position.key
                    ),
                    None => "{}".to_owned(),
                };
                out.push(pb::ChangeRecord {
                    op: pb::ChangeOp::Delete as i32,
                    key: hash_text(&s.handle),
                    record,
                });
                taken.push(s.hash);
            }
            consumed += 1;
        }
        let ran_out = consumed < seen.len();
        // the keys given and taken are recorded (by the store's writer)
        // while the batch's lines are hashed here
        let next = self.resume.batch + 1;
        let (recorded, hasher, bytes) = {
            let (id, generation) = (self.resume.id.as_str(), self.resume.generation);
            let mut recording = std::pin::pin!(async {
                if given.is_empty() && taken.is_empty() {
                    return Ok(None);
                }
                state
                    .store
                    .record_subscription_batch(id, generation, next, &given, &taken)
                    .await
                    .map(Some)
            });
            // asked before the hashing, so the writer works meanwhile
            let early = futures::poll!(recording.as_mut());
            let mut hasher = PayloadHasher::new();
            let mut bytes = 0u64;
            // each line written into one buffer and hashed whole
            let mut line = String::new();
            for change in &out {
                line.clear();
                line.extend(line_parts(change));
                hasher.update(&line);
                bytes += line.len() as u64;
            }
            let recorded = match early {
                Poll::Ready(recorded) => recorded,
                Poll::Pending => recording.await,
            };
            (recorded, hasher, bytes)
        };
        match recorded {
            Ok(None) => {}
            Ok(Some(true)) => {
                self.resume.batch = next;
                if let Some(keys) = &mut self.held {
                    keys.apply(&given, &taken);
                }
            }
            Ok(Some(false)) => {
                return Err(Stop::new(
                    ExchangeStatus::Cancelled,
                    ExchangeError::SubscriptionMoved,
                ));
            }
            Err(err) => return Err(Stop::failed(ExchangeError::store(err))),
        }
        // an agreement changed through another replica is seen before
        // anything of the batch leaves
        self.in_force(state, allowed).await?;
        let last = seen[..consumed].last().map(|s| s.position.clone());
        let dataset = &allowed.dataset;
        let mut entry =
            allowed
                .facts
                .entry(EntryKind::Delivery, Decision::Allow, ExchangeStatus::Ok);
        entry.rows = out.len() as u64;
        entry.bytes = bytes;
        let payload_sha256 = hasher.hex();
        entry.payload_sha256 = Some(payload_sha256.clone());
        entry.received = Some(Received {
            rows: polled,
            bytes: received_bytes,
            payload_sha256: received.hex(),
        });
        // each key once: a poll holds one change per row
        let mut named: HashSet<KeyHash> = HashSet::with_capacity(given.len() + taken.len());
        let listed: HashSet<&str> = entry.subjects.iter().map(String::as_str).collect();
        let subjects: Vec<String> = given
            .iter()
            .chain(&taken)
            .filter(|hash| named.insert(**hash))
            .map(hash_text)
            .filter(|text| !listed.contains(text.as_str()))
            .collect();
        entry.subjects.extend(subjects);
        entry.adapter_endpoint = Some(endpoint.clone());
        entry.subscription = Some(SubscriptionMark {
            id: self.resume.id.clone(),
            batch: self.resume.batch,
            after: self
                .resume
                .after
                .as_ref()
                .map(|p| change_mark(&state.audit_key, dataset, p)),
            last: last
                .as_ref()
                .map(|p| change_mark(&state.audit_key, dataset, p)),
            changes: consumed as u64,
            upserts: given.len() as u64,
            deletes: taken.len() as u64,
        });
        let stored = state
            .journal
            .during(&allowed.end, entry)
            .await
            .map_err(|status| Stop::from_status(ExchangeStatus::Failed, status))?;
        let receipt = relay::receipt(
            state,
            allowed,
            stored,
            payload_sha256.clone(),
            out.len() as u64,
            bytes,
        );
        // the stream's hash covers its delivery entries' hashes
        self.hasher.update(&payload_sha256);
        self.rows += out.len() as u64;
        self.bytes += bytes;
        self.received_rows += upserts as u64;
        self.changes += consumed as u64;
        self.upserts += given.len() as u64;
        self.deletes += taken.len() as u64;
        self.endpoint = Some(endpoint.clone());
        if last.is_some() {
            self.resume.after = last;
        }
        if !out.is_empty() {
            let batch = pb::ChangeBatch {
                changes: out,
                cursor: self.cursor(state, allowed),
                receipt: Some(receipt.clone()),
            };
            self.send(state, tx, batch).await?;
        }
        self.acknowledge(state, allowed, &endpoint, receipt);
        if ran_out {
            let err = ExchangeError::QuotaRanOut {
                id: allowed.agreement.id.clone(),
                per_day: allowed.agreement.quota.rows_per_day,
                rows: self.upserts,
            };
            return Err(Stop::denied(DenialCode::QuotaExhausted, err, allowed));
        }
        Ok(())
    }

    /// Takes up to `wanted` rows of the agreement's daily quota; returns
    /// how many were taken.
    async fn quota_room(&self, state: &State, allowed: &Allowed, wanted: u64) -> Result<u64, Stop> {
        let per_day = allowed.agreement.quota.rows_per_day;
        if per_day == 0 || wanted == 0 {
            return Ok(wanted);
        }
        let day = jembatan_store::QuotaKind::RowsPerDay.window(chrono::Utc::now());
        state
            .store
            .take_quota_up_to(
                &allowed.agreement.id,
                jembatan_store::QuotaKind::RowsPerDay,
                &day,
                wanted,
                per_day,
            )
            .await
            .map_err(|err| Stop::failed(ExchangeError::store(err)))
    }

    /// The cursor after everything this stream has consumed.
    fn cursor(&self, state: &State, allowed: &Allowed) -> String {
        let (change, key) = match &self.resume.after {
            Some(p) => (p.change.clone(), p.key.clone()),
            None => (String::new(), String::new()),
        };
        let cursor = state.cursors.seal(
            &self.consumer,
            &allowed.dataset,
            &CursorPosition {
                subscription: self.resume.id.clone(),
                change,
                key,
                batch: self.resume.batch,
                scope: self.resume.scope.clone(),
            },
        );
        debug_assert!(cursor.len() <= MAX_CURSOR_BYTES);
        cursor
    }

    /// Sends the cursor alone, when nothing was sent for a while.
    async fn send_cursor(
        &mut self,
        state: &State,
        allowed: &Allowed,
        tx: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    ) -> Result<(), Stop> {
        let batch = pb::ChangeBatch {
            changes: Vec::new(),
            cursor: self.cursor(state, allowed),
            receipt: None,
        };
        self.send(state, tx, batch).await
    }

    /// Hands a batch to the consumer's stream once it has room.
    async fn send(
        &mut self,
        state: &State,
        tx: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
        batch: pb::ChangeBatch,
    ) -> Result<(), Stop> {
        let stall = state.isolation.stall_timeout;
        let message = pb::SubscribeResponse {
            item: Some(pb::subscribe_response::Item::Batch(batch)),
        };
        tokio::select! {
            biased;
            room = tokio::time::timeout(stall, tx.reserve()) => match room {
                Ok(Ok(permit)) => {
                    permit.send(Ok(message));
                    self.last_sent = Instant::now();
                    Ok(())
                }
                Ok(Err(_)) => Err(Stop::gone()),
                Err(_) => Err(Stop::stalled(stall)),
            },
            () = state.drain.ending() => Err(Stop::shutting_down()),
        }
    }

    /// Tells the adapter that served the batch its receipt. Best effort.
    fn acknowledge(&self, state: &State, allowed: &Allowed, endpoint: &str, receipt: pb::Receipt) {
        let client = match state
            .adapters
            .channel(endpoint, &allowed.provider, Lane::Calls)
        {
            Ok(channel) => AdapterClient::new(channel),
            Err(err) => {
                tracing::warn!(provider = %allowed.provider, endpoint, error = %err, "adapter endpoint unusable");
                return;
            }
        };
        let request = pb::AcknowledgeRequest {
            dataset: allowed.dataset.to_string(),
            consumer: self.consumer.to_string(),
            receipt: Some(receipt),
        };
        state.acks.send(&allowed.provider, vec![client], request);
    }

    /// Writes the stream's completion entry: its totals, how it ended.
    /// Returns the status the consumer's stream ends with.
    async fn end(&self, state: &State, allowed: &Allowed, stop: Stop) -> Status {
        let reasons = stop.reasons.clone();
        let mut entry = allowed.end.end_entry(stop.how);
        entry.reasons = stop.reasons;
        entry.rows = self.rows;
        entry.bytes = self.bytes;
        entry.payload_sha256 = Some(self.hasher.hex());
        entry.duration_ms = Some(allowed.facts.elapsed_ms());
        entry.error = Some(stop.status.message().to_owned());
        entry.adapter_endpoint = self.endpoint.clone();
        entry.subscription = Some(SubscriptionMark {
            id: self.resume.id.clone(),
            batch: self.resume.batch,
            after: None,
            last: self
                .resume
                .after
                .as_ref()
                .map(|p| change_mark(&state.audit_key, &allowed.dataset, p)),
            changes: self.changes,
            upserts: self.upserts,
            deletes: self.deletes,
        });
        match state.journal.end(&allowed.end, entry).await {
            Ok(stored) => {
                let mut status = stop.status;
                // a subscription stopped by its agreement (revoked,
                // expired, quota) says why as a denial does
                if !reasons.is_empty() {
                    let details = pb::DenialDetails {
                        exchange_id: allowed.facts.exchange_id.clone(),
                        reasons: reasons
                            .iter()
                            .map(jembatan_core::Denial::to_proto)
                            .collect(),
                        entry_seq: stored.seq,
                    };
                    jembatan_proto::trailers::insert(
                        status.metadata_mut(),
                        jembatan_proto::DENIAL_METADATA_KEY,
                        &details,
                    );
                }
                status
            }
            Err(status) => status,
        }
    }
}

/// One change as the consumer receives it and as the payload hash
/// covers it, `{"op":"upsert"|"delete","key":"<hex>","record":{...}}`,
/// in the parts it is made of.
fn line_parts(change: &pb::ChangeRecord) -> [&str; 7] {
    let op = if change.op == pb::ChangeOp::Delete as i32 {
        "delete"
    } else {
        "upsert"
    };
    [
        "{\"op\":\"",
        op,
        "\",\"key\":\"",
        &change.key,
        "\",\"record\":",
        &change.record,
        "}",
    ]
}

/// Resolves when the subscription must end: the consumer went away, the
/// broker is shutting down, or the agreement expired or was revoked
/// (through this replica; others are seen by [`Follow::in_force`]).
async fn stop_signal(
    state: &State,
    allowed: &Allowed,
    tx: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    events: &mut broadcast::Receiver<StatusEvent>,
) -> Stop {
    let agreement_id = allowed.agreement.id.clone();
    // once the agreement events end, only the other signals are awaited
    let mut listening = true;
    loop {
        tokio::select! {
            biased;
            () = tx.closed() => return Stop::gone(),
            () = state.drain.ending() => return Stop::shutting_down(),
            () = relay::until_end(allowed) => {
                let err = ExchangeError::AgreementExpired(agreement_id);
                return Stop::denied(DenialCode::Expired, err, allowed);
            }
            event = events.recv(), if listening => {
                let status = match event {
                    Ok(e) if e.id == agreement_id => Some(e.status),
                    Ok(_) => None,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match state.store.agreement(&agreement_id).await {
                            Ok(Some(a)) => Some(a.status),
                            Ok(None) => Some(AgreementStatus::Revoked),
                            Err(err) => return Stop::failed(ExchangeError::store(err)),
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        listening = false;
                        None
                    }
                };
                if let Some(stop) = status.and_then(|s| relay::out_of_force(allowed, s)) {
                    return stop;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_from_positions_as_subject_hashes_take_them() {
        assert_eq!(key_text("\"3201\"").as_deref(), Some("3201"));
        assert_eq!(key_text("42").as_deref(), Some("42"));
        assert_eq!(key_text("true").as_deref(), Some("true"));
        assert_eq!(key_text("{}"), None);
        assert_eq!(key_text("not json"), None);
        // escapes, and text that is not one JSON string, go to the parser
        assert_eq!(key_text(r#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(key_text(r#""a\u0041""#).as_deref(), Some("aA"));
        assert_eq!(key_text(r#""a" "b""#), None);
        assert_eq!(key_text("\"a\tb\""), None);
        assert_eq!(key_text("\""), None);
    }

    #[test]
    fn a_change_line_is_the_json_the_payload_hash_covers() {
        let upsert = pb::ChangeRecord {
            op: pb::ChangeOp::Upsert as i32,
            key: "ab".into(),
            record: r#"{"nik":"1"}"#.into(),
        };
        let line = line_parts(&upsert).concat();
        assert_eq!(line, r#"{"op":"upsert","key":"ab","record":{"nik":"1"}}"#);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["record"]["nik"], "1");
        let delete = pb::ChangeRecord {
            op: pb::ChangeOp::Delete as i32,
            key: "ab".into(),
            record: "{}".into(),
        };
        assert_eq!(
            line_parts(&delete).concat(),
            r#"{"op":"delete","key":"ab","record":{}}"#
        );
    }
}
