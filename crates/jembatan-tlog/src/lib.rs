//! Pure transparency-log primitives for Jembatan's audit log: RFC 9162 Merkle
//! trees with inclusion and consistency proofs ([`merkle`]), and C2SP signed
//! notes carrying tlog checkpoints ([`note`]).
//!
//! Nothing here does I/O or touches a database; a store supplies leaf hashes
//! through [`merkle::LeafSource`]. Every parser is total: malformed or hostile
//! input yields an error, never a panic.
//!
//! This page specifies both formats precisely enough to write an independent
//! verifier in another language.
//!
//! # 1. Merkle tree (RFC 6962 / RFC 9162 §2.1)
//!
//! A log is a sequence of entries `d0, d1, …` (byte strings). With SHA-256
//! as `H` and `||` for concatenation:
//!
//! ```text
//! leaf hash   LH(d)      = H(0x00 || d)
//! node hash   NH(l, r)   = H(0x01 || l || r)
//! tree hash   MTH({})    = H("")       = e3b0c442…7852b855
//!             MTH({d0})  = LH(d0)
//!             MTH(D[n])  = NH(MTH(D[0:k]), MTH(D[k:n]))   for n > 1,
//!                          k = the largest power of two < n
//! ```
//!
//! An **inclusion proof** for entry `m` in a tree of size `n` is the list
//! `PATH(m, D[n])` of sibling subtree hashes from the leaf up to the root
//! (RFC 9162 §2.1.3.1); a **consistency proof** between sizes `m ≤ n` is
//! `PROOF(m, D[n])` (§2.1.4.1), empty when `m = 0` or `m = n`. Verifiers must
//! follow §2.1.3.2 and §2.1.4.2, which [`merkle::verify_inclusion`] and
//! [`merkle::verify_consistency`] implement step by step. Additionally, for
//! `m = 0` the old root must be `H("")`, and for `m = n` the roots must be
//! equal.
//!
//! Test vectors (the certificate-transparency reference data, also checked
//! by this crate's tests): the entries
//! `"", 00, 10, 2021, 3031, 40414243, 5051525354555657,
//! 606162636465666768696a6b6c6d6e6f` (hex) have tree hashes
//!
//! | size | root |
//! | ---: | --- |
//! | 0 | `e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855` |
//! | 1 | `6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d` |
//! | 2 | `fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125` |
//! | 3 | `aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77` |
//! | 4 | `d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7` |
//! | 5 | `4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4` |
//! | 6 | `76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef` |
//! | 7 | `ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c` |
//! | 8 | `5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328` |
//!
//! ```
//! use jembatan_tlog::merkle::{
//!     consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
//! };
//!
//! let entries: [&[u8]; 3] = [b"first exchange", b"second exchange", b"third exchange"];
//! let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(e)).collect();
//! let (root2, root3) = (root(&leaves[..2]), root(&leaves));
//!
//! let proof = inclusion_proof(&leaves, 1, 3)?;
//! verify_inclusion(&leaves[1], 1, 3, &proof, &root3)?;
//!
//! let proof = consistency_proof(&leaves, 2, 3)?;
//! verify_consistency(2, 3, &root2, &root3, &proof)?;
//! # Ok::<(), jembatan_tlog::merkle::ProofError>(())
//! ```
//!
//! # 2. Checkpoints in signed notes (C2SP `tlog-checkpoint`, `signed-note`)
//!
//! A **checkpoint body** commits to the log's state. It is UTF-8 text of at
//! least three lines, each ending in `\n`, none empty:
//!
//! ```text
//! <origin>\n                  the log's identity, e.g. "jembatan.example/audit"
//! <tree size>\n               ASCII decimal, no sign, no leading zeros ("0" is fine), < 2^64
//! <root hash>\n               standard base64 (RFC 4648 §4, padded) of the 32-byte MTH
//! [<extension line>\n]...     optional; preserved verbatim
//! ```
//!
//! A **signed note** is a text (here: the checkpoint body), then a blank line,
//! then one or more signature lines:
//!
//! ```text
//! — <key name> <base64(key ID (4 bytes, big-endian) || signature)>\n
//! ```
//!
//! where `—` is U+2014 EM DASH followed by one space. The note is split at its
//! **last** `"\n\n"`: the text keeps its final `\n`, everything after is
//! signature lines. A note must be UTF-8, contain no control characters
//! (below U+0020) other than `\n` (so no CR), end with `\n`, and — in this
//! implementation — be at most [`note::MAX_NOTE_SIZE`] (1 MiB) with at most
//! [`note::MAX_SIGNATURES`] (100) signature lines. Key names are non-empty
//! and contain no whitespace and no `+`.
//!
//! For **Ed25519** keys (signature type `0x01`):
//!
//! * key ID = first 4 bytes of `SHA-256(key name || "\n" || 0x01 || 32-byte public key)`;
//! * signature = 64-byte Ed25519 (RFC 8032) signature of the note text
//!   (the checkpoint body, including its final `\n`);
//! * verifier key string = `<name>+<key ID, 8 lowercase hex>+<base64(0x01 || public key)>`;
//! * signer key string = `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 || 32-byte seed)>`.
//!
//! To **open** a checkpoint with a trusted verifier key: check the note is well
//! formed; find the signature lines whose key name *and* key ID equal the
//! verifier's; require at least one, and reject the note if any of them fails
//! to verify (lines by other keys, e.g. witness cosignatures, are ignored);
//! then parse the body strictly. Callers should also check that the origin is
//! the log they expect.
//!
//! Worked example — the 8-entry tree above, signed by the key
//! `PRIVATE+KEY+jembatan.example/audit+bab16987+AUJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC`
//! (seed = 32 bytes of `0x42`; never use it for anything real):
//!
//! ```
//! use jembatan_tlog::note::{Checkpoint, Signer, Verifier};
//!
//! let verifier: Verifier =
//!     "jembatan.example/audit+bab16987+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS".parse()?;
//! let note = "jembatan.example/audit\n\
//!             8\n\
//!             XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\
//!             \n\
//!             — jembatan.example/audit urFph22v3a9yeVFLkytlUcbj5MaZi13Am1LbTTPl5e/RYEJu4JW8x8un9hFudCjI7fFzF40LzWmVu9F4HpxB3CtyqQo=\n";
//!
//! let checkpoint = Checkpoint::open(note, &verifier)?;
//! assert_eq!(checkpoint.origin, "jembatan.example/audit");
//! assert_eq!(checkpoint.size, 8);
//! assert_eq!(
//!     hex::encode(checkpoint.root),
//!     "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
//! );
//!
//! // Ed25519 is deterministic: signing again reproduces the note exactly.
//! let signer: Signer =
//!     "PRIVATE+KEY+jembatan.example/audit+bab16987+AUJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC"
//!         .parse()?;
//! assert_eq!(checkpoint.sign(&signer)?, note);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Here the key ID `bab16987` is the first four bytes of
//! `SHA-256("jembatan.example/audit\n" || 0x01 || public key)`, and the
//! signature line's base64 decodes to `ba b1 69 87` followed by the 64-byte
//! Ed25519 signature of the three body lines.

pub mod merkle;
pub mod note;
