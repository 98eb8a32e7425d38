//! Data-sharing agreements: who may read which fields of which dataset,
//! for what purpose, during which window, under which row filter.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::InvalidArgument;
use crate::filter::Filter;
use crate::grant::{AccessMode, FieldGrant, Quota};
use crate::identity::{Identity, Role};
use crate::ids::{AgencyId, DatasetId, FieldName};

/// Where an agreement stands in its lifecycle.
///
/// ```text
/// proposed ──provider──▶ approved ──(valid_until passes)──▶ expired
///     │                     ▲
///     └─provider─▶ provider_approved ──operator──┘   (when operators approve too)
/// any state but expired ──provider, consumer or operator──▶ revoked
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgreementStatus {
    /// Proposed by the consumer, not yet approved by the provider.
    Proposed,
    /// Approved by the provider; the deployment wants an operator's
    /// approval too, which it does not have yet.
    ProviderApproved,
    /// Approved by everyone required: in force during its validity window.
    Approved,
    /// Revoked by either side or an operator: never in force again.
    Revoked,
    /// Its validity window ended: never in force again.
    Expired,
}

impl AgreementStatus {
    pub const ALL: [AgreementStatus; 5] = [
        AgreementStatus::Proposed,
        AgreementStatus::ProviderApproved,
        AgreementStatus::Approved,
        AgreementStatus::Revoked,
        AgreementStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgreementStatus::Proposed => "proposed",
            AgreementStatus::ProviderApproved => "provider_approved",
            AgreementStatus::Approved => "approved",
            AgreementStatus::Revoked => "revoked",
            AgreementStatus::Expired => "expired",
        }
    }

    /// Whether no transition leads out of this status.
    pub fn is_final(self) -> bool {
        matches!(self, AgreementStatus::Revoked | AgreementStatus::Expired)
    }
}

impl FromStr for AgreementStatus {
    type Err = InvalidArgument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AgreementStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                InvalidArgument::new(
                    "status",
                    format!(
                        "unknown agreement status {s:?} (proposed, provider_approved, approved, revoked, expired)"
                    ),
                )
            })
    }
}

impl fmt::Display for AgreementStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is neither an RFC 3339 time nor a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a date (2026-01-01)")]
pub struct BadInstant(pub String);

/// A point in time written as RFC 3339 (`2026-01-01T00:00:00Z`) or as a
/// date (`2026-01-01`, meaning its start in UTC).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, BadInstant> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(BadInstant(s.to_owned()))
}

mod instant {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::agreement::format_instant(t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_instant(&s).map_err(serde::de::Error::custom)
    }

    pub(super) mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&crate::agreement::format_instant(t)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| crate::agreement::parse_instant(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Formats a time the one way Jembatan stores and logs times: RFC 3339 in
/// UTC with microseconds, so that text order is time order.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A data-sharing agreement between a provider and a consumer agency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// The agreement's id, e.g. the number of the signed document
    /// (`pks-2026-004-dinsos-penduduk`); requests name it.
    pub id: String,
    /// The agency providing the data: the agency part of `dataset`.
    pub provider: AgencyId,
    /// The agency receiving the data.
    pub consumer: AgencyId,
    /// The dataset shared, `<provider>.<dataset>`.
    pub dataset: DatasetId,
    /// Fields granted, each with its access mode.
    pub fields: Vec<FieldGrant>,
    /// The purpose (legal basis) the data may be used for.
    pub purpose: String,
    /// Start of validity: an RFC 3339 time or a date (`2026-01-01`, the
    /// start of that day in UTC).
    #[serde(with = "instant")]
    #[schemars(with = "String")]
    pub valid_from: DateTime<Utc>,
    /// End of validity (exclusive), in the same form; open-ended when
    /// absent.
    #[serde(default, with = "instant::option")]
    #[schemars(with = "Option<String>")]
    pub valid_until: Option<DateTime<Utc>>,
    /// Filter ANDed to every request under this agreement.
    #[serde(default)]
    pub row_filter: Option<Filter>,
    /// Rows per day and requests per minute; absent means unlimited.
    #[serde(default, skip_serializing_if = "Quota::is_unlimited")]
    pub quota: Quota,
    /// Whether the consumer may also subscribe to the dataset's changes
    /// (`Exchange.Subscribe`), under the same fields, row filter and
    /// purpose; absent means no. An agreement without it keeps its terms
    /// hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(extend("default" = false))]
    pub subscribe: bool,
    /// The status the agreement starts in: `approved` for one signed
    /// outside Jembatan, `proposed` for one still to be approved through
    /// the Agreements service.
    pub status: AgreementStatus,
}

/// Something done to an agreement; each is written to the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Propose,
    Approve,
    Revoke,
    Expire,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Propose => "propose",
            Action::Approve => "approve",
            Action::Revoke => "revoke",
            Action::Expire => "expire",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The caller has no say over this agreement or this step.
    #[error("{0}")]
    NotAllowed(String),
    /// The agreement is not in a state this step applies to.
    #[error("{0}")]
    WrongState(String),
}

