//! The schema registry: each dataset's JSON Schema versions, their
//! compatibility rules, and the mappings that translate records between
//! schemas — and, for the exchange, the [`Translator`] that applies one.
//!
//! Writes are judged here before anything is stored: a schema must be a
//! valid 2020-12 document compatible with the dataset's earlier versions
//! under its mode; a mapping must type-check against both schemas. The
//! store only keeps what passed, and only once the write's audit entry is
//! durable (`registry_log.rs`); refused writes are on the log too.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use jembatan_core::AuditEntry;
use jembatan_core::{
    DatasetId, Denial, DenialCode, ErrorCode, Filter, Identity, Role, ServiceError,
};
use jembatan_mapping::{CheckedMapping, Format, Mapping, Plan, Secrets};
use jembatan_schema::{CheckOptions, CompatMode, Incompatibility, Schema};
use jembatan_store::{
    AuditLog, RegistryDataset, Store, StoreError, StoredMapping, StoredSchemaVersion, VersionState,
};
use serde_json::{Map, Value};

use crate::registry_log::{Write, failed_entry, sha256_hex};

/// Why a registry call failed; the service turns it into a status.
#[derive(Debug)]
pub(crate) enum RegistryError {
    /// Malformed input (`InvalidArgument`).
    Invalid(String),
    /// No such dataset, version or mapping (`NotFound`).
    NotFound(String),
    /// The caller's certificate may not do this (`PermissionDenied`).
    Forbidden(String),
    /// The schema breaks the dataset's compatibility mode (`FailedPrecondition`).
    Incompatible {
        mode: CompatMode,
        reasons: Vec<Incompatibility>,
    },
    /// The mapping cannot be right (`FailedPrecondition`).
    MappingRejected(Vec<String>),
    /// Someone else registered first (`Aborted`; retry).
    Conflict(String),
    /// The store failed (`Unavailable`).
    Store(StoreError),
    /// The write's audit entry could not be written, so the write is
    /// refused (`Unavailable`).
    Unlogged(StoreError),
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(m) => RegistryError::Conflict(m),
            other => RegistryError::Store(other),
        }
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::Invalid(m)
            | RegistryError::NotFound(m)
            | RegistryError::Forbidden(m)
            | RegistryError::Conflict(m) => f.write_str(m),
            RegistryError::Incompatible { mode, reasons } => {
                write!(f, "schema is not {mode} compatible: ")?;
                let lines: Vec<String> = reasons.iter().map(jembatan_schema::explain).collect();
                f.write_str(&lines.join("; "))
            }
            RegistryError::MappingRejected(errors) => {
                write!(f, "mapping rejected: {}", errors.join("; "))
            }
            RegistryError::Store(e) => write!(f, "the registry store is unavailable: {e}"),
            RegistryError::Unlogged(e) => write!(
                f,
                "the audit log cannot be written; the registry write is refused: {e}"
            ),
        }
    }
}

impl std::error::Error for RegistryError {}

impl ServiceError for RegistryError {
    fn code(&self) -> ErrorCode {
        match self {
            RegistryError::Invalid(_) => ErrorCode::InvalidArgument,
            RegistryError::NotFound(_) => ErrorCode::NotFound,
            RegistryError::Forbidden(_) => ErrorCode::PermissionDenied,
            RegistryError::Incompatible { .. } | RegistryError::MappingRejected(_) => {
                ErrorCode::FailedPrecondition
            }
            RegistryError::Conflict(_) => ErrorCode::Aborted,
            RegistryError::Store(_) | RegistryError::Unlogged(_) => ErrorCode::Unavailable,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        match self {
            RegistryError::Store(_) => Cow::Borrowed("the registry store is unavailable"),
            RegistryError::Unlogged(_) => {
                Cow::Borrowed("the audit log cannot be written; the registry write is refused")
            }
            other => Cow::Owned(other.to_string()),
        }
    }
}

impl From<RegistryError> for tonic::Status {
    fn from(err: RegistryError) -> tonic::Status {
        jembatan_core::error::status(&err)
    }
}

/// Why a provider record could not be translated; the exchange fails.
/// The words name the schema, the mapping version and the rule, never a
/// value of the record: they reach the consumer and the audit log, and
/// the record's values need not be ones the consumer may see.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TranslateError {
    #[error(
        "the provider's record does not match {schema}, which mapping {mapping} reads: {places}"
    )]
    SourceSchema {
        schema: String,
        mapping: String,
        places: String,
    },
    #[error("provider record is not a JSON object")]
    NotAnObject,
    /// `failure`: the rule and why, without the record's values.
    #[error("mapping {mapping} failed at {failure}")]
    Mapping { mapping: String, failure: String },
    #[error("mapping to {0} did not produce an object")]
    NotAnOutputObject(String),
    #[error("cannot encode the translated record: {0}")]
    Encode(serde_json::Error),
}

/// A `<dataset>@<version>` reference; `version` `None` means `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaRef {
    pub(crate) dataset: DatasetId,
    pub(crate) version: Option<u32>,
}

impl SchemaRef {
    pub(crate) fn parse(text: &str) -> Result<SchemaRef, RegistryError> {
        let shown = jembatan_core::ids::truncate(text, 128);
        let (dataset, version) = text.split_once('@').ok_or_else(|| {
            RegistryError::Invalid(format!(
                "{shown:?} is not a schema reference: expected <agency>.<dataset>@<version>"
            ))
        })?;
        let dataset: DatasetId = dataset
            .parse()
            .map_err(|e: jembatan_core::InvalidArgument| RegistryError::Invalid(e.to_string()))?;
        let version = match version {
            "latest" => None,
            v => Some(v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                RegistryError::Invalid(format!(
                    "{shown:?}: the version must be a number from 1, or `latest`"
                ))
            })?),
        };
        Ok(SchemaRef { dataset, version })
    }
}

