//! An exchange's entries on the audit log, all written through one path:
//! [`Journal::write`] redacts the entry (no value the consumer sent
//! reaches the log in clear) and appends it from a task of its own, so
//! that a handler dropped by the server — the consumer's deadline passed,
//! or it went away — cannot cut a write in half.
//!
//! A refused request gets one decision entry ([`Journal::refused`]). An
//! allowed query gets its decision entry from [`Journal::begin`], which
//! hands back an [`Unfinished`] guard, and exactly one end: the
//! completion entry the relay writes with [`Journal::end`], or — when the
//! guard is dropped before that — a `cancelled` one the guard writes.
//! An allowed lookup, whose answer is one message, gets its guard from
//! [`Journal::defer`] without an entry yet, and its one `answered` entry —
//! decision and completion together — at its end, in the same two ways.
//!
//! The guard holds the exchange open in the store (`replica.rs`) until
//! its end is durable. An end
//! is written only while the replica's lease is current; one that is not
//! written (the log refused it, or the lease lapsed) leaves the exchange
//! open, to be closed `abandoned` if its decision entry is on the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus, PayloadHasher};
use jembatan_store::{AuditLog, StoredEntry};
use tokio::sync::oneshot;
use tonic::Status;

use crate::error::ExchangeError;
use crate::facts::Facts;
use crate::replica::OpenSlot;

/// Writes the entries of exchanges.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    audit: AuditLog,
}

impl Journal {
    pub(crate) fn new(audit: AuditLog) -> Self {
        Self { audit }
    }

    /// The one way an exchange's entry reaches the log: redacted, then
    /// appended; `ends`: as its exchange's end, forgetting the exchange
    /// among the open ones in the same commit. The future owns what it
    /// needs, to run in a task of its own.
    fn append(
        &self,
        facts: &Facts,
        mut entry: AuditEntry,
        ends: bool,
    ) -> impl Future<Output = Result<StoredEntry, jembatan_store::StoreError>> + Send + 'static
    {
        facts.redact(&mut entry);
        let audit = self.audit.clone();
        async move {
            if ends {
                audit.append_end(entry).await
            } else {
                audit.append(entry).await
            }
        }
    }

    /// Appends an entry (see [`Journal::append`]) by a task of its own.
    /// The handle resolves once the entry is durable (or refused);
    /// dropping it does not stop the write.
    fn write(
        &self,
        facts: &Facts,
        entry: AuditEntry,
    ) -> tokio::task::JoinHandle<Result<StoredEntry, jembatan_store::StoreError>> {
        tokio::spawn(self.append(facts, entry, false))
    }

    /// Writes the decision entry of a refused request (denied, invalid,
    /// over a limit) and returns its sequence number. Failing closed: no
    /// durable entry, and the caller is told the log cannot be written.
    pub(crate) async fn refused(&self, facts: &Facts, entry: AuditEntry) -> Result<u64, Status> {
        match self.write(facts, entry).await {
            Ok(Ok(stored)) => Ok(stored.seq),
            Ok(Err(err)) => Err(ExchangeError::AuditRefused(Box::new(err)).into()),
            // the write task ended without an answer
            Err(err) => Err(ExchangeError::AuditRefused(Box::new(err)).into()),
        }
    }

    /// Writes an allow decision entry and returns its sequence number and
    /// the guard of the exchange's end, once the entry is durable. If the
    /// handler is gone by then, the guard it would have received is
    /// dropped and writes the `cancelled` completion.
    pub(crate) async fn begin(
        &self,
        facts: &Facts,
        open: OpenSlot,
    ) -> Result<(u64, Unfinished), Status> {
        if !open.holds() {
            return Err(ExchangeError::LeaseLost.into());
        }
        let entry = facts.entry(
            EntryKind::Decision,
            Decision::Allow,
            ExchangeStatus::Started,
        );
        let written = self.write(facts, entry);
        let (reply, decided) = oneshot::channel();
        let (journal, facts) = (self.clone(), facts.clone());
        tokio::spawn(async move {
            let result = match written.await {
                Ok(Ok(stored)) => Ok((
                    stored.seq,
                    Unfinished {
                        journal,
                        facts,
                        answered: false,
                        armed: AtomicBool::new(true),
                        open: Mutex::new(Some(open)),
                    },
                )),
                Ok(Err(err)) => Err(ExchangeError::AuditRefused(Box::new(err))),
                Err(err) => Err(ExchangeError::AuditRefused(Box::new(err))),
            };
            // a handler gone by now drops the guard with the reply
            let _ = reply.send(result);
        });
        match decided.await {
            Ok(begun) => begun.map_err(Status::from),
            // the decision task ended without an answer
            Err(err) => Err(ExchangeError::AuditRefused(Box::new(err)).into()),
        }
    }

