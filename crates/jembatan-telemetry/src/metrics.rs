//! The process's metric instruments (one set, OpenTelemetry), the
//! Prometheus registry that reads them, the optional OTLP reader, and the
//! HTTP endpoint that serves the Prometheus text format.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists
//! (`rpc.server.duration`); the Prometheus exporter turns dots into
//! underscores and adds unit and `_total` suffixes (see
//! `docs/operations.md`). Labels are identifiers the broker already logs in
//! clear (agency, dataset, decision, reason code, status): no value a
//! consumer sends becomes a label.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

use crate::{Settings, TelemetryError};

/// The instruments, recorded by the broker, the adapter and the store.
#[derive(Debug)]
pub struct Metrics {
    rpc_duration: Histogram<f64>,
    exchanges: Counter<u64>,
    denials: Counter<u64>,
    completions: Counter<u64>,
    rows: Counter<u64>,
    bytes: Counter<u64>,
    append_duration: Histogram<f64>,
    append_failures: Counter<u64>,
    audit_queue: UpDownCounter<i64>,
    health: Gauge<u64>,
    recheck_ok: Gauge<u64>,
    recheck_entries: Gauge<u64>,
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Unix time (seconds) of the latest signed checkpoint; 0: none yet.
static LAST_CHECKPOINT: AtomicI64 = AtomicI64::new(0);

/// The process's instruments. The first use without [`crate::Telemetry`]
/// installs them with the Prometheus reader only.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(None).unwrap_or_else(|_| Metrics::prometheus_only()))
}

/// Installs the instruments with the readers `settings` ask for.
pub(crate) fn install(settings: &Settings) -> Result<(), TelemetryError> {
    let otlp = match &settings.metrics_endpoint {
        Some(endpoint) => Some(otlp_exporter(endpoint)?),
        None => None,
    };
    let mut installed = false;
    METRICS.get_or_init(|| {
        installed = true;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        Metrics::new(Some((otlp, resource))).unwrap_or_else(|_| Metrics::prometheus_only())
    });
    if !installed && settings.metrics_endpoint.is_some() {
        tracing::warn!("metrics were recorded before telemetry was installed; no OTLP export");
    }
    Ok(())
}

fn otlp_exporter(endpoint: &str) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            what: "metric",
            message: e.to_string(),
        })
}

pub(crate) fn flush() {
    if let Some(m) = METRICS.get() {
        let _ = m.provider.force_flush();
    }
}

pub(crate) fn shutdown() {
    if let Some(m) = METRICS.get() {
        let _ = m.provider.shutdown();
    }
}

