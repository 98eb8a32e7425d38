//! Telemetry of a running federation: a consumer's W3C `traceparent`
//! continues through the broker to the adapter (spans of both reach an
//! OTLP collector under the consumer's trace id, which the exchange's
//! audit entries name), and the Prometheus endpoint counts the exchanges
//! made, by decision, reason, rows and RPC.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jembatan_core::EntryKind;
use jembatan_proto::v1 as pb;
use jembatan_testkit::{Federation, agreement_toml, nik, query, string};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::net::TcpListener;

const GRANT: &str = r#"["nik", "nama", "kecamatan"]"#;

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/gRPC trace collector keeping every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => s.clone(),
                                Some(Value::IntValue(i)) => i.to_string(),
                                Some(Value::BoolValue(b)) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect();
                    spans.push(Received {
                        trace_id: hex::encode(&span.trace_id),
                        name: span.name.clone(),
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_collector() -> (Collector, u16) {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (collector, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_trace_continues_through_broker_and_adapter_and_is_on_the_log() {
    let (collector, port) = start_collector().await;
    let vars: BTreeMap<String, String> = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".to_owned(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_SERVICE_NAME".to_owned(), "jembatan-test".to_owned()),
    ]
    .into();
    let settings = jembatan_telemetry::Settings::from_vars(&vars, "jembatan-broker").unwrap();
    // process-wide, like a service's: kept for the other tests' metrics
    static TELEMETRY: std::sync::OnceLock<jembatan_telemetry::Telemetry> =
        std::sync::OnceLock::new();
    let telemetry = TELEMETRY
        .get_or_init(|| jembatan_telemetry::Telemetry::install(&settings, "warn").unwrap());

    let f = Federation::start(20).await;
    let config = f.broker_config("", &agreement_toml("a-1", "dinsos", GRANT, "approved", ""));
    let b = f.broker(&config).await;
    let mut client = b.exchange(&f, "dinsos").await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(query(&["nik", "nama"]));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let mut stream = client.query(request).await.unwrap().into_inner();
    let mut rows = 0;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(pb::query_response::Item::Batch(batch)) = message.item {
            rows += batch.records.len();
        }
    }
    assert_eq!(rows, 20);

    // a request without trace context starts no trace of the consumer's
    let mut plain = client.query(query(&["nik"])).await.unwrap().into_inner();
    while plain.message().await.unwrap().is_some() {}

    // both entries of the exchange name the trace
    let entries = b.broker.audit().entries(0, 100).await.unwrap();
    let traced: Vec<_> = entries
        .iter()
        .filter(|e| e.entry.trace_id.as_deref() == Some(trace_id))
        .map(|e| e.entry.kind)
        .collect();
    assert_eq!(
        traced,
        [EntryKind::Decision, EntryKind::Completion],
        "{entries:#?}"
    );
    let other: Vec<_> = entries
        .iter()
        .filter(|e| e.entry.kind != EntryKind::Agreement)
        .filter(|e| e.entry.trace_id.as_deref() != Some(trace_id))
        .collect();
    assert_eq!(other.len(), 2, "the second exchange");
    assert!(
        other
            .iter()
            .all(|e| e.entry.trace_id.as_ref().is_some_and(|t| t != trace_id)),
        "a traced broker starts a trace of its own: {other:#?}"
    );

    // spans of the broker and of the adapter reach the collector
    let mut found = Vec::new();
    for _ in 0..100 {
        telemetry.flush();
        found = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        let services: Vec<&str> = found
            .iter()
            .filter_map(|s| s.attributes.get("rpc.service").map(String::as_str))
            .collect();
        if services.contains(&"jembatan.v1.Exchange") && services.contains(&"jembatan.v1.Adapter") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exchange = found
        .iter()
        .find(|s| {
            s.attributes.get("rpc.service").map(String::as_str) == Some("jembatan.v1.Exchange")
        })
        .unwrap_or_else(|| panic!("no broker span in {found:#?}"));
    assert_eq!(exchange.name, "jembatan.v1.Exchange/Query");
    assert_eq!(exchange.attributes["rpc.grpc.status_code"], "0");
    let adapter = found
        .iter()
        .find(|s| {
            s.attributes.get("rpc.service").map(String::as_str) == Some("jembatan.v1.Adapter")
        })
        .unwrap_or_else(|| panic!("no adapter span in {found:#?}"));
    assert_eq!(adapter.name, "jembatan.v1.Adapter/Fetch");
}

/// `name{labels} value` lines of the Prometheus text format.
fn parse_prometheus(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                // label values here hold no `",` sequence
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        samples.push((name, labels, value));
    }
    samples
}

/// The sum of the samples named `name` whose labels include `labels`.
fn sum(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(port: u16) -> Vec<(String, BTreeMap<String, String>, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    // a chunked body: the test's requests are small enough for one chunk
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    parse_prometheus(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_endpoint_counts_the_exchanges_made() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(jembatan_telemetry::serve_metrics(
        listener,
        std::future::pending(),
    ));

    let f = Federation::start(30).await;
    let config = f.broker_config("", &agreement_toml("a-2", "dinkes", GRANT, "approved", ""));
    let b = f.broker(&config).await;
    let before = scrape(port).await;
    let dinkes = [
        ("consumer", "dinkes"),
        ("provider", "prov"),
        ("dataset", "prov.penduduk"),
    ];

    let mut client = b.exchange(&f, "dinkes").await;
    // an allowed query of every row
    let mut stream = client
        .query(query(&["nik", "nama"]))
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    let mut bytes = 0;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(pb::query_response::Item::Batch(batch)) = message.item {
            rows += batch.records.len();
            bytes += batch.records.iter().map(String::len).sum::<usize>();
        }
    }
    assert_eq!(rows, 30);
    // a lookup
    let found = client
        .lookup(pb::LookupRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            fields: vec!["nama".into()],
            key: Some(string(&nik(3))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.found);
    bytes += found.record.len();
    // a denial: a field the agreement does not grant
    let denied = client.query(query(&["tgl_lahir"])).await;
    let denied = match denied {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // the entries are durable before the answers; the counters with them
    let after = scrape(port).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sum(&after, name, labels) - sum(&before, name, labels)
    };
    let allow: Vec<(&str, &str)> = dinkes
        .iter()
        .copied()
        .chain([("decision", "allow")])
        .collect();
    let deny: Vec<(&str, &str)> = dinkes
        .iter()
        .copied()
        .chain([("decision", "deny")])
        .collect();
    assert_eq!(delta("jembatan_exchanges_total", &allow), 2.0, "{after:#?}");
    assert_eq!(
        delta(
            "jembatan_exchanges_total",
            &[
                ("consumer", "dinkes"),
                ("decision", "allow"),
                ("operation", "lookup")
            ]
        ),
        1.0
    );
    assert_eq!(delta("jembatan_exchanges_total", &deny), 1.0);
    assert_eq!(
        delta(
            "jembatan_exchange_denials_total",
            &[("reason", "field_not_granted")]
        ),
        1.0,
        "{:#?}",
        after
            .iter()
            .filter(|s| s.0.contains("denials"))
            .collect::<Vec<_>>()
    );
    let ok: Vec<(&str, &str)> = dinkes.iter().copied().chain([("status", "ok")]).collect();
    assert_eq!(delta("jembatan_exchange_completions_total", &ok), 2.0);
    assert_eq!(delta("jembatan_exchange_rows_total", &dinkes), 31.0);
    assert_eq!(
        delta("jembatan_exchange_delivered_bytes_total", &dinkes),
        bytes as f64
    );
    // RPCs by method and status code, as the semantic conventions name them
    let rpc = |method: &str, code: &str| {
        delta(
            "rpc_server_duration_milliseconds_count",
            &[
                ("rpc_system", "grpc"),
                ("rpc_service", "jembatan.v1.Exchange"),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
    };
    assert_eq!(rpc("Lookup", "0"), 1.0);
    assert!(rpc("Query", "0") >= 1.0);
    assert!(rpc("Query", "7") >= 1.0);
    assert!(
        delta(
            "rpc_server_duration_milliseconds_count",
            &[
                ("rpc_service", "jembatan.v1.Adapter"),
                ("rpc_method", "Fetch")
            ]
        ) >= 2.0,
        "the adapter's side"
    );
    // the query's two entries, the lookup's one, the denial's one
    assert!(delta("jembatan_audit_append_duration_milliseconds_count", &[]) >= 4.0);
    assert_eq!(
        sum(&after, "jembatan_audit_queue", &[]),
        0.0,
        "nothing waits"
    );
    // nothing the consumer sent is a label
    assert!(
        !after
            .iter()
            .any(|(_, labels, _)| labels.values().any(|v| v.contains(&nik(3)))),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_health_follows_whether_the_audit_log_can_be_written() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let f = Federation::start(5).await;
    let config = f.broker_config(
        "health_interval = \"50ms\"",
        &agreement_toml("a-3", "dinsos", GRANT, "approved", ""),
    );
    let b = f.broker(&config).await;
    let health = HealthClient::new(f.channel(b.port, "operator").await);
    let status_of = |service: &'static str| {
        let mut health = health.clone();
        async move {
            let response = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap();
            ServingStatus::try_from(response.into_inner().status).unwrap()
        }
    };
    let wait_for = |want: ServingStatus| async move {
        for _ in 0..100 {
            if status_of("jembatan.v1.Exchange").await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Exchange never became {want:?}");
    };
    wait_for(ServingStatus::Serving).await;

    sqlx::query(
        "CREATE TRIGGER full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(b.broker.store().pool())
    .await
    .unwrap();
    wait_for(ServingStatus::NotServing).await;
    // the other services answer from what is stored
    assert_eq!(
        status_of("jembatan.v1.Registry").await,
        ServingStatus::Serving
    );
    // and the exchange is refused, as health said it would be
    let mut client = b.exchange(&f, "dinsos").await;
    let refused = client.query(query(&["nik"])).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    // the probe left nothing on the log
    sqlx::query("DROP TRIGGER full")
        .execute(b.broker.store().pool())
        .await
        .unwrap();
    wait_for(ServingStatus::Serving).await;
    let entries = b.broker.audit().entries(0, 100).await.unwrap();
    assert!(entries.iter().all(|e| e.entry.exchange_id != "probe"));
}
