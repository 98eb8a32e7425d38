//! The `Exchange` service: identity from the certificate, request
//! validation, agreement evaluation and the durable decision entry.

use std::collections::BTreeSet;
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
use sha2::Sha256;
use tonic::{Request, Response, Status};

use crate::agreements::Lifecycle;
use crate::error::ExchangeError;
use crate::policy;
use crate::registry::{Refusal, Registry, RegistryError, Translator};
use crate::relay::{self, AdapterPool};

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) audit: AuditLog,
    pub(crate) adapters: AdapterPool,
    pub(crate) audit_key: Arc<[u8]>,
    /// Per dataset, the fields whose values are subject keys (the key
    /// and the config's `subject_keys`).
    pub(crate) subject_fields: std::collections::HashMap<String, BTreeSet<String>>,
    /// The latest signed checkpoint note, handed out with receipts.
    pub(crate) checkpoint_notes: tokio::sync::watch::Receiver<Option<String>>,
    pub(crate) registry: Arc<Registry>,
    /// The agencies registered with this broker; only they act.
    pub(crate) members: crate::members::Members,
    pub(crate) lifecycle: Lifecycle,
    /// Exchanges per agency, query streams per consumer and provider, and
    /// the stall timeout.
    pub(crate) isolation: crate::isolation::Isolation,
    /// Threads that check and translate the records of running queries.
    pub(crate) workers: crate::admit::Workers,
    /// Receipts on their way back to the providers' adapters.
    pub(crate) acks: crate::acks::Acks,
    /// Ends running streams at shutdown.
    pub(crate) drain: crate::drain::Drain,
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
    /// The dataset as the consumer named it (cut to 160 bytes); logged
    /// in clear only once the store knows it (`privacy.dataset_known`).
    pub(crate) dataset: Option<String>,
    /// The purpose as the consumer named it (cut to 256 bytes); logged in
    /// clear only when registered (`privacy.purpose_registered`).
    pub(crate) purpose: Option<String>,
    /// Fields requested, then delivered; each logged in clear only when
    /// it is a known field (`privacy.known_fields`).
    pub(crate) fields: Vec<String>,
    /// The consumer's filter; logged as hashes and shapes.
    pub(crate) filter: Option<Filter>,
    pub(crate) subject_hash: Option<String>,
    pub(crate) limit: Option<u64>,
    pub(crate) agreement: Option<(String, String)>,
    pub(crate) translation: Option<jembatan_core::Translation>,
    pub(crate) privacy: Privacy,
    /// The request's trace: named in the entries, passed to the adapter.
    pub(crate) trace: jembatan_telemetry::Trace,
}

/// What the log may name in clear, and what it keeps only as keyed hashes
/// or shapes: no value a consumer sends reaches the log (or the broker's
/// tracing) in clear.
#[derive(Debug, Clone)]
pub(crate) struct Privacy {
    audit_key: Arc<[u8]>,
    /// The store holds the dataset: its id is an identifier.
    pub(crate) dataset_known: bool,
    /// The purpose is registered (in the config, or an agreement's).
    pub(crate) purpose_registered: bool,
    /// Field names known to exist: the dataset's key and subject-key
    /// fields, those the consumer's agreements grant, and the target
    /// schema's fields. Any other is a name the consumer made up.
    pub(crate) known_fields: BTreeSet<String>,
    /// Fields whose filter values are subject keys.
    pub(crate) subject_fields: BTreeSet<String>,
    /// The consumer's values (filter values, key, values to verify) as
    /// text; a message might quote any of them.
    values: Vec<String>,
    /// Every field name the consumer sent, as sent (cut to 128 bytes).
    raw_fields: Vec<String>,
    /// The target schema as sent; an identifier once it is registered.
    target_schema: String,
    /// The dataset and purpose as sent: identifiers once known.
    dataset: String,
    purpose: String,
}

