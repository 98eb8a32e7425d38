//! The OpenAPI 3.1 document of the broker's HTTP routes, built from the
//! door's route table and the `jembatan.v1` message descriptors (the same
//! ones the JSON mapping reads), so a schema's properties are the
//! message's JSON field names. `docs/openapi.json` is this document; a
//! test keeps them equal.

use std::collections::BTreeMap;

use jembatan_proto::json::{JsonError, message_descriptor};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::{Op, ROUTES};

const SCHEMAS: &str = "#/components/schemas/";
const TIMESTAMP: &str = "google.protobuf.Timestamp";
const SCALAR: &str = "jembatan.v1.Scalar";

/// The read-only registry view's routes (`registry_http.rs`): path and
/// summary.
const REGISTRY_ROUTES: [(&str, &str); 8] = [
    (
        "/registry/v1/datasets",
        "Datasets and their compatibility modes",
    ),
    (
        "/registry/v1/datasets/{dataset}/versions",
        "A dataset's schema versions",
    ),
    (
        "/registry/v1/datasets/{dataset}/versions/{version}",
        "One schema version (a number or `latest`) with its schema",
    ),
    (
        "/registry/v1/datasets/{dataset}/versions/{version}/schema",
        "One schema version's JSON Schema document",
    ),
    (
        "/registry/v1/schemas/{id}",
        "A JSON Schema document by its content id (`sha256:<hex>`)",
    ),
    ("/registry/v1/mappings", "Registered mappings"),
    (
        "/registry/v1/mappings/{source}/{target}",
        "The latest mapping from one schema to another",
    ),
    (
        "/registry/v1/mappings/{source}/{target}/{version}",
        "One version of a mapping",
    ),
];

/// The proto comment on the element at `path` of `file`, its lines joined;
/// `None` when there is none.
fn comment(file: &prost_types::FileDescriptorProto, path: &[i32]) -> Option<String> {
    let location = file
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|l| l.path == path)?;
    let text = location
        .leading_comments
        .as_deref()
        .or(location.trailing_comments.as_deref())?;
    let text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!text.is_empty()).then_some(text)
}

/// `schema` with the proto comment at `path` as its description.
fn described(mut schema: Value, file: &prost_types::FileDescriptorProto, path: &[i32]) -> Value {
    if let Some(text) = comment(file, path) {
        schema["description"] = text.into();
    }
    schema
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMAS}{name}") })
}

/// What an operation of the door reads and answers.
struct Shape {
    summary: &'static str,
    request: Option<&'static str>,
    response: Option<&'static str>,
}

fn shape(op: Op) -> Shape {
    let shape = |summary, request, response| Shape {
        summary,
        request,
        response,
    };
    match op {
        Op::Query => shape(
            "Exchange.Query: a dataset's records, streamed as NDJSON",
            Some("jembatan.v1.QueryRequest"),
            None,
        ),
        Op::Lookup => shape(
            "Exchange.Lookup: one record by the dataset's key",
            Some("jembatan.v1.LookupRequest"),
            Some("jembatan.v1.LookupResponse"),
        ),
        Op::VerifyBatch => shape(
            "Exchange.VerifyBatch: many keys verified at once, one answer per key streamed as NDJSON",
            Some("jembatan.v1.VerifyBatchRequest"),
            None,
        ),
        Op::Subscribe => shape(
            "Exchange.Subscribe: a dataset's changes, batch by batch, streamed as NDJSON until the caller disconnects or the stream ends",
            Some("jembatan.v1.SubscribeRequest"),
            None,
        ),
        Op::TestMapping => shape(
            "Exchange.TestMapping: dry-run a candidate mapping on live records; only the report leaves",
            Some("jembatan.v1.TestMappingRequest"),
            Some("jembatan.v1.TestMappingResponse"),
        ),
        Op::Propose => shape(
            "Agreements.Propose: propose an agreement (consumer)",
            Some("jembatan.v1.ProposeRequest"),
            Some("jembatan.v1.Agreement"),
        ),
        Op::Approve => shape(
            "Agreements.Approve: approve an agreement (provider, operator)",
            Some("jembatan.v1.ApproveRequest"),
            Some("jembatan.v1.Agreement"),
        ),
        Op::Revoke => shape(
            "Agreements.Revoke: revoke an agreement",
            Some("jembatan.v1.RevokeRequest"),
            Some("jembatan.v1.Agreement"),
        ),
        Op::Get => shape(
            "Agreements.Get: one agreement",
            None,
            Some("jembatan.v1.Agreement"),
        ),
        Op::List => shape(
            "Agreements.List: the agreements the caller may see",
            None,
            Some("jembatan.v1.ListAgreementsResponse"),
        ),
        Op::OpenApi => shape("This document", None, None),
    }
}

