//! The `Exchange` service: a consumer's query, lookup, batch
//! verification, mapping test or subscription, as it arrives over gRPC
//! (or the HTTP/JSON door, which calls the same methods), is decided
//! (`decide.rs`) and then relayed (`relay.rs`, `subscribe.rs`).

use std::sync::Arc;
use std::time::Instant;

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_server::Exchange;
use tonic::{Request, Response, Status};

use crate::facts::Ask;
use crate::relay;
use crate::state::State;
use crate::subscribe;

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
            candidate: None,
            cursor: None,
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
            candidate: None,
            cursor: None,
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
            candidate: None,
            cursor: None,
        };
        let mut allowed = self.state.decide(identity, ask).await?;
        allowed.deadline = deadline;
        relay::verify_batch(self.state.clone(), allowed).await
    }

    async fn test_mapping(
        &self,
        request: Request<pb::TestMappingRequest>,
    ) -> Result<Response<pb::TestMappingResponse>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let deadline = consumer_deadline(request.metadata());
        let req = request.into_inner();
        // the dataset and schema the candidate names; one that does not
        // parse is refused, on the log, when the request is parsed
        let (dataset, target_schema) = candidate_names(&req.document);
        let ask = Ask {
            operation: "mapping_test",
            dataset,
            target_schema,
            purpose: req.purpose,
            fields: Vec::new(),
            filter: None,
            limit: if req.limit == 0 {
                DEFAULT_TEST_RECORDS
            } else {
                req.limit
            },
            key: None,
            verify: Vec::new(),
            batch: Vec::new(),
            candidate: Some(req.document),
            cursor: None,
        };
        let mut allowed = self.state.decide(identity, ask).await?;
        allowed.deadline = deadline;
        relay::mapping_test(self.state.clone(), allowed).await
    }

    type SubscribeStream = subscribe::SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let identity = jembatan_pki::peer_identity(&request);
        let credential = jembatan_pki::PeerCredential::of(&request);
        let req = request.into_inner();
        let ask = Ask {
            operation: "subscribe",
            dataset: req.dataset,
            target_schema: req.target_schema,
            purpose: req.purpose,
            fields: req.fields,
            filter: req.filter,
            limit: u64::from(req.batch_size),
            key: None,
            verify: Vec::new(),
            batch: Vec::new(),
            candidate: None,
            cursor: Some(req.cursor),
        };
        // a subscription runs until it is cancelled: the consumer's
        // deadline, if any, is not passed to the adapter's polls
        let allowed = self.state.decide(identity, ask).await?;
        subscribe::subscribe(self.state.clone(), allowed, credential).await
    }
}

/// Records a mapping test checks when the request does not say.
const DEFAULT_TEST_RECORDS: u64 = 1_000;

/// The source dataset and the target schema a candidate mapping names;
/// empty when the document does not parse.
fn candidate_names(document: &str) -> (String, String) {
    match crate::registry::parse_mapping(document) {
        Ok(m) => (
            m.source()
                .split_once('@')
                .map_or(m.source(), |(dataset, _)| dataset)
                .to_owned(),
            m.target().to_owned(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

/// When the caller's `grpc-timeout` runs out, counted from now (the call's
/// arrival); `None` without one or with one that is not well formed.
fn consumer_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    Some(Instant::now() + jembatan_proto::grpc_timeout(metadata)?)
}
