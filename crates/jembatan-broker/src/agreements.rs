//! The agreement lifecycle: the gRPC `Agreements` service, the audit
//! entries of each step, and the watcher that expires agreements and
//! tells running exchanges when one stops being in force.
//!
//! Every step is written to the audit log before it takes effect in the
//! store, and refused attempts are written too. A status change is
//! compare-and-set on the status the step started from, so concurrent
//! steps (on this replica or another) cannot both apply; a step whose
//! entry is on the log but whose store update then fails gets a second
//! entry saying it did not take effect.
//!
//! Only registered agencies act (`members.rs`), and an agreement may name
//! only columns its provider's adapter serves: the adapter's whitelist
//! (`Adapter.Describe`) is asked at proposal and again at approval, where
//! an adapter that cannot be asked refuses the approval (fail closed).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jembatan_core::agreement::{MAX_REASON_BYTES, format_instant};
use jembatan_core::{
    AccessMode, Action, AgencyId, AgreementChange, AgreementStatus, AuditEntry, DatasetId,
    Decision, EntryKind, ErrorCode, ExchangeStatus, FieldGrant, FieldName, Filter, Identity,
    InvalidArgument, MaskRule, Quota, Role, ServiceError, TransitionError,
};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::agreements_server;
use jembatan_store::{AgreementFilter, StoreError};
use tonic::{Request, Response, Status};

use crate::members::Unregistered;
use crate::state::State;

/// The gRPC `Agreements` service; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgreementsService {
    state: Arc<State>,
}

impl AgreementsService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

/// Why an agreement call or lifecycle step is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgreementError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("the broker store is unavailable: {0}")]
    Store(StoreError),
    /// The caller's agency is not registered.
    #[error(transparent)]
    Unregistered(Unregistered),
    /// One of the agreement's agencies is not registered.
    #[error(transparent)]
    PartyUnregistered(Unregistered),
    #[error("{0}: it cannot be approved")]
    NotApprovable(Unregistered),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("there is no agreement {0:?}")]
    NoAgreement(String),
    #[error("there is no agreement {id:?} visible to {by}")]
    NotVisible { id: String, by: Identity },
    #[error("there is no dataset {0}")]
    NoDataset(DatasetId),
    #[error("agreements are proposed by the consuming agency's certificate, not a {0} certificate")]
    NotAConsumer(Role),
    #[error("a {0} certificate cannot read agreements")]
    CannotRead(Role),
    #[error("this broker has no registered purposes, so no agreement can be proposed")]
    NoPurposes,
    #[error("purpose {purpose:?} is not a registered legal basis (registered: {known})")]
    UnregisteredPurpose { purpose: String, known: String },
    #[error(
        "provider {0} has no adapter registered with this broker, so the agreement's columns cannot be checked against its whitelist"
    )]
    NoAdapter(AgencyId),
    /// The adapter could not be asked; why goes to the log.
    #[error("provider {provider}'s adapter could not be asked for its whitelist: {status}")]
    AdapterNotAsked {
        provider: AgencyId,
        status: Box<Status>,
    },
    #[error(
        "provider {provider}'s adapter does not serve dataset {dataset} (its whitelist has no such dataset)"
    )]
    DatasetNotServed {
        provider: AgencyId,
        dataset: DatasetId,
    },
    #[error(
        "provider {provider}'s adapter does not whitelist the {missing} of {dataset}; it serves {served}"
    )]
    ColumnsNotServed {
        provider: AgencyId,
        missing: String,
        dataset: DatasetId,
        served: String,
    },
    /// The whitelist could not be checked when approving: fail closed.
    #[error(
        "{0}; the approval is refused until the adapter confirms it serves every column the agreement names"
    )]
    Unconfirmed(Box<AgreementError>),
    #[error("{0} already exists")]
    Exists(String),
    /// The store refused an insert of what exists already.
    #[error("{0}")]
    Conflict(String),
    /// The proposer may not propose these terms.
    #[error("{0}")]
    NotProposer(TransitionError),
    /// Another step changed the agreement first.
    #[error("{0}; read it again")]
    Changed(String),
}

