//! What keeps one consumer from holding the broker or a provider for
//! everyone: the query streams one consumer agency may have open against
//! one provider, and how long a stream may wait for its consumer to read
//! before it is ended. (The exchanges one agency may have running, and its
//! query streams against one provider, are counted in the store across
//! replicas, `replica.rs`; connections to adapters are kept apart by
//! consumer in `adapters.rs`.)

use std::time::Duration;

use crate::replica::ProviderStream;

/// The broker's isolation limits kept in the broker itself.
#[derive(Debug)]
pub(crate) struct Isolation {
    /// How long a stream may wait for its consumer to take the next batch.
    pub(crate) stall_timeout: Duration,
}

impl Isolation {
    pub(crate) fn new(stall_timeout: Duration) -> Self {
        Self { stall_timeout }
    }
}

/// The place a query holds among its agency's streams against the
/// provider (`max_streams_per_provider`, counted in the store).
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) provider: Option<ProviderStream>,
}

impl Held {
    /// Gives the place back: the adapter's stream is over. Without this
    /// it is given back when the exchange ends.
    pub(crate) async fn release(self) {
        if let Some(stream) = self.provider {
            stream.release().await;
        }
    }
}