/// Records that a checkpoint was signed (or found at start) at `unix`
/// seconds; `jembatan.audit.checkpoint.age` counts from it.
pub fn checkpoint_signed(unix: i64) {
    LAST_CHECKPOINT.fetch_max(unix, Ordering::Relaxed);
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

type Readers = (
    Option<opentelemetry_otlp::MetricExporter>,
    opentelemetry_sdk::Resource,
);

impl Metrics {
    fn prometheus_only() -> Metrics {
        // a registry without a reader still answers scrapes (empty)
        let provider = SdkMeterProvider::builder().build();
        Metrics::with(provider, prometheus::Registry::new())
    }

    fn new(readers: Option<Readers>) -> Result<Metrics, TelemetryError> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_scope_info()
            .build()
            .map_err(|e| TelemetryError::Exporter {
                what: "prometheus",
                message: e.to_string(),
            })?;
        let mut builder = SdkMeterProvider::builder().with_reader(prometheus);
        if let Some((otlp, resource)) = readers {
            builder = builder.with_resource(resource);
            if let Some(otlp) = otlp {
                builder = builder.with_periodic_exporter(otlp);
            }
        }
        Ok(Metrics::with(builder.build(), registry))
    }

    fn with(provider: SdkMeterProvider, registry: prometheus::Registry) -> Metrics {
        let meter: Meter = provider.meter("jembatan");
        let _checkpoint_age = meter
            .f64_observable_gauge("jembatan.audit.checkpoint.age")
            .with_unit("s")
            .with_description("Seconds since the latest signed checkpoint of the audit log")
            .with_callback(|observer| {
                let last = LAST_CHECKPOINT.load(Ordering::Relaxed);
                if last > 0 {
                    observer.observe((now_unix() - last).max(0) as f64, &[]);
                }
            })
            .build();
        Metrics {
            rpc_duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Duration of inbound RPCs, to the end of a streamed response")
                .build(),
            exchanges: meter
                .u64_counter("jembatan.exchanges")
                .with_description("Exchange decisions written to the audit log")
                .build(),
            denials: meter
                .u64_counter("jembatan.exchange.denials")
                .with_description("Refused exchanges, by reason code")
                .build(),
            completions: meter
                .u64_counter("jembatan.exchange.completions")
                .with_description("Allowed exchanges ended on the audit log, by status")
                .build(),
            rows: meter
                .u64_counter("jembatan.exchange.rows")
                .with_description("Records delivered to consumers")
                .build(),
            bytes: meter
                .u64_counter("jembatan.exchange.delivered")
                .with_unit("By")
                .with_description("Bytes of records delivered to consumers")
                .build(),
            append_duration: meter
                .f64_histogram("jembatan.audit.append.duration")
                .with_unit("ms")
                .with_description(
                    "Time from handing an entry to the appender to its durable commit",
                )
                .build(),
            append_failures: meter
                .u64_counter("jembatan.audit.append.failures")
                .with_description("Audit entries that could not be written")
                .build(),
            audit_queue: meter
                .i64_up_down_counter("jembatan.audit.queue")
                .with_description("Audit entries waiting for their durable commit")
                .build(),
            health: meter
                .u64_gauge("jembatan.health")
                .with_description("1 when the service reports SERVING on gRPC health, 0 otherwise")
                .build(),
            recheck_ok: meter
                .u64_gauge("jembatan.audit.recheck.ok")
                .with_description(
                    "1 when the latest full re-check of the audit log since start passed, 0 when it found a problem",
                )
                .build(),
            recheck_entries: meter
                .u64_gauge("jembatan.audit.recheck.entries")
                .with_description("Entries the latest passed full re-check of the audit log verified")
                .build(),
            registry,
            provider,
        }
    }

    /// One inbound RPC ended.
    pub(crate) fn rpc(&self, service: &str, method: &str, code: i32, elapsed: Duration) {
        self.rpc_duration.record(
            elapsed.as_secs_f64() * 1000.0,
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
                KeyValue::new("rpc.grpc.status_code", i64::from(code)),
            ],
        );
    }

    /// The full re-check of the audit log ended: passed over `entries`
    /// entries, or (`None`) found a problem.
    pub fn log_rechecked(&self, entries: Option<u64>) {
        self.recheck_ok.record(u64::from(entries.is_some()), &[]);
        if let Some(entries) = entries {
            self.recheck_entries.record(entries, &[]);
        }
    }

    /// An entry is on its way to the appender.
    pub fn audit_queued(&self) {
        self.audit_queue.add(1, &[]);
    }

    /// An entry was durably committed `elapsed` after it was queued; it
    /// is counted by what it records.
    pub fn audit_committed(&self, entry: &AuditEntry, elapsed: Duration) {
        self.audit_queue.add(-1, &[]);
        self.append_duration
            .record(elapsed.as_secs_f64() * 1000.0, &[]);
        self.entry(entry);
    }

    /// An entry could not be written.
    pub fn audit_failed(&self) {
        self.audit_queue.add(-1, &[]);
        self.append_failures.add(1, &[]);
    }

    /// Counts an exchange entry: decisions by provider, consumer, dataset
    /// and decision, denials by reason, completions by status with the
    /// rows and bytes delivered (a subscription's with each delivery
    /// entry). A dataset the broker does not know is
    /// labelled `unknown` (its logged form is a keyed hash).
    fn entry(&self, entry: &AuditEntry) {
        if matches!(
            entry.kind,
            EntryKind::Agreement | EntryKind::AuditRead | EntryKind::Registry
        ) {
            return;
        }
        let known = entry.provider.is_some();
        let labels = [
            KeyValue::new(
                "provider",
                entry.provider.clone().unwrap_or_else(|| "unknown".into()),
            ),
            KeyValue::new(
                "consumer",
                entry.consumer.clone().unwrap_or_else(|| "unknown".into()),
            ),
            KeyValue::new(
                "dataset",
                entry
                    .dataset
                    .clone()
                    .filter(|_| known)
                    .unwrap_or_else(|| "unknown".into()),
            ),
        ];
        match entry.kind {
            EntryKind::Decision => self.decided(entry, &labels),
            EntryKind::Completion => self.completed(entry, &labels),
            // a lookup's decision and completion in one entry
            EntryKind::Answered => {
                self.decided(entry, &labels);
                self.completed(entry, &labels);
            }
            // a subscription's batch: its rows count as they go; its
            // completion counts the subscription's end, not the rows again
            EntryKind::Delivery => {
                self.rows.add(entry.rows, &labels);
                self.bytes.add(entry.bytes, &labels);
            }
            EntryKind::Agreement | EntryKind::AuditRead | EntryKind::Registry => {}
        }
    }

    /// Counts a decision, and a denial's reasons.
    fn decided(&self, entry: &AuditEntry, labels: &[KeyValue; 3]) {
        let mut attrs = labels.to_vec();
        attrs.push(KeyValue::new("decision", entry.decision.as_str()));
        attrs.push(KeyValue::new("operation", entry.operation.clone()));
        self.exchanges.add(1, &attrs);
        if entry.decision == Decision::Deny {
            let mut codes: Vec<String> = entry
                .reasons
                .iter()
                .map(|r| r.code.as_str().to_owned())
                .collect();
            if codes.is_empty() {
                codes.push(match entry.status {
                    ExchangeStatus::Invalid => "invalid_request".into(),
                    other => other.as_str().to_owned(),
                });
            }
            codes.sort();
            codes.dedup();
            for code in codes {
                self.denials.add(1, &[KeyValue::new("reason", code)]);
            }
        }
    }

    /// Counts an end, with the rows and bytes delivered.
    fn completed(&self, entry: &AuditEntry, labels: &[KeyValue; 3]) {
        let mut attrs = labels.to_vec();
        attrs.push(KeyValue::new("status", entry.status.as_str()));
        self.completions.add(1, &attrs);
        if entry.operation != "subscribe" {
            self.rows.add(entry.rows, labels);
            self.bytes.add(entry.bytes, labels);
        }
    }

    /// Reports a service's gRPC health (`service` is its full name).
    pub fn health(&self, service: &str, serving: bool) {
        self.health.record(
            u64::from(serving),
            &[KeyValue::new("rpc.service", service.to_owned())],
        );
    }

    /// The current values in the Prometheus text format.
    pub fn prometheus_text(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %err, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves `GET /metrics` (the Prometheus text format) on `listener` until
/// `shutdown` completes. It serves counts only, never data; bind it to
/// loopback or an operations network.
pub async fn serve_metrics(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                metrics().prometheus_text(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