    /// Writes one entry of a running exchange that is neither its
    /// decision nor its end (a subscription's delivered batch), failing
    /// closed: the caller may send what it covers only once this returns
    /// the stored entry. Refused when the replica's lease is not current.
    pub(crate) async fn during(
        &self,
        end: &Unfinished,
        entry: AuditEntry,
    ) -> Result<StoredEntry, Status> {
        if !end.holds() {
            return Err(ExchangeError::LeaseLost.into());
        }
        match self.write(&end.facts, entry).await {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(err)) => Err(ExchangeError::AuditNoReceipt(Box::new(err)).into()),
            Err(err) => Err(ExchangeError::AuditNoReceipt(Box::new(err)).into()),
        }
    }

    /// The guard of an allowed exchange answered whole (a lookup): no
    /// entry yet; its end is one `answered` entry holding the decision.
    pub(crate) fn defer(&self, facts: &Facts, open: OpenSlot) -> Result<Unfinished, Status> {
        if !open.holds() {
            return Err(ExchangeError::LeaseLost.into());
        }
        Ok(Unfinished {
            journal: self.clone(),
            facts: facts.clone(),
            answered: true,
            armed: AtomicBool::new(true),
            open: Mutex::new(Some(open)),
        })
    }

    /// Writes an allowed exchange's end entry (made by
    /// [`Unfinished::end_entry`]), disarming its guard:
    /// the exchange's one end. A receipt may be issued only once this
    /// returns.
    pub(crate) async fn end(
        &self,
        end: &Unfinished,
        entry: AuditEntry,
    ) -> Result<StoredEntry, Status> {
        if !end.take() {
            tracing::error!(exchange_id = %end.facts.exchange_id, "an exchange was to end twice");
            return Err(ExchangeError::EndedTwice.into());
        }
        let open = end.open_slot();
        match self.write_end(&end.facts, open, entry).await {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(err)) => Err(err.into()),
            // the completion task failed
            Err(err) => Err(ExchangeError::AuditNoReceipt(Box::new(err)).into()),
        }
    }

    /// Writes an exchange's end from a task of its own if the replica
    /// that opened it may still write it; the exchange is forgotten in the
    /// store in the same commit. An end not written leaves it open, to be
    /// closed `abandoned`.
    fn write_end(
        &self,
        facts: &Facts,
        open: Option<OpenSlot>,
        entry: AuditEntry,
    ) -> tokio::task::JoinHandle<Result<StoredEntry, ExchangeError>> {
        if open.as_ref().is_some_and(|o| !o.holds()) {
            if let Some(open) = open {
                open.orphan();
            }
            return tokio::spawn(async { Err(ExchangeError::LeaseLost) });
        }
        // the slot was opened under the facts' exchange id, which the end
        // entry names: the store forgets it with the entry, in one commit
        let written = self.append(facts, entry, open.is_some());
        tokio::spawn(async move {
            match written.await {
                Ok(stored) => {
                    if let Some(open) = open {
                        open.forgotten();
                    }
                    Ok(stored)
                }
                Err(err) => {
                    if let Some(open) = open {
                        open.orphan();
                    }
                    Err(ExchangeError::AuditNoReceipt(Box::new(err)))
                }
            }
        })
    }
}

/// An allowed exchange whose completion entry is not written yet. Dropped
/// armed — its handler dropped by the server because the consumer's
/// deadline passed or the consumer went away, or its relay task ended
/// without finishing — it writes the exchange's `cancelled` completion.
#[derive(Debug)]
pub(crate) struct Unfinished {
    journal: Journal,
    facts: Facts,
    /// No decision entry was written: the end is an `answered` entry.
    answered: bool,
    armed: AtomicBool,
    /// The exchange open in the store until its end is durable.
    open: Mutex<Option<OpenSlot>>,
}

impl Unfinished {
    /// The exchange's end entry with `status`, for the caller to complete
    /// with what was delivered: a completion, or for an exchange answered
    /// whole, its one `answered` entry.
    pub(crate) fn end_entry(&self, status: ExchangeStatus) -> AuditEntry {
        let kind = if self.answered {
            EntryKind::Answered
        } else {
            EntryKind::Completion
        };
        self.facts.entry(kind, Decision::Allow, status)
    }

    /// Whether the exchange is still open under this replica's current
    /// lease (and not ended).
    pub(crate) fn holds(&self) -> bool {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(OpenSlot::holds)
    }

    /// Disarms the guard; `true` the first time, for the one caller that
    /// then writes the completion.
    fn take(&self) -> bool {
        self.armed.swap(false, Ordering::AcqRel)
    }

    /// The exchange's open slot, taken out (once) to end it.
    fn open_slot(&self) -> Option<OpenSlot> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !*self.armed.get_mut() {
            return;
        }
        let mut entry = self.end_entry(ExchangeStatus::Cancelled);
        entry.payload_sha256 = Some(PayloadHasher::new().hex());
        entry.duration_ms = Some(self.facts.elapsed_ms());
        entry.error = Some(
            "the consumer went away before the exchange ended (its deadline passed or it cancelled the call)"
                .to_owned(),
        );
        let exchange_id = self.facts.exchange_id.clone();
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(
                exchange_id,
                "no runtime left to record a cancelled exchange"
            );
            return;
        }
        let open = self
            .open
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let written = self.journal.write_end(&self.facts, open, entry);
        tokio::spawn(async move {
            match written.await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = %err, exchange_id, "audit completion write failed")
                }
                Err(err) => {
                    tracing::error!(error = %err, exchange_id, "audit completion write failed")
                }
            }
        });
    }
}
