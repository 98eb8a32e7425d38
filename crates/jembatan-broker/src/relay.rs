//! Relaying records from the provider's adapter to the consumer: checks
//! each record against the grant, hashes what is delivered, writes the
//! completion entry and hands out the receipt.
//!
//! An [`Allowed`] exchange comes here with its decision entry durable and
//! the guard of its one end (see `journal.rs`); every way out of the relay
//! — delivered, stopped, failed, the consumer gone — writes that end.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use jembatan_core::{
    AgencyId, Agreement, AgreementStatus, DatasetId, Denial, DenialCode, ExchangeStatus, FieldName,
    PayloadHasher, Scalar,
};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use jembatan_proto::{RECEIPT_METADATA_KEY, trailers};
use jembatan_store::QuotaKind;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Response, Status, Streaming};

use crate::adapters::{Lane, fails_over};
use crate::admit::{Admit, Admitted, Pending};
use crate::drain::Drain;
use crate::error::{BadRecord, Cause, ExchangeError, from_adapter};
use crate::facts::{Facts, key_text};
use crate::isolation::Held;
use crate::journal::Unfinished;
use crate::state::State;

/// Batches of one query being admitted at once, on worker threads, while
/// the relay reads on: twice the workers of a two-core machine, so that a
/// worker finishing a batch finds the next one waiting (each batch is at
/// most the adapter's 1 MiB).
const IN_FLIGHT: usize = 4;

/// Records counted and hashed: what was delivered to the consumer, and
/// what the adapter sent.
struct Tally {
    rows: u64,
    bytes: u64,
    hasher: PayloadHasher,
    received_rows: u64,
    received_bytes: u64,
    /// Only when what the adapter sent differs from what is delivered.
    received_hasher: Option<PayloadHasher>,
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
            hasher: PayloadHasher::new(),
            received_rows: 0,
            received_bytes: 0,
            received_hasher: allowed.admit.changes_records().then(PayloadHasher::new),
            verified: BTreeMap::new(),
        }
    }

    /// Counts and hashes records as delivered to the consumer.
    fn deliver(&mut self, records: &[String]) {
        for record in records {
            self.rows += 1;
            self.bytes += record.len() as u64;
            self.hasher.update(record);
        }
    }

    /// Counts (and, when records change, hashes) a batch as the adapter
    /// sent it, after checking the adapter stays within the fetch's
    /// limit. Returns the number of the batch's first record, from 1.
    fn receive(&mut self, records: &[String], allowed: &Allowed) -> Result<u64, BadRecord> {
        let limit = allowed.fetch.limit;
        if limit > 0 && self.received_rows + records.len() as u64 > limit {
            return Err(BadRecord::OverLimit { limit });
        }
        let first = self.received_rows + 1;
        for record in records {
            self.received_rows += 1;
            self.received_bytes += record.len() as u64;
            if let Some(hasher) = &mut self.received_hasher {
                hasher.update(record);
            }
        }
        Ok(first)
    }

    /// Takes an admitted batch, in order: the records returned are what
    /// may be delivered; the caller counts them with [`Tally::deliver`]
    /// once it sends them, so the tally is always what the consumer
    /// received.
    /// `limit` is the most records the exchange delivers (0: no limit).
    fn accept(&mut self, admitted: Admitted, limit: u64) -> Result<Next, BadRecord> {
        let Admitted {
            mut records,
            verified,
            failed,
        } = admitted;
        self.verified.extend(verified);
        if limit > 0 && self.rows + records.len() as u64 >= limit {
            records
                .truncate(usize::try_from(limit.saturating_sub(self.rows)).unwrap_or(usize::MAX));
            return Ok(Next::Last(records));
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(Next::Send(records)),
        }
    }

    /// What the adapter sent, when it differs from what was delivered.
    fn received(&self) -> Option<jembatan_core::Received> {
        self.received_hasher
            .as_ref()
            .map(|hasher| jembatan_core::Received {
                rows: self.received_rows,
                bytes: self.received_bytes,
                payload_sha256: hasher.hex(),
            })
    }
}

/// An allowed exchange: a query's decision entry is durable; a lookup's
/// decision is written with its answer.
#[derive(Debug)]
pub(crate) struct Allowed {
    pub(crate) facts: Facts,
    pub(crate) provider: AgencyId,
    pub(crate) dataset: DatasetId,
    /// The allow decision entry; `None` for an exchange answered whole
    /// (a lookup), whose one entry is written at its end.
    pub(crate) decision_seq: Option<u64>,
    pub(crate) fetch: pb::FetchRequest,
    /// What is done to each record before it leaves: the grant's checks,
    /// masks and verified values, translation into the consumer's schema.
    pub(crate) admit: Arc<Admit>,
    /// The agreement in force at the decision.
    pub(crate) agreement: Agreement,
    /// A query's place among its consumer's streams against the provider
    /// (counted in the store across replicas): the relay gives it back
    /// once the adapter's stream is over, before it waits for the
    /// consumer to take the end; otherwise it goes when the exchange ends.
    pub(crate) held: Option<Held>,
    /// Writes the exchange's `cancelled` end if it is dropped unfinished.
    pub(crate) end: Unfinished,
    /// When the consumer stops waiting (its `grpc-timeout`): the adapter's
    /// fetch gets the same deadline, so its statement stops with it.
    pub(crate) deadline: Option<Instant>,
    /// A batch verification: each key with the values to verify.
    pub(crate) batch: Vec<KeyToVerify>,
    /// The dataset's key field, when the exchange names keys or
    /// subscribes.
    pub(crate) key_field: Option<FieldName>,
    /// A subscription: which, and where it resumes.
    pub(crate) resume: Option<crate::subscribe::Resume>,
    /// The policy version the decision was made at: the provider's
    /// adapter endpoints are read as of it.
    pub(crate) policy: crate::policy_cache::PolicyVersion,
}

