//! What keeps one consumer from holding a provider for everyone: the query
//! streams one consumer agency may have open against one provider at once,
//! and how long a stream may wait for its consumer to read before it is
//! ended. (Connections to adapters are kept apart by consumer in
//! `adapters.rs`; the per-agency limit on all exchanges is in
//! `exchange.rs`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jembatan_core::AgencyId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The broker's isolation limits.
#[derive(Debug)]
pub(crate) struct Isolation {
    /// Most query streams one consumer may have open against one provider.
    pub(crate) streams_per_provider: usize,
    /// How long a stream may wait for its consumer to take the next batch.
    pub(crate) stall_timeout: Duration,
    /// By consumer and provider.
    open: Mutex<HashMap<(AgencyId, AgencyId), Arc<Semaphore>>>,
}

impl Isolation {
    pub(crate) fn new(streams_per_provider: usize, stall_timeout: Duration) -> Self {
        Self {
            streams_per_provider,
            stall_timeout,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more query stream of `consumer` against `provider`,
    /// held until dropped; `None` when all are taken.
    pub(crate) fn try_stream(
        &self,
        consumer: &AgencyId,
        provider: &AgencyId,
    ) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            // the map is left whole by a panic elsewhere
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            open.entry((consumer.clone(), provider.clone()))
                .or_insert_with(|| Arc::new(Semaphore::new(self.streams_per_provider)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_consumer_and_provider_and_come_back() {
        let limits = Isolation::new(2, Duration::from_secs(30));
        let agency = |s: &str| s.parse::<AgencyId>().unwrap();
        let (dinsos, dinkes, prov, other) = (
            agency("dinsos"),
            agency("dinkes"),
            agency("prov"),
            agency("other"),
        );
        let a = limits.try_stream(&dinsos, &prov);
        let b = limits.try_stream(&dinsos, &prov);
        assert!(a.is_some() && b.is_some());
        assert!(
            limits.try_stream(&dinsos, &prov).is_none(),
            "the third is refused"
        );
        // another consumer, or another provider, has slots of its own
        assert!(limits.try_stream(&dinkes, &prov).is_some());
        assert!(limits.try_stream(&dinsos, &other).is_some());
        drop(a);
        assert!(
            limits.try_stream(&dinsos, &prov).is_some(),
            "a closed stream frees its slot"
        );
    }
}
