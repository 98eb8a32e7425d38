//! What the browser needs to check an entry itself: the entry's canonical
//! bytes, its inclusion proof, the signed checkpoint the proof leads to,
//! and the verifier key from the console's config (not from the broker).
//! The console checks the same proof before serving it, so a page never
//! shows as proven what does not verify here either.

use base64::Engine as _;
use jembatan_proto::v1 as pb;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct ProofJson {
    pub(crate) seq: u64,
    /// The entry's canonical bytes, base64.
    pub(crate) canonical_base64: String,
    pub(crate) entry_sha256: String,
    pub(crate) tree_size: u64,
    /// Sibling hashes from the leaf up, hex.
    pub(crate) hashes: Vec<String>,
    pub(crate) checkpoint: CheckpointJson,
    /// `<name>+<key id>+<base64 key>`, from the console's config.
    pub(crate) verifier_key: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CheckpointJson {
    pub(crate) note: String,
    pub(crate) size: u64,
    pub(crate) root_hash: String,
}

impl ProofJson {
    pub(crate) fn new(
        entry: &pb::AuditEntry,
        proof: &pb::InclusionProofResponse,
        verifier_key: Option<&str>,
    ) -> ProofJson {
        let checkpoint = proof.checkpoint.clone().unwrap_or_default();
        ProofJson {
            seq: entry.seq,
            canonical_base64: base64::engine::general_purpose::STANDARD.encode(&entry.canonical),
            entry_sha256: entry.entry_sha256.clone(),
            tree_size: proof.tree_size,
            hashes: proof.hashes.iter().map(hex::encode).collect(),
            checkpoint: CheckpointJson {
                note: checkpoint.note,
                size: checkpoint.size,
                root_hash: hex::encode(&checkpoint.root_hash),
            },
            verifier_key: verifier_key.map(str::to_owned),
        }
    }

    /// Whether the proof holds here too: the leaf hash of the canonical
    /// bytes leads through the hashes to the checkpoint's root.
    pub(crate) fn holds(entry: &pb::AuditEntry, proof: &pb::InclusionProofResponse) -> bool {
        use jembatan_tlog::merkle;
        let Some(checkpoint) = &proof.checkpoint else {
            return false;
        };
        let Ok(root) = <[u8; 32]>::try_from(checkpoint.root_hash.as_slice()) else {
            return false;
        };
        let hashes: Option<Vec<[u8; 32]>> = proof
            .hashes
            .iter()
            .map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .collect();
        let Some(hashes) = hashes else { return false };
        let leaf = merkle::leaf_hash(&entry.canonical);
        merkle::verify_inclusion(&leaf, entry.seq, proof.tree_size, &hashes, &root).is_ok()
    }
}
