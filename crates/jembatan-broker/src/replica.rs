//! This broker as one replica of those sharing a store: its lease, the
//! exchanges it has open (counted against `max_streams_per_agency`, and
//! its query streams against `max_streams_per_provider`, for every
//! replica together), the leases on work one replica does at a time
//! (signing checkpoints, closing what gone replicas left open), and the
//! closing itself: an `abandoned` completion entry for every allowed
//! exchange whose replica died before writing its end.
//!
//! The lease keeps every exchange to exactly one end. A replica acts —
//! starts an exchange, writes an end — only while its own lease is
//! current by its own clock, measured from before the renewal was sent,
//! so it stops no later than the store thinks its lease is over. Other
//! replicas find it gone only once its lease has been over for one more
//! heartbeat, and only then close its exchanges.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jembatan_core::agreement::{format_instant, parse_instant};
use jembatan_core::{AgencyId, AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::{AuditLog, Store, StoreError};

/// The lease on signing checkpoints.
pub(crate) const CHECKPOINT_LEASE: &str = "checkpoint";
/// The lease on closing the exchanges of gone replicas.
const SWEEP_LEASE: &str = "sweep";
/// Exchanges left open closed per heartbeat, at most.
const CLOSE_PER_TICK: u64 = 256;

/// How a replica keeps its lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How often the lease is renewed and gone replicas looked for.
    pub(crate) heartbeat: Duration,
    /// How long a lease lasts from each renewal.
    pub(crate) lease: Duration,
}

/// A lease this replica may hold, as far as it knows: until when.
#[derive(Debug)]
pub(crate) struct Lease {
    name: &'static str,
    until: Mutex<Option<Instant>>,
}

impl Lease {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            until: Mutex::new(None),
        }
    }

    /// Takes or renews the lease for `holder`; whether it is held now.
    async fn take(&self, store: &Store, holder: &str, lease: Duration) -> bool {
        let asked = Instant::now();
        let held = match store.take_lease(self.name, holder, lease).await {
            Ok(held) => held,
            Err(err) => {
                tracing::warn!(lease = self.name, error = %err, "cannot renew a lease in the store");
                return self.held();
            }
        };
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = held.then(|| asked + lease);
        held
    }

    /// Whether the lease is held and not over, by this replica's clock.
    pub(crate) fn held(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }
}

/// The replica's id and until when its lease is current.
#[derive(Debug)]
struct Current {
    id: Arc<str>,
    until: Instant,
}

/// This broker process as a replica.
#[derive(Debug)]
pub(crate) struct Replica {
    store: Store,
    audit: AuditLog,
    /// Where it runs, for operators listing replicas.
    name: String,
    timing: Timing,
    /// Most exchanges one agency may have open across replicas.
    per_agency: u64,
    /// Most query streams one agency may have open against one provider
    /// across replicas.
    per_provider: u64,
    current: Mutex<Current>,
    /// Allowed exchanges of this replica whose end could not be written
    /// (the log refused it, or the lease was not current): closed
    /// `abandoned` once the lease is current again.
    orphans: Mutex<Vec<(Arc<str>, String)>>,
    pub(crate) checkpoint: Lease,
    sweep: Lease,
}

/// Why an exchange was not opened.
#[derive(Debug)]
pub(crate) enum NotOpened {
    /// Its agency has `max_streams_per_agency` exchanges open already.
    Full(u64),
    /// This replica's lease is not current.
    LeaseLost,
    Store(StoreError),
}

impl Replica {
    /// Registers this process as a new replica.
    pub(crate) async fn start(
        store: Store,
        audit: AuditLog,
        timing: Timing,
        per_agency: usize,
        per_provider: usize,
    ) -> Result<Arc<Replica>, StoreError> {
        let name = format!("{}/{}", host_name(), std::process::id());
        let (id, until) = register(&store, &name, timing).await?;
        tracing::info!(replica = %id, name, "broker replica registered in the store");
        Ok(Arc::new(Replica {
            store,
            audit,
            name,
            timing,
            per_agency: u64::try_from(per_agency).unwrap_or(u64::MAX),
            per_provider: u64::try_from(per_provider).unwrap_or(u64::MAX),
            current: Mutex::new(Current { id, until }),
            orphans: Mutex::new(Vec::new()),
            checkpoint: Lease::new(CHECKPOINT_LEASE),
            sweep: Lease::new(SWEEP_LEASE),
        }))
    }

