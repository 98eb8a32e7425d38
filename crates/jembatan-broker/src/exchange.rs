//! The `Exchange` service: identity from the certificate, request
//! validation, agreement evaluation and the durable decision entry.

use std::sync::Arc;
use std::time::Instant;

use hmac::{Hmac, Mac};
use jembatan_core::agreement::format_instant;
use jembatan_core::limits::{MAX_FIELDS, MAX_STRING_BYTES};
use jembatan_core::{
    AgencyId, Agreement, AuditEntry, DatasetId, Decision, Denial, DenialCode, EntryKind,
    ExchangeStatus, FieldName, Filter, Identity, InvalidArgument, MaskRule, Operator, Role, Scalar,
};
use jembatan_proto::DENIAL_METADATA_KEY;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_server::Exchange;
use jembatan_store::{AuditLog, QuotaKind, Store};
use prost::Message;
use sha2::Sha256;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::agreements::Lifecycle;
use crate::policy;
use crate::registry::{Refusal, Registry, RegistryError, Translator};
use crate::relay::{self, AdapterPool};

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) audit: AuditLog,
    pub(crate) adapters: AdapterPool,
    pub(crate) audit_key: Vec<u8>,
    /// The latest signed checkpoint note, handed out with receipts.
    pub(crate) checkpoint_notes: tokio::sync::watch::Receiver<Option<String>>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) streams: StreamLimit,
    /// Threads that check and translate the records of running queries.
    pub(crate) workers: crate::admit::Workers,
    /// Receipts on their way back to the providers' adapters.
    pub(crate) acks: crate::acks::Acks,
}

/// Most exchanges one agency may have running at once on this broker.
#[derive(Debug)]
pub(crate) struct StreamLimit {
    per_agency: usize,
    running: std::sync::Mutex<std::collections::HashMap<AgencyId, Arc<tokio::sync::Semaphore>>>,
}

