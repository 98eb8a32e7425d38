//! Hash tiles in the manner of C2SP tlog-tiles: the tree's interior nodes
//! stored in blocks of 256, so that any proof needs a few blocks per level.
//!
//! A tile of level `L` and index `N` holds the hashes of the tree's nodes at
//! height `8·L` numbered `256·N .. 256·N + width` (height 0 are the leaf
//! hashes). A node at height `8·L + k` (`k < 8`) is hashed up from `2^k`
//! consecutive hashes of one level-`L` tile, so the tiles of levels
//! `0..=7` give every perfect subtree of a log of up to 2^64 − 1 entries.
//! A node at height `8·(L+1)` exists only once its 256 children do, so a
//! level-`L+1` tile holds one hash per *full* level-`L` tile; the partial
//! tile at the right edge of each level holds the rest.
//!
//! [`TileBuilder`] produces tiles as leaves are appended, keeping only the
//! right edge (at most 255 hashes a level). [`Tiles`] is a set of tiles read
//! from storage and a [`LeafSource`] over them: the proof generators ask it
//! for O(log n) subtree hashes, each hashed up from one tile.
//! [`needed_for_inclusion`], [`needed_for_consistency`] and
//! [`needed_for_root`] name the tiles a computation reads, so a store can
//! fetch them all at once before hashing.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use super::{
    CompactRange, Hash, LeafSource, ProofError, TreeFullError, consistency_proof_from, empty_root,
    inclusion_proof_from, node_hash, root, split_point,
};

/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile (`2^TILE_HEIGHT`).
pub const TILE_WIDTH: usize = 1 << TILE_HEIGHT;
/// Tile levels a log of up to 2^64 − 1 entries can have.
pub const TILE_LEVELS: u8 = 8;

/// Where a tile sits: its level and its index within the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Tile level: the tile holds nodes of tree height `8 · level`.
    pub level: u8,
    /// Index of the tile within its level.
    pub index: u64,
}

/// A tile with its first `hashes.len()` hashes (`TILE_WIDTH` when full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub id: TileId,
    pub hashes: Vec<Hash>,
}

impl Tile {
    /// The hashes concatenated, as a store keeps them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.hashes.concat()
    }

    /// A tile from its stored bytes; `None` unless they are whole hashes,
    /// at most [`TILE_WIDTH`] of them.
    pub fn from_bytes(id: TileId, bytes: &[u8]) -> Option<Tile> {
        if !bytes.len().is_multiple_of(32) || bytes.len() > TILE_WIDTH * 32 {
            return None;
        }
        let hashes = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Some(Tile { id, hashes })
    }
}

/// The tile holding the perfect subtree of height `height` numbered `index`
/// (leaves `index·2^height .. (index+1)·2^height`), and the positions of
/// the `2^(height mod 8)` hashes in it that hash up to that node.
fn node_place(height: u32, index: u64) -> (TileId, usize, usize) {
    let level = height / TILE_HEIGHT;
    let k = height % TILE_HEIGHT;
    // Index of the node's first descendant at the tile's height.
    let first = index << k;
    let id = TileId {
        level: level as u8,
        index: first >> TILE_HEIGHT,
    };
    let start = (first & (TILE_WIDTH as u64 - 1)) as usize;
    (id, start, start + (1 << k))
}

/// Perfect subtrees of an RFC 9162 range: `[start, end)` is a perfect
/// subtree when its length is a power of two and `start` a multiple of it.
fn perfect(start: u64, end: u64) -> Option<(u32, u64)> {
    let n = end - start;
    (n.is_power_of_two() && start.is_multiple_of(n))
        .then(|| (n.trailing_zeros(), start >> n.trailing_zeros()))
}

/// A tile could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// The tile was not read, or holds fewer hashes than the tree needs.
    #[error("tile {level}/{index} is missing or holds fewer than {width} hashes")]
    Missing { level: u8, index: u64, width: usize },
    /// Stored tiles do not describe a tree of this size.
    #[error("stored tiles do not describe a tree of {size} leaves: {message}")]
    Inconsistent { size: u64, message: String },
    /// The tree cannot grow.
    #[error(transparent)]
    Full(#[from] TreeFullError),
}

/// Tiles read from storage, answering subtree hashes for proofs.
#[derive(Debug, Clone, Default)]
pub struct Tiles {
    tiles: HashMap<TileId, Vec<Hash>>,
}

impl Tiles {
    pub fn new() -> Tiles {
        Tiles::default()
    }

