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
use tower::util::MapResponseLayer;

use crate::adapter::{Adapter, ChangesStream, FetchStream};
use crate::error::{AdapterError, Refused};

/// Largest request the adapter decodes; a larger one is refused with
/// `ResourceExhausted` naming the limit `max_request_bytes`.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Concurrent requests per connection.
const CONCURRENCY_PER_CONNECTION: usize = 64;
/// How often gRPC health asks the database whether it answers.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

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
        return Err(Refused::NotTheBroker(caller.to_string()).into());
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
        let timeout = jembatan_proto::grpc_timeout(request.metadata());
        Ok(Response::new(
            self.adapter.fetch_within(request.into_inner(), timeout)?,
        ))
    }

    type ChangesStream = ChangesStream;

    async fn changes(
        &self,
        request: Request<pb::ChangesRequest>,
    ) -> Result<Response<Self::ChangesStream>, Status> {
        broker_only(&request, "changes")?;
        let timeout = jembatan_proto::grpc_timeout(request.metadata());
        Ok(Response::new(
            self.adapter.changes_within(request.into_inner(), timeout)?,
        ))
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

    async fn acknowledge_batch(
        &self,
        request: Request<pb::AcknowledgeBatchRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        broker_only(&request, "acknowledge_batch")?;
        Ok(Response::new(
            self.adapter.acknowledge_batch(request.into_inner()).await?,
        ))
    }
}

/// Reports `jembatan.v1.Adapter` NOT_SERVING on gRPC health (and in the
/// `jembatan.health` metric) while the database does not answer, checked
/// every [`HEALTH_INTERVAL`]; runs until aborted.
async fn watch_database(adapter: Arc<Adapter>, health: tonic_health::server::HealthReporter) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = true;
    loop {
        tick.tick().await;
        let answers = match adapter.check_database().await {
            Ok(()) => true,
            Err(err) => {
                if serving {
                    tracing::error!(error = %err, "the database does not answer; Adapter is NOT_SERVING");
                }
                false
            }
        };
        if answers != serving {
            if answers {
                tracing::info!("the database answers again; Adapter is SERVING");
                health.set_serving::<AdapterServer<AdapterService>>().await;
            } else {
                health
                    .set_not_serving::<AdapterServer<AdapterService>>()
                    .await;
            }
            serving = answers;
        }
        jembatan_telemetry::metrics().health("jembatan.v1.Adapter", serving);
    }
}

/// The caller of an RPC, from its client certificate, for the access log.
fn caller(extensions: &tonic::codegen::http::Extensions) -> Option<String> {
    jembatan_pki::peer_identity_in(extensions)
        .ok()
        .map(|id| id.to_string())
}

/// The services the adapter's caller (the broker) can use, as reflection
/// lists them: the adapter's own, health, and reflection in both versions.
/// The broker's services share the descriptor set but are not offered
/// here.
pub const REFLECTED_SERVICES: [&str; 4] = [
    "jembatan.v1.Adapter",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A reflection builder that knows every descriptor the adapter serves
/// and lists only [`REFLECTED_SERVICES`].
fn reflection() -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(jembatan_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    REFLECTED_SERVICES
        .iter()
        .fold(builder, |b, name| b.with_service_name(*name))
}

/// Serves the adapter on `listener` with mutual TLS until `shutdown`
/// completes: the `jembatan.v1.Adapter` service, gRPC health (reporting
/// `jembatan.v1.Adapter` as SERVING) and reflection (`v1` and `v1alpha`).
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
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| AdapterError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| AdapterError::Reflection(e.to_string()))?;
    let database_health = tokio::spawn(watch_database(Arc::clone(&adapter), reporter));
    let service = AdapterServer::new(AdapterService::new(Arc::clone(&adapter)))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, agency = %adapter.agency(), "adapter listening");
    }
    let incoming = tls.incoming(listener);
    let closing = incoming.closing();
    let served = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        // requests that cannot be decoded are the caller's fault
        .layer(MapResponseLayer::new(jembatan_proto::map_decode_errors))
        .layer(tls.revocation_layer())
        // the broker's trace context, `rpc.server.duration`, access log
        .layer(jembatan_telemetry::RpcLayer::new(caller))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        // the acceptor sets TCP_NODELAY and keepalive on every
        // connection: tonic's own settings do not reach streams served
        // from an incoming stream
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    database_health.abort();
    // the broker reads the last frames of each connection before it goes
    closing.closed().await;
    served?;
    tracing::info!("adapter stopped");
    Ok(())
}
