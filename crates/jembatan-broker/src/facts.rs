//! What is known about one exchange, and what of it the audit log may
//! name: the consumer's request as it came ([`Ask`]), the facts that
//! become its audit entries ([`Facts`]), and the privacy rules that keep
//! every value a consumer sends out of the log in clear ([`Privacy`]).

use std::collections::BTreeSet;
use std::time::Instant;

use hmac::{Hmac, Mac};
use jembatan_core::agreement::format_instant;
use jembatan_core::limits::{MAX_FIELDS, MAX_STRING_BYTES, MAX_VERIFY_BATCH_KEYS};
use jembatan_core::{
    AgencyId, AuditEntry, DatasetId, Decision, EntryKind, ExchangeStatus, FieldName, Filter, Scalar,
};
use jembatan_proto::v1 as pb;
use sha2::Sha256;

/// Most fields one lookup may ask to verify.
pub(crate) const MAX_VERIFY_FIELDS: usize = 64;

/// The keyed hash the audit log keeps instead of a lookup key:
/// lowercase hex HMAC-SHA-256, keyed with the broker's audit key, of
/// `dataset || 0x00 || key`. A key that is not a string is hashed as its
/// JSON text (`42`, `true`).
pub fn subject_hash(audit_key: &[u8], dataset: &str, key: &str) -> String {
    AuditKey::new(audit_key).subject_hash(dataset, key)
}

/// The broker's audit key ready to make [`subject_hash`]es: the HMAC is
/// keyed once, so each hash costs only the blocks of its own input.
#[derive(Clone)]
pub(crate) struct AuditKey(Hmac<Sha256>);

impl AuditKey {
    pub(crate) fn new(key: &[u8]) -> AuditKey {
        AuditKey(
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length"),
        )
    }

    /// [`subject_hash`] under this key.
    pub(crate) fn subject_hash(&self, dataset: &str, key: &str) -> String {
        hash_text(&self.subject_digest(dataset, key))
    }

