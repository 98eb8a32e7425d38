//! The agreement lifecycle's settings — the registered purposes and
//! whether an operator approves after the provider — and the channel on
//! which running exchanges hear that an agreement stopped being in force.

use std::collections::BTreeMap;

use jembatan_core::AgreementStatus;
use tokio::sync::broadcast;

/// A registered purpose: the legal basis agreements may name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    /// What requests and agreements name (`verifikasi-bansos`).
    pub id: String,
    /// The legal basis, in words (`Permensos 3/2021 pasal 5`).
    pub legal_basis: String,
    /// What the purpose covers, in words.
    #[serde(default)]
    pub description: String,
}

/// A change of an agreement's status, as running exchanges hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusEvent {
    pub(crate) id: String,
    pub(crate) status: AgreementStatus,
}

/// The lifecycle settings and the channel status changes go out on.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// Whether an operator approves after the provider.
    pub(crate) operator_approval: bool,
    pub(crate) purposes: BTreeMap<String, Purpose>,
    pub(crate) events: broadcast::Sender<StatusEvent>,
}

impl Lifecycle {
    pub(crate) fn new(operator_approval: bool, purposes: &[Purpose]) -> Self {
        Self {
            operator_approval,
            purposes: purposes.iter().map(|p| (p.id.clone(), p.clone())).collect(),
            events: broadcast::channel(1024).0,
        }
    }

    pub(crate) fn publish(&self, id: &str, status: AgreementStatus) {
        // no receiver is fine: no exchange is running
        let _ = self.events.send(StatusEvent {
            id: id.to_owned(),
            status,
        });
    }
}