impl ServiceError for AgreementError {
    fn code(&self) -> ErrorCode {
        use AgreementError as E;
        match self {
            E::Invalid(_) => ErrorCode::InvalidArgument,
            E::Store(_) | E::AdapterNotAsked { .. } => ErrorCode::Unavailable,
            E::Unregistered(_) | E::NotProposer(_) | E::NotAConsumer(_) | E::CannotRead(_) => {
                ErrorCode::PermissionDenied
            }
            E::Transition(TransitionError::NotAllowed(_)) => ErrorCode::PermissionDenied,
            E::Transition(TransitionError::WrongState(_))
            | E::PartyUnregistered(_)
            | E::NotApprovable(_)
            | E::NoPurposes
            | E::UnregisteredPurpose { .. }
            | E::NoAdapter(_)
            | E::DatasetNotServed { .. }
            | E::ColumnsNotServed { .. } => ErrorCode::FailedPrecondition,
            E::NoAgreement(_) | E::NotVisible { .. } | E::NoDataset(_) => ErrorCode::NotFound,
            E::Unconfirmed(why) => why.code(),
            E::Exists(_) | E::Conflict(_) => ErrorCode::AlreadyExists,
            E::Changed(_) => ErrorCode::Aborted,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        use AgreementError as E;
        match self {
            E::Store(_) => Cow::Borrowed("the broker store is unavailable"),
            E::AdapterNotAsked { provider, .. } => Cow::Owned(format!(
                "provider {provider}'s adapter could not be asked for its whitelist"
            )),
            E::Unconfirmed(why) => Cow::Owned(format!(
                "{}; the approval is refused until the adapter confirms it serves every column the agreement names",
                why.public_message()
            )),
            other => Cow::Owned(other.to_string()),
        }
    }
}

impl From<AgreementError> for Status {
    fn from(err: AgreementError) -> Status {
        jembatan_core::error::status(&err)
    }
}

fn store_unavailable(err: StoreError) -> AgreementError {
    AgreementError::Store(err)
}

/// How an agreement's columns stand against its provider's whitelist.
enum Whitelist {
    /// The adapter serves every column the agreement names.
    Served,
    /// The adapter could not be asked; the error says why.
    Unknown(AgreementError),
}

/// A lifecycle step (or an attempt at one), as the audit log records it.
struct Step<'a> {
    caller: &'a str,
    action: Action,
    /// The terms after the step (before it, when refused), when known.
    agreement: Option<&'a jembatan_core::Agreement>,
    id: &'a str,
    from: Option<AgreementStatus>,
    to: Option<AgreementStatus>,
    reason: Option<String>,
}

/// The audit entry of a lifecycle step, or of a refused attempt at one
/// (`refused`: how and why).
fn step_entry(step: Step<'_>, refused: Option<(ExchangeStatus, String)>) -> AuditEntry {
    let Step {
        caller,
        action,
        agreement,
        id,
        from,
        to,
        reason,
    } = step;
    let (decision, status, error) = match refused {
        None => (Decision::Allow, ExchangeStatus::Ok, None),
        Some((status, message)) => (Decision::Deny, status, Some(message)),
    };
    AuditEntry {
        v: jembatan_core::audit::ENTRY_FORMAT_VERSION,
        kind: EntryKind::Agreement,
        exchange_id: uuid::Uuid::now_v7().to_string(),
        time: format_instant(&Utc::now()),
        operation: format!("agreement.{action}"),
        caller: caller.to_owned(),
        consumer: agreement.map(|a| a.consumer.to_string()),
        provider: agreement.map(|a| a.provider.to_string()),
        dataset: agreement.map(|a| a.dataset.to_string()),
        purpose: agreement.map(|a| a.purpose.clone()),
        fields: agreement
            .map(|a| a.fields.iter().map(|g| g.field.to_string()).collect())
            .unwrap_or_default(),
        filter: agreement
            .and_then(|a| a.row_filter.as_ref())
            .and_then(|f| serde_json::to_value(f).ok()),
        subject_hash: None,
        subjects: Vec::new(),
        unregistered_purpose: None,
        limit: None,
        agreement_id: Some(jembatan_core::ids::truncate(id, 128).to_owned()),
        agreement_terms_sha256: agreement.map(|a| a.terms_sha256()),
        translation: None,
        decision,
        reasons: Vec::new(),
        status,
        rows: 0,
        bytes: 0,
        payload_sha256: None,
        received: None,
        duration_ms: None,
        error,
        trace_id: None,
        adapter_endpoint: None,
        change: Some(AgreementChange {
            action: action.as_str().to_owned(),
            from: from.map(|s| s.as_str().to_owned()),
            to: to.map(|s| s.as_str().to_owned()),
            reason,
        }),
        registry: None,
        subscription: None,
    }
}

impl State {
    /// Writes a refused step to the audit log and returns `status`.
    async fn refuse_step(
        &self,
        caller: &str,
        action: Action,
        agreement: Option<&jembatan_core::Agreement>,
        id: &str,
        err: AgreementError,
    ) -> Status {
        let how = if err.code() == ErrorCode::InvalidArgument {
            ExchangeStatus::Invalid
        } else {
            ExchangeStatus::Denied
        };
        let status = Status::from(err);
        let at = agreement.map(|a| a.status);
        let entry = step_entry(
            Step {
                caller,
                action,
                agreement,
                id,
                from: at,
                to: at,
                reason: None,
            },
            Some((how, status.message().to_owned())),
        );
        match self.record_step(entry).await {
            Ok(_) => status,
            Err(unavailable) => unavailable,
        }
    }

