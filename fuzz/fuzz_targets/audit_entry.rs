//! Audit entries: bytes → `AuditEntry::from_canonical`.
//!
//! Asserts: an accepted entry's canonical bytes are exactly the input
//! (docs/audit.md: an entry is canonical when it parses and re-serializes
//! to the same bytes), its SHA-256 is stable, and the canonical bytes parse
//! back to an equal entry.

#![no_main]

use jembatan_core::AuditEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = AuditEntry::from_canonical(data) else {
        return;
    };
    let bytes = entry.canonical_bytes();
    assert_eq!(bytes, data, "accepted bytes are not canonical");
    assert_eq!(AuditEntry::sha256(&bytes), AuditEntry::sha256(data));
    let again = AuditEntry::from_canonical(&bytes).expect("canonical bytes parse");
    assert_eq!(again.canonical_bytes(), bytes);
});