/// The registry, shared by the gRPC service, the HTTP view and exchanges.
#[derive(Debug)]
pub(crate) struct Registry {
    store: Store,
    /// Every write, and every refused attempt, is on it before it counts.
    audit: AuditLog,
    default_mode: CompatMode,
    secrets: Secrets,
    /// Only integrators of registered agencies write.
    members: crate::members::Members,
    /// Compiled translators by (source, target, mapping version): versions
    /// never change once stored, so entries never go stale.
    translators: Mutex<HashMap<(String, String, u32), Arc<Translator>>>,
}

/// Whether `identity` may write `dataset`'s registry entries: an
/// integrator of the dataset's agency.
fn may_write(identity: &Identity, dataset: &DatasetId) -> bool {
    identity.role == Role::Integrator && identity.agency.as_ref() == Some(&dataset.agency())
}

/// Whether `identity` may read the registry: any certificate of the
/// federation but the broker's and the adapters', which have no business
/// there. The gRPC service and the HTTP view both ask this.
pub(crate) fn check_reader(identity: &Identity) -> Result<(), RegistryError> {
    match identity.role {
        Role::Broker | Role::Adapter => Err(RegistryError::Forbidden(format!(
            "the registry is not for {} certificates",
            identity.role
        ))),
        _ => Ok(()),
    }
}

fn forbidden(identity: &Identity, what: &str) -> RegistryError {
    RegistryError::Forbidden(format!("{what}; this certificate is {identity}"))
}