    /// [`subject_hash`] under this key, as its 32 bytes.
    pub(crate) fn subject_digest(&self, dataset: &str, key: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(dataset.as_bytes());
        mac.update(&[0]);
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A 32-byte hash in lowercase hex, as the log keeps it.
pub(crate) fn hash_text(hash: &[u8; 32]) -> String {
    let mut text = [0u8; 64];
    // 32 bytes fill the 64 digits exactly: encoding cannot fail
    let _ = hex::encode_to_slice(hash, &mut text);
    // hex digits are ASCII
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// What the consumer asked, before validation.
pub(crate) struct Ask {
    pub(crate) operation: &'static str,
    pub(crate) dataset: String,
    pub(crate) target_schema: String,
    pub(crate) purpose: String,
    pub(crate) fields: Vec<String>,
    pub(crate) filter: Option<pb::Filter>,
    pub(crate) limit: u64,
    pub(crate) key: Option<pb::Scalar>,
    /// Values to verify (lookups): field -> the consumer's value.
    pub(crate) verify: Vec<(String, pb::Scalar)>,
    /// Keys and values to verify (a batch verification).
    pub(crate) batch: Vec<pb::VerifyItem>,
    /// A mapping test's candidate mapping document (TOML or JSON).
    pub(crate) candidate: Option<String>,
    /// A subscription's resume cursor, as sent: sealed, never logged.
    pub(crate) cursor: Option<String>,
}

/// Everything known about an exchange so far; becomes audit entries.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub(crate) exchange_id: String,
    pub(crate) started: Instant,
    pub(crate) operation: &'static str,
    pub(crate) caller: String,
    pub(crate) consumer: Option<AgencyId>,
    /// The dataset as the consumer named it (cut to 160 bytes); logged
    /// in clear only once the store knows it (`privacy.dataset_known`).
    pub(crate) dataset: Option<String>,
    /// The purpose as the consumer named it (cut to 256 bytes); logged in
    /// clear only when registered (`privacy.purpose_registered`).
    pub(crate) purpose: Option<String>,
    /// Fields requested, then delivered; each logged in clear only when
    /// it is a known field (`privacy.known_fields`).
    pub(crate) fields: Vec<String>,
    /// The consumer's filter; logged as hashes and shapes.
    pub(crate) filter: Option<Filter>,
    pub(crate) subject_hash: Option<String>,
    /// A batch verification's keys, as keyed hashes, each once.
    pub(crate) batch_subjects: Vec<String>,
    pub(crate) limit: Option<u64>,
    pub(crate) agreement: Option<(String, String)>,
    pub(crate) translation: Option<jembatan_core::Translation>,
    pub(crate) privacy: Privacy,
    /// The request's trace: named in the entries, passed to the adapter.
    pub(crate) trace: jembatan_telemetry::Trace,
    /// A subscription's id and where its stream resumes.
    pub(crate) subscription: Option<jembatan_core::SubscriptionMark>,
}

/// What the log may name in clear, and what it keeps only as keyed hashes
/// or shapes: no value a consumer sends reaches the log (or the broker's
/// tracing) in clear.
#[derive(Debug, Clone)]
pub(crate) struct Privacy {
    audit_key: AuditKey,
    /// The store holds the dataset: its id is an identifier.
    pub(crate) dataset_known: bool,
    /// The purpose is registered (in the config, or an agreement's).
    pub(crate) purpose_registered: bool,
    /// Field names known to exist: the dataset's key and subject-key
    /// fields, those the consumer's agreements grant, and the target
    /// schema's fields. Any other is a name the consumer made up.
    pub(crate) known_fields: BTreeSet<String>,
    /// Fields whose filter values are subject keys.
    pub(crate) subject_fields: BTreeSet<String>,
    /// The consumer's values (filter values, key, values to verify) as
    /// text; a message might quote any of them.
    values: Vec<String>,
    /// Every field name the consumer sent, as sent (cut to 128 bytes).
    raw_fields: Vec<String>,
    /// The target schema as sent; an identifier once it is registered.
    target_schema: String,
    /// The dataset and purpose as sent: identifiers once known.
    dataset: String,
    purpose: String,
}

impl Privacy {
    fn new(audit_key: AuditKey, ask: &Ask) -> Privacy {
        use jembatan_core::ids::truncate;
        let mut values = Vec::new();
        let mut scalar = |v: &pb::Scalar| {
            let text = match &v.kind {
                Some(pb::scalar::Kind::StringValue(s)) => truncate(s, MAX_STRING_BYTES).to_owned(),
                Some(pb::scalar::Kind::IntValue(i)) => i.to_string(),
                Some(pb::scalar::Kind::DoubleValue(f)) => f.to_string(),
                Some(pb::scalar::Kind::BoolValue(_)) | None => return,
            };
            values.push(text);
        };
        let mut raw_fields: Vec<String> = ask
            .fields
            .iter()
            .take(MAX_FIELDS)
            .map(|f| truncate(f, 128).to_owned())
            .collect();
        let mut stack: Vec<&pb::Filter> = ask.filter.iter().collect();
        let mut seen = 0usize;
        while let Some(f) = stack.pop() {
            // as many as a valid filter can hold; a longer one is refused
            seen += 1;
            if seen > jembatan_core::limits::MAX_FILTER_PREDICATES * 2 {
                break;
            }
            match &f.kind {
                Some(pb::filter::Kind::Predicate(p)) => {
                    raw_fields.push(truncate(&p.field, 128).to_owned());
                    p.value.iter().for_each(&mut scalar);
                    p.values
                        .iter()
                        .take(jembatan_core::limits::MAX_IN_VALUES)
                        .for_each(&mut scalar);
                }
                Some(pb::filter::Kind::All(l) | pb::filter::Kind::Any(l)) => {
                    stack.extend(l.filters.iter())
                }
                Some(pb::filter::Kind::Not(inner)) => stack.push(inner),
                None => {}
            }
        }
        ask.key.iter().for_each(&mut scalar);
        for (field, value) in ask.verify.iter().take(MAX_VERIFY_FIELDS) {
            raw_fields.push(truncate(field, 128).to_owned());
            scalar(value);
        }
        let mut batch_fields = BTreeSet::new();
        for item in ask.batch.iter().take(MAX_VERIFY_BATCH_KEYS) {
            item.key.iter().for_each(&mut scalar);
            for (field, value) in item.verify.iter().take(MAX_VERIFY_FIELDS) {
                if batch_fields.len() < MAX_VERIFY_FIELDS && !batch_fields.contains(field) {
                    batch_fields.insert(field.clone());
                    raw_fields.push(truncate(field, 128).to_owned());
                }
                scalar(value);
            }
        }
        Privacy {
            audit_key,
            dataset_known: false,
            purpose_registered: false,
            known_fields: BTreeSet::new(),
            subject_fields: BTreeSet::new(),
            values,
            raw_fields,
            target_schema: truncate(&ask.target_schema, 256).to_owned(),
            dataset: truncate(&ask.dataset, 256).to_owned(),
            purpose: truncate(&ask.purpose, 256).to_owned(),
        }
    }

    /// Keyed hash and length of a name the consumer made up.
    fn hashed(&self, domain: &str, text: &str) -> jembatan_core::redact::HashedText {
        jembatan_core::redact::HashedText {
            hmac: self.audit_key.subject_hash(domain, text),
            len: text.len() as u64,
        }
    }

    /// A field as the log names it.
    fn field(&self, name: &str) -> String {
        if self.known_fields.contains(name) {
            name.to_owned()
        } else {
            self.hashed("field", name).token()
        }
    }

    /// A text bound for the log (an error, a denial's words) with every
    /// value and made-up name of the request taken out.
    pub(crate) fn scrub(&self, text: &str, translated: bool) -> String {
        use jembatan_core::redact::{scrub, scrub_words, secret_forms};
        let mut secrets: Vec<String> = self.values.iter().flat_map(|v| secret_forms(v)).collect();
        let unknown: Vec<&str> = self
            .raw_fields
            .iter()
            .map(String::as_str)
            .filter(|f| !self.known_fields.contains(*f))
            .collect();
        for f in &unknown {
            secrets.extend(secret_forms(f));
        }
        if !translated && !self.target_schema.is_empty() {
            secrets.extend(secret_forms(&self.target_schema));
        }
        if !self.dataset_known {
            secrets.extend(secret_forms(&self.dataset));
        }
        if !self.purpose_registered {
            secrets.extend(secret_forms(&self.purpose));
        }
        scrub_words(&scrub(text, &secrets), &unknown)
    }
}

/// Names fields and hashes subject keys for [`jembatan_core::redact::logged_filter`].
struct LogNames<'a> {
    privacy: &'a Privacy,
    dataset: &'a str,
}

impl jembatan_core::redact::Redactor for LogNames<'_> {
    fn field(&self, field: &FieldName) -> String {
        self.privacy.field(field.as_str())
    }