/// A query's stream to the consumer: the relay's messages in order, or —
/// when the relay ends the stream because the consumer stopped reading —
/// the end status as soon as the consumer reads again, ahead of the
/// batches still queued (which the completion entry counts as sent).
#[derive(Debug)]
pub struct QueryStream {
    messages: ReceiverStream<Result<pb::QueryResponse, Status>>,
    cut: Option<oneshot::Receiver<Status>>,
    ended: bool,
}

impl Stream for QueryStream {
    type Item = Result<pb::QueryResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(cut) = &mut self.cut {
            match Pin::new(cut).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                // the relay ended without cutting
                Poll::Ready(Err(_)) => self.cut = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut self.messages).poll_next(cx)
    }
}

/// Hands `message` to the consumer's stream once it has room; `Err` with
/// the message when the consumer has gone away or has not made room
/// within `stall`, or — given `drain` — when the broker ends running
/// streams while it waits. What is counted as sent is counted in `sent`,
/// after the room is there and before the message goes.
async fn hand_over<T>(
    tx: &mpsc::Sender<Result<pb::QueryResponse, Status>>,
    stall: Duration,
    drain: Option<&Drain>,
    message: T,
    sent: impl FnOnce(&T),
    wrap: impl FnOnce(T) -> Result<pb::QueryResponse, Status>,
) -> Result<(), Handover> {
    let ending = async {
        match drain {
            Some(drain) => drain.ending().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        room = tokio::time::timeout(stall, tx.reserve()) => match room {
            Ok(Ok(permit)) => {
                sent(&message);
                permit.send(wrap(message));
                Ok(())
            }
            Ok(Err(_)) => Err(Handover::Gone),
            Err(_) => Err(Handover::Stalled),
        },
        () = ending => Err(Handover::Draining),
    }
}

/// Why a message could not be handed to the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handover {
    /// The consumer went away.
    Gone,
    /// The consumer did not read within the stall timeout.
    Stalled,
    /// The broker is shutting down and ends running streams.
    Draining,
}

/// An adapter's `Fetch` stream for an allowed exchange, and where it goes
/// when the endpoint serving it turns out unavailable before sending
/// anything.
struct Fetching {
    stream: Streaming<pb::FetchResponse>,
    client: AdapterClient<Channel>,
    /// The endpoint the stream comes from.
    endpoint: String,
    /// The provider's endpoints not tried yet, in the order to try them.
    rest: VecDeque<String>,
    /// Every endpoint of the provider, as listed.
    endpoints: Vec<String>,
    lane: Lane,
    /// Whether the stream has sent anything: from then on it never moves
    /// to another endpoint.
    started: bool,
    /// Set while moving to another endpoint, with the status that made
    /// it move: a read dropped meanwhile (by the relay's `select!`) goes
    /// on with the move next time instead of reading the broken stream.
    moving: Option<Status>,
}

/// What is left of a fetch once its stream is over: who served it, for
/// the completion entry and the receipt.
struct Served {
    endpoint: String,
    /// The channel the receipt goes back on first, then the provider's
    /// other endpoints.
    clients: Vec<AdapterClient<Channel>>,
}