impl Registry {
    pub(crate) fn new(
        store: Store,
        audit: AuditLog,
        default_mode: CompatMode,
        secrets: Secrets,
        members: crate::members::Members,
    ) -> Self {
        Self {
            store,
            audit,
            default_mode,
            secrets,
            members,
            translators: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses a write by a certificate of an agency not registered with
    /// this broker, whatever its role.
    fn check_member(&self, identity: &Identity) -> Result<(), RegistryError> {
        self.members
            .check_identity(identity)
            .map_err(|unregistered| RegistryError::Forbidden(unregistered.to_string()))
    }

    /// The mode and optional-friendly flag that apply to `dataset`.
    fn mode_of(&self, info: Option<&RegistryDataset>) -> Result<(CompatMode, bool), RegistryError> {
        let Some(info) = info else {
            return Ok((self.default_mode, false));
        };
        let mode = match &info.compatibility {
            None => self.default_mode,
            Some(m) => m.parse().map_err(|_| {
                RegistryError::Store(StoreError::Corrupt {
                    what: format!("compatibility mode of {}", info.dataset),
                    message: m.clone(),
                })
            })?,
        };
        Ok((mode, info.optional_friendly))
    }

    pub(crate) async fn datasets(
        &self,
    ) -> Result<Vec<(RegistryDataset, CompatMode)>, RegistryError> {
        let mut out = Vec::new();
        for d in self.store.registry_datasets().await? {
            let (mode, _) = self.mode_of(Some(&d))?;
            out.push((d, mode));
        }
        Ok(out)
    }

    pub(crate) async fn versions(
        &self,
        dataset: &str,
    ) -> Result<Vec<StoredSchemaVersion>, RegistryError> {
        let dataset: DatasetId = parse_dataset(dataset)?;
        let versions = self.store.schema_versions(dataset.as_str()).await?;
        if versions.is_empty() {
            return Err(RegistryError::NotFound(format!(
                "no schema is registered for {dataset}"
            )));
        }
        Ok(versions)
    }

    /// `<dataset>@<version>`, `<dataset>@latest` or a `sha256:` schema id.
    pub(crate) async fn schema(
        &self,
        reference: &str,
    ) -> Result<StoredSchemaVersion, RegistryError> {
        if reference.starts_with("sha256:") {
            let found = self.store.versions_with_schema(reference).await?;
            return found.into_iter().next().ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "no schema has the id {}",
                    jembatan_core::ids::truncate(reference, 80)
                ))
            });
        }
        let r = SchemaRef::parse(reference)?;
        self.store
            .schema_version(r.dataset.as_str(), r.version)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no schema {reference}")))
    }

    /// Judges `schema_json` against the dataset's versions under `mode`
    /// (or the dataset's own mode).
    pub(crate) async fn check(
        &self,
        dataset: &str,
        schema_json: &str,
        mode: Option<(CompatMode, bool)>,
    ) -> Result<
        (
            Schema,
            Vec<Incompatibility>,
            CompatMode,
            Vec<StoredSchemaVersion>,
        ),
        RegistryError,
    > {
        let dataset = parse_dataset(dataset)?;
        let schema = parse_schema(schema_json)?;
        let info = self.store.registry_dataset(dataset.as_str()).await?;
        let (mode, friendly) = match mode {
            Some(m) => m,
            None => self.mode_of(info.as_ref())?,
        };
        let versions = self.store.schema_versions(dataset.as_str()).await?;
        let mut previous = Vec::with_capacity(versions.len());
        for v in &versions {
            let parsed = Schema::parse(&v.document).map_err(|e| {
                RegistryError::Store(StoreError::Corrupt {
                    what: format!("schema {}@{}", v.dataset, v.version),
                    message: e.to_string(),
                })
            })?;
            previous.push((v.version, parsed));
        }
        let options = CheckOptions {
            optional_friendly: friendly,
        };
        // CPU work bounded by the checker's budgets, kept off the async
        // workers that relay exchanges
        let candidate = schema.clone();
        let reasons = tokio::task::spawn_blocking(move || {
            jembatan_schema::check(mode, &candidate, &previous, &options)
        })
        .await
        .map_err(|e| RegistryError::Invalid(format!("the compatibility check failed: {e}")))?;
        Ok((schema, reasons, mode, versions))
    }

    /// Registers a schema as the dataset's next version, or finds the
    /// version that already holds the same content. The write's entry is
    /// durable before the version is stored.
    pub(crate) async fn register_schema(
        &self,
        identity: &Identity,
        dataset: &str,
        schema_json: &str,
    ) -> Result<(StoredSchemaVersion, bool), RegistryError> {
        let mut write = Write::new(identity, "register_schema").document(schema_json);
        let judged = match self
            .judge_schema(identity, dataset, schema_json, &mut write)
            .await
        {
            Ok(judged) => judged,
            Err(err) => return Err(self.refuse(&write, err).await),
        };
        match judged {
            SchemaWrite::Same(same) => {
                write.change.schema = Some(format!("{}@{}", same.dataset, same.version));
                write.change.already_registered = true;
                self.log(write.entry(None)).await?;
                Ok((same, true))
            }
            SchemaWrite::Next {
                dataset,
                version,
                schema_id,
                document,
            } => {
                write.change.schema = Some(format!("{dataset}@{version}"));
                let logged = self.log(write.entry(None)).await?;
                match self
                    .insert_schema(
                        &dataset,
                        version,
                        &schema_id,
                        &document,
                        &identity.to_string(),
                    )
                    .await
                {
                    Ok(stored) => Ok((stored, false)),
                    Err(err) => Err(self.not_taken(&logged, err).await),
                }
            }
        }
    }

    /// Whether `identity` may register `schema_json` as `dataset`'s next
    /// version, and what that write would be.
    async fn judge_schema(
        &self,
        identity: &Identity,
        dataset: &str,
        schema_json: &str,
        write: &mut Write,
    ) -> Result<SchemaWrite, RegistryError> {
        self.check_member(identity)?;
        let id = parse_dataset(dataset)?;
        write.dataset = Some(id.to_string());
        if !may_write(identity, &id) {
            return Err(forbidden(
                identity,
                &format!(
                    "only an integrator of {} may register {id}'s schemas",
                    id.agency()
                ),
            ));
        }
        self.next_schema(&id, schema_json, &mut write.change).await
    }

    /// Registers a schema without asking who: for the schemas in the
    /// broker's own config, applied at start as its agreements are.
    /// Compatibility is still enforced.
    pub(crate) async fn seed_schema(
        &self,
        id: &DatasetId,
        schema_json: &str,
    ) -> Result<(StoredSchemaVersion, bool), RegistryError> {
        let mut change = jembatan_core::RegistryChange::default();
        match self.next_schema(id, schema_json, &mut change).await? {
            SchemaWrite::Same(same) => Ok((same, true)),
            SchemaWrite::Next {
                dataset,
                version,
                schema_id,
                document,
            } => self
                .insert_schema(&dataset, version, &schema_id, &document, "config")
                .await
                .map(|stored| (stored, false)),
        }
    }

    /// Judges `schema_json` as `id`'s next version: the version holding
    /// the same content, or the next one if it is compatible. Notes the
    /// schema's content id in `change` once it parses.
    async fn next_schema(
        &self,
        id: &DatasetId,
        schema_json: &str,
        change: &mut jembatan_core::RegistryChange,
    ) -> Result<SchemaWrite, RegistryError> {
        let (schema, reasons, mode, versions) = self.check(id.as_str(), schema_json, None).await?;
        change.schema_id = Some(schema.id().to_owned());
        if let Some(same) = versions.iter().rev().find(|v| v.schema_id == schema.id()) {
            return Ok(SchemaWrite::Same(same.clone()));
        }
        if !reasons.is_empty() {
            return Err(RegistryError::Incompatible { mode, reasons });
        }
        Ok(SchemaWrite::Next {
            dataset: id.clone(),
            version: versions.last().map_or(1, |v| v.version + 1),
            schema_id: schema.id().to_owned(),
            document: jembatan_schema::canonical_json(schema.original()),
        })
    }

    async fn insert_schema(
        &self,
        id: &DatasetId,
        version: u32,
        schema_id: &str,
        document: &str,
        by: &str,
    ) -> Result<StoredSchemaVersion, RegistryError> {
        let stored = self
            .store
            .insert_schema_version(id.as_str(), version, schema_id, document, by)
            .await?;
        tracing::info!(dataset = %id, version, schema_id, "schema registered");
        Ok(stored)
    }

    /// Appends a write's entry and waits until it is durable: no durable
    /// entry, no write. Returns the entry, for [`Registry::not_taken`].
    async fn log(&self, entry: AuditEntry) -> Result<AuditEntry, RegistryError> {
        match self.audit.append(entry.clone()).await {
            Ok(_) => Ok(entry),
            Err(err) => Err(RegistryError::Unlogged(err)),
        }
    }

    /// Writes the entry of an attempt refused with `err`; returns `err`,
    /// or why the entry could not be written.
    async fn refuse(&self, write: &Write, err: RegistryError) -> RegistryError {
        match self.audit.append(write.entry(Some(&err))).await {
            Ok(_) => err,
            Err(unlogged) => RegistryError::Unlogged(unlogged),
        }
    }

    /// Records that the write whose entry is `logged` did not take effect
    /// in the store (`err`); returns `err`, or why that entry could not
    /// be written.
    async fn not_taken(&self, logged: &AuditEntry, err: RegistryError) -> RegistryError {
        let why = err.public_message().into_owned();
        tracing::warn!(
            operation = %logged.operation,
            exchange_id = %logged.exchange_id,
            reason = %err,
            "registry write logged but not applied"
        );
        match self.audit.append(failed_entry(logged, &why)).await {
            Ok(_) => err,
            Err(unlogged) => RegistryError::Unlogged(unlogged),
        }
    }

    /// Refuses, on the log, a write whose request did not even convert
    /// (an unknown state or mode).
    pub(crate) async fn refuse_request(
        &self,
        identity: &Identity,
        action: &'static str,
        err: RegistryError,
    ) -> RegistryError {
        self.refuse(&Write::new(identity, action), err).await
    }

    /// Sets a dataset's compatibility mode (`None`: the registry
    /// default), once the write's entry is durable.
    pub(crate) async fn set_compatibility(
        &self,
        identity: &Identity,
        dataset: &str,
        mode: Option<CompatMode>,
        optional_friendly: bool,
    ) -> Result<(), RegistryError> {
        let mut write = Write::new(identity, "set_compatibility");
        write.change.to = Some(mode_words(mode, optional_friendly, self.default_mode));
        let id = match self
            .judge_compatibility(identity, dataset, &mut write)
            .await
        {
            Ok(id) => id,
            Err(err) => return Err(self.refuse(&write, err).await),
        };
        let logged = self.log(write.entry(None)).await?;
        let text = mode.map(|m| m.to_string());
        if let Err(err) = self
            .store
            .set_compatibility(id.as_str(), text.as_deref(), optional_friendly)
            .await
        {
            return Err(self.not_taken(&logged, err.into()).await);
        }
        tracing::info!(dataset = %id, mode = ?text, optional_friendly, "compatibility mode set");
        Ok(())
    }

    async fn judge_compatibility(
        &self,
        identity: &Identity,
        dataset: &str,
        write: &mut Write,
    ) -> Result<DatasetId, RegistryError> {
        self.check_member(identity)?;
        let id = parse_dataset(dataset)?;
        write.dataset = Some(id.to_string());
        if !may_write(identity, &id) && identity.role != Role::Operator {
            return Err(forbidden(
                identity,
                &format!(
                    "only an integrator of {} or an operator may set {id}'s compatibility",
                    id.agency()
                ),
            ));
        }
        let info = self.store.registry_dataset(id.as_str()).await?;
        let from = info.as_ref().map_or((None, false), |i| {
            (
                i.compatibility.as_ref().and_then(|m| m.parse().ok()),
                i.optional_friendly,
            )
        });
        write.change.from = Some(mode_words(from.0, from.1, self.default_mode));
        Ok(id)
    }

    /// Sets a schema version's state, once the write's entry is durable.
    pub(crate) async fn set_version_state(
        &self,
        identity: &Identity,
        dataset: &str,
        version: u32,
        state: VersionState,
    ) -> Result<StoredSchemaVersion, RegistryError> {
        let mut write = Write::new(identity, "set_version_state");
        write.change.to = Some(state.as_str().to_owned());
        let id = match self
            .judge_version_state(identity, dataset, version, &mut write)
            .await
        {
            Ok(id) => id,
            Err(err) => return Err(self.refuse(&write, err).await),
        };
        let logged = self.log(write.entry(None)).await?;
        let stored = match self
            .store
            .set_version_state(id.as_str(), version, state)
            .await
        {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                let err = RegistryError::NotFound(format!("no schema {id}@{version}"));
                return Err(self.not_taken(&logged, err).await);
            }
            Err(err) => return Err(self.not_taken(&logged, err.into()).await),
        };
        tracing::info!(dataset = %id, version, state = %state, "schema version state changed");
        Ok(stored)
    }

    async fn judge_version_state(
        &self,
        identity: &Identity,
        dataset: &str,
        version: u32,
        write: &mut Write,
    ) -> Result<DatasetId, RegistryError> {
        self.check_member(identity)?;
        let id = parse_dataset(dataset)?;
        write.dataset = Some(id.to_string());
        if !may_write(identity, &id) && identity.role != Role::Operator {
            return Err(forbidden(
                identity,
                &format!(
                    "only an integrator of {} or an operator may change {id}'s versions",
                    id.agency()
                ),
            ));
        }
        let current = self
            .store
            .schema_version(id.as_str(), Some(version))
            .await?
            .filter(|v| v.version == version)
            .ok_or_else(|| RegistryError::NotFound(format!("no schema {id}@{version}")))?;
        write.change.schema = Some(format!("{id}@{version}"));
        write.change.schema_id = Some(current.schema_id);
        write.change.from = Some(current.state.as_str().to_owned());
        Ok(id)
    }

    /// Disables a mapping version (or makes it active again): exchanges
    /// then use the newest version of the pair that is not disabled.
    /// Registered versions and their numbering are untouched. The write's
    /// entry is durable before the state changes.
    pub(crate) async fn set_mapping_state(
        &self,
        identity: &Identity,
        source: &str,
        target: &str,
        version: u32,
        state: VersionState,
    ) -> Result<StoredMapping, RegistryError> {
        let mut write = Write::new(identity, "set_mapping_state");
        write.change.to = Some(state.as_str().to_owned());
        if let Err(err) = self
            .judge_mapping_state(identity, source, target, version, &mut write)
            .await
        {
            return Err(self.refuse(&write, err).await);
        }
        let logged = self.log(write.entry(None)).await?;
        let stored = match self
            .store
            .set_mapping_state(source, target, version, state)
            .await
        {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                let err = no_mapping(source, target, version);
                return Err(self.not_taken(&logged, err).await);
            }
            Err(err) => return Err(self.not_taken(&logged, err.into()).await),
        };
        tracing::info!(source, target, version, state = %state, "mapping version state changed");
        Ok(stored)
    }

    async fn judge_mapping_state(
        &self,
        identity: &Identity,
        source: &str,
        target: &str,
        version: u32,
        write: &mut Write,
    ) -> Result<(), RegistryError> {
        self.check_member(identity)?;
        let source_ref = SchemaRef::parse(source)?;
        let target_ref = SchemaRef::parse(target)?;
        write.dataset = Some(source_ref.dataset.to_string());
        write.change.source = Some(source.to_owned());
        write.change.target = Some(target.to_owned());
        write.change.mapping_version = Some(version);
        if !may_write(identity, &source_ref.dataset)
            && !may_write(identity, &target_ref.dataset)
            && identity.role != Role::Operator
        {
            return Err(forbidden(
                identity,
                &format!(
                    "only an integrator of {} or {}, or an operator, may change this mapping's versions",
                    source_ref.dataset.agency(),
                    target_ref.dataset.agency()
                ),
            ));
        }
        let current = self
            .store
            .mapping(source, target, Some(version))
            .await?
            .ok_or_else(|| no_mapping(source, target, version))?;
        write.change.mapping_sha256 = Some(sha256_hex(current.document.as_bytes()));
        write.change.from = Some(current.state.as_str().to_owned());
        Ok(())
    }

    /// Parses, type-checks and stores a mapping as the next version of its
    /// (source, target) pair, once the write's entry is durable.
    pub(crate) async fn register_mapping(
        &self,
        identity: &Identity,
        document: &str,
    ) -> Result<StoredMapping, RegistryError> {
        let mut write = Write::new(identity, "register_mapping").document(document);
        let next = match self.judge_mapping(identity, document, &mut write).await {
            Ok(next) => next,
            Err(err) => return Err(self.refuse(&write, err).await),
        };
        let logged = self.log(write.entry(None)).await?;
        match self.insert_mapping(next, &identity.to_string()).await {
            Ok(stored) => Ok(stored),
            Err(err) => Err(self.not_taken(&logged, err).await),
        }
    }

    async fn judge_mapping(
        &self,
        identity: &Identity,
        document: &str,
        write: &mut Write,
    ) -> Result<NextMapping, RegistryError> {
        self.check_member(identity)?;
        let mapping = parse_mapping(document)?;
        let source = SchemaRef::parse(mapping.source())?;
        let target = SchemaRef::parse(mapping.target())?;
        write.dataset = Some(source.dataset.to_string());
        write.change.source = Some(mapping.source().to_owned());
        write.change.target = Some(mapping.target().to_owned());
        write.change.mapping_version = Some(mapping.version());
        write.change.mapping_sha256 = Some(sha256_hex(mapping.canonical_json().as_bytes()));
        if !may_write(identity, &source.dataset) && !may_write(identity, &target.dataset) {
            return Err(forbidden(
                identity,
                &format!(
                    "only an integrator of {} or {} may register this mapping",
                    source.dataset.agency(),
                    target.dataset.agency()
                ),
            ));
        }
        match self.next_mapping(mapping, false).await? {
            Ok(next) => Ok(next),
            // only a seed finds its version stored
            Err(stored) => Err(RegistryError::Conflict(format!(
                "{} -> {} version {} is already stored",
                stored.source, stored.target, stored.version
            ))),
        }
    }

    /// Registers a mapping from the broker's own config, applied at start
    /// as its agreements are: a version already stored with the same
    /// document is found again; one stored with another document is an
    /// error.
    pub(crate) async fn seed_mapping(
        &self,
        identity: &Identity,
        document: &str,
    ) -> Result<StoredMapping, RegistryError> {
        let mapping = parse_mapping(document)?;
        match self.next_mapping(mapping, true).await? {
            Ok(next) => self.insert_mapping(next, &identity.to_string()).await,
            Err(stored) => Ok(stored),
        }
    }

    /// Judges `mapping` as the next version of its pair: `Ok` with what
    /// to store, or — `seeding`, the same document already stored — `Err`
    /// with the stored version.
    async fn next_mapping(
        &self,
        mapping: Mapping,
        seeding: bool,
    ) -> Result<Result<NextMapping, StoredMapping>, RegistryError> {
        let source = SchemaRef::parse(mapping.source())?;
        let target = SchemaRef::parse(mapping.target())?;
        if source.version.is_none() || target.version.is_none() {
            return Err(RegistryError::Invalid(
                "a mapping names exact schema versions, not `latest`".into(),
            ));
        }
        let (source_text, target_text) =
            (mapping.source().to_string(), mapping.target().to_string());
        if seeding
            && let Some(stored) = self
                .store
                .mapping(&source_text, &target_text, Some(mapping.version()))
                .await?
        {
            if stored.document == mapping.canonical_json() {
                return Ok(Err(stored));
            }
            return Err(RegistryError::Conflict(format!(
                "{source_text} -> {target_text} version {} is already stored with another document; give the new one the next version",
                mapping.version()
            )));
        }
        let (source_schema, target_schema) = self.mapping_schemas(&source, &target).await?;
        mapping
            .check(source_schema.value(), target_schema.value())
            .map_err(|errors| {
                RegistryError::MappingRejected(errors.iter().map(|e| e.to_string()).collect())
            })?;
        let latest = self.store.mapping(&source_text, &target_text, None).await?;
        let next = latest.map_or(1, |m| m.version + 1);
        if mapping.version() != next {
            return Err(RegistryError::Invalid(format!(
                "the mapping declares version {}; the next version of {source_text} -> {target_text} is {next}",
                mapping.version()
            )));
        }
        Ok(Ok(NextMapping {
            source: source_text,
            target: target_text,
            version: next,
            document: mapping.canonical_json(),
        }))
    }

    async fn insert_mapping(
        &self,
        next: NextMapping,
        by: &str,
    ) -> Result<StoredMapping, RegistryError> {
        let stored = self
            .store
            .insert_mapping(&next.source, &next.target, next.version, &next.document, by)
            .await?;
        tracing::info!(source = %next.source, target = %next.target, version = next.version, "mapping registered");
        Ok(stored)
    }

    async fn mapping_schemas(
        &self,
        source: &SchemaRef,
        target: &SchemaRef,
    ) -> Result<(Schema, Schema), RegistryError> {
        let mut out = Vec::with_capacity(2);
        for r in [source, target] {
            let v = self
                .store
                .schema_version(r.dataset.as_str(), r.version)
                .await?
                .ok_or_else(|| {
                    RegistryError::NotFound(format!(
                        "no schema {}@{} is registered",
                        r.dataset,
                        r.version.unwrap_or_default()
                    ))
                })?;
            out.push(stored_schema(&v)?);
        }
        let target = out.pop().expect("two schemas");
        let source = out.pop().expect("two schemas");
        Ok((source, target))
    }

    pub(crate) async fn mapping(
        &self,
        source: &str,
        target: &str,
        version: Option<u32>,
    ) -> Result<StoredMapping, RegistryError> {
        self.store
            .mapping(source, target, version)
            .await?
            .ok_or_else(|| {
                RegistryError::NotFound(match version {
                    Some(v) => format!("no mapping {source} -> {target} version {v}"),
                    None => format!("no mapping {source} -> {target} is registered"),
                })
            })
    }

    pub(crate) async fn mappings(&self) -> Result<Vec<StoredMapping>, RegistryError> {
        Ok(self.store.mappings().await?)
    }

    /// How to serve `dataset`'s records in the schema `target`: `None`
    /// when the consumer asked for the provider's own schema. A refusal is
    /// either a denial (a disabled version) or invalid input.
    pub(crate) async fn translator(
        &self,
        dataset: &DatasetId,
        target: &str,
    ) -> Result<Option<Arc<Translator>>, Refusal> {
        let target_ref = SchemaRef::parse(target).map_err(Refusal::Invalid)?;
        let target_version = self
            .store
            .schema_version(target_ref.dataset.as_str(), target_ref.version)
            .await
            .map_err(|e| Refusal::Invalid(e.into()))?
            .ok_or_else(|| {
                Refusal::Invalid(RegistryError::Invalid(format!(
                    "no schema {} is registered",
                    jembatan_core::ids::truncate(target, 128)
                )))
            })?;
        let target_name = format!("{}@{}", target_version.dataset, target_version.version);
        if target_version.state == VersionState::Disabled {
            return Err(Refusal::Denied(Denial::new(
                DenialCode::SchemaVersionDisabled,
                format!("schema {target_name} is disabled"),
            )));
        }
        if target_ref.dataset == *dataset {
            // the provider's own schema: nothing to translate
            return Ok(None);
        }
        let candidates = self
            .store
            .mappings_to(&target_name)
            .await
            .map_err(|e| Refusal::Invalid(e.into()))?;
        let prefix = format!("{dataset}@");
        let mut from_dataset: Vec<(u32, StoredMapping)> = candidates
            .into_iter()
            .filter_map(|m| {
                let v = m.source.strip_prefix(&prefix)?.parse::<u32>().ok()?;
                Some((v, m))
            })
            .collect();
        if from_dataset.is_empty() {
            return Err(Refusal::Invalid(RegistryError::Invalid(format!(
                "no mapping from {dataset} to {target_name} is registered"
            ))));
        }
        // the newest source version that is not disabled, and of its
        // mapping versions the newest that is not disabled
        from_dataset.sort_by_key(|(v, m)| std::cmp::Reverse((*v, m.version)));
        let mut disabled_schemas: Vec<String> = Vec::new();
        let mut disabled_mappings: Vec<String> = Vec::new();
        let mut source: Option<StoredSchemaVersion> = None;
        for (v, m) in from_dataset {
            if source.as_ref().is_none_or(|s| s.version != v) {
                source = self
                    .store
                    .schema_version(dataset.as_str(), Some(v))
                    .await
                    .map_err(|e| Refusal::Invalid(e.into()))?;
            }
            let Some(source) = source.as_ref().filter(|s| s.version == v) else {
                continue;
            };
            if source.state == VersionState::Disabled {
                let name = format!("{dataset}@{v}");
                if !disabled_schemas.contains(&name) {
                    disabled_schemas.push(name);
                }
                continue;
            }
            if m.state == VersionState::Disabled {
                disabled_mappings.push(format!(
                    "{} -> {} version {}",
                    m.source, m.target, m.version
                ));
                continue;
            }
            return self
                .compile(&m, source, &target_version)
                .map(Some)
                .map_err(Refusal::Invalid);
        }
        if disabled_mappings.is_empty() {
            return Err(Refusal::Denied(Denial::new(
                DenialCode::SchemaVersionDisabled,
                format!(
                    "every mapping to {target_name} reads a disabled schema version ({})",
                    disabled_schemas.join(", ")
                ),
            )));
        }
        let mut why = format!(
            "every mapping to {target_name} is disabled ({})",
            disabled_mappings.join(", ")
        );
        if !disabled_schemas.is_empty() {
            why.push_str(&format!(
                " or reads a disabled schema version ({})",
                disabled_schemas.join(", ")
            ));
        }
        Err(Refusal::Denied(Denial::new(
            DenialCode::MappingDisabled,
            why,
        )))
    }

    fn compile(
        &self,
        stored: &StoredMapping,
        source: &StoredSchemaVersion,
        target: &StoredSchemaVersion,
    ) -> Result<Arc<Translator>, RegistryError> {
        let key = (stored.source.clone(), stored.target.clone(), stored.version);
        if let Some(t) = self
            .translators
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(t);
        }
        let corrupt = |message: String| {
            RegistryError::Store(StoreError::Corrupt {
                what: format!(
                    "mapping {} -> {} v{}",
                    stored.source, stored.target, stored.version
                ),
                message,
            })
        };
        let mapping =
            Mapping::parse(&stored.document, Format::Json).map_err(|e| corrupt(e.to_string()))?;
        let translator = Arc::new(self.build(mapping, source, target, None, |errors| {
            corrupt(errors.join("; "))
        })?);
        if let Ok(mut cache) = self.translators.lock() {
            cache.insert(key, translator.clone());
        }
        Ok(translator)
    }

    /// A translator for a candidate mapping that is not registered, for a
    /// mapping test: the mapping must name exact, registered schema
    /// versions that are not disabled, and type-check against them. It is
    /// neither stored nor cached.
    pub(crate) async fn candidate(&self, mapping: Mapping) -> Result<Arc<Translator>, Refusal> {
        let invalid = |m: String| Refusal::Invalid(RegistryError::Invalid(m));
        let source = SchemaRef::parse(mapping.source()).map_err(Refusal::Invalid)?;
        let target = SchemaRef::parse(mapping.target()).map_err(Refusal::Invalid)?;
        if source.version.is_none() || target.version.is_none() {
            return Err(invalid(
                "a mapping names exact schema versions, not `latest`".into(),
            ));
        }
        let mut versions = Vec::with_capacity(2);
        for (r, text) in [(&source, mapping.source()), (&target, mapping.target())] {
            let v = self
                .store
                .schema_version(r.dataset.as_str(), r.version)
                .await
                .map_err(|e| Refusal::Invalid(e.into()))?
                .filter(|v| Some(v.version) == r.version)
                .ok_or_else(|| invalid(format!("no schema {text} is registered")))?;
            if v.state == VersionState::Disabled {
                return Err(Refusal::Denied(Denial::new(
                    DenialCode::SchemaVersionDisabled,
                    format!("schema {text} is disabled"),
                )));
            }
            versions.push(v);
        }
        let sha256 = sha256_hex(mapping.canonical_json().as_bytes());
        let translator = self
            .build(
                mapping,
                &versions[0],
                &versions[1],
                Some(sha256),
                RegistryError::MappingRejected,
            )
            .map_err(Refusal::Invalid)?;
        Ok(Arc::new(translator))
    }

    /// Type-checks `mapping` against both schemas and builds its
    /// translator; `rejected` says what a mapping that does not check is.
    fn build(
        &self,
        mapping: Mapping,
        source: &StoredSchemaVersion,
        target: &StoredSchemaVersion,
        candidate_sha256: Option<String>,
        rejected: impl Fn(Vec<String>) -> RegistryError,
    ) -> Result<Translator, RegistryError> {
        let version = mapping.version();
        let source_schema = stored_schema(source)?;
        let target_schema = stored_schema(target)?;
        let checked = mapping
            .check(source_schema.value(), target_schema.value())
            .map_err(|errors| rejected(errors.iter().map(|e| e.to_string()).collect()))?;
        if let Some(missing) = checked
            .secret_names()
            .iter()
            .find(|name| self.secrets.get(name).is_none())
        {
            return Err(RegistryError::Invalid(format!(
                "mapping {} -> {} needs the secret {missing:?}, which this broker does not hold",
                checked.mapping().source(),
                checked.mapping().target()
            )));
        }
        let source_fields = checked.source_fields();
        let projected = project_required(source_schema.value(), &source_fields);
        let plan = checked.plan(&projected);
        let source_check = Schema::from_value(projected).map_err(|e| {
            RegistryError::Store(StoreError::Corrupt {
                what: format!("schema {}@{}", source.dataset, source.version),
                message: e.to_string(),
            })
        })?;
        Ok(Translator {
            source: format!("{}@{}", source.dataset, source.version),
            source_schema_id: source.schema_id.clone(),
            target: format!("{}@{}", target.dataset, target.version),
            target_schema_id: target.schema_id.clone(),
            mapping_version: version,
            candidate_sha256,
            source_fields,
            source_check,
            target_fields: target_schema
                .value()
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            mapping: checked,
            plan,
            secrets: self.secrets.clone(),
        })
    }
}