    fn subject(&self, field: &FieldName, value: &Scalar) -> Option<String> {
        self.privacy
            .subject_fields
            .contains(field.as_str())
            .then(|| scalar_subject_hash(&self.privacy.audit_key, self.dataset, value))
    }
}

/// The subject hash of a value: strings as they are, anything else as its
/// JSON text (`42`, `true`).
pub(crate) fn scalar_subject_hash(audit_key: &AuditKey, dataset: &str, value: &Scalar) -> String {
    audit_key.subject_hash(dataset, &key_text(value))
}

/// A key as text: a string as it is, anything else as its JSON text
/// (`42`, `true`) — what subject hashes are made of, and what a batch
/// verification finds each key's record by.
pub(crate) fn key_text(value: &Scalar) -> String {
    match value {
        Scalar::String(s) => s.clone(),
        other => other.to_json().to_string(),
    }
}

impl Facts {
    /// The facts of a request just received: its caller is not known yet,
    /// and every name it sends stays the consumer's until the broker
    /// knows it.
    pub(crate) fn new(ask: &Ask, audit_key: AuditKey) -> Facts {
        Facts {
            exchange_id: uuid::Uuid::now_v7().to_string(),
            started: Instant::now(),
            operation: ask.operation,
            caller: "unauthenticated".into(),
            consumer: None,
            dataset: Some(jembatan_core::ids::truncate(&ask.dataset, 160).to_owned()),
            purpose: Some(jembatan_core::ids::truncate(&ask.purpose, 256).to_owned()),
            fields: ask
                .fields
                .iter()
                .take(MAX_FIELDS)
                .map(|f| jembatan_core::ids::truncate(f, 128).to_owned())
                .collect(),
            filter: None,
            subject_hash: None,
            batch_subjects: Vec::new(),
            limit: (ask.limit > 0).then_some(ask.limit),
            agreement: None,
            translation: None,
            privacy: Privacy::new(audit_key, ask),
            trace: jembatan_telemetry::Trace::current(),
            subscription: None,
        }
    }

