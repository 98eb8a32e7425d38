//! The `jembatan.v1.Adapter` gRPC service (broker only) and the server that
//! offers it with health and reflection over mutual TLS ([`ServerTls`]:
//! certificate, key and revocation list reload from disk without a
//! restart; a revoked broker certificate is refused at the handshake and
//! on every request).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jembatan_core::{Identity, Role};
use jembatan_pki::ServerTls;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_server::AdapterServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::adapter::{Adapter, FetchStream};
use crate::error::AdapterError;

/// Largest request the adapter decodes.
const MAX_DECODING_MESSAGE_SIZE: usize = 4 << 20;
/// Concurrent requests per connection.
const CONCURRENCY_PER_CONNECTION: usize = 64;

/// The gRPC face of an [`Adapter`]: every call must come from the broker's
/// certificate.
#[derive(Debug, Clone)]
pub struct AdapterService {
    adapter: Arc<Adapter>,
}

impl AdapterService {
    pub fn new(adapter: Arc<Adapter>) -> Self {
        Self { adapter }
    }
}

/// The caller's identity, if it is the broker.
fn broker_only<T>(request: &Request<T>, rpc: &str) -> Result<Identity, Status> {
    let caller = jembatan_pki::peer_identity(request)?;
    if caller.role != Role::Broker {
        tracing::warn!(caller = %caller, rpc, "refused a caller that is not the broker");
        return Err(Status::permission_denied(format!(
            "this adapter serves only the broker; caller is {caller}"
        )));
    }
    Ok(caller)
}

#[tonic::async_trait]
impl pb::adapter_server::Adapter for AdapterService {
    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        broker_only(&request, "describe")?;
        Ok(Response::new(self.adapter.describe()))
    }

    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        broker_only(&request, "fetch")?;
        Ok(Response::new(self.adapter.fetch(request.into_inner())?))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        broker_only(&request, "acknowledge")?;
        Ok(Response::new(
            self.adapter.acknowledge(request.into_inner()).await?,
        ))
    }
}

/// Serves the adapter on `listener` with mutual TLS until `shutdown`
/// completes: the `jembatan.v1.Adapter` service, gRPC health (reporting
/// `jembatan.v1.Adapter` as SERVING) and reflection.
pub async fn serve(
    adapter: Arc<Adapter>,
    listener: TcpListener,
    tls: ServerTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdapterError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AdapterServer<AdapterService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(jembatan_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| AdapterError::Reflection(e.to_string()))?;
    let service = AdapterServer::new(AdapterService::new(Arc::clone(&adapter)))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, agency = %adapter.agency(), "adapter listening");
    }
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .layer(tls.revocation_layer())
        .add_service(health)
        .add_service(reflection)
        .add_service(service)
        // the acceptor sets TCP_NODELAY and keepalive on every
        // connection: tonic's own settings do not reach streams served
        // from an incoming stream
        .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
        .await?;
    tracing::info!("adapter stopped");
    Ok(())
}
