//! Telemetry of the built binaries, end to end: a consumer's W3C
//! `traceparent` continues through a broker process to the adapter
//! process (their spans reach an in-process OTLP collector under the
//! consumer's trace id, each under its own `service.name`, and the
//! exchange's audit entries name that id), and the Prometheus endpoints
//! of the replicas and the adapter count exactly the exchanges made.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jembatan_e2e::prometheus::{Exposition, scrape};
use jembatan_e2e::{Cluster, PgStore, agreement, lookup, nik, query, run_query};
use jembatan_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// How long spans and metrics may take to reach the collector.
const EXPORT_WAIT: Duration = Duration::from_secs(20);

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/gRPC collector keeping every span it is sent and the names of
/// the metrics, each with the `service.name` of its resource.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<(String, String)>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn service_name(attributes: &[KeyValue]) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = service_name(
                resource
                    .resource
                    .as_ref()
                    .map_or(&[][..], |r| &r.attributes),
            );
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        service: service.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                                (kv.key.clone(), text(value))
                            })
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.metrics.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            let service = service_name(
                resource
                    .resource
                    .as_ref()
                    .map_or(&[][..], |r| &r.attributes),
            );
            for scope in resource.scope_metrics {
                for metric in scope.metrics {
                    metrics.push((service.clone(), metric.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts the collector on a loopback port; returns it and the port.
async fn start_collector() -> (Collector, u16) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (collector, port)
}

/// The OTLP variables of process `name` (`adapter`, `broker-<i>`):
/// the collector for traces and metrics, a service name of its own, and
/// short batch delays.
fn otel_env(collector_port: u16) -> impl Fn(&str) -> Vec<(String, String)> {
    move |name: &str| {
        [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{collector_port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
            ("OTEL_SERVICE_NAME", format!("e2e-{name}")),
            ("OTEL_PROPAGATORS", "tracecontext".to_owned()),
            // milliseconds: spans leave in batches every 100 ms, metrics
            // every second
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// `request` carrying the consumer's span `span_id` of trace `trace_id`.
fn traced<T>(message: T, trace_id: &str, span_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{span_id}-01").parse().unwrap(),
    );
    request
}

/// The exchange's entries in `entries`, in log order: `(kind, trace_id)`.
fn entries_of(entries: &[serde_json::Value], exchange_id: &str) -> Vec<(String, Option<String>)> {
    entries
        .iter()
        .filter(|e| e["entry"]["exchange_id"] == exchange_id)
        .map(|e| {
            (
                e["entry"]["kind"].as_str().unwrap().to_owned(),
                e["entry"]["trace_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_trace_spans_the_broker_and_adapter_processes_and_is_on_the_log() {
    let Some(pg) = PgStore::fresh("jembatan_e2e_telemetry_trace").await else {
        return;
    };
    let (collector, collector_port) = start_collector().await;
    let mut cluster = Cluster::start_with_env(
        &pg.url,
        50,
        1,
        "",
        &agreement("a-trace", "dinsos", ""),
        otel_env(collector_port),
    )
    .await;
    let mut client = cluster.exchange(0, "dinsos").await;

    // a lookup and a query, each under a trace of the consumer's
    let lookup_trace = "0af7651916cd43dd8448eb211c80319c";
    let query_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let denied_trace = "e3b0c44298fc1c149afbf4c8996fb924";
    let consumer_span = "00f067aa0ba902b7";
    let answer = client
        .lookup(traced(lookup(7), lookup_trace, consumer_span))
        .await
        .expect("the lookup is allowed")
        .into_inner();
    assert!(answer.found);
    let lookup_exchange = answer
        .receipt
        .as_ref()
        .expect("a lookup's receipt")
        .exchange_id
        .clone();
    let mut stream = client
        .query(traced(query(0), query_trace, consumer_span))
        .await
        .expect("the query is allowed")
        .into_inner();
    let mut seen = jembatan_e2e::Seen::default();
    jembatan_e2e::read_stream(&mut stream, &mut seen).await;
    assert!(seen.end.is_none(), "{:?}", seen.end);
    assert_eq!(seen.records, 50);
    let query_exchange = seen.receipt.expect("a receipt").exchange_id;
    // a denial under a trace: the adapter is never called
    let denied = client
        .lookup(traced(
            pb::LookupRequest {
                fields: vec!["tgl_lahir".into()],
                ..lookup(8)
            },
            denied_trace,
            consumer_span,
        ))
        .await
        .expect_err("a field the agreement does not grant");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    // and a query without trace context
    let plain = run_query(&mut client, query(5)).await;
    assert!(plain.end.is_none(), "{:?}", plain.end);
    let plain_exchange = plain.receipt.expect("a receipt").exchange_id;

    // the audit entries name each exchange's trace
    let entries = cluster.export();
    assert_eq!(
        entries_of(&entries, &lookup_exchange),
        [("answered".to_owned(), Some(lookup_trace.to_owned()))],
        "{entries:#?}"
    );
    assert_eq!(
        entries_of(&entries, &query_exchange),
        [
            ("decision".to_owned(), Some(query_trace.to_owned())),
            ("completion".to_owned(), Some(query_trace.to_owned())),
        ]
    );
    let denial: Vec<_> = entries
        .iter()
        .filter(|e| e["entry"]["decision"] == "deny")
        .collect();
    assert_eq!(denial.len(), 1, "{entries:#?}");
    assert_eq!(denial[0]["entry"]["trace_id"], denied_trace);
    let plain_entries = entries_of(&entries, &plain_exchange);
    assert_eq!(plain_entries.len(), 2);
    let plain_trace = plain_entries[0].1.clone().expect("a trace of the broker's");
    assert_eq!(plain_trace.len(), 32);
    assert!(plain_trace.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(![lookup_trace, query_trace, denied_trace].contains(&plain_trace.as_str()));
    assert_eq!(plain_entries[1].1.as_deref(), Some(plain_trace.as_str()));

    // spans of both processes arrive under the consumer's trace ids
    let wanted = [
        (lookup_trace, "Lookup", true),
        (query_trace, "Query", true),
        (denied_trace, "Lookup", false),
        (plain_trace.as_str(), "Query", true),
    ];
    let in_trace = |spans: &[Span], trace: &str, service: &str, rpc: &str| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace && s.service == service && s.name == rpc)
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + EXPORT_WAIT;
    let spans = loop {
        let spans = collector.spans.lock().unwrap().clone();
        let complete = wanted.iter().all(|(trace, method, fetched)| {
            let broker = &format!("jembatan.v1.Exchange/{method}");
            !in_trace(&spans, trace, "e2e-broker-0", broker).is_empty()
                && (!fetched
                    || !in_trace(&spans, trace, "e2e-adapter-0", "jembatan.v1.Adapter/Fetch")
                        .is_empty())
        });
        if complete {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing after {EXPORT_WAIT:?}: {spans:#?}\n{}\n{}",
            cluster.logged(),
            cluster.adapters[0]
                .as_ref()
                .map(|a| a.logged())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (trace, method, fetched) in wanted {
        let broker = in_trace(
            &spans,
            trace,
            "e2e-broker-0",
            &format!("jembatan.v1.Exchange/{method}"),
        );
        assert_eq!(broker.len(), 1, "{broker:#?}");
        let broker = &broker[0];
        assert_eq!(broker.kind, SpanKind::Server as i32);
        assert_eq!(broker.attributes["rpc.system"], "grpc");
        assert_eq!(broker.attributes["rpc.service"], "jembatan.v1.Exchange");
        assert_eq!(broker.attributes["rpc.method"], method);
        let code = if fetched { "0" } else { "7" };
        assert_eq!(broker.attributes["rpc.grpc.status_code"], code);
        if trace == plain_trace {
            assert_eq!(broker.parent_span_id, "", "the broker started the trace");
        } else {
            // the consumer → broker link: the consumer's span is the parent
            assert_eq!(broker.parent_span_id, consumer_span);
        }
        let fetch = in_trace(&spans, trace, "e2e-adapter-0", "jembatan.v1.Adapter/Fetch");
        if !fetched {
            assert!(fetch.is_empty(), "a denial calls no adapter: {fetch:#?}");
            continue;
        }
        assert_eq!(fetch.len(), 1, "{fetch:#?}");
        assert_eq!(fetch[0].kind, SpanKind::Server as i32);
        assert_eq!(fetch[0].attributes["rpc.grpc.status_code"], "0");
        // the broker → adapter link: the parent is one of the broker's
        // spans of this trace
        let parent = spans
            .iter()
            .find(|s| s.trace_id == trace && s.span_id == fetch[0].parent_span_id)
            .unwrap_or_else(|| panic!("the Fetch span's parent is not exported: {spans:#?}"));
        assert_eq!(parent.service, "e2e-broker-0");
    }
    // nothing the consumer sent is a span attribute
    let key = nik(7);
    assert!(
        !spans
            .iter()
            .any(|s| s.attributes.values().any(|v| v.contains(&key))),
        "{spans:#?}"
    );

    // the same instruments reach the collector by OTLP, per process
    let deadline = Instant::now() + EXPORT_WAIT;
    loop {
        let metrics = collector.metrics.lock().unwrap().clone();
        let has =
            |service: &str, name: &str| metrics.iter().any(|(s, n)| s == service && n == name);
        if has("e2e-broker-0", "jembatan.exchanges")
            && has("e2e-broker-0", "rpc.server.duration")
            && has("e2e-adapter-0", "rpc.server.duration")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics missing after {EXPORT_WAIT:?}: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.stop();
    pg.drop_db().await;
}

/// The decisions, ends and rows `entries` record for consumer `who`,
/// as the exchange counters label them.
fn counted_on_the_log(entries: &[serde_json::Value], who: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for e in entries.iter().map(|e| &e["entry"]) {
        if e["consumer"] != who {
            continue;
        }
        let kind = e["kind"].as_str().unwrap();
        if matches!(kind, "decision" | "answered") {
            let key = format!(
                "decision={},operation={}",
                e["decision"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            );
            *out.entry(key).or_default() += 1.0;
        }
        if matches!(kind, "completion" | "answered") {
            *out.entry(format!("status={}", e["status"].as_str().unwrap()))
                .or_default() += 1.0;
            *out.entry("rows".to_owned()).or_default() += e["rows"].as_f64().unwrap();
            *out.entry("bytes".to_owned()).or_default() += e["bytes"].as_f64().unwrap();
        }
    }
    out
}

/// The same figures from the replicas' expositions.
fn counted_by_the_replicas(scrapes: &[Exposition], who: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let agency = [
        ("provider", "prov"),
        ("consumer", who),
        ("dataset", "prov.penduduk"),
    ];
    for e in scrapes {
        for s in e.named("jembatan_exchanges_total") {
            if agency
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            {
                let key = format!(
                    "decision={},operation={}",
                    s.labels["decision"], s.labels["operation"]
                );
                *out.entry(key).or_default() += s.value;
            }
        }
        for s in e.named("jembatan_exchange_completions_total") {
            if agency
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            {
                *out.entry(format!("status={}", s.labels["status"]))
                    .or_default() += s.value;
            }
        }
        *out.entry("rows".to_owned()).or_default() +=
            e.sum("jembatan_exchange_rows_total", &agency);
        *out.entry("bytes".to_owned()).or_default() +=
            e.sum("jembatan_exchange_delivered_bytes_total", &agency);
    }
    // the log names rows and bytes only for a consumer with an ended exchange
    out.retain(|k, v| *v != 0.0 || !matches!(k.as_str(), "rows" | "bytes"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_endpoints_count_the_exchanges_made() {
    let Some(pg) = PgStore::fresh("jembatan_e2e_telemetry_metrics").await else {
        return;
    };
    // dinsos has an agreement; dinkes has none
    let mut cluster =
        Cluster::start(&pg.url, 30, 2, "", &agreement("a-metrics", "dinsos", "")).await;
    for port in cluster
        .metrics_ports
        .iter()
        .chain([&cluster.adapter_metrics_ports[0]])
    {
        let e = scrape(*port).await;
        assert_eq!(e.sum("jembatan_exchanges_total", &[]), 0.0, "nothing yet");
    }

    // replica 0: two queries and a lookup allowed, one query denied;
    // replica 1: one lookup allowed, two lookups denied (one of them to
    // an agency without an agreement)
    let mut dinsos = [
        cluster.exchange(0, "dinsos").await,
        cluster.exchange(1, "dinsos").await,
    ];
    let mut dinkes = cluster.exchange(1, "dinkes").await;
    let mut rows = 0;
    let mut bytes = 0;
    for limit in [0, 7] {
        let mut stream = dinsos[0].query(query(limit)).await.unwrap().into_inner();
        while let Some(message) = stream.message().await.unwrap() {
            if let Some(pb::query_response::Item::Batch(batch)) = message.item {
                rows += batch.records.len();
                bytes += batch.records.iter().map(String::len).sum::<usize>();
            }
        }
    }
    assert_eq!(rows, 37);
    for (replica, i) in [(0, 3), (1, 4)] {
        let answer = dinsos[replica]
            .lookup(lookup(i))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.found);
        rows += 1;
        bytes += answer.record.len();
    }
    let not_granted = pb::QueryRequest {
        fields: vec!["tgl_lahir".into()],
        ..query(0)
    };
    let denied = run_query(&mut dinsos[0], not_granted).await;
    assert_eq!(
        denied.end.map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    let denied = dinsos[1]
        .lookup(pb::LookupRequest {
            fields: vec!["tgl_lahir".into()],
            ..lookup(5)
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let denied = dinkes.lookup(lookup(6)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // every entry is durable before its answer, and counted as it becomes
    // durable: the counters already agree with the log
    let scrapes = [
        scrape(cluster.metrics_ports[0]).await,
        scrape(cluster.metrics_ports[1]).await,
    ];
    let entries = cluster.export();
    for who in ["dinsos", "dinkes"] {
        assert_eq!(
            counted_by_the_replicas(&scrapes, who),
            counted_on_the_log(&entries, who),
            "{who}: {scrapes:#?}"
        );
    }
    // and with what the consumers saw, replica by replica
    let allow = |op: &'static str| {
        vec![
            ("consumer", "dinsos"),
            ("provider", "prov"),
            ("dataset", "prov.penduduk"),
            ("decision", "allow"),
            ("operation", op),
        ]
    };
    assert_eq!(
        scrapes[0].sum("jembatan_exchanges_total", &allow("query")),
        2.0
    );
    assert_eq!(
        scrapes[0].sum("jembatan_exchanges_total", &allow("lookup")),
        1.0
    );
    assert_eq!(
        scrapes[1].sum("jembatan_exchanges_total", &allow("query")),
        0.0
    );
    assert_eq!(
        scrapes[1].sum("jembatan_exchanges_total", &allow("lookup")),
        1.0
    );
    let deny = [("decision", "deny")];
    assert_eq!(scrapes[0].sum("jembatan_exchanges_total", &deny), 1.0);
    assert_eq!(scrapes[1].sum("jembatan_exchanges_total", &deny), 2.0);
    assert_eq!(
        scrapes[1].sum(
            "jembatan_exchanges_total",
            &[
                ("consumer", "dinkes"),
                ("decision", "deny"),
                ("operation", "lookup")
            ]
        ),
        1.0
    );
    let reason =
        |e: &Exposition, code: &str| e.sum("jembatan_exchange_denials_total", &[("reason", code)]);
    assert_eq!(reason(&scrapes[0], "field_not_granted"), 1.0);
    assert_eq!(reason(&scrapes[1], "field_not_granted"), 1.0);
    assert_eq!(
        reason(&scrapes[1], "no_agreement"),
        1.0,
        "{:#?}",
        scrapes[1]
            .named("jembatan_exchange_denials_total")
            .collect::<Vec<_>>()
    );
    let ok = [("consumer", "dinsos"), ("status", "ok")];
    let completions = |e: &Exposition| e.sum("jembatan_exchange_completions_total", &ok);
    assert_eq!(completions(&scrapes[0]) + completions(&scrapes[1]), 4.0);
    let delivered = |name: &str| {
        scrapes
            .iter()
            .map(|e| e.sum(name, &[("consumer", "dinsos")]))
            .sum::<f64>()
    };
    assert_eq!(delivered("jembatan_exchange_rows_total"), rows as f64);
    assert_eq!(
        delivered("jembatan_exchange_delivered_bytes_total"),
        bytes as f64
    );
    // RPCs by method and status code; the adapter served one Fetch per
    // allowed exchange
    let rpc = |e: &Exposition, service: &str, method: &str, code: &str| {
        e.sum(
            "rpc_server_duration_milliseconds_count",
            &[
                ("rpc_system", "grpc"),
                ("rpc_service", service),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
    };
    assert_eq!(rpc(&scrapes[0], "jembatan.v1.Exchange", "Query", "0"), 2.0);
    assert_eq!(rpc(&scrapes[0], "jembatan.v1.Exchange", "Query", "7"), 1.0);
    assert_eq!(rpc(&scrapes[0], "jembatan.v1.Exchange", "Lookup", "0"), 1.0);
    assert_eq!(rpc(&scrapes[1], "jembatan.v1.Exchange", "Lookup", "0"), 1.0);
    let adapter = scrape(cluster.adapter_metrics_ports[0]).await;
    assert_eq!(rpc(&adapter, "jembatan.v1.Adapter", "Fetch", "0"), 4.0);
    assert_eq!(
        adapter.sum("jembatan_exchanges_total", &[]),
        0.0,
        "the adapter decides nothing"
    );
    for e in &scrapes {
        assert_eq!(e.sum("jembatan_audit_queue", &[]), 0.0, "nothing waits");
        assert_eq!(e.sum("jembatan_audit_append_failures_total", &[]), 0.0);
    }
    // nothing a consumer sent is a label
    for key in [3, 4, 5, 6].map(nik) {
        assert!(
            !scrapes.iter().chain([&adapter]).any(|e| e
                .samples
                .iter()
                .any(|s| s.labels.values().any(|v| v.contains(&key)))),
            "{key} in a label"
        );
    }

    cluster.stop();
    pg.drop_db().await;
}
