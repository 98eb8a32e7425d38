//! The HTTP/JSON door to `Exchange` and `Agreements` on the broker's mTLS
//! port, for agency systems without a gRPC stack (`docs/http.md`).
//!
//! There is one code path: each route reads its JSON body into the
//! protobuf request, carries the HTTP request's extensions (the verified
//! client certificate, the revocation list) into a `tonic::Request`, and
//! calls the very service value the gRPC server serves, so identity,
//! policy, audit and receipts are the services' own. Answers are the
//! proto3 JSON mapping (`jembatan_proto::json`); a query's records stream
//! as newline-delimited JSON as the service yields them, and so does a
//! subscription's stream, one message a line; a refusal is
//! `{"error": {...}}` with the status name, the denial's reasons and
//! audit entry from the `jembatan-denial-bin` trailer, and a matching
//! HTTP status.

mod openapi;

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures::StreamExt;
use jembatan_core::limits::MAX_REQUEST_BYTES;
use jembatan_proto::json::{from_json, to_json};
use jembatan_proto::trailers;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::agreements_server::Agreements;
use jembatan_proto::v1::exchange_server::Exchange;
use serde_json::{Map, Value, json};
use tonic::{Code, Status};

use crate::{AgreementsService, ExchangeService};

pub(crate) use openapi::document;

/// The services the gRPC server serves, shared with this door.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    pub(crate) exchange: ExchangeService,
    pub(crate) agreements: AgreementsService,
}

/// What a route does; the router and the OpenAPI document are both built
/// from [`ROUTES`], so neither can name a route the other lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Query,
    Lookup,
    VerifyBatch,
    Subscribe,
    TestMapping,
    Propose,
    Approve,
    Revoke,
    Get,
    List,
    OpenApi,
}

/// One route of the door.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) op: Op,
}

/// Every route of the door.
pub(crate) const ROUTES: [Route; 11] = [
    Route {
        method: "post",
        path: "/exchange/v1/query",
        op: Op::Query,
    },
    Route {
        method: "post",
        path: "/exchange/v1/lookup",
        op: Op::Lookup,
    },
    Route {
        method: "post",
        path: "/exchange/v1/verify-batch",
        op: Op::VerifyBatch,
    },
    Route {
        method: "post",
        path: "/exchange/v1/subscribe",
        op: Op::Subscribe,
    },
    Route {
        method: "post",
        path: "/exchange/v1/test-mapping",
        op: Op::TestMapping,
    },
    Route {
        method: "post",
        path: "/agreements/v1/propose",
        op: Op::Propose,
    },
    Route {
        method: "post",
        path: "/agreements/v1/{id}/approve",
        op: Op::Approve,
    },
    Route {
        method: "post",
        path: "/agreements/v1/{id}/revoke",
        op: Op::Revoke,
    },
    Route {
        method: "get",
        path: "/agreements/v1/{id}",
        op: Op::Get,
    },
    Route {
        method: "get",
        path: "/agreements/v1",
        op: Op::List,
    },
    Route {
        method: "get",
        path: "/openapi.json",
        op: Op::OpenApi,
    },
];

impl Op {
    fn handler(self) -> MethodRouter<Services> {
        match self {
            Op::Query => post(query),
            Op::Lookup => post(lookup),
            Op::VerifyBatch => post(verify_batch),
            Op::Subscribe => post(subscribe),
            Op::TestMapping => post(test_mapping),
            Op::Propose => post(propose),
            Op::Approve => post(approve),
            Op::Revoke => post(revoke),
            Op::Get => get(get_agreement),
            Op::List => get(list),
            Op::OpenApi => get(openapi_json),
        }
    }
}

/// The door's routes, to merge with the other routes of the port.
pub(crate) fn router(services: Services) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, r| {
            router.route(r.path, r.op.handler())
        })
        .with_state(services)
}

/// A refusal as the door answers it.
#[derive(Debug)]
struct Refusal {
    http: StatusCode,
    body: Value,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.http, axum::Json(self.body)).into_response()
    }
}

impl Refusal {
    /// Refused by the door itself, before any service saw the request.
    fn new(http: StatusCode, code: Code, message: impl Into<String>) -> Refusal {
        Refusal {
            http,
            body: json!({ "error": { "code": code_name(code), "message": message.into() } }),
        }
    }

    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Refusal {
        Refusal {
            http: http_status(status.code()),
            body: json!({ "error": error_object(&status) }),
        }
    }
}

