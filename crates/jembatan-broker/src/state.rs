//! The broker-wide state every service works on: the store and the
//! audit log, the registry, the agreement lifecycle, the limits that keep
//! agencies apart, and the connections to the providers' adapters.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jembatan_core::AuditEntry;
use jembatan_store::{AuditLog, Store};
use tokio::sync::watch;
use tonic::Status;

use crate::acks::Acks;
use crate::adapters::AdapterPool;
use crate::admit::Workers;
use crate::cursor::CursorSealer;
use crate::drain::Drain;
use crate::error::ExchangeError;
use crate::facts::AuditKey;
use crate::isolation::Isolation;
use crate::journal::Journal;
use crate::lifecycle::Lifecycle;
use crate::members::Members;
use crate::policy_cache::PolicyCache;
use crate::registry::Registry;
use crate::replica::Replica;

/// The broker's shared state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) audit: AuditLog,
    /// Writes the entries of exchanges (see `journal.rs`).
    pub(crate) journal: Journal,
    pub(crate) adapters: AdapterPool,
    pub(crate) audit_key: AuditKey,
    /// Per dataset, the fields whose values are subject keys (the key
    /// and the config's `subject_keys`).
    pub(crate) subject_fields: HashMap<String, BTreeSet<String>>,
    /// The latest signed checkpoint note, handed out with receipts.
    pub(crate) checkpoint_notes: watch::Receiver<Option<String>>,
    pub(crate) registry: Arc<Registry>,
    /// The agencies registered with this broker; only they act.
    pub(crate) members: Members,
    pub(crate) lifecycle: Lifecycle,
    /// Datasets and agreements as decisions read them, kept exact by the
    /// store's policy version.
    pub(crate) policy: PolicyCache,
    /// Query streams per consumer and provider, and the stall timeout.
    pub(crate) isolation: Isolation,
    /// This broker as a replica: its lease, and the exchanges it has open
    /// under `max_streams_per_agency`, counted across replicas.
    pub(crate) replica: Arc<Replica>,
    /// Threads that check and translate the records of running queries.
    pub(crate) workers: Workers,
    /// Receipts on their way back to the providers' adapters.
    pub(crate) acks: Acks,
    /// Ends running streams at shutdown.
    pub(crate) drain: Drain,
    /// Seals and opens subscription cursors, alike on every replica.
    pub(crate) cursors: CursorSealer,
}

impl State {
    /// Appends an entry that is not an exchange's (an agreement step),
    /// failing closed: no durable entry, no step.
    pub(crate) async fn record_step(&self, entry: AuditEntry) -> Result<u64, Status> {
        match self.audit.append(entry).await {
            Ok(stored) => Ok(stored.seq),
            Err(err) => Err(ExchangeError::AuditRefused(Box::new(err)).into()),
        }
    }
}
