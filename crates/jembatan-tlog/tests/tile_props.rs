//! Property tests for hash tiles: proofs and roots made from tiles equal
//! those made from all the leaves, at every size (tile boundaries
//! included), with only the tiles `needed_for_*` names, and a builder
//! resumed from its stored right edge carries on the same tree.

mod common;

use common::synthetic_leaves;
use jembatan_tlog::merkle::tile::{
    Tile, TileBuilder, Tiles, edge, needed_for_consistency, needed_for_inclusion, needed_for_root,
};
use jembatan_tlog::merkle::{Hash, consistency_proof, inclusion_proof, root};
use proptest::prelude::*;

/// The tiles of `leaves`, written as a store receives them: the builder's
/// changes taken every `step` leaves, a longer copy replacing a shorter.
fn stored_tiles(leaves: &[Hash], step: usize) -> (TileBuilder, Tiles) {
    let mut builder = TileBuilder::new();
    let mut tiles = Tiles::new();
    for chunk in leaves.chunks(step.max(1)) {
        for leaf in chunk {
            builder.push(*leaf).unwrap();
        }
        builder
            .take_changed()
            .into_iter()
            .for_each(|t| tiles.insert(t));
    }
    (builder, tiles)
}

/// Only the named tiles, cut to the width named: what a store read returns.
fn only(tiles: &Tiles, needed: &[(jembatan_tlog::merkle::tile::TileId, usize)]) -> Tiles {
    let mut out = Tiles::new();
    for (id, width) in needed {
        let hashes = tiles.get(*id).expect("a needed tile was written");
        assert!(hashes.len() >= *width, "tile {id:?} shorter than needed");
        out.insert(Tile {
            id: *id,
            hashes: hashes[..*width].to_vec(),
        });
    }
    out
}

/// Sizes on and around tile boundaries of levels 0 and 1.
const BOUNDARIES: [u64; 12] = [
    1, 2, 255, 256, 257, 511, 512, 513, 65535, 65536, 65537, 70001,
];

#[test]
fn proofs_at_tile_boundaries_equal_the_reference() {
    let leaves = synthetic_leaves(70001);
    let (builder, tiles) = stored_tiles(&leaves, 1000);
    assert_eq!(builder.root(), root(&leaves));
    for &size in &BOUNDARIES {
        let prefix = &leaves[..size as usize];
        let r = only(&tiles, &needed_for_root(size)).root(size).unwrap();
        assert_eq!(r, root(prefix), "root at {size}");
        for index in [
            0,
            1,
            254,
            255,
            256,
            257,
            size / 2,
            size.saturating_sub(2),
            size - 1,
        ] {
            if index >= size {
                continue;
            }
            let from_tiles = only(&tiles, &needed_for_inclusion(index, size))
                .inclusion_proof(index, size)
                .unwrap();
            assert_eq!(
                from_tiles,
                inclusion_proof(&leaves, index, size).unwrap(),
                "{index} in {size}"
            );
        }
        for &old in &BOUNDARIES {
            if old > size {
                continue;
            }
            let from_tiles = only(&tiles, &needed_for_consistency(old, size))
                .consistency_proof(old, size)
                .unwrap();
            assert_eq!(
                from_tiles,
                consistency_proof(&leaves, old, size).unwrap(),
                "{old} to {size}"
            );
        }
    }
}

#[test]
fn a_proof_reads_a_few_tiles_per_level() {
    // 2^40 leaves: five tile levels; a proof reads at most two tiles a level
    let size = 1u64 << 40;
    for index in [0, 12345, size / 2 + 7, size - 1] {
        let needed = needed_for_inclusion(index, size - 3);
        assert!(needed.len() <= 10, "{index}: {needed:?}");
        let needed = needed_for_consistency(index + 1, size - 3);
        assert!(needed.len() <= 15, "{index}: {needed:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tiles_give_the_reference_proofs(
        size in 1u64..2000,
        index_frac in 0.0f64..1.0,
        old_frac in 0.0f64..1.0,
        step in 1usize..700,
    ) {
        let leaves = synthetic_leaves(size as usize);
        let (builder, tiles) = stored_tiles(&leaves, step);
        prop_assert_eq!(builder.root(), root(&leaves));
        let index = ((size as f64 * index_frac) as u64).min(size - 1);
        let old = ((size as f64 * old_frac) as u64).min(size);
        for s in [index + 1, size] {
            let proof = only(&tiles, &needed_for_inclusion(index, s))
                .inclusion_proof(index, s)
                .unwrap();
            prop_assert_eq!(proof, inclusion_proof(&leaves, index, s).unwrap());
        }
        let proof = only(&tiles, &needed_for_consistency(old, size))
            .consistency_proof(old, size)
            .unwrap();
        prop_assert_eq!(proof, consistency_proof(&leaves, old, size).unwrap());

        // resumed from its right edge, a builder carries on the same tree
        let partial = edge(index + 1)
            .iter()
            .map(|(id, _)| tiles.get(*id).map(<[_]>::to_vec).unwrap_or_default())
            .collect();
        let mut resumed = TileBuilder::resume(index + 1, partial).unwrap();
        prop_assert_eq!(resumed.root(), root(&leaves[..=index as usize]));
        for leaf in &leaves[index as usize + 1..] {
            resumed.push(*leaf).unwrap();
        }
        prop_assert_eq!(resumed.root(), root(&leaves));
    }
}
