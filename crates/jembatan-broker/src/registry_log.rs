//! Registry writes on the audit log: each write — a schema registered, a
//! compatibility mode or a version's state set, a mapping registered or
//! its state set — and each refused attempt at one is a `registry` entry,
//! durable before the write takes effect in the store; a write whose
//! entry is on the log but which the store then does not take gets a
//! second entry, `failed`, saying so.
//!
//! Entries name what was written by identifier and content id (the
//! schema's `sha256:` id, the mapping's SHA-256, the SHA-256 and length
//! of the document as sent), never a document's body: documents are
//! found again in the registry by those ids.

use chrono::Utc;
use jembatan_core::agreement::format_instant;
use jembatan_core::{
    AuditEntry, Decision, EntryKind, ErrorCode, ExchangeStatus, Identity, RegistryChange,
    ServiceError,
};

use crate::registry::RegistryError;

/// Longest error text a `registry` entry keeps (an incompatibility's
/// explanation with its counterexample can run long).
const MAX_ERROR_BYTES: usize = 2048;

/// One registry write (or attempt at one), as its entry records it;
/// filled in as the write is judged.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    caller: String,
    /// The dataset written (a mapping's source), once it parses.
    pub(crate) dataset: Option<String>,
    pub(crate) change: RegistryChange,
}

impl Write {
    pub(crate) fn new(identity: &Identity, action: &'static str) -> Write {
        Write {
            caller: identity.to_string(),
            dataset: None,
            change: RegistryChange {
                action: action.to_owned(),
                ..RegistryChange::default()
            },
        }
    }

    /// Records the document as sent: its SHA-256 and length.
    pub(crate) fn document(mut self, document: &str) -> Write {
        self.change.document_sha256 = Some(sha256_hex(document.as_bytes()));
        self.change.document_bytes = Some(document.len() as u64);
        self
    }

    /// The entry of this write: done (`refused` `None`), or refused with
    /// `err`.
    pub(crate) fn entry(&self, refused: Option<&RegistryError>) -> AuditEntry {
        let (decision, status, error) = match refused {
            None => (Decision::Allow, ExchangeStatus::Ok, None),
            Some(err) => {
                let status = if err.code() == ErrorCode::InvalidArgument {
                    ExchangeStatus::Invalid
                } else {
                    ExchangeStatus::Denied
                };
                let words = err.public_message();
                let words = jembatan_core::ids::truncate(&words, MAX_ERROR_BYTES).to_owned();
                (Decision::Deny, status, Some(words))
            }
        };
        AuditEntry {
            v: jembatan_core::audit::ENTRY_FORMAT_VERSION,
            kind: EntryKind::Registry,
            exchange_id: uuid::Uuid::now_v7().to_string(),
            time: format_instant(&Utc::now()),
            operation: format!("registry.{}", self.change.action),
            caller: self.caller.clone(),
            consumer: None,
            provider: None,
            dataset: self.dataset.clone(),
            purpose: None,
            fields: Vec::new(),
            filter: None,
            subject_hash: None,
            subjects: Vec::new(),
            unregistered_purpose: None,
            limit: None,
            agreement_id: None,
            agreement_terms_sha256: None,
            translation: None,
            decision,
            reasons: Vec::new(),
            status,
            rows: 0,
            bytes: 0,
            payload_sha256: None,
            received: None,
            duration_ms: None,
            error,
            trace_id: None,
            adapter_endpoint: None,
            change: None,
            registry: Some(self.change.clone()),
            subscription: None,
        }
    }
}

/// The entry saying that the write whose entry is `logged` did not take
/// effect in the store: the same write and exchange id, status `failed`.
pub(crate) fn failed_entry(logged: &AuditEntry, why: &str) -> AuditEntry {
    let mut failed = logged.clone();
    failed.time = format_instant(&Utc::now());
    failed.status = ExchangeStatus::Failed;
    failed.error = Some(format!("the write did not take effect: {why}"));
    failed
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use jembatan_core::Role;

    use super::*;

    #[test]
    fn entries_name_documents_by_hash_and_refusals_by_their_words() {
        let by = Identity::new(Role::Integrator, Some("dinsos".parse().unwrap())).unwrap();
        let document = r#"{"type": "object", "description": "a long document body"}"#;
        let mut write = Write::new(&by, "register_schema").document(document);
        write.dataset = Some("dinsos.orang".into());
        let done = write.entry(None);
        assert_eq!(done.kind, EntryKind::Registry);
        assert_eq!(done.operation, "registry.register_schema");
        assert_eq!(done.caller, "integrator:dinsos");
        assert_eq!(
            (done.decision, done.status),
            (Decision::Allow, ExchangeStatus::Ok)
        );
        let change = done.registry.as_ref().unwrap();
        assert_eq!(change.document_bytes, Some(document.len() as u64));
        assert_eq!(change.document_sha256.as_deref().map(str::len), Some(64));
        let bytes = String::from_utf8(done.canonical_bytes()).unwrap();
        assert!(!bytes.contains("a long document body"), "{bytes}");

        let cases = [
            (
                RegistryError::Invalid("invalid schema at /type".into()),
                ExchangeStatus::Invalid,
            ),
            (
                RegistryError::Forbidden("only an integrator of dinsos".into()),
                ExchangeStatus::Denied,
            ),
            (
                RegistryError::MappingRejected(vec!["no source field nik_typo".into()]),
                ExchangeStatus::Denied,
            ),
        ];
        for (err, status) in cases {
            let e = write.entry(Some(&err));
            assert_eq!((e.decision, e.status), (Decision::Deny, status), "{err}");
            assert_eq!(e.error.as_deref(), Some(err.to_string().as_str()));
        }
        // a store failure's detail stays out of the entry
        let store = RegistryError::Store(jembatan_store::StoreError::AuditUnavailable(
            "connection to 10.0.0.5 refused".into(),
        ));
        let e = write.entry(Some(&store));
        assert_eq!(
            e.error.as_deref(),
            Some("the registry store is unavailable")
        );
        let failed = failed_entry(&done, "the store failed");
        assert_eq!(failed.exchange_id, done.exchange_id);
        assert_eq!(failed.status, ExchangeStatus::Failed);
    }
}
