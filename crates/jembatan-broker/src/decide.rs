//! Deciding an exchange, in four steps that read top to bottom:
//!
//! 1. **validate**: the caller is an agency (from its certificate, never a
//!    request field) within its limit of running exchanges, the request
//!    parses, and the agency is registered;
//! 2. **plan**: the dataset exists; in the consumer's schema, the fields
//!    and filter are mapped to the provider's, and a lookup's key becomes
//!    a filter on the dataset's key field;
//! 3. **authorize**: one of the consumer's agreements allows every term,
//!    within the broker's stream limits and the agreement's quotas;
//! 4. **record**: the allow decision entry is durable (a lookup's is
//!    written with its answer, in one entry), and the exchange goes to the
//!    relay with what to fetch and what to do to each record.
//!
//! A request refused at any step gets its decision entry (see
//! `journal.rs`) before the refusal is sent.

use std::sync::Arc;

use jembatan_core::limits::{
    MAX_FIELDS, MAX_MAPPING_TEST_RECORDS, MAX_STRING_BYTES, MAX_VERIFY_BATCH_KEYS,
};
use jembatan_core::{
    AgencyId, Agreement, DatasetId, Decision, Denial, DenialCode, EntryKind, ExchangeStatus,
    FieldName, Filter, Identity, InvalidArgument, Operator, Role, Scalar,
};
use jembatan_proto::DENIAL_METADATA_KEY;
use jembatan_proto::v1 as pb;
use jembatan_store::QuotaKind;
use tonic::Status;

use crate::admit::{Admit, Shape, Translation};
use crate::error::ExchangeError;
use crate::facts::{Ask, Facts, MAX_VERIFY_FIELDS, scalar_subject_hash};
use crate::isolation::Held;
use crate::policy::{self, Grant};
use crate::policy_cache::PolicyVersion;
use crate::registry::{Refusal, RegistryError};
use crate::relay::{Allowed, KeyToVerify};
use crate::replica::{NotOpened, OpenSlot, ProviderStream};
use crate::state::State;
use crate::subscribe::{MAX_SUBSCRIBE_BATCH, Resume};

/// The parsed, validated request.
struct Parsed {
    dataset: DatasetId,
    fields: Vec<FieldName>,
    filter: Option<Filter>,
    key: Option<Scalar>,
    verify: Vec<(FieldName, Scalar)>,
    /// A batch verification: each key with its values to verify.
    batch: Vec<KeyToVerify>,
    /// A mapping test's candidate mapping, parsed.
    candidate: Option<jembatan_mapping::Mapping>,
}

impl Parsed {
    /// Whether the request names keys: a lookup, or a batch verification.
    fn by_key(&self) -> bool {
        self.key.is_some() || !self.batch.is_empty()
    }

    /// The fields whose values are verified: a lookup's, or every field a
    /// batch verifies, each once.
    fn verified_fields(&self) -> Vec<&FieldName> {
        let mut fields: Vec<&FieldName> = self.verify.iter().map(|(f, _)| f).collect();
        for (_, verify) in &self.batch {
            for (f, _) in verify {
                if !fields.contains(&f) {
                    fields.push(f);
                }
            }
        }
        fields.sort();
        fields
    }
}

