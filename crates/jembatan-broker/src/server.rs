//! The broker's server: Exchange, Audit, Registry, Agreements, health and
//! reflection over mTLS, and on the same port the HTTP/JSON door to
//! Exchange and Agreements (with its OpenAPI document) and the registry's
//! read-only HTTP/JSON view.
//! TLS is [`ServerTls`]: certificate, key and revocation list reload from
//! disk without a restart, and a revoked client certificate is refused at
//! the handshake and on every request of a connection opened before.

use std::future::Future;
use std::time::Duration;

use jembatan_pki::ServerTls;
use jembatan_proto::v1::agreements_server::AgreementsServer;
use jembatan_proto::v1::audit_server::AuditServer;
use jembatan_proto::v1::exchange_server::ExchangeServer;
use jembatan_proto::v1::registry_server::RegistryServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tower::util::MapResponseLayer;

use jembatan_core::limits::MAX_REQUEST_BYTES;

use crate::{Broker, BrokerError, http_json};

/// The services a caller of the broker can use, as reflection lists them:
/// the broker's own, health, and reflection in both versions (older tools
/// and Python's `grpcio-reflection` speak only `v1alpha`). The adapter's
/// service is in the same descriptor set but is not offered here.
pub const REFLECTED_SERVICES: [&str; 7] = [
    "jembatan.v1.Exchange",
    "jembatan.v1.Audit",
    "jembatan.v1.Registry",
    "jembatan.v1.Agreements",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A reflection builder that knows every descriptor the broker serves and
/// lists only [`REFLECTED_SERVICES`].
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

/// Serves the broker on `listener` until `shutdown` completes; then takes
/// no new calls, lets running query streams finish for the config's
/// `drain_time`, ends those still running (each logged `cancelled`) and
/// returns once every call has ended.
pub async fn serve(
    broker: Broker,
    listener: TcpListener,
    tls: ServerTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BrokerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExchangeServer<crate::ExchangeService>>()
        .await;
    health
        .set_serving::<AuditServer<crate::AuditService>>()
        .await;
    health
        .set_serving::<RegistryServer<crate::RegistryService>>()
        .await;
    health
        .set_serving::<AgreementsServer<crate::AgreementsService>>()
        .await;
    let store_health = tokio::spawn(crate::health::watch_audit_log(
        broker.clone(),
        health.clone(),
    ));
    let reflection_error = |e: tonic_reflection::server::Error| BrokerError::Config {
        path: "reflection".into(),
        message: e.to_string(),
    };
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    // one value of each service, served over gRPC and the HTTP/JSON door
    let services = http_json::Services {
        exchange: broker.exchange_service(),
        agreements: broker.agreements_service(),
    };
    let exchange =
        ExchangeServer::new(services.exchange.clone()).max_decoding_message_size(MAX_REQUEST_BYTES);
    let audit =
        AuditServer::new(broker.audit_service()).max_decoding_message_size(MAX_REQUEST_BYTES);
    let registry =
        RegistryServer::new(broker.registry_service()).max_decoding_message_size(MAX_REQUEST_BYTES);
    let agreements = AgreementsServer::new(services.agreements.clone())
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let http = broker
        .registry_http()
        .into_axum_router()
        .merge(http_json::router(services));
    let routes = Routes::from(http)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(exchange)
        .add_service(audit)
        .add_service(registry)
        .add_service(agreements);
    let drain = broker.inner.drain.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!(drain_time = ?drain.time, "shutting down: no new calls, running streams may finish");
        tokio::spawn(async move {
            tokio::time::sleep(drain.time).await;
            drain.end_all();
        });
    };
    if tls.identity().role != jembatan_core::Role::Broker {
        return Err(BrokerError::NotBroker(tls.identity().to_string()));
    }
    let incoming = tls.incoming(listener);
    let closing = incoming.closing();
    let served = Server::builder()
        // HTTP/1.1 too, for the HTTP/JSON routes' clients (ALPN offers
        // `h2` and `http/1.1`)
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .concurrency_limit_per_connection(256)
        // requests that cannot be decoded are the caller's fault
        .layer(MapResponseLayer::new(jembatan_proto::map_decode_errors))
        .layer(tls.revocation_layer())
        .layer(crate::telemetry::rpc_layer())
        .add_routes(routes)
        // the acceptor sets TCP_NODELAY on every connection: tonic's own
        // setting does not reach streams served from an incoming stream
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    store_health.abort();
    // each consumer reads the status that ended its stream before its
    // connection goes
    closing.closed().await;
    served?;
    Ok(())
}
