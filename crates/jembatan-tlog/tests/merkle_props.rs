//! Property tests for the Merkle module: generated proofs verify, tampered
//! proofs fail, incremental and recursive roots agree, and everything matches
//! the naive reference implementation.

mod common;

use common::{naive_consistency, naive_path, naive_root, synthetic_leaves};
use jembatan_tlog::merkle::{
    CompactRange, Hash, consistency_proof, inclusion_proof, root, verify_consistency,
    verify_inclusion,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

/// Tampered versions of a valid inclusion claim `(leaf, index, size,
/// proof)` against the same root, all of which must fail: the proof shape is
/// fully determined by `(index, size)`, so these never verify short of a hash
/// collision.
fn tampered_inclusions(
    leaf: Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    byte: usize,
) -> Vec<(Hash, u64, Vec<Hash>, &'static str)> {
    let mut out = Vec::new();
    let mut flipped_leaf = leaf;
    flipped_leaf[byte % 32] ^= 1;
    out.push((flipped_leaf, index, proof.to_vec(), "flipped leaf"));
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][byte % 32] ^= 0x80;
        out.push((leaf, index, p, "flipped proof byte"));
    }
    if index + 1 < size {
        out.push((leaf, index + 1, proof.to_vec(), "index+1"));
    }
    if index > 0 {
        out.push((leaf, index - 1, proof.to_vec(), "index-1"));
    }
    if let Some((_, rest)) = proof.split_last() {
        out.push((leaf, index, rest.to_vec(), "truncated"));
    }
    out.push((leaf, index, [proof, &[leaf]].concat(), "extended"));
    out.push((leaf, index, [&[leaf], proof].concat(), "prepended"));
    out
}

/// The roots of every prefix `leaves[..n]`, `n = 0..=len`, computed
/// incrementally.
fn prefix_roots(leaves: &[Hash]) -> Vec<Hash> {
    let mut range = CompactRange::new();
    let mut roots = vec![range.root()];
    for leaf in leaves {
        range.push(*leaf).unwrap();
        roots.push(range.root());
    }
    roots
}

