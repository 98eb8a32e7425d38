//! The audit entry: one record per exchange event, with canonical bytes
//! that can become a Merkle leaf.
//!
//! A query writes a *decision* entry (allow or deny) before any record
//! leaves the broker, and, when it was allowed, a *completion* entry when
//! its stream ends. An allowed lookup, whose whole answer is one message,
//! writes one *answered* entry holding both, after the adapter answers and
//! before the answer leaves; a denied one, its decision entry. Agreement
//! steps, registry writes and auditors' reads of the log are entries of
//! their own kinds.
//! Entries hold metadata and hashes, never payloads; lookup keys and
//! filter values on subject keys appear only as keyed hashes, other
//! values only as their shape (see [`crate::redact`]).

use serde::{Deserialize, Serialize};

use crate::denial::Denial;
use crate::redact::HashedText;

/// Version of the entry format, written into every entry.
///
/// - 1: `filter` holds the consumer's filter with its values.
/// - 2: `filter` holds each value as a keyed hash (subject keys) or its
///   shape; `subjects` lists every subject named; fields no agreement
///   grants and unregistered purposes appear only as keyed hashes.
/// - 3: the `answered` kind: an allowed lookup in one entry.
/// - 4: the `audit_read` kind: an auditor's read of the log.
/// - 5: the `registry` kind (a write to the schema registry, with its
///   `registry` change), and the `mapping_test` operation, whose
///   `translation` names the candidate mapping by `mapping_sha256`.
/// - 6: `adapter_endpoint`: the provider adapter endpoint that served an
///   exchange (completion and answered entries), one of those the
///   broker's config lists for the provider.
/// - 7: the `subscribe` operation and the `delivery` kind (one batch of
///   a change subscription delivered), with the `subscription` they
///   belong to and the batch's cursor range, keys only as keyed hashes.
///
/// Entries of every earlier version stay readable and verifiable: their
/// canonical bytes never change.
pub const ENTRY_FORMAT_VERSION: u32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The broker's decision, written before any record is released.
    Decision,
    /// The end of an allowed exchange: rows, bytes, payload hash, status.
    Completion,
    /// An allowed exchange answered whole (a lookup): its decision and its
    /// completion in one entry, written once the adapter has answered and
    /// before the answer leaves the broker.
    Answered,
    /// A step in an agreement's lifecycle (proposed, approved, revoked,
    /// expired), or a refused attempt at one.
    Agreement,
    /// An auditor's read of the log itself (entries, entries naming a
    /// subject, an entry's inclusion proof), or a refused attempt at one:
    /// who looked at whose access history.
    AuditRead,
    /// A write to the schema registry (a schema version registered, a
    /// compatibility mode or a version's state set, a mapping registered
    /// or its state set), or a refused attempt at one.
    Registry,
    /// One batch of changes a subscription delivered (or read without
    /// delivering: every change outside its scope), written after the
    /// adapter answered the poll and before the batch leaves the broker.
    Delivery,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Decision => "decision",
            EntryKind::Completion => "completion",
            EntryKind::Answered => "answered",
            EntryKind::Agreement => "agreement",
            EntryKind::AuditRead => "audit_read",
            EntryKind::Registry => "registry",
            EntryKind::Delivery => "delivery",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// Where an exchange stands (decision entries) or how it ended (completion
/// entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeStatus {
    /// Allowed; records may follow. A decision entry with no completion
    /// entry is an exchange still running, or one whose broker died and
    /// that no replica has closed `abandoned` yet.
    Started,
    /// Refused by policy.
    Denied,
    /// Refused before policy: the request itself was malformed.
    Invalid,
    /// Every record was delivered.
    Ok,
    /// The exchange broke (adapter, validation, or internal error).
    Failed,
    /// The consumer went away before the end.
    Cancelled,
    /// Stopped by the broker because the agreement stopped being in force
    /// (revoked or expired) or its quota ran out while records flowed;
    /// the entry's reasons say which.
    Stopped,
    /// Closed by another broker replica (or by the broker restarted)
    /// after the replica running the exchange was found gone — its lease
    /// ran out — or could not write the end itself. What reached the
    /// consumer is not known: rows and bytes are 0 and there is no
    /// payload hash; the entry's error names the replica.
    Abandoned,
}

