//! Proof generation: RFC 9162 §2.1.3.1 inclusion paths (`PATH`) and §2.1.4.1
//! consistency proofs (`PROOF`/`SUBPROOF`), over a slice of leaf hashes or any
//! [`LeafSource`] a store provides.

use super::{CompactRange, Hash, ProofError, empty_root, root, split_point};

/// Supplies the leaf hashes of a log to the proof generators, so that a store
/// (a database table, a file of hashes, a tile cache…) can serve proofs
/// without materialising the whole tree.
///
/// Only [`leaf_hash`](Self::leaf_hash) is required. A store that caches
/// interior nodes should override [`subtree_hash`](Self::subtree_hash): proof
/// generation asks only for O(log n) subtree hashes, but the default
/// implementation computes each one from its leaves (O(n) leaf reads per
/// proof in total).
///
/// Implemented for `[Hash]` (error type [`ProofError`]) and for any closure
/// `Fn(u64) -> Result<Hash, E>`.
pub trait LeafSource {
    /// The error a store reports when it cannot supply a hash.
    type Error;

    /// The leaf hash at `index` (zero-based).
    fn leaf_hash(&self, index: u64) -> Result<Hash, Self::Error>;

    /// The Merkle tree hash of the leaves `[start, end)`, i.e.
    /// `MTH(D[start:end])` ([`empty_root`] when `start >= end`).
    ///
    /// Proof generation only calls this with `start < end`.
    fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, Self::Error> {
        if start >= end {
            return Ok(empty_root());
        }
        let mut range = CompactRange::new();
        for index in start..end {
            // `end - start < 2^64 - 1`, so the range never fills up.
            if range.push(self.leaf_hash(index)?).is_err() {
                break;
            }
        }
        Ok(range.root())
    }
}

impl LeafSource for [Hash] {
    type Error = ProofError;

    fn leaf_hash(&self, index: u64) -> Result<Hash, ProofError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.get(i))
            .copied()
            .ok_or(ProofError::SizeOutOfRange {
                size: index.saturating_add(1),
                available: self.len() as u64,
            })
    }

    fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, ProofError> {
        if start >= end {
            return Ok(empty_root());
        }
        let out_of_range = ProofError::SizeOutOfRange {
            size: end,
            available: self.len() as u64,
        };
        let (Ok(lo), Ok(hi)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(out_of_range);
        };
        self.get(lo..hi).map(root).ok_or(out_of_range)
    }
}

impl<F, E> LeafSource for F
where
    F: Fn(u64) -> Result<Hash, E>,
{
    type Error = E;

    fn leaf_hash(&self, index: u64) -> Result<Hash, E> {
        self(index)
    }
}

/// Proof generation failed: the arguments were invalid, or the
/// [`LeafSource`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProveError<E> {
    /// The requested index or sizes do not describe a valid proof.
    #[error(transparent)]
    Invalid(#[from] ProofError),
    /// The leaf source could not supply a hash.
    #[error("leaf source failed")]
    Source(#[source] E),
}

impl ProveError<ProofError> {
    fn flatten(self) -> ProofError {
        match self {
            Self::Invalid(e) | Self::Source(e) => e,
        }
    }
}

/// The tree head of the first `size` leaves of `src`.
pub fn root_from<S: LeafSource + ?Sized>(src: &S, size: u64) -> Result<Hash, S::Error> {
    src.subtree_hash(0, size)
}

/// The inclusion proof (audit path) of leaf `index` in the tree made of the
/// first `size` leaf hashes of `leaves` (RFC 9162 §2.1.3.1 `PATH`).
///
/// The proof lists sibling subtree hashes from the leaf upwards; it is empty
/// for a tree of one leaf. Fails if `index >= size` or `size > leaves.len()`.
pub fn inclusion_proof(leaves: &[Hash], index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
    check_available(leaves, size)?;
    inclusion_proof_from(leaves, index, size).map_err(ProveError::flatten)
}

/// The consistency proof between the trees made of the first `old_size` and
/// the first `new_size` leaf hashes of `leaves` (RFC 9162 §2.1.4.1 `PROOF`).
///
/// Empty when `old_size == 0` or `old_size == new_size`. Fails if
/// `old_size > new_size` or `new_size > leaves.len()`.
pub fn consistency_proof(
    leaves: &[Hash],
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    check_available(leaves, new_size)?;
    consistency_proof_from(leaves, old_size, new_size).map_err(ProveError::flatten)
}

fn check_available(leaves: &[Hash], size: u64) -> Result<(), ProofError> {
    let available = leaves.len() as u64;
    if size > available {
        return Err(ProofError::SizeOutOfRange { size, available });
    }
    Ok(())
}

/// [`inclusion_proof`] over any [`LeafSource`]; the source must hold at least
/// `size` leaves.
pub fn inclusion_proof_from<S: LeafSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    // PATH(m, D[lo:hi]) walked top-down: at each level keep the half holding
    // `index` and record the other half's hash; the proof lists them bottom-up.
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            proof.push(src.subtree_hash(mid, hi).map_err(ProveError::Source)?);
            hi = mid;
        } else {
            proof.push(src.subtree_hash(lo, mid).map_err(ProveError::Source)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// [`consistency_proof`] over any [`LeafSource`]; the source must hold at
/// least `new_size` leaves.
pub fn consistency_proof_from<S: LeafSource + ?Sized>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if old_size > new_size {
        return Err(ProofError::SizeRegression {
            old: old_size,
            new: new_size,
        }
        .into());
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b) walked top-down. The recursion appends the
    // sibling hash *after* the deeper part of the proof, so siblings are
    // collected top-down and emitted in reverse, after the terminal node.
    let mut siblings = Vec::new();
    let (mut lo, mut hi) = (0u64, new_size);
    let mut m = old_size; // Relative to `lo`; 1 <= m <= hi - lo throughout.
    let mut whole_old_tree = true; // The RFC's `b`.
    while m != hi - lo {
        let k = split_point(hi - lo);
        if m <= k {
            siblings.push(src.subtree_hash(lo + k, hi).map_err(ProveError::Source)?);
            hi = lo + k;
        } else {
            siblings.push(src.subtree_hash(lo, lo + k).map_err(ProveError::Source)?);
            lo += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    let mut proof = Vec::with_capacity(siblings.len() + 1);
    if !whole_old_tree {
        proof.push(src.subtree_hash(lo, hi).map_err(ProveError::Source)?);
    }
    proof.extend(siblings.into_iter().rev());
    Ok(proof)
}