/// Longest agreement id, in bytes.
pub const MAX_AGREEMENT_ID_BYTES: usize = 128;
/// Longest purpose, in bytes.
pub const MAX_PURPOSE_BYTES: usize = 256;
/// Longest revocation reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

impl Agreement {
    /// Checks an agreement id: 1 to 128 bytes of ASCII letters, digits,
    /// `.`, `_` and `-`.
    pub fn validate_id(id: &str) -> Result<(), InvalidArgument> {
        if id.is_empty()
            || id.len() > MAX_AGREEMENT_ID_BYTES
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidArgument::new(
                "id",
                format!(
                    "agreement id {:?} must be 1 to {MAX_AGREEMENT_ID_BYTES} bytes of letters, digits, '.', '_' and '-'",
                    crate::ids::truncate(id, 64)
                ),
            ));
        }
        Ok(())
    }

    /// Checks the agreement's own consistency.
    pub fn validate(&self) -> Result<(), InvalidArgument> {
        Self::validate_id(&self.id)?;
        if self.dataset.agency() != self.provider {
            return Err(InvalidArgument::new(
                "dataset",
                format!(
                    "agreement {}: dataset {} is not provided by {}",
                    self.id, self.dataset, self.provider
                ),
            ));
        }
        if self.provider == self.consumer {
            return Err(InvalidArgument::new(
                "consumer",
                format!(
                    "agreement {}: provider and consumer are the same agency",
                    self.id
                ),
            ));
        }
        if self.fields.is_empty() {
            return Err(InvalidArgument::new(
                "fields",
                format!("agreement {}: grants no fields", self.id),
            ));
        }
        if self.fields.len() > crate::limits::MAX_FIELDS {
            return Err(InvalidArgument::new(
                "fields",
                format!(
                    "agreement {}: {} fields exceed the limit max_fields = {}",
                    self.id,
                    self.fields.len(),
                    crate::limits::MAX_FIELDS
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for g in &self.fields {
            if !seen.insert(&g.field) {
                return Err(InvalidArgument::new(
                    "fields",
                    format!("agreement {}: field {} is granted twice", self.id, g.field),
                ));
            }
        }
        if self.purpose.trim().is_empty() {
            return Err(InvalidArgument::new(
                "purpose",
                format!("agreement {}: purpose is empty", self.id),
            ));
        }
        if self.purpose.len() > MAX_PURPOSE_BYTES {
            return Err(InvalidArgument::new(
                "purpose",
                format!(
                    "agreement {}: purpose is longer than {MAX_PURPOSE_BYTES} bytes",
                    self.id
                ),
            ));
        }
        if let Some(until) = self.valid_until
            && until <= self.valid_from
        {
            return Err(InvalidArgument::new(
                "valid_until",
                format!("agreement {}: valid_until is not after valid_from", self.id),
            ));
        }
        if let Some(f) = &self.row_filter {
            f.validate().map_err(|e| e.within("row_filter"))?;
        }
        Ok(())
    }

    /// Lowercase hex SHA-256 of the agreement's terms (its canonical JSON),
    /// so an audit entry pins the terms as they stood.
    pub fn terms_sha256(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }

    /// The grant for `field`, if the agreement names it.
    pub fn grant(&self, field: &FieldName) -> Option<&FieldGrant> {
        self.fields.iter().find(|g| &g.field == field)
    }

    /// Fields whose values (whole or masked) reach the consumer: what a
    /// request that names no fields gets.
    pub fn returned_fields(&self) -> Vec<FieldName> {
        self.fields
            .iter()
            .filter(|g| g.returns_value())
            .map(|g| g.field.clone())
            .collect()
    }

    /// Whether any field is granted other than for reading.
    pub fn has_restricted_fields(&self) -> bool {
        self.fields.iter().any(|g| g.mode != AccessMode::Read)
    }

    /// Whether the agreement's validity window has ended at `now`.
    pub fn has_ended(&self, now: DateTime<Utc>) -> bool {
        self.valid_until.is_some_and(|until| now >= until)
    }

    /// Checks that `by` may propose this agreement: only the consumer
    /// agency itself, for itself.
    pub fn check_proposer(&self, by: &Identity) -> Result<(), TransitionError> {
        match (by.role, &by.agency) {
            (Role::Agency, Some(agency)) if *agency == self.consumer => Ok(()),
            (Role::Agency, Some(agency)) => Err(TransitionError::NotAllowed(format!(
                "agency {agency} cannot propose an agreement for consumer {}: an agreement is proposed by its consumer",
                self.consumer
            ))),
            _ => Err(TransitionError::NotAllowed(format!(
                "agreements are proposed by the consuming agency's certificate, not a {} certificate",
                by.role
            ))),
        }
    }

    /// The status `action` by `by` leads to at `now`, or why it may not
    /// happen. `operator_approval` says whether the deployment wants an
    /// operator's approval after the provider's.
    pub fn next_status(
        &self,
        action: Action,
        by: &Identity,
        operator_approval: bool,
        now: DateTime<Utc>,
    ) -> Result<AgreementStatus, TransitionError> {
        let party = match (by.role, &by.agency) {
            (Role::Agency, Some(a)) if *a == self.provider => Some("provider"),
            (Role::Agency, Some(a)) if *a == self.consumer => Some("consumer"),
            _ => None,
        };
        let operator = by.role == Role::Operator;
        let id = &self.id;
        match action {
            Action::Propose => Err(TransitionError::WrongState(format!(
                "agreement {id} already exists"
            ))),
            Action::Approve => {
                // who may ever approve comes first: a stranger learns
                // nothing of the agreement's state
                if party != Some("provider") && !operator {
                    return Err(TransitionError::NotAllowed(match party {
                        Some(_) => format!(
                            "agreement {id} is approved by its provider {}, not by its consumer",
                            self.provider
                        ),
                        None => format!(
                            "only agency {} (the provider){} may approve agreement {id}",
                            self.provider,
                            if operator_approval {
                                " and an operator"
                            } else {
                                ""
                            }
                        ),
                    }));
                }
                if self.status.is_final() {
                    return Err(TransitionError::WrongState(format!(
                        "agreement {id} is {} and cannot be approved",
                        self.status
                    )));
                }
                if self.has_ended(now) {
                    return Err(TransitionError::WrongState(format!(
                        "agreement {id} has passed its end ({}) and cannot be approved",
                        self.valid_until
                            .map(|t| format_instant(&t))
                            .unwrap_or_default()
                    )));
                }
                match (self.status, operator) {
                    (AgreementStatus::Proposed, false) => Ok(if operator_approval {
                        AgreementStatus::ProviderApproved
                    } else {
                        AgreementStatus::Approved
                    }),
                    (AgreementStatus::ProviderApproved, true) => Ok(AgreementStatus::Approved),
                    (AgreementStatus::Proposed, true) => Err(TransitionError::WrongState(format!(
                        "agreement {id} awaits the provider's approval before an operator's"
                    ))),
                    (AgreementStatus::ProviderApproved, false) => {
                        Err(TransitionError::WrongState(format!(
                            "agreement {id} is already approved by the provider and awaits an operator"
                        )))
                    }
                    _ => Err(TransitionError::WrongState(format!(
                        "agreement {id} is already approved"
                    ))),
                }
            }
            Action::Revoke => {
                if party.is_none() && !operator {
                    return Err(TransitionError::NotAllowed(format!(
                        "only agencies {} and {} or an operator may revoke agreement {id}",
                        self.provider, self.consumer
                    )));
                }
                if self.status.is_final() {
                    return Err(TransitionError::WrongState(format!(
                        "agreement {id} is already {}",
                        self.status
                    )));
                }
                Ok(AgreementStatus::Revoked)
            }
            Action::Expire => {
                if by.role != Role::Broker {
                    return Err(TransitionError::NotAllowed(
                        "agreements expire by themselves; nobody expires one".into(),
                    ));
                }
                if self.status.is_final() || !self.has_ended(now) {
                    return Err(TransitionError::WrongState(format!(
                        "agreement {id} is {} and has not ended",
                        self.status
                    )));
                }
                Ok(AgreementStatus::Expired)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from_toml_form() {
        let a: Agreement = serde_json::from_value(serde_json::json!({
            "id": "a1",
            "provider": "disdukcapil",
            "consumer": "dinsos",
            "dataset": "disdukcapil.penduduk",
            "fields": ["nik", "nama_lengkap"],
            "purpose": "verifikasi penerima bansos",
            "valid_from": "2026-01-01",
            "valid_until": "2027-01-01T00:00:00+07:00",
            "row_filter": {"field": "status", "op": "eq", "value": "HIDUP"},
            "status": "approved"
        }))
        .unwrap();
        a.validate().unwrap();
        assert_eq!(
            format_instant(&a.valid_until.unwrap()),
            "2026-12-31T17:00:00.000000Z"
        );
        assert_eq!(a.terms_sha256().len(), 64);
        let mut b = a.clone();
        b.fields.pop();
        assert_ne!(a.terms_sha256(), b.terms_sha256());
    }

    #[test]
    fn inconsistent_agreements_are_rejected() {
        let base: Agreement = serde_json::from_value(serde_json::json!({
            "id": "a1", "provider": "disdukcapil", "consumer": "dinsos",
            "dataset": "disdukcapil.penduduk", "fields": ["nik"], "purpose": "p",
            "valid_from": "2026-01-01", "status": "approved"
        }))
        .unwrap();
        let mut wrong_provider = base.clone();
        wrong_provider.provider = "dinkes".parse().unwrap();
        let mut same = base.clone();
        same.consumer = "disdukcapil".parse().unwrap();
        let mut no_fields = base.clone();
        no_fields.fields.clear();
        let mut window = base.clone();
        window.valid_until = Some(base.valid_from);
        for (name, a, want) in [
            ("provider", wrong_provider, "is not provided by"),
            ("same", same, "same agency"),
            ("fields", no_fields, "grants no fields"),
            ("window", window, "not after valid_from"),
        ] {
            let err = a.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    fn who(role: Role, agency: Option<&str>) -> Identity {
        Identity {
            role,
            agency: agency.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn lifecycle_table() {
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let provider = who(Role::Agency, Some("disdukcapil"));
        let consumer = who(Role::Agency, Some("dinsos"));
        let stranger = who(Role::Agency, Some("dinkes"));
        let operator = who(Role::Operator, None);
        let auditor = who(Role::Auditor, None);
        let integrator = who(Role::Integrator, Some("disdukcapil"));
        let broker = who(Role::Broker, None);
        use AgreementStatus::*;
        enum Want {
            To(AgreementStatus),
            NotAllowed,
            WrongState,
        }
        use Want::*;
        // status, ended?, action, by, operator approval?, outcome
        let cases: Vec<(AgreementStatus, bool, Action, &Identity, bool, Want)> = vec![
            (
                Proposed,
                false,
                Action::Approve,
                &provider,
                false,
                To(Approved),
            ),
            (
                Proposed,
                false,
                Action::Approve,
                &provider,
                true,
                To(ProviderApproved),
            ),
            (
                ProviderApproved,
                false,
                Action::Approve,
                &operator,
                true,
                To(Approved),
            ),
            (
                Proposed,
                false,
                Action::Approve,
                &operator,
                true,
                WrongState,
            ),
            (
                ProviderApproved,
                false,
                Action::Approve,
                &provider,
                true,
                WrongState,
            ),
            (
                Proposed,
                false,
                Action::Approve,
                &consumer,
                false,
                NotAllowed,
            ),
            (
                Proposed,
                false,
                Action::Approve,
                &stranger,
                false,
                NotAllowed,
            ),
            (
                Proposed,
                false,
                Action::Approve,
                &integrator,
                false,
                NotAllowed,
            ),
            (
                Proposed,
                false,
                Action::Approve,
                &auditor,
                false,
                NotAllowed,
            ),
            (
                Approved,
                false,
                Action::Approve,
                &provider,
                false,
                WrongState,
            ),
            (
                Revoked,
                false,
                Action::Approve,
                &provider,
                false,
                WrongState,
            ),
            (
                Proposed,
                true,
                Action::Approve,
                &provider,
                false,
                WrongState,
            ),
            (
                Proposed,
                false,
                Action::Revoke,
                &provider,
                false,
                To(Revoked),
            ),
            (
                Approved,
                false,
                Action::Revoke,
                &consumer,
                false,
                To(Revoked),
            ),
            (
                ProviderApproved,
                false,
                Action::Revoke,
                &operator,
                true,
                To(Revoked),
            ),
            (
                Approved,
                false,
                Action::Revoke,
                &stranger,
                false,
                NotAllowed,
            ),
            (Approved, false, Action::Revoke, &auditor, false, NotAllowed),
            (
                Approved,
                false,
                Action::Revoke,
                &integrator,
                false,
                NotAllowed,
            ),
            (Revoked, false, Action::Revoke, &provider, false, WrongState),
            (Expired, true, Action::Revoke, &consumer, false, WrongState),
            (Approved, true, Action::Expire, &broker, false, To(Expired)),
            (Approved, false, Action::Expire, &broker, false, WrongState),
            (Approved, true, Action::Expire, &operator, false, NotAllowed),
            (
                Approved,
                false,
                Action::Propose,
                &consumer,
                false,
                WrongState,
            ),
        ];
        for (i, (status, ended, action, by, op, want)) in cases.into_iter().enumerate() {
            let mut a: Agreement = serde_json::from_value(serde_json::json!({
                "id": "a1", "provider": "disdukcapil", "consumer": "dinsos",
                "dataset": "disdukcapil.penduduk", "fields": ["nik"], "purpose": "p",
                "valid_from": "2026-01-01",
                "valid_until": if ended { "2026-05-01" } else { "2027-01-01" },
                "status": status
            }))
            .unwrap();
            a.status = status;
            let got = a.next_status(action, by, op, now);
            let ok = match (&got, &want) {
                (Ok(s), To(w)) => s == w,
                (Err(TransitionError::NotAllowed(m)), NotAllowed)
                | (Err(TransitionError::WrongState(m)), WrongState) => !m.is_empty(),
                _ => false,
            };
            assert!(ok, "case {i}: {status} {action} by {by}: got {got:?}");
        }
    }

    #[test]
    fn only_the_consumer_proposes() {
        let a: Agreement = serde_json::from_value(serde_json::json!({
            "id": "a1", "provider": "disdukcapil", "consumer": "dinsos",
            "dataset": "disdukcapil.penduduk", "fields": ["nik"], "purpose": "p",
            "valid_from": "2026-01-01", "status": "proposed"
        }))
        .unwrap();
        assert!(a.check_proposer(&who(Role::Agency, Some("dinsos"))).is_ok());
        for by in [
            who(Role::Agency, Some("disdukcapil")),
            who(Role::Integrator, Some("dinsos")),
            who(Role::Operator, None),
        ] {
            assert!(a.check_proposer(&by).is_err(), "{by}");
        }
    }

    #[test]
    fn ids() {
        for ok in ["a1", "dinsos-penduduk-2026", "A.b_c-9"] {
            Agreement::validate_id(ok).unwrap();
        }
        for bad in ["", "a b", "a';--", "ä", &"x".repeat(129)] {
            assert!(Agreement::validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_grants_keep_their_old_form_and_hash() {
        let json = serde_json::json!({
            "id": "a1", "provider": "disdukcapil", "consumer": "dinsos",
            "dataset": "disdukcapil.penduduk", "fields": ["nik", "nama_lengkap"], "purpose": "p",
            "valid_from": "2026-01-01", "valid_until": null, "row_filter": null, "status": "approved"
        });
        let a: Agreement = serde_json::from_value(json).unwrap();
        let text = serde_json::to_string(&a).unwrap();
        assert!(
            text.contains(r#""fields":["nik","nama_lengkap"]"#),
            "{text}"
        );
        assert!(!text.contains("quota"), "{text}");
    }
}