    /// The replica's current id.
    pub(crate) fn id(&self) -> Arc<str> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .id
            .clone()
    }

    /// Whether `id` is this replica's id and its lease is current.
    pub(crate) fn holds(&self, id: &str) -> bool {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *current.id == *id && Instant::now() < current.until
    }

    /// Opens an exchange of `consumer` in the store, within the limit
    /// shared by every replica.
    pub(crate) async fn open(
        self: &Arc<Self>,
        exchange_id: &str,
        consumer: &AgencyId,
    ) -> Result<OpenSlot, NotOpened> {
        let id = self.id();
        if !self.holds(&id) {
            return Err(NotOpened::LeaseLost);
        }
        let opened = self
            .store
            .open_exchange(
                exchange_id,
                &id,
                consumer.as_str(),
                self.per_agency,
                self.timing.heartbeat,
            )
            .await
            .map_err(NotOpened::Store)?;
        if !opened {
            return Err(NotOpened::Full(self.per_agency));
        }
        Ok(OpenSlot {
            replica: self.clone(),
            replica_id: id,
            exchange_id: exchange_id.to_owned(),
            orphaned: false,
        })
    }

    /// Counts the open exchange `slot` among its consumer's query streams
    /// against `provider`, within the limit shared by every replica.
    /// `Err(NotOpened::Full(limit))` when they are all taken.
    pub(crate) async fn take_provider_stream(
        self: &Arc<Self>,
        slot: &OpenSlot,
        consumer: &AgencyId,
        provider: &AgencyId,
    ) -> Result<ProviderStream, NotOpened> {
        if !slot.holds() {
            return Err(NotOpened::LeaseLost);
        }
        let taken = self
            .store
            .take_provider_stream(
                &slot.exchange_id,
                consumer.as_str(),
                provider.as_str(),
                self.per_provider,
                self.timing.heartbeat,
            )
            .await
            .map_err(NotOpened::Store)?;
        if !taken {
            return Err(NotOpened::Full(self.per_provider));
        }
        Ok(ProviderStream {
            store: self.store.clone(),
            exchange_id: slot.exchange_id.clone(),
        })
    }

    /// One heartbeat: renews the lease (registering again under a new id
    /// if this replica was found gone), closes its own orphans, and —
    /// holding the sweep lease — marks gone replicas and closes what they
    /// left open.
    pub(crate) async fn tick(&self) {
        let id = self.id();
        let asked = Instant::now();
        match self.store.renew_replica(&id, self.timing.lease).await {
            Ok(true) => {
                self.current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .until = asked + self.timing.lease;
            }
            Ok(false) => {
                tracing::error!(
                    replica = %id,
                    "this broker replica was found gone (its lease ran out); another replica closes the exchanges it had open, and it registers again under a new id"
                );
                match register(&self.store, &self.name, self.timing).await {
                    Ok((new_id, until)) => {
                        tracing::info!(replica = %new_id, "broker replica registered in the store");
                        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
                            Current { id: new_id, until };
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "cannot register the broker replica again")
                    }
                }
            }
            Err(err) => {
                tracing::warn!(replica = %id, error = %err, "cannot renew the replica lease");
            }
        }
        let id = self.id();
        if self.holds(&id) {
            self.close_orphans(&id).await;
            self.checkpoint
                .take(&self.store, &id, self.timing.lease)
                .await;
            if self.sweep.take(&self.store, &id, self.timing.lease).await {
                self.sweep_gone().await;
            }
        }
    }

    /// Takes or renews the checkpoint lease; whether it is held.
    pub(crate) async fn take_checkpoint_lease(&self) -> bool {
        let id = self.id();
        self.holds(&id)
            && self
                .checkpoint
                .take(&self.store, &id, self.timing.lease)
                .await
    }

    /// Closes this replica's exchanges whose end it could not write.
    async fn close_orphans(&self, id: &Arc<str>) {
        let orphans: Vec<(Arc<str>, String)> =
            std::mem::take(&mut *self.orphans.lock().unwrap_or_else(PoisonError::into_inner));
        let mut left = Vec::new();
        for (owner, exchange_id) in orphans {
            if owner != *id {
                // an earlier id of this replica, found gone: the sweep
                // closes its exchanges with the others'
                continue;
            }
            let why = "the broker could not write the exchange's end when it ended (the audit log refused it, or the broker's replica lease was not current)";
            match self
                .close(&exchange_id, &owner, why, || self.holds(&owner))
                .await
            {
                Ok(true) => {}
                Ok(false) => left.push((owner, exchange_id)),
                Err(err) => {
                    tracing::warn!(exchange_id, error = %err, "cannot close an exchange left open");
                    left.push((owner, exchange_id));
                }
            }
        }
        self.orphans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(left);
    }

    /// Marks gone the replicas whose lease has been over for a heartbeat,
    /// closes what gone replicas left open, and forgets those done.
    async fn sweep_gone(&self) {
        match self.store.mark_gone_replicas(self.timing.heartbeat).await {
            Ok(gone) => {
                for replica in gone {
                    tracing::warn!(
                        replica,
                        "broker replica found gone (its lease ran out); closing the exchanges it had open as abandoned"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot look for gone replicas");
                return;
            }
        }
        let left = match self.store.left_open(CLOSE_PER_TICK).await {
            Ok(left) => left,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the exchanges gone replicas left open");
                return;
            }
        };
        for open in left {
            let why = format!(
                "the broker replica {} running the exchange was found gone (its lease in the store ran out) before the exchange ended; what it delivered is not known",
                open.replica
            );
            match self
                .close(&open.exchange_id, &open.replica, &why, || self.sweep.held())
                .await
            {
                Ok(true) => {}
                // the sweep lease is over: the next holder goes on
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(exchange_id = open.exchange_id, error = %err, "cannot close an exchange left open");
                    return;
                }
            }
        }
        if let Err(err) = self.store.forget_gone_replicas().await {
            tracing::warn!(error = %err, "cannot remove gone replicas");
        }
    }

    /// Closes one exchange left open: an allowed exchange with no end on
    /// the log gets its `abandoned` completion (written only while
    /// `may_write` holds), and its open row goes. `false` when it could
    /// not be written for want of the lease.
    async fn close(
        &self,
        exchange_id: &str,
        replica: &str,
        why: &str,
        may_write: impl Fn() -> bool,
    ) -> Result<bool, StoreError> {
        let entries = self.audit.exchange(exchange_id).await?;
        let decision = entries
            .iter()
            .find(|e| e.entry.kind == EntryKind::Decision && e.entry.decision == Decision::Allow);
        let ended = entries
            .iter()
            .any(|e| e.entry.kind == EntryKind::Completion);
        if let (Some(decision), false) = (decision, ended) {
            if !may_write() {
                return Ok(false);
            }
            let stored = self.audit.append(abandoned(&decision.entry, why)).await?;
            tracing::warn!(
                exchange_id,
                replica,
                entry = stored.seq,
                "exchange left open closed on the audit log as abandoned"
            );
        }
        self.store.close_exchange(exchange_id).await?;
        Ok(true)
    }

    /// Gives up the leases and, unless exchanges are still open under
    /// it, the replica's row: a clean shutdown.
    pub(crate) async fn retire(&self) {
        let id = self.id();
        if self.holds(&id) {
            self.close_orphans(&id).await;
        }
        if let Err(err) = self.store.retire_replica(&id).await {
            tracing::warn!(replica = %id, error = %err, "cannot retire the broker replica");
        }
    }

    fn orphan(&self, replica_id: Arc<str>, exchange_id: String) {
        self.orphans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((replica_id, exchange_id));
    }
}