    /// Records that a step whose entry (`entry`) is on the log did not take
    /// effect in the store: an entry of its own, with the step's exchange
    /// id and change, status `failed` and the reason. Returns `status`, or
    /// `Unavailable` when even that entry cannot be written.
    async fn step_failed(&self, entry: &AuditEntry, why: &str, err: AgreementError) -> Status {
        let status = Status::from(err);
        let mut failed = entry.clone();
        failed.time = format_instant(&Utc::now());
        failed.status = ExchangeStatus::Failed;
        failed.error = Some(format!("the step did not take effect: {why}"));
        tracing::warn!(
            agreement = entry.agreement_id.as_deref().unwrap_or_default(),
            operation = %entry.operation,
            exchange_id = %entry.exchange_id,
            reason = why,
            "agreement step logged but not applied"
        );
        match self.record_step(failed).await {
            Ok(_) => status,
            Err(unavailable) => unavailable,
        }
    }

    /// Checks that the provider's adapter serves every column agreement
    /// `a` names — its granted fields and its row filter's fields — as the
    /// adapter's `Describe` tells. Refuses (`FailedPrecondition`) naming
    /// the dataset, or each column, it does not serve; `Unknown` when the
    /// adapter cannot be asked.
    async fn check_whitelist(
        &self,
        a: &jembatan_core::Agreement,
    ) -> Result<Whitelist, AgreementError> {
        let endpoints = self
            .store
            .agency(&a.provider)
            .await
            .map_err(store_unavailable)?
            .map(|agency| agency.adapter_endpoints)
            .unwrap_or_default();
        if endpoints.is_empty() {
            return Ok(Whitelist::Unknown(AgreementError::NoAdapter(
                a.provider.clone(),
            )));
        }
        let described = match self.adapters.describe(&endpoints, &a.provider).await {
            Ok(d) => d,
            Err(status) => {
                return Ok(Whitelist::Unknown(AgreementError::AdapterNotAsked {
                    provider: a.provider.clone(),
                    status: Box::new(status),
                }));
            }
        };
        let Some(dataset) = described
            .datasets
            .iter()
            .find(|d| d.dataset == a.dataset.as_str())
        else {
            return Err(AgreementError::DatasetNotServed {
                provider: a.provider.clone(),
                dataset: a.dataset.clone(),
            });
        };
        let served: BTreeSet<&str> = dataset.columns.iter().map(|c| c.name.as_str()).collect();
        let granted: BTreeSet<&str> = a
            .fields
            .iter()
            .map(|g| g.field.as_str())
            .filter(|f| !served.contains(f))
            .collect();
        let filtered: BTreeSet<&str> = a
            .row_filter
            .iter()
            .flat_map(|f| f.fields())
            .map(|f| f.as_str())
            .filter(|f| !served.contains(f))
            .collect();
        if granted.is_empty() && filtered.is_empty() {
            return Ok(Whitelist::Served);
        }
        let list = |set: &BTreeSet<&str>| set.iter().copied().collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !granted.is_empty() {
            parts.push(format!("granted column(s) {}", list(&granted)));
        }
        if !filtered.is_empty() {
            parts.push(format!("row filter column(s) {}", list(&filtered)));
        }
        Err(AgreementError::ColumnsNotServed {
            provider: a.provider.clone(),
            missing: parts.join(" and the "),
            dataset: a.dataset.clone(),
            served: list(&served),
        })
    }

    /// Refuses an approval the broker cannot stand behind: one whose
    /// agencies are not both registered, or — for the approval that puts
    /// it in force — whose columns the provider's adapter does not serve or
    /// cannot be asked about (fail closed).
    async fn check_approval(
        &self,
        a: &jembatan_core::Agreement,
        puts_in_force: bool,
    ) -> Result<(), AgreementError> {
        for agency in [&a.consumer, &a.provider] {
            self.members
                .check(agency)
                .map_err(AgreementError::NotApprovable)?;
        }
        if !puts_in_force {
            return Ok(());
        }
        match self.check_whitelist(a).await? {
            Whitelist::Served => Ok(()),
            Whitelist::Unknown(why) => Err(AgreementError::Unconfirmed(Box::new(why))),
        }
    }

