//! What a decision reads from the store — the dataset, the agreements
//! between the consumer and the dataset, and the provider's adapter
//! endpoints — kept in memory and kept exact by the store's policy
//! version.
//!
//! The store bumps the version in the same transaction as any change to
//! agencies, datasets or agreements (triggers, migration 0015). Each
//! decision reads the version first, one single-row read, and uses only
//! what was loaded at that version: when the version moved, the memory is
//! dropped before anything in it is used. So an approval, a revocation or
//! a changed dataset made through any replica sharing the store is seen by
//! every decision that starts after the change's call returned, as when
//! every decision read the store. Certificate revocation is not in here:
//! `peer_identity` checks the revocation list on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jembatan_core::{AgencyId, Agreement, DatasetId};
use jembatan_store::{Agency, Dataset, Store, StoreError};

/// Entries kept of each kind; past it the memory starts over.
const MAX_ENTRIES: usize = 4096;

/// The policy version a decision read, and so the memory it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PolicyVersion(i64);

/// Datasets and agreements as loaded at one policy version.
#[derive(Debug, Default)]
pub(crate) struct PolicyCache {
    inner: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// The version everything below was loaded at (or after).
    version: i64,
    datasets: HashMap<DatasetId, Option<Dataset>>,
    agreements: HashMap<(AgencyId, DatasetId), Arc<[Agreement]>>,
    agencies: HashMap<AgencyId, Option<Agency>>,
}

impl Loaded {
    /// Whether a decision at `at` may use (and fill) this memory: only at
    /// the version it was loaded at. A newer version starts it over; an
    /// older one (a decision that read the version just before a change
    /// another decision has already seen) reads the store.
    fn usable(&mut self, at: PolicyVersion) -> bool {
        if at.0 > self.version {
            self.forget(at.0);
        }
        at.0 == self.version
    }

    /// Drops everything loaded, to be loaded again at `version`.
    fn forget(&mut self, version: i64) {
        self.version = version;
        self.datasets.clear();
        self.agreements.clear();
        self.agencies.clear();
    }
}

impl PolicyCache {
    /// Reads the store's policy version, at the start of a decision.
    pub(crate) async fn version(&self, store: &Store) -> Result<PolicyVersion, StoreError> {
        let version = PolicyVersion(store.policy_version().await?);
        self.lock().usable(version);
        Ok(version)
    }

    /// The dataset `id` as of `at`.
    pub(crate) async fn dataset(
        &self,
        store: &Store,
        at: PolicyVersion,
        id: &DatasetId,
    ) -> Result<Option<Dataset>, StoreError> {
        self.remembered(at, |l| &mut l.datasets, id.clone(), || store.dataset(id))
            .await
    }

    /// Every agreement between `consumer` and `dataset`, as of `at`.
    pub(crate) async fn agreements_for(
        &self,
        store: &Store,
        at: PolicyVersion,
        consumer: &AgencyId,
        dataset: &DatasetId,
    ) -> Result<Arc<[Agreement]>, StoreError> {
        let key = (consumer.clone(), dataset.clone());
        self.remembered(
            at,
            |l| &mut l.agreements,
            key,
            || async { Ok(store.agreements_for(consumer, dataset).await?.into()) },
        )
        .await
    }

    /// The agency `id` (its adapter endpoints) as of `at`.
    pub(crate) async fn agency(
        &self,
        store: &Store,
        at: PolicyVersion,
        id: &AgencyId,
    ) -> Result<Option<Agency>, StoreError> {
        self.remembered(at, |l| &mut l.agencies, id.clone(), || store.agency(id))
            .await
    }

    /// What `map` holds under `key` at `at`, or what `load` reads from the
    /// store (after the version was read, so at least as new as it),
    /// remembered while the memory is still at `at`.
    async fn remembered<K, V, F>(
        &self,
        at: PolicyVersion,
        map: impl Fn(&mut Loaded) -> &mut HashMap<K, V>,
        key: K,
        load: impl FnOnce() -> F,
    ) -> Result<V, StoreError>
    where
        K: std::hash::Hash + Eq,
        V: Clone,
        F: std::future::Future<Output = Result<V, StoreError>>,
    {
        {
            let mut loaded = self.lock();
            if loaded.usable(at)
                && let Some(found) = map(&mut loaded).get(&key)
            {
                return Ok(found.clone());
            }
        }
        let found = load().await?;
        let mut loaded = self.lock();
        if loaded.usable(at) {
            let map = map(&mut loaded);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, found.clone());
        }
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // the memory is a copy of the store: a panic elsewhere while it was
        // held leaves nothing half-written that a decision could trust
        // more than the version check
        self.inner.lock().unwrap_or_else(|poisoned| {
            self.inner.clear_poison();
            let mut loaded = poisoned.into_inner();
            loaded.forget(i64::MIN);
            loaded
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_version_starts_over_and_an_older_one_reads_the_store() {
        let mut loaded = Loaded::default();
        assert!(loaded.usable(PolicyVersion(3)));
        loaded.agreements.insert(
            (
                "dinsos".parse().unwrap(),
                "disdukcapil.penduduk".parse().unwrap(),
            ),
            Arc::from(Vec::new()),
        );
        assert!(loaded.usable(PolicyVersion(3)));
        assert_eq!(loaded.agreements.len(), 1);
        // a decision that read the version before a change
        assert!(!loaded.usable(PolicyVersion(2)));
        assert_eq!(loaded.agreements.len(), 1);
        // the change seen
        assert!(loaded.usable(PolicyVersion(4)));
        assert!(loaded.agreements.is_empty());
        assert!(!loaded.usable(PolicyVersion(3)));
    }
}
