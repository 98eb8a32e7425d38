//! Why an exchange was refused: one machine-readable code plus words.

use serde::{Deserialize, Serialize};

use jembatan_proto::v1 as pb;

/// The term of an agreement (or other rule) that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenialCode {
    NoAgreement,
    WrongPurpose,
    FieldNotGranted,
    NotYetValid,
    Expired,
    NotApproved,
    Revoked,
    UnknownDataset,
    QuotaExhausted,
    SchemaVersionDisabled,
    RoleNotAllowed,
    FilterFieldNotGranted,
    /// The caller's agency is not among the agencies the broker registers.
    UnregisteredAgency,
    /// Every mapping version that could serve the requested schema is disabled.
    MappingDisabled,
    /// The agreement does not include the `subscribe` term.
    SubscribeNotGranted,
}

impl DenialCode {
    /// Stable lowercase name, as used on the audit log and in `DenialReason.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialCode::NoAgreement => "no_agreement",
            DenialCode::WrongPurpose => "wrong_purpose",
            DenialCode::FieldNotGranted => "field_not_granted",
            DenialCode::NotYetValid => "not_yet_valid",
            DenialCode::Expired => "expired",
            DenialCode::NotApproved => "not_approved",
            DenialCode::Revoked => "revoked",
            DenialCode::UnknownDataset => "unknown_dataset",
            DenialCode::QuotaExhausted => "quota_exhausted",
            DenialCode::SchemaVersionDisabled => "schema_version_disabled",
            DenialCode::RoleNotAllowed => "role_not_allowed",
            DenialCode::FilterFieldNotGranted => "filter_field_not_granted",
            DenialCode::UnregisteredAgency => "unregistered_agency",
            DenialCode::MappingDisabled => "mapping_disabled",
            DenialCode::SubscribeNotGranted => "subscribe_not_granted",
        }
    }

    pub fn to_proto(self) -> pb::DenialCode {
        match self {
            DenialCode::NoAgreement => pb::DenialCode::NoAgreement,
            DenialCode::WrongPurpose => pb::DenialCode::WrongPurpose,
            DenialCode::FieldNotGranted => pb::DenialCode::FieldNotGranted,
            DenialCode::NotYetValid => pb::DenialCode::NotYetValid,
            DenialCode::Expired => pb::DenialCode::Expired,
            DenialCode::NotApproved => pb::DenialCode::NotApproved,
            DenialCode::Revoked => pb::DenialCode::Revoked,
            DenialCode::UnknownDataset => pb::DenialCode::UnknownDataset,
            DenialCode::QuotaExhausted => pb::DenialCode::QuotaExhausted,
            DenialCode::SchemaVersionDisabled => pb::DenialCode::SchemaVersionDisabled,
            DenialCode::RoleNotAllowed => pb::DenialCode::RoleNotAllowed,
            DenialCode::FilterFieldNotGranted => pb::DenialCode::FilterFieldNotGranted,
            DenialCode::UnregisteredAgency => pb::DenialCode::UnregisteredAgency,
            DenialCode::MappingDisabled => pb::DenialCode::MappingDisabled,
            DenialCode::SubscribeNotGranted => pb::DenialCode::SubscribeNotGranted,
        }
    }
}

/// One failed term, with words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denial {
    pub code: DenialCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl Denial {
    pub fn new(code: DenialCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            agreement_id: None,
            fields: Vec::new(),
        }
    }

    pub fn agreement(mut self, id: &str) -> Self {
        self.agreement_id = Some(id.to_owned());
        self
    }

    pub fn fields(mut self, fields: Vec<String>) -> Self {
        self.fields = fields;
        self
    }

    pub fn to_proto(&self) -> pb::DenialReason {
        pb::DenialReason {
            code: self.code.to_proto() as i32,
            reason: self.code.as_str().to_owned(),
            message: self.message.clone(),
            agreement_id: self.agreement_id.clone().unwrap_or_default(),
            fields: self.fields.clone(),
        }
    }
}
