//! Test helpers: a naive, literally-transcribed RFC 9162 reference
//! implementation (recursive MTH, PATH and SUBPROOF over slices) used to
//! cross-check the optimised code.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use jembatan_tlog::merkle::{Hash, leaf_hash, node_hash};
use sha2::{Digest, Sha256};

/// The largest power of two strictly below `n` (n >= 2).
fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH over leaf hashes, by the recursive definition.
pub fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = k_of(n);
            node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]).
pub fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = k_of(n);
    if m < k {
        let mut p = naive_path(m, &leaves[..k]);
        p.push(naive_root(&leaves[k..]));
        p
    } else {
        let mut p = naive_path(m - k, &leaves[k..]);
        p.push(naive_root(&leaves[..k]));
        p
    }
}

/// SUBPROOF(m, D[n], b).
pub fn naive_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b {
            Vec::new()
        } else {
            vec![naive_root(leaves)]
        };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = naive_subproof(m, &leaves[..k], b);
        p.push(naive_root(&leaves[k..]));
        p
    } else {
        let mut p = naive_subproof(m - k, &leaves[k..], false);
        p.push(naive_root(&leaves[..k]));
        p
    }
}

/// PROOF(m, D[n]) for 0 < m < n (empty otherwise).
pub fn naive_consistency(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if m == 0 || m == leaves.len() {
        return Vec::new();
    }
    naive_subproof(m, leaves, true)
}

/// Leaf hashes of `n` distinct synthetic entries.
pub fn synthetic_leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

pub fn h(hex_str: &str) -> Hash {
    let v = hex::decode(hex_str).expect("test vector hex");
    v.try_into().expect("test vector is 32 bytes")
}
