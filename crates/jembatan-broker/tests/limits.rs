//! The limits the broker enforces on consumer requests, end to end in
//! process: a provider's SQLite database behind a real adapter, the broker,
//! and a consumer, all over mutual TLS. Over-limit requests are refused
//! naming the limit (and, once decoded, audited as invalid); requests at a
//! limit pass validation; hostile lookup keys reach the database only as
//! bound values.

use std::path::Path;

use jembatan_broker::{Broker, MAX_REQUEST_BYTES};
use jembatan_core::ExchangeStatus;
use jembatan_core::limits::{
    MAX_FIELDS, MAX_FILTER_DEPTH, MAX_FILTER_PREDICATES, MAX_IDENT_BYTES, MAX_IN_VALUES,
    MAX_STRING_BYTES,
};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::{BrokerHandle, Federation, agreement_toml};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

const ROWS: usize = 20;
/// The residents the agreement's row filter lets through: every tenth
/// (`i % 10 == 9`) has died.
const ALIVE: usize = ROWS - ROWS / 10;

struct Harness {
    f: Federation,
    broker: Broker,
    broker_port: u16,
}

async fn rows_in(db: &Path) -> i64 {
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM penduduk")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// The federation's provider; `dinsos` may read `nik` and `nama` of the
/// living.
async fn harness() -> Harness {
    let f = Federation::start(ROWS).await;
    let config = f.broker_config(
        "",
        &agreement_toml(
            "ok-1",
            "dinsos",
            r#"["nik", "nama"]"#,
            "approved",
            r#"row_filter = { field = "status", op = "eq", value = "HIDUP" }"#,
        ),
    );
    let BrokerHandle { broker, port } = f.broker(&config).await;
    Harness {
        f,
        broker,
        broker_port: port,
    }
}

impl Harness {
    async fn channel(&self) -> Channel {
        self.f.channel(self.broker_port, "dinsos").await
    }

    async fn client(&self) -> ExchangeClient<Channel> {
        ExchangeClient::new(self.channel().await)
    }

    /// Audit entries with status `invalid`.
    async fn invalid_entries(&self) -> usize {
        self.broker
            .audit()
            .entries(0, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.entry.status == ExchangeStatus::Invalid)
            .count()
    }
}

fn query(fields: &[&str], filter: Option<pb::Filter>) -> pb::QueryRequest {
    pb::QueryRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: fields.iter().map(|s| s.to_string()).collect(),
        filter,
        ..Default::default()
    }
}

fn string(s: &str) -> pb::Scalar {
    pb::Scalar {
        kind: Some(pb::scalar::Kind::StringValue(s.into())),
    }
}

fn pred(
    field: &str,
    op: pb::Operator,
    value: Option<pb::Scalar>,
    values: Vec<pb::Scalar>,
) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: op as i32,
            value,
            values,
        })),
    }
}

fn all(filters: Vec<pb::Filter>) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::All(pb::FilterList { filters })),
    }
}

fn nested(depth: usize) -> pb::Filter {
    let mut f = pred("nik", pb::Operator::IsNotNull, None, vec![]);
    for _ in 1..depth {
        f = all(vec![f]);
    }
    f
}

fn many(n: usize) -> pb::Filter {
    all((0..n)
        .map(|_| pred("nik", pb::Operator::IsNotNull, None, vec![]))
        .collect())
}

fn in_list(n: usize) -> pb::Filter {
    pred(
        "nik",
        pb::Operator::In,
        None,
        (0..n).map(|i| string(&format!("15070{i:011}"))).collect(),
    )
}

/// The records a request gets, or the code and message text of its refusal.
type Want = Result<usize, (Code, String)>;

/// Records of a query, or its status.
async fn run_query(
    client: &mut ExchangeClient<Channel>,
    req: pb::QueryRequest,
) -> Result<usize, tonic::Status> {
    let mut stream = client.query(req).await?.into_inner();
    let mut n = 0;
    while let Some(msg) = stream.message().await? {
        if let Some(pb::query_response::Item::Batch(b)) = msg.item {
            n += b.records.len();
        }
    }
    Ok(n)
}

