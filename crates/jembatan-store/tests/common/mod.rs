//! Shared by the store's tests: audit entries to append.

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};

/// Entry `i` of a log of alternating decisions and completions (every
/// third exchange denied).
pub(crate) fn entry(i: usize) -> AuditEntry {
    let allowed = !i.is_multiple_of(3);
    AuditEntry {
        v: 1,
        kind: if i.is_multiple_of(2) {
            EntryKind::Decision
        } else {
            EntryKind::Completion
        },
        exchange_id: format!("x{}", i / 2),
        time: format!("2026-01-01T00:00:{:02}.000000Z", i % 60),
        operation: "query".into(),
        caller: "agency:dinsos".into(),
        consumer: Some("dinsos".into()),
        provider: Some("disdukcapil".into()),
        dataset: Some("disdukcapil.penduduk".into()),
        purpose: Some("bansos".into()),
        fields: vec!["nik".into()],
        filter: None,
        subject_hash: None,
        subjects: Vec::new(),
        unregistered_purpose: None,
        limit: None,
        agreement_id: Some("a1".into()),
        agreement_terms_sha256: None,
        translation: None,
        decision: if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reasons: vec![],
        status: if allowed {
            ExchangeStatus::Ok
        } else {
            ExchangeStatus::Denied
        },
        rows: i as u64,
        bytes: 10 * i as u64,
        payload_sha256: None,
        received: None,
        duration_ms: None,
        error: None,
        trace_id: None,
        adapter_endpoint: None,
        change: None,
        registry: None,
        subscription: None,
    }
}
