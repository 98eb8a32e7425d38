//! The agencies registered with this broker: the `[[agencies]]` of its
//! config. A certificate from the federation's CA is not enough to act:
//! an agency (or integrator) certificate acts — exchanges, agreement
//! steps, registry writes — only for a registered agency.

use std::collections::BTreeSet;
use std::sync::Arc;

use jembatan_core::{AgencyId, Identity};

/// The registered agencies; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Members {
    agencies: Arc<BTreeSet<AgencyId>>,
}

/// An agency that is not registered with this broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "agency {0} is not registered with this broker (it is not among the broker's [[agencies]]); a certificate from the federation's CA is not enough"
)]
pub(crate) struct Unregistered(pub(crate) AgencyId);

impl Members {
    pub(crate) fn new(agencies: impl IntoIterator<Item = AgencyId>) -> Self {
        Self {
            agencies: Arc::new(agencies.into_iter().collect()),
        }
    }

    /// Whether `agency` is registered.
    pub(crate) fn check(&self, agency: &AgencyId) -> Result<(), Unregistered> {
        if self.agencies.contains(agency) {
            Ok(())
        } else {
            Err(Unregistered(agency.clone()))
        }
    }

    /// Whether the certificate `by` may act: one that names no agency
    /// (operator, auditor, broker) always; one that names an agency only
    /// when that agency is registered.
    pub(crate) fn check_identity(&self, by: &Identity) -> Result<(), Unregistered> {
        match &by.agency {
            None => Ok(()),
            Some(agency) => self.check(agency),
        }
    }
}

#[cfg(test)]
mod tests {
    use jembatan_core::Role;

    use super::*;

    #[test]
    fn only_registered_agencies_act() {
        let members = Members::new(["prov".parse().unwrap(), "dinsos".parse().unwrap()]);
        let id = |role, agency: Option<&str>| Identity {
            role,
            agency: agency.map(|a| a.parse().unwrap()),
        };
        let cases = [
            ("registered agency", id(Role::Agency, Some("dinsos")), true),
            (
                "registered integrator",
                id(Role::Integrator, Some("prov")),
                true,
            ),
            ("unregistered agency", id(Role::Agency, Some("luar")), false),
            (
                "unregistered integrator",
                id(Role::Integrator, Some("luar")),
                false,
            ),
            ("operator", id(Role::Operator, None), true),
            ("auditor", id(Role::Auditor, None), true),
        ];
        for (name, by, allowed) in cases {
            let got = members.check_identity(&by);
            assert_eq!(got.is_ok(), allowed, "{name}");
            if let Err(err) = got {
                assert!(err.to_string().contains("luar is not registered"), "{name}");
            }
        }
    }
}