impl Fetching {
    /// The next message of the stream. When the stream breaks
    /// `UNAVAILABLE` before sending anything and the provider has endpoints
    /// not tried yet, the fetch is made again at the next of them.
    async fn message(
        &mut self,
        state: &State,
        allowed: &Allowed,
    ) -> Result<Option<pb::FetchResponse>, Status> {
        loop {
            if let Some(status) = self.moving.clone() {
                let moved = fetch_at_next(state, allowed, &self.lane, &mut self.rest, status).await;
                let (stream, client, endpoint) = match moved {
                    Ok(moved) => moved,
                    Err(status) => {
                        self.moving = None;
                        return Err(status);
                    }
                };
                self.stream = stream;
                self.client = client;
                self.endpoint = endpoint;
                self.moving = None;
            }
            match self.stream.message().await {
                Ok(message) => {
                    if !self.started {
                        self.started = true;
                        state.adapters.mark_up(&allowed.provider, &self.endpoint);
                    }
                    return Ok(message);
                }
                Err(status) if !self.started && fails_over(&status) => {
                    state
                        .adapters
                        .mark_down(&allowed.provider, &self.endpoint, &status);
                    if self.rest.is_empty() {
                        return Err(status);
                    }
                    self.moving = Some(status);
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// The stream is over (dropped, freeing the adapter's statement):
    /// who served it.
    fn served(self, state: &State, allowed: &Allowed) -> Served {
        let mut clients = vec![self.client];
        for endpoint in self.endpoints.iter().filter(|e| **e != self.endpoint) {
            match state
                .adapters
                .channel(endpoint, &allowed.provider, Lane::Calls)
            {
                Ok(channel) => clients.push(AdapterClient::new(channel)),
                Err(err) => {
                    tracing::warn!(provider = %allowed.provider, endpoint, error = %err, "adapter endpoint unusable")
                }
            }
        }
        Served {
            endpoint: self.endpoint,
            clients,
        }
    }
}

/// Makes the fetch at the next of `rest` that takes it, skipping those
/// that cannot be reached or are unavailable (each marked down). `Err`
/// with the status of the last one tried when none takes it; `last` when
/// there is none to try.
async fn fetch_at_next(
    state: &State,
    allowed: &Allowed,
    lane: &Lane,
    rest: &mut VecDeque<String>,
    mut last: Status,
) -> Result<(Streaming<pb::FetchResponse>, AdapterClient<Channel>, String), Status> {
    while let Some(endpoint) = rest.front().cloned() {
        let tried = fetch_at(state, allowed, lane, &endpoint).await;
        // taken off only once tried: a read dropped meanwhile tries it again
        rest.pop_front();
        match tried {
            Ok((stream, client)) => return Ok((stream, client, endpoint)),
            Err(status) if fails_over(&status) => {
                state
                    .adapters
                    .mark_down(&allowed.provider, &endpoint, &status);
                last = status;
            }
            Err(status) => return Err(status),
        }
    }
    Err(last)
}

/// The adapter's `Fetch` at one endpoint, with the consumer's deadline.
async fn fetch_at(
    state: &State,
    allowed: &Allowed,
    lane: &Lane,
    endpoint: &str,
) -> Result<(Streaming<pb::FetchResponse>, AdapterClient<Channel>), Status> {
    let channel = state
        .adapters
        .channel(endpoint, &allowed.provider, lane.clone())?;
    let mut client = AdapterClient::new(channel).max_decoding_message_size(16 << 20);
    let mut request = allowed.facts.trace.request(allowed.fetch.clone());
    // the consumer's deadline is the adapter's: its statement stops
    // when the consumer stops waiting
    if let Some(deadline) = allowed.deadline {
        request.set_timeout(
            deadline
                .saturating_duration_since(std::time::Instant::now())
                .max(std::time::Duration::from_millis(1)),
        );
    }
    let stream = client.fetch(request).await?.into_inner();
    Ok((stream, client))
}

/// Opens the adapter's `Fetch` stream for an allowed exchange, at the
/// first of the provider's endpoints that takes it. Failure is recorded
/// as the exchange's completion.
async fn open_fetch(state: &State, allowed: &Allowed, lane: Lane) -> Result<Fetching, Status> {
    let endpoints = adapter_endpoints(
        state
            .policy
            .agency(&state.store, allowed.policy, &allowed.provider)
            .await,
        &allowed.provider,
    );
    let result: Result<_, (ExchangeStatus, Status)> = async {
        let endpoints = endpoints.map_err(|e| (ExchangeStatus::Failed, e.into()))?;
        let mut rest: VecDeque<String> = state.adapters.order(&allowed.provider, &endpoints).into();
        let none = Status::from(ExchangeError::NoAdapter {
            provider: allowed.provider.clone(),
        });
        let (stream, client, endpoint) = fetch_at_next(state, allowed, &lane, &mut rest, none)
            .await
            .map_err(|s| {
                (
                    adapter_end(allowed, &s),
                    from_adapter(&allowed.provider.to_string(), s).into(),
                )
            })?;
        Ok(Fetching {
            stream,
            client,
            endpoint,
            rest,
            endpoints,
            lane,
            started: false,
            moving: None,
        })
    }
    .await;
    match result {
        Ok(opened) => Ok(opened),
        Err((how, status)) => {
            finish(
                state,
                allowed,
                &Tally::new(allowed),
                how,
                Some(status.message().to_owned()),
                Vec::new(),
                None,
            )
            .await?;
            Err(status)
        }
    }
}

/// How an exchange ends when its adapter call fails with `status`:
/// `cancelled` when the consumer's deadline, passed on to the adapter, is
/// what stopped it (the consumer stopped waiting), `failed` otherwise.
pub(crate) fn adapter_end(allowed: &Allowed, status: &Status) -> ExchangeStatus {
    let consumers_deadline = allowed
        .deadline
        .is_some_and(|d| std::time::Instant::now() + DEADLINE_TOLERANCE >= d);
    // the adapter's own DeadlineExceeded, or the channel's `Cancelled`
    // when the deadline passes first on the broker's side of the call
    if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) && consumers_deadline {
        ExchangeStatus::Cancelled
    } else {
        ExchangeStatus::Failed
    }
}

/// How close to the consumer's deadline a deadline the adapter reports
/// counts as the consumer's.
const DEADLINE_TOLERANCE: std::time::Duration = std::time::Duration::from_millis(100);

/// The endpoints of `provider`'s adapter from the store's answer, in the
/// order listed: a provider without one and a store that cannot answer
/// are told apart.
pub(crate) fn adapter_endpoints(
    found: Result<Option<jembatan_store::Agency>, jembatan_store::StoreError>,
    provider: &jembatan_core::AgencyId,
) -> Result<Vec<String>, ExchangeError> {
    match found {
        Ok(agency) => agency
            .map(|a| a.adapter_endpoints)
            .filter(|endpoints| !endpoints.is_empty())
            .ok_or_else(|| ExchangeError::NoAdapter {
                provider: provider.clone(),
            }),
        Err(err) => Err(ExchangeError::AdapterLookup {
            provider: provider.clone(),
            cause: Box::new(err),
        }),
    }
}

/// Writes the completion entry, naming the adapter `endpoint` that served
/// (none when no adapter answered), and builds the receipt. The receipt
/// exists only if the entry is durable.
async fn finish(
    state: &State,
    allowed: &Allowed,
    tally: &Tally,
    status: ExchangeStatus,
    error: Option<String>,
    reasons: Vec<Denial>,
    endpoint: Option<&str>,
) -> Result<pb::Receipt, Status> {
    let payload_sha256 = tally.hasher.hex();
    let mut entry = allowed.end.end_entry(status);
    entry.reasons = reasons;
    entry.rows = tally.rows;
    entry.bytes = tally.bytes;
    entry.payload_sha256 = Some(payload_sha256.clone());
    entry.received = tally.received();
    entry.duration_ms = Some(allowed.facts.elapsed_ms());
    entry.error = error;
    entry.adapter_endpoint = endpoint.map(str::to_owned);
    let stored = state.journal.end(&allowed.end, entry).await?;
    Ok(receipt(
        state,
        allowed,
        stored,
        payload_sha256,
        tally.rows,
        tally.bytes,
    ))
}

/// The receipt of an exchange's durable entry `stored`, covering `rows`
/// records of `bytes` whose payload hash is `payload_sha256`.
pub(crate) fn receipt(
    state: &State,
    allowed: &Allowed,
    stored: jembatan_store::StoredEntry,
    payload_sha256: String,
    rows: u64,
    bytes: u64,
) -> pb::Receipt {
    let now = chrono::Utc::now();
    pb::Receipt {
        exchange_id: allowed.facts.exchange_id.clone(),
        entry_seq: stored.seq,
        // an exchange answered whole is decided in its one entry
        decision_seq: allowed.decision_seq.unwrap_or(stored.seq),
        payload_sha256,
        rows,
        bytes,
        completed_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        leaf_hash: hex::encode(jembatan_tlog::merkle::leaf_hash(&stored.canonical)),
        entry_sha256: stored.entry_sha256,
        checkpoint: state.checkpoint_notes.borrow().clone().unwrap_or_default(),
    }
}

/// Tells the provider's adapter the receipt, for its own log: the
/// endpoint that served, or the next that takes it. Best effort.
fn acknowledge(state: &State, served: &Served, allowed: &Allowed, receipt: pb::Receipt) {
    let request = pb::AcknowledgeRequest {
        dataset: allowed.dataset.to_string(),
        consumer: allowed.fetch.consumer.clone(),
        receipt: Some(receipt),
    };
    state
        .acks
        .send(&allowed.provider, served.clients.clone(), request);
}

/// Why a running exchange ends before its records do.
pub(crate) struct Stop {
    pub(crate) how: ExchangeStatus,
    pub(crate) status: Status,
    pub(crate) reasons: Vec<Denial>,
    /// The consumer stopped reading: its end status goes ahead of the
    /// batches it has not taken.
    cut: bool,
}

impl Stop {
    pub(crate) fn new(how: ExchangeStatus, err: impl Into<ExchangeError>) -> Self {
        let err: ExchangeError = err.into();
        Self {
            how,
            status: err.into(),
            reasons: Vec::new(),
            cut: false,
        }
    }

    /// The exchange ends `how` with `status` as it is.
    pub(crate) fn from_status(how: ExchangeStatus, status: Status) -> Self {
        Self {
            how,
            status,
            reasons: Vec::new(),
            cut: false,
        }
    }

    /// The exchange failed.
    pub(crate) fn failed(err: impl Into<ExchangeError>) -> Self {
        Self::new(ExchangeStatus::Failed, err)
    }

    /// The consumer did not take a batch within the stall timeout.
    pub(crate) fn stalled(stall: Duration) -> Self {
        Self {
            cut: true,
            ..Self::new(ExchangeStatus::Cancelled, ExchangeError::Stalled(stall))
        }
    }

    /// The broker is shutting down and the stream outlived `drain_time`:
    /// the consumer is told at once, ahead of batches it has not read.
    pub(crate) fn shutting_down() -> Self {
        Self {
            cut: true,
            ..Self::new(ExchangeStatus::Cancelled, ExchangeError::ShuttingDown)
        }
    }

    pub(crate) fn gone() -> Self {
        Self::new(ExchangeStatus::Cancelled, ExchangeError::ConsumerGone)
    }

    /// The agreement stopped being in force, or its quota ran out.
    pub(crate) fn denied(code: DenialCode, err: ExchangeError, allowed: &Allowed) -> Self {
        let status = Status::from(err);
        let reason = Denial::new(code, status.message()).agreement(&allowed.agreement.id);
        Self {
            how: ExchangeStatus::Stopped,
            status,
            reasons: vec![reason],
            cut: false,
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
        .map_err(|err| Stop::failed(ExchangeError::store(err)))?;
    records.truncate(usize::try_from(taken).unwrap_or(usize::MAX));
    Ok(taken == n)
}

/// Why the agreement is no longer in force, if it is not.
pub(crate) fn out_of_force(allowed: &Allowed, status: AgreementStatus) -> Option<Stop> {
    let id = allowed.agreement.id.clone();
    let (code, err) = match status {
        AgreementStatus::Approved => return None,
        AgreementStatus::Revoked => (DenialCode::Revoked, ExchangeError::AgreementRevoked(id)),
        AgreementStatus::Expired => (DenialCode::Expired, ExchangeError::AgreementExpired(id)),
        AgreementStatus::Proposed | AgreementStatus::ProviderApproved => (
            DenialCode::NotApproved,
            ExchangeError::AgreementNotApproved(id),
        ),
    };
    Some(Stop::denied(code, err, allowed))
}

/// Sleeps until the agreement's window ends (forever if it never does).
pub(crate) async fn until_end(allowed: &Allowed) {
    match allowed.agreement.valid_until {
        Some(until) => {
            let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// What the relay loop of a query does next.
enum Step {
    /// A batch from the adapter, the end of its stream, or its error.
    Read(Result<Option<pb::FetchResponse>, Status>),
    /// The oldest batch being admitted is done.
    Admitted(Result<Admitted, BadRecord>),
    /// A worker failed to admit the oldest batch: the broker's fault.
    Lost(Cause),
}

/// Waits for the oldest batch being admitted; never, if there is none.
async fn oldest(pending: &mut VecDeque<Pending>) -> Step {
    match pending.front_mut() {
        Some(batch) => match batch.await {
            Ok(Ok(admitted)) => Step::Admitted(admitted),
            Ok(Err(e)) => Step::Lost(e),
            Err(e) => Step::Lost(Box::new(e)),
        },
        None => std::future::pending().await,
    }
}

/// The adapter sent a record it must not have, or one the mapping does
/// not handle: the exchange fails.
fn bad_record(allowed: &Allowed, err: BadRecord) -> Stop {
    if matches!(err, BadRecord::Untranslatable { .. }) {
        tracing::warn!(provider = %allowed.provider, error = %err, "a record does not map");
    } else {
        tracing::warn!(provider = %allowed.provider, error = %err, "adapter sent a bad record");
    }
    Stop::failed(err)
}

/// Streams an allowed query to the consumer.
pub(crate) async fn query(
    state: Arc<State>,
    mut allowed: Allowed,
) -> Result<Response<QueryStream>, Status> {
    let held = allowed.held.take();
    // subscribed before the first record, so no change is missed
    let mut events = state.lifecycle.events.subscribe();
    let Some(consumer) = allowed.facts.consumer.clone() else {
        return Err(ExchangeError::NoConsumer.into());
    };
    let mut fetch = open_fetch(&state, &allowed, Lane::Streams(consumer)).await?;
    let (tx, rx) = mpsc::channel(2);
    let (cut, cut_rx) = oneshot::channel();
    let stall = state.isolation.stall_timeout;
    tokio::spawn(async move {
        let mut tally = Tally::new(&allowed);
        let agreement_id = allowed.agreement.id.clone();
        // batches being admitted, oldest first; delivered in this order
        let mut pending: VecDeque<Pending> = VecDeque::with_capacity(IN_FLIGHT);
        // set when the adapter's stream ended; with why, if it broke: the
        // batches admitted before the break are still delivered
        let mut adapter_done = false;
        let mut broke: Option<Stop> = None;
        let outcome: Result<(), Stop> = loop {
            if adapter_done && pending.is_empty() {
                break broke.take().map_or(Ok(()), Err);
            }
            let reading = !adapter_done && pending.len() < IN_FLIGHT;
            // biased: a revocation or expiry is seen before the next batch
            let step = tokio::select! {
                biased;
                () = tx.closed() => break Err(Stop::gone()),
                () = state.drain.ending() => break Err(Stop::shutting_down()),
                () = until_end(&allowed) => {
                    let err = ExchangeError::AgreementExpired(agreement_id.clone());
                    break Err(Stop::denied(DenialCode::Expired, err, &allowed));
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
                                Err(err) => break Err(Stop::failed(ExchangeError::store(err))),
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
                    };
                    if let Some(stop) = status.and_then(|s| out_of_force(&allowed, s)) {
                        break Err(stop);
                    }
                    continue;
                }
                step = oldest(&mut pending) => step,
                next = fetch.message(&state, &allowed), if reading => Step::Read(next),
            };
            let admitted = match step {
                Step::Read(Ok(Some(msg))) => {
                    let records = msg.batch.unwrap_or_default().records;
                    let first = match tally.receive(&records, &allowed) {
                        Ok(first) => first,
                        Err(err) => {
                            adapter_done = true;
                            broke = Some(bad_record(&allowed, err));
                            continue;
                        }
                    };
                    if !allowed.admit.changes_records() {
                        // only the keys are read: at once, where the
                        // records are (nothing is ever pending then)
                        allowed.admit.batch(records, first)
                    } else {
                        pending.push_back(state.workers.admit(&allowed.admit, records, first));
                        continue;
                    }
                }
                Step::Read(Ok(None)) => {
                    adapter_done = true;
                    continue;
                }
                Step::Read(Err(status)) => {
                    adapter_done = true;
                    broke = Some(Stop::new(
                        adapter_end(&allowed, &status),
                        from_adapter(&allowed.provider.to_string(), status),
                    ));
                    continue;
                }
                Step::Admitted(admitted) => {
                    pending.pop_front();
                    admitted
                }
                Step::Lost(err) => break Err(Stop::failed(ExchangeError::AdmitLost(err))),
            };
            let (mut records, last) =
                match admitted.and_then(|a| tally.accept(a, allowed.admit.limit())) {
                    Ok(Next::Send(r)) => (r, false),
                    Ok(Next::Last(r)) => (r, true),
                    Err(err) => break Err(bad_record(&allowed, err)),
                };
            let within_quota = match charge_rows(&state, &allowed, &mut records).await {
                Ok(all) => all,
                Err(stop) => break Err(stop),
            };
            if !records.is_empty() {
                let handed = hand_over(
                    &tx,
                    stall,
                    Some(&state.drain),
                    records,
                    |records| tally.deliver(records),
                    |records| {
                        let item = pb::query_response::Item::Batch(pb::RecordBatch { records });
                        Ok(pb::QueryResponse { item: Some(item) })
                    },
                )
                .await;
                match handed {
                    Ok(()) => {}
                    Err(Handover::Gone) => break Err(Stop::gone()),
                    Err(Handover::Stalled) => break Err(Stop::stalled(stall)),
                    Err(Handover::Draining) => break Err(Stop::shutting_down()),
                }
            }
            if !within_quota {
                let err = ExchangeError::QuotaRanOut {
                    id: allowed.agreement.id.clone(),
                    per_day: allowed.agreement.quota.rows_per_day,
                    rows: tally.rows,
                };
                break Err(Stop::denied(DenialCode::QuotaExhausted, err, &allowed));
            }
            if last {
                break Ok(());
            }
        };
        // batches still being admitted are not delivered
        for batch in pending {
            batch.abort();
        }
        // the adapter's stream is over: its database connection and the
        // exchange's slots are free while the consumer takes the end
        let served = fetch.served(&state, &allowed);
        if let Some(held) = held {
            held.release().await;
        }
        match outcome {
            Ok(()) => match finish(
                &state,
                &allowed,
                &tally,
                ExchangeStatus::Ok,
                None,
                Vec::new(),
                Some(&served.endpoint),
            )
            .await
            {
                Ok(receipt) => {
                    let trailer = with_receipt(None, &receipt);
                    let item = pb::query_response::Item::Receipt(receipt.clone());
                    let message = pb::QueryResponse { item: Some(item) };
                    // every record was handed over and the completion is
                    // durable: a consumer that does not take its receipt
                    // finds it on the log, as the adapter does
                    let handed = match hand_over(&tx, stall, None, message, |_| {}, Ok).await {
                        Ok(()) => hand_over(&tx, stall, None, trailer, |_| {}, Err).await,
                        Err(why) => Err(why),
                    };
                    if let Err(why) = handed {
                        tracing::warn!(exchange_id = %allowed.facts.exchange_id, ?why, "the consumer did not take its receipt");
                    }
                    acknowledge(&state, &served, &allowed, receipt);
                }
                Err(status) => {
                    end_stream(&tx, cut, stall, status, false).await;
                }
            },
            Err(stop) => {
                let error = Some(stop.status.message().to_owned());
                let result = finish(
                    &state,
                    &allowed,
                    &tally,
                    stop.how,
                    error,
                    stop.reasons,
                    Some(&served.endpoint),
                )
                .await;
                let status = match result {
                    Ok(receipt) => {
                        let s = with_receipt(Some(stop.status), &receipt);
                        acknowledge(&state, &served, &allowed, receipt);
                        s
                    }
                    Err(s) => s,
                };
                end_stream(&tx, cut, stall, status, stop.cut).await;
            }
        }
    });
    Ok(Response::new(QueryStream {
        messages: ReceiverStream::new(rx),
        cut: Some(cut_rx),
        ended: false,
    }))
}

/// The status a query's stream ends with, carrying its receipt in the
/// `jembatan-receipt-bin` trailer: `ended`, the status of the error that
/// stopped the exchange, or `OK` when every record was delivered.
fn with_receipt(ended: Option<Status>, receipt: &pb::Receipt) -> Status {
    let mut status =
        ended.unwrap_or_else(|| Status::with_metadata(Code::Ok, "", MetadataMap::new()));
    trailers::insert(status.metadata_mut(), RECEIPT_METADATA_KEY, receipt);
    status
}

/// Ends a query's stream with `status`: behind the batches already
/// handed over, or — `cut`, or when the consumer does not make room
/// within `stall` — ahead of them.
async fn end_stream(
    tx: &mpsc::Sender<Result<pb::QueryResponse, Status>>,
    cut: oneshot::Sender<Status>,
    stall: Duration,
    status: Status,
    cut_now: bool,
) {
    if cut_now {
        let _ = cut.send(status);
        return;
    }
    // the status stays here until it is known whether the consumer took it
    let (status, to_cut) = (status.clone(), status);
    if let Err(Handover::Stalled) = hand_over(tx, stall, None, status, |_| {}, Err).await {
        let _ = cut.send(to_cut);
    }
}

/// Answers an allowed lookup.
pub(crate) async fn lookup(
    state: Arc<State>,
    allowed: Allowed,
) -> Result<Response<pb::LookupResponse>, Status> {
    let mut fetch = open_fetch(&state, &allowed, Lane::Calls).await?;
    let mut tally = Tally::new(&allowed);
    let mut records = Vec::new();
    let outcome: Result<(), Stop> = loop {
        match fetch.message(&state, &allowed).await {
            Ok(Some(msg)) => {
                let batch = msg.batch.unwrap_or_default().records;
                // one record at most: admitted here, not on a worker
                let admitted = tally
                    .receive(&batch, &allowed)
                    .and_then(|first| allowed.admit.batch(batch, first))
                    .and_then(|a| tally.accept(a, allowed.admit.limit()));
                match admitted {
                    Ok(Next::Send(r) | Next::Last(r)) => records.extend(r),
                    Err(err) => break Err(Stop::failed(err)),
                }
                if records.len() > 1 {
                    break Err(Stop::failed(ExchangeError::KeyMatchedMany));
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(Stop::new(
                    adapter_end(&allowed, &status),
                    from_adapter(&allowed.provider.to_string(), status),
                ));
            }
        }
    };
    let served = fetch.served(&state, &allowed);
    let outcome = match outcome {
        Ok(()) => match charge_rows(&state, &allowed, &mut records).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let err = ExchangeError::QuotaNoneLeft {
                    id: allowed.agreement.id.clone(),
                    per_day: allowed.agreement.quota.rows_per_day,
                };
                Err(Stop::denied(DenialCode::QuotaExhausted, err, &allowed))
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
                Some(&served.endpoint),
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
            trailers::insert(response.metadata_mut(), RECEIPT_METADATA_KEY, &receipt);
            acknowledge(&state, &served, &allowed, receipt);
            Ok(response)
        }
        Err(stop) => Err(unanswered(&state, &allowed, stop, &served.endpoint).await),
    }
}

/// Ends an exchange answered whole (a lookup, a batch verification) that
/// stopped before its answer: nothing reached the consumer, so its end
/// records nothing delivered; it names the adapter `endpoint` that was
/// asked. Returns the status to send.
async fn unanswered(state: &State, allowed: &Allowed, stop: Stop, endpoint: &str) -> Status {
    let error = Some(stop.status.message().to_owned());
    let tally = Tally::new(allowed);
    let ended = finish(
        state,
        allowed,
        &tally,
        stop.how,
        error,
        stop.reasons,
        Some(endpoint),
    );
    match ended.await {
        Ok(_) => stop.status,
        Err(status) => status,
    }
}

/// Runs an allowed mapping test: the adapter's records (at most the
/// test's limit, each charged to the agreement's daily rows) are checked
/// against the grant and run through the candidate, on worker threads;
/// the completion entry counts what the adapter sent as received and
/// nothing delivered, and only then does the report go. No record, and no
/// value of one, is in the report.
pub(crate) async fn mapping_test(
    state: Arc<State>,
    mut allowed: Allowed,
) -> Result<Response<pb::TestMappingResponse>, Status> {
    let held = allowed.held.take();
    let Some(consumer) = allowed.facts.consumer.clone() else {
        return Err(ExchangeError::NoConsumer.into());
    };
    let Some(translator) = allowed.admit.translator().cloned() else {
        return Err(ExchangeError::MappingField.into());
    };
    let mut fetch = open_fetch(&state, &allowed, Lane::Streams(consumer)).await?;
    let mut tally = Tally::new(&allowed);
    let mut report = crate::admit::Tested::default();
    let outcome: Result<(), Stop> = loop {
        let next = tokio::select! {
            biased;
            () = state.drain.ending() => break Err(Stop::shutting_down()),
            next = fetch.message(&state, &allowed) => next,
        };
        let mut records = match next {
            Ok(Some(msg)) => msg.batch.unwrap_or_default().records,
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(Stop::new(
                    adapter_end(&allowed, &status),
                    from_adapter(&allowed.provider.to_string(), status),
                ));
            }
        };
        let first = match tally.receive(&records, &allowed) {
            Ok(first) => first,
            Err(err) => break Err(bad_record(&allowed, err)),
        };
        // the rows read count against the agreement's daily rows
        let within_quota = match charge_rows(&state, &allowed, &mut records).await {
            Ok(all) => all,
            Err(stop) => break Err(stop),
        };
        let admit = allowed.admit.clone();
        match state.workers.run(move || admit.test(records, first)).await {
            Ok(Ok(tested)) => {
                report.checked += tested.checked;
                report.passed += tested.passed;
                if report.first_failure.is_none() {
                    report.first_failure = tested.first_failure;
                }
            }
            Ok(Err(err)) => break Err(bad_record(&allowed, err)),
            Err(err) => break Err(Stop::failed(ExchangeError::AdmitLost(err))),
        }
        if !within_quota {
            let err = ExchangeError::QuotaRanOut {
                id: allowed.agreement.id.clone(),
                per_day: allowed.agreement.quota.rows_per_day,
                rows: report.checked,
            };
            break Err(Stop::denied(DenialCode::QuotaExhausted, err, &allowed));
        }
    };
    // the adapter's stream is over: its database connection and the
    // exchange's slots are free
    let served = fetch.served(&state, &allowed);
    if let Some(held) = held {
        held.release().await;
    }
    let (how, error, reasons, stopped) = match outcome {
        Ok(()) => (ExchangeStatus::Ok, None, Vec::new(), None),
        Err(stop) => (
            stop.how,
            Some(stop.status.message().to_owned()),
            stop.reasons,
            Some(stop.status),
        ),
    };
    let receipt = finish(
        &state,
        &allowed,
        &tally,
        how,
        error,
        reasons,
        Some(&served.endpoint),
    )
    .await?;
    acknowledge(&state, &served, &allowed, receipt.clone());
    if let Some(status) = stopped {
        return Err(with_receipt(Some(status), &receipt));
    }
    let first_failure = report.first_failure.map(|(record, f)| {
        let (rule, rule_target) = f.rule.map_or((0, String::new()), |(i, target)| {
            (u32::try_from(i).unwrap_or(u32::MAX), target)
        });
        pb::MappingFailure {
            record,
            stage: f.stage.to_owned(),
            rule,
            rule_target,
            schema_path: f.schema_path,
            instance_path: f.instance_path,
            message: f.message,
        }
    });
    let mut response = Response::new(pb::TestMappingResponse {
        source_schema: translator.source.clone(),
        target_schema: translator.target.clone(),
        mapping_version: translator.mapping_version,
        mapping_sha256: translator.candidate_sha256.clone().unwrap_or_default(),
        records_checked: report.checked,
        records_passed: report.passed,
        records_failed: report.checked - report.passed,
        first_failure,
        receipt: Some(receipt.clone()),
    });
    trailers::insert(response.metadata_mut(), RECEIPT_METADATA_KEY, &receipt);
    Ok(response)
}

/// One key of a batch verification and the consumer's values to verify
/// against its record.
pub(crate) type KeyToVerify = (Scalar, Vec<(FieldName, Scalar)>);

/// Answers per message of a batch verification's stream.
const ANSWERS_PER_BATCH: usize = 1_000;

/// Answers an allowed batch verification: every key's record is fetched
/// (one statement per part of the keys), each item's values compared in
/// the broker, and the answers — one per item, in order — computed whole;
/// then the call's one entry is written, and only then do the answers go.
pub(crate) async fn verify_batch(
    state: Arc<State>,
    mut allowed: Allowed,
) -> Result<Response<QueryStream>, Status> {
    let mut fetch = open_fetch(&state, &allowed, Lane::Calls).await?;
    let mut tally = Tally::new(&allowed);
    let mut found: HashMap<String, Map<String, Value>> = HashMap::new();
    let outcome: Result<(), Stop> = loop {
        let batch = match fetch.message(&state, &allowed).await {
            Ok(Some(msg)) => msg.batch.unwrap_or_default().records,
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(Stop::new(
                    adapter_end(&allowed, &status),
                    from_adapter(&allowed.provider.to_string(), status),
                ));
            }
        };
        if let Err(err) = tally.receive(&batch, &allowed) {
            break Err(bad_record(&allowed, err));
        }
        if let Err(stop) = index_by_key(&allowed, &batch, &mut found) {
            break Err(stop);
        }
    };
    let served = fetch.served(&state, &allowed);
    let outcome = match outcome {
        Ok(()) => charge_keys(&state, &allowed).await,
        Err(stop) => Err(stop),
    };
    let answers = match outcome {
        Ok(()) => allowed
            .batch
            .iter()
            .enumerate()
            .map(|(i, (key, verify))| answer(i, found.get(&key_text(key)), verify))
            .collect::<Vec<String>>(),
        Err(stop) => return Err(unanswered(&state, &allowed, stop, &served.endpoint).await),
    };
    tally.deliver(&answers);
    let receipt = finish(
        &state,
        &allowed,
        &tally,
        ExchangeStatus::Ok,
        None,
        Vec::new(),
        Some(&served.endpoint),
    )
    .await?;
    acknowledge(&state, &served, &allowed, receipt.clone());
    // tens of thousands of small allocations: freed off the answer's path
    let keys = std::mem::take(&mut allowed.batch);
    tokio::task::spawn_blocking(move || drop((found, keys)));
    // the answers are computed and on the log: they go as fast as the
    // consumer reads
    let (tx, rx) = mpsc::channel(2);
    let stall = state.isolation.stall_timeout;
    tokio::spawn(async move {
        let mut answers = answers.into_iter().peekable();
        while answers.peek().is_some() {
            let records: Vec<String> = answers.by_ref().take(ANSWERS_PER_BATCH).collect();
            let item = pb::query_response::Item::Batch(pb::RecordBatch { records });
            let message = pb::QueryResponse { item: Some(item) };
            if hand_over(&tx, stall, None, message, |_| {}, Ok)
                .await
                .is_err()
            {
                return;
            }
        }
        let trailer = with_receipt(None, &receipt);
        let item = pb::query_response::Item::Receipt(receipt);
        let message = pb::QueryResponse { item: Some(item) };
        if hand_over(&tx, stall, None, message, |_| {}, Ok)
            .await
            .is_ok()
        {
            let _ = hand_over(&tx, stall, None, trailer, |_| {}, Err).await;
        }
    });
    Ok(Response::new(QueryStream {
        messages: ReceiverStream::new(rx),
        cut: None,
        ended: false,
    }))
}

/// Checks each record against the grant (parsed once, as admitting it
/// would) and files it under its key; a key found twice is not a key.
fn index_by_key(
    allowed: &Allowed,
    records: &[String],
    found: &mut HashMap<String, Map<String, Value>>,
) -> Result<(), Stop> {
    let Some(key_field) = &allowed.key_field else {
        return Err(Stop::failed(ExchangeError::KeyField));
    };
    let mut reader = allowed.admit.reader();
    for text in records {
        let record = std::mem::take(
            crate::admit::read_record(&mut reader, text).map_err(|err| bad_record(allowed, err))?,
        );
        let key = match record.get(key_field.as_str()) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => continue,
            Some(other) => other.to_string(),
        };
        if found.insert(key, record).is_some() {
            return Err(Stop::failed(ExchangeError::KeyMatchedMany));
        }
    }
    Ok(())
}

/// One item's answer, as the JSON record the consumer receives: whether
/// the record was found and whether each value matched; never a value.
fn answer(
    index: usize,
    record: Option<&Map<String, Value>>,
    verify: &[(FieldName, Scalar)],
) -> String {
    let Some(record) = record else {
        return serde_json::json!({"i": index, "result": "not_found", "fields": {}}).to_string();
    };
    let fields: serde_json::Map<String, Value> = verify
        .iter()
        .map(|(field, want)| {
            let matched = record.get(field.as_str()).is_some_and(|v| {
                jembatan_core::filter::compare(v, want) == Some(std::cmp::Ordering::Equal)
            });
            (field.to_string(), Value::Bool(matched))
        })
        .collect();
    let all = fields.values().all(|v| v == &Value::Bool(true));
    let result = if all { "matches" } else { "does_not_match" };
    serde_json::json!({"i": index, "result": result, "fields": fields}).to_string()
}

/// Takes one row of the agreement's daily quota for each key of a batch;
/// all or none.
async fn charge_keys(state: &State, allowed: &Allowed) -> Result<(), Stop> {
    let per_day = allowed.agreement.quota.rows_per_day;
    if per_day == 0 {
        return Ok(());
    }
    let day = QuotaKind::RowsPerDay.window(chrono::Utc::now());
    let keys = allowed.batch.len() as u64;
    let taken = state
        .store
        .take_quota(
            &allowed.agreement.id,
            QuotaKind::RowsPerDay,
            &day,
            keys,
            per_day,
        )
        .await
        .map_err(|err| Stop::failed(ExchangeError::store(err)))?;
    if taken {
        Ok(())
    } else {
        let err = ExchangeError::QuotaNoneLeft {
            id: allowed.agreement.id.clone(),
            per_day,
        };
        Err(Stop::denied(DenialCode::QuotaExhausted, err, allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_is_not_reported_as_a_missing_adapter() {
        let provider: jembatan_core::AgencyId = "prov".parse().expect("agency id");
        let agency = |endpoint: Option<&str>| jembatan_store::Agency {
            id: provider.clone(),
            name: "Provider".into(),
            adapter_endpoints: endpoint.map(str::to_owned).into_iter().collect(),
        };
        let store_down = jembatan_store::StoreError::AuditUnavailable("pool closed".into());
        let cases = [
            (
                "registered",
                Ok(Some(agency(Some("https://127.0.0.1:1")))),
                Ok("https://127.0.0.1:1"),
            ),
            (
                "no endpoint",
                Ok(Some(agency(None))),
                Err("provider prov has no adapter registered"),
            ),
            (
                "unknown provider",
                Ok(None),
                Err("provider prov has no adapter registered"),
            ),
            (
                "store failed",
                Err(store_down),
                Err("cannot find provider prov's adapter: the broker's store is unavailable"),
            ),
        ];
        for (name, found, want) in cases {
            let got = adapter_endpoints(found, &provider);
            match (got, want) {
                (Ok(endpoints), Ok(want)) => assert_eq!(endpoints, [want], "{name}"),
                (Err(err), Err(want)) => {
                    let status = Status::from(err);
                    assert_eq!(status.code(), Code::Unavailable, "{name}");
                    assert_eq!(status.message(), want, "{name}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn tally() -> Tally {
        Tally {
            rows: 0,
            bytes: 0,
            hasher: PayloadHasher::new(),
            received_rows: 0,
            received_bytes: 0,
            received_hasher: None,
            verified: BTreeMap::new(),
        }
    }

    fn batch(n: usize, failed: Option<&str>) -> Admitted {
        Admitted {
            records: (0..n).map(|i| format!("{{\"i\":{i}}}")).collect(),
            verified: BTreeMap::new(),
            failed: failed.map(|f| BadRecord::NotAnObject(f.to_owned())),
        }
    }

    #[test]
    fn a_batch_is_cut_at_the_consumers_limit() {
        let mut t = tally();
        let Ok(Next::Send(first)) = t.accept(batch(4, None), 6) else {
            panic!("under the limit: send and read on")
        };
        t.deliver(&first);
        let Ok(Next::Last(second)) = t.accept(batch(4, None), 6) else {
            panic!("the limit is reached in this batch")
        };
        assert_eq!(second, ["{\"i\":0}", "{\"i\":1}"]);
        // no limit: everything goes
        assert!(matches!(tally().accept(batch(4, None), 0), Ok(Next::Send(r)) if r.len() == 4));
    }

    #[test]
    fn a_record_that_fails_after_the_limit_does_not_fail_the_exchange() {
        // the consumer's limit is reached before the failing record: the
        // records it wanted are delivered, as if the rest were never read
        let Ok(Next::Last(records)) = tally().accept(batch(3, Some("record 4: bad")), 3) else {
            panic!("the limit comes first")
        };
        assert_eq!(records.len(), 3);
        // before the limit, the failure stops the exchange
        for limit in [5, 0] {
            assert!(
                matches!(
                    tally().accept(batch(2, Some("record 3: bad")), limit),
                    Err(BadRecord::NotAnObject(m)) if m == "record 3: bad"
                ),
                "limit {limit}"
            );
        }
    }
}