impl ExchangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeStatus::Started => "started",
            ExchangeStatus::Denied => "denied",
            ExchangeStatus::Invalid => "invalid",
            ExchangeStatus::Ok => "ok",
            ExchangeStatus::Failed => "failed",
            ExchangeStatus::Cancelled => "cancelled",
            ExchangeStatus::Stopped => "stopped",
            ExchangeStatus::Abandoned => "abandoned",
        }
    }
}

/// One audit log entry. Field order is the canonical order: the canonical
/// bytes are this struct serialized as compact JSON (see `docs/audit.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Entry format version.
    pub v: u32,
    pub kind: EntryKind,
    pub exchange_id: String,
    /// RFC 3339 UTC with microseconds.
    pub time: String,
    /// `query` or `lookup`.
    pub operation: String,
    /// The caller, as its certificate names it (`agency:dinsos`).
    pub caller: String,
    /// The consumer agency (from the certificate), when the caller is one.
    pub consumer: Option<String>,
    pub provider: Option<String>,
    pub dataset: Option<String>,
    /// The purpose, when it is one the broker has registered.
    pub purpose: Option<String>,
    /// Fields requested (decision) or delivered (completion). From format
    /// 2, a field no agreement of the consumer grants is named by its
    /// [`HashedText::token`].
    pub fields: Vec<String>,
    /// The consumer's filter, as JSON. Format 1: with its values. From
    /// format 2: each value a [`crate::redact::LoggedValue`].
    pub filter: Option<serde_json::Value>,
    /// Keyed hash (HMAC-SHA-256, hex) of a lookup key; never the key itself.
    pub subject_hash: Option<String>,
    /// Keyed hashes of the subjects the request's filter names (its values
    /// on subject-key fields), each once; the lookup key's is
    /// `subject_hash`. Absent when none (and on format 1 entries, which
    /// keep their bytes). [`AuditEntry::all_subjects`] gives both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// A purpose the broker has not registered, as a keyed hash and
    /// length (`purpose` is then absent). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unregistered_purpose: Option<HashedText>,
    pub limit: Option<u64>,
    pub agreement_id: Option<String>,
    /// SHA-256 of the agreement's terms as they stood at the decision.
    pub agreement_terms_sha256: Option<String>,
    /// The schemas and mapping records were translated with. Absent (not
    /// `null`) when the consumer asked for the provider's own schema, so
    /// entries written before translation existed keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<Translation>,
    pub decision: Decision,
    pub reasons: Vec<Denial>,
    pub status: ExchangeStatus,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the records returned (each record's JSON plus `\n`).
    pub payload_sha256: Option<String>,
    /// For translated or masked exchanges, what the provider's adapter
    /// sent before the broker changed it (absent otherwise), to compare
    /// with its receipt log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<Received>,
    pub duration_ms: Option<u64>,
    /// What went wrong, in words, for failed and invalid exchanges.
    pub error: Option<String>,
    /// W3C trace id of the exchange, when traced.
    pub trace_id: Option<String>,
    /// On completion and answered entries (from format 6): the provider
    /// adapter endpoint that served the exchange, as the broker's config
    /// names it (`https://host:port`). Absent when no adapter answered,
    /// and on other entries, so entries written before it existed keep
    /// their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_endpoint: Option<String>,
    /// For agreement entries: the lifecycle step. Absent on exchange
    /// entries, so entries written before it existed keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<AgreementChange>,
    /// For registry entries: what was written, by identifier and content
    /// id. Absent on every other kind, so their bytes are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryChange>,
    /// For a subscription's entries (from format 7): the subscription and,
    /// on delivery entries, the batch and its cursor range. Absent on
    /// every other entry, so their bytes are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionMark>,
}

/// Where an entry stands in a change subscription. Positions name their
/// key only by keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionMark {
    /// The subscription's id, the same on every stream that resumes it.
    pub id: String,
    /// The batch: on a delivery entry its number (from 1, counted over
    /// the subscription's life); on a decision entry the last batch the
    /// consumer's cursor had taken (0: none, a new subscription).
    pub batch: u64,
    /// The position the batch starts after (on a decision entry: the
    /// position the stream resumes after); absent for the first change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ChangeMark>,
    /// The batch's last change: the cursor handed out with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ChangeMark>,
    /// Changes the adapter sent for the batch, of which `upserts` and
    /// `deletes` were delivered; the others were outside the scope and
    /// produced nothing.
    #[serde(default)]
    pub changes: u64,
    #[serde(default)]
    pub upserts: u64,
    #[serde(default)]
    pub deletes: u64,
}

/// A position in a dataset's change order, as the log keeps it: the
/// change value in clear (a time or a version) and the key's keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeMark {
    pub change: String,
    pub key_hash: String,
}