/// A schema registration, judged: the version that already holds the
/// same content, or the next version to store.
enum SchemaWrite {
    Same(StoredSchemaVersion),
    Next {
        dataset: DatasetId,
        version: u32,
        schema_id: String,
        document: String,
    },
}

/// A mapping registration, judged: what to store.
struct NextMapping {
    source: String,
    target: String,
    version: u32,
    /// Canonical JSON.
    document: String,
}

/// The compatibility mode as a registry entry names it: the mode's name,
/// or `default (<the registry default>)`, and `optional_friendly` when set.
fn mode_words(mode: Option<CompatMode>, optional_friendly: bool, default: CompatMode) -> String {
    let mode = mode.map_or_else(|| format!("default ({default})"), |m| m.to_string());
    if optional_friendly {
        format!("{mode} optional_friendly")
    } else {
        mode
    }
}

fn no_mapping(source: &str, target: &str, version: u32) -> RegistryError {
    RegistryError::NotFound(format!(
        "no mapping {} -> {} version {version}",
        jembatan_core::ids::truncate(source, 128),
        jembatan_core::ids::truncate(target, 128)
    ))
}

/// Why an exchange cannot be translated.
#[derive(Debug)]
pub(crate) enum Refusal {
    Denied(Denial),
    Invalid(RegistryError),
}