    /// Applies `action` by `by` to agreement `id`: audit entry first, then
    /// the compare-and-set in the store, then the event for running
    /// exchanges.
    pub(crate) async fn step(
        &self,
        by: &Identity,
        action: Action,
        id: &str,
        reason: Option<String>,
    ) -> Result<jembatan_core::Agreement, Status> {
        let caller = by.to_string();
        if let Err(unregistered) = self.members.check_identity(by) {
            let err = AgreementError::Unregistered(unregistered);
            return Err(self.refuse_step(&caller, action, None, id, err).await);
        }
        let Some(current) = self.store.agreement(id).await.map_err(store_unavailable)? else {
            let err = AgreementError::NoAgreement(jembatan_core::ids::truncate(id, 128).to_owned());
            return Err(self.refuse_step(&caller, action, None, id, err).await);
        };
        let next =
            match current.next_status(action, by, self.lifecycle.operator_approval, Utc::now()) {
                Ok(next) => next,
                Err(err) => {
                    return Err(self
                        .refuse_step(&caller, action, Some(&current), id, err.into())
                        .await);
                }
            };
        if action == Action::Approve
            && let Err(err) = self
                .check_approval(&current, next == AgreementStatus::Approved)
                .await
        {
            return Err(self
                .refuse_step(&caller, action, Some(&current), id, err)
                .await);
        }
        let mut updated = current.clone();
        updated.status = next;
        let entry = step_entry(
            Step {
                caller: &caller,
                action,
                agreement: Some(&updated),
                id,
                from: Some(current.status),
                to: Some(next),
                reason,
            },
            None,
        );
        self.record_step(entry.clone()).await?;
        // the step's entry is on the log: from here a store update that
        // fails is recorded as the step's failure
        match self.store.update_agreement(&updated, current.status).await {
            Ok(()) => {}
            Err(StoreError::Conflict(message)) => {
                let why = format!("{message}: it changed while this {action} was being applied");
                let err = AgreementError::Changed(why.clone());
                return Err(self.step_failed(&entry, &why, err).await);
            }
            Err(err) => {
                return Err(self
                    .step_failed(&entry, "the broker store failed", store_unavailable(err))
                    .await);
            }
        }
        tracing::info!(agreement = id, %action, from = %current.status, to = %next, by = %caller, "agreement changed");
        self.lifecycle.publish(id, next);
        Ok(updated)
    }

    /// Records and stores a new agreement proposed by `by`.
    async fn propose(
        &self,
        by: &Identity,
        terms: pb::Agreement,
    ) -> Result<jembatan_core::Agreement, Status> {
        let caller = by.to_string();
        let wanted_id = jembatan_core::ids::truncate(&terms.id, 128).to_owned();
        if let Err(unregistered) = self.members.check_identity(by) {
            let err = AgreementError::Unregistered(unregistered);
            return Err(self
                .refuse_step(&caller, Action::Propose, None, &wanted_id, err)
                .await);
        }
        let agreement = match self.terms_from_proto(by, terms).await {
            Ok(a) => a,
            Err(err) => {
                return Err(self
                    .refuse_step(&caller, Action::Propose, None, &wanted_id, err)
                    .await);
            }
        };
        let admitted = match agreement.check_proposer(by) {
            Err(err) => Err(AgreementError::NotProposer(err)),
            Ok(()) => match self.store.agreement(&agreement.id).await {
                Ok(Some(_)) => Err(AgreementError::Exists(format!(
                    "agreement {}",
                    agreement.id
                ))),
                Ok(None) => match self.check_whitelist(&agreement).await {
                    Ok(Whitelist::Served) => Ok(()),
                    // a proposal grants nothing yet: its approval asks again
                    Ok(Whitelist::Unknown(why)) => {
                        tracing::warn!(agreement = %agreement.id, reason = %why, "proposal recorded without checking the provider's whitelist");
                        Ok(())
                    }
                    Err(err) => Err(err),
                },
                Err(err) => return Err(store_unavailable(err).into()),
            },
        };
        if let Err(err) = admitted {
            return Err(self
                .refuse_step(
                    &caller,
                    Action::Propose,
                    Some(&agreement),
                    &agreement.id,
                    err,
                )
                .await);
        }
        let entry = step_entry(
            Step {
                caller: &caller,
                action: Action::Propose,
                agreement: Some(&agreement),
                id: &agreement.id,
                from: None,
                to: Some(AgreementStatus::Proposed),
                reason: None,
            },
            None,
        );
        self.record_step(entry.clone()).await?;
        match self.store.insert_agreement(&agreement).await {
            Ok(()) => Ok(agreement),
            Err(StoreError::Conflict(message)) => {
                let err = AgreementError::Conflict(message.clone());
                Err(self.step_failed(&entry, &message, err).await)
            }
            Err(err) => Err(self
                .step_failed(&entry, "the broker store failed", store_unavailable(err))
                .await),
        }
    }

