//! The `Audit` service: the exchange log, signed checkpoints and Merkle
//! proofs for auditors, and only for auditors.
//!
//! Every call needs an auditor certificate. Entries come from the store a
//! bounded page at a time. Proofs are made from the tree's stored tiles
//! (`jembatan_tlog::merkle::tile`): the few tiles a proof needs (a couple
//! per level, O(log n)) are read in one query, and the proof is made and
//! then checked off the async workers, holding nothing between calls.
//! Proofs are only for trees a stored checkpoint signs, and one is served
//! only if it verifies against the root the checkpoint's note signs — an
//! inclusion proof for the entry as stored, a consistency proof between
//! the two signed roots — so a tile or entry changed after the fact is
//! refused (`DataLoss`), never served.
//!
//! Reading the log is itself on the log: every call that returns entries
//! or proves one (`QueryEntries`, `SubjectLookup`, `InclusionProof`), and
//! every refused attempt at one, appends an `audit_read` entry naming the
//! caller's certificate, the call and its terms (a subject only by the
//! keyed hash it was asked with), and what was returned (entries counted
//! and hashed as an exchange's records are). The entry is durable before
//! the answer is sent; when it cannot be written the read is refused
//! (`Unavailable`). Checkpoints and consistency proofs name no entry and
//! are not logged.

use std::borrow::Cow;
use std::time::Instant;

use jembatan_core::{
    AgencyId, AuditEntry, DatasetId, Decision, Denial, DenialCode, EntryKind, ErrorCode,
    ExchangeStatus, Identity, InvalidArgument, Role, ServiceError,
};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::audit_server::Audit;
use jembatan_store::{AuditLog, EntryQuery, RawEntry, Store, StoredCheckpoint};
use jembatan_tlog::merkle::tile::{ProveFromTiles, TileError, needed_for_consistency};
use jembatan_tlog::merkle::{Hash, verify_consistency, verify_inclusion};
use jembatan_tlog::note::{Checkpoint, Verifier};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

/// Entries per page when the request does not say.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most entries per page.
pub(crate) const MAX_PAGE_SIZE: u32 = 1000;

const DECISIONS: [&str; 2] = ["allow", "deny"];
const STATUSES: [&str; 8] = [
    "started",
    "denied",
    "invalid",
    "ok",
    "failed",
    "cancelled",
    "stopped",
    "abandoned",
];

/// The gRPC `Audit` service; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditService {
    store: Store,
    /// Where each read of the log is recorded before it is answered.
    audit: AuditLog,
    /// The checkpoint key's verifier: proofs are checked against the root
    /// the note signs.
    verifier: Verifier,
    /// When the next checkpoint is due, as `LatestCheckpoint` tells.
    schedule: Schedule,
}

/// Why an `Audit` call fails, other than a request field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    #[error("the broker store is unavailable: {0}")]
    Store(jembatan_store::StoreError),
    #[error(
        "the stored log does not match its checkpoint at size {0}; run `jembatan audit verify`"
    )]
    Mismatch(u64),
    #[error("the Audit service is for auditor certificates; this certificate's role is {0}")]
    NotAuditor(Role),
    #[error("no checkpoint has been signed yet")]
    NoCheckpoint,
    #[error("the proof could not be made: {0}")]
    ProofTask(tokio::task::JoinError),
    #[error("the tree's tiles do not cover the checkpoint at size {0} yet")]
    TilesBehind(u64),
    #[error("the audit log cannot be written; the read is refused: {0}")]
    Unrecorded(jembatan_store::StoreError),
}

