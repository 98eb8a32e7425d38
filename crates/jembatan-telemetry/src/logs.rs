//! The log subscriber: human-readable lines (colour only on a terminal)
//! or JSON lines on standard error, filtered by `RUST_LOG`, and the
//! OpenTelemetry layer beside it when traces are exported.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::{Settings, TelemetryError};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (with `message`) and the spans the event happened in.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: text or json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

pub(crate) fn install(
    settings: &Settings,
    default_filter: &str,
    tracer: Option<&SdkTracerProvider>,
) -> Result<(), TelemetryError> {
    let filter = match &settings.log_filter {
        Some(directives) => {
            EnvFilter::try_new(directives).map_err(|e| TelemetryError::Setting {
                var: "RUST_LOG",
                message: e.to_string(),
            })?
        }
        None => EnvFilter::new(default_filter),
    };
    let fmt: Boxed = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![fmt];
    if let Some(provider) = tracer {
        // spans of Jembatan's own crates, whatever the log filter says
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("jembatan"))
            .with_filter(Targets::new().with_target("jembatan", Level::INFO))
            .boxed();
        layers.push(otel);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))
}
