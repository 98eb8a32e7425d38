//! What keeps one consumer from holding the broker or a provider for
//! everyone: the query streams one consumer agency may have open against
//! one provider, and how long a stream may wait for its consumer to read
//! before it is ended. (The exchanges one agency may have running across
//! replicas are counted in the store, `replica.rs`; connections to
//! adapters are kept apart by consumer in `adapters.rs`.)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jembatan_core::AgencyId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The broker's isolation limits.
#[derive(Debug)]
pub(crate) struct Isolation {
    /// Query streams one consumer may have open against one provider, by
    /// consumer and provider.
    pub(crate) per_provider: Slots<(AgencyId, AgencyId)>,
    /// How long a stream may wait for its consumer to take the next batch.
    pub(crate) stall_timeout: Duration,
}

impl Isolation {
    pub(crate) fn new(streams_per_provider: usize, stall_timeout: Duration) -> Self {
        Self {
            per_provider: Slots::new(streams_per_provider),
            stall_timeout,
        }
    }
}

/// The slot a query holds among its agency's streams against the
/// provider.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) _provider: Option<OwnedSemaphorePermit>,
}

/// At most `limit` slots held at once for each key; a slot is given back
/// when dropped. Keys are agencies the broker knows (certificate identities
/// and registered providers), so the table stays small.
#[derive(Debug)]
pub(crate) struct Slots<K> {
    pub(crate) limit: usize,
    held: Mutex<HashMap<K, Arc<Semaphore>>>,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// One more slot for `key`, held until dropped; `None` when all are
    /// taken.
    pub(crate) fn try_take(&self, key: &K) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            // the table only ever gains semaphores, so a panic elsewhere
            // while it was held left it whole: a poisoned lock is no
            // reason to refuse, let alone as if the limit were reached
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(s: &str) -> AgencyId {
        s.parse().expect("agency id")
    }

    #[test]
    fn slots_are_per_consumer_and_provider_and_come_back() {
        let limits = Isolation::new(2, Duration::from_secs(30));
        let (dinsos, dinkes, prov, other) = (
            agency("dinsos"),
            agency("dinkes"),
            agency("prov"),
            agency("other"),
        );
        let pair = |c: &AgencyId, p: &AgencyId| (c.clone(), p.clone());
        let a = limits.per_provider.try_take(&pair(&dinsos, &prov));
        let b = limits.per_provider.try_take(&pair(&dinsos, &prov));
        assert!(a.is_some() && b.is_some());
        assert!(
            limits
                .per_provider
                .try_take(&pair(&dinsos, &prov))
                .is_none(),
            "the third is refused"
        );
        // another consumer, or another provider, has slots of its own
        assert!(
            limits
                .per_provider
                .try_take(&pair(&dinkes, &prov))
                .is_some()
        );
        assert!(
            limits
                .per_provider
                .try_take(&pair(&dinsos, &other))
                .is_some()
        );
        drop(a);
        assert!(
            limits
                .per_provider
                .try_take(&pair(&dinsos, &prov))
                .is_some(),
            "a closed stream frees its slot"
        );
    }

    #[test]
    fn a_poisoned_slot_table_is_not_taken_for_a_reached_limit() {
        let slots = Arc::new(Slots::new(1));
        let dinsos = agency("dinsos");
        let poisoner = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                let _held = slots.held.lock();
                panic!("a panic while the table is held poisons its lock");
            })
        };
        assert!(poisoner.join().is_err());
        assert!(slots.held.is_poisoned());

        let slot = slots.try_take(&dinsos);
        assert!(slot.is_some(), "the first exchange gets its slot");
        assert!(slots.try_take(&dinsos).is_none(), "the limit still holds");
        drop(slot);
        assert!(slots.try_take(&dinsos).is_some(), "a freed slot is free");
    }
}