impl StreamLimit {
    pub(crate) fn new(per_agency: usize) -> Self {
        Self {
            per_agency,
            running: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A slot for one more exchange of `agency`, held until dropped.
    fn try_acquire(&self, agency: &AgencyId) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = {
            // the map only ever gains semaphores, so a panic elsewhere
            // while it was held left it whole: a poisoned lock is no
            // reason to refuse, let alone as if the limit were reached
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            running
                .entry(agency.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_agency)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// Most fields one lookup may ask to verify.
pub(crate) const MAX_VERIFY_FIELDS: usize = 64;

/// The keyed hash the audit log keeps instead of a lookup key:
/// lowercase hex HMAC-SHA-256, keyed with the broker's audit key, of
/// `dataset || 0x00 || key`. A key that is not a string is hashed as its
/// JSON text (`42`, `true`).
pub fn subject_hash(audit_key: &[u8], dataset: &str, key: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(audit_key).expect("HMAC accepts keys of any length");
    mac.update(dataset.as_bytes());
    mac.update(&[0]);
    mac.update(key.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The gRPC `Exchange` service.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    state: Arc<State>,
}

impl ExchangeService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

/// What the consumer asked, before validation.
pub(crate) struct Ask {
    pub(crate) operation: &'static str,
    pub(crate) dataset: String,
    pub(crate) target_schema: String,
    pub(crate) purpose: String,
    pub(crate) fields: Vec<String>,
    pub(crate) filter: Option<pb::Filter>,
    pub(crate) limit: u64,
    pub(crate) key: Option<pb::Scalar>,
    /// Values to verify (lookups): field -> the consumer's value.
    pub(crate) verify: Vec<(String, pb::Scalar)>,
}

/// Everything known about an exchange so far; becomes audit entries.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub(crate) exchange_id: String,
    pub(crate) started: Instant,
    pub(crate) operation: &'static str,
    pub(crate) caller: String,
    pub(crate) consumer: Option<AgencyId>,
    pub(crate) dataset: Option<String>,
    pub(crate) purpose: Option<String>,
    pub(crate) fields: Vec<String>,
    pub(crate) filter: Option<serde_json::Value>,
    pub(crate) subject_hash: Option<String>,
    pub(crate) limit: Option<u64>,
    pub(crate) agreement: Option<(String, String)>,
    pub(crate) translation: Option<jembatan_core::Translation>,
}

impl Facts {
    pub(crate) fn entry(
        &self,
        kind: EntryKind,
        decision: Decision,
        status: ExchangeStatus,
    ) -> AuditEntry {
        let provider = self
            .dataset
            .as_deref()
            .and_then(|d| d.parse::<DatasetId>().ok())
            .map(|d| d.agency().to_string());
        AuditEntry {
            v: jembatan_core::audit::ENTRY_FORMAT_VERSION,
            kind,
            exchange_id: self.exchange_id.clone(),
            time: format_instant(&chrono::Utc::now()),
            operation: self.operation.to_owned(),
            caller: self.caller.clone(),
            consumer: self.consumer.as_ref().map(|c| c.to_string()),
            provider,
            dataset: self.dataset.clone(),
            purpose: self.purpose.clone(),
            fields: self.fields.clone(),
            filter: self.filter.clone(),
            subject_hash: self.subject_hash.clone(),
            limit: self.limit,
            agreement_id: self.agreement.as_ref().map(|a| a.0.clone()),
            agreement_terms_sha256: self.agreement.as_ref().map(|a| a.1.clone()),
            translation: self.translation.clone(),
            decision,
            reasons: Vec::new(),
            status,
            rows: 0,
            bytes: 0,
            payload_sha256: None,
            received: None,
            duration_ms: None,
            error: None,
            trace_id: None,
            change: None,
        }
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// An allowed exchange whose decision entry is durable.
#[derive(Debug)]
pub(crate) struct Allowed {
    pub(crate) facts: Facts,
    pub(crate) provider: AgencyId,
    pub(crate) dataset: DatasetId,
    pub(crate) decision_seq: u64,
    pub(crate) fetch: pb::FetchRequest,
    /// What is done to each record before it leaves: the grant's checks,
    /// masks and verified values, translation into the consumer's schema.
    pub(crate) admit: Arc<crate::admit::Admit>,
    /// The agreement in force at the decision.
    pub(crate) agreement: Agreement,
    /// This exchange's slot among its agency's running exchanges.
    pub(crate) _slot: tokio::sync::OwnedSemaphorePermit,
}

/// What the broker changes in each record before it leaves: masked
/// fields, and fields fetched only to verify a consumer's value, which are
/// compared and dropped.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) masks: Vec<(String, MaskRule)>,
    pub(crate) verify: Vec<(String, Scalar)>,
    /// Fetched fields that are not delivered.
    pub(crate) drop: Vec<String>,
}

/// A translated exchange: the translator, the part of the consumer's
/// filter that could not be pushed to the adapter, the consumer's fields
/// (target names) and its record limit.
#[derive(Debug)]
pub(crate) struct Translation {
    pub(crate) translator: Arc<Translator>,
    pub(crate) residual: Option<Filter>,
    pub(crate) fields: Vec<String>,
    /// Most records to deliver; 0 means no limit.
    pub(crate) limit: u64,
}

/// The parsed, validated request.
struct Parsed {
    dataset: DatasetId,
    fields: Vec<FieldName>,
    filter: Option<Filter>,
    key: Option<Scalar>,
    verify: Vec<(FieldName, Scalar)>,
}

fn parse(ask: &Ask) -> Result<Parsed, InvalidArgument> {
    let dataset: DatasetId = ask.dataset.parse()?;
    if ask.purpose.trim().is_empty() {
        return Err(InvalidArgument::new("purpose", "purpose is required"));
    }
    if ask.purpose.len() > 256 {
        return Err(InvalidArgument::new(
            "purpose",
            "purpose is longer than 256 bytes",
        ));
    }
    if ask.fields.len() > MAX_FIELDS {
        return Err(InvalidArgument::new(
            "fields",
            format!(
                "{} fields exceed the limit max_fields = {MAX_FIELDS}",
                ask.fields.len()
            ),
        ));
    }
    let mut fields = Vec::with_capacity(ask.fields.len());
    for f in &ask.fields {
        let f: FieldName = f.parse().map_err(|e: InvalidArgument| e.within("fields"))?;
        if fields.contains(&f) {
            return Err(InvalidArgument::new(
                "fields",
                format!("field {f} is named twice"),
            ));
        }
        fields.push(f);
    }
    let filter = ask.filter.as_ref().map(Filter::try_from).transpose()?;
    let key = match &ask.key {
        Some(k) => {
            let k = Scalar::try_from(k).map_err(|e| e.within("key"))?;
            if let Scalar::String(s) = &k
                && (s.is_empty() || s.len() > MAX_STRING_BYTES)
            {
                return Err(InvalidArgument::new("key", "key is empty"));
            }
            Some(k)
        }
        None if ask.operation == "lookup" => {
            return Err(InvalidArgument::new("key", "a lookup needs a key"));
        }
        None => None,
    };
    if ask.verify.len() > MAX_VERIFY_FIELDS {
        return Err(InvalidArgument::new(
            "verify",
            format!(
                "{} values to verify exceed the limit max_verify_fields = {MAX_VERIFY_FIELDS}",
                ask.verify.len()
            ),
        ));
    }
    if !ask.verify.is_empty() && !ask.target_schema.is_empty() {
        return Err(InvalidArgument::new(
            "verify",
            "values are verified in the provider's schema: leave target_schema empty to verify",
        ));
    }
    let mut verify = Vec::with_capacity(ask.verify.len());
    for (field, value) in &ask.verify {
        let field: FieldName = field
            .parse()
            .map_err(|e: InvalidArgument| e.within("verify"))?;
        let value = Scalar::try_from(value).map_err(|e| e.within(&format!("verify.{field}")))?;
        verify.push((field, value));
    }
    verify.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Parsed {
        dataset,
        fields,
        filter,
        key,
        verify,
    })
}

impl State {
    /// Keyed hash of a lookup key: what the audit log keeps instead of it.
    fn subject_hash(&self, dataset: &str, key: &Scalar) -> String {
        let text = match key {
            Scalar::String(s) => s.clone(),
            other => other.to_json().to_string(),
        };
        subject_hash(&self.audit_key, dataset, &text)
    }

    /// Appends an entry, failing closed: no durable entry, no exchange.
    pub(crate) async fn record(&self, entry: AuditEntry) -> Result<u64, Status> {
        match self.audit.append(entry).await {
            Ok(stored) => Ok(stored.seq),
            Err(err) => {
                tracing::error!(error = %err, "audit log write failed; refusing the exchange");
                Err(Status::unavailable(
                    "the audit log cannot be written; the exchange is refused",
                ))
            }
        }
    }

    /// Authenticates, validates and evaluates a request and writes its
    /// decision entry. Returns the allowed exchange, or the status to send.
    pub(crate) async fn decide(
        &self,
        identity: Result<Identity, Status>,
        ask: Ask,
    ) -> Result<Allowed, Status> {
        let mut facts = Facts {
            exchange_id: uuid::Uuid::now_v7().to_string(),
            started: Instant::now(),
            operation: ask.operation,
            caller: "unauthenticated".into(),
            consumer: None,
            dataset: Some(jembatan_core::ids::truncate(&ask.dataset, 160).to_owned()),
            purpose: Some(jembatan_core::ids::truncate(&ask.purpose, 256).to_owned()),
            fields: ask
                .fields
                .iter()
                .take(MAX_FIELDS)
                .map(|f| jembatan_core::ids::truncate(f, 128).to_owned())
                .collect(),
            filter: None,
            subject_hash: None,
            limit: (ask.limit > 0).then_some(ask.limit),
            agreement: None,
            translation: None,
        };
        let identity = match identity {
            Ok(id) => id,
            Err(status) => {
                let mut e =
                    facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
                e.error = Some(status.message().to_owned());
                self.record(e).await?;
                return Err(status);
            }
        };
        facts.caller = identity.to_string();
        let consumer = match (identity.role, &identity.agency) {
            (Role::Agency, Some(agency)) => agency.clone(),
            _ => {
                let denial = Denial::new(
                    DenialCode::RoleNotAllowed,
                    format!(
                        "exchanges are for agency certificates; this certificate's role is {}",
                        identity.role
                    ),
                );
                return Err(self.deny(&facts, vec![denial]).await);
            }
        };
        facts.consumer = Some(consumer.clone());
        let Some(slot) = self.streams.try_acquire(&consumer) else {
            let err = format!(
                "agency {consumer} has {} exchanges running on this broker: the limit max_streams_per_agency",
                self.streams.per_agency
            );
            let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
            e.error = Some(err.clone());
            self.record(e).await?;
            return Err(Status::resource_exhausted(err));
        };

        let parsed = match parse(&ask) {
            Ok(p) => p,
            Err(err) => {
                let mut e =
                    facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
                e.error = Some(err.to_string());
                self.record(e).await?;
                return Err(err.into());
            }
        };
        facts.filter = parsed
            .filter
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok());
        if let Some(key) = &parsed.key {
            facts.subject_hash = Some(self.subject_hash(parsed.dataset.as_str(), key));
        }

        let dataset = match self.store.dataset(&parsed.dataset).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                let denial = Denial::new(
                    DenialCode::UnknownDataset,
                    format!("there is no dataset {}", parsed.dataset),
                );
                return Err(self.deny(&facts, vec![denial]).await);
            }
            Err(err) => {
                tracing::error!(error = %err, "store read failed");
                return Err(Status::unavailable("the broker store is unavailable"));
            }
        };

        // Another schema: the consumer's fields and filter are in its
        // names; the provider is asked for the columns the mapping reads
        // and for the part of the filter that maps back exactly.
        let mut translation = None;
        let (fields, consumer_filter) = if ask.target_schema.is_empty() {
            (parsed.fields.clone(), parsed.filter.clone())
        } else {
            let translator = match self
                .registry
                .translator(&parsed.dataset, &ask.target_schema)
                .await
            {
                Ok(Some(t)) => Some(t),
                Ok(None) => None,
                Err(Refusal::Denied(denial)) => {
                    return Err(self.deny(&facts, vec![denial]).await);
                }
                Err(Refusal::Invalid(RegistryError::Store(err))) => {
                    tracing::error!(error = %err, "registry read failed");
                    return Err(Status::unavailable("the broker store is unavailable"));
                }
                Err(Refusal::Invalid(err)) => {
                    return Err(self
                        .invalid(
                            &facts,
                            InvalidArgument::new("target_schema", err.to_string()),
                        )
                        .await);
                }
            };
            match translator {
                None => (parsed.fields.clone(), parsed.filter.clone()),
                Some(translator) => {
                    let targets = &translator.target_fields;
                    let unknown = parsed
                        .fields
                        .iter()
                        .map(|f| f.to_string())
                        .chain(
                            parsed
                                .filter
                                .iter()
                                .flat_map(|f| f.fields())
                                .map(|f| f.to_string()),
                        )
                        .find(|f| !targets.contains(f));
                    if let Some(f) = unknown {
                        let err = InvalidArgument::new(
                            "fields",
                            format!("field {f} is not in {}", translator.target),
                        );
                        return Err(self.invalid(&facts, err).await);
                    }
                    facts.translation = Some(translator.trail());
                    let pushed = match &parsed.filter {
                        Some(f) => translator.mapping.push_down(f),
                        None => jembatan_mapping::PushDown {
                            source: None,
                            residual: None,
                        },
                    };
                    let mut source_fields = Vec::new();
                    for f in &translator.source_fields {
                        source_fields.push(f.parse::<FieldName>().map_err(|_| {
                            Status::internal("mapping reads a field with an invalid name")
                        })?);
                    }
                    translation = Some(Translation {
                        residual: pushed.residual,
                        fields: parsed.fields.iter().map(|f| f.to_string()).collect(),
                        limit: ask.limit,
                        translator,
                    });
                    (source_fields, pushed.source)
                }
            }
        };

        let key_filter = match (&parsed.key, &dataset.key_field) {
            (None, _) => None,
            (Some(key), Some(field)) => {
                let field: FieldName = field
                    .parse()
                    .map_err(|_| Status::internal("bad key field"))?;
                Some(Filter::Predicate(
                    jembatan_core::Predicate::new(
                        field,
                        jembatan_core::Operator::Eq,
                        Some(key.clone()),
                        vec![],
                    )
                    .map_err(Status::from)?,
                ))
            }
            (Some(_), None) => {
                let msg = format!(
                    "dataset {} offers no lookups (it has no key field)",
                    dataset.id
                );
                let mut e =
                    facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
                e.error = Some(msg.clone());
                self.record(e).await?;
                return Err(Status::failed_precondition(msg));
            }
        };

        let agreements = self
            .store
            .agreements_for(&consumer, &parsed.dataset)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "store read failed");
                Status::unavailable("the broker store is unavailable")
            })?;
        let filter_uses: Vec<(&FieldName, Operator)> = consumer_filter
            .as_ref()
            .map(|f| {
                f.predicates()
                    .into_iter()
                    .map(|p| (&p.field, p.op))
                    .collect()
            })
            .unwrap_or_default();
        let key = match &key_filter {
            Some(Filter::Predicate(p)) => Some(&p.field),
            _ => None,
        };
        let verify_fields: Vec<&FieldName> = parsed.verify.iter().map(|(f, _)| f).collect();
        let now = chrono::Utc::now();
        let request = policy::Request {
            consumer: &consumer,
            dataset: &parsed.dataset,
            purpose: &ask.purpose,
            fields: &fields,
            filter_uses,
            key,
            verify: verify_fields.clone(),
            now,
        };
        let grant = match policy::evaluate(&request, &agreements) {
            Ok(grant) => grant,
            Err(denials) => {
                if let Some(id) = denials.iter().find_map(|d| d.agreement_id.clone())
                    && let Some(a) = agreements.iter().find(|a| a.id == id)
                {
                    facts.agreement = Some((a.id.clone(), a.terms_sha256()));
                }
                return Err(self.deny(&facts, denials).await);
            }
        };
        facts.agreement = Some((grant.agreement.id.clone(), grant.agreement.terms_sha256()));
        facts.fields = grant.fields.iter().map(|f| f.to_string()).collect();
        if let Some(denial) = self.admit_quota(&grant.agreement, now).await? {
            return Err(self.deny(&facts, vec![denial]).await);
        }
        let fetch_fields = grant.fetch_fields(&verify_fields);
        let shape = (!grant.masks.is_empty() || !parsed.verify.is_empty()).then(|| Shape {
            masks: grant
                .masks
                .iter()
                .map(|(f, m)| (f.to_string(), *m))
                .collect(),
            verify: parsed
                .verify
                .iter()
                .map(|(f, v)| (f.to_string(), v.clone()))
                .collect(),
            drop: fetch_fields
                .iter()
                .filter(|f| !grant.fields.contains(f))
                .map(|f| f.to_string())
                .collect(),
        });
        // the decision names the fields verified, apart from those read
        facts
            .fields
            .extend(parsed.verify.iter().map(|(f, _)| format!("verify:{f}")));
        let decision_seq = self
            .record(facts.entry(
                EntryKind::Decision,
                Decision::Allow,
                ExchangeStatus::Started,
            ))
            .await?;

        let filter = Filter::and(
            grant
                .agreement
                .row_filter
                .iter()
                .cloned()
                .chain(consumer_filter.clone())
                .chain(key_filter),
        );
        let limit = if parsed.key.is_some() {
            2
        } else if translation.as_ref().is_some_and(|t| t.residual.is_some()) {
            // the broker filters after translation and stops at the limit
            0
        } else {
            ask.limit
        };
        let fetch = pb::FetchRequest {
            exchange_id: facts.exchange_id.clone(),
            dataset: parsed.dataset.to_string(),
            columns: fetch_fields.iter().map(|f| f.to_string()).collect(),
            filter: filter.as_ref().map(Filter::to_proto),
            limit,
            batch_size: 0,
            consumer: consumer.to_string(),
            purpose: ask.purpose.clone(),
        };
        Ok(Allowed {
            provider: parsed.dataset.agency(),
            dataset: parsed.dataset,
            facts,
            decision_seq,
            admit: Arc::new(crate::admit::Admit::new(
                fetch.columns.clone(),
                shape,
                translation,
            )),
            fetch,
            agreement: grant.agreement,
            _slot: slot,
        })
    }

    /// Checks an allowed request against its agreement's quotas and takes
    /// one request from the per-minute quota. A denial takes nothing: the
    /// daily rows are only read, and the request is taken last.
    async fn admit_quota(
        &self,
        agreement: &Agreement,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Denial>, Status> {
        let quota = agreement.quota;
        let unavailable = |err: jembatan_store::StoreError| {
            tracing::error!(error = %err, "quota store failed");
            Status::unavailable("the broker store is unavailable")
        };
        if quota.rows_per_day > 0 {
            let day = QuotaKind::RowsPerDay.window(now);
            let used = self
                .store
                .quota_used(&agreement.id, QuotaKind::RowsPerDay, &day)
                .await
                .map_err(unavailable)?;
            if used >= quota.rows_per_day {
                return Ok(Some(
                    Denial::new(
                        DenialCode::QuotaExhausted,
                        format!(
                            "agreement {} allows {} rows per day and {used} were delivered today (UTC {day})",
                            agreement.id, quota.rows_per_day
                        ),
                    )
                    .agreement(&agreement.id),
                ));
            }
        }
        if quota.requests_per_minute > 0 {
            let minute = QuotaKind::RequestsPerMinute.window(now);
            let taken = self
                .store
                .take_quota(
                    &agreement.id,
                    QuotaKind::RequestsPerMinute,
                    &minute,
                    1,
                    quota.requests_per_minute,
                )
                .await
                .map_err(unavailable)?;
            if !taken {
                return Ok(Some(
                    Denial::new(
                        DenialCode::QuotaExhausted,
                        format!(
                            "agreement {} allows {} requests per minute, all taken in minute {minute} UTC",
                            agreement.id, quota.requests_per_minute
                        ),
                    )
                    .agreement(&agreement.id),
                ));
            }
        }
        Ok(None)
    }

    /// Records an invalid request and builds its `InvalidArgument` status.
    async fn invalid(&self, facts: &Facts, err: InvalidArgument) -> Status {
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
        e.error = Some(err.to_string());
        match self.record(e).await {
            Ok(_) => err.into(),
            Err(status) => status,
        }
    }

    /// Records a denial and builds the `PermissionDenied` status for it.
    async fn deny(&self, facts: &Facts, reasons: Vec<Denial>) -> Status {
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Denied);
        e.reasons = reasons.clone();
        let seq = match self.record(e).await {
            Ok(seq) => seq,
            Err(status) => return status,
        };
        let words: Vec<String> = reasons
            .iter()
            .map(|r| format!("{}: {}", r.code.as_str(), r.message))
            .collect();
        let details = pb::DenialDetails {
            exchange_id: facts.exchange_id.clone(),
            reasons: reasons.iter().map(Denial::to_proto).collect(),
            entry_seq: seq,
        };
        let mut status =
            Status::permission_denied(format!("exchange denied: {}", words.join("; ")));
        status.metadata_mut().insert_bin(
            DENIAL_METADATA_KEY,
            MetadataValue::from_bytes(&details.encode_to_vec()),
        );
        status
    }
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    type QueryStream = ReceiverStream<Result<pb::QueryResponse, Status>>;

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let req = request.into_inner();
        let ask = Ask {
            operation: "query",
            dataset: req.dataset,
            target_schema: req.target_schema,
            purpose: req.purpose,
            fields: req.fields,
            filter: req.filter,
            limit: req.limit,
            key: None,
            verify: Vec::new(),
        };
        let allowed = self.state.decide(identity, ask).await?;
        relay::query(self.state.clone(), allowed).await
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let req = request.into_inner();
        let ask = Ask {
            operation: "lookup",
            dataset: req.dataset,
            target_schema: req.target_schema,
            purpose: req.purpose,
            fields: req.fields,
            filter: None,
            limit: 0,
            key: Some(req.key.unwrap_or_default()),
            verify: req.verify.into_iter().collect(),
        };
        let allowed = self.state.decide(identity, ask).await?;
        relay::lookup(self.state.clone(), allowed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_stream_table_is_not_taken_for_a_reached_limit() {
        let limit = Arc::new(StreamLimit::new(1));
        let agency: AgencyId = "dinsos".parse().expect("agency id");
        let poisoner = {
            let limit = limit.clone();
            std::thread::spawn(move || {
                let _held = limit.running.lock();
                panic!("a panic while the table is held poisons its lock");
            })
        };
        assert!(poisoner.join().is_err());
        assert!(limit.running.is_poisoned());

        let slot = limit.try_acquire(&agency);
        assert!(slot.is_some(), "the first exchange gets its slot");
        assert!(
            limit.try_acquire(&agency).is_none(),
            "the limit still holds"
        );
        drop(slot);
        assert!(limit.try_acquire(&agency).is_some(), "a freed slot is free");
    }
}