/// Registers a replica under a new id; its id and lease end.
async fn register(
    store: &Store,
    name: &str,
    timing: Timing,
) -> Result<(Arc<str>, Instant), StoreError> {
    let id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
    let asked = Instant::now();
    store.register_replica(&id, name, timing.lease).await?;
    Ok((id, asked + timing.lease))
}

/// Renews the lease every heartbeat, until aborted.
pub(crate) async fn run(replica: Arc<Replica>) {
    let mut tick = tokio::time::interval(replica.timing.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        replica.tick().await;
    }
}

/// The `abandoned` completion of an exchange whose decision entry is
/// `decision`: the same exchange, as the decision logged it (so no more
/// of the request than the decision holds), with nothing counted.
fn abandoned(decision: &AuditEntry, why: &str) -> AuditEntry {
    let now = chrono::Utc::now();
    let duration_ms = parse_instant(&decision.time)
        .ok()
        .and_then(|started| u64::try_from((now - started).num_milliseconds()).ok());
    AuditEntry {
        kind: EntryKind::Completion,
        time: format_instant(&now),
        decision: Decision::Allow,
        reasons: Vec::new(),
        status: ExchangeStatus::Abandoned,
        rows: 0,
        bytes: 0,
        payload_sha256: None,
        received: None,
        duration_ms,
        error: Some(why.to_owned()),
        adapter_endpoint: None,
        ..decision.clone()
    }
}