    /// Builds a proposal's agreement from its wire terms, filling in what
    /// the broker knows (consumer from the certificate, provider from the
    /// dataset, a fresh id) and checking every term.
    async fn terms_from_proto(
        &self,
        by: &Identity,
        terms: pb::Agreement,
    ) -> Result<jembatan_core::Agreement, AgreementError> {
        let bad = |field: &str, message: String| {
            AgreementError::from(InvalidArgument::new(field, message))
        };
        let dataset: DatasetId = terms
            .dataset
            .parse()
            .map_err(|e: InvalidArgument| e.within("dataset"))?;
        if self
            .store
            .dataset(&dataset)
            .await
            .map_err(store_unavailable)?
            .is_none()
        {
            return Err(AgreementError::NoDataset(dataset));
        }
        let consumer: AgencyId = if terms.consumer.is_empty() {
            by.agency
                .clone()
                .ok_or(AgreementError::NotAConsumer(by.role))?
        } else {
            terms
                .consumer
                .parse()
                .map_err(|e: InvalidArgument| e.within("consumer"))?
        };
        let provider = dataset.agency();
        for agency in [&consumer, &provider] {
            self.members
                .check(agency)
                .map_err(AgreementError::PartyUnregistered)?;
        }
        if !terms.provider.is_empty() && terms.provider != provider.as_str() {
            return Err(bad(
                "provider",
                format!(
                    "dataset {dataset} is provided by {provider}, not {}",
                    jembatan_core::ids::truncate(&terms.provider, 64)
                ),
            ));
        }
        let id = if terms.id.is_empty() {
            format!("agr-{}", uuid::Uuid::now_v7().simple())
        } else {
            terms.id.clone()
        };
        let mut fields = Vec::with_capacity(terms.fields.len());
        for (i, g) in terms.fields.iter().enumerate() {
            let at = |e: InvalidArgument| e.within(&format!("fields[{i}]"));
            let field: FieldName = g.field.parse().map_err(at)?;
            let mode = match pb::AccessMode::try_from(g.mode) {
                Ok(pb::AccessMode::Unspecified | pb::AccessMode::Read) => AccessMode::Read,
                Ok(pb::AccessMode::Verify) => AccessMode::Verify,
                Ok(pb::AccessMode::Masked) => AccessMode::Masked,
                Err(_) => {
                    return Err(bad(
                        &format!("fields[{i}].mode"),
                        format!("unknown access mode {}", g.mode),
                    ));
                }
            };
            let mask = if g.mask.is_empty() {
                None
            } else {
                Some(g.mask.parse::<MaskRule>().map_err(at)?)
            };
            fields.push(FieldGrant::new(field, mode, mask).map_err(at)?);
        }
        let time = |t: &Option<prost_types::Timestamp>| -> Option<DateTime<Utc>> {
            t.as_ref().and_then(|t| {
                DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            })
        };
        if terms.valid_from.is_some() && time(&terms.valid_from).is_none() {
            return Err(bad("valid_from", "not a representable time".into()));
        }
        if terms.valid_until.is_some() && time(&terms.valid_until).is_none() {
            return Err(bad("valid_until", "not a representable time".into()));
        }
        let now = Utc::now();
        let valid_until = time(&terms.valid_until);
        if valid_until.is_some_and(|t| t <= now) {
            return Err(bad(
                "valid_until",
                "the agreement would end before it is approved".into(),
            ));
        }
        let row_filter = terms
            .row_filter
            .as_ref()
            .map(Filter::try_from)
            .transpose()
            .map_err(|e| e.within("row_filter"))?;
        if !self.lifecycle.purposes.contains_key(&terms.purpose) {
            let known: Vec<&str> = self.lifecycle.purposes.keys().map(String::as_str).collect();
            return Err(if known.is_empty() {
                AgreementError::NoPurposes
            } else {
                AgreementError::UnregisteredPurpose {
                    purpose: jembatan_core::ids::truncate(&terms.purpose, 64).to_owned(),
                    known: known.join(", "),
                }
            });
        }
        let quota = terms.quota.unwrap_or_default();
        let agreement = jembatan_core::Agreement {
            id,
            provider,
            consumer,
            dataset,
            fields,
            purpose: terms.purpose,
            valid_from: time(&terms.valid_from).unwrap_or(now),
            valid_until,
            row_filter,
            quota: Quota {
                rows_per_day: quota.rows_per_day,
                requests_per_minute: quota.requests_per_minute,
            },
            subscribe: terms.subscribe,
            status: AgreementStatus::Proposed,
        };
        agreement.validate()?;
        Ok(agreement)
    }
}