    pub(crate) fn entry(
        &self,
        kind: EntryKind,
        decision: Decision,
        status: ExchangeStatus,
    ) -> AuditEntry {
        let p = &self.privacy;
        let known_dataset = self.dataset.as_deref().filter(|_| p.dataset_known);
        let provider = known_dataset
            .and_then(|d| d.parse::<DatasetId>().ok())
            .map(|d| d.agency().to_string());
        let dataset = match (&self.dataset, known_dataset) {
            (_, Some(d)) => Some(d.to_owned()),
            (Some(raw), None) => Some(p.hashed("dataset", raw).token()),
            (None, None) => None,
        };
        let (purpose, unregistered_purpose) = match &self.purpose {
            Some(purpose) if p.purpose_registered => (Some(purpose.clone()), None),
            Some(purpose) => (None, Some(p.hashed("purpose", purpose))),
            None => (None, None),
        };
        let fields = self
            .fields
            .iter()
            .map(|f| match f.strip_prefix("verify:") {
                Some(v) => format!("verify:{}", p.field(v)),
                None => p.field(f),
            })
            .collect();
        // the lookup key's hash is `subject_hash`; these are the filter's,
        // and a batch verification's keys
        let mut subjects = Vec::new();
        let filter = self.filter.as_ref().map(|f| {
            let names = LogNames {
                privacy: p,
                dataset: self.dataset.as_deref().unwrap_or_default(),
            };
            jembatan_core::redact::logged_filter(f, &names, &mut subjects)
        });
        subjects.extend(self.batch_subjects.iter().cloned());
        AuditEntry {
            v: jembatan_core::audit::ENTRY_FORMAT_VERSION,
            kind,
            exchange_id: self.exchange_id.clone(),
            time: format_instant(&chrono::Utc::now()),
            operation: self.operation.to_owned(),
            caller: self.caller.clone(),
            consumer: self.consumer.as_ref().map(|c| c.to_string()),
            provider,
            dataset,
            purpose,
            fields,
            filter,
            subject_hash: self.subject_hash.clone(),
            subjects,
            unregistered_purpose,
            limit: self.limit,
            agreement_id: self.agreement.as_ref().map(|a| a.0.clone()),
            agreement_terms_sha256: self.agreement.as_ref().map(|a| a.1.clone()),
            translation: self.translation.clone(),
            decision,
            reasons: Vec::new(),
            status,
            rows: 0,
            bytes: 0,
            payload_sha256: None,
            received: None,
            duration_ms: None,
            error: None,
            trace_id: self.trace.id(),
            adapter_endpoint: None,
            change: None,
            registry: None,
            subscription: self.subscription.clone(),
        }
    }

    /// Takes the request's values and made-up names out of an entry's
    /// error and denial words, and names the denied fields as the log
    /// names fields. Every entry passes here before it is appended.
    pub(crate) fn redact(&self, entry: &mut AuditEntry) {
        let translated = self.translation.is_some();
        if let Some(error) = &entry.error {
            entry.error = Some(self.privacy.scrub(error, translated));
        }
        for reason in &mut entry.reasons {
            reason.message = self.privacy.scrub(&reason.message, translated);
            for f in &mut reason.fields {
                // `nik` or, for a misused filter field, `nik (prefix)`
                *f = match f.split_once(' ') {
                    Some((name, how)) => format!("{} {how}", self.privacy.field(name)),
                    None => self.privacy.field(f),
                };
            }
        }
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit key keyed once hashes exactly as an HMAC keyed for each
    /// hash, and hashing does not use it up.
    #[test]
    fn a_keyed_audit_key_hashes_as_a_fresh_hmac() {
        let long = [9u8; 100];
        for key in [&b""[..], b"k", &[7u8; 32], &long] {
            let keyed = AuditKey::new(key);
            for (dataset, value) in [
                ("", ""),
                ("prov.penduduk", "1507010101900001"),
                ("subscription key\0dinsos\0prov.penduduk", "42"),
            ] {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
                mac.update(dataset.as_bytes());
                mac.update(&[0]);
                mac.update(value.as_bytes());
                let fresh = hex::encode(mac.finalize().into_bytes());
                assert_eq!(keyed.subject_hash(dataset, value), fresh);
                assert_eq!(keyed.subject_hash(dataset, value), fresh);
                assert_eq!(subject_hash(key, dataset, value), fresh);
            }
        }
    }
}
