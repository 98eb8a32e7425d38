//! OpenTelemetry traces: the OTLP span exporter, the W3C TraceContext
//! propagator, and [`Trace`], the context of one exchange that the broker
//! keeps to name its trace in audit entries and pass it to the adapter.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::TelemetryError;

/// A tracer provider exporting spans by OTLP over gRPC to `endpoint`.
pub(crate) fn provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            what: "span",
            message: e.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Takes `traceparent` from requests and writes it into outgoing ones.
pub(crate) fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Reads propagation fields from HTTP headers (gRPC metadata).
pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes propagation fields into gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The trace an exchange belongs to: taken from the request's span when
/// the handler starts, so that work done later on other tasks (the relay,
/// the audit entries) names the same trace.
#[derive(Clone, Default)]
pub struct Trace {
    context: opentelemetry::Context,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("trace_id", &self.id())
            .finish()
    }
}

impl Trace {
    /// The trace of the current span; empty when traces are off.
    pub fn current() -> Trace {
        Trace {
            context: tracing::Span::current().context(),
        }
    }

    /// The W3C trace id (32 lowercase hex digits), when there is a trace.
    pub fn id(&self) -> Option<String> {
        let span = self.context.span();
        let context = span.span_context();
        context.is_valid().then(|| context.trace_id().to_string())
    }

    /// `message` as a request carrying this trace (`traceparent`), for
    /// the calls an exchange makes to an adapter.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.inject(request.metadata_mut());
        request
    }

    /// Writes this trace into `metadata` through the installed propagator
    /// (nothing when propagation is off).
    pub fn inject(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if self.id().is_none() {
            return;
        }
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&self.context, &mut MetadataInjector(metadata))
        });
    }
}

/// The context a request's headers carry, through the installed
/// propagator (an empty one when propagation is off).
pub(crate) fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}