/// A batch verification's items, parsed: at least one key, at most
/// [`MAX_VERIFY_BATCH_KEYS`], each with at least one value to verify.
fn parse_batch(items: &[pb::VerifyItem]) -> Result<Vec<KeyToVerify>, InvalidArgument> {
    if items.is_empty() || items.len() > MAX_VERIFY_BATCH_KEYS {
        return Err(InvalidArgument::new(
            "items",
            format!(
                "{} keys: a batch verification holds 1 to {MAX_VERIFY_BATCH_KEYS} (max_verify_batch_keys)",
                items.len()
            ),
        ));
    }
    let mut batch = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |what: &str| format!("items[{i}].{what}");
        let key = item
            .key
            .as_ref()
            .ok_or_else(|| InvalidArgument::new(at("key"), "every item needs a key"))?;
        let key = Scalar::try_from(key).map_err(|e| e.within(&at("key")))?;
        if let Scalar::String(s) = &key
            && (s.is_empty() || s.len() > MAX_STRING_BYTES)
        {
            return Err(InvalidArgument::new(at("key"), "key is empty"));
        }
        if item.verify.is_empty() || item.verify.len() > MAX_VERIFY_FIELDS {
            return Err(InvalidArgument::new(
                at("verify"),
                format!("each item verifies 1 to {MAX_VERIFY_FIELDS} fields"),
            ));
        }
        let mut verify = Vec::with_capacity(item.verify.len());
        for (field, value) in &item.verify {
            let field: FieldName = field
                .parse()
                .map_err(|e: InvalidArgument| e.within(&at("verify")))?;
            let value =
                Scalar::try_from(value).map_err(|e| e.within(&at(&format!("verify.{field}"))))?;
            verify.push((field, value));
        }
        verify.sort_by(|a, b| a.0.cmp(&b.0));
        batch.push((key, verify));
    }
    Ok(batch)
}

/// A mapping test's candidate document, parsed, and its record limit.
fn parse_candidate(ask: &Ask) -> Result<Option<jembatan_mapping::Mapping>, InvalidArgument> {
    let Some(document) = &ask.candidate else {
        return Ok(None);
    };
    let mapping = crate::registry::parse_mapping(document)
        .map_err(|e| InvalidArgument::new("document", e.to_string()))?;
    if ask.limit > MAX_MAPPING_TEST_RECORDS {
        return Err(InvalidArgument::new(
            "limit",
            format!(
                "a mapping test checks at most {MAX_MAPPING_TEST_RECORDS} records, not {}",
                ask.limit
            ),
        ));
    }
    Ok(Some(mapping))
}

fn parse(ask: &Ask) -> Result<Parsed, InvalidArgument> {
    // a candidate names the dataset: it is read first
    let candidate = parse_candidate(ask)?;
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
    if ask.operation == "subscribe" && ask.limit > MAX_SUBSCRIBE_BATCH {
        return Err(InvalidArgument::new(
            "batch_size",
            format!(
                "a batch holds at most {MAX_SUBSCRIBE_BATCH} changes, not {}",
                ask.limit
            ),
        ));
    }
    let batch = if ask.operation == "verify_batch" {
        parse_batch(&ask.batch)?
    } else {
        Vec::new()
    };
    Ok(Parsed {
        dataset,
        fields,
        filter,
        key,
        verify,
        batch,
        candidate,
    })
}

/// A request from an agency, parsed.
struct Validated {
    consumer: AgencyId,
    /// Its place among the agency's running exchanges, open in the store
    /// (counted across replicas) until its end is durable.
    slot: OpenSlot,
    parsed: Parsed,
    /// A subscription: which, and where it resumes.
    resume: Option<Resume>,
}

/// What the exchange asks of the provider, in the provider's names.
struct Plan {
    /// The policy version the decision reads datasets and agreements at.
    policy: PolicyVersion,
    /// The fields the agreement must grant: those the consumer asked for
    /// or, translated, the columns the mapping reads.
    fields: Vec<FieldName>,
    /// The part of the consumer's filter the adapter applies.
    consumer_filter: Option<Filter>,
    /// The dataset's key field, when the request names keys.
    key_field: Option<FieldName>,
    /// A lookup's key, as a filter on the dataset's key field.
    key_filter: Option<Filter>,
    /// A batch verification's distinct keys, a bounded `IN` list each:
    /// the adapter runs one statement per part.
    parts: Vec<Filter>,
    translation: Option<Translation>,
}

/// The agreement that allows the exchange, and the slot its stream holds.
struct Authorized {
    grant: Grant,
    provider_slot: Option<ProviderStream>,
}