/// The parameters of a path: each `{name}` segment, a string.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

/// Message schemas reachable from the routes, by full name.
#[derive(Default)]
struct Components {
    messages: BTreeMap<String, MessageDescriptor>,
    enums: BTreeMap<String, Vec<String>>,
}

impl Components {
    fn message(&mut self, m: &MessageDescriptor) -> Value {
        if m.full_name() == TIMESTAMP {
            return json!({"type": "string", "format": "date-time"});
        }
        if !self.messages.contains_key(m.full_name()) {
            self.messages.insert(m.full_name().to_owned(), m.clone());
            for field in m.fields() {
                self.field(&field);
            }
        }
        if m.full_name() == SCALAR {
            // plain JSON values are accepted where a Scalar goes
            return schema_ref("ScalarInput");
        }
        schema_ref(m.full_name())
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "uint32"}),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": ["string", "integer"], "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": ["string", "integer"], "format": "uint64"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Message(m) => self.message(m),
            Kind::Enum(e) => {
                let names = e.values().map(|v| v.name().to_owned()).collect();
                self.enums.insert(e.full_name().to_owned(), names);
                schema_ref(e.full_name())
            }
        }
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map()
            && let Kind::Message(entry) = field.kind()
        {
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.kind(&value.kind())});
        }
        let item = self.kind(&field.kind());
        if field.is_list() {
            json!({"type": "array", "items": item})
        } else {
            item
        }
    }

    /// The schemas of every message and enum seen, by full name.
    fn schemas(mut self) -> Map<String, Value> {
        let mut out = Map::new();
        let mut done = BTreeMap::new();
        while let Some((name, m)) = self
            .messages
            .iter()
            .find(|(name, _)| !done.contains_key(*name))
            .map(|(n, m)| (n.clone(), m.clone()))
        {
            let file = m.parent_file_descriptor_proto().clone();
            let mut properties = Map::new();
            for field in m.fields() {
                let schema = described(self.field(&field), &file, field.path());
                properties.insert(field.json_name().to_owned(), schema);
            }
            let mut schema = json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            });
            let mut notes: Vec<String> = comment(&file, m.path()).into_iter().collect();
            let oneofs: Vec<String> = m
                .oneofs()
                .map(|o| {
                    let names: Vec<String> = o.fields().map(|f| f.json_name().to_owned()).collect();
                    format!("`{}`", names.join("` | `"))
                })
                .collect();
            if !oneofs.is_empty() {
                notes.push(format!("At most one of {}.", oneofs.join("; of ")));
            }
            if !notes.is_empty() {
                schema["description"] = notes.join(" ").into();
            }
            out.insert(name.clone(), schema);
            done.insert(name, ());
        }
        for (name, values) in self.enums {
            out.insert(
                name,
                json!({"type": "string", "enum": values, "description": "By name; the number is accepted too."}),
            );
        }
        out
    }
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// The document.
pub(crate) fn document() -> Result<Value, JsonError> {
    let mut components = Components::default();
    let mut paths = Map::new();
    for route in &ROUTES {
        let shape = shape(route.op);
        let mut op = json!({
            "summary": shape.summary,
            "responses": { "default": { "$ref": "#/components/responses/Error" } },
        });
        let parameters = path_parameters(route.path);
        if !parameters.is_empty() {
            op["parameters"] = parameters.into();
        }
        if route.op == Op::List {
            let request = message_descriptor("jembatan.v1.ListAgreementsRequest")?;
            let query: Vec<Value> = request
                .fields()
                .map(|f| json!({"name": f.json_name(), "in": "query", "required": false, "schema": components.field(&f)}))
                .collect();
            op["parameters"] = query.into();
        }
        if let Some(name) = shape.request {
            let m = message_descriptor(name)?;
            let required = !matches!(route.op, Op::Approve | Op::Revoke);
            op["requestBody"] = json!({
                "required": required,
                "content": json_content(components.message(&m)),
            });
        }
        let ok = match (route.op, shape.response) {
            (Op::Query, _) => json!({
                "description": "One line per record, then the receipt line; an error line when the stream ends in error after it began",
                "content": { "application/x-ndjson": { "schema": schema_ref("QueryLine") } },
            }),
            (Op::VerifyBatch, _) => json!({
                "description": "One line per key, in the request's order: {\"i\": index, \"result\": \"matches\" | \"does_not_match\" | \"not_found\", \"fields\": {field: bool}}; then the receipt line",
                "content": { "application/x-ndjson": { "schema": schema_ref("QueryLine") } },
            }),
            (Op::Subscribe, _) => json!({
                "description": "One line per message: {\"started\": ...} first, then {\"batch\": ...} per batch of changes (or a cursor alone); an error line when the stream ends with a status",
                "content": { "application/x-ndjson": { "schema": schema_ref("SubscribeLine") } },
            }),
            (Op::OpenApi, _) => json!({
                "description": "This document",
                "content": json_content(json!({"type": "object"})),
            }),
            (_, Some(name)) => {
                let m = message_descriptor(name)?;
                json!({"description": name, "content": json_content(components.message(&m))})
            }
            (_, None) => json!({"description": "OK"}),
        };
        op["responses"]["200"] = ok;
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    for (path, summary) in REGISTRY_ROUTES {
        let schema_document =
            path.ends_with("/schema") || path.starts_with("/registry/v1/schemas/");
        let content = if schema_document {
            json!({ "application/schema+json": { "schema": {"type": "object"} } })
        } else {
            json_content(json!({"type": "object"}))
        };
        let mut op = json!({
            "summary": format!("Registry view: {summary}"),
            "tags": ["registry"],
            "responses": {
                "200": { "description": "OK", "content": content },
                "default": {
                    "description": "Refused",
                    "content": json_content(schema_ref("RegistryError")),
                },
            },
        });
        let parameters = path_parameters(path);
        if !parameters.is_empty() {
            op["parameters"] = parameters.into();
        }
        paths.insert(path.to_owned(), json!({ "get": op }));
    }
    for name in [
        "jembatan.v1.Receipt",
        "jembatan.v1.DenialReason",
        "jembatan.v1.SubscribeResponse",
    ] {
        let m = message_descriptor(name)?;
        components.message(&m);
    }
    let mut schemas = components.schemas();
    for (name, schema) in door_schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Jembatan broker: HTTP/JSON",
            "version": "v1",
            "description": "The broker's HTTP/JSON routes beside gRPC on its mTLS port (docs/http.md). Bodies and answers are the proto3 JSON mapping of the jembatan.v1 messages: lowerCamelCase names (proto names accepted), enums by name, 64-bit integers as strings, timestamps in RFC 3339.",
        },
        "security": [{ "mutualTLS": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "A client certificate of the federation's CA; the caller's agency and role come from it, never from a request field.",
                },
            },
            "responses": {
                "Error": {
                    "description": "Refused: 400 invalid input, 401 unauthenticated, 403 denied, 404 not found, 409 conflict, 413 body over the size limit, 422 wrong state, 429 quota or stream limit, 503 the audit log cannot be written",
                    "content": json_content(schema_ref("Error")),
                },
            },
            "schemas": schemas,
        },
    }))
}