impl ServiceError for AuditError {
    fn code(&self) -> ErrorCode {
        match self {
            AuditError::Store(_) | AuditError::TilesBehind(_) | AuditError::Unrecorded(_) => {
                ErrorCode::Unavailable
            }
            AuditError::Mismatch(_) => ErrorCode::DataLoss,
            AuditError::NotAuditor(_) => ErrorCode::PermissionDenied,
            AuditError::NoCheckpoint => ErrorCode::NotFound,
            AuditError::ProofTask(_) => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        match self {
            AuditError::Store(_) => Cow::Borrowed("the broker store is unavailable"),
            AuditError::ProofTask(_) => Cow::Borrowed("the proof could not be made"),
            AuditError::Unrecorded(_) => {
                Cow::Borrowed("the audit log cannot be written; the read is refused")
            }
            other => Cow::Owned(other.to_string()),
        }
    }
}

impl From<AuditError> for Status {
    fn from(err: AuditError) -> Status {
        jembatan_core::error::status(&err)
    }
}

fn unavailable(err: jembatan_store::StoreError) -> Status {
    AuditError::Store(err).into()
}

fn mismatch(size: u64) -> Status {
    tracing::error!(size, "the audit log does not match a signed checkpoint");
    AuditError::Mismatch(size).into()
}

fn invalid(field: &str, message: impl Into<String>) -> Status {
    InvalidArgument::new(field, message).into()
}

/// Refuses every certificate but an auditor's.
fn authorize(identity: &Result<Identity, Status>) -> Result<(), Status> {
    let identity = identity.as_ref().map_err(Clone::clone)?;
    if identity.role != Role::Auditor {
        return Err(AuditError::NotAuditor(identity.role).into());
    }
    tracing::debug!(%identity, "audit service call");
    Ok(())
}

/// Longest error text an `audit_read` entry keeps.
const MAX_ERROR_BYTES: usize = 512;

/// A call that reads the log, as its `audit_read` entry records it.
struct Read {
    started: Instant,
    /// The caller as its certificate names it (`auditor:inspektorat`).
    caller: String,
    /// `audit.query_entries`, `audit.subject_lookup`, `audit.inclusion_proof`.
    operation: &'static str,
    /// The call's terms: its filters, page, or the index proved.
    terms: serde_json::Map<String, serde_json::Value>,
    /// The keyed hash a subject lookup asked for, once it is one.
    subject_hash: Option<String>,
    /// Entries per page asked for.
    limit: Option<u64>,
}

impl Read {
    fn new(operation: &'static str, identity: &Result<Identity, Status>) -> Read {
        Read {
            started: Instant::now(),
            caller: match identity {
                Ok(identity) => identity.to_string(),
                Err(_) => "unauthenticated".to_owned(),
            },
            operation,
            terms: serde_json::Map::new(),
            subject_hash: None,
            limit: None,
        }
    }

    /// Adds a term when it is set (not empty, not zero).
    fn term(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        let value = value.into();
        let unset = match &value {
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Number(n) => n.as_u64() == Some(0),
            serde_json::Value::Null => true,
            _ => false,
        };
        if !unset {
            self.terms.insert(name.to_owned(), value);
        }
    }