impl State {
    /// Authenticates, validates and evaluates a request and writes its
    /// decision entry. Returns the allowed exchange, or the status to send.
    pub(crate) async fn decide(
        &self,
        identity: Result<Identity, Status>,
        ask: Ask,
    ) -> Result<Allowed, Status> {
        let mut facts = Facts::new(&ask, self.audit_key.clone());
        facts.privacy.purpose_registered = self.lifecycle.purposes.contains_key(&ask.purpose);
        let mut request = self.validate(identity, &ask, &mut facts).await?;
        let plan = self.plan(&ask, &request.parsed, &mut facts).await?;
        let authorized = self.authorize(&ask, &request, &plan, &mut facts).await?;
        if let Some(resume) = &mut request.resume {
            self.rewind(resume, &facts).await?;
        }
        self.record(&ask, request, plan, authorized, facts).await
    }

    /// Step 1: who asks (from the certificate), within its limit, with a
    /// request that parses, as a registered agency.
    async fn validate(
        &self,
        identity: Result<Identity, Status>,
        ask: &Ask,
        facts: &mut Facts,
    ) -> Result<Validated, Status> {
        let identity = match identity {
            Ok(id) => id,
            Err(status) => {
                self.learn_dataset(facts, &ask.dataset).await;
                let mut e =
                    facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
                e.error = Some(status.message().to_owned());
                self.journal.refused(facts, e).await?;
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
                self.learn_dataset(facts, &ask.dataset).await;
                return Err(self.deny(facts, vec![denial]).await);
            }
        };
        facts.consumer = Some(consumer.clone());
        let slot = match self.replica.open(&facts.exchange_id, &consumer).await {
            Ok(slot) => slot,
            Err(NotOpened::Store(err)) => return Err(ExchangeError::store(err).into()),
            Err(NotOpened::Full(limit)) => {
                self.learn_dataset(facts, &ask.dataset).await;
                let err = ExchangeError::Exhausted(format!(
                    "agency {consumer} has {limit} exchanges running on the brokers sharing this store: the limit max_streams_per_agency"
                ));
                return Err(self.refused(facts, err).await);
            }
            Err(NotOpened::LeaseLost) => {
                self.learn_dataset(facts, &ask.dataset).await;
                return Err(self.refused(facts, ExchangeError::LeaseLost).await);
            }
        };
        let parsed = match parse(ask) {
            Ok(p) => p,
            Err(err) if err.field == "document" => {
                // the document's words may quote any of it: the log says
                // only that it does not parse
                let logged = "invalid document: the candidate mapping document does not parse";
                return Err(self.invalid_logged(facts, err, logged).await);
            }
            Err(err) => {
                self.learn_dataset(facts, &ask.dataset).await;
                return Err(self.invalid(facts, err).await);
            }
        };
        facts.filter = parsed.filter.clone();
        if let Some(key) = &parsed.key {
            facts.subject_hash = Some(self.subject_hash(parsed.dataset.as_str(), key));
        }
        let subjects: std::collections::BTreeSet<String> = parsed
            .batch
            .iter()
            .map(|(key, _)| self.subject_hash(parsed.dataset.as_str(), key))
            .collect();
        facts.batch_subjects = subjects.into_iter().collect();
        // after the subject hash, so that "who looked this resident up?"
        // also finds attempts by agencies that are not registered
        if let Err(unregistered) = self.members.check(&consumer) {
            let denial = Denial::new(DenialCode::UnregisteredAgency, unregistered.to_string());
            return Err(self.deny(facts, vec![denial]).await);
        }
        let resume = if ask.operation == "subscribe" {
            // the batch size is no record limit
            facts.limit = None;
            match Resume::from_request(&self.cursors, ask, &consumer, &parsed.dataset) {
                Ok(resume) => {
                    facts.subscription = Some(resume.mark(&self.audit_key, &parsed.dataset));
                    Some(resume)
                }
                Err(err) => return Err(self.invalid(facts, err).await),
            }
        } else {
            None
        };
        Ok(Validated {
            consumer,
            slot,
            parsed,
            resume,
        })
    }