fn parse_dataset(text: &str) -> Result<DatasetId, RegistryError> {
    text.parse()
        .map_err(|e: jembatan_core::InvalidArgument| RegistryError::Invalid(e.to_string()))
}

/// A mapping document: JSON if it starts with `{`, TOML otherwise.
pub(crate) fn parse_mapping(document: &str) -> Result<Mapping, RegistryError> {
    let format = if document.trim_start().starts_with('{') {
        Format::Json
    } else {
        Format::Toml
    };
    Mapping::parse(document, format)
        .map_err(|e| RegistryError::Invalid(format!("mapping document: {e}")))
}

fn parse_schema(text: &str) -> Result<Schema, RegistryError> {
    Schema::parse(text).map_err(|e| RegistryError::Invalid(e.to_string()))
}

fn stored_schema(v: &StoredSchemaVersion) -> Result<Schema, RegistryError> {
    Schema::parse(&v.document).map_err(|e| {
        RegistryError::Store(StoreError::Corrupt {
            what: format!("schema {}@{}", v.dataset, v.version),
            message: e.to_string(),
        })
    })
}

/// The source schema as it applies to the columns actually fetched: the
/// top-level `required` list keeps only those columns, everything else
/// (types, formats, enums of the fetched columns) stays as registered.
fn project_required(schema: &Value, fetched: &BTreeSet<String>) -> Value {
    let mut schema = schema.clone();
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|r| r.as_str().is_some_and(|r| fetched.contains(r)));
    }
    schema
}

