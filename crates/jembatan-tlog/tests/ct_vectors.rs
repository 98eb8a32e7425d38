//! Known-answer tests: the certificate-transparency / RFC 6962 reference
//! vectors (8 leaves, roots for sizes 0..=8, inclusion and consistency
//! proofs), each also cross-checked against the naive implementation.

mod common;

use common::{h, naive_consistency, naive_path, naive_root};
use jembatan_tlog::merkle::{
    CompactRange, Hash, LeafSource, ProofError, ProveError, consistency_proof,
    consistency_proof_from, empty_root, inclusion_proof, inclusion_proof_from, leaf_hash, root,
    root_from, root_from_inclusion, verify_consistency, verify_inclusion,
};

const LEAF_INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Expected leaf hashes (level 0 of the CT reference tree).
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// Expected roots for tree sizes 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn leaves() -> Vec<Hash> {
    LEAF_INPUTS
        .iter()
        .map(|s| leaf_hash(&hex::decode(s).expect("hex")))
        .collect()
}

fn hs(v: &[&str]) -> Vec<Hash> {
    v.iter().map(|s| h(s)).collect()
}

#[test]
fn leaf_hashes_match() {
    let got = leaves();
    assert_eq!(got, hs(&LEAF_HASHES));
}

#[test]
fn roots_for_every_size_match() {
    let leaves = leaves();
    let mut range = CompactRange::new();
    assert_eq!(range.root(), h(ROOTS[0]));
    assert_eq!(empty_root(), h(ROOTS[0]));
    for size in 0..=8usize {
        let want = h(ROOTS[size]);
        assert_eq!(root(&leaves[..size]), want, "root of size {size}");
        assert_eq!(
            naive_root(&leaves[..size]),
            want,
            "naive root of size {size}"
        );
        assert_eq!(
            root_from(leaves.as_slice(), size as u64).unwrap(),
            want,
            "root_from of size {size}"
        );
        if size > 0 {
            range.push(leaves[size - 1]).unwrap();
        }
        assert_eq!(range.root(), want, "compact root of size {size}");
        assert_eq!(range.size(), size as u64);
    }
}

#[test]
fn compact_range_internal_hashes_match_reference() {
    // The reference implementation's compact trees: the perfect-subtree
    // roots for every size.
    let d37e = "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7";
    let fac5 = "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125";
    let ebc = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a";
    let expected: [Vec<&str>; 9] = [
        vec![],
        vec![LEAF_HASHES[0]],
        vec![fac5],
        vec![fac5, LEAF_HASHES[2]],
        vec![d37e],
        vec![d37e, LEAF_HASHES[4]],
        vec![d37e, ebc],
        vec![d37e, ebc, LEAF_HASHES[6]],
        vec![ROOTS[8]],
    ];
    let mut range = CompactRange::new();
    for (size, want) in expected.iter().enumerate() {
        assert_eq!(range.hashes(), hs(want).as_slice(), "size {size}");
        if let Some(leaf) = leaves().get(size) {
            range.push(*leaf).unwrap();
        }
    }
}

struct InclusionVector {
    index: u64,
    size: u64,
    proof: &'static [&'static str],
}

const INCLUSION: &[InclusionVector] = &[
    InclusionVector {
        index: 0,
        size: 1,
        proof: &[],
    },
    InclusionVector {
        index: 0,
        size: 8,
        proof: &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    },
    InclusionVector {
        index: 5,
        size: 8,
        proof: &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    },
    InclusionVector {
        index: 2,
        size: 3,
        proof: &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    },
    InclusionVector {
        index: 1,
        size: 5,
        proof: &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    },
];

#[test]
fn inclusion_vectors() {
    let leaves = leaves();
    for v in INCLUSION {
        let want = hs(v.proof);
        let got = inclusion_proof(&leaves, v.index, v.size).unwrap();
        assert_eq!(got, want, "inclusion {} in {}", v.index, v.size);
        let naive = naive_path(v.index as usize, &leaves[..v.size as usize]);
        assert_eq!(naive, want, "naive inclusion {} in {}", v.index, v.size);
        let root = h(ROOTS[v.size as usize]);
        let leaf = leaves[v.index as usize];
        verify_inclusion(&leaf, v.index, v.size, &want, &root).unwrap();
        assert_eq!(
            root_from_inclusion(&leaf, v.index, v.size, &want).unwrap(),
            root
        );
        assert_inclusion_probes_fail(&leaf, v.index, v.size, &want, &root);
    }
}

