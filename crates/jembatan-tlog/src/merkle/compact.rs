//! `CompactRange`: an append-only Merkle tree builder that keeps only the
//! O(log n) roots of the perfect subtrees covering the leaves seen so far.

use super::{Hash, empty_root, node_hash};

/// Appending to a [`CompactRange`] would make it exceed `u64::MAX` leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tree is full: it cannot grow beyond 2^64 - 1 leaves")]
pub struct TreeFullError;

/// An incremental RFC 9162 Merkle tree over leaf hashes `[0, size)`.
///
/// A tree of `size` leaves is uniquely split into perfect (power-of-two sized)
/// subtrees, one per set bit of `size`, largest first. The compact range keeps
/// exactly the roots of those subtrees (`size.count_ones()` hashes, at most
/// 64), so appending leaves one at a time and asking for the [root](Self::root)
/// at any point needs O(log n) memory — enough to re-verify a log of millions
/// of entries while streaming it.
///
/// ```
/// use jembatan_tlog::merkle::{CompactRange, leaf_hash, root};
///
/// let leaves: Vec<_> = (0u32..1000).map(|i| leaf_hash(&i.to_be_bytes())).collect();
/// let mut range = CompactRange::new();
/// for leaf in &leaves {
///     range.push(*leaf)?;
/// }
/// assert_eq!(range.size(), 1000);
/// assert_eq!(range.root(), root(&leaves));
/// # Ok::<(), jembatan_tlog::merkle::TreeFullError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Roots of the perfect subtrees, left to right (largest subtree first).
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a compact range from a stored `size` and its subtree roots
    /// (as returned by [`hashes`](Self::hashes)), e.g. to resume appending.
    ///
    /// Returns `None` unless `hashes.len() == size.count_ones()`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (usize::try_from(size.count_ones()).ok() == Some(hashes.len()))
            .then_some(Self { size, hashes })
    }

    /// [`from_parts`](Self::from_parts) with the subtree roots as byte
    /// strings (as a wire message carries them): `None` unless each is 32
    /// bytes and there is one per set bit of `size`.
    pub fn from_slices<B: AsRef<[u8]>>(size: u64, hashes: &[B]) -> Option<Self> {
        let hashes = hashes
            .iter()
            .map(|h| Hash::try_from(h.as_ref()).ok())
            .collect::<Option<Vec<Hash>>>()?;
        Self::from_parts(size, hashes)
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Roots of the perfect subtrees covering `[0, size)`, largest first; the
    /// subtree for bit `b` of `size` covers `2^b` leaves.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash (see [`leaf_hash`](super::leaf_hash)).
    ///
    /// Amortised O(1) hashing, O(log n) worst case.
    pub fn push(&mut self, leaf_hash: Hash) -> Result<(), TreeFullError> {
        let new_size = self.size.checked_add(1).ok_or(TreeFullError)?;
        let mut acc = leaf_hash;
        // Every trailing one bit of the old size is a perfect subtree of the
        // same height as `acc` which now merges with it.
        for _ in 0..self.size.trailing_ones() {
            match self.hashes.pop() {
                Some(left) => acc = node_hash(&left, &acc),
                // Unreachable: `hashes.len() == size.count_ones()` holds.
                None => break,
            }
        }
        self.hashes.push(acc);
        self.size = new_size;
        Ok(())
    }

    /// Appends every leaf hash of `leaves` in order.
    pub fn extend<I: IntoIterator<Item = Hash>>(&mut self, leaves: I) -> Result<(), TreeFullError> {
        for leaf in leaves {
            self.push(leaf)?;
        }
        Ok(())
    }

    /// The Merkle tree hash of the leaves appended so far
    /// ([`empty_root`] when none).
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn from_slices_takes_one_32_byte_root_per_set_bit() {
        let leaves: Vec<Hash> = (0u8..5).map(|i| crate::merkle::leaf_hash(&[i])).collect();
        let mut r = CompactRange::new();
        r.extend(leaves).unwrap();
        let bytes: Vec<Vec<u8>> = r.hashes().iter().map(|h| h.to_vec()).collect();
        assert_eq!(CompactRange::from_slices(5, &bytes), Some(r.clone()));
        assert_eq!(CompactRange::from_slices(7, &bytes), None);
        let mut short = bytes.clone();
        short[1].pop();
        assert_eq!(CompactRange::from_slices(5, &short), None);
    }
    use super::*;
    use crate::merkle::leaf_hash;

    #[test]
    fn hashes_track_set_bits() {
        let mut r = CompactRange::new();
        for i in 0u64..100 {
            assert_eq!(r.hashes().len() as u32, r.size().count_ones());
            r.push(leaf_hash(&i.to_be_bytes())).unwrap();
        }
        let again = CompactRange::from_parts(r.size(), r.hashes().to_vec()).unwrap();
        assert_eq!(again, r);
        assert!(CompactRange::from_parts(3, vec![[0; 32]]).is_none());
    }

    #[test]
    fn full_tree_refuses_to_grow() {
        let hashes = vec![[7u8; 32]; 64];
        let mut r = CompactRange::from_parts(u64::MAX, hashes).unwrap();
        assert_eq!(r.push([1; 32]), Err(TreeFullError));
        assert_eq!(r.size(), u64::MAX);
    }
}