/// Where a record failed a mapping test, in words and places that quote
/// none of its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckFailure {
    /// `source_schema`, `mapping` or `target_schema`.
    pub(crate) stage: &'static str,
    /// The rule (from 0) and its target, when a rule failed.
    pub(crate) rule: Option<(usize, String)>,
    pub(crate) schema_path: String,
    pub(crate) instance_path: String,
    pub(crate) message: String,
}

/// Translates one exchange's records: source validation, mapping, target
/// validation, then the consumer's residual filter and field selection.
#[derive(Debug)]
pub(crate) struct Translator {
    pub(crate) source: String,
    pub(crate) source_schema_id: String,
    pub(crate) target: String,
    pub(crate) target_schema_id: String,
    pub(crate) mapping_version: u32,
    /// A candidate's SHA-256 (a mapping test): it is not registered, so
    /// its version alone does not name it.
    pub(crate) candidate_sha256: Option<String>,
    /// The provider columns the mapping reads.
    pub(crate) source_fields: BTreeSet<String>,
    source_check: Schema,
    /// The target schema's top-level property names: what the consumer
    /// may name in `fields` and filters.
    pub(crate) target_fields: BTreeSet<String>,
    pub(crate) mapping: CheckedMapping,
    /// The mapping compiled with both schemas: what translates records.
    plan: Plan,
    secrets: Secrets,
}

