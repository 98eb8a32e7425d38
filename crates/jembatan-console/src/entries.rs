//! Audit entries as the pages show them: the fields of an entry's
//! canonical JSON, and the entry told in words in the reader's language.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::i18n::{Lang, fill};

/// One audit entry, ready for a template.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub seq: u64,
    pub kind: String,
    pub operation: String,
    pub time: String,
    pub exchange_id: String,
    pub caller: String,
    pub consumer: String,
    pub provider: String,
    pub dataset: String,
    pub purpose: String,
    pub decision: String,
    pub status: String,
    pub rows: u64,
    pub bytes: u64,
    pub agreement_id: String,
    /// `code: message` of each reason of a denial.
    pub reasons: Vec<Reason>,
    pub error: String,
    /// The entry in words.
    pub sentence: String,
    /// The canonical JSON, pretty-printed.
    pub pretty: String,
    pub entry_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The display name of an agency id (its name when the config gives one).
pub fn agency_name(names: &BTreeMap<String, String>, id: &str) -> String {
    let id = id.strip_prefix("agency:").unwrap_or(id);
    match names.get(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_owned(),
    }
}

impl EntryView {
    /// Reads an entry's canonical bytes; `None` when they are not a JSON
    /// object (the page then shows the bytes as they are).
    pub fn parse(
        seq: u64,
        canonical: &[u8],
        entry_sha256: &str,
        lang: Lang,
        names: &BTreeMap<String, String>,
    ) -> Option<EntryView> {
        let v: Value = serde_json::from_slice(canonical).ok()?;
        if !v.is_object() {
            return None;
        }
        let reasons = v
            .get("reasons")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|r| Reason {
                        code: text(r, "code"),
                        message: text(r, "message"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut view = EntryView {
            seq,
            kind: text(&v, "kind"),
            operation: text(&v, "operation"),
            time: text(&v, "time"),
            exchange_id: text(&v, "exchange_id"),
            caller: text(&v, "caller"),
            consumer: text(&v, "consumer"),
            provider: text(&v, "provider"),
            dataset: text(&v, "dataset"),
            purpose: text(&v, "purpose"),
            decision: text(&v, "decision"),
            status: text(&v, "status"),
            rows: number(&v, "rows"),
            bytes: number(&v, "bytes"),
            agreement_id: text(&v, "agreement_id"),
            reasons,
            error: text(&v, "error"),
            sentence: String::new(),
            pretty: serde_json::to_string_pretty(&v).unwrap_or_default(),
            entry_sha256: entry_sha256.to_owned(),
        };
        view.sentence = view.in_words(&v, lang, names);
        Some(view)
    }

    fn in_words(&self, v: &Value, lang: Lang, names: &BTreeMap<String, String>) -> String {
        let consumer = agency_name(names, &self.consumer);
        let caller = agency_name(names, &self.caller);
        let rows = self.rows.to_string();
        let reasons = self
            .reasons
            .iter()
            .map(|r| r.code.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let agreement = if self.agreement_id.is_empty() {
            "-"
        } else {
            self.agreement_id.as_str()
        };
        let values = [
            ("consumer", consumer.as_str()),
            ("caller", caller.as_str()),
            ("dataset", self.dataset.as_str()),
            ("purpose", self.purpose.as_str()),
            ("agreement", agreement),
            ("rows", rows.as_str()),
            ("reasons", reasons.as_str()),
            ("status", self.status.as_str()),
            ("operation", self.operation.as_str()),
        ];
        match (
            self.kind.as_str(),
            self.decision.as_str(),
            self.status.as_str(),
        ) {
            // a mapping's dry run: what was read, and that nothing left
            ("decision", "allow", _) | ("completion", _, "ok")
                if self.operation == "mapping_test" =>
            {
                let key = if self.kind == "decision" {
                    "entry_mapping_test_allowed"
                } else {
                    "entry_mapping_test_completed"
                };
                let read = v
                    .get("received")
                    .map(|r| number(r, "rows"))
                    .unwrap_or_default()
                    .to_string();
                let mapping = mapping_of(v);
                let mut values = values.to_vec();
                values.push(("read", read.as_str()));
                values.push(("mapping", mapping.as_str()));
                fill(lang, key, &values)
            }
            ("decision", "deny", _) => fill(lang, "entry_denied", &values),
            ("decision", _, "invalid") => fill(lang, "entry_invalid", &values),
            ("decision", "allow", _) => fill(lang, "entry_allowed", &values),
            // a lookup's one entry reads as its end: it was allowed
            ("completion" | "answered", _, "ok") => fill(lang, "entry_completed", &values),
            ("completion" | "answered", _, _) => fill(lang, "entry_ended", &values),
            ("agreement", _, _) => {
                let change = v.get("change").cloned().unwrap_or(Value::Null);
                let action = text(&change, "action");
                let to = text(&change, "to");
                let mut values = values.to_vec();
                values.push(("action", action.as_str()));
                values.push(("to", to.as_str()));
                if self.decision == "deny" {
                    fill(lang, "entry_agreement_refused", &values)
                } else {
                    fill(lang, "entry_agreement", &values)
                }
            }
            ("audit_read", "deny", _) => fill(lang, "entry_read_refused", &values),
            ("audit_read", _, "ok") => {
                let terms = read_terms(v, lang);
                let subject = text(v, "subject_hash");
                let subject = subject.get(..12).unwrap_or(&subject).to_owned() + "…";
                let index = v
                    .get("filter")
                    .and_then(|f| f.get("index"))
                    .map(Value::to_string)
                    .unwrap_or_default();
                let mut values = values.to_vec();
                values.push(("terms", terms.as_str()));
                values.push(("subject", subject.as_str()));
                values.push(("index", index.as_str()));
                let key = match self.operation.as_str() {
                    "audit.subject_lookup" => "entry_read_subject",
                    "audit.inclusion_proof" => "entry_read_proof",
                    _ => "entry_read_entries",
                };
                fill(lang, key, &values)
            }
            ("audit_read", _, _) => fill(lang, "entry_read_failed", &values),
            ("registry", _, _) => registry_words(v, &values, lang, &self.decision, &self.status),
            _ => fill(lang, "entry_other", &values),
        }
    }
}

/// A registry write in words: what was written, or that it was refused
/// or did not take effect.
fn registry_words(
    v: &Value,
    values: &[(&str, &str)],
    lang: Lang,
    decision: &str,
    status: &str,
) -> String {
    let change = v.get("registry").cloned().unwrap_or(Value::Null);
    let action = text(&change, "action");
    let schema = text(&change, "schema");
    let schema_id = text(&change, "schema_id");
    let source = text(&change, "source");
    let target = text(&change, "target");
    let version = change
        .get("mapping_version")
        .map(Value::to_string)
        .unwrap_or_default();
    let from = text(&change, "from");
    let to = text(&change, "to");
    let error = text(v, "error");
    let mut values = values.to_vec();
    values.extend([
        ("schema", schema.as_str()),
        ("schema_id", schema_id.as_str()),
        ("source", source.as_str()),
        ("target", target.as_str()),
        ("version", version.as_str()),
        ("from", from.as_str()),
        ("to", to.as_str()),
        ("error", error.as_str()),
    ]);
    let already = change
        .get("already_registered")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let key = match (decision, status, action.as_str()) {
        ("deny", _, _) => "entry_registry_refused",
        (_, "failed", _) => "entry_registry_failed",
        (_, _, "register_schema") if already => "entry_registry_schema_same",
        (_, _, "register_schema") => "entry_registry_schema",
        (_, _, "set_compatibility") => "entry_registry_compatibility",
        (_, _, "set_version_state") => "entry_registry_version_state",
        (_, _, "register_mapping") => "entry_registry_mapping",
        (_, _, "set_mapping_state") => "entry_registry_mapping_state",
        _ => "entry_other",
    };
    fill(lang, key, &values)
}

/// The mapping an exchange's entry names: `source -> target version n`.
fn mapping_of(v: &Value) -> String {
    let Some(t) = v.get("translation") else {
        return String::new();
    };
    format!(
        "{} → {} v{}",
        text(t, "source_schema"),
        text(t, "target_schema"),
        t.get("mapping_version")
            .map(Value::to_string)
            .unwrap_or_default()
    )
}

/// The terms of an auditor's read (`agency=dinsos, decision=deny`), or
/// words saying it had none.
fn read_terms(v: &Value, lang: Lang) -> String {
    let terms: Vec<String> = v
        .get("filter")
        .and_then(Value::as_object)
        .map(|terms| {
            terms
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    if terms.is_empty() {
        fill(lang, "entry_read_no_filter", &[])
    } else {
        terms.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: Value) -> EntryView {
        let names = BTreeMap::from([("dinsos".to_owned(), "Dinas Sosial".to_owned())]);
        EntryView::parse(7, json.to_string().as_bytes(), "ab", Lang::En, &names).unwrap()
    }

    #[test]
    fn entries_read_in_words() {
        let cases = [
            (
                "completed",
                serde_json::json!({"kind":"completion","consumer":"dinsos","dataset":"disdukcapil.penduduk","purpose":"bansos","decision":"allow","status":"ok","rows":341,"agreement_id":"pks-1"}),
                [
                    "Dinas Sosial (dinsos)",
                    "341",
                    "disdukcapil.penduduk",
                    "bansos",
                    "pks-1",
                ],
            ),
            (
                "denied",
                serde_json::json!({"kind":"decision","consumer":"dinkes","dataset":"disdukcapil.penduduk","purpose":"imunisasi","decision":"deny","status":"denied","reasons":[{"code":"no_agreement","message":"m"}]}),
                [
                    "dinkes",
                    "disdukcapil.penduduk",
                    "imunisasi",
                    "no_agreement",
                    "denied",
                ],
            ),
            (
                "an auditor's read",
                serde_json::json!({"kind":"audit_read","operation":"audit.query_entries","caller":"auditor:inspektorat","decision":"allow","status":"ok","rows":12,"filter":{"agency":"dinsos","decision":"deny"}}),
                [
                    "auditor:inspektorat",
                    "12",
                    "agency=dinsos",
                    "decision=deny",
                    "read",
                ],
            ),
            (
                "an auditor's look at a person's history",
                serde_json::json!({"kind":"audit_read","operation":"audit.subject_lookup","caller":"auditor:inspektorat","decision":"allow","status":"ok","rows":3,"subject_hash":"ab".repeat(32)}),
                [
                    "auditor:inspektorat",
                    "abababababab…",
                    "3",
                    "history",
                    "looked",
                ],
            ),
            (
                "a refused read",
                serde_json::json!({"kind":"audit_read","operation":"audit.query_entries","caller":"agency:dinkes","decision":"deny","status":"denied","reasons":[{"code":"role_not_allowed","message":"m"}]}),
                ["dinkes", "audit.query_entries", "refused", "tried", "log"],
            ),
            (
                "a schema registered",
                serde_json::json!({"kind":"registry","operation":"registry.register_schema","caller":"integrator:dinsos","dataset":"dinsos.orang","decision":"allow","status":"ok","registry":{"action":"register_schema","schema":"dinsos.orang@2","schema_id":"sha256:abc","document_sha256":"cd","document_bytes":120}}),
                [
                    "integrator:dinsos",
                    "registered",
                    "dinsos.orang@2",
                    "sha256:abc",
                    "schema",
                ],
            ),
            (
                "a mapping disabled",
                serde_json::json!({"kind":"registry","operation":"registry.set_mapping_state","caller":"operator","dataset":"prov.penduduk","decision":"allow","status":"ok","registry":{"action":"set_mapping_state","source":"prov.penduduk@1","target":"dinsos.orang@1","mapping_version":2,"from":"active","to":"disabled"}}),
                [
                    "operator",
                    "prov.penduduk@1",
                    "dinsos.orang@1",
                    "2",
                    "disabled",
                ],
            ),
            (
                "a refused registry write",
                serde_json::json!({"kind":"registry","operation":"registry.register_mapping","caller":"agency:dinsos","decision":"deny","status":"denied","error":"only an integrator of prov or dinsos may register this mapping","registry":{"action":"register_mapping"}}),
                [
                    "dinsos",
                    "registry.register_mapping",
                    "refused",
                    "only an integrator",
                    "tried",
                ],
            ),
            (
                "a registry write the store did not take",
                serde_json::json!({"kind":"registry","operation":"registry.register_schema","caller":"integrator:dinsos","decision":"allow","status":"failed","error":"the write did not take effect: retry","registry":{"action":"register_schema"}}),
                [
                    "integrator:dinsos",
                    "registry.register_schema",
                    "did not take effect",
                    "retry",
                    "log",
                ],
            ),
            (
                "a mapping test",
                serde_json::json!({"kind":"completion","operation":"mapping_test","consumer":"dinsos","dataset":"prov.penduduk","purpose":"bansos","decision":"allow","status":"ok","rows":0,"received":{"rows":40,"bytes":900,"payload_sha256":"ab"},"translation":{"source_schema":"prov.penduduk@1","source_schema_id":"sha256:a","target_schema":"dinsos.orang@1","target_schema_id":"sha256:b","mapping_version":3,"mapping_sha256":"cd"}}),
                [
                    "Dinas Sosial (dinsos)",
                    "40",
                    "dinsos.orang@1",
                    "v3",
                    "no record",
                ],
            ),
            (
                "agreement step",
                serde_json::json!({"kind":"agreement","caller":"agency:disdukcapil","decision":"allow","status":"ok","agreement_id":"pks-5","change":{"action":"approve","to":"approved"}}),
                ["disdukcapil", "approve", "pks-5", "approved", "approve"],
            ),
        ];
        for (name, json, words) in cases {
            let view = entry(json);
            for w in words {
                assert!(
                    view.sentence.contains(w),
                    "{name}: {:?} lacks {w:?}",
                    view.sentence
                );
            }
            assert!(!view.sentence.contains('{'), "{name}: {}", view.sentence);
        }
    }

    #[test]
    fn bytes_that_are_not_an_object_are_not_an_entry() {
        let names = BTreeMap::new();
        assert!(EntryView::parse(0, b"[1]", "", Lang::Id, &names).is_none());
        assert!(EntryView::parse(0, b"\xff", "", Lang::Id, &names).is_none());
    }
}
