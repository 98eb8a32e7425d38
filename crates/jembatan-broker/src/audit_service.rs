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

use std::borrow::Cow;

use jembatan_core::{AgencyId, DatasetId, ErrorCode, InvalidArgument, Role, ServiceError};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::audit_server::Audit;
use jembatan_store::{EntryQuery, RawEntry, Store, StoredCheckpoint};
use jembatan_tlog::merkle::tile::{
    ProveFromTiles, TileError, needed_for_consistency, needed_for_inclusion,
};
use jembatan_tlog::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use jembatan_tlog::note::{Checkpoint, Verifier};
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
    /// The checkpoint key's verifier: proofs are checked against the root
    /// the note signs.
    verifier: Verifier,
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
}

impl ServiceError for AuditError {
    fn code(&self) -> ErrorCode {
        match self {
            AuditError::Store(_) | AuditError::TilesBehind(_) => ErrorCode::Unavailable,
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
fn authorize<T>(request: &Request<T>) -> Result<(), Status> {
    let identity = jembatan_pki::peer_identity(request)?;
    if identity.role != Role::Auditor {
        return Err(AuditError::NotAuditor(identity.role).into());
    }
    tracing::debug!(%identity, "audit service call");
    Ok(())
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

fn checkpoint_to_proto(c: &StoredCheckpoint) -> Result<pb::Checkpoint, Status> {
    let root_hash = hex::decode(&c.root_hash).map_err(|_| mismatch(c.size))?;
    Ok(pb::Checkpoint {
        note: c.note.clone(),
        size: c.size,
        root_hash,
    })
}

type EntryStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::AuditEntry, Status>>>;

impl AuditService {
    pub(crate) fn new(store: Store, verifier: Verifier) -> Self {
        Self { store, verifier }
    }

    /// One page of matching entries, the last carrying the next page's
    /// token when more match.
    async fn page(&self, query: EntryQuery, size: u64) -> Result<EntryStream, Status> {
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
        let mut entries: Vec<Result<pb::AuditEntry, Status>> = rows
            .into_iter()
            .map(|r| {
                Ok(pb::AuditEntry {
                    seq: r.seq,
                    canonical: r.entry,
                    entry_sha256: r.entry_sha256,
                    next_page_token: String::new(),
                })
            })
            .collect();
        if let (Some(next), Some(Ok(last))) = (next, entries.last_mut()) {
            last.next_page_token = next;
        }
        Ok(tokio_stream::iter(entries))
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
        authorize(&request)?;
        let (query, size) = entry_query(request.into_inner())?;
        Ok(Response::new(self.page(query, size).await?))
    }

    async fn latest_checkpoint(
        &self,
        request: Request<pb::LatestCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        authorize(&request)?;
        Ok(Response::new(checkpoint_to_proto(&self.latest().await?)?))
    }

    async fn inclusion_proof(
        &self,
        request: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofResponse>, Status> {
        authorize(&request)?;
        let req = request.into_inner();
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
        let tiles = self
            .store
            .tiles(&needed_for_inclusion(index, size))
            .await
            .map_err(unavailable)?;
        let entry = self
            .store
            .raw_entries(index, 1)
            .await
            .map_err(unavailable)?
            .pop()
            .filter(|e| e.seq == index)
            .ok_or_else(|| mismatch(size))?;
        let proof = off_workers(move || {
            let proof = tiles
                .inclusion_proof(index, size)
                .map_err(|e| proof_failed(size, e))?;
            verify_inclusion(&leaf_hash(&entry.entry), index, size, &proof, &root).map_err(
                |e| {
                    tracing::error!(size, index, error = %e, "an inclusion proof does not verify");
                    mismatch(size)
                },
            )?;
            Ok(proof)
        })
        .await?;
        Ok(Response::new(pb::InclusionProofResponse {
            index: req.index,
            tree_size: size,
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint: Some(checkpoint_to_proto(&checkpoint)?),
        }))
    }

    async fn consistency_proof(
        &self,
        request: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofResponse>, Status> {
        authorize(&request)?;
        let req = request.into_inner();
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
        Ok(Response::new(pb::ConsistencyProofResponse {
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
            old_checkpoint: old.as_ref().map(checkpoint_to_proto).transpose()?,
            new_checkpoint: Some(checkpoint_to_proto(&new)?),
        }))
    }

    async fn subject_lookup(
        &self,
        request: Request<pb::SubjectLookupRequest>,
    ) -> Result<Response<Self::SubjectLookupStream>, Status> {
        authorize(&request)?;
        let (query, size) = subject_query(request.into_inner())?;
        Ok(Response::new(self.page(query, size).await?))
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