/// The schemas of the door's own shapes: NDJSON lines, errors, the
/// plain-value form of a `Scalar`.
fn door_schemas() -> [(&'static str, Value); 6] {
    [
        (
            "ScalarInput",
            json!({
                "description": "A Scalar, or a plain JSON string, number (an integer that fits 64 bits is an intValue) or boolean",
                "oneOf": [
                    schema_ref(SCALAR),
                    {"type": "string"},
                    {"type": "number"},
                    {"type": "boolean"},
                ],
            }),
        ),
        (
            "QueryLine",
            json!({
                "description": "One NDJSON line: a record (the granted fields; each record line, newline included, is hashed into the receipt's payloadSha256), the receipt line, or an error line",
                "oneOf": [
                    {"type": "object", "title": "record"},
                    {
                        "type": "object",
                        "title": "receipt",
                        "properties": { "receipt": schema_ref("jembatan.v1.Receipt") },
                        "required": ["receipt"],
                    },
                    schema_ref("Error"),
                ],
            }),
        ),
        (
            "SubscribeLine",
            json!({
                "description": "One NDJSON line of a subscription: a message of the stream (started, or a batch whose changes are each hashed into its receipt's payloadSha256 as the line {\"op\":...,\"key\":...,\"record\":...}), or the error line that ends it",
                "oneOf": [
                    schema_ref("jembatan.v1.SubscribeResponse"),
                    schema_ref("Error"),
                ],
            }),
        ),
        (
            "Error",
            json!({
                "type": "object",
                "properties": { "error": schema_ref("ErrorBody") },
                "required": ["error"],
            }),
        ),
        (
            "ErrorBody",
            json!({
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "The gRPC status name, e.g. PERMISSION_DENIED"},
                    "message": {"type": "string"},
                    "reasons": {"type": "array", "items": schema_ref("jembatan.v1.DenialReason"), "description": "A denial's failed terms, the closest agreement first"},
                    "auditIndex": {"type": "integer", "description": "Sequence number of the audit entry recording the denial"},
                    "exchangeId": {"type": "string"},
                    "receipt": schema_ref("jembatan.v1.Receipt"),
                },
                "required": ["code", "message"],
            }),
        ),
        (
            "RegistryError",
            json!({
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string", "description": "The HTTP reason phrase, lowercase"},
                            "message": {"type": "string"},
                        },
                    },
                },
            }),
        ),
    ]
}