/// The `error` object of a status: its name and message, and what its
/// trailers carry (a denial's reasons and audit entry, a receipt).
fn error_object(status: &Status) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), code_name(status.code()).into());
    error.insert("message".into(), status.message().into());
    if let Some(denial) = trailers::denial_details(status.metadata()) {
        let reasons: Vec<Value> = denial
            .reasons
            .iter()
            .filter_map(|r| to_json(r).ok())
            .collect();
        error.insert("reasons".into(), reasons.into());
        error.insert("auditIndex".into(), denial.entry_seq.into());
        error.insert("exchangeId".into(), denial.exchange_id.into());
    }
    if let Some(receipt) = trailers::receipt(status.metadata())
        && let Ok(receipt) = to_json(&receipt)
    {
        error.insert("receipt".into(), receipt);
    }
    Value::Object(error)
}

/// The gRPC name of a status code, as the error's `code`.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The HTTP status of a service's refusal, for the door and the
/// registry's view alike. `ResourceExhausted` from a service is a quota or
/// stream limit (429); a body over the size limit is refused by the door
/// before parsing (413).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::UNPROCESSABLE_ENTITY,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        // "client closed request", as gRPC's HTTP mapping has it
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body as JSON: over [`MAX_REQUEST_BYTES`] is refused (413) before
/// it is read whole, malformed JSON names the parse error (400). An empty
/// body is `{}` when `empty_ok`.
async fn json_body(body: Body, parts: &Parts, empty_ok: bool) -> Result<Value, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("request body exceeds the limit max_request_bytes = {MAX_REQUEST_BYTES}"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if over {
                too_large()
            } else {
                Refusal::invalid(format!("cannot read the request body: {e}"))
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&bytes).map_err(|e| Refusal::invalid(format!("invalid JSON: {e}")))
}

/// The protobuf request a JSON value names.
fn message<M: prost::Message + prost::Name + Default>(value: Value) -> Result<M, Refusal> {
    from_json(value).map_err(|e| Refusal::invalid(format!("invalid request: {e}")))
}

/// A `tonic::Request` carrying the HTTP request's headers and extensions
/// (the peer's certificate, the revocation list): the service reads the
/// caller's identity from it exactly as from a gRPC call.
fn grpc_request<M>(parts: Parts, message: M) -> tonic::Request<M> {
    tonic::Request::from_http(axum::http::Request::from_parts(parts, message))
}

/// A message as a JSON answer.
fn answer<M: prost::Message + prost::Name>(message: &M) -> Response {
    match to_json(message) {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot write an answer as json");
            Refusal::from(Status::internal("internal error")).into_response()
        }
    }
}

/// A plain JSON string, number or boolean where a `Scalar` goes becomes
/// its `Scalar` form (an integer that fits 64 bits an `intValue`, any
/// other number a `doubleValue`); everything else is left to the mapping.
fn scalar_shorthand(value: &mut Value) {
    let kind = match value {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => json!({ "intValue": i.to_string() }),
            None => json!({ "doubleValue": n }),
        },
        _ => return,
    };
    *value = kind;
}

/// [`scalar_shorthand`] for every operand of a filter.
fn filter_shorthand(filter: &mut Value) {
    let Value::Object(filter) = filter else {
        return;
    };
    if let Some(Value::Object(p)) = filter.get_mut("predicate") {
        if let Some(v) = p.get_mut("value") {
            scalar_shorthand(v);
        }
        if let Some(Value::Array(vs)) = p.get_mut("values") {
            vs.iter_mut().for_each(scalar_shorthand);
        }
    }
    for list in ["all", "any"] {
        if let Some(Value::Object(l)) = filter.get_mut(list)
            && let Some(Value::Array(fs)) = l.get_mut("filters")
        {
            fs.iter_mut().for_each(filter_shorthand);
        }
    }
    if let Some(not) = filter.get_mut("not") {
        filter_shorthand(not);
    }
}

/// `object[a]` or `object[b]`: the camelCase or the proto name of a field.
fn field_mut<'a>(object: &'a mut Value, names: &[&str]) -> Option<&'a mut Value> {
    let Value::Object(map) = object else {
        return None;
    };
    let name = names.iter().find(|n| map.contains_key(**n))?;
    map.get_mut(*name)
}