/// An agreement as the wire shows it; an approved agreement past its end
/// shows as expired even before the watcher records it.
pub(crate) fn agreement_to_proto(
    a: &jembatan_core::Agreement,
    now: DateTime<Utc>,
) -> pb::Agreement {
    let ts = |t: &DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    };
    let status = match a.status {
        _ if !a.status.is_final() && a.has_ended(now) => pb::AgreementStatus::Expired,
        AgreementStatus::Proposed => pb::AgreementStatus::Proposed,
        AgreementStatus::ProviderApproved => pb::AgreementStatus::ProviderApproved,
        AgreementStatus::Approved => pb::AgreementStatus::Approved,
        AgreementStatus::Revoked => pb::AgreementStatus::Revoked,
        AgreementStatus::Expired => pb::AgreementStatus::Expired,
    };
    pb::Agreement {
        id: a.id.clone(),
        provider: a.provider.to_string(),
        consumer: a.consumer.to_string(),
        dataset: a.dataset.to_string(),
        fields: a
            .fields
            .iter()
            .map(|g| pb::FieldGrant {
                field: g.field.to_string(),
                mode: match g.mode {
                    AccessMode::Read => pb::AccessMode::Read,
                    AccessMode::Verify => pb::AccessMode::Verify,
                    AccessMode::Masked => pb::AccessMode::Masked,
                } as i32,
                mask: g.mask.map(|m| m.to_string()).unwrap_or_default(),
            })
            .collect(),
        purpose: a.purpose.clone(),
        valid_from: Some(ts(&a.valid_from)),
        valid_until: a.valid_until.as_ref().map(ts),
        row_filter: a.row_filter.as_ref().map(Filter::to_proto),
        quota: (!a.quota.is_unlimited()).then_some(pb::Quota {
            rows_per_day: a.quota.rows_per_day,
            requests_per_minute: a.quota.requests_per_minute,
        }),
        status: status as i32,
        terms_sha256: a.terms_sha256(),
        quota_use: None,
        subscribe: a.subscribe,
    }
}

impl State {
    /// How much of agreement `id`'s quota is used in the windows `now`
    /// falls in, as exchanges take it.
    async fn quota_use(&self, id: &str, now: DateTime<Utc>) -> Result<pb::QuotaUse, Status> {
        use jembatan_store::QuotaKind;
        let used = |kind: QuotaKind| async move {
            self.store
                .quota_used(id, kind, &kind.window(now))
                .await
                .map_err(store_unavailable)
        };
        Ok(pb::QuotaUse {
            rows_today: used(QuotaKind::RowsPerDay).await?,
            requests_this_minute: used(QuotaKind::RequestsPerMinute).await?,
        })
    }
}

fn status_from_proto(status: i32) -> Result<Option<AgreementStatus>, Status> {
    Ok(match pb::AgreementStatus::try_from(status) {
        Ok(pb::AgreementStatus::Unspecified) => None,
        Ok(pb::AgreementStatus::Proposed) => Some(AgreementStatus::Proposed),
        Ok(pb::AgreementStatus::ProviderApproved) => Some(AgreementStatus::ProviderApproved),
        Ok(pb::AgreementStatus::Approved) => Some(AgreementStatus::Approved),
        Ok(pb::AgreementStatus::Revoked) => Some(AgreementStatus::Revoked),
        Ok(pb::AgreementStatus::Expired) => Some(AgreementStatus::Expired),
        Err(_) => {
            return Err(InvalidArgument::new("status", format!("unknown status {status}")).into());
        }
    })
}

/// Whether `by` may read agreement `a`: its two agencies (their agency
/// and integrator certificates), operators and auditors.
fn may_read(by: &Identity, a: &jembatan_core::Agreement) -> bool {
    match by.role {
        Role::Operator | Role::Auditor => true,
        Role::Agency | Role::Integrator => by
            .agency
            .as_ref()
            .is_some_and(|me| *me == a.provider || *me == a.consumer),
        Role::Broker | Role::Adapter => false,
    }
}

fn check_lister(by: &Identity) -> Result<(), Status> {
    match by.role {
        Role::Operator | Role::Auditor | Role::Agency | Role::Integrator => Ok(()),
        role => Err(AgreementError::CannotRead(role).into()),
    }
}

fn revoke_reason(reason: &str) -> Result<Option<String>, InvalidArgument> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(InvalidArgument::new(
            "reason",
            format!("reason is longer than {MAX_REASON_BYTES} bytes"),
        ));
    }
    Ok((!reason.trim().is_empty()).then(|| reason.to_owned()))
}

