//! RFC 6962 / RFC 9162 Merkle tree hashing: leaf and node hashes, tree heads,
//! and re-exports of the compact range, proof generation and proof
//! verification; hash tiles for stores in [`tile`].
//!
//! The tree hash (`MTH`) of a list of entries `D[n]` is defined exactly as in
//! [RFC 9162 §2.1.1](https://www.rfc-editor.org/rfc/rfc9162#section-2.1.1):
//!
//! ```text
//! MTH({})       = SHA-256()                                   (the empty string)
//! MTH({d0})     = SHA-256(0x00 || d0)                         (leaf hash)
//! MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))  for n > 1,
//!                 where k is the largest power of two smaller than n
//! ```
//!
//! Everything in this module works on *leaf hashes* ([`leaf_hash`] of an
//! entry) rather than entries, so a store only ever needs to keep 32 bytes per
//! entry to serve proofs.

mod compact;
mod proof;
pub mod tile;
mod verify;

pub use compact::{CompactRange, TreeFullError};
pub use proof::{
    LeafSource, ProveError, consistency_proof, consistency_proof_from, inclusion_proof,
    inclusion_proof_from, root_from,
};
pub use verify::{ProofError, root_from_inclusion, verify_consistency, verify_inclusion};

// ring's SHA-256 (assembly with AVX2/SHA extensions where the CPU has
// them) hashes an audit entry about twice as fast as a portable one, and
// `verify` hashes every entry of the log.
use ring::digest::{Context, SHA256, digest};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Length in bytes of a [`Hash`](type@Hash).
pub const HASH_LEN: usize = 32;

/// Domain-separation prefix of a leaf hash (RFC 6962 §2.1).
pub const LEAF_PREFIX: u8 = 0x00;

/// Domain-separation prefix of an interior node hash (RFC 6962 §2.1).
pub const NODE_PREFIX: u8 = 0x01;

/// The root of the empty tree: `SHA-256("")`
/// (`e3b0c442…7852b855`).
pub fn empty_root() -> Hash {
    finish(digest(&SHA256, &[]))
}

fn finish(d: ring::digest::Digest) -> Hash {
    let mut hash = [0; HASH_LEN];
    hash.copy_from_slice(d.as_ref());
    hash
}

/// The leaf hash of one log entry: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Context::new(&SHA256);
    h.update(&[LEAF_PREFIX]);
    h.update(entry);
    finish(h.finish())
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Context::new(&SHA256);
    h.update(&[NODE_PREFIX]);
    h.update(left);
    h.update(right);
    finish(h.finish())
}

/// The Merkle tree hash (tree head) of a whole list of leaf hashes.
///
/// `root(&[])` is [`empty_root`]; `root(&[h])` is `h`. Runs in O(n) time and
/// O(log n) memory.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut range = CompactRange::new();
    for leaf in leaves {
        // A slice can never hold 2^64 - 1 hashes, so this cannot fail.
        if range.push(*leaf).is_err() {
            break;
        }
    }
    range.root()
}

/// The largest power of two strictly smaller than `n`, for `n >= 2`
/// (the split point `k` of RFC 9162 §2.1.1). Returns 0 for `n < 2`.
pub(crate) fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    // n >= 2, so n - 1 >= 1 and leading_zeros <= 63.
    1u64 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(0), 0);
        assert_eq!(split_point(1), 0);
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
        assert_eq!(split_point((1 << 63) + 1), 1 << 63);
        assert_eq!(split_point(1 << 63), 1 << 62);
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(root(&[]), empty_root());
    }
}