#[tokio::test]
async fn query_limits_are_enforced_at_their_bounds_and_audited() {
    let h = harness().await;
    let mut c = h.client().await;
    let fields_at_limit: Vec<String> = (0..MAX_FIELDS).map(|i| format!("f{i}")).collect();
    let fields_over: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("f{i}")).collect();
    let long_ident = "a".repeat(MAX_IDENT_BYTES + 1);
    let ok = |n: usize| -> Want { Ok(n) };
    let err =
        |code: Code, text: &str| -> Result<usize, (Code, String)> { Err((code, text.into())) };

    let cases: Vec<(&str, pb::QueryRequest, Want)> = vec![
        (
            "max_fields fields: valid, then judged by the agreement",
            pb::QueryRequest {
                fields: fields_at_limit.clone(),
                ..query(&[], None)
            },
            err(Code::PermissionDenied, "exchange denied"),
        ),
        (
            "max_fields + 1 fields",
            pb::QueryRequest {
                fields: fields_over,
                ..query(&[], None)
            },
            err(
                Code::InvalidArgument,
                &format!("257 fields exceed the limit max_fields = {MAX_FIELDS}"),
            ),
        ),
        (
            "field name over max_ident_bytes",
            query(&[long_ident.as_str()], None),
            err(
                Code::InvalidArgument,
                "field name is longer than 128 bytes (limit max_ident_bytes)",
            ),
        ),
        (
            "dataset name over max_ident_bytes",
            pb::QueryRequest {
                dataset: format!("prov.{long_ident}"),
                ..query(&["nik"], None)
            },
            err(
                Code::InvalidArgument,
                "dataset name is longer than 128 bytes (limit max_ident_bytes)",
            ),
        ),
        (
            "purpose over 256 bytes",
            pb::QueryRequest {
                purpose: "b".repeat(257),
                ..query(&["nik"], None)
            },
            err(Code::InvalidArgument, "purpose is longer than 256 bytes"),
        ),
        (
            "filter depth at max_filter_depth",
            query(&["nik"], Some(nested(MAX_FILTER_DEPTH))),
            ok(ALIVE),
        ),
        (
            "filter depth over max_filter_depth",
            query(&["nik"], Some(nested(MAX_FILTER_DEPTH + 1))),
            err(
                Code::InvalidArgument,
                &format!("nesting deeper than the limit max_filter_depth = {MAX_FILTER_DEPTH}"),
            ),
        ),
        (
            "max_filter_predicates predicates",
            query(&["nik"], Some(many(MAX_FILTER_PREDICATES))),
            ok(ALIVE),
        ),
        (
            "max_filter_predicates + 1 predicates",
            query(&["nik"], Some(many(MAX_FILTER_PREDICATES + 1))),
            err(
                Code::InvalidArgument,
                &format!(
                    "more predicates than the limit max_filter_predicates = {MAX_FILTER_PREDICATES}"
                ),
            ),
        ),
        (
            "max_in_values values",
            query(&["nik"], Some(in_list(MAX_IN_VALUES))),
            ok(ALIVE),
        ),
        (
            "max_in_values + 1 values",
            query(&["nik"], Some(in_list(MAX_IN_VALUES + 1))),
            err(
                Code::InvalidArgument,
                &format!("1001 values exceed the limit max_in_values = {MAX_IN_VALUES}"),
            ),
        ),
        (
            "string of max_string_bytes",
            query(
                &["nik"],
                Some(pred(
                    "nama",
                    pb::Operator::Eq,
                    Some(string(&"'".repeat(MAX_STRING_BYTES))),
                    vec![],
                )),
            ),
            ok(0),
        ),
        (
            "string over max_string_bytes",
            query(
                &["nik"],
                Some(pred(
                    "nama",
                    pb::Operator::Eq,
                    Some(string(&"'".repeat(MAX_STRING_BYTES + 1))),
                    vec![],
                )),
            ),
            err(
                Code::InvalidArgument,
                &format!(
                    "string of 4097 bytes exceeds the limit max_string_bytes = {MAX_STRING_BYTES}"
                ),
            ),
        ),
        (
            "NUL byte in a value",
            query(
                &["nik"],
                Some(pred(
                    "nama",
                    pb::Operator::Prefix,
                    Some(string("WARGA\0")),
                    vec![],
                )),
            ),
            err(Code::InvalidArgument, "string contains a NUL byte"),
        ),
    ];
    let before = h.invalid_entries().await;
    let mut refused_invalid = 0;
    for (name, req, want) in cases {
        let got = run_query(&mut c, req).await;
        match (got, want) {
            (Ok(n), Ok(w)) => assert_eq!(n, w, "{name}"),
            (Err(status), Err((code, text))) => {
                assert_eq!(status.code(), code, "{name}: {status:?}");
                assert!(
                    status.message().contains(&text),
                    "{name}: {:?} lacks {text:?}",
                    status.message()
                );
                if code == Code::InvalidArgument {
                    refused_invalid += 1;
                }
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
    // every refusal of a decoded request is on the audit log
    assert_eq!(h.invalid_entries().await - before, refused_invalid);
}

#[tokio::test]
async fn lookup_keys_are_bounded_and_hostile_ones_find_nothing() {
    let h = harness().await;
    let mut c = h.client().await;
    let lookup = |key: Option<pb::Scalar>| pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: vec!["nik".into(), "nama".into()],
        key,
        ..Default::default()
    };
    for (name, key, text) in [
        (
            "key over max_string_bytes",
            Some(string(&"1".repeat(MAX_STRING_BYTES + 1))),
            "exceeds the limit max_string_bytes",
        ),
        ("key with a NUL byte", Some(string("15070\0")), "NUL byte"),
        ("empty key", Some(string("")), "key is empty"),
        ("no key", None, "invalid key"),
    ] {
        let status = c.lookup(lookup(key)).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains(text),
            "{name}: {}",
            status.message()
        );
    }
    let hostile = [
        "1".repeat(MAX_STRING_BYTES),
        "' OR 1=1 --".into(),
        "' OR '1'='1".into(),
        "'; DROP TABLE penduduk; --".into(),
        "1' UNION SELECT status, status FROM penduduk --".into(),
        "\\' OR 1=1 #".into(),
        "%".into(),
        "15070%".into(),
        "1507000000000000' --".into(),
    ];
    for key in hostile {
        let resp = c
            .lookup(lookup(Some(string(&key))))
            .await
            .unwrap_or_else(|s| panic!("{key:.40}: {s:?}"))
            .into_inner();
        assert!(!resp.found, "{key:.40} found {}", resp.record);
        assert_eq!(resp.receipt.expect("receipt").rows, 0);
    }
    // an honest key still finds its row; the table is intact
    let resp = c
        .lookup(lookup(Some(string(&format!("15070{:011}", 7)))))
        .await
        .expect("lookup")
        .into_inner();
    assert!(resp.found);
    assert_eq!(rows_in(&h.f.dir.join("prov.db")).await, ROWS as i64);
}