#[tonic::async_trait]
impl agreements_server::Agreements for AgreementsService {
    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::Agreement>, Status> {
        let by = jembatan_pki::peer_identity(&request)?;
        let terms = request
            .into_inner()
            .agreement
            .ok_or_else(|| Status::from(InvalidArgument::new("agreement", "terms are required")))?;
        let a = self.state.propose(&by, terms).await?;
        Ok(Response::new(agreement_to_proto(&a, Utc::now())))
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::Agreement>, Status> {
        let by = jembatan_pki::peer_identity(&request)?;
        let id = request.into_inner().id;
        let a = self.state.step(&by, Action::Approve, &id, None).await?;
        Ok(Response::new(agreement_to_proto(&a, Utc::now())))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::Agreement>, Status> {
        let by = jembatan_pki::peer_identity(&request)?;
        let req = request.into_inner();
        let reason = match revoke_reason(&req.reason) {
            Ok(r) => r,
            Err(err) => {
                return Err(self
                    .state
                    .refuse_step(&by.to_string(), Action::Revoke, None, &req.id, err.into())
                    .await);
            }
        };
        let a = self
            .state
            .step(&by, Action::Revoke, &req.id, reason)
            .await?;
        Ok(Response::new(agreement_to_proto(&a, Utc::now())))
    }

    async fn get(
        &self,
        request: Request<pb::GetAgreementRequest>,
    ) -> Result<Response<pb::Agreement>, Status> {
        let by = jembatan_pki::peer_identity(&request)?;
        check_lister(&by)?;
        let id = request.into_inner().id;
        let found = self
            .state
            .store
            .agreement(&id)
            .await
            .map_err(store_unavailable)?;
        match found {
            // another agency's agreement reads as absent: its existence is
            // not the caller's to know
            Some(a) if may_read(&by, &a) => {
                let now = Utc::now();
                let mut found = agreement_to_proto(&a, now);
                found.quota_use = Some(self.state.quota_use(&a.id, now).await?);
                Ok(Response::new(found))
            }
            _ => Err(AgreementError::NotVisible {
                id: jembatan_core::ids::truncate(&id, 128).to_owned(),
                by,
            }
            .into()),
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListAgreementsRequest>,
    ) -> Result<Response<pb::ListAgreementsResponse>, Status> {
        let by = jembatan_pki::peer_identity(&request)?;
        check_lister(&by)?;
        let req = request.into_inner();
        let agency = |s: &str, field: &str| -> Result<Option<AgencyId>, Status> {
            (!s.is_empty())
                .then(|| {
                    s.parse()
                        .map_err(|e: InvalidArgument| e.within(field).into())
                })
                .transpose()
        };
        let filter = AgreementFilter {
            provider: agency(&req.provider, "provider")?,
            consumer: agency(&req.consumer, "consumer")?,
            dataset: (!req.dataset.is_empty())
                .then(|| {
                    req.dataset
                        .parse()
                        .map_err(|e: InvalidArgument| Status::from(e.within("dataset")))
                })
                .transpose()?,
            status: None,
        };
        let wanted = status_from_proto(req.status)?;
        let now = Utc::now();
        let listed = self
            .state
            .store
            .list_agreements(&filter)
            .await
            .map_err(store_unavailable)?;
        let mut agreements = Vec::new();
        for a in listed.iter().filter(|a| may_read(&by, a)) {
            let mut out = agreement_to_proto(a, now);
            if wanted.is_some_and(|w| status_from_proto(out.status).ok().flatten() != Some(w)) {
                continue;
            }
            out.quota_use = Some(self.state.quota_use(&a.id, now).await?);
            agreements.push(out);
        }
        Ok(Response::new(pb::ListAgreementsResponse { agreements }))
    }
}

/// Watches the store for agreements changed by other replicas (or by
/// time) and tells running exchanges; expires agreements whose window
/// ended, with an audit entry each; prunes old quota windows.
#[derive(Debug, Default)]
pub(crate) struct Watcher {
    known: HashMap<String, AgreementStatus>,
    /// The latest `updated_at` seen on the change feed.
    since: String,
    ticks: u64,
}

impl Watcher {
    /// One round: the change feed, the expiry sweep, and now and then the
    /// pruning of old quota counters.
    pub(crate) async fn tick(&mut self, state: &State) {
        let broker = Identity {
            role: Role::Broker,
            agency: None,
        };
        self.ticks += 1;
        let now = Utc::now();
        // changes made through another replica
        match state.store.agreement_changes(&self.since).await {
            Ok(changes) => {
                let first = self.since.is_empty();
                for c in changes {
                    if self.known.insert(c.id.clone(), c.status) != Some(c.status) && !first {
                        state.lifecycle.publish(&c.id, c.status);
                    }
                    // rows updated in the same microsecond as the last one
                    // seen are read again next time: >= on the stamp
                    self.since = self.since.clone().max(c.updated_at);
                }
            }
            Err(err) => tracing::warn!(error = %err, "agreement change feed failed"),
        }
        // agreements whose window ended
        match state
            .store
            .list_agreements(&AgreementFilter::default())
            .await
        {
            Ok(all) => {
                for a in all
                    .iter()
                    .filter(|a| !a.status.is_final() && a.has_ended(now))
                {
                    match state.step(&broker, Action::Expire, &a.id, None).await {
                        Ok(_) => tracing::info!(agreement = %a.id, "agreement expired"),
                        Err(status) => {
                            tracing::warn!(agreement = %a.id, error = %status, "could not record expiry")
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "agreement expiry sweep failed"),
        }
        if self.ticks % 600 == 1 {
            let day = jembatan_store::QuotaKind::RowsPerDay.window(now - chrono::Duration::days(2));
            let minute = jembatan_store::QuotaKind::RequestsPerMinute
                .window(now - chrono::Duration::minutes(2));
            if let Err(err) = state.store.prune_quota_windows(&day, &minute).await {
                tracing::warn!(error = %err, "pruning quota counters failed");
            }
        }
    }
}

/// Runs `watcher` every `every` until aborted.
pub(crate) async fn watch(state: Arc<State>, mut watcher: Watcher, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // the first tick completes at once; the caller already ran one round
    interval.tick().await;
    loop {
        interval.tick().await;
        watcher.tick(&state).await;
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn agreement_errors_become_statuses_in_one_place() {
        let prov: AgencyId = "prov".parse().expect("agency id");
        let dataset: DatasetId = "prov.penduduk".parse().expect("dataset id");
        let not_asked = || AgreementError::AdapterNotAsked {
            provider: prov.clone(),
            status: Box::new(Status::unavailable("connection refused by 10.0.0.5")),
        };
        let cases: Vec<(&str, AgreementError, Code, String)> = vec![
            (
                "a store error stays in the log",
                AgreementError::Store(StoreError::AuditUnavailable("pool closed".into())),
                Code::Unavailable,
                "the broker store is unavailable".into(),
            ),
            (
                "a step the caller has no say over",
                TransitionError::NotAllowed("only the provider approves first".into()).into(),
                Code::PermissionDenied,
                "only the provider approves first".into(),
            ),
            (
                "a step from the wrong state",
                TransitionError::WrongState("agreement agr-1 is revoked".into()).into(),
                Code::FailedPrecondition,
                "agreement agr-1 is revoked".into(),
            ),
            (
                "an unregistered party cannot be approved",
                AgreementError::NotApprovable(Unregistered("luar".parse().expect("agency id"))),
                Code::FailedPrecondition,
                format!("{}: it cannot be approved", Unregistered("luar".parse().expect("agency id"))),
            ),
            (
                "an adapter that cannot be asked",
                not_asked(),
                Code::Unavailable,
                "provider prov's adapter could not be asked for its whitelist".into(),
            ),
            (
                "an approval fails closed with the reason's code",
                AgreementError::Unconfirmed(Box::new(not_asked())),
                Code::Unavailable,
                "provider prov's adapter could not be asked for its whitelist; the approval is refused until the adapter confirms it serves every column the agreement names".into(),
            ),
            (
                "columns off the whitelist",
                AgreementError::ColumnsNotServed {
                    provider: prov.clone(),
                    missing: "granted column(s) gaji".into(),
                    dataset: dataset.clone(),
                    served: "nik, nama".into(),
                },
                Code::FailedPrecondition,
                "provider prov's adapter does not whitelist the granted column(s) gaji of prov.penduduk; it serves nik, nama".into(),
            ),
            (
                "a concurrent change",
                AgreementError::Changed("agreement agr-1 changed".into()),
                Code::Aborted,
                "agreement agr-1 changed; read it again".into(),
            ),
            (
                "an existing id",
                AgreementError::Exists("agreement agr-1".into()),
                Code::AlreadyExists,
                "agreement agr-1 already exists".into(),
            ),
            (
                "no such dataset",
                AgreementError::NoDataset(dataset),
                Code::NotFound,
                "there is no dataset prov.penduduk".into(),
            ),
            (
                "a bad field",
                InvalidArgument::new("valid_until", "not a representable time").into(),
                Code::InvalidArgument,
                "invalid valid_until: not a representable time".into(),
            ),
        ];
        for (name, err, code, message) in cases {
            let status = Status::from(err);
            assert_eq!(
                (status.code(), status.message()),
                (code, message.as_str()),
                "{name}"
            );
        }
    }
}