    /// The entry of this read: what it returned, or why it was refused.
    fn entry(self, outcome: Result<&Served, &Status>) -> AuditEntry {
        let (decision, status, reasons, error) = match outcome {
            Ok(_) => (Decision::Allow, ExchangeStatus::Ok, Vec::new(), None),
            Err(refused) => {
                let error = Some(
                    jembatan_core::ids::truncate(refused.message(), MAX_ERROR_BYTES).to_owned(),
                );
                match refused.code() {
                    tonic::Code::PermissionDenied => (
                        Decision::Deny,
                        ExchangeStatus::Denied,
                        vec![Denial::new(DenialCode::RoleNotAllowed, refused.message())],
                        None,
                    ),
                    tonic::Code::Unauthenticated => {
                        (Decision::Deny, ExchangeStatus::Denied, Vec::new(), error)
                    }
                    tonic::Code::InvalidArgument => {
                        (Decision::Deny, ExchangeStatus::Invalid, Vec::new(), error)
                    }
                    _ => (Decision::Allow, ExchangeStatus::Failed, Vec::new(), error),
                }
            }
        };
        let served = outcome.ok();
        AuditEntry {
            v: jembatan_core::audit::ENTRY_FORMAT_VERSION,
            kind: EntryKind::AuditRead,
            exchange_id: uuid::Uuid::now_v7().to_string(),
            time: jembatan_core::agreement::format_instant(&chrono::Utc::now()),
            operation: self.operation.to_owned(),
            caller: self.caller,
            consumer: None,
            provider: None,
            dataset: None,
            purpose: None,
            fields: Vec::new(),
            filter: (!self.terms.is_empty()).then_some(serde_json::Value::Object(self.terms)),
            subject_hash: self.subject_hash,
            subjects: Vec::new(),
            unregistered_purpose: None,
            limit: self.limit,
            agreement_id: None,
            agreement_terms_sha256: None,
            translation: None,
            decision,
            reasons,
            status,
            rows: served.map_or(0, |s| s.rows),
            bytes: served.map_or(0, |s| s.bytes),
            payload_sha256: served.and_then(|s| s.sha256.clone()),
            received: None,
            duration_ms: Some(
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ),
            error,
            trace_id: None,
            adapter_endpoint: None,
            change: None,
            registry: None,
            subscription: None,
        }
    }
}

/// What a read returned: the entries' count, bytes and payload hash
/// (SHA-256 of each entry's canonical bytes followed by a newline, the
/// rule of an exchange's records). A proof returns no entry.
#[derive(Debug, Default)]
struct Served {
    rows: u64,
    bytes: u64,
    sha256: Option<String>,
}

impl Served {
    fn entries(entries: &[pb::AuditEntry]) -> Served {
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        for e in entries {
            hasher.update(&e.canonical);
            hasher.update(b"\n");
            bytes += e.canonical.len() as u64;
        }
        Served {
            rows: entries.len() as u64,
            bytes,
            sha256: Some(hex::encode(hasher.finalize())),
        }
    }
}

/// A request time as a term of a read's entry.
fn time_term(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    match t {
        None => serde_json::Value::Null,
        Some(t) => u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos))
            .map_or_else(
                || format!("{}s{}ns", t.seconds, t.nanos).into(),
                |t| jembatan_core::agreement::format_instant(&t).into(),
            ),
    }
}

/// Longest text term a read's entry keeps.
const MAX_TERM_BYTES: usize = 256;

fn text_term(s: &str) -> serde_json::Value {
    jembatan_core::ids::truncate(s, MAX_TERM_BYTES).into()
}

fn page_size(requested: u32) -> Result<u64, Status> {
    match requested {
        0 => Ok(u64::from(DEFAULT_PAGE_SIZE)),
        n if n > MAX_PAGE_SIZE => Err(invalid(
            "page_size",
            format!("{n} is above the limit of {MAX_PAGE_SIZE} entries per page"),
        )),
        n => Ok(u64::from(n)),
    }
}

fn page_token(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse()
        .map_err(|_| invalid("page_token", "not a token this service issued"))
}

/// A request time as stored times are written, rounded up to the
/// microsecond (stored times have microseconds).
fn instant(field: &str, t: &prost_types::Timestamp) -> Result<String, Status> {
    let bad = || invalid(field, "not a valid time");
    let nanos = u32::try_from(t.nanos).map_err(|_| bad())?;
    let t = chrono::DateTime::from_timestamp(t.seconds, nanos).ok_or_else(bad)?;
    let t = match nanos % 1000 {
        0 => t,
        rest => t + chrono::Duration::nanoseconds(i64::from(1000 - rest)),
    };
    Ok(jembatan_core::agreement::format_instant(&t))
}

