//! The `Exchange` service: a consumer's query or lookup, as it arrives
//! over gRPC (or the HTTP/JSON door, which calls the same methods), is
//! decided (`decide.rs`) and then relayed (`relay.rs`).

use std::sync::Arc;
use std::time::Instant;

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_server::Exchange;
use tonic::{Request, Response, Status};

use crate::facts::Ask;
use crate::relay;
use crate::state::State;

/// The gRPC `Exchange` service.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    state: Arc<State>,
}

impl ExchangeService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    type QueryStream = relay::QueryStream;

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let deadline = consumer_deadline(request.metadata());
        let req = request.into_inner();
        let ask = Ask {
            operation: "query",
            dataset: req.dataset,
            target_schema: req.target_schema,
            purpose: req.purpose,
            fields: req.fields,
            filter: req.filter,
            limit: req.limit,
            key: None,
            verify: Vec::new(),
            batch: Vec::new(),
        };
        let mut allowed = self.state.decide(identity, ask).await?;
        allowed.deadline = deadline;
        relay::query(self.state.clone(), allowed).await
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let deadline = consumer_deadline(request.metadata());
        let req = request.into_inner();
        let ask = Ask {
            operation: "lookup",
            dataset: req.dataset,
            target_schema: req.target_schema,
            purpose: req.purpose,
            fields: req.fields,
            filter: None,
            limit: 0,
            key: Some(req.key.unwrap_or_default()),
            verify: req.verify.into_iter().collect(),
            batch: Vec::new(),
        };
        let mut allowed = self.state.decide(identity, ask).await?;
        allowed.deadline = deadline;
        relay::lookup(self.state.clone(), allowed).await
    }

    type VerifyBatchStream = relay::QueryStream;

    async fn verify_batch(
        &self,
        request: Request<pb::VerifyBatchRequest>,
    ) -> Result<Response<Self::VerifyBatchStream>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let deadline = consumer_deadline(request.metadata());
        let req = request.into_inner();
        let ask = Ask {
            operation: "verify_batch",
            dataset: req.dataset,
            target_schema: String::new(),
            purpose: req.purpose,
            fields: Vec::new(),
            filter: None,
            limit: 0,
            key: None,
            verify: Vec::new(),
            batch: req.items,
        };
        let mut allowed = self.state.decide(identity, ask).await?;
        allowed.deadline = deadline;
        relay::verify_batch(self.state.clone(), allowed).await
    }
}

/// When the caller's `grpc-timeout` runs out, counted from now (the call's
/// arrival); `None` without one or with one that is not well formed.
fn consumer_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    Some(Instant::now() + jembatan_proto::grpc_timeout(metadata)?)
}