/// A writer that accepts exactly the bytes it still holds, in order: what
/// is written must be a prefix of what remains.
struct Matching<'a>(&'a [u8]);

impl std::io::Write for Matching<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.strip_prefix(buf) {
            Some(rest) => {
                self.0 = rest;
                Ok(buf.len())
            }
            None => Err(std::io::Error::other("bytes differ")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One step in an agreement's lifecycle, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementChange {
    /// `propose`, `approve`, `revoke` or `expire`.
    pub action: String,
    /// Status before the step (absent for a proposal).
    pub from: Option<String>,
    /// Status after the step; for a refused step, the status it stayed in.
    pub to: Option<String>,
    /// The reason a revocation gave, if any.
    pub reason: Option<String>,
}

/// A write to the schema registry, as the audit log records it: the
/// identifiers and content ids of what was written, never a document's
/// body (a schema is found again by its `schema_id`, which is the SHA-256
/// of its canonical JSON; a mapping by source, target and version).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryChange {
    /// `register_schema`, `set_compatibility`, `set_version_state`,
    /// `register_mapping` or `set_mapping_state`.
    pub action: String,
    /// The schema version written (`<dataset>@<version>`), for schema
    /// writes; for a refused registration, absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Content id (`sha256:` of the canonical JSON) of the schema
    /// registered, once the document parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<String>,
    /// A mapping's source and target (`<dataset>@<version>`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The mapping version written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_version: Option<u32>,
    /// SHA-256 (hex) of the mapping's canonical JSON, as the registry
    /// stores it, once the document parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_sha256: Option<String>,
    /// SHA-256 (hex) and length of the document as the caller sent it
    /// (registrations only), whether or not it parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_bytes: Option<u64>,
    /// The state or compatibility mode before the write, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The state or compatibility mode the write sets (for a refused
    /// write, the one it asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// A schema registration whose content was already registered: the
    /// existing version is returned and nothing is stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_registered: bool,
}

/// How an exchange's records were translated between schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Translation {
    /// `<dataset>@<version>` the provider's records were validated against.
    pub source_schema: String,
    /// Content id (`sha256:...`) of that schema.
    pub source_schema_id: String,
    /// `<dataset>@<version>` the consumer asked for.
    pub target_schema: String,
    /// Content id of that schema.
    pub target_schema_id: String,
    /// Version of the mapping from source to target.
    pub mapping_version: u32,
    /// For a mapping test (`operation` `mapping_test`), the SHA-256 (hex)
    /// of the candidate mapping's canonical JSON: the candidate is not
    /// registered, so its version alone does not name it. Absent
    /// otherwise, so earlier entries keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_sha256: Option<String>,
}

/// Records received from the provider's adapter, counted and hashed the
/// same way as delivered ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Received {
    pub rows: u64,
    pub bytes: u64,
    pub payload_sha256: String,
}

/// Bytes that are not an audit entry in canonical form.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("not an audit entry: {0}")]
    NotAnEntry(serde_json::Error),
    #[error("entry bytes are not in canonical form")]
    NotCanonical,
}

impl AuditEntry {
    /// The canonical bytes: compact JSON in field order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses canonical bytes back, checking they are canonical.
    pub fn from_canonical(bytes: &[u8]) -> Result<AuditEntry, CanonicalError> {
        let entry: AuditEntry =
            serde_json::from_slice(bytes).map_err(CanonicalError::NotAnEntry)?;
        // Serialize against the input instead of into a new buffer.
        let mut rest = Matching(bytes);
        if serde_json::to_writer(&mut rest, &entry).is_err() || !rest.0.is_empty() {
            return Err(CanonicalError::NotCanonical);
        }
        Ok(entry)
    }

    /// Whether `hex` is the lowercase hex SHA-256 of `bytes`, as
    /// [`AuditEntry::sha256`] writes it.
    pub fn sha256_is(bytes: &[u8], hex: &str) -> bool {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut buffer = [0u8; 64];
        hex::encode_to_slice(digest.as_ref(), &mut buffer).is_ok() && buffer == hex.as_bytes()
    }

    /// Whether the entry holds a consumer's filter values in clear: a
    /// format 1 exchange entry whose filter has values. Such entries were
    /// written before values were hashed; they cannot be changed. (An
    /// agreement entry's filter is the agreement's row filter, its terms.)
    pub fn holds_raw_filter_values(&self) -> bool {
        self.v < 2
            && self.kind != EntryKind::Agreement
            && self
                .filter
                .as_ref()
                .is_some_and(crate::redact::filter_holds_values)
    }