/// Other tree sizes to claim a proof for.
fn wrong_sizes(size: u64, min: u64) -> Vec<u64> {
    [size + 1, size.saturating_sub(1), size * 2, size / 2]
        .into_iter()
        .filter(|&s| s >= min && s != size)
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn incremental_root_equals_recursive(size in 0usize..600) {
        let leaves = synthetic_leaves(size);
        let mut range = CompactRange::new();
        let mut prefix_roots = Vec::with_capacity(size + 1);
        prefix_roots.push(range.root());
        for leaf in &leaves {
            range.push(*leaf).unwrap();
            prefix_roots.push(range.root());
        }
        prop_assert_eq!(range.root(), naive_root(&leaves));
        prop_assert_eq!(root(&leaves), naive_root(&leaves));
        // Every prefix, sampled.
        for n in (0..=size).step_by(17) {
            prop_assert_eq!(prefix_roots[n], naive_root(&leaves[..n]));
        }
    }

    #[test]
    fn every_inclusion_proof_verifies(size in 1u64..300, byte in 0usize..32) {
        // Twice as many leaves as the tree, to claim larger sizes.
        let leaves = synthetic_leaves(2 * size as usize);
        let roots = prefix_roots(&leaves);
        let r = roots[size as usize];
        for index in 0..size {
            let proof = inclusion_proof(&leaves, index, size).unwrap();
            let leaf = leaves[index as usize];
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &r).is_ok());
            // The cross-check and tampering run on a sample, to keep it short.
            if index % 7 != 0 && index + 1 != size {
                continue;
            }
            prop_assert_eq!(&proof, &naive_path(index as usize, &leaves[..size as usize]));
            for (l, i, p, what) in tampered_inclusions(leaf, index, size, &proof, byte) {
                prop_assert!(
                    verify_inclusion(&l, i, size, &p, &r).is_err(),
                    "{} verified: index {} size {}", what, index, size
                );
            }
            // Claiming another tree size, even with that tree's genuine root,
            // only verifies if the proof for that size is literally the same.
            for other in wrong_sizes(size, index + 1) {
                let ok = verify_inclusion(&leaf, index, other, &proof, &roots[other as usize]).is_ok();
                let same = inclusion_proof(&leaves, index, other).unwrap() == proof;
                prop_assert_eq!(ok, same, "size {} claimed as {}", size, other);
                prop_assert!(!ok, "proof for size {} also proves size {}", size, other);
            }
        }
    }

    #[test]
    fn inclusion_in_prefix_trees(size in 1u64..300, pick in any::<prop::sample::Index>(),
                                 extra in 0u64..300) {
        // Proofs for a tree that is a prefix of the available leaves.
        let leaves = synthetic_leaves((size + extra) as usize);
        let index = pick.index(size as usize) as u64;
        let proof = inclusion_proof(&leaves, index, size).unwrap();
        let r = root(&leaves[..size as usize]);
        prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &proof, &r).is_ok());
        if extra > 0 {
            let bigger = root(&leaves);
            prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &proof, &bigger).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify(new in 1u64..300, pick in any::<prop::sample::Index>(),
                                 byte in 0usize..32) {
        let old = pick.index(new as usize + 1) as u64; // 0..=new
        let leaves = synthetic_leaves(new as usize);
        let r1 = root(&leaves[..old as usize]);
        let r2 = root(&leaves);
        let proof = consistency_proof(&leaves, old, new).unwrap();
        prop_assert_eq!(&proof, &naive_consistency(old as usize, &leaves));
        prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_ok());

        if old == 0 || old == new {
            prop_assert!(proof.is_empty());
            prop_assert!(verify_consistency(old, new, &r1, &r2, &[r1]).is_err());
            return Ok(());
        }
        // Tampered variants.
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i][byte % 32] ^= 0x01;
            prop_assert!(verify_consistency(old, new, &r1, &r2, &p).is_err(), "flip {}", i);
        }
        let mut bad_r1 = r1;
        bad_r1[byte % 32] ^= 0x01;
        let mut bad_r2 = r2;
        bad_r2[byte % 32] ^= 0x01;
        prop_assert!(verify_consistency(old, new, &bad_r1, &r2, &proof).is_err());
        prop_assert!(verify_consistency(old, new, &r1, &bad_r2, &proof).is_err());
        prop_assert!(verify_consistency(old, new, &r2, &r1, &proof).is_err());
        prop_assert!(verify_consistency(old, new, &r1, &r2, &proof[..proof.len() - 1]).is_err());
        prop_assert!(verify_consistency(old, new, &r1, &r2, &[proof.as_slice(), &[r1]].concat()).is_err());
        prop_assert!(verify_consistency(old, new, &r1, &r2, &[&[r1], proof.as_slice()].concat()).is_err());
        prop_assert!(verify_consistency(old, new, &r1, &r2, &[]).is_err());
        prop_assert!(verify_consistency(new, old, &r1, &r2, &proof).is_err());
        // A root of a different old size must not verify either.
        let other = root(&leaves[..old as usize - 1]);
        prop_assert!(verify_consistency(old, new, &other, &r2, &proof).is_err());
        // Claiming other sizes, even with those trees' genuine roots, only
        // verifies if the proof for those sizes is literally the same.
        let more = synthetic_leaves(2 * new as usize);
        let claims = wrong_sizes(old, 1)
            .into_iter()
            .filter(|&o| o < new)
            .map(|o| (o, new))
            .chain(wrong_sizes(new, old + 1).into_iter().map(|n| (old, n)));
        for (o, n) in claims {
            let (c1, c2) = (root(&more[..o as usize]), root(&more[..n as usize]));
            let ok = verify_consistency(o, n, &c1, &c2, &proof).is_ok();
            let same = consistency_proof(&more, o, n).unwrap() == proof;
            prop_assert_eq!(ok, same, "{}->{} claimed as {}->{}", old, new, o, n);
            prop_assert!(!ok, "proof {}->{} also proves {}->{}", old, new, o, n);
        }
    }

    #[test]
    fn verifiers_never_panic(index in any::<u64>(), size in any::<u64>(),
                             old in any::<u64>(), new in any::<u64>(),
                             proof in prop::collection::vec(any::<[u8; 32]>(), 0..80),
                             a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
        let _ = verify_inclusion(&a, index, size, &proof, &b);
        let _ = verify_consistency(old, new, &a, &b, &proof);
        let _ = verify_consistency(old.min(new), old.max(new), &a, &b, &proof);
    }
}

#[test]
fn exhaustive_small_trees() {
    // Every (index, size) and (old, new) pair up to 64 leaves.
    let leaves = synthetic_leaves(64);
    let roots: Vec<Hash> = (0..=64).map(|n| naive_root(&leaves[..n])).collect();
    for size in 1..=64u64 {
        for index in 0..size {
            let proof = inclusion_proof(&leaves, index, size).unwrap();
            verify_inclusion(
                &leaves[index as usize],
                index,
                size,
                &proof,
                &roots[size as usize],
            )
            .unwrap();
        }
        for old in 0..=size {
            let proof = consistency_proof(&leaves, old, size).unwrap();
            verify_consistency(
                old,
                size,
                &roots[old as usize],
                &roots[size as usize],
                &proof,
            )
            .unwrap();
            // The proof for (old, size) never proves (old', size) for another
            // non-trivial old'.
            for other in 1..size {
                if other != old && !proof.is_empty() {
                    assert!(
                        verify_consistency(
                            other,
                            size,
                            &roots[other as usize],
                            &roots[size as usize],
                            &proof
                        )
                        .is_err(),
                        "proof {old}->{size} verified for {other}"
                    );
                }
            }
        }
    }
}

#[test]
fn streaming_a_million_leaves() {
    // O(log n) memory: the compact range never holds more than 64 hashes.
    let mut range = CompactRange::new();
    let mut max_len = 0;
    let n = 1u64 << 20;
    for i in 0..n {
        range
            .push(jembatan_tlog::merkle::leaf_hash(&i.to_be_bytes()))
            .unwrap();
        max_len = max_len.max(range.hashes().len());
    }
    assert_eq!(range.size(), n);
    assert_eq!(range.hashes().len(), 1);
    assert!(max_len <= 21);
    // A perfect tree: the single compact hash is the root.
    assert_eq!(range.root(), range.hashes()[0]);
}
