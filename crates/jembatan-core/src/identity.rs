//! Who a certificate says its holder is.
//!
//! Every certificate `jembatan pki` issues carries one URI subject
//! alternative name of the form `spiffe://jembatan/<role>[/<agency>]`.
//! Services read the caller's identity from the verified client
//! certificate only; no request field can change it.

use std::fmt;

use crate::ids::AgencyId;

/// The trust domain of identity URIs.
pub const TRUST_DOMAIN: &str = "jembatan";

/// What a certificate's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The central broker (client of adapters, server for everyone else).
    Broker,
    /// An agency's adapter (server for the broker).
    Adapter,
    /// An agency system: consumer of other agencies' datasets.
    Agency,
    /// An agency's integrator: registry writes for its own datasets.
    Integrator,
    /// An auditor: reads the audit log.
    Auditor,
    /// An operator: agencies, PKI, approvals.
    Operator,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Broker,
        Role::Adapter,
        Role::Agency,
        Role::Integrator,
        Role::Auditor,
        Role::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Adapter => "adapter",
            Role::Agency => "agency",
            Role::Integrator => "integrator",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
        }
    }

    /// Whether identities of this role belong to one agency.
    pub fn has_agency(self) -> bool {
        matches!(self, Role::Adapter | Role::Agency | Role::Integrator)
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated identity: a role and, for agency-bound roles, the agency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub agency: Option<AgencyId>,
}

/// A role and agency that make no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("role {0} needs an agency id")]
    NeedsAgency(Role),
    #[error("role {role} takes no agency id (got {agency})")]
    TakesNoAgency { role: Role, agency: AgencyId },
}

impl Identity {
    pub fn agency(agency: AgencyId) -> Self {
        Self {
            role: Role::Agency,
            agency: Some(agency),
        }
    }

    pub fn new(role: Role, agency: Option<AgencyId>) -> Result<Self, IdentityError> {
        match (role.has_agency(), agency) {
            (true, None) => Err(IdentityError::NeedsAgency(role)),
            (false, Some(agency)) => Err(IdentityError::TakesNoAgency { role, agency }),
            (_, agency) => Ok(Self { role, agency }),
        }
    }

    /// The identity's URI, as written in the certificate.
    pub fn uri(&self) -> String {
        match &self.agency {
            Some(a) => format!("spiffe://{TRUST_DOMAIN}/{}/{a}", self.role),
            None => format!("spiffe://{TRUST_DOMAIN}/{}", self.role),
        }
    }

    /// Parses an identity URI; `None` when it is not one of ours.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        let rest = rest.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let role = Role::parse(parts.next()?)?;
        let agency = match parts.next() {
            Some(a) => Some(a.parse().ok()?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Identity::new(role, agency).ok()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.agency {
            Some(a) => write!(f, "{}:{a}", self.role),
            None => write!(f, "{}", self.role),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        let id = Identity::new(Role::Agency, Some("dinsos".parse().unwrap())).unwrap();
        assert_eq!(id.uri(), "spiffe://jembatan/agency/dinsos");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        let b = Identity::new(Role::Broker, None).unwrap();
        assert_eq!(Identity::from_uri("spiffe://jembatan/broker"), Some(b));
    }

    #[test]
    fn foreign_uris_are_not_identities() {
        for uri in [
            "spiffe://other/agency/dinsos",
            "spiffe://jembatan/agency",
            "spiffe://jembatan/broker/x",
            "spiffe://jembatan/agency/Dinsos",
            "spiffe://jembatan/agency/dinsos/extra",
            "spiffe://jembatan/king",
            "https://jembatan/agency/dinsos",
        ] {
            assert_eq!(Identity::from_uri(uri), None, "{uri}");
        }
    }
}