fn optional(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Validates a `QueryEntriesRequest` into a store query and a page size.
fn entry_query(req: pb::QueryEntriesRequest) -> Result<(EntryQuery, u64), Status> {
    let agency = optional(req.agency)
        .map(|a| {
            a.parse::<AgencyId>()
                .map(|a| a.to_string())
                .map_err(|e: InvalidArgument| Status::from(e.within("agency")))
        })
        .transpose()?;
    let dataset = optional(req.dataset)
        .map(|d| {
            d.parse::<DatasetId>()
                .map(|d| d.to_string())
                .map_err(|e: InvalidArgument| Status::from(e.within("dataset")))
        })
        .transpose()?;
    let purpose = optional(req.purpose);
    if purpose.as_ref().is_some_and(|p| p.len() > 256) {
        return Err(invalid("purpose", "purpose is longer than 256 bytes"));
    }
    let decision = optional(req.decision);
    if let Some(d) = &decision
        && !DECISIONS.contains(&d.as_str())
    {
        return Err(invalid("decision", "must be allow or deny"));
    }
    let status = optional(req.status);
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(invalid(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    let from = req.from.as_ref().map(|t| instant("from", t)).transpose()?;
    let until = req
        .until
        .as_ref()
        .map(|t| instant("until", t))
        .transpose()?;
    if let (Some(from), Some(until)) = (&from, &until)
        && until < from
    {
        return Err(invalid("until", "is before from"));
    }
    let query = EntryQuery {
        agency,
        dataset,
        purpose,
        decision,
        status,
        from,
        until,
        from_seq: page_token(&req.page_token)?,
        ..EntryQuery::default()
    };
    Ok((query, page_size(req.page_size)?))
}

fn subject_query(req: pb::SubjectLookupRequest) -> Result<(EntryQuery, u64), Status> {
    let hash = req.subject_hash.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "subject_hash",
            "must be 64 hex digits (an HMAC-SHA-256)",
        ));
    }
    let query = EntryQuery {
        subject_hash: Some(hash),
        from_seq: page_token(&req.page_token)?,
        ..EntryQuery::default()
    };
    Ok((query, page_size(req.page_size)?))
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn checkpoint_to_proto(c: &StoredCheckpoint) -> Result<pb::Checkpoint, Status> {
    let root_hash = hex::decode(&c.root_hash).map_err(|_| mismatch(c.size))?;
    Ok(pb::Checkpoint {
        note: c.note.clone(),
        size: c.size,
        root_hash,
        signed_at: jembatan_core::agreement::parse_instant(&c.created_at)
            .ok()
            .map(timestamp),
        next_due: None,
        next_after_entries: 0,
        archived_up_to: 0,
        archived_tree: Vec::new(),
    })
}

/// When the broker signs checkpoints: after `every` new entries, and every
/// `interval` when the log has grown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) every: u64,
    pub(crate) interval: std::time::Duration,
}

impl Schedule {
    /// The latest time the next checkpoint after one signed at
    /// `signed_at` is due, seen at `now`: an interval after it, or, when
    /// that has passed (the log did not grow, or the broker restarted),
    /// an interval from now.
    fn next_due(
        self,
        signed_at: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        let interval = chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::MAX);
        match signed_at.and_then(|t| t.checked_add_signed(interval)) {
            Some(due) if due >= now => due,
            _ => now.checked_add_signed(interval).unwrap_or(now),
        }
    }
}

type EntryStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::AuditEntry, Status>>>;

fn stream(entries: Vec<pb::AuditEntry>) -> EntryStream {
    tokio_stream::iter(entries.into_iter().map(Ok).collect::<Vec<_>>())
}

impl AuditService {
    pub(crate) fn new(
        store: Store,
        audit: AuditLog,
        verifier: Verifier,
        schedule: Schedule,
    ) -> Self {
        Self {
            store,
            audit,
            verifier,
            schedule,
        }
    }

    /// Writes the entry of `read` (what it returned, or why it was
    /// refused) and waits until it is durable; only then may the answer,
    /// or the refusal, go out. A log that cannot be written refuses the
    /// read.
    async fn recorded<T>(
        &self,
        read: Read,
        outcome: Result<(T, Served), Status>,
    ) -> Result<T, Status> {
        let entry = read.entry(outcome.as_ref().map(|(_, served)| served));
        if let Err(err) = self.audit.append(entry).await {
            tracing::error!(error = %err, "an audit read could not be recorded; refused");
            return Err(AuditError::Unrecorded(err).into());
        }
        outcome.map(|(answer, _)| answer)
    }