    /// Step 2: the dataset, and the request in the provider's names.
    async fn plan(&self, ask: &Ask, parsed: &Parsed, facts: &mut Facts) -> Result<Plan, Status> {
        let policy = self
            .policy
            .version(&self.store)
            .await
            .map_err(ExchangeError::store)?;
        let dataset = match self
            .policy
            .dataset(&self.store, policy, &parsed.dataset)
            .await
        {
            Ok(Some(d)) => {
                self.know_dataset(facts, &parsed.dataset);
                d
            }
            Ok(None) => {
                let denial = Denial::new(
                    DenialCode::UnknownDataset,
                    format!("there is no dataset {}", parsed.dataset),
                );
                return Err(self.deny(facts, vec![denial]).await);
            }
            Err(err) => return Err(ExchangeError::store(err).into()),
        };
        let subscribe = ask.operation == "subscribe";
        let key_field = match (parsed.by_key() || subscribe, &dataset.key_field) {
            (false, _) => None,
            (true, Some(field)) => Some(
                field
                    .parse::<FieldName>()
                    .map_err(|_| ExchangeError::KeyField)?,
            ),
            (true, None) => {
                let err = if subscribe {
                    ExchangeError::NoSubscriptions(dataset.id.to_string())
                } else {
                    ExchangeError::NoLookups(dataset.id.to_string())
                };
                let mut e =
                    facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
                e.error = Some(err.to_string());
                self.journal.refused(facts, e).await?;
                return Err(err.into());
            }
        };
        let key_filter = match (&parsed.key, &key_field) {
            (Some(key), Some(field)) => Some(Filter::Predicate(
                jembatan_core::Predicate::new(
                    field.clone(),
                    Operator::Eq,
                    Some(key.clone()),
                    vec![],
                )
                .map_err(Status::from)?,
            )),
            _ => None,
        };
        let mut parts = Vec::new();
        if let (false, Some(field)) = (parsed.batch.is_empty(), &key_field) {
            let mut distinct: Vec<&Scalar> = Vec::with_capacity(parsed.batch.len());
            let mut seen = std::collections::HashSet::with_capacity(parsed.batch.len());
            for (key, _) in &parsed.batch {
                if seen.insert(key.to_json().to_string()) {
                    distinct.push(key);
                }
            }
            for chunk in distinct.chunks(jembatan_core::limits::MAX_IN_VALUES) {
                let values = chunk.iter().map(|k| (*k).clone()).collect();
                parts.push(Filter::Predicate(
                    jembatan_core::Predicate::new(field.clone(), Operator::In, None, values)
                        .map_err(Status::from)?,
                ));
            }
        }
        let mut plan = Plan {
            policy,
            fields: parsed.fields.clone(),
            consumer_filter: parsed.filter.clone(),
            key_field,
            parts,
            key_filter,
            translation: None,
        };
        if !ask.target_schema.is_empty() {
            self.translate(ask, parsed, facts, &mut plan).await?;
        }
        Ok(plan)
    }

