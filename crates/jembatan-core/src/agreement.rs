//! Data-sharing agreements: who may read which fields of which dataset,
//! for what purpose, during which window, under which row filter.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::InvalidArgument;
use crate::filter::Filter;
use crate::ids::{AgencyId, DatasetId, FieldName};

/// Where an agreement stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgreementStatus {
    /// Proposed by the consumer, not yet approved by the provider.
    Proposed,
    /// Approved by both sides: in force during its validity window.
    Approved,
    /// Revoked by either side: never in force again.
    Revoked,
}

impl AgreementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgreementStatus::Proposed => "proposed",
            AgreementStatus::Approved => "approved",
            AgreementStatus::Revoked => "revoked",
        }
    }
}

impl FromStr for AgreementStatus {
    type Err = InvalidArgument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "proposed" => Ok(AgreementStatus::Proposed),
            "approved" => Ok(AgreementStatus::Approved),
            "revoked" => Ok(AgreementStatus::Revoked),
            _ => Err(InvalidArgument::new(
                "status",
                format!("unknown agreement status {s:?} (proposed, approved, revoked)"),
            )),
        }
    }
}

impl fmt::Display for AgreementStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in time written as RFC 3339 (`2026-01-01T00:00:00Z`) or as a
/// date (`2026-01-01`, meaning its start in UTC).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(format!(
        "{s:?} is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a date (2026-01-01)"
    ))
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    pub id: String,
    pub provider: AgencyId,
    pub consumer: AgencyId,
    pub dataset: DatasetId,
    /// Fields the consumer may read.
    pub fields: Vec<FieldName>,
    /// The purpose (legal basis) the data may be used for.
    pub purpose: String,
    #[serde(with = "instant")]
    pub valid_from: DateTime<Utc>,
    /// End of validity (exclusive); `None` means open-ended.
    #[serde(default, with = "instant::option")]
    pub valid_until: Option<DateTime<Utc>>,
    /// Filter ANDed to every request under this agreement.
    #[serde(default)]
    pub row_filter: Option<Filter>,
    pub status: AgreementStatus,
}

impl Agreement {
    /// Checks the agreement's own consistency.
    pub fn validate(&self) -> Result<(), InvalidArgument> {
        if self.id.is_empty() || self.id.len() > 128 {
            return Err(InvalidArgument::new(
                "id",
                "agreement id must be 1 to 128 bytes",
            ));
        }
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
        if self.purpose.trim().is_empty() {
            return Err(InvalidArgument::new(
                "purpose",
                format!("agreement {}: purpose is empty", self.id),
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
}