    /// Adds a tile read from storage (a longer copy of it replaces a shorter).
    pub fn insert(&mut self, tile: Tile) {
        let slot = self.tiles.entry(tile.id).or_default();
        if tile.hashes.len() > slot.len() {
            *slot = tile.hashes;
        }
    }

    /// Puts a tile in place of any copy of it, e.g. one hashed afresh from
    /// the entries.
    pub fn replace(&mut self, tile: Tile) {
        self.tiles.insert(tile.id, tile.hashes);
    }

    /// The hashes of a tile, as far as they were read.
    pub fn get(&self, id: TileId) -> Option<&[Hash]> {
        self.tiles.get(&id).map(Vec::as_slice)
    }

    /// The hash of the perfect subtree of `height` numbered `index`.
    pub fn node(&self, height: u32, index: u64) -> Result<Hash, TileError> {
        let (id, start, end) = node_place(height, index);
        let missing = TileError::Missing {
            level: id.level,
            index: id.index,
            width: end,
        };
        let hashes = self.tiles.get(&id).ok_or(missing.clone())?;
        let part = hashes.get(start..end).ok_or(missing)?;
        Ok(root(part))
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, TileError> {
        self.subtree_hash(0, size)
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProveFromTiles> {
        inclusion_proof_from(self, index, size).map_err(ProveFromTiles::from)
    }

    /// The consistency proof between the trees of `old_size` and `new_size`.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, ProveFromTiles> {
        consistency_proof_from(self, old_size, new_size).map_err(ProveFromTiles::from)
    }
}

/// A proof could not be made from tiles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProveFromTiles {
    #[error(transparent)]
    Invalid(#[from] ProofError),
    #[error(transparent)]
    Tile(#[from] TileError),
}

impl From<super::ProveError<TileError>> for ProveFromTiles {
    fn from(e: super::ProveError<TileError>) -> Self {
        match e {
            super::ProveError::Invalid(e) => ProveFromTiles::Invalid(e),
            super::ProveError::Source(e) => ProveFromTiles::Tile(e),
        }
    }
}

/// `MTH(D[start:end])` from perfect subtrees: RFC 9162's split, where every
/// range a proof asks for splits into a perfect left part and a right part
/// that again starts on a boundary.
fn range_hash<E>(
    start: u64,
    end: u64,
    node: &impl Fn(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    if start >= end {
        return Ok(empty_root());
    }
    if let Some((height, index)) = perfect(start, end) {
        return node(height, index);
    }
    let mid = start + split_point(end - start);
    Ok(node_hash(
        &range_hash(start, mid, node)?,
        &range_hash(mid, end, node)?,
    ))
}

impl LeafSource for Tiles {
    type Error = TileError;

    fn leaf_hash(&self, index: u64) -> Result<Hash, TileError> {
        self.node(0, index)
    }

    fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, TileError> {
        range_hash(start, end, &|h, i| self.node(h, i))
    }
}

/// Records which tiles (and how much of each) a computation reads.
#[derive(Default)]
struct Recorder {
    needed: RefCell<BTreeMap<TileId, usize>>,
}

impl Recorder {
    fn node(&self, height: u32, index: u64) -> Result<Hash, std::convert::Infallible> {
        let (id, _, end) = node_place(height, index);
        let mut needed = self.needed.borrow_mut();
        let width = needed.entry(id).or_default();
        *width = (*width).max(end);
        Ok([0; 32])
    }

    fn into_needed(self) -> Vec<(TileId, usize)> {
        self.needed.into_inner().into_iter().collect()
    }
}

impl LeafSource for Recorder {
    type Error = std::convert::Infallible;

    fn leaf_hash(&self, index: u64) -> Result<Hash, Self::Error> {
        self.node(0, index)
    }

    fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, Self::Error> {
        range_hash(start, end, &|h, i| self.node(h, i))
    }
}

/// The tiles (and the width needed of each) that the inclusion proof of
/// `index` in a tree of `size` leaves reads; empty when the request is
/// invalid.
pub fn needed_for_inclusion(index: u64, size: u64) -> Vec<(TileId, usize)> {
    let recorder = Recorder::default();
    let _ = inclusion_proof_from(&recorder, index, size);
    recorder.into_needed()
}

/// The tiles the consistency proof from `old_size` to `new_size` reads.
pub fn needed_for_consistency(old_size: u64, new_size: u64) -> Vec<(TileId, usize)> {
    let recorder = Recorder::default();
    let _ = consistency_proof_from(&recorder, old_size, new_size);
    recorder.into_needed()
}

/// The tiles the root of a tree of `size` leaves reads.
pub fn needed_for_root(size: u64) -> Vec<(TileId, usize)> {
    let recorder = Recorder::default();
    let _ = recorder.subtree_hash(0, size);
    recorder.into_needed()
}

/// The right edge of each level of a tree of `size` leaves: the index of
/// the tile being filled and how many hashes it holds (levels with
/// nothing in them left out).
pub fn edge(size: u64) -> Vec<(TileId, usize)> {
    (0..TILE_LEVELS)
        .map_while(|level| {
            let below = size.checked_shr(TILE_HEIGHT * u32::from(level))?;
            (below > 0).then(|| {
                (
                    TileId {
                        level,
                        index: below >> TILE_HEIGHT,
                    },
                    (below & (TILE_WIDTH as u64 - 1)) as usize,
                )
            })
        })
        .collect()
}

/// Builds tiles as leaves are appended, keeping only the partial tile at
/// the right edge of each level, and the tree's compact range.
#[derive(Debug, Clone, Default)]
pub struct TileBuilder {
    range: CompactRange,
    /// Partial tile of each level (fewer than `TILE_WIDTH` hashes).
    edges: Vec<Vec<Hash>>,
    /// Tiles completed since the last [`take_changed`](Self::take_changed).
    full: Vec<Tile>,
    /// Levels whose partial tile changed since then.
    touched: Vec<bool>,
}

impl TileBuilder {
    /// An empty tree.
    pub fn new() -> TileBuilder {
        TileBuilder::default()
    }

    /// Resumes from the partial tiles of a tree of `size` leaves, lowest
    /// level first, as [`edge`] names them (a longer tile is cut to the
    /// width the tree has).
    pub fn resume(size: u64, partial: Vec<Vec<Hash>>) -> Result<TileBuilder, TileError> {
        let edge = edge(size);
        let inconsistent = |message: String| TileError::Inconsistent { size, message };
        if partial.len() != edge.len() {
            return Err(inconsistent(format!(
                "{} levels given, {} expected",
                partial.len(),
                edge.len()
            )));
        }
        let mut edges = Vec::with_capacity(edge.len());
        for ((id, width), mut hashes) in edge.into_iter().zip(partial) {
            if hashes.len() < width {
                return Err(inconsistent(format!(
                    "tile {}/{} holds {} hashes, {width} expected",
                    id.level,
                    id.index,
                    hashes.len()
                )));
            }
            hashes.truncate(width);
            edges.push(hashes);
        }
        // The compact range: the perfect subtrees of each level's partial
        // tile, largest first, from the top level down.
        let mut roots = Vec::new();
        for hashes in edges.iter().rev() {
            let mut at = 0;
            for bit in (0..TILE_HEIGHT).rev() {
                let n = 1 << bit;
                if hashes.len() & n != 0 {
                    roots.push(root(&hashes[at..at + n]));
                    at += n;
                }
            }
        }
        let range = CompactRange::from_parts(size, roots)
            .ok_or_else(|| inconsistent("the edges do not cover the tree".into()))?;
        let touched = vec![false; edges.len()];
        Ok(TileBuilder {
            range,
            edges,
            full: Vec::new(),
            touched,
        })
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        self.range.root()
    }

    /// The tree's compact range.
    pub fn range(&self) -> &CompactRange {
        &self.range
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) -> Result<(), TreeFullError> {
        let size = self.size();
        self.range.push(leaf)?;
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.edges.len() == level {
                self.edges.push(Vec::with_capacity(TILE_WIDTH));
                self.touched.push(false);
            }
            self.edges[level].push(hash);
            self.touched[level] = true;
            if self.edges[level].len() < TILE_WIDTH {
                return Ok(());
            }
            // The tile is full: store it, and its root is the next level's.
            let hashes = std::mem::replace(&mut self.edges[level], Vec::with_capacity(TILE_WIDTH));
            hash = root(&hashes);
            let index = size >> (TILE_HEIGHT * (level as u32 + 1));
            self.full.push(Tile {
                id: TileId {
                    level: level as u8,
                    index,
                },
                hashes,
            });
            level += 1;
        }
    }

    /// The tiles that changed since the last call: every tile completed,
    /// then each level's partial tile that grew (or was emptied by a
    /// completed one, which then is not returned).
    pub fn take_changed(&mut self) -> Vec<Tile> {
        let mut out = std::mem::take(&mut self.full);
        let size = self.size();
        for (level, (touched, hashes)) in self.touched.iter_mut().zip(&self.edges).enumerate() {
            if std::mem::take(touched) && !hashes.is_empty() {
                out.push(Tile {
                    id: TileId {
                        level: level as u8,
                        index: size >> (TILE_HEIGHT * (level as u32 + 1)),
                    },
                    hashes: hashes.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{consistency_proof, inclusion_proof, leaf_hash};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn built(leaves: &[Hash]) -> (TileBuilder, Tiles) {
        let mut b = TileBuilder::new();
        let mut tiles = Tiles::new();
        for (i, leaf) in leaves.iter().enumerate() {
            b.push(*leaf).unwrap();
            if i % 97 == 0 {
                b.take_changed().into_iter().for_each(|t| tiles.insert(t));
            }
        }
        b.take_changed().into_iter().for_each(|t| tiles.insert(t));
        (b, tiles)
    }

    #[test]
    fn node_places() {
        assert_eq!(node_place(0, 300), (TileId { level: 0, index: 1 }, 44, 45));
        assert_eq!(node_place(3, 2), (TileId { level: 0, index: 0 }, 16, 24));
        assert_eq!(node_place(8, 5), (TileId { level: 1, index: 0 }, 5, 6));
        assert_eq!(
            node_place(9, 200),
            (TileId { level: 1, index: 1 }, 144, 146)
        );
    }

    #[test]
    fn edges_name_the_partial_tiles() {
        assert!(edge(0).is_empty());
        assert_eq!(edge(255), vec![(TileId { level: 0, index: 0 }, 255)]);
        assert_eq!(
            edge(256),
            vec![
                (TileId { level: 0, index: 1 }, 0),
                (TileId { level: 1, index: 0 }, 1)
            ]
        );
        assert_eq!(edge(u64::MAX).len(), 8);
    }

    #[test]
    fn tiles_give_the_same_proofs_and_roots_as_the_leaves() {
        for n in [
            1u64, 2, 3, 255, 256, 257, 511, 512, 513, 1000, 65535, 65536, 65537,
        ] {
            let leaves = leaves(n);
            let (b, tiles) = built(&leaves);
            assert_eq!(b.root(), root(&leaves), "{n}");
            let resumed = TileBuilder::resume(
                n,
                edge(n)
                    .iter()
                    .map(|(id, _)| tiles.get(*id).map(<[_]>::to_vec).unwrap_or_default())
                    .collect(),
            )
            .unwrap();
            assert_eq!(resumed.range(), b.range(), "{n}");
            let sizes = [1, n / 3 + 1, n.saturating_sub(1).max(1), n];
            for size in sizes {
                assert_eq!(tiles.root(size).unwrap(), root(&leaves[..size as usize]));
                for index in [0, size / 2, size - 1] {
                    assert_eq!(
                        tiles.inclusion_proof(index, size).unwrap(),
                        inclusion_proof(&leaves, index, size).unwrap(),
                        "{index} in {size}"
                    );
                    let mut only = Tiles::new();
                    for (id, width) in needed_for_inclusion(index, size) {
                        let mut t = tiles.tiles[&id].clone();
                        assert!(t.len() >= width);
                        t.truncate(width);
                        only.insert(Tile { id, hashes: t });
                    }
                    assert_eq!(
                        only.inclusion_proof(index, size).unwrap(),
                        tiles.inclusion_proof(index, size).unwrap()
                    );
                }
                for old in [1, size / 2 + 1, size] {
                    let old = old.min(size);
                    assert_eq!(
                        tiles.consistency_proof(old, size).unwrap(),
                        consistency_proof(&leaves, old, size).unwrap(),
                        "{old} to {size}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_missing_or_short_tile_is_named() {
        let leaves = leaves(300);
        let (_, tiles) = built(&leaves);
        let mut short = Tiles::new();
        short.insert(Tile {
            id: TileId { level: 0, index: 1 },
            hashes: tiles.tiles[&TileId { level: 0, index: 1 }][..10].to_vec(),
        });
        assert_eq!(
            short.node(0, 299),
            Err(TileError::Missing {
                level: 0,
                index: 1,
                width: 44
            })
        );
        assert!(matches!(
            Tiles::new().inclusion_proof(0, 300),
            Err(ProveFromTiles::Tile(TileError::Missing { .. }))
        ));
        assert!(TileBuilder::resume(300, vec![vec![[0; 32]; 44]]).is_err());
    }

    #[test]
    fn tile_bytes_round_trip() {
        let t = Tile {
            id: TileId { level: 2, index: 9 },
            hashes: leaves(3),
        };
        assert_eq!(Tile::from_bytes(t.id, &t.to_bytes()), Some(t.clone()));
        assert_eq!(Tile::from_bytes(t.id, &[0; 33]), None);
        assert_eq!(Tile::from_bytes(t.id, &vec![0; 257 * 32]), None);
    }
}
