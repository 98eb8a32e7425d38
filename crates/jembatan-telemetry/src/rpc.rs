//! The tower layer on a gRPC server: for every RPC it takes the caller's
//! W3C trace context from the request's metadata and makes the request's
//! span its child, records `rpc.server.duration` when the response ends
//! (a stream's last message, or the client going away), and writes one
//! access-log line (target `jembatan::access`): caller, method, status
//! code, duration and the audit entry the RPC was recorded as. Neither
//! the span nor the line holds anything from the request's body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as _, Frame};
use opentelemetry::trace::TraceContextExt;
use tonic::body::Body;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::metrics;

/// Names the caller of a request from its extensions (the verified client
/// certificate); `None`: unauthenticated.
pub type CallerFn = fn(&http::Extensions) -> Option<String>;
/// Reads the audit entry number a response names (in its headers or
/// trailers), if any.
pub type AuditSeqFn = fn(&http::HeaderMap) -> Option<u64>;

/// See the module documentation.
#[derive(Clone)]
pub struct RpcLayer {
    hooks: Arc<Hooks>,
}

struct Hooks {
    caller: CallerFn,
    audit_seq: Option<AuditSeqFn>,
}

impl std::fmt::Debug for RpcLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcLayer").finish_non_exhaustive()
    }
}

impl RpcLayer {
    /// A layer naming callers with `caller`.
    pub fn new(caller: CallerFn) -> RpcLayer {
        RpcLayer {
            hooks: Arc::new(Hooks {
                caller,
                audit_seq: None,
            }),
        }
    }

    /// Also logs the audit entry number `audit_seq` reads from a response.
    pub fn with_audit_seq(self, audit_seq: AuditSeqFn) -> RpcLayer {
        RpcLayer {
            hooks: Arc::new(Hooks {
                caller: self.hooks.caller,
                audit_seq: Some(audit_seq),
            }),
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            hooks: self.hooks.clone(),
        }
    }
}

/// The service [`RpcLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    hooks: Arc<Hooks>,
}

impl<S> std::fmt::Debug for RpcService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcService").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            let future = self.inner.call(request);
            return Box::pin(future);
        }
        let started = Instant::now();
        let (service, method) = split_path(request.uri().path());
        let caller = (self.hooks.caller)(request.extensions());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let parent = crate::trace::extract(request.headers());
        if parent.has_active_span() {
            let _ = span.set_parent(parent);
        }
        let call = Call {
            started,
            service,
            method,
            caller,
            span: span.clone(),
            hooks: self.hooks.clone(),
        };
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let response = tracing::Instrument::instrument(future, span).await?;
            Ok(call.watch(response))
        })
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    // bounded: a path is at most a few hundred bytes in a label
    let cut = |s: &str| s.chars().take(128).collect::<String>();
    (cut(service), cut(method))
}

/// What is known of an RPC when its response starts.
struct Call {
    started: Instant,
    service: String,
    method: String,
    caller: Option<String>,
    span: tracing::Span,
    hooks: Arc<Hooks>,
}

impl Call {
    /// Wraps the response body so the RPC is recorded when it ends.
    fn watch(self, response: http::Response<Body>) -> http::Response<Body> {
        let (parts, body) = response.into_parts();
        let mut watched = Watched {
            inner: body,
            call: Some(self),
            code: None,
            audit_seq: None,
        };
        // a trailers-only response (an error) has its status in the headers
        watched.read(&parts.headers);
        if watched.inner.is_end_stream() {
            watched.finish();
        }
        http::Response::from_parts(parts, Body::new(watched))
    }
}

/// A response body that records its RPC once it ends or is dropped.
struct Watched {
    inner: Body,
    call: Option<Call>,
    code: Option<i32>,
    audit_seq: Option<u64>,
}

impl Watched {
    fn read(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            self.code = Some(code);
        }
        if let Some(call) = &self.call
            && let Some(read) = call.hooks.audit_seq
            && let Some(seq) = read(headers)
        {
            self.audit_seq = Some(seq);
        }
    }

    fn finish(&mut self) {
        let Some(call) = self.call.take() else {
            return;
        };
        let elapsed = call.started.elapsed();
        // no status: the client went away before the end (CANCELLED)
        let code = self.code.unwrap_or(1);
        // a method the server does not have is not a label
        let (service, method) = if code == 12 {
            ("unknown", "unknown")
        } else {
            (call.service.as_str(), call.method.as_str())
        };
        metrics().rpc(service, method, code, elapsed);
        call.span.record("rpc.grpc.status_code", code);
        let duration_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0;
        tracing::info!(
            target: "jembatan::access",
            parent: &call.span,
            caller = call.caller.as_deref().unwrap_or("unauthenticated"),
            rpc = %format!("{service}/{method}"),
            code,
            status = code_name(code),
            duration_ms,
            audit_seq = self.audit_seq,
            "rpc"
        );
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let trailers = trailers.clone();
                    self.read(&trailers);
                    self.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.code.get_or_insert(13);
                self.finish();
            }
            Poll::Ready(None) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The gRPC name of a status code.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/jembatan.v1.Exchange/Query"),
            ("jembatan.v1.Exchange".into(), "Query".into())
        );
        assert_eq!(split_path("/"), (String::new(), String::new()));
        assert_eq!(split_path(&format!("/{}", "x".repeat(500))).0.len(), 128);
    }
}
