//! Receipts handed back to the providers' adapters for their own logs.
//!
//! Each provider has one queue and one task that sends what has gathered
//! in one `AcknowledgeBatch` call: a receipt waits only while the previous
//! call to the same adapter is being written, and the adapter syncs its
//! log once per call instead of once per exchange. Best effort, as a
//! single call was: the broker's audit log is the record, the adapter's
//! log is the agency's own copy.
//!
//! A receipt goes to the adapter endpoint that served the exchange; when
//! that one is unavailable, to the provider's other endpoints in turn.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jembatan_core::AgencyId;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

/// Receipts waiting for one adapter before newer ones are dropped.
const QUEUE: usize = 8192;
/// Most receipts in one call (the adapter takes up to 1,024).
const PER_CALL: usize = 512;
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One receipt to hand back, with the channels to its adapter: the
/// endpoint that served first, then the provider's others.
struct Ack {
    request: pb::AcknowledgeRequest,
    clients: Vec<AdapterClient<Channel>>,
}

/// The providers' receipt queues.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    queues: Mutex<HashMap<AgencyId, mpsc::Sender<Ack>>>,
}

impl Acks {
    /// Queues `request` for `provider`'s adapter, reached through the
    /// first of `clients` that is available.
    pub(crate) fn send(
        &self,
        provider: &AgencyId,
        clients: Vec<AdapterClient<Channel>>,
        request: pb::AcknowledgeRequest,
    ) {
        let Ok(mut queues) = self.queues.lock() else {
            tracing::warn!(%provider, "receipt queues unavailable; the adapter is not told the receipt");
            return;
        };
        let tx = match queues.get(provider) {
            // a queue's task ends only with the runtime it ran on
            Some(tx) if !tx.is_closed() => tx,
            _ => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(drain(provider.clone(), rx));
                queues.entry(provider.clone()).insert_entry(tx).into_mut()
            }
        };
        if let Err(err) = tx.try_send(Ack { request, clients }) {
            tracing::warn!(%provider, error = %err, "the receipt is not sent to the adapter");
        }
    }
}

/// Sends `provider`'s receipts as they gather, oldest first.
async fn drain(provider: AgencyId, mut rx: mpsc::Receiver<Ack>) {
    // whether the adapter takes AcknowledgeBatch; unknown until it answers
    let mut batches: Option<bool> = None;
    let mut waiting = Vec::with_capacity(PER_CALL);
    while rx.recv_many(&mut waiting, PER_CALL).await > 0 {
        // the newest channels (`recv_many` added at least one): the
        // adapter's address may have changed
        let newest = waiting.len() - 1;
        let mut clients = std::mem::take(&mut waiting[newest].clients);
        let mut receipts: Vec<pb::AcknowledgeRequest> =
            waiting.drain(..).map(|a| a.request).collect();
        if batches != Some(false) {
            // kept only while a refusal would have to send them one by one
            let kept = if batches.is_none() {
                receipts.clone()
            } else {
                Vec::new()
            };
            let n = receipts.len();
            let batch = pb::AcknowledgeBatchRequest { receipts };
            let sent = first_available(&mut clients, |mut client| {
                let mut request = tonic::Request::new(batch.clone());
                request.set_timeout(CALL_TIMEOUT);
                async move { client.acknowledge_batch(request).await.map(drop) }
            })
            .await;
            match sent {
                Ok(()) => {
                    batches = Some(true);
                    continue;
                }
                // an adapter from before batches: one call each, from now on
                Err(status) if batches.is_none() && status.code() == Code::Unimplemented => {
                    batches = Some(false);
                    receipts = kept;
                }
                Err(err) => {
                    tracing::warn!(%provider, receipts = n, error = %err, "adapter did not take the receipts");
                    continue;
                }
            }
        }
        for receipt in receipts {
            let sent = first_available(&mut clients, |mut client| {
                let mut request = tonic::Request::new(receipt.clone());
                request.set_timeout(CALL_TIMEOUT);
                async move { client.acknowledge(request).await.map(drop) }
            })
            .await;
            if let Err(err) = sent {
                tracing::warn!(%provider, error = %err, "adapter did not take the receipt");
            }
        }
    }
}

/// Makes `call` through the first of `clients` that is available: on to
/// the next while one cannot be reached or answers `UNAVAILABLE`. One
/// that is unavailable is moved last, so the calls after this one start
/// with an endpoint that answered. The status is the last one's.
async fn first_available<F, Fut>(
    clients: &mut [AdapterClient<Channel>],
    call: F,
) -> Result<(), tonic::Status>
where
    F: Fn(AdapterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut last = tonic::Status::unavailable("no adapter endpoint");
    for _ in 0..clients.len() {
        match call(clients[0].clone()).await {
            Err(status) if crate::adapters::fails_over(&status) => {
                clients.rotate_left(1);
                last = status;
            }
            done => return done,
        }
    }
    Err(last)
}