    /// One page of matching entries, the last carrying the next page's
    /// token when more match.
    async fn page(&self, query: EntryQuery, size: u64) -> Result<Vec<pb::AuditEntry>, Status> {
        let mut rows: Vec<RawEntry> = self
            .store
            .query_entries(&query, size + 1)
            .await
            .map_err(unavailable)?;
        let next = if rows.len() as u64 > size {
            rows.pop().map(|r| r.seq.to_string())
        } else {
            None
        };
        let mut entries: Vec<pb::AuditEntry> = rows
            .into_iter()
            .map(|r| pb::AuditEntry {
                seq: r.seq,
                canonical: r.entry,
                entry_sha256: r.entry_sha256,
                next_page_token: String::new(),
            })
            .collect();
        if let (Some(next), Some(last)) = (next, entries.last_mut()) {
            last.next_page_token = next;
        }
        Ok(entries)
    }

    /// A page of entries with what it returned.
    async fn served_page(
        &self,
        query: EntryQuery,
        size: u64,
    ) -> Result<(Vec<pb::AuditEntry>, Served), Status> {
        let entries = self.page(query, size).await?;
        let served = Served::entries(&entries);
        Ok((entries, served))
    }

    async fn latest(&self) -> Result<StoredCheckpoint, Status> {
        self.store
            .latest_checkpoint()
            .await
            .map_err(unavailable)?
            .ok_or_else(|| AuditError::NoCheckpoint.into())
    }

    /// The stored checkpoint of `size` (0: the latest), or `InvalidArgument`
    /// naming `field`.
    async fn checkpoint(&self, field: &str, size: u64) -> Result<StoredCheckpoint, Status> {
        let latest = self.latest().await?;
        if size == 0 || size == latest.size {
            return Ok(latest);
        }
        if size > latest.size {
            return Err(invalid(
                field,
                format!(
                    "{size} is beyond the latest checkpoint (size {})",
                    latest.size
                ),
            ));
        }
        self.store
            .checkpoint_at(size)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                invalid(
                    field,
                    format!("no checkpoint was signed at size {size}; ask for a checkpoint's size"),
                )
            })
    }

    /// The root a stored checkpoint's note signs, after checking the note's
    /// signature, size and the stored root column.
    fn signed_root(&self, checkpoint: &StoredCheckpoint) -> Result<Hash, Status> {
        let size = checkpoint.size;
        let opened = Checkpoint::open(&checkpoint.note, &self.verifier).map_err(|e| {
            tracing::error!(size, error = %e, "a stored checkpoint does not verify");
            mismatch(size)
        })?;
        if opened.size != size || hex::encode(opened.root) != checkpoint.root_hash {
            return Err(mismatch(size));
        }
        Ok(opened.root)
    }
}

/// Runs `work` (hashing tiles into a proof and checking it) on the
/// blocking pool, off the async workers.
async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::from(AuditError::ProofTask(e)))?
}