    /// Step 2, in another schema: the consumer's fields and filter are in
    /// its names; the provider is asked for the columns the mapping reads
    /// and for the part of the filter that maps back exactly.
    async fn translate(
        &self,
        ask: &Ask,
        parsed: &Parsed,
        facts: &mut Facts,
        plan: &mut Plan,
    ) -> Result<(), Status> {
        let found = match &parsed.candidate {
            Some(candidate) => self.registry.candidate(candidate.clone()).await.map(Some),
            None => {
                self.registry
                    .translator(&parsed.dataset, &ask.target_schema)
                    .await
            }
        };
        let translator = match found {
            Ok(Some(t)) => t,
            // the dataset's own schema: nothing to translate
            Ok(None) => return Ok(()),
            Err(Refusal::Denied(denial)) => {
                return Err(self.deny(facts, vec![denial]).await);
            }
            Err(Refusal::Invalid(RegistryError::Store(err))) => {
                return Err(ExchangeError::store(err).into());
            }
            Err(Refusal::Invalid(err)) if parsed.candidate.is_some() => {
                // the candidate's words may quote any of it: the log says
                // only why it cannot be tested
                let logged = match &err {
                    RegistryError::MappingRejected(errors) => format!(
                        "invalid document: the candidate mapping does not type-check against {} and {} ({} errors)",
                        ask.dataset,
                        ask.target_schema,
                        errors.len()
                    ),
                    _ => "invalid document: the candidate mapping cannot be tested".to_owned(),
                };
                let err = InvalidArgument::new("document", err.to_string());
                return Err(self.invalid_logged(facts, err, &logged).await);
            }
            Err(Refusal::Invalid(err)) => {
                let err = InvalidArgument::new("target_schema", err.to_string());
                return Err(self.invalid(facts, err).await);
            }
        };
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
            return Err(self.invalid(facts, err).await);
        }
        facts.translation = Some(translator.trail());
        let pushed = match &parsed.filter {
            Some(f) => translator.mapping.push_down(f),
            None => jembatan_mapping::PushDown {
                source: None,
                residual: None,
            },
        };
        if ask.operation == "subscribe" && pushed.residual.is_some() {
            // the adapter must tell in and out of scope apart, for the
            // old and the new version of a row alike
            let err = InvalidArgument::new(
                "filter",
                format!(
                    "a subscription's filter must map back to {}'s fields: filter on fields the mapping copies, not on ones it computes",
                    parsed.dataset
                ),
            );
            return Err(self.invalid(facts, err).await);
        }
        let mut source_fields = Vec::new();
        for f in &translator.source_fields {
            source_fields.push(
                f.parse::<FieldName>()
                    .map_err(|_| ExchangeError::MappingField)?,
            );
        }
        plan.fields = source_fields;
        plan.consumer_filter = pushed.source;
        plan.translation = Some(Translation {
            residual: pushed.residual,
            fields: parsed.fields.iter().map(|f| f.to_string()).collect(),
            limit: ask.limit,
            translator,
        });
        Ok(())
    }

    /// Step 3: the agreement that allows every term, a slot for a query's
    /// stream, and the agreement's quotas.
    async fn authorize(
        &self,
        ask: &Ask,
        request: &Validated,
        plan: &Plan,
        facts: &mut Facts,
    ) -> Result<Authorized, Status> {
        let (consumer, parsed) = (&request.consumer, &request.parsed);
        let agreements = self
            .policy
            .agreements_for(&self.store, plan.policy, consumer, &parsed.dataset)
            .await
            .map_err(ExchangeError::store)?;
        // what the consumer's agreements grant and cover are identifiers
        for a in agreements.iter() {
            facts
                .privacy
                .known_fields
                .extend(a.fields.iter().map(|g| g.field.to_string()));
            if a.purpose == ask.purpose {
                facts.privacy.purpose_registered = true;
            }
        }
        let filter_uses: Vec<(&FieldName, Operator)> = plan
            .consumer_filter
            .as_ref()
            .map(|f| {
                f.predicates()
                    .into_iter()
                    .map(|p| (&p.field, p.op))
                    .collect()
            })
            .unwrap_or_default();
        let key = plan.key_field.as_ref();
        let now = chrono::Utc::now();
        let policy_request = policy::Request {
            consumer,
            dataset: &parsed.dataset,
            purpose: &ask.purpose,
            fields: &plan.fields,
            filter_uses,
            key,
            verify: parsed.verified_fields(),
            subscribe: ask.operation == "subscribe",
            now,
        };
        let grant = match policy::evaluate(&policy_request, &agreements) {
            Ok(grant) => grant,
            Err(denials) => {
                if let Some(id) = denials.iter().find_map(|d| d.agreement_id.clone())
                    && let Some(a) = agreements.iter().find(|a| a.id == id)
                {
                    facts.agreement = Some((a.id.clone(), a.terms_sha256()));
                }
                return Err(self.deny(facts, denials).await);
            }
        };
        facts.agreement = Some((grant.agreement.id.clone(), grant.agreement.terms_sha256()));
        facts.fields = grant.fields.iter().map(|f| f.to_string()).collect();
        // taken once the request is allowed (the provider is then one the
        // broker knows) and before the quota, so a refusal takes nothing
        let provider_slot = match ask.operation {
            "query" | "mapping_test" => {
                let provider = parsed.dataset.agency();
                match self
                    .replica
                    .take_provider_stream(&request.slot, consumer, &provider)
                    .await
                {
                    Ok(slot) => Some(slot),
                    Err(NotOpened::Full(limit)) => {
                        let err = ExchangeError::Exhausted(format!(
                            "agency {consumer} has {limit} query streams open against provider {provider} on the brokers sharing this store: the limit max_streams_per_provider"
                        ));
                        return Err(self.refused(facts, err).await);
                    }
                    Err(NotOpened::LeaseLost) => {
                        return Err(self.refused(facts, ExchangeError::LeaseLost).await);
                    }
                    Err(NotOpened::Store(err)) => {
                        return Err(self.refused(facts, ExchangeError::store(err)).await);
                    }
                }
            }
            _ => None,
        };
        // a batch counts each key against the quotas
        let keys = parsed.batch.len().max(1) as u64;
        if let Some(denial) = self.admit_quota(&grant.agreement, now, keys).await? {
            return Err(self.deny(facts, vec![denial]).await);
        }
        Ok(Authorized {
            grant,
            provider_slot,
        })
    }

    /// Step 4: the allow decision entry, durable; then what to fetch from
    /// the provider and what to do to each record before it leaves.
    async fn record(
        &self,
        ask: &Ask,
        request: Validated,
        plan: Plan,
        authorized: Authorized,
        mut facts: Facts,
    ) -> Result<Allowed, Status> {
        let Validated {
            consumer,
            slot,
            parsed,
            resume,
        } = request;
        let Authorized {
            grant,
            provider_slot,
        } = authorized;
        let verify_fields = parsed.verified_fields();
        let mut fetch_fields = grant.fetch_fields(&verify_fields);
        // a batch finds each key's record by its key field
        if let (false, Some(key)) = (parsed.batch.is_empty(), &plan.key_field)
            && !fetch_fields.contains(key)
        {
            fetch_fields.push(key.clone());
        }
        // a batch compares each key's values itself (see the relay)
        let shapes = parsed.batch.is_empty();
        let shape =
            (shapes && (!grant.masks.is_empty() || !parsed.verify.is_empty())).then(|| Shape {
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
            .extend(verify_fields.iter().map(|f| format!("verify:{f}")));
        // a lookup's answer is one message, a batch's is computed whole:
        // the decision is written with it, in one entry, before it leaves
        let (decision_seq, end) = if parsed.by_key() {
            (None, self.journal.defer(&facts, slot)?)
        } else {
            let (seq, end) = self.journal.begin(&facts, slot).await?;
            (Some(seq), end)
        };

        let filter = Filter::and(
            grant
                .agreement
                .row_filter
                .iter()
                .cloned()
                .chain(plan.consumer_filter)
                .chain(plan.key_filter),
        );
        let limit = if parsed.key.is_some() {
            2
        } else if !plan.parts.is_empty() {
            // one record per distinct key; one more shows a key that is
            // not unique
            let distinct: usize = plan
                .parts
                .iter()
                .map(|p| match p {
                    Filter::Predicate(p) => p.values.len(),
                    _ => 0,
                })
                .sum();
            distinct as u64 + 1
        } else if plan
            .translation
            .as_ref()
            .is_some_and(|t| t.residual.is_some())
        {
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
            parts: plan.parts.iter().map(Filter::to_proto).collect(),
        };
        Ok(Allowed {
            provider: parsed.dataset.agency(),
            dataset: parsed.dataset,
            facts,
            decision_seq,
            admit: Arc::new(Admit::new(fetch.columns.clone(), shape, plan.translation)),
            fetch,
            agreement: grant.agreement,
            held: Some(Held {
                provider: provider_slot,
            }),
            end,
            deadline: None,
            batch: parsed.batch,
            key_field: plan.key_field,
            resume,
            policy: plan.policy,
        })
    }

    /// A subscription resumed from a cursor finds what it holds as it
    /// was when the cursor was issued (a new one starts empty); one the
    /// store cannot resume is refused, on the log.
    async fn rewind(&self, resume: &mut Resume, facts: &Facts) -> Result<(), Status> {
        use jembatan_store::Resumed;
        let why = match self.store.resume_subscription(&resume.id, resume.batch).await {
            Ok(Resumed::Ready { generation }) => {
                resume.generation = generation;
                return Ok(());
            }
            Ok(Resumed::Unknown) => "this broker's store does not know the cursor's subscription (it was forgotten, or the cursor comes from another deployment): start a new subscription without a cursor".to_owned(),
            Ok(Resumed::TooOld { horizon }) => format!(
                "the cursor is older than the subscription's resumable history (batch {} and later can be resumed, this cursor is of batch {}): start a new subscription without a cursor",
                horizon, resume.batch
            ),
            Ok(Resumed::Ahead { last }) => format!(
                "the cursor names batch {} but the store recorded only {last}: the broker's store lost writes; start a new subscription without a cursor",
                resume.batch
            ),
            Err(err) => return Err(self.refused(facts, ExchangeError::store(err)).await),
        };
        Err(self
            .refused(facts, ExchangeError::CursorNotResumable(why))
            .await)
    }

    /// Keyed hash of a lookup key: what the audit log keeps instead of it.
    fn subject_hash(&self, dataset: &str, key: &Scalar) -> String {
        scalar_subject_hash(&self.audit_key, dataset, key)
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

    /// Checks an allowed request against its agreement's quotas and takes
    /// `keys` requests (one, or a batch's keys) from the per-minute quota.
    /// A denial takes nothing: the daily rows are only read, and the
    /// requests are taken last.
    async fn admit_quota(
        &self,
        agreement: &Agreement,
        now: chrono::DateTime<chrono::Utc>,
        keys: u64,
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
            // one row is enough for a query to start; a batch needs one
            // per key
            let wanted = if keys > 1 { keys } else { 1 };
            if used.saturating_add(wanted) > quota.rows_per_day {
                let what = if keys > 1 {
                    format!(" and {keys} keys are asked for")
                } else {
                    String::new()
                };
                return Ok(Some(
                    Denial::new(
                        DenialCode::QuotaExhausted,
                        format!(
                            "agreement {} allows {} rows per day and {used} were delivered today (UTC {day}){what}",
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
                    keys,
                    quota.requests_per_minute,
                )
                .await
                .map_err(unavailable)?;
            if !taken {
                return Ok(Some(
                    Denial::new(
                        DenialCode::QuotaExhausted,
                        if keys > 1 {
                            format!(
                                "agreement {} allows {} requests per minute, and {keys} more (one per key) do not fit in minute {minute} UTC",
                                agreement.id, quota.requests_per_minute
                            )
                        } else {
                            format!(
                                "agreement {} allows {} requests per minute, all taken in minute {minute} UTC",
                                agreement.id, quota.requests_per_minute
                            )
                        },
                    )
                    .agreement(&agreement.id),
                ));
            }
        }
        Ok(None)
    }

    /// Records a request refused before policy for a limit (exchanges per
    /// agency, streams per provider) or because this replica's lease is
    /// not current, and builds its status.
    async fn refused(&self, facts: &Facts, err: ExchangeError) -> Status {
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
        e.error = Some(err.to_string());
        match self.journal.refused(facts, e).await {
            Ok(_) => err.into(),
            Err(status) => status,
        }
    }

    /// Records an invalid request and builds its `InvalidArgument` status.
    async fn invalid(&self, facts: &Facts, err: InvalidArgument) -> Status {
        let words = err.to_string();
        self.invalid_logged(facts, err, &words).await
    }

    /// Records an invalid request with the words `logged` instead of the
    /// error's own, and builds its `InvalidArgument` status.
    async fn invalid_logged(&self, facts: &Facts, err: InvalidArgument, logged: &str) -> Status {
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Invalid);
        e.error = Some(logged.to_owned());
        match self.journal.refused(facts, e).await {
            Ok(_) => err.into(),
            Err(status) => status,
        }
    }

    /// Records a denial and builds the `PermissionDenied` status for it.
    async fn deny(&self, facts: &Facts, reasons: Vec<Denial>) -> Status {
        let mut e = facts.entry(EntryKind::Decision, Decision::Deny, ExchangeStatus::Denied);
        e.reasons = reasons.clone();
        let seq = match self.journal.refused(facts, e).await {
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