/// Sends raw bytes as an `Exchange.Query` request.
async fn query_raw(channel: Channel, body: Vec<u8>) -> Result<usize, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/jembatan.v1.Exchange/Query");
    let mut stream = grpc
        .server_streaming(tonic::Request::new(body), path, RawCodec)
        .await?
        .into_inner();
    let mut n = 0;
    while stream.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[tokio::test]
async fn undecodable_requests_are_client_errors() {
    let h = harness().await;
    let mut c = h.client().await;
    // over the size limit: ResourceExhausted naming it
    let big = pb::QueryRequest {
        purpose: "b".repeat(MAX_REQUEST_BYTES),
        ..query(&["nik"], None)
    };
    let size = big.encoded_len();
    let status = run_query(&mut c, big).await.expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "request of {size} bytes exceeds the limit max_request_bytes = {MAX_REQUEST_BYTES}"
        )
    );
    // just under it: decoded, then refused for what it says
    let under = pb::QueryRequest {
        purpose: "b".repeat(MAX_REQUEST_BYTES - 1024),
        ..query(&["nik"], None)
    };
    let status = run_query(&mut c, under).await.expect_err("long purpose");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("purpose is longer than 256 bytes")
    );

    // invalid UTF-8 in a string field, and bytes that are not protobuf
    let mark = "\u{1}MARK\u{1}";
    let bad = [0xC3, 0x28, 0xFF, 0xFE, 0xA0, 0x80];
    let with_bad = |req: pb::QueryRequest| {
        let mut bytes = req.encode_to_vec();
        let at = bytes
            .windows(mark.len())
            .position(|w| w == mark.as_bytes())
            .expect("placeholder");
        bytes[at..at + mark.len()].copy_from_slice(&bad);
        bytes
    };
    let cases = [
        (
            "dataset",
            with_bad(pb::QueryRequest {
                dataset: mark.into(),
                ..query(&["nik"], None)
            }),
        ),
        ("field", with_bad(query(&["nik", mark], None))),
        (
            "filter value",
            with_bad(query(
                &["nik"],
                Some(pred("nama", pb::Operator::Eq, Some(string(mark)), vec![])),
            )),
        ),
        (
            "purpose",
            with_bad(pb::QueryRequest {
                purpose: mark.into(),
                ..query(&["nik"], None)
            }),
        ),
        ("not protobuf", vec![0xFF; 32]),
    ];
    for (name, bytes) in cases {
        let status = query_raw(h.channel().await, bytes).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status
                .message()
                .starts_with("invalid request: failed to decode Protobuf message"),
            "{name}: {}",
            status.message()
        );
    }
}

/// A codec that sends request bytes as given.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, Self::Error> {
        use prost::bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