/// A proof from tiles that could not be made: tiles missing (not built up
/// to this checkpoint) or unusable.
fn proof_failed(size: u64, err: ProveFromTiles) -> Status {
    match err {
        ProveFromTiles::Tile(TileError::Missing {
            level,
            index,
            width,
        }) => {
            tracing::error!(
                size,
                level,
                index,
                width,
                "a tile needed for a proof is missing"
            );
            AuditError::TilesBehind(size).into()
        }
        err => {
            tracing::error!(size, error = %err, "proof generation failed");
            mismatch(size)
        }
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    type QueryEntriesStream = EntryStream;
    type SubjectLookupStream = EntryStream;

    async fn query_entries(
        &self,
        request: Request<pb::QueryEntriesRequest>,
    ) -> Result<Response<Self::QueryEntriesStream>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let req = request.into_inner();
        let mut read = Read::new("audit.query_entries", &identity);
        read.term("agency", text_term(&req.agency));
        read.term("dataset", text_term(&req.dataset));
        read.term("purpose", text_term(&req.purpose));
        read.term("decision", text_term(&req.decision));
        read.term("status", text_term(&req.status));
        read.term("from", time_term(req.from.as_ref()));
        read.term("until", time_term(req.until.as_ref()));
        read.term("page_token", text_term(&req.page_token));
        read.limit = (req.page_size > 0).then_some(u64::from(req.page_size));
        let outcome = async {
            authorize(&identity)?;
            let (query, size) = entry_query(req)?;
            self.served_page(query, size).await
        }
        .await;
        let entries = self.recorded(read, outcome).await?;
        Ok(Response::new(stream(entries)))
    }

    async fn latest_checkpoint(
        &self,
        request: Request<pb::LatestCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        authorize(&jembatan_pki::peer_identity(&request))?;
        let latest = self.latest().await?;
        let mut checkpoint = checkpoint_to_proto(&latest)?;
        let signed_at = jembatan_core::agreement::parse_instant(&latest.created_at).ok();
        checkpoint.next_due = Some(timestamp(
            self.schedule.next_due(signed_at, chrono::Utc::now()),
        ));
        checkpoint.next_after_entries = self.schedule.every;
        let archived = self.store.archived_up_to().await.map_err(unavailable)?;
        if archived > 0 {
            let tree = self.store.tree_at(archived).await.map_err(unavailable)?;
            checkpoint.archived_up_to = archived;
            checkpoint.archived_tree = tree.hashes().iter().map(|h| h.to_vec()).collect();
        }
        Ok(Response::new(checkpoint))
    }

    async fn inclusion_proof(
        &self,
        request: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofResponse>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let req = request.into_inner();
        let mut read = Read::new("audit.inclusion_proof", &identity);
        read.terms.insert("index".into(), req.index.into());
        read.term("tree_size", req.tree_size);
        let outcome = async {
            authorize(&identity)?;
            Ok((self.prove_inclusion(req).await?, Served::default()))
        }
        .await;
        Ok(Response::new(self.recorded(read, outcome).await?))
    }

    async fn consistency_proof(
        &self,
        request: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofResponse>, Status> {
        authorize(&jembatan_pki::peer_identity(&request))?;
        let req = request.into_inner();
        self.prove_consistency(req).await.map(Response::new)
    }

    async fn subject_lookup(
        &self,
        request: Request<pb::SubjectLookupRequest>,
    ) -> Result<Response<Self::SubjectLookupStream>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let req = request.into_inner();
        let mut read = Read::new("audit.subject_lookup", &identity);
        read.term("page_token", text_term(&req.page_token));
        read.limit = (req.page_size > 0).then_some(u64::from(req.page_size));
        let query = subject_query(req);
        if let Ok((query, _)) = &query {
            read.subject_hash.clone_from(&query.subject_hash);
        }
        let outcome = async {
            authorize(&identity)?;
            let (query, size) = query?;
            self.served_page(query, size).await
        }
        .await;
        let entries = self.recorded(read, outcome).await?;
        Ok(Response::new(stream(entries)))
    }
}

impl AuditService {
    /// An inclusion proof checked against the signed root.
    async fn prove_inclusion(
        &self,
        req: pb::InclusionProofRequest,
    ) -> Result<pb::InclusionProofResponse, Status> {
        let checkpoint = self.checkpoint("tree_size", req.tree_size).await?;
        let size = checkpoint.size;
        if req.index >= size {
            return Err(invalid(
                "index",
                format!("{} is not below the tree size {size}", req.index),
            ));
        }
        let root = self.signed_root(&checkpoint)?;
        let index = req.index;
        let inputs = self
            .store
            .inclusion_inputs(index, size)
            .await
            .map_err(unavailable)?;
        let leaf = match inputs.leaf {
            Some(leaf) => leaf,
            // an archived leaf is in a tile the store has not written
            None if inputs.archived => return Err(AuditError::TilesBehind(size).into()),
            None => return Err(mismatch(size)),
        };
        let tiles = inputs.tiles;
        let proof = off_workers(move || {
            let proof = tiles
                .inclusion_proof(index, size)
                .map_err(|e| proof_failed(size, e))?;
            verify_inclusion(&leaf, index, size, &proof, &root).map_err(|e| {
                tracing::error!(size, index, error = %e, "an inclusion proof does not verify");
                mismatch(size)
            })?;
            Ok(proof)
        })
        .await?;
        Ok(pb::InclusionProofResponse {
            index: req.index,
            tree_size: size,
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint: Some(checkpoint_to_proto(&checkpoint)?),
        })
    }