    /// Every subject hash the entry names: the lookup key's, then those
    /// in `subjects` (the lookup key's may be among them again).
    pub fn all_subjects(&self) -> impl Iterator<Item = &str> {
        self.subject_hash
            .iter()
            .chain(self.subjects.iter())
            .map(String::as_str)
    }

    /// Lowercase hex SHA-256 of the canonical bytes.
    pub fn sha256(bytes: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format 1 entry as the broker wrote it, value in its filter.
    const V1: &str = r#"{"v":1,"kind":"decision","exchange_id":"0190f0a0-0000-7000-8000-000000000001","time":"2026-01-01T00:00:00.000000Z","operation":"query","caller":"agency:dinsos","consumer":"dinsos","provider":"disdukcapil","dataset":"disdukcapil.penduduk","purpose":"bansos","fields":["nik","nama"],"filter":{"field":"umur","op":"ge","value":60},"subject_hash":null,"limit":10,"agreement_id":"agr-1","agreement_terms_sha256":"abababababababababababababababababababababababababababababababab","decision":"allow","reasons":[],"status":"started","rows":0,"bytes":0,"payload_sha256":null,"duration_ms":null,"error":null,"trace_id":null}"#;

    #[test]
    fn format_1_entries_keep_their_bytes_and_are_recognised() {
        let entry = AuditEntry::from_canonical(V1.as_bytes()).unwrap();
        assert_eq!(entry.v, 1);
        assert_eq!(entry.canonical_bytes(), V1.as_bytes());
        assert!(entry.holds_raw_filter_values());
        assert!(entry.subjects.is_empty() && entry.unregistered_purpose.is_none());

        // the same entry in format 2, its value a shape: new keys only
        // when set, and not a raw filter
        let mut v2 = entry.clone();
        v2.v = ENTRY_FORMAT_VERSION;
        v2.filter =
            Some(serde_json::json!({"field": "umur", "op": "ge", "value": {"type": "int"}}));
        let bytes = v2.canonical_bytes();
        assert!(!v2.holds_raw_filter_values());
        assert!(!String::from_utf8_lossy(&bytes).contains("subjects"));
        v2.subjects = vec!["ab".repeat(32)];
        v2.unregistered_purpose = Some(HashedText {
            hmac: "cd".repeat(32),
            len: 5,
        });
        let bytes = v2.canonical_bytes();
        assert_eq!(AuditEntry::from_canonical(&bytes).unwrap(), v2);
        assert_eq!(v2.all_subjects().collect::<Vec<_>>(), ["ab".repeat(32)]);
    }

    #[test]
    fn registry_entries_are_canonical_and_leave_other_kinds_unchanged() {
        let mut entry = AuditEntry::from_canonical(V1.as_bytes()).unwrap();
        entry.v = ENTRY_FORMAT_VERSION;
        entry.kind = EntryKind::Registry;
        entry.operation = "registry.register_schema".into();
        entry.registry = Some(RegistryChange {
            action: "register_schema".into(),
            schema: Some("dinsos.orang@2".into()),
            schema_id: Some(format!("sha256:{}", "ab".repeat(32))),
            document_sha256: Some("cd".repeat(32)),
            document_bytes: Some(812),
            to: Some("ACTIVE".into()),
            ..RegistryChange::default()
        });
        let bytes = entry.canonical_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(r#""kind":"registry""#), "{text}");
        // unset parts of the change are absent, not null
        assert!(
            text.ends_with(r#""registry":{"action":"register_schema","schema":"dinsos.orang@2","schema_id":"sha256:abababababababababababababababababababababababababababababababab","document_sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","document_bytes":812,"to":"ACTIVE"}}"#),
            "{text}"
        );
        assert_eq!(AuditEntry::from_canonical(&bytes).unwrap(), entry);
        // a null where the field is absent is not canonical
        let with_null = text.replace(r#","to":"ACTIVE""#, r#","to":"ACTIVE","from":null"#);
        assert!(AuditEntry::from_canonical(with_null.as_bytes()).is_err());
        // an entry of format 1 keeps its bytes: no `registry` key appears
        let v1 = AuditEntry::from_canonical(V1.as_bytes()).unwrap();
        assert!(v1.registry.is_none());
        assert_eq!(v1.canonical_bytes(), V1.as_bytes());
    }
}
