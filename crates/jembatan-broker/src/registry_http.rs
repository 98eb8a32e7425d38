//! A read-only HTTP/JSON view of the registry for integrators who just
//! want `curl`. It is served on the broker's port beside the gRPC
//! services, so it takes the same mutual TLS: any client certificate of
//! the federation may read it.
//!
//! ```text
//! GET /registry/v1/datasets
//! GET /registry/v1/datasets/{dataset}/versions
//! GET /registry/v1/datasets/{dataset}/versions/{version|latest}
//! GET /registry/v1/datasets/{dataset}/versions/{version|latest}/schema
//! GET /registry/v1/schemas/{schema_id}
//! GET /registry/v1/mappings
//! GET /registry/v1/mappings/{source}/{target}[/{version}]
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Extensions, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jembatan_core::{ErrorCode, Failure, Identity};
use jembatan_store::{StoredMapping, StoredSchemaVersion};
use serde_json::{Value, json};

use crate::registry::{Registry, RegistryError, check_reader};

type Shared = Arc<Registry>;

/// The view's routes, to serve beside the gRPC services.
pub(crate) fn routes(registry: Shared) -> tonic::service::Routes {
    let router = Router::new()
        .route("/registry/v1/datasets", get(datasets))
        .route("/registry/v1/datasets/{dataset}/versions", get(versions))
        .route(
            "/registry/v1/datasets/{dataset}/versions/{version}",
            get(version),
        )
        .route(
            "/registry/v1/datasets/{dataset}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/registry/v1/schemas/{id}", get(schema_by_id))
        .route("/registry/v1/mappings", get(mappings))
        .route(
            "/registry/v1/mappings/{source}/{target}",
            get(mapping_latest),
        )
        .route(
            "/registry/v1/mappings/{source}/{target}/{version}",
            get(mapping_version),
        )
        .with_state(registry);
    tonic::service::Routes::from(router)
}

/// An error as JSON: `{"error": {"code": ..., "message": ...}}`.
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let code = self.0.canonical_reason().unwrap_or("error").to_lowercase();
        (
            self.0,
            axum::Json(json!({ "error": { "code": code, "message": self.1 } })),
        )
            .into_response()
    }
}

impl From<RegistryError> for HttpError {
    fn from(err: RegistryError) -> Self {
        // the same message, and the same log line, as the gRPC status
        let status = jembatan_core::error::status(&err);
        HttpError(
            crate::http_json::http_status(status.code()),
            status.message().to_owned(),
        )
    }
}

impl From<Failure> for HttpError {
    fn from(err: Failure) -> Self {
        HttpError(crate::http_json::http_status(err.code.into()), err.message)
    }
}

/// The caller's identity from its verified client certificate.
fn caller(extensions: &Extensions) -> Result<Identity, HttpError> {
    let identity = jembatan_pki::peer_identity_in(extensions)
        .map_err(|e| Failure::new(ErrorCode::Unauthenticated, e.to_string()))?;
    check_reader(&identity)?;
    Ok(identity)
}

fn parse_schema_text(v: &StoredSchemaVersion) -> Value {
    serde_json::from_str(&v.document).unwrap_or(Value::Null)
}

fn version_summary(v: &StoredSchemaVersion) -> Value {
    json!({
        "dataset": v.dataset,
        "version": v.version,
        "schema_id": v.schema_id,
        "state": v.state.as_str(),
        "registered_at": v.registered_at,
        "registered_by": v.registered_by,
    })
}

fn mapping_json(m: &StoredMapping, with_document: bool) -> Value {
    let mut out = json!({
        "source": m.source,
        "target": m.target,
        "version": m.version,
        "registered_at": m.registered_at,
        "registered_by": m.registered_by,
        "state": m.state.as_str(),
    });
    if with_document {
        out["document"] = serde_json::from_str(&m.document).unwrap_or(Value::Null);
    }
    out
}

fn schema_response(document: &str) -> Response {
    (
        [(header::CONTENT_TYPE, "application/schema+json")],
        document.to_owned(),
    )
        .into_response()
}

async fn datasets(
    State(registry): State<Shared>,
    extensions: Extensions,
) -> Result<axum::Json<Value>, HttpError> {
    caller(&extensions)?;
    let list: Vec<Value> = registry
        .datasets()
        .await?
        .into_iter()
        .map(|(d, mode)| {
            json!({
                "dataset": d.dataset,
                "compatibility": mode.to_string(),
                "compatibility_is_default": d.compatibility.is_none(),
                "optional_friendly": d.optional_friendly,
                "latest_version": d.latest_version,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "datasets": list })))
}

async fn versions(
    State(registry): State<Shared>,
    Path(dataset): Path<String>,
    extensions: Extensions,
) -> Result<axum::Json<Value>, HttpError> {
    caller(&extensions)?;
    let list: Vec<Value> = registry
        .versions(&dataset)
        .await?
        .iter()
        .map(version_summary)
        .collect();
    Ok(axum::Json(json!({ "dataset": dataset, "versions": list })))
}

async fn find_version(
    registry: &Registry,
    dataset: &str,
    version: &str,
) -> Result<StoredSchemaVersion, HttpError> {
    Ok(registry.schema(&format!("{dataset}@{version}")).await?)
}

async fn version(
    State(registry): State<Shared>,
    Path((dataset, version)): Path<(String, String)>,
    extensions: Extensions,
) -> Result<axum::Json<Value>, HttpError> {
    caller(&extensions)?;
    let v = find_version(&registry, &dataset, &version).await?;
    let mut out = version_summary(&v);
    out["schema"] = parse_schema_text(&v);
    Ok(axum::Json(out))
}

async fn version_schema(
    State(registry): State<Shared>,
    Path((dataset, version)): Path<(String, String)>,
    extensions: Extensions,
) -> Result<Response, HttpError> {
    caller(&extensions)?;
    let v = find_version(&registry, &dataset, &version).await?;
    Ok(schema_response(&v.document))
}

async fn schema_by_id(
    State(registry): State<Shared>,
    Path(id): Path<String>,
    extensions: Extensions,
) -> Result<Response, HttpError> {
    caller(&extensions)?;
    if !id.starts_with("sha256:") {
        return Err(
            Failure::invalid_argument("a schema id looks like sha256:<64 hex digits>").into(),
        );
    }
    let v = registry.schema(&id).await?;
    Ok(schema_response(&v.document))
}

async fn mappings(
    State(registry): State<Shared>,
    extensions: Extensions,
) -> Result<axum::Json<Value>, HttpError> {
    caller(&extensions)?;
    let list: Vec<Value> = registry
        .mappings()
        .await?
        .iter()
        .map(|m| mapping_json(m, false))
        .collect();
    Ok(axum::Json(json!({ "mappings": list })))
}

async fn mapping_latest(
    State(registry): State<Shared>,
    Path((source, target)): Path<(String, String)>,
    extensions: Extensions,
) -> Result<axum::Json<Value>, HttpError> {
    caller(&extensions)?;
    let m = registry.mapping(&source, &target, None).await?;
    Ok(axum::Json(mapping_json(&m, true)))
}

async fn mapping_version(
    State(registry): State<Shared>,
    Path((source, target, version)): Path<(String, String, String)>,
    extensions: Extensions,
) -> Result<axum::Json<Value>, HttpError> {
    caller(&extensions)?;
    let version: u32 = version.parse().map_err(|_| {
        Failure::invalid_argument(format!("mapping version {version:?} is not a number"))
    })?;
    let m = registry.mapping(&source, &target, Some(version)).await?;
    Ok(axum::Json(mapping_json(&m, true)))
}
