//! Telemetry of Jembatan's services, in open standards: logs through
//! `tracing` (human-readable or JSON lines), OpenTelemetry traces with W3C
//! trace context across consumer → broker → adapter, and one set of
//! OpenTelemetry metric instruments read by a Prometheus text endpoint and,
//! when configured, an OTLP exporter.
//!
//! The standard `OTEL_*` variables turn the exporters on; without them no
//! exporter runs and no span is recorded beyond what the log filter asks
//! for. Settings are read from a map of variables ([`Settings::from_vars`])
//! so that tests never change the process environment.

mod logs;
mod metrics;
mod rpc;
mod trace;

use std::collections::BTreeMap;

pub use logs::LogFormat;
pub use metrics::{Metrics, checkpoint_signed, metrics, serve_metrics};
pub use rpc::{AuditSeqFn, CallerFn, RpcLayer, RpcService};
pub use trace::Trace;

/// Variables that turn the OTLP trace exporter on (either one).
pub const TRACES_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// Variables that turn the OTLP metric exporter on (either one).
pub const METRICS_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// The variable that chooses the log format (`text` or `json`).
pub const LOG_FORMAT_VAR: &str = "JEMBATAN_LOG_FORMAT";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}: {message}")]
    Setting { var: &'static str, message: String },
    #[error("cannot start the OTLP {what} exporter: {message}")]
    Exporter { what: &'static str, message: String },
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// What a process's telemetry does, read from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub log_format: LogFormat,
    /// `RUST_LOG`-style directives; the caller's default when absent.
    pub log_filter: Option<String>,
    /// `OTEL_SERVICE_NAME`, or the caller's default.
    pub service_name: String,
    /// Where spans go (OTLP over gRPC); `None`: no trace exporter.
    pub traces_endpoint: Option<String>,
    /// Where metrics go (OTLP over gRPC); `None`: Prometheus only.
    pub metrics_endpoint: Option<String>,
    /// Whether W3C `traceparent` is taken from requests and passed on
    /// (`OTEL_PROPAGATORS` absent or naming `tracecontext`).
    pub propagate: bool,
}

impl Settings {
    /// Reads the settings from `vars` (the process environment, or a
    /// test's map). `service` names the process when `OTEL_SERVICE_NAME`
    /// is unset. An `OTEL_SDK_DISABLED=true` turns every exporter off.
    pub fn from_vars(
        vars: &BTreeMap<String, String>,
        service: &str,
    ) -> Result<Settings, TelemetryError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let log_format = match get(LOG_FORMAT_VAR) {
            Some(text) => text.parse().map_err(|message| TelemetryError::Setting {
                var: LOG_FORMAT_VAR,
                message,
            })?,
            None => LogFormat::Text,
        };
        if let Some(protocol) = get("OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol != "grpc"
        {
            return Err(TelemetryError::Setting {
                var: "OTEL_EXPORTER_OTLP_PROTOCOL",
                message: format!(
                    "{protocol:?} is not supported: Jembatan exports OTLP over gRPC (grpc)"
                ),
            });
        }
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = |names: [&'static str; 2]| -> Result<Option<String>, TelemetryError> {
            if disabled {
                return Ok(None);
            }
            let Some((var, value)) = names.into_iter().find_map(|n| get(n).map(|v| (n, v))) else {
                return Ok(None);
            };
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(TelemetryError::Setting {
                    var,
                    message: format!("{value:?} is not an http:// or https:// URL"),
                });
            }
            Ok(Some(value.to_owned()))
        };
        let propagate = match get("OTEL_PROPAGATORS") {
            None => true,
            Some(list) => {
                let names: Vec<&str> = list.split(',').map(str::trim).collect();
                if let Some(other) = names
                    .iter()
                    .find(|n| !matches!(**n, "tracecontext" | "baggage" | "none"))
                {
                    return Err(TelemetryError::Setting {
                        var: "OTEL_PROPAGATORS",
                        message: format!(
                            "{other:?} is not supported: tracecontext, baggage or none"
                        ),
                    });
                }
                names.contains(&"tracecontext")
            }
        };
        Ok(Settings {
            log_format,
            log_filter: get("RUST_LOG").map(str::to_owned),
            service_name: get("OTEL_SERVICE_NAME").unwrap_or(service).to_owned(),
            traces_endpoint: endpoint(TRACES_ENDPOINT_VARS)?,
            metrics_endpoint: endpoint(METRICS_ENDPOINT_VARS)?,
            propagate,
        })
    }
}

/// The installed telemetry of a process: flushes and stops the exporters
/// when dropped (or at [`Telemetry::shutdown`]).
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the log subscriber (and the trace exporter, the W3C
    /// propagator and the metric exporters the settings ask for) for the
    /// whole process. `default_filter` applies when `RUST_LOG` is unset.
    /// Call it inside a Tokio runtime: the OTLP exporters connect through it.
    pub fn install(settings: &Settings, default_filter: &str) -> Result<Telemetry, TelemetryError> {
        let tracer = match &settings.traces_endpoint {
            Some(endpoint) => Some(trace::provider(endpoint, &settings.service_name)?),
            None => None,
        };
        if settings.propagate {
            trace::install_propagator();
        }
        metrics::install(settings)?;
        logs::install(settings, default_filter, tracer.as_ref())?;
        Ok(Telemetry { tracer })
    }

    /// Sends every span ended so far to the collector.
    pub fn flush(&self) {
        if let Some(tracer) = &self.tracer
            && let Err(err) = tracer.force_flush()
        {
            tracing::warn!(error = %err, "flushing spans failed");
        }
        metrics::flush();
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            let _ = tracer.shutdown();
        }
        metrics::shutdown();
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_from_the_standard_variables() {
        let s = Settings::from_vars(&vars(&[]), "jembatan-broker").unwrap();
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.service_name, "jembatan-broker");
        assert_eq!((s.traces_endpoint, s.metrics_endpoint), (None, None));
        assert!(s.propagate);

        let s = Settings::from_vars(
            &vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
                ("OTEL_SERVICE_NAME", "broker-a"),
                ("JEMBATAN_LOG_FORMAT", "json"),
            ]),
            "jembatan-broker",
        )
        .unwrap();
        assert_eq!(s.traces_endpoint.as_deref(), Some("http://traces:4317"));
        assert_eq!(s.metrics_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(s.service_name, "broker-a");
        assert_eq!(s.log_format, LogFormat::Json);

        let s = Settings::from_vars(
            &vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_PROPAGATORS", "none"),
            ]),
            "x",
        )
        .unwrap();
        assert_eq!((s.traces_endpoint, s.metrics_endpoint), (None, None));
        assert!(!s.propagate);
    }

    #[test]
    fn bad_settings_are_named() {
        let cases = [
            ("JEMBATAN_LOG_FORMAT", "xml", "JEMBATAN_LOG_FORMAT"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "collector:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/protobuf",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            ("OTEL_PROPAGATORS", "b3", "OTEL_PROPAGATORS"),
        ];
        for (var, value, named) in cases {
            let err = Settings::from_vars(&vars(&[(var, value)]), "x").unwrap_err();
            assert!(err.to_string().starts_with(named), "{var}={value}: {err}");
        }
    }
}
