//! With an OTLP endpoint set, the same instruments the Prometheus endpoint
//! reads are exported by OTLP: an in-process collector receives the
//! exchange and RPC metrics of a broker and its adapter, under the
//! configured service name. (A test binary of its own: the instruments
//! are process-wide and installed once.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jembatan_testkit::{Federation, agreement_toml, query};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::net::TcpListener;

/// Metric names received, with the `service.name` of their resource.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.received.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_metrics {
                for metric in scope.metrics {
                    received.push((service.clone(), metric.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_an_otlp_collector() {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let vars: BTreeMap<String, String> = [
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT".to_owned(),
            format!("http://127.0.0.1:{port}"),
        ),
        (
            "OTEL_SERVICE_NAME".to_owned(),
            "broker-under-test".to_owned(),
        ),
    ]
    .into();
    let settings = jembatan_telemetry::Settings::from_vars(&vars, "jembatan-broker").unwrap();
    let telemetry = jembatan_telemetry::Telemetry::install(&settings, "warn").unwrap();

    let f = Federation::start(5).await;
    let grant = r#"["nik", "nama"]"#;
    let config = f.broker_config("", &agreement_toml("a-1", "dinsos", grant, "approved", ""));
    let b = f.broker(&config).await;
    let mut client = b.exchange(&f, "dinsos").await;
    let mut stream = client.query(query(&["nik"])).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}

    let wanted = [
        "jembatan.exchanges",
        "jembatan.exchange.rows",
        "rpc.server.duration",
    ];
    let mut names = Vec::new();
    for _ in 0..50 {
        telemetry.flush();
        names = collector.received.lock().unwrap().clone();
        if wanted.iter().all(|w| names.iter().any(|(_, n)| n == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in wanted {
        assert!(
            names
                .iter()
                .any(|(s, n)| n == w && s == "broker-under-test"),
            "{w} not received: {names:?}"
        );
    }
    telemetry.shutdown();
}