impl Privacy {
    fn new(audit_key: Arc<[u8]>, ask: &Ask) -> Privacy {
        use jembatan_core::ids::truncate;
        let mut values = Vec::new();
        let mut scalar = |v: &pb::Scalar| {
            let text = match &v.kind {
                Some(pb::scalar::Kind::StringValue(s)) => truncate(s, MAX_STRING_BYTES).to_owned(),
                Some(pb::scalar::Kind::IntValue(i)) => i.to_string(),
                Some(pb::scalar::Kind::DoubleValue(f)) => f.to_string(),
                Some(pb::scalar::Kind::BoolValue(_)) | None => return,
            };
            values.push(text);
        };
        let mut raw_fields: Vec<String> = ask
            .fields
            .iter()
            .take(MAX_FIELDS)
            .map(|f| truncate(f, 128).to_owned())
            .collect();
        let mut stack: Vec<&pb::Filter> = ask.filter.iter().collect();
        let mut seen = 0usize;
        while let Some(f) = stack.pop() {
            // as many as a valid filter can hold; a longer one is refused
            seen += 1;
            if seen > jembatan_core::limits::MAX_FILTER_PREDICATES * 2 {
                break;
            }
            match &f.kind {
                Some(pb::filter::Kind::Predicate(p)) => {
                    raw_fields.push(truncate(&p.field, 128).to_owned());
                    p.value.iter().for_each(&mut scalar);
                    p.values
                        .iter()
                        .take(jembatan_core::limits::MAX_IN_VALUES)
                        .for_each(&mut scalar);
                }
                Some(pb::filter::Kind::All(l) | pb::filter::Kind::Any(l)) => {
                    stack.extend(l.filters.iter())
                }
                Some(pb::filter::Kind::Not(inner)) => stack.push(inner),
                None => {}
            }
        }
        ask.key.iter().for_each(&mut scalar);
        for (field, value) in ask.verify.iter().take(MAX_VERIFY_FIELDS) {
            raw_fields.push(truncate(field, 128).to_owned());
            scalar(value);
        }
        Privacy {
            audit_key,
            dataset_known: false,
            purpose_registered: false,
            known_fields: BTreeSet::new(),
            subject_fields: BTreeSet::new(),
            values,
            raw_fields,
            target_schema: truncate(&ask.target_schema, 256).to_owned(),
            dataset: truncate(&ask.dataset, 256).to_owned(),
            purpose: truncate(&ask.purpose, 256).to_owned(),
        }
    }

    /// Keyed hash and length of a name the consumer made up.
    fn hashed(&self, domain: &str, text: &str) -> jembatan_core::redact::HashedText {
        jembatan_core::redact::HashedText {
            hmac: subject_hash(&self.audit_key, domain, text),
            len: text.len() as u64,
        }
    }

    /// A field as the log names it.
    fn field(&self, name: &str) -> String {
        if self.known_fields.contains(name) {
            name.to_owned()
        } else {
            self.hashed("field", name).token()
        }
    }

    /// A text bound for the log (an error, a denial's words) with every
    /// value and made-up name of the request taken out.
    pub(crate) fn scrub(&self, text: &str, translated: bool) -> String {
        use jembatan_core::redact::{scrub, scrub_words, secret_forms};
        let mut secrets: Vec<String> = self.values.iter().flat_map(|v| secret_forms(v)).collect();
        let unknown: Vec<&str> = self
            .raw_fields
            .iter()
            .map(String::as_str)
            .filter(|f| !self.known_fields.contains(*f))
            .collect();
        for f in &unknown {
            secrets.extend(secret_forms(f));
        }
        if !translated && !self.target_schema.is_empty() {
            secrets.extend(secret_forms(&self.target_schema));
        }
        if !self.dataset_known {
            secrets.extend(secret_forms(&self.dataset));
        }
        if !self.purpose_registered {
            secrets.extend(secret_forms(&self.purpose));
        }
        scrub_words(&scrub(text, &secrets), &unknown)
    }
}

/// Names fields and hashes subject keys for [`jembatan_core::redact::logged_filter`].
struct LogNames<'a> {
    privacy: &'a Privacy,
    dataset: &'a str,
}

impl jembatan_core::redact::Redactor for LogNames<'_> {
    fn field(&self, field: &FieldName) -> String {
        self.privacy.field(field.as_str())
    }

    fn subject(&self, field: &FieldName, value: &Scalar) -> Option<String> {
        self.privacy
            .subject_fields
            .contains(field.as_str())
            .then(|| scalar_subject_hash(&self.privacy.audit_key, self.dataset, value))
    }
}