impl Translator {
    /// The audit trail of this translation.
    pub(crate) fn trail(&self) -> jembatan_core::Translation {
        jembatan_core::Translation {
            source_schema: self.source.clone(),
            source_schema_id: self.source_schema_id.clone(),
            target_schema: self.target.clone(),
            target_schema_id: self.target_schema_id.clone(),
            mapping_version: self.mapping_version,
            mapping_sha256: self.candidate_sha256.clone(),
        }
    }

    /// `<source> -> <target> version <n>`, as errors name the mapping.
    fn mapping_name(&self) -> String {
        format!(
            "{} -> {} version {}",
            self.source, self.target, self.mapping_version
        )
    }

    /// Checks one provider record for a mapping test: validation against
    /// the provider's schema, the mapping, validation against the target
    /// schema (inside the mapping's `apply`). The failure names the step,
    /// the rule and the schema's place, never a value of the record.
    pub(crate) fn check(&self, record: &Map<String, Value>) -> Result<(), CheckFailure> {
        let value = Value::Object(record.clone());
        if let Err(issues) = self.source_check.validate(&value) {
            let first = issues.first();
            return Err(CheckFailure {
                stage: "source_schema",
                rule: None,
                schema_path: first.map(|i| i.schema_path.clone()).unwrap_or_default(),
                instance_path: first.map(|i| i.instance_path.clone()).unwrap_or_default(),
                message: format!(
                    "the provider's record does not match {}: {}",
                    self.source,
                    jembatan_schema::ValidationIssue::places(&issues)
                ),
            });
        }
        let Value::Object(map) = value else {
            return Err(CheckFailure {
                stage: "source_schema",
                rule: None,
                schema_path: String::new(),
                instance_path: String::new(),
                message: "the provider's record is not a JSON object".into(),
            });
        };
        match self.mapping.apply(&map, &self.secrets) {
            Ok(_) => Ok(()),
            Err(e) => {
                let (stage, schema_path) = match &e.reason {
                    jembatan_mapping::RuleFailure::BreaksSchema { location, .. } => {
                        ("target_schema", location.clone())
                    }
                    _ => ("mapping", String::new()),
                };
                Err(CheckFailure {
                    stage,
                    rule: Some((e.rule, e.target.clone())),
                    schema_path,
                    instance_path: String::new(),
                    message: format!(
                        "mapping {} failed at {}",
                        self.mapping_name(),
                        e.without_values()
                    ),
                })
            }
        }
    }

