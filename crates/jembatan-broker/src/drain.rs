//! Shutting down without cutting exchanges off unrecorded: after the
//! shutdown signal the server takes no new calls, running query streams
//! get the config's `drain_time` to finish, and those still running are
//! then ended here — each with its `cancelled` completion entry, written
//! before its stream closes — so the last checkpoint covers them all.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Whether running exchanges must end now; shared by every stream.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    ending: Arc<watch::Sender<bool>>,
    /// How long running streams may finish after the shutdown signal.
    pub(crate) time: Duration,
}

impl Drain {
    pub(crate) fn new(time: Duration) -> Self {
        Self {
            ending: Arc::new(watch::Sender::new(false)),
            time,
        }
    }

    /// Ends every running stream, and every stream that starts after.
    pub(crate) fn end_all(&self) {
        self.ending.send_replace(true);
    }

    /// Completes once [`Drain::end_all`] has been called.
    pub(crate) async fn ending(&self) {
        let mut rx = self.ending.subscribe();
        // the sender lives as long as `self`, so this cannot fail
        let _ = rx.wait_for(|ending| *ending).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_waiting_and_streams_after_see_the_end() {
        let drain = Drain::new(Duration::from_secs(1));
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.ending().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drain.end_all();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a waiting stream sees the end")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), drain.ending())
            .await
            .expect("a stream that starts after sees it at once");
    }
}