/// The host this process runs on, as the kernel names it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// An exchange open in the store under this replica. Dropped, it is
/// forgotten (the exchange ended, or was never allowed); orphaned, it
/// stays open for this replica — or, when it is gone, another — to
/// close `abandoned`.
#[derive(Debug)]
pub(crate) struct OpenSlot {
    replica: Arc<Replica>,
    replica_id: Arc<str>,
    exchange_id: String,
    orphaned: bool,
}

impl OpenSlot {
    /// Whether the replica that opened it may still act for it.
    pub(crate) fn holds(&self) -> bool {
        self.replica.holds(&self.replica_id)
    }

    /// Leaves the exchange open, to be closed `abandoned`.
    pub(crate) fn orphan(mut self) {
        self.orphaned = true;
    }

    /// The commit that made the exchange's end durable forgot it in the
    /// store ([`jembatan_store::AuditLog::append_end`]): nothing is left
    /// to close.
    pub(crate) fn forgotten(mut self) {
        self.exchange_id.clear();
    }
}

/// A query stream counted against `max_streams_per_provider` in the
/// store. Given back by [`ProviderStream::release`] once the adapter's
/// stream is over; otherwise when the exchange ends and its open row goes.
#[derive(Debug)]
pub(crate) struct ProviderStream {
    store: Store,
    exchange_id: String,
}

impl ProviderStream {
    /// Stops counting the stream: the adapter's stream is over. A store
    /// that cannot be written keeps it counted until the exchange ends.
    pub(crate) async fn release(self) {
        if let Err(err) = self.store.release_provider_stream(&self.exchange_id).await {
            tracing::warn!(exchange_id = %self.exchange_id, error = %err, "cannot give back a provider stream in the store; it counts until the exchange ends");
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let exchange_id = std::mem::take(&mut self.exchange_id);
        if exchange_id.is_empty() {
            // closed already
            return;
        }
        if self.orphaned {
            tracing::warn!(
                exchange_id,
                "the exchange's end was not written; it is closed as abandoned later"
            );
            self.replica.orphan(self.replica_id.clone(), exchange_id);
            return;
        }
        let (replica, replica_id) = (self.replica.clone(), self.replica_id.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = replica.store.close_exchange(&exchange_id).await {
                        // tried again at the next heartbeat, which finds
                        // the exchange ended and only forgets it
                        tracing::warn!(exchange_id, error = %err, "cannot forget an ended exchange in the store");
                        replica.orphan(replica_id, exchange_id);
                    }
                });
            }
            Err(_) => {
                tracing::warn!(exchange_id, "no runtime left to forget an ended exchange");
            }
        }
    }
}
