//! Receipts handed back to the providers' adapters for their own logs.
//!
//! Each provider has one queue and one task that sends what has gathered
//! in one `AcknowledgeBatch` call: a receipt waits only while the previous
//! call to the same adapter is being written, and the adapter syncs its
//! log once per call instead of once per exchange. Best effort, as a
//! single call was: the broker's audit log is the record, the adapter's
//! log is the agency's own copy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jembatan_core::AgencyId;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tonic::Code;
use tonic::transport::Channel;

/// Receipts waiting for one adapter before newer ones are dropped.
const QUEUE: usize = 8192;
/// Most receipts in one call (the adapter takes up to 1,024).
const PER_CALL: usize = 512;
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One receipt to hand back, with the channel to its adapter.
struct Ack {
    request: pb::AcknowledgeRequest,
    client: AdapterClient<Channel>,
}

/// The providers' receipt queues.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    queues: Mutex<HashMap<AgencyId, mpsc::Sender<Ack>>>,
}

impl Acks {
    /// Queues `request` for `provider`'s adapter, reached through `client`.
    pub(crate) fn send(
        &self,
        provider: &AgencyId,
        client: AdapterClient<Channel>,
        request: pb::AcknowledgeRequest,
    ) {
        let Ok(mut queues) = self.queues.lock() else {
            tracing::warn!(%provider, "receipt queues unavailable; the adapter is not told the receipt");
            return;
        };
        let mut ack = Ack { request, client };
        for _ in 0..2 {
            let tx = queues.entry(provider.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(drain(provider.clone(), rx));
                tx
            });
            match tx.try_send(ack) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(%provider, "{QUEUE} receipts wait for the adapter; this one is not sent");
                    return;
                }
                // the task ended (its runtime is gone): start another
                Err(TrySendError::Closed(back)) => {
                    queues.remove(provider);
                    ack = back;
                }
            }
        }
    }
}

/// Sends `provider`'s receipts as they gather, oldest first.
async fn drain(provider: AgencyId, mut rx: mpsc::Receiver<Ack>) {
    let mut batch = Vec::with_capacity(PER_CALL);
    while rx.recv_many(&mut batch, PER_CALL).await > 0 {
        // the newest channel: the adapter's address may have changed
        let Some(mut client) = batch.last().map(|a: &Ack| a.client.clone()) else {
            continue;
        };
        let receipts: Vec<pb::AcknowledgeRequest> = batch.drain(..).map(|a| a.request).collect();
        let n = receipts.len();
        let mut request = tonic::Request::new(pb::AcknowledgeBatchRequest {
            receipts: receipts.clone(),
        });
        request.set_timeout(CALL_TIMEOUT);
        match client.acknowledge_batch(request).await {
            Ok(_) => {}
            // an adapter from before batches: one call each
            Err(status) if status.code() == Code::Unimplemented => {
                for receipt in receipts {
                    let mut request = tonic::Request::new(receipt);
                    request.set_timeout(CALL_TIMEOUT);
                    if let Err(err) = client.acknowledge(request).await {
                        tracing::warn!(%provider, error = %err, "adapter did not take the receipt");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%provider, receipts = n, error = %err, "adapter did not take the receipts");
            }
        }
    }
}