/// The corruption probes of the transparency-dev reference tests.
fn assert_inclusion_probes_fail(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) {
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>, String)> = vec![
        (
            index.wrapping_sub(1),
            size,
            *leaf,
            *root,
            proof.to_vec(),
            "index-1".into(),
        ),
        (
            index + 1,
            size,
            *leaf,
            *root,
            proof.to_vec(),
            "index+1".into(),
        ),
        (
            index ^ 2,
            size,
            *leaf,
            *root,
            proof.to_vec(),
            "index^2".into(),
        ),
        (
            index,
            size * 2,
            *leaf,
            *root,
            proof.to_vec(),
            "size*2".into(),
        ),
        (
            index,
            size / 2,
            *leaf,
            *root,
            proof.to_vec(),
            "size/2".into(),
        ),
        (
            index,
            size,
            some,
            *root,
            proof.to_vec(),
            "wrong leaf".into(),
        ),
        (
            index,
            size,
            *leaf,
            empty_root(),
            proof.to_vec(),
            "empty root".into(),
        ),
        (
            index,
            size,
            *leaf,
            some,
            proof.to_vec(),
            "random root".into(),
        ),
        (
            index,
            size,
            *leaf,
            *root,
            [proof, &[*root]].concat(),
            "trailing root".into(),
        ),
        (
            index,
            size,
            *leaf,
            *root,
            [&[*root], proof].concat(),
            "preceding root".into(),
        ),
        (
            index,
            size,
            *leaf,
            *root,
            [proof, &[[0; 32]]].concat(),
            "trailing zero".into(),
        ),
    ];
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][0] ^= 8;
        probes.push((index, size, *leaf, *root, p, format!("flip proof[{i}]")));
    }
    if let Some((_, rest)) = proof.split_last() {
        probes.push((index, size, *leaf, *root, rest.to_vec(), "truncated".into()));
    }
    if proof.len() > 1 {
        let mut p = vec![proof[0], some];
        p.extend_from_slice(&proof[1..]);
        probes.push((index, size, *leaf, *root, p, "inserted".into()));
    }
    for (i, s, l, r, p, desc) in probes {
        if (i, s, l, r, &p[..]) == (index, size, *leaf, *root, proof) {
            continue;
        }
        assert!(
            verify_inclusion(&l, i, s, &p, &r).is_err(),
            "probe {desc} verified for index {index} size {size}"
        );
    }
}

struct ConsistencyVector {
    old: u64,
    new: u64,
    proof: &'static [&'static str],
}

const CONSISTENCY: &[ConsistencyVector] = &[
    ConsistencyVector {
        old: 1,
        new: 1,
        proof: &[],
    },
    ConsistencyVector {
        old: 1,
        new: 8,
        proof: &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    },
    ConsistencyVector {
        old: 6,
        new: 8,
        proof: &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    },
    ConsistencyVector {
        old: 2,
        new: 5,
        proof: &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    },
    ConsistencyVector {
        old: 6,
        new: 7,
        proof: &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    },
];

#[test]
fn consistency_vectors() {
    let leaves = leaves();
    for v in CONSISTENCY {
        let want = hs(v.proof);
        let got = consistency_proof(&leaves, v.old, v.new).unwrap();
        assert_eq!(got, want, "consistency {} -> {}", v.old, v.new);
        let naive = naive_consistency(v.old as usize, &leaves[..v.new as usize]);
        assert_eq!(naive, want, "naive consistency {} -> {}", v.old, v.new);
        let (r1, r2) = (h(ROOTS[v.old as usize]), h(ROOTS[v.new as usize]));
        verify_consistency(v.old, v.new, &r1, &r2, &want).unwrap();
        if !want.is_empty() {
            assert_consistency_probes_fail(v.old, v.new, &r1, &r2, &want);
        }
    }
}

fn assert_consistency_probes_fail(old: u64, new: u64, r1: &Hash, r2: &Hash, proof: &[Hash]) {
    let wrong = [0x42u8; 32];
    let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>, String)> = vec![
        (old - 1, new, *r1, *r2, proof.to_vec(), "old-1".into()),
        (old + 1, new, *r1, *r2, proof.to_vec(), "old+1".into()),
        (old ^ 2, new, *r1, *r2, proof.to_vec(), "old^2".into()),
        (old, new * 2, *r1, *r2, proof.to_vec(), "new*2".into()),
        (old, new / 2, *r1, *r2, proof.to_vec(), "new/2".into()),
        (old, new, wrong, *r2, proof.to_vec(), "wrong root1".into()),
        (old, new, *r1, wrong, proof.to_vec(), "wrong root2".into()),
        (old, new, *r2, *r1, proof.to_vec(), "swapped roots".into()),
        (old, new, *r1, *r2, vec![], "empty proof".into()),
        (
            old,
            new,
            *r1,
            *r2,
            [proof, &[*r1]].concat(),
            "trailing root1".into(),
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [proof, &[*r2]].concat(),
            "trailing root2".into(),
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [&[*r1], proof].concat(),
            "preceding root1".into(),
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [&[*r2], proof].concat(),
            "preceding root2".into(),
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [&[proof[0]], proof].concat(),
            "preceding proof[0]".into(),
        ),
        (
            old,
            new,
            *r1,
            *r2,
            proof[..proof.len() - 1].to_vec(),
            "truncated".into(),
        ),
    ];
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][0] ^= 16;
        probes.push((old, new, *r1, *r2, p, format!("flip proof[{i}]")));
    }
    for (o, n, a, b, p, desc) in probes {
        assert!(
            verify_consistency(o, n, &a, &b, &p).is_err(),
            "probe {desc} verified for {old} -> {new}"
        );
    }
}