/// The subject hash of a value: strings as they are, anything else as its
/// JSON text (`42`, `true`).
fn scalar_subject_hash(audit_key: &[u8], dataset: &str, value: &Scalar) -> String {
    let text = match value {
        Scalar::String(s) => s.clone(),
        other => other.to_json().to_string(),
    };
    subject_hash(audit_key, dataset, &text)
}

impl Facts {
    pub(crate) fn entry(
        &self,
        kind: EntryKind,
        decision: Decision,
        status: ExchangeStatus,
    ) -> AuditEntry {
        let p = &self.privacy;
        let known_dataset = self.dataset.as_deref().filter(|_| p.dataset_known);
        let provider = known_dataset
            .and_then(|d| d.parse::<DatasetId>().ok())
            .map(|d| d.agency().to_string());
        let dataset = match (&self.dataset, known_dataset) {
            (_, Some(d)) => Some(d.to_owned()),
            (Some(raw), None) => Some(p.hashed("dataset", raw).token()),
            (None, None) => None,
        };
        let (purpose, unregistered_purpose) = match &self.purpose {
            Some(purpose) if p.purpose_registered => (Some(purpose.clone()), None),
            Some(purpose) => (None, Some(p.hashed("purpose", purpose))),
            None => (None, None),
        };
        let fields = self
            .fields
            .iter()
            .map(|f| match f.strip_prefix("verify:") {
                Some(v) => format!("verify:{}", p.field(v)),
                None => p.field(f),
            })
            .collect();
        // the lookup key's hash is `subject_hash`; these are the filter's
        let mut subjects = Vec::new();
        let filter = self.filter.as_ref().map(|f| {
            let names = LogNames {
                privacy: p,
                dataset: self.dataset.as_deref().unwrap_or_default(),
            };
            jembatan_core::redact::logged_filter(f, &names, &mut subjects)
        });
        AuditEntry {
            v: jembatan_core::audit::ENTRY_FORMAT_VERSION,
            kind,
            exchange_id: self.exchange_id.clone(),
            time: format_instant(&chrono::Utc::now()),
            operation: self.operation.to_owned(),
            caller: self.caller.clone(),
            consumer: self.consumer.as_ref().map(|c| c.to_string()),
            provider,
            dataset,
            purpose,
            fields,
            filter,
            subject_hash: self.subject_hash.clone(),
            subjects,
            unregistered_purpose,
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
            trace_id: self.trace.id(),
            change: None,
        }
    }