    /// A consistency proof between two signed roots, checked.
    async fn prove_consistency(
        &self,
        req: pb::ConsistencyProofRequest,
    ) -> Result<pb::ConsistencyProofResponse, Status> {
        let new = self.checkpoint("new_size", req.new_size).await?;
        if req.old_size > new.size {
            return Err(invalid(
                "old_size",
                format!("{} is above the new size {}", req.old_size, new.size),
            ));
        }
        let old = match req.old_size {
            0 => None,
            size => Some(self.checkpoint("old_size", size).await?),
        };
        let new_root = self.signed_root(&new)?;
        let old_root = match &old {
            Some(old) => self.signed_root(old)?,
            None => jembatan_tlog::merkle::empty_root(),
        };
        let (old_size, new_size) = (req.old_size, new.size);
        let tiles = self
            .store
            .tiles(&needed_for_consistency(old_size, new_size))
            .await
            .map_err(unavailable)?;
        let proof = off_workers(move || {
            let proof = tiles
                .consistency_proof(old_size, new_size)
                .map_err(|e| proof_failed(new_size, e))?;
            verify_consistency(old_size, new_size, &old_root, &new_root, &proof).map_err(|e| {
                tracing::error!(old_size, new_size, error = %e, "a consistency proof does not verify");
                mismatch(new_size)
            })?;
            Ok(proof)
        })
        .await?;
        Ok(pb::ConsistencyProofResponse {
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
            old_checkpoint: old.as_ref().map(checkpoint_to_proto).transpose()?,
            new_checkpoint: Some(checkpoint_to_proto(&new)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_errors_become_statuses_in_one_place() {
        let cases: [(&str, AuditError, tonic::Code, &str); 5] = [
            (
                "a store error stays in the log",
                AuditError::Store(jembatan_store::StoreError::AuditUnavailable(
                    "pool closed".into(),
                )),
                tonic::Code::Unavailable,
                "the broker store is unavailable",
            ),
            (
                "a log that does not match its checkpoint",
                AuditError::Mismatch(7),
                tonic::Code::DataLoss,
                "the stored log does not match its checkpoint at size 7; run `jembatan audit verify`",
            ),
            (
                "not an auditor",
                AuditError::NotAuditor(Role::Agency),
                tonic::Code::PermissionDenied,
                "the Audit service is for auditor certificates; this certificate's role is agency",
            ),
            (
                "no checkpoint yet",
                AuditError::NoCheckpoint,
                tonic::Code::NotFound,
                "no checkpoint has been signed yet",
            ),
            (
                "tiles behind",
                AuditError::TilesBehind(9),
                tonic::Code::Unavailable,
                "the tree's tiles do not cover the checkpoint at size 9 yet",
            ),
        ];
        for (name, err, code, message) in cases {
            let status = Status::from(err);
            assert_eq!((status.code(), status.message()), (code, message), "{name}");
        }
    }

    #[test]
    fn the_next_checkpoint_is_due_an_interval_after_the_latest_or_from_now() {
        let schedule = Schedule {
            every: 1000,
            interval: std::time::Duration::from_secs(10),
        };
        let t = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
        // signed 3 s ago: due in 7 s
        assert_eq!(schedule.next_due(Some(t(100)), t(103)), t(110));
        // due now
        assert_eq!(schedule.next_due(Some(t(100)), t(110)), t(110));
        // overdue (the log did not grow, or the broker restarted): at
        // most an interval from now
        assert_eq!(schedule.next_due(Some(t(100)), t(500)), t(510));
        assert_eq!(schedule.next_due(None, t(500)), t(510));
    }

    #[test]
    fn a_reads_entry_names_the_caller_terms_and_outcome() {
        let identity: Result<Identity, Status> = Ok(Identity::new(Role::Auditor, None).unwrap());
        let mut read = Read::new("audit.query_entries", &identity);
        read.term("agency", text_term("dinsos"));
        read.term("dataset", text_term(""));
        read.term("from", time_term(None));
        read.term("page_token", text_term(&"9".repeat(300)));
        let served = Served::entries(&[pb::AuditEntry {
            seq: 0,
            canonical: b"{}".to_vec(),
            ..Default::default()
        }]);
        let e = read.entry(Ok(&served));
        assert_eq!(e.kind, EntryKind::AuditRead);
        assert_eq!(e.caller, "auditor");
        let filter = e.filter.unwrap();
        assert_eq!(filter["agency"], "dinsos");
        assert!(filter.get("dataset").is_none() && filter.get("from").is_none());
        assert_eq!(filter["page_token"].as_str().unwrap().len(), MAX_TERM_BYTES);
        assert_eq!((e.rows, e.bytes), (1, 2));
        // SHA-256 of "{}\n"
        assert_eq!(
            e.payload_sha256.as_deref(),
            Some("ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356")
        );
        let refusals = [
            (
                Status::permission_denied("not an auditor"),
                Decision::Deny,
                ExchangeStatus::Denied,
            ),
            (
                Status::unauthenticated("no certificate"),
                Decision::Deny,
                ExchangeStatus::Denied,
            ),
            (
                Status::invalid_argument("decision: must be"),
                Decision::Deny,
                ExchangeStatus::Invalid,
            ),
            (
                Status::unavailable("store"),
                Decision::Allow,
                ExchangeStatus::Failed,
            ),
        ];
        for (status, decision, outcome) in refusals {
            let read = Read::new("audit.subject_lookup", &Err(Status::unauthenticated("x")));
            let e = read.entry(Err(&status));
            assert_eq!((e.decision, e.status), (decision, outcome), "{status:?}");
            assert_eq!(e.caller, "unauthenticated");
            assert_eq!((e.rows, e.payload_sha256), (0, None));
        }
    }

    #[test]
    fn requests_are_validated_naming_the_field() {
        let field_of = |r: Result<(EntryQuery, u64), Status>| {
            let status = r.expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status.message().to_owned()
        };
        let req = |f: fn(&mut pb::QueryEntriesRequest)| {
            let mut r = pb::QueryEntriesRequest::default();
            f(&mut r);
            entry_query(r)
        };
        for (msg, want) in [
            (field_of(req(|r| r.agency = "Bad Agency".into())), "agency"),
            (field_of(req(|r| r.dataset = "nodot".into())), "dataset"),
            (field_of(req(|r| r.decision = "maybe".into())), "decision"),
            (field_of(req(|r| r.status = "done".into())), "status"),
            (field_of(req(|r| r.purpose = "p".repeat(257))), "purpose"),
            (field_of(req(|r| r.page_size = 1001)), "page_size"),
            (field_of(req(|r| r.page_token = "x".into())), "page_token"),
            (
                field_of(req(|r| {
                    r.from = Some(prost_types::Timestamp {
                        seconds: 10,
                        nanos: 0,
                    });
                    r.until = Some(prost_types::Timestamp {
                        seconds: 5,
                        nanos: 0,
                    });
                })),
                "until",
            ),
            (
                field_of(req(|r| {
                    r.from = Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -1,
                    })
                })),
                "from",
            ),
            (
                field_of(subject_query(pb::SubjectLookupRequest {
                    subject_hash: "abc".into(),
                    ..Default::default()
                })),
                "subject_hash",
            ),
        ] {
            assert!(msg.contains(want), "{msg:?} does not name {want}");
        }
        let (q, size) = req(|r| {
            r.agency = "dinsos".into();
            r.decision = "deny".into();
            r.page_token = "42".into();
            r.from = Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 1,
            });
        })
        .unwrap();
        assert_eq!(size, 100);
        assert_eq!(q.agency.as_deref(), Some("dinsos"));
        assert_eq!(q.decision.as_deref(), Some("deny"));
        assert_eq!(q.from_seq, 42);
        // rounded up to the microsecond: nothing before the instant matches
        assert_eq!(q.from.as_deref(), Some("1970-01-01T00:00:00.000001Z"));
        let (q, size) = subject_query(pb::SubjectLookupRequest {
            subject_hash: "AB".repeat(32),
            page_size: 1000,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(size, 1000);
        assert_eq!(q.subject_hash, Some("ab".repeat(32)));
    }
}
