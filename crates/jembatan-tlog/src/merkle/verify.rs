//! Proof verification per RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
//! (consistency): the bit-twiddling algorithms that need only the proof, the
//! sizes and the roots — never the leaves.

use super::{Hash, empty_root, node_hash};

/// Why a proof could not be generated or did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Requested leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The tree size exceeds the number of leaves available to the prover.
    #[error("tree size {size} exceeds the {available} leaves available")]
    SizeOutOfRange {
        /// Requested tree size.
        size: u64,
        /// Leaves actually available.
        available: u64,
    },
    /// A consistency proof was asked for a tree that shrank.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizeRegression {
        /// Old tree size.
        old: u64,
        /// New tree size.
        new: u64,
    },
    /// The proof has more hashes than the sizes allow.
    #[error("proof has more hashes than the tree sizes allow")]
    ProofTooLong,
    /// The proof has fewer hashes than the sizes require.
    #[error("proof has fewer hashes than the tree sizes require")]
    ProofTooShort,
    /// A non-trivial consistency proof was empty.
    #[error("consistency proof is empty")]
    EmptyProof,
    /// A proof that must be empty (old size 0, or equal sizes) was not.
    #[error("proof must be empty for these tree sizes")]
    ProofNotEmpty,
    /// The root recomputed from an inclusion proof differs from the expected
    /// root, or two equal-size trees have different roots.
    #[error("root hash does not match")]
    RootMismatch,
    /// The old root recomputed from a consistency proof differs from the
    /// expected old root.
    #[error("old root hash does not match")]
    OldRootMismatch,
    /// The new root recomputed from a consistency proof differs from the
    /// expected new root.
    #[error("new root hash does not match")]
    NewRootMismatch,
}

/// The root implied by an inclusion proof of `leaf_hash` at `index` in a tree
/// of `size` leaves (RFC 9162 §2.1.3.2 steps 1–4, and the `sn == 0` check of
/// step 5).
pub fn root_from_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                // Skip levels where our node is a right-edge node with no
                // sibling.
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::ProofTooShort);
    }
    Ok(r)
}

/// Verifies that `leaf_hash` is the leaf at `index` of the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion(leaf_hash, index, size, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`
/// (RFC 9162 §2.1.4.2).
///
/// Trivial cases: equal sizes need an empty proof and equal roots; an old
/// size of 0 needs an empty proof and `old_root` equal to the empty-tree hash
/// (`SHA-256("")`).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeRegression {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::ProofNotEmpty);
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(ProofError::OldRootMismatch);
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // Step 1: a non-trivial proof is never empty.
    let Some((head, tail)) = proof.split_first() else {
        return Err(ProofError::EmptyProof);
    };
    // Step 2: if the old tree is a perfect subtree, its root is implicitly
    // the first element of the path.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (head, tail)
    };
    // Steps 3-4.
    let mut f = old_size - 1;
    let mut s = new_size - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // Step 5.
    let mut fr = *first;
    let mut sr = *first;
    // Step 6.
    for c in rest {
        if s == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 7.
    if s != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}