    /// Translates one provider record, parsed and checked against the
    /// grant by the relay. `Ok(None)`: the residual filter dropped it.
    ///
    /// The mapping's compiled plan translates every record that the
    /// reference path (source validation, mapping, target validation)
    /// translates, to the same output; a record it refuses takes the
    /// reference path, which names the failure.
    pub(crate) fn translate(
        &self,
        record: &Map<String, Value>,
        residual: Option<&Filter>,
        fields: &[String],
    ) -> Result<Option<String>, TranslateError> {
        if let Some(planned) = self.plan.translate(record, &self.secrets) {
            return match residual {
                None => Ok(Some(planned.to_json(fields))),
                Some(_) => deliver(planned.into_map(), residual, fields),
            };
        }
        let value = Value::Object(record.clone());
        if let Err(issues) = self.source_check.validate(&value) {
            return Err(TranslateError::SourceSchema {
                schema: self.source.clone(),
                mapping: self.mapping_name(),
                places: jembatan_schema::ValidationIssue::places(&issues),
            });
        }
        let Value::Object(map) = value else {
            return Err(TranslateError::NotAnObject);
        };
        // `apply` validates its output against the target schema: a
        // record that does not match it is an error, never delivered
        let out = self
            .mapping
            .apply(&map, &self.secrets)
            .map_err(|e| TranslateError::Mapping {
                mapping: self.mapping_name(),
                failure: e.without_values(),
            })?;
        let Value::Object(out) = out else {
            return Err(TranslateError::NotAnOutputObject(self.target.clone()));
        };
        deliver(out, residual, fields)
    }
}

/// A translated record as delivered: dropped when the residual filter
/// rejects it, otherwise the consumer's fields (all when none are named)
/// as JSON text.
fn deliver(
    mut out: Map<String, Value>,
    residual: Option<&Filter>,
    fields: &[String],
) -> Result<Option<String>, TranslateError> {
    if let Some(f) = residual
        && !f.matches(&out)
    {
        return Ok(None);
    }
    if !fields.is_empty() {
        let mut picked = Map::new();
        for f in fields {
            if let Some(v) = out.remove(f) {
                picked.insert(f.clone(), v);
            }
        }
        out = picked;
    }
    serde_json::to_string(&out)
        .map(Some)
        .map_err(TranslateError::Encode)
}