async fn query(State(s): State<Services>, request: Request) -> Response {
    match start_query(s, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// A query answered as NDJSON: one line per record (the record's JSON
/// text as the service sent it, so the lines hash to the receipt's
/// `payloadSha256`), then `{"receipt": ...}`, or `{"error": ...}` when
/// the stream ends in error after the answer began. An error before the
/// first message is an error answer.
async fn start_query(s: Services, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let mut value = json_body(body, &parts, false).await?;
    if let Some(filter) = field_mut(&mut value, &["filter"]) {
        filter_shorthand(filter);
    }
    let req: pb::QueryRequest = message(value)?;
    let stream = s
        .exchange
        .query(grpc_request(parts, req))
        .await?
        .into_inner();
    ndjson(stream).await
}

async fn verify_batch(State(s): State<Services>, request: Request) -> Response {
    match start_verify_batch(s, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// A batch verification answered as NDJSON, as a query is: one line per
/// key, then the receipt line. Keys and values may be plain JSON scalars.
async fn start_verify_batch(s: Services, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let mut value = json_body(body, &parts, false).await?;
    if let Some(Value::Array(items)) = field_mut(&mut value, &["items"]) {
        for item in items {
            if let Some(key) = field_mut(item, &["key"]) {
                scalar_shorthand(key);
            }
            if let Some(Value::Object(verify)) = field_mut(item, &["verify"]) {
                verify.values_mut().for_each(scalar_shorthand);
            }
        }
    }
    let req: pb::VerifyBatchRequest = message(value)?;
    let stream = s
        .exchange
        .verify_batch(grpc_request(parts, req))
        .await?
        .into_inner();
    ndjson(stream).await
}

/// An exchange's stream as NDJSON lines; an error before the first
/// message is an error answer.
async fn ndjson(mut stream: crate::QueryStream) -> Result<Response, Refusal> {
    let first = match stream.next().await {
        Some(Err(status)) if status.code() != Code::Ok => return Err(status.into()),
        first => first,
    };
    let lines = futures::stream::iter(first)
        .chain(stream)
        .scan(Lines::default(), |lines, item| {
            std::future::ready(lines.next(item).map(Ok::<_, Infallible>))
        });
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The NDJSON lines of a query's stream, a message at a time.
#[derive(Debug, Default)]
struct Lines {
    receipt_sent: bool,
    ended: bool,
}

impl Lines {
    /// The lines of one stream item; `None` once the stream has ended.
    /// The stream ends with its status: `Ok` carries the trailers (the
    /// receipt, already sent as the last message), anything else is the
    /// error line.
    fn next(&mut self, item: Result<pb::QueryResponse, Status>) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let line = |value: Value| {
            let mut text = value.to_string();
            text.push('\n');
            Bytes::from(text)
        };
        let receipt_line = |receipt: &pb::Receipt| match to_json(receipt) {
            Ok(receipt) => line(json!({ "receipt": receipt })),
            Err(e) => {
                tracing::error!(error = %e, "cannot write a receipt as json");
                let status = Status::internal("internal error");
                line(json!({ "error": error_object(&status) }))
            }
        };
        Some(match item {
            Ok(pb::QueryResponse {
                item: Some(pb::query_response::Item::Batch(batch)),
            }) => {
                let size = batch.records.iter().map(|r| r.len() + 1).sum();
                let mut text = String::with_capacity(size);
                for record in &batch.records {
                    text.push_str(record);
                    text.push('\n');
                }
                Bytes::from(text)
            }
            Ok(pb::QueryResponse {
                item: Some(pb::query_response::Item::Receipt(receipt)),
            }) => {
                self.receipt_sent = true;
                receipt_line(&receipt)
            }
            Ok(pb::QueryResponse { item: None }) => Bytes::new(),
            Err(status) if status.code() == Code::Ok => {
                self.ended = true;
                match trailers::receipt(status.metadata()) {
                    Some(receipt) if !self.receipt_sent => receipt_line(&receipt),
                    _ => Bytes::new(),
                }
            }
            Err(status) => {
                self.ended = true;
                line(json!({ "error": error_object(&status) }))
            }
        })
    }
}

async fn subscribe(State(s): State<Services>, request: Request) -> Response {
    match start_subscribe(s, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// A subscription answered as NDJSON, one line per message of the
/// stream: `{"started": ...}`, then `{"batch": ...}` as changes come
/// (each change's `op`, `key` and `record`, the cursor and the batch's
/// receipt), and `{"error": ...}` when the stream ends with a status. A
/// refusal before the stream starts is an error answer.
async fn start_subscribe(s: Services, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let mut value = json_body(body, &parts, false).await?;
    if let Some(filter) = field_mut(&mut value, &["filter"]) {
        filter_shorthand(filter);
    }
    let req: pb::SubscribeRequest = message(value)?;
    let mut stream = s
        .exchange
        .subscribe(grpc_request(parts, req))
        .await?
        .into_inner();
    let first = match stream.next().await {
        Some(Err(status)) if status.code() != Code::Ok => return Err(status.into()),
        first => first,
    };
    let lines = futures::stream::iter(first)
        .chain(stream)
        .scan(false, |ended, item| {
            std::future::ready(subscribe_line(ended, item).map(Ok::<_, Infallible>))
        });
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The NDJSON line of one message of a subscription's stream; `None`
/// once the stream has ended (its status, `Ok` or not, is the last item).
fn subscribe_line(ended: &mut bool, item: Result<pb::SubscribeResponse, Status>) -> Option<Bytes> {
    if *ended {
        return None;
    }
    let value = match item {
        Ok(message) => to_json(&message).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot write a subscription message as json");
            *ended = true;
            json!({ "error": error_object(&Status::internal("internal error")) })
        }),
        Err(status) => {
            *ended = true;
            if status.code() == Code::Ok {
                return None;
            }
            json!({ "error": error_object(&status) })
        }
    };
    let mut text = value.to_string();
    text.push('\n');
    Some(Bytes::from(text))
}

async fn lookup(State(s): State<Services>, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let mut value = json_body(body, &parts, false).await?;
    if let Some(key) = field_mut(&mut value, &["key"]) {
        scalar_shorthand(key);
    }
    if let Some(Value::Object(verify)) = field_mut(&mut value, &["verify"]) {
        verify.values_mut().for_each(scalar_shorthand);
    }
    let req: pb::LookupRequest = message(value)?;
    let response = s.exchange.lookup(grpc_request(parts, req)).await?;
    Ok(answer(response.get_ref()))
}

async fn test_mapping(State(s): State<Services>, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let value = json_body(body, &parts, false).await?;
    let req: pb::TestMappingRequest = message(value)?;
    let response = s.exchange.test_mapping(grpc_request(parts, req)).await?;
    Ok(answer(response.get_ref()))
}

async fn propose(State(s): State<Services>, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let mut value = json_body(body, &parts, false).await?;
    if let Some(agreement) = field_mut(&mut value, &["agreement"])
        && let Some(filter) = field_mut(agreement, &["rowFilter", "row_filter"])
    {
        filter_shorthand(filter);
    }
    let req: pb::ProposeRequest = message(value)?;
    let response = s.agreements.propose(grpc_request(parts, req)).await?;
    Ok(answer(response.get_ref()))
}

/// The body of a step on agreement `id`; an `id` in the body must be the
/// path's.
async fn step_body<M>(id: &str, parts: &Parts, body: Body) -> Result<M, Refusal>
where
    M: prost::Message + prost::Name + Default,
{
    let mut value = json_body(body, parts, true).await?;
    match field_mut(&mut value, &["id"]) {
        Some(Value::String(named)) if named != id => {
            return Err(Refusal::invalid(format!(
                "the body names agreement {named:?}, the path {id:?}"
            )));
        }
        _ => {}
    }
    if let Value::Object(map) = &mut value {
        map.insert("id".into(), id.into());
    }
    message(value)
}

async fn approve(
    State(s): State<Services>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let req: pb::ApproveRequest = step_body(&id, &parts, body).await?;
    let response = s.agreements.approve(grpc_request(parts, req)).await?;
    Ok(answer(response.get_ref()))
}

async fn revoke(
    State(s): State<Services>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let req: pb::RevokeRequest = step_body(&id, &parts, body).await?;
    let response = s.agreements.revoke(grpc_request(parts, req)).await?;
    Ok(answer(response.get_ref()))
}

async fn get_agreement(
    State(s): State<Services>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, Refusal> {
    let (parts, _) = request.into_parts();
    let req = pb::GetAgreementRequest { id };
    let response = s.agreements.get(grpc_request(parts, req)).await?;
    Ok(answer(response.get_ref()))
}

/// The list's filters come as query parameters, by their JSON names.
async fn list(State(s): State<Services>, request: Request) -> Result<Response, Refusal> {
    let (parts, _) = request.into_parts();
    let Query(params) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map_err(|e| Refusal::invalid(format!("invalid query parameters: {e}")))?;
    let params: Map<String, Value> = params.into_iter().map(|(k, v)| (k, v.into())).collect();
    let req: pb::ListAgreementsRequest = message(Value::Object(params))?;
    let response = s.agreements.list(grpc_request(parts, req)).await?;
    Ok(answer(response.get_ref()))
}

/// The OpenAPI document of the port's HTTP routes, for any certificate
/// of the federation.
async fn openapi_json(request: Request) -> Result<Response, Refusal> {
    jembatan_pki::peer_identity_in(request.extensions()).map_err(|e| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            e.to_string(),
        )
    })?;
    match document() {
        Ok(doc) => Ok(axum::Json(doc).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the openapi document");
            Err(Status::internal("internal error").into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_become_scalars_wherever_a_scalar_goes() {
        let mut filter = json!({"all": {"filters": [
            {"predicate": {"field": "a", "op": "OPERATOR_EQ", "value": "x"}},
            {"not": {"predicate": {"field": "b", "op": "OPERATOR_IN", "values": [1, 2.5, true]}}},
            {"predicate": {"field": "c", "op": "OPERATOR_EQ", "value": {"stringValue": "y"}}},
        ]}});
        filter_shorthand(&mut filter);
        let filter: pb::Filter = from_json(filter).unwrap();
        let pb::filter::Kind::All(all) = filter.kind.unwrap() else {
            panic!("all")
        };
        let operands: Vec<Vec<pb::Scalar>> = all
            .filters
            .into_iter()
            .map(|f| match f.kind.unwrap() {
                pb::filter::Kind::Predicate(p) => p.value.into_iter().collect(),
                pb::filter::Kind::Not(n) => match n.kind.unwrap() {
                    pb::filter::Kind::Predicate(p) => p.values,
                    _ => panic!("a predicate"),
                },
                _ => panic!("a predicate or not"),
            })
            .collect();
        use pb::scalar::Kind::*;
        let kinds: Vec<Vec<pb::scalar::Kind>> = operands
            .into_iter()
            .map(|v| v.into_iter().map(|s| s.kind.unwrap()).collect())
            .collect();
        assert_eq!(
            kinds,
            vec![
                vec![StringValue("x".into())],
                vec![IntValue(1), DoubleValue(2.5), BoolValue(true)],
                vec![StringValue("y".into())],
            ]
        );
    }

    #[test]
    fn a_denial_carries_its_reasons_and_audit_entry() {
        let mut status = Status::permission_denied("refused: no_agreement");
        let details = pb::DenialDetails {
            exchange_id: "e-1".into(),
            reasons: vec![pb::DenialReason {
                code: pb::DenialCode::NoAgreement as i32,
                reason: "no_agreement".into(),
                ..Default::default()
            }],
            entry_seq: 41,
        };
        trailers::insert(
            status.metadata_mut(),
            jembatan_proto::DENIAL_METADATA_KEY,
            &details,
        );
        let refusal = Refusal::from(status);
        assert_eq!(refusal.http, StatusCode::FORBIDDEN);
        let error = &refusal.body["error"];
        assert_eq!(error["code"], "PERMISSION_DENIED");
        assert_eq!(error["auditIndex"], 41);
        assert_eq!(error["reasons"][0]["reason"], "no_agreement");
        assert_eq!(error["reasons"][0]["code"], "DENIAL_CODE_NO_AGREEMENT");
    }

    #[test]
    fn every_status_code_has_its_http_status() {
        let table = [
            (Code::PermissionDenied, 403),
            (Code::Unavailable, 503),
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::ResourceExhausted, 429),
            (Code::Unauthenticated, 401),
            (Code::FailedPrecondition, 422),
            (Code::AlreadyExists, 409),
            (Code::Internal, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