    /// Takes the request's values and made-up names out of an entry's
    /// error and denial words, and names the denied fields as the log
    /// names fields. Every entry passes here before it is appended.
    pub(crate) fn redact(&self, entry: &mut AuditEntry) {
        let translated = self.translation.is_some();
        if let Some(error) = &entry.error {
            entry.error = Some(self.privacy.scrub(error, translated));
        }
        for reason in &mut entry.reasons {
            reason.message = self.privacy.scrub(&reason.message, translated);
            for f in &mut reason.fields {
                // `nik` or, for a misused filter field, `nik (prefix)`
                *f = match f.split_once(' ') {
                    Some((name, how)) => format!("{} {how}", self.privacy.field(name)),
                    None => self.privacy.field(f),
                };
            }
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
    /// The exchange's slots under the isolation limits, given back when
    /// dropped (a query's relay drops them once the adapter's stream is
    /// over, before it waits for the consumer to take the end).
    pub(crate) held: Option<crate::isolation::Held>,
    /// Writes the exchange's `cancelled` end if it is dropped unfinished.
    pub(crate) end: relay::Unfinished,
    /// When the consumer stops waiting (its `grpc-timeout`): the adapter's
    /// fetch gets the same deadline, so its statement stops with it.
    pub(crate) deadline: Option<Instant>,
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
    jembatan_core::ids::check_purpose(&ask.purpose)?;
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
        scalar_subject_hash(&self.audit_key, dataset, key)
    }

    /// Redacts an exchange's entry (see [`Facts::redact`]) and appends it.
    pub(crate) async fn log(&self, facts: &Facts, mut entry: AuditEntry) -> Result<u64, Status> {
        facts.redact(&mut entry);
        self.record(entry).await
    }

    /// Learns, for an entry written before the dataset was looked up,
    /// whether the dataset the request names exists (its id is then
    /// logged in clear) and which of its fields are subject keys.
    async fn learn_dataset(&self, facts: &mut Facts, raw: &str) {
        if facts.privacy.dataset_known {
            return;
        }
        if let Ok(id) = raw.parse::<DatasetId>()
            && let Ok(Some(_)) = self.store.dataset(&id).await
        {
            self.know_dataset(facts, &id);
        }
    }

    /// The dataset exists: its id and its subject-key fields are known.
    fn know_dataset(&self, facts: &mut Facts, id: &DatasetId) {
        facts.privacy.dataset_known = true;
        if let Some(subjects) = self.subject_fields.get(id.as_str()) {
            facts.privacy.subject_fields = subjects.clone();
            facts.privacy.known_fields.extend(subjects.iter().cloned());
        }
    }

    /// Appends an entry, failing closed: no durable entry, no exchange.
    pub(crate) async fn record(&self, entry: AuditEntry) -> Result<u64, Status> {
        match self.audit.append(entry).await {
            Ok(stored) => Ok(stored.seq),
            Err(err) => Err(ExchangeError::AuditRefused(Box::new(err)).into()),
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
            privacy: Privacy::new(self.audit_key.clone(), &ask),
            trace: jembatan_telemetry::Trace::current(),
        };
        facts.privacy.purpose_registered = self.lifecycle.purposes.contains_key(&ask.purpose);
        let identity = match identity {
            Ok(id) => id,
            Err(status) => {
                self.learn_dataset(&mut facts, &ask.dataset).await;
                let mut e =
                    facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
                e.error = Some(status.message().to_owned());
                self.log(&facts, e).await?;
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
                self.learn_dataset(&mut facts, &ask.dataset).await;
                return Err(self.deny(&facts, vec![denial]).await);
            }
        };
        facts.consumer = Some(consumer.clone());
        let Some(slot) = self.isolation.per_agency.try_take(&consumer) else {
            self.learn_dataset(&mut facts, &ask.dataset).await;
            let err = format!(
                "agency {consumer} has {} exchanges running on this broker: the limit max_streams_per_agency",
                self.isolation.per_agency.limit
            );
            return Err(self.exhausted(&facts, err).await);
        };

        let parsed = match parse(&ask) {
            Ok(p) => p,
            Err(err) => {
                self.learn_dataset(&mut facts, &ask.dataset).await;
                return Err(self.invalid(&facts, err).await);
            }
        };
        facts.filter = parsed.filter.clone();
        if let Some(key) = &parsed.key {
            facts.subject_hash = Some(self.subject_hash(parsed.dataset.as_str(), key));
        }
        // after the subject hash, so that "who looked this resident up?"
        // also finds attempts by agencies that are not registered
        if let Err(unregistered) = self.members.check(&consumer) {
            let denial = Denial::new(DenialCode::UnregisteredAgency, unregistered.to_string());
            return Err(self.deny(&facts, vec![denial]).await);
        }
        let dataset = match self.store.dataset(&parsed.dataset).await {
            Ok(Some(d)) => {
                self.know_dataset(&mut facts, &parsed.dataset);
                d
            }
            Ok(None) => {
                let denial = Denial::new(
                    DenialCode::UnknownDataset,
                    format!("there is no dataset {}", parsed.dataset),
                );
                return Err(self.deny(&facts, vec![denial]).await);
            }
            Err(err) => return Err(ExchangeError::store(err).into()),
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
                    return Err(ExchangeError::store(err).into());
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
                    facts.privacy.known_fields.extend(targets.iter().cloned());
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
                        source_fields.push(
                            f.parse::<FieldName>()
                                .map_err(|_| ExchangeError::MappingField)?,
                        );
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
                let field: FieldName = field.parse().map_err(|_| ExchangeError::KeyField)?;
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
                let err = ExchangeError::NoLookups(dataset.id.to_string());
                let mut e =
                    facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
                e.error = Some(err.to_string());
                self.log(&facts, e).await?;
                return Err(err.into());
            }
        };

        let agreements = self
            .store
            .agreements_for(&consumer, &parsed.dataset)
            .await
            .map_err(ExchangeError::store)?;
        // what the consumer's agreements grant and cover are identifiers
        for a in &agreements {
            facts
                .privacy
                .known_fields
                .extend(a.fields.iter().map(|g| g.field.to_string()));
            if a.purpose == ask.purpose {
                facts.privacy.purpose_registered = true;
            }
        }
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
        // taken once the request is allowed (the provider is then one the
        // broker knows) and before the quota, so a refusal takes nothing
        let provider_slot = match ask.operation {
            "query" => {
                let pair = (consumer.clone(), parsed.dataset.agency());
                match self.isolation.per_provider.try_take(&pair) {
                    Some(slot) => Some(slot),
                    None => {
                        let err = format!(
                            "agency {consumer} has {} query streams open against provider {} on this broker: the limit max_streams_per_provider",
                            self.isolation.per_provider.limit, pair.1
                        );
                        return Err(self.exhausted(&facts, err).await);
                    }
                }
            }
            _ => None,
        };
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
        let (decision_seq, end) = relay::begin(&self.audit, &facts).await?;

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
            held: Some(crate::isolation::Held {
                _agency: slot,
                _provider: provider_slot,
            }),
            end,
            deadline: None,
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
        let unavailable = |err: jembatan_store::StoreError| ExchangeError::store(err);
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

    /// Records a request refused for a limit of this broker (exchanges per
    /// agency, streams per provider) and builds its `ResourceExhausted`
    /// status.
    async fn exhausted(&self, facts: &Facts, limit: String) -> Status {
        let err = ExchangeError::Exhausted(limit);
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
        e.error = Some(err.to_string());
        match self.log(facts, e).await {
            Ok(_) => err.into(),
            Err(status) => status,
        }
    }

    /// Records an invalid request and builds its `InvalidArgument` status.
    async fn invalid(&self, facts: &Facts, err: InvalidArgument) -> Status {
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
        e.error = Some(err.to_string());
        match self.log(facts, e).await {
            Ok(_) => err.into(),
            Err(status) => status,
        }
    }

    /// Records a denial and builds the `PermissionDenied` status for it.
    async fn deny(&self, facts: &Facts, reasons: Vec<Denial>) -> Status {
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Denied);
        e.reasons = reasons.clone();
        let seq = match self.log(facts, e).await {
            Ok(seq) => seq,
            Err(status) => return status,
        };
        let words: Vec<String> = reasons
            .iter()
            .map(|r| format!("{}: {}", r.code.as_str(), r.message))
            .collect();
        // several candidate agreements: each one's failed terms are there
        let examined: std::collections::BTreeSet<&str> = reasons
            .iter()
            .filter_map(|r| r.agreement_id.as_deref())
            .collect();
        let head = if examined.len() > 1 {
            format!(
                "exchange denied: none of the {} agreements examined allows it: ",
                examined.len()
            )
        } else {
            "exchange denied: ".to_owned()
        };
        let details = pb::DenialDetails {
            exchange_id: facts.exchange_id.clone(),
            reasons: reasons.iter().map(Denial::to_proto).collect(),
            entry_seq: seq,
        };
        let mut status = Status::from(ExchangeError::Denied(format!("{head}{}", words.join("; "))));
        jembatan_proto::trailers::insert(status.metadata_mut(), DENIAL_METADATA_KEY, &details);
        status
    }
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    type QueryStream = relay::QueryStream;

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let deadline = consumer_deadline(request.metadata());
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
        let mut allowed = self.state.decide(identity, ask).await?;
        allowed.deadline = deadline;
        relay::query(self.state.clone(), allowed).await
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let deadline = consumer_deadline(request.metadata());
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
        let mut allowed = self.state.decide(identity, ask).await?;
        allowed.deadline = deadline;
        relay::lookup(self.state.clone(), allowed).await
    }
}

/// When the caller's `grpc-timeout` runs out, counted from now (the call's
/// arrival); `None` without one or with one that is not well formed.
fn consumer_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    Some(Instant::now() + jembatan_proto::grpc_timeout(metadata)?)
}