#[test]
fn trivial_consistency_cases() {
    let e = empty_root();
    let some = [9u8; 32];
    let other = [8u8; 32];
    // Always-consistent sizes.
    verify_consistency(0, 0, &e, &e, &[]).unwrap();
    verify_consistency(0, 5, &e, &some, &[]).unwrap();
    verify_consistency(3, 3, &some, &some, &[]).unwrap();
    // Mismatched roots or non-empty proofs.
    assert_eq!(
        verify_consistency(3, 3, &some, &other, &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 5, &some, &other, &[]),
        Err(ProofError::OldRootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &some, &some, &[e]),
        Err(ProofError::ProofNotEmpty)
    );
    assert_eq!(
        verify_consistency(0, 1, &e, &e, &[e]),
        Err(ProofError::ProofNotEmpty)
    );
    // Time travel.
    assert_eq!(
        verify_consistency(2, 1, &some, &other, &[]),
        Err(ProofError::SizeRegression { old: 2, new: 1 })
    );
    assert_eq!(
        verify_consistency(1, 2, &some, &other, &[]),
        Err(ProofError::EmptyProof)
    );
}

#[test]
fn trivial_inclusion_cases() {
    let leaf = leaf_hash(b"data");
    verify_inclusion(&leaf, 0, 1, &[], &leaf).unwrap();
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[], &empty_root()),
        Err(ProofError::RootMismatch)
    );
    for (index, size) in [(0, 0), (1, 0), (2, 1), (u64::MAX, u64::MAX)] {
        assert_eq!(
            verify_inclusion(&leaf, index, size, &[], &leaf),
            Err(ProofError::IndexOutOfRange { index, size })
        );
    }
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
        Err(ProofError::ProofTooLong)
    );
    assert_eq!(
        verify_inclusion(&leaf, 0, 2, &[], &leaf),
        Err(ProofError::ProofTooShort)
    );
}

#[test]
fn generation_rejects_bad_arguments() {
    let leaves = leaves();
    assert_eq!(
        inclusion_proof(&leaves, 8, 8),
        Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
    );
    assert_eq!(
        inclusion_proof(&leaves, 0, 9),
        Err(ProofError::SizeOutOfRange {
            size: 9,
            available: 8
        })
    );
    assert_eq!(
        inclusion_proof(&leaves, u64::MAX, u64::MAX),
        Err(ProofError::SizeOutOfRange {
            size: u64::MAX,
            available: 8
        })
    );
    assert_eq!(
        consistency_proof(&leaves, 5, 4),
        Err(ProofError::SizeRegression { old: 5, new: 4 })
    );
    assert_eq!(
        consistency_proof(&leaves, 1, 9),
        Err(ProofError::SizeOutOfRange {
            size: 9,
            available: 8
        })
    );
    assert_eq!(consistency_proof(&leaves, 0, 8), Ok(vec![]));
    assert_eq!(consistency_proof(&leaves, 8, 8), Ok(vec![]));
}

/// A store that can fail, and that counts how many leaves it served.
struct CountingStore {
    leaves: Vec<Hash>,
    reads: std::cell::Cell<u64>,
}

#[derive(Debug, PartialEq)]
struct Missing(u64);

impl LeafSource for CountingStore {
    type Error = Missing;

    fn leaf_hash(&self, index: u64) -> Result<Hash, Missing> {
        self.reads.set(self.reads.get() + 1);
        self.leaves
            .get(index as usize)
            .copied()
            .ok_or(Missing(index))
    }
}

#[test]
fn leaf_source_trait_and_closures() {
    let leaves = leaves();
    let store = CountingStore {
        leaves: leaves.clone(),
        reads: 0.into(),
    };
    for size in 1..=8u64 {
        for index in 0..size {
            assert_eq!(
                inclusion_proof_from(&store, index, size).unwrap(),
                inclusion_proof(&leaves, index, size).unwrap()
            );
        }
        for old in 0..=size {
            assert_eq!(
                consistency_proof_from(&store, old, size).unwrap(),
                consistency_proof(&leaves, old, size).unwrap()
            );
        }
    }
    assert!(store.reads.get() > 0);

    // A source that does not have enough leaves reports its own error.
    let short = CountingStore {
        leaves: leaves[..3].to_vec(),
        reads: 0.into(),
    };
    match inclusion_proof_from(&short, 0, 8) {
        Err(ProveError::Source(Missing(i))) => assert!(i >= 3),
        other => panic!("unexpected {other:?}"),
    }

    // Any closure is a leaf source.
    let closure =
        |i: u64| -> Result<Hash, Missing> { leaves.get(i as usize).copied().ok_or(Missing(i)) };
    assert_eq!(
        inclusion_proof_from(&closure, 5, 8).unwrap(),
        hs(INCLUSION[2].proof)
    );
    assert_eq!(root_from(&closure, 8).unwrap(), h(ROOTS[8]));
    assert!(matches!(
        inclusion_proof_from(&closure, 8, 8),
        Err(ProveError::Invalid(ProofError::IndexOutOfRange { .. }))
    ));
}
